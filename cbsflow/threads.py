"""CPU threads: a CPU run picks torch's intra-op thread count so that it does not oversubscribe its cores.

torch starts one thread per core it sees, whatever else runs there. On a 2-core machine beside another job the
quickstart's experts took 73-250 s each with torch's 2 threads and 12-13 s with one (issue 33); the measurements
behind the rule below are in benchmarks/results/threads.md. The rule: the cores this process may use (its CPU
affinity, capped by a cgroup CPU quota), less what other processes keep busy now, at least 1 and at most
``MAX_THREADS`` (and never more than torch's own count). Nothing is changed on a CUDA machine, or where the user
chose: OMP_NUM_THREADS / MKL_NUM_THREADS set, or torch.set_num_threads called before the run starts
(tools/landscape.py's parallel runs set OMP_NUM_THREADS).

Results differ in the last bits between thread counts (the quickstart's samples by up to 2e-4 between 1 and 2
threads), so under a changing load two runs of one command may too: set OMP_NUM_THREADS for bit-identical reruns.
"""

from __future__ import annotations

import os
import time

import torch

# Not measured beyond 2 cores: a bound on what a small CPU model (the 2-D MLPs) can use; torch alone would take one
# thread per core of a large shared node.
MAX_THREADS = 8
USER_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_TORCH_DEFAULT = torch.get_num_threads()  # before anyone in this process set it


def choose_threads(cores: float, busy: float, cap: int = MAX_THREADS) -> int:
    """Threads for ``cores`` usable cores of which other processes keep ``busy`` busy: the free ones, in [1, cap]."""
    return max(1, min(cap, int(cores), round(cores - busy)))


def usable_cores() -> float:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota where one is set."""
    cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    quota = cgroup_quota()
    return min(cores, quota) if quota else cores


def cgroup_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota in cores (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None where there is none."""
    for path, read in ((os.path.join(root, "cpu.max"), lambda t: t.split()),
                       (os.path.join(root, "cpu", "cpu.cfs_quota_us"), None)):
        try:
            with open(path) as f:
                text = f.read()
            if read is not None:
                quota, period = read(text)[:2]
            else:
                with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
                    quota, period = text.strip(), f.read().strip()
            return None if quota in ("max", "-1") else int(quota) / int(period)
        except (OSError, ValueError):
            continue
    return None


def busy_cores(cores: float, samples: int = 5, interval: float = 0.02) -> float:
    """Cores other processes keep busy: the smaller of the 1-minute load average and the tasks running now (less this
    one), scaled to this process's share of the machine. The smaller: a run that just ended still weighs on the
    load average, and a burst of a moment is no job."""
    running = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                running.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            break
        time.sleep(interval)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    now = sum(running) / len(running) if running else load
    return max(0.0, min(load, now)) * cores / max(cores, os.cpu_count() or cores)


def configure() -> str | None:
    """Set torch's thread count for a CPU run (see the module docstring); returns the line that says so, or None
    where the user (or a GPU) decides."""
    if any(os.environ.get(name) for name in USER_SETTINGS) or torch.get_num_threads() != _TORCH_DEFAULT:
        return None
    if torch.cuda.is_available():
        return None
    cores = usable_cores()
    busy = busy_cores(cores)
    threads = min(choose_threads(cores, busy), torch.get_num_threads())  # never more than torch would take
    torch.set_num_threads(threads)
    return (f"threads: {threads} (torch's default {_TORCH_DEFAULT}; {cores:g} usable cores, load {busy:.1f} from "
            "other work); set OMP_NUM_THREADS to choose")
