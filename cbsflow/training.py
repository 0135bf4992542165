"""Training one velocity network on times drawn from one interval (the velocity / flow-matching loss).

`fit` is the whole loop for one network (an expert, the shared base or an auxiliary net) on Accelerate:
mixed precision, gradient accumulation, clipping, LR warm-up, EMA, a JSON-lines log and, when given a
state directory, resumable checkpoints: Accelerate's state (model, optimizer, RNG, EMA, step and the noise
generator's state) is written to a temporary folder, flushed to disk and renamed into place, so a killed run
restarts from its last complete checkpoint at that exact step. A resumed run is bit-identical to one that was
never interrupted: the data stream is replayed to the checkpoint's step (``batches_from``), the noise stream is
restored, and the learning rate and EMA decay are functions of the optimizer step alone. Every per-step quantity
counts optimizer steps, whatever the number of processes (Accelerate's prepared schedulers step once per process,
so none is used). SIGTERM or SIGUSR1 (a cluster's warning before it stops a job) writes a checkpoint after the
current step and exits with ``EXIT_PREEMPTED``; an unreadable newest checkpoint falls back to the one before it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import threading
import time
import typing
import warnings

import gin
import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from cbsflow.data.base import batches_from
from cbsflow.errors import EXIT_PREEMPTED, Preempted, UserError  # noqa: F401 -- EXIT_PREEMPTED re-exported
from cbsflow.progress import progress as progress_bar
from cbsflow.registry import Instance
from cbsflow.seeding import derive_seed
from cbsflow.timesampling import uniform_time


def velocity_loss(net: nn.Module, path, x1: torch.Tensor, y, t: torch.Tensor, eps: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """E || v(x_t, t) - d/dt x_t ||^2 (per-dimension mean); with ``weight`` (b,), each sample's loss weighted by it."""
    x_t, target = path.interpolate(x1, eps, t)
    err = (net(x_t, t, y).float() - target.float()) ** 2
    if weight is None:
        return torch.mean(err)
    return torch.mean(err.flatten(1).mean(1) * weight.to(err.device))


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float, step: int, warmup: bool = True) -> None:
    """EMA of the weights, with warm-up by default: the decay used is min(decay, (1 + step) / (10 + step)).

    Without the warm-up the random initial weights keep a share decay^step of the average
    (45 % after 800 steps at 0.999), which ruins short runs. ``warmup = False`` uses ``decay`` from the first step,
    as SiT, JiT and torchcfm do (their EMA starts as a copy of the initial weights).
    """
    _ema_step(list(ema.parameters()), list(net.parameters()), list(zip(ema.buffers(), net.buffers())), decay, step,
              warmup)


@torch.no_grad()
def _ema_step(targets: list, sources: list, buffers: list, decay: float, step: int, warmup: bool = True) -> None:
    """``ema_update`` on lists collected once (walking the module tree every step costs more than a tiny net)."""
    decay = ema_decay_at(decay, step, warmup)
    if targets:
        # One call for all tensors (many small ones on a CPU).
        torch._foreach_lerp_(targets, [p.detach().to(q.dtype) for p, q in zip(sources, targets)], 1 - decay)
    for b_ema, b in buffers:
        b_ema.copy_(b)


def drop_labels(y, num_classes: int, p: float, generator: torch.Generator):
    """Replace labels by the null class (index num_classes) with probability p (classifier-free guidance)."""
    if y is None or p <= 0:
        return y
    drop = torch.rand(y.shape, generator=generator, device=generator.device) < p
    return torch.where(drop.to(y.device), torch.full_like(y, num_classes), y)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The learning rate's share at optimizer step ``step`` (0-based): linear warm-up over ``warmup_steps``."""
    return min(1.0, (step + 1) / max(1, warmup_steps))


LR_DECAYS = ("constant", "linear", "cosine")


def decay_factor(step: int, steps: int, kind: str) -> float:
    """The learning rate's share at optimizer step ``step`` of ``steps`` after warm-up: 1 ('constant'), 1 - step/steps
    ('linear') or (1 + cos(pi step/steps)) / 2 ('cosine'); both decays reach 0 just after the last step."""
    if kind == "constant":
        return 1.0
    frac = step / max(1, steps)
    return 1.0 - frac if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))


def ema_decay_at(decay: float, step: int, warmup: bool = True) -> float:
    """The EMA decay used at optimizer step ``step``: min(decay, (1 + step) / (10 + step)), or ``decay`` itself
    without warm-up."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


class Progress:
    """The loop's step counter and the state of its noise generator, saved with Accelerate's state."""

    def __init__(self, generator: torch.Generator | None = None):
        self.step, self.generator = 0, generator

    def state_dict(self):
        state = {"step": self.step}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state):
        self.step = int(state["step"])
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])


@contextlib.contextmanager
def stop_requests():
    """While training, SIGTERM and SIGUSR1 set a flag (read after every step) instead of ending the process."""
    caught: dict[str, int | None] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from the main thread
        yield caught
        return

    def handler(signum, frame):
        caught["signal"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def process_state():
    """Accelerate's process state; on a machine without CUDA, `accelerate launch` processes join as CPU workers (gloo)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def make_accelerator(mixed_precision: str = "no", grad_accum: int = 1, log_with: str | None = None,
                     project_dir: str | None = None) -> Accelerator:
    """A fresh Accelerator for one network; the process-wide precision setting is replaced if it differs."""
    from accelerate.state import AcceleratorState

    process_state()
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state()  # keeps the distributed set-up (PartialState), changes the precision
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum,
                       cpu=not torch.cuda.is_available(), log_with=log_with, project_dir=project_dir)


def complete_states(state_dir: str | None) -> list[str]:
    """Complete checkpoint folders (step_XXXXXXXX) in state_dir, oldest first."""
    if not state_dir or not os.path.isdir(state_dir):
        return []
    done = sorted(d for d in os.listdir(state_dir) if re.fullmatch(r"step_\d{8}", d))
    return [os.path.join(state_dir, d) for d in done]


def latest_state(state_dir: str | None) -> str | None:
    """The newest complete checkpoint folder in state_dir, or None."""
    states = complete_states(state_dir)
    return states[-1] if states else None


def _fsync_tree(folder: str) -> None:
    """Flush every file under ``folder`` and the folder itself to disk (a rename is durable only after this)."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync folders
        pass
    finally:
        os.close(fd)


def save_state(accelerator: Accelerator, state_dir: str, step: int, keep: int = 2) -> None:
    """Write Accelerate's state atomically (temporary folder, flushed, then renamed) and keep the newest ``keep``.

    A failed write (a full disk) removes the temporary folder and raises one error; earlier checkpoints stay.
    """
    final = os.path.join(state_dir, f"step_{step:08d}")
    tmp = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(output_dir=tmp)
        if accelerator.is_main_process:
            _fsync_tree(tmp)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(err, "strerror", None) or (str(err).strip().splitlines() or [type(err).__name__])[-1]
        raise UserError(f"cannot write the checkpoint {final} ({reason}); the previous checkpoint "
                        f"({latest_state(state_dir) or 'none'}) is intact: free space and rerun the same command")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(tmp, final)
        fsync_dir(state_dir)
        for old in complete_states(state_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _restore(accelerator: Accelerator, state_dir: str | None, desc: str) -> str | None:
    """Load the newest checkpoint that reads; an unreadable one (a node crash mid-write) is set aside with a warning
    and the one before it is used. Returns the folder loaded, or None when there is none."""
    states = complete_states(state_dir)
    for resume in reversed(states):
        try:
            accelerator.load_state(resume)
            return resume
        except Exception as err:  # noqa: BLE001 -- truncated safetensors, pickle or zip files raise many kinds
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            warnings.warn(f"{desc}: checkpoint {resume} is unreadable ({type(err).__name__}: {first}); falling back "
                          "to the one before it", RuntimeWarning, stacklevel=2)
            if accelerator.is_main_process:
                os.replace(resume, os.path.join(os.path.dirname(resume), "unreadable_" + os.path.basename(resume)))
            accelerator.wait_for_everyone()
    if states:
        raise UserError(f"{desc}: no checkpoint in {state_dir} can be read (each was set aside as unreadable_step_*); "
                        "delete the folder to train this network from the start")
    return None


@gin.configurable("training", module="settings")
@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How one network is trained: the experts, the shared base and the auxiliary nets each get one (gin name
    ``training``; scope it per use, e.g. ``expert/training.steps = 2000`` and ``aux/training.steps = 1500``, while
    unscoped ``training.*`` bindings are shared by all). ``batch_size`` is per process (the global batch is
    processes × batch_size × grad_accum); ``steps``, ``warmup_steps``, ``log_every`` and ``checkpoint_every`` count
    optimizer steps."""

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_decay: str = "constant"  # after warm-up: 'constant', 'linear' or 'cosine' (to 0 at `steps`)
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.0
    ema_warmup: bool = True  # decay min(ema_decay, (1 + step) / (10 + step)); False: ema_decay from step 0 (SiT, JiT)
    class_dropout: float = 0.0
    mixed_precision: str = "no"
    t_sampler: Instance("time_sampler") | None = None
    loss_weight: Instance("loss_weight") | None = None  # e.g. @min_snr(): one network reweighted over t
    checkpoint_every: int = 0
    log_every: int = 50
    log_with: str | None = None  # Accelerate's trackers: 'tensorboard' or 'wandb' (written under state_dir/tracking)

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"training.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_decay not in LR_DECAYS:
            raise UserError(f"training.lr_decay must be one of {', '.join(map(repr, LR_DECAYS))}, got {self.lr_decay!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UserError(f"training.mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        if self.log_with is not None:
            _check_tracker(self.log_with)
        if self.lr < 0 or not 0 <= self.ema_decay < 1 or not 0 <= self.class_dropout < 1:
            raise UserError(f"training: need lr >= 0, 0 <= ema_decay < 1 and 0 <= class_dropout < 1, got lr={self.lr}, "
                            f"ema_decay={self.ema_decay}, class_dropout={self.class_dropout}")


TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # tracker -> the package it needs


def _check_tracker(name: str) -> None:
    import importlib.util

    if name not in TRACKERS:
        raise UserError(f"training.log_with must be one of {', '.join(TRACKERS)} (or None), got {name!r}")
    if importlib.util.find_spec(TRACKERS[name]) is None:
        raise UserError(f"training.log_with = {name!r} needs the {TRACKERS[name]} package: pip install {TRACKERS[name]}")


class _Loop(typing.NamedTuple):
    """What the training loop holds: the prepared model and optimizer, the optional EMA copy, the step counter and
    the noise generator (restored with the checkpoint)."""

    accelerator: Accelerator
    model: nn.Module
    opt: typing.Any
    ema: nn.Module | None
    progress: "Progress"
    resumed_from: str | None


NOT_IN_IDENTITY = ("log_every", "checkpoint_every", "log_with")  # how often it logs and saves, not what it trains


def state_identity(settings: TrainSettings, seed: int, identity: dict | None) -> dict:
    """What a state folder's checkpoints depend on: every training setting, the seed of the data and noise streams,
    and what the caller adds (the run's configuration digest, where the network starts from)."""
    fields = {}
    for f in dataclasses.fields(settings):
        if f.name in NOT_IN_IDENTITY:
            continue
        v = getattr(settings, f.name)
        fields[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else list(v) if isinstance(
            v, tuple) else _describe_component(v)
    return {"settings": fields, "seed": int(seed), **(identity or {})}


def _describe_component(obj) -> str:
    """A stable description of a component instance (its class and public attributes, never its address)."""
    attrs = {k: v for k, v in sorted(vars(obj).items()) if not k.startswith("_")} if hasattr(obj, "__dict__") else {}
    return f"{type(obj).__name__}({', '.join(f'{k}={v!r}' for k, v in attrs.items())})"


def identity_digest(identity: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


IDENTITY_FILE = "identity.json"


def claim_state_dir(state_dir: str, identity: dict, desc: str) -> str | None:
    """Make ``state_dir`` belong to ``identity``: a folder written under other settings (or by a version that did not
    record them) is set aside as ``<state_dir>.stale-<time>`` with one line saying why, so that a resume never mixes
    two configurations. Returns the folder it was moved to, or None. Main process only."""
    digest = identity_digest(identity)
    record = os.path.join(state_dir, IDENTITY_FILE)
    moved = None
    if os.path.isdir(state_dir) and os.listdir(state_dir):
        try:
            with open(record) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = {}
        if old.get("digest") != digest:
            moved = f"{state_dir}.stale-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            os.replace(state_dir, moved)
            what = _changed_keys(old["identity"], identity) if old.get("identity") else "it records no settings"
            if ", " in what and what.startswith("config: "):  # the digest says less than the settings that follow
                what = what.split(", ", 1)[1]
            print(f"{desc}: {state_dir} was written under other settings ({what}); set aside as "
                  f"{os.path.basename(moved)}, training starts from step 0", flush=True)
    os.makedirs(state_dir, exist_ok=True)
    if not os.path.exists(record) or moved:
        from cbsflow.rundir import write_json

        write_json(record, {"digest": digest, "identity": identity})
    return moved


def _changed_keys(old: dict, new: dict, prefix: str = "") -> str:
    """'settings.lr: 0.002 -> 0.0001, ...' for the leaves that differ (at most 4 named)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = _changed_keys(a, b, f"{prefix}{k}.")
            out += [sub] if sub else []
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    text = ", ".join(out[:4]) + (f" and {len(out) - 4} more" if len(out) > 4 else "")
    return text


def _prepare(net: nn.Module, settings: TrainSettings, state_dir: str | None, desc: str, seed: int,
             identity: dict | None = None) -> _Loop:
    """Accelerator, AdamW, EMA, the noise generator, and the newest readable checkpoint restored if there is one
    (of this configuration only: ``claim_state_dir`` sets aside a folder written under other settings)."""
    if state_dir:  # before anything (a tracker's folder) is written into it
        state = process_state()
        if state.is_main_process:
            claim_state_dir(state_dir, state_identity(settings, seed, identity), desc)
        state.wait_for_everyone()
    tracking = os.path.join(state_dir, "tracking") if state_dir and settings.log_with else None
    accelerator = make_accelerator(settings.mixed_precision, settings.grad_accum, tracking and settings.log_with, tracking)
    if tracking:
        accelerator.init_trackers(re.sub(r"[^A-Za-z0-9_.-]+", "_", desc).strip("_") or "train",
                                  config={k: v for k, v in dataclasses.asdict(settings).items()
                                          if isinstance(v, (int, float, str, bool))})
    # Fused AdamW: one kernel per step on the GPU; on a CPU the foreach variant (one op per step for all tensors).
    fused = torch.cuda.is_available()
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, betas=tuple(settings.betas),
                            weight_decay=settings.weight_decay, fused=fused, foreach=None if fused else True)
    ema = copy.deepcopy(net).requires_grad_(False) if settings.ema_decay > 0 else None
    model, opt = accelerator.prepare(net, opt)
    # Noise, times and dropped labels: one stream per process, never the data's seed; its state is checkpointed.
    gen = torch.Generator(device=accelerator.device).manual_seed(derive_seed(seed, accelerator.process_index, 0, 1))
    progress = Progress(gen)
    accelerator.register_for_checkpointing(progress)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    resume = _restore(accelerator, state_dir, desc)
    if resume:
        accelerator.print(f"{desc}: resuming from {resume} at step {progress.step}")
    return _Loop(accelerator, model, opt, ema, progress, resume)


def fit(net: nn.Module, dataset, path, interval: tuple[float, float], settings: TrainSettings, seed: int = 0,
        state_dir: str | None = None, desc: str = "train", stop_at: int | None = None,
        identity: dict | None = None) -> dict:
    """Train ``net`` in place on t drawn inside ``interval``; returns {'ema': EMA copy or None, 'loss': last loss}.

    With a ``state_dir``, Accelerate's state is saved every ``settings.checkpoint_every`` steps and the loop resumes
    from the newest readable one; every ``log_every`` steps a line goes to ``state_dir/log.jsonl``. ``stop_at`` < steps
    ends this call after that many steps with a checkpoint, so that a later call (possibly on another interval)
    continues the same run: the learning rate, EMA and data and noise streams go on as if it had never stopped.
    The folder belongs to one configuration: the settings, the seed and ``identity`` (what the caller knows of the
    rest: the run's configuration digest, the starting weights) are recorded in it, and a folder written under
    others is set aside, never resumed. While it trains, the network is locked (``<state_dir>.lock``): a second job
    that reaches it stops with one line naming the holder.
    """
    if not state_dir:
        return _fit(net, dataset, path, interval, settings, seed, None, desc, stop_at, identity)
    from cbsflow import locks

    lock = locks.Lock(state_dir.rstrip(os.sep) + ".lock", f"training of {_short(state_dir)}")
    with locks.held(lock, process_state()):
        return _fit(net, dataset, path, interval, settings, seed, state_dir, desc, stop_at, identity)


def _short(state_dir: str) -> str:
    """checkpoints/<name> of a run directory, as messages name it."""
    parts = os.path.normpath(state_dir).split(os.sep)
    return os.sep.join(parts[parts.index("checkpoints") - 1:]) if "checkpoints" in parts[1:] else state_dir


def _fit(net, dataset, path, interval, settings: TrainSettings, seed: int, state_dir: str | None, desc: str,
         stop_at: int | None, identity: dict | None) -> dict:
    accelerator, model, opt, ema, progress, resumed = _prepare(net, settings, state_dir, desc, seed, identity)
    rank, start = accelerator.process_index, progress.step
    end = settings.steps if stop_at is None else min(int(stop_at), settings.steps)
    # The data stream of this process, replayed up to the step the run resumes at.
    batches = batches_from(dataset, settings.batch_size, derive_seed(seed, rank, 0, 0), start * settings.grad_accum)
    t_sampler = settings.t_sampler or uniform_time()
    log = _open_log(state_dir, accelerator, start if resumed else None)
    bar = progress_bar(range(start, end), desc, disable=not accelerator.is_main_process)
    loss_value, tic = math.nan, time.time()
    params = list(model.parameters())
    if ema is not None:
        unwrapped = accelerator.unwrap_model(model)
        ema_lists = (list(ema.parameters()), list(unwrapped.parameters()), list(zip(ema.buffers(), unwrapped.buffers())))
    with stop_requests() as caught:
        for step in bar:
            lr = _set_lr(opt, settings, step)
            for _ in range(settings.grad_accum):
                with accelerator.accumulate(model):
                    loss = _micro_step(model, accelerator, path, batches, progress.generator, t_sampler, interval,
                                       settings.class_dropout, dataset.num_classes, settings.loss_weight)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"{desc}: loss became {loss.item()} at step {step}; the last good checkpoint "
                            f"({latest_state(state_dir) or 'none'}) is kept; lower the learning rate or check the data")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and settings.grad_clip:
                        accelerator.unscale_gradients()  # a no-op without fp16 loss scaling
                        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip, foreach=True)
                    _optimizer_step(opt, accelerator)
                    opt.zero_grad(set_to_none=True)
            if ema is not None:
                _ema_step(*ema_lists, settings.ema_decay, step, settings.ema_warmup)
            progress.step = step + 1
            if progress.step % settings.log_every == 0 or progress.step == settings.steps:
                loss_value = loss.item()
                bar.set_postfix(loss=f"{loss_value:.4f}")
                _log(log, accelerator, progress.step, loss_value, lr,
                     ema_decay_at(settings.ema_decay, step, settings.ema_warmup) if ema is not None else None,
                     time.time() - tic)
            if _stop_everywhere(accelerator, caught):
                if log:
                    log.close()
                _preempted(accelerator, state_dir, progress.step, desc, caught["signal"])
            if state_dir and settings.checkpoint_every and progress.step % settings.checkpoint_every == 0 \
                    and progress.step < end:
                save_state(accelerator, state_dir, progress.step)
    if state_dir and end < settings.steps and progress.step == end and latest_state(state_dir) != _state_name(
            state_dir, end):
        save_state(accelerator, state_dir, end)
    if log:
        log.close()
    if settings.log_with and state_dir:
        accelerator.end_training()
    return {"ema": ema, "loss": loss_value, "step": progress.step}


def _open_log(state_dir: str | None, accelerator: Accelerator, resumed_at: int | None):
    """The JSON-lines log of the main process (lines past the step a run resumes at dropped), or None."""
    if not state_dir or not accelerator.is_main_process:
        return None
    os.makedirs(state_dir, exist_ok=True)
    if resumed_at is not None:
        _truncate_log(os.path.join(state_dir, "log.jsonl"), resumed_at)
    return open(os.path.join(state_dir, "log.jsonl"), "a")


def _set_lr(opt, settings: TrainSettings, step: int) -> float:
    """The learning rate of optimizer step ``step`` (warm-up, then the decay), set on every parameter group."""
    lr = settings.lr * warmup_factor(step, settings.warmup_steps) * decay_factor(step, settings.steps, settings.lr_decay)
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


def _state_name(state_dir: str, step: int) -> str:
    return os.path.join(state_dir, f"step_{step:08d}")


def _stop_everywhere(accelerator: Accelerator, caught: dict) -> bool:
    """Whether any process was asked to stop (all of them then stop at the same step)."""
    asked = caught["signal"] is not None
    if accelerator.num_processes == 1:
        return asked
    flag = torch.tensor([float(asked)], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def _preempted(accelerator: Accelerator, state_dir: str | None, step: int, desc: str, signum: int | None) -> None:
    name = signal.Signals(signum).name if signum else "a stop request on another process"
    if state_dir:
        save_state(accelerator, state_dir, step)
        raise Preempted(f"{desc}: stopped by {name} after step {step}; checkpoint {_state_name(state_dir, step)} "
                        "written, rerun the same command to resume")
    raise Preempted(f"{desc}: stopped by {name} after step {step}; this network keeps no checkpoint and is trained "
                    "again when the same command is rerun")


def _truncate_log(path: str, step: int) -> None:
    """Drop log lines past the step a run resumes at (written after its last checkpoint, before it was killed)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    keep = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(keep) != len(lines):
        from cbsflow.rundir import write_text

        write_text(path, "".join(keep))


def _log(log, accelerator: Accelerator, step: int, loss: float, lr: float, ema_decay: float | None,
         seconds: float) -> None:
    """One JSON line per logging step, and the same numbers to Accelerate's trackers (if any)."""
    record = {"step": step, "loss": loss, "lr": lr, "seconds": round(seconds, 3)}
    if ema_decay is not None:
        record["ema_decay"] = ema_decay
    if log:
        log.write(json.dumps(record) + "\n")
        log.flush()
    if accelerator.trackers:
        accelerator.log({"loss": loss, "lr": lr}, step=step)


def _optimizer_step(opt, accelerator: Accelerator) -> None:
    """Accelerate's optimizer step; without a loss scaler, the wrapped optimizer's own step when gradients are in
    sync (what Accelerate's does then, minus a probe for optional packages that costs ~0.6 ms on every call)."""
    if accelerator.scaler is not None:
        opt.step()
    elif accelerator.sync_gradients:
        opt.optimizer.step()


def _micro_step(model, accelerator, path, batches, gen, t_sampler, interval, class_dropout, num_classes,
                loss_weight=None):
    """Loss of one micro-batch (each sample's weighted by ``loss_weight(t, path)`` when one is bound)."""
    x1, y = next(batches)
    x1 = x1.to(accelerator.device, non_blocking=True)
    y = None if y is None else y.to(accelerator.device)
    t = t_sampler(x1.shape[0], interval, gen)  # noise, times and dropped labels are drawn on the device
    eps = torch.randn(x1.shape, generator=gen, device=gen.device)
    y = drop_labels(y, num_classes, class_dropout, gen)
    weight = None if loss_weight is None else loss_weight(t, path)
    with accelerator.autocast():
        return velocity_loss(model, path, x1, y, t, eps, weight)


def weights_digest(state: dict) -> str:
    """A digest of a state dict's names and values (what a network starts from, recorded with its training state)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        h.update(name.encode())
        if torch.is_tensor(value):
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()[:16]


def widened(interval, margin: float) -> tuple[float, float]:
    """An interval widened by ``margin`` on each side, within [0, 1]."""
    return max(0.0, interval[0] - margin), min(1.0, interval[1] + margin)


class TrainingRun:
    """The experts of one run directory: trains expert k (from the shared base if any) unless a finished checkpoint
    for exactly its interval, step count and settings exists, and says when all of them are complete."""

    def __init__(self, run_dir: str, backbone, dataset, path, settings: TrainSettings, local_time: bool, seed: int,
                 config_digest: str | None, margin: float = 0.0):
        self.run_dir, self.backbone, self.dataset, self.path, self.settings = run_dir, backbone, dataset, path, settings
        self.local_time, self.seed, self.config_digest, self.margin = local_time, seed, config_digest, margin
        # What every expert's state folder is tied to besides its settings: a method that moves the boundaries sets
        # ``origin`` to the boundaries it started from; otherwise an expert's own interval is its origin.
        self.origin: list | None = None
        self.inherited = 0  # optimizer steps the experts' starting weights already took (a shared base's)
        self.allocations: list | None = None  # per-expert steps and network overrides (train.budget), else equal
        self._digests: dict[int, str] = {}

    def complete(self, path: str, interval, steps: int) -> bool:
        """A finished checkpoint for exactly this interval, step count and (when known) configuration."""
        if not os.path.exists(path):
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        return (np.allclose(state.get("interval", [-1, -1]), interval, rtol=0, atol=1e-12)
                and state.get("steps") == steps and state.get("config_digest") == self.config_digest)

    def start_digest(self, base: dict | None) -> str:
        """'fresh' or a digest of the weights an expert starts from (computed once per state dict)."""
        if base is None:
            return "fresh"
        if id(base) not in self._digests:
            self._digests[id(base)] = weights_digest(base)
        return self._digests[id(base)]

    def expert(self, k: int, boundaries: np.ndarray, base: dict | None) -> None:
        """Train expert k unless it is complete; a lock per expert keeps two jobs from training the same one."""
        from cbsflow import locks

        with locks.held(locks.expert_lock(self.run_dir, k), process_state()):
            self._expert(k, boundaries, base)

    def _expert(self, k: int, boundaries: np.ndarray, base: dict | None) -> None:
        from cbsflow import rundir

        n, interval = len(boundaries) - 1, (float(boundaries[k]), float(boundaries[k + 1]))
        path = rundir.checkpoint_path(self.run_dir, k)
        steps = self.steps(k)
        if self.complete(path, interval, steps):
            print(f"[train] expert {k + 1}/{n} is complete, skipped")
            return
        expert = self.new_expert(k, interval, base)
        # With a margin the expert also learns a little on each side of the interval it owns (it samples only its own).
        seen = widened(interval, self.margin)
        out = self.fit_expert(k, n, expert, seen, settings=dataclasses.replace(self.settings, steps=steps))
        self.save_expert(k, expert, out, seen, steps=steps, inherited=self.inherited)

    def steps(self, k: int) -> int:
        """Expert k's own optimizer steps: its budget's allocation, else the experts' setting."""
        return self.allocations[k].steps if self.allocations else self.settings.steps

    def overrides(self, k: int) -> dict:
        """Expert k's backbone arguments from its budget (e.g. a width), on top of the gin bindings."""
        return dict(self.allocations[k].overrides) if self.allocations else {}

    def new_expert(self, k: int, interval, base: dict | None):
        """Expert k's network, freshly initialised (seed + k) or from the shared base."""
        from cbsflow.segmented import Expert, build_network

        torch.manual_seed(self.seed + k)
        net = build_network(self.backbone, self.dataset, k, self.overrides(k))
        if base is not None:
            try:
                net.load_state_dict(base)
            except RuntimeError as err:
                raise UserError(f"expert {k}'s network differs from the shared network it should start from "
                                f"({str(err).strip().splitlines()[0]}); a shared start needs experts of one size: drop "
                                f"the expert_{k}/ bindings or the budget's capacity, or the shared start") from None
        expert = Expert(net, self.path, interval, self.local_time)
        expert.origin = {"start": self.start_digest(base), "from": self.origin or [float(x) for x in interval]}
        return expert

    def fit_expert(self, k: int, n: int, expert, seen, stop_at: int | None = None, state: str | None = None,
                   settings: TrainSettings | None = None) -> dict:
        """Train expert k on t in ``seen`` (to ``stop_at`` steps, resumable from its state folder), with the experts'
        settings or ``settings`` (e.g. fewer steps after a warm start)."""
        from cbsflow import rundir

        a, b = expert.interval
        identity = {"config": self.config_digest, "local_time": self.local_time, "margin": self.margin,
                    **getattr(expert, "origin", {})}
        return fit(expert, self.dataset, self.path, seen, settings or self.settings, seed=self.seed + 1000 * (k + 1),
                   state_dir=rundir.state_dir(self.run_dir, state or f"segment_{k}"),
                   desc=f"expert {k + 1}/{n} [{a:.3f}, {b:.3f})", stop_at=stop_at, identity=identity)

    def save_expert(self, k: int, expert, out: dict, seen, steps: int | None = None, inherited: int = 0) -> None:
        """checkpoints/segment_k.pt: the weights, their EMA, the interval owned and the one trained on, the steps this
        expert took itself (``steps``, default the experts' setting) and those its starting weights had already
        taken (``inherited``: a shared network's steps)."""
        from cbsflow import rundir

        if process_state().is_main_process:
            rundir.save_checkpoint(rundir.checkpoint_path(self.run_dir, k), {
                "state_dict": expert.net.state_dict(), "ema": out["ema"] and out["ema"].net.state_dict(),
                "interval": list(expert.interval), "train_interval": list(seen),
                "steps": self.settings.steps if steps is None else int(steps), "inherited_steps": int(inherited),
                "network": {"expert": k, "overrides": self.overrides(k)},
                "local_time": self.local_time, "loss": out["loss"], "config_digest": self.config_digest})

    def initial_state(self, init_from: str | None, shared_init_steps: int) -> dict | None:
        """The weights every expert starts from: a pretrained checkpoint (``train.init_from``), then a shared base
        trained on all of [0, 1] from it (``shared_init_steps``), or None (fresh initialisation)."""
        from cbsflow.pretrained import init_state
        from cbsflow.segmented import build_network

        init = None
        if init_from:
            init, notes = init_state(init_from, build_network(self.backbone, self.dataset))
            if process_state().is_main_process:
                print(f"[train] experts start from {init_from}" + (f" ({'; '.join(notes)})" if notes else ""))
        self.inherited = int(shared_init_steps)
        return self.shared_base(shared_init_steps, init) if shared_init_steps else init

    def shared_base(self, steps: int, init: dict | None = None) -> dict:
        """Weights of a base network trained on all of [0, 1] (trained once, then read from checkpoints/base.pt);
        concurrent --segment jobs wait for the one that trains it instead of training it again."""
        from cbsflow import locks

        with locks.held(locks.expert_lock(self.run_dir, "base"), process_state(), wait=float("inf")):
            return self._shared_base(steps, init)

    def _shared_base(self, steps: int, init: dict | None) -> dict:
        from cbsflow import rundir
        from cbsflow.segmented import Expert, build_network

        path = os.path.join(self.run_dir, "checkpoints", "base.pt")
        if self.complete(path, (0.0, 1.0), steps):
            return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        torch.manual_seed(self.seed)
        net = build_network(self.backbone, self.dataset)
        if init is not None:
            net.load_state_dict(init)
        out = fit(Expert(net, self.path), self.dataset, self.path, (0.0, 1.0), dataclasses.replace(self.settings, steps=steps),
                  seed=self.seed, state_dir=rundir.state_dir(self.run_dir, "base"), desc="shared base",
                  identity={"config": self.config_digest, "start": self.start_digest(init)})
        if process_state().is_main_process:
            rundir.save_checkpoint(path, {"state_dict": net.state_dict(), "ema": None, "interval": [0.0, 1.0],
                                          "steps": steps, "loss": out["loss"], "config_digest": self.config_digest})
        return net.state_dict()

    def all_complete(self, boundaries: np.ndarray) -> bool:
        from cbsflow import rundir

        return all(self.complete(rundir.checkpoint_path(self.run_dir, k), (float(boundaries[k]), float(boundaries[k + 1])),
                                 self.steps(k)) for k in range(len(boundaries) - 1))

    def final_losses(self, n: int) -> list[float]:
        from cbsflow import rundir

        return [rundir.load_checkpoint(rundir.checkpoint_path(self.run_dir, k))["loss"] for k in range(n)]
