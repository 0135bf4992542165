"""How many rows of a forward-mode JVP fit in memory: measured on a trial chunk, then kept within a budget.

Forward-mode AD carries a tangent beside every activation, so a JVP batch holds about twice the activations of a
forward pass; through an image transformer (JiT-B at 64 px: 4,096 rows of the warm split's monitor) that is tens of
GB. ``jvp_rows`` runs the JVP on trial chunks of one and eight rows, measures their peak memory (CUDA: the allocator's peak;
CPU: the live bytes of every tensor the operations create, tracked by a dispatch mode) and returns how many rows fit
in ``budget`` bytes — by default half of what the device has free now. A network whose single row does not fit is
refused with one line.
"""

from __future__ import annotations

import os
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from cbsflow.errors import UserError

TRIAL_ROWS = 8
HEADROOM = 1.25  # allocator fragmentation and what the trial does not see


def free_bytes(device: torch.device) -> int:
    """Free memory of ``device`` now: CUDA's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes held by tensors that operations create (each storage once) and their peak."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self.seen = 0, 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
            key = storage.data_ptr()
        except (RuntimeError, NotImplementedError):  # a wrapper without storage of its own (functorch levels)
            return
        if key in self.seen or storage.nbytes() == 0:
            return
        self.seen.add(key)
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(t, self._free, key, storage.nbytes())

    def _free(self, key: int, nbytes: int) -> None:
        self.seen.discard(key)
        self.live -= nbytes


def peak_bytes(fn, device: torch.device) -> int:
    """Peak memory that ``fn()`` allocates beyond what is held before it runs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    with _LiveBytes() as mode:
        fn()
    return mode.peak


def jvp_rows(run_rows, requested: int, device: torch.device, budget_gb: float | None, what: str) -> int:
    """Rows per chunk (at most ``requested``) whose JVP fits the budget; ``run_rows(n)`` runs the JVP on n rows.

    Two trials (1 row, then up to ``TRIAL_ROWS`` if that many fit on the first one's count) separate what every
    chunk needs whatever its size (temporaries the size of the weights) from what each row adds; the chunk is the
    largest whose predicted peak fits."""
    budget = budget_gb * 2**30 if budget_gb is not None else free_bytes(device) / 2
    one = HEADROOM * peak_bytes(lambda: run_rows(1), device)
    trial = max(1, min(TRIAL_ROWS, requested, int(budget // max(one, 1.0))))  # the second trial must itself fit
    more = HEADROOM * peak_bytes(lambda: run_rows(trial), device) if trial > 1 else one
    per_row = max((more - one) / max(trial - 1, 1), more / trial / 64, 1.0)
    fixed = max(one - per_row, 0.0)
    if fixed + per_row > budget:
        raise UserError(f"{what}: one row of its Jacobian-vector products needs about {(fixed + per_row) / 2**30:.2f} "
                        f"GB but the memory budget is {budget / 2**30:.2f} GB; raise {what}.memory_budget (GB) or "
                        "free memory")
    return max(1, min(requested, int((budget - fixed) // per_row)))
