"""Training one velocity network on times drawn from one interval (the velocity / flow-matching loss).

`fit` is the whole loop for one network (an expert, the shared base or an auxiliary net) on Accelerate:
mixed precision, gradient accumulation, clipping, LR warm-up, EMA, a JSON-lines log and, when given a
state directory, resumable checkpoints: Accelerate's state (model, optimizer, scheduler, RNG, EMA, step)
is written to a temporary folder and renamed into place, so a killed run restarts from its last complete
checkpoint at that exact step.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from torch import nn

from cbsflow.errors import UserError
from cbsflow.timesampling import uniform_time


def velocity_loss(net: nn.Module, path, x1: torch.Tensor, y, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """E || v(x_t, t) - d/dt x_t ||^2 (per-dimension mean)."""
    x_t, target = path.interpolate(x1, eps, t)
    return torch.mean((net(x_t, t, y).float() - target.float()) ** 2)


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float, step: int) -> None:
    """EMA of the weights with warm-up: the decay used is min(decay, (1 + step) / (10 + step)).

    Without the warm-up the random initial weights keep a share decay^step of the average
    (45 % after 800 steps at 0.999), which ruins short runs.
    """
    _ema_step(list(ema.parameters()), list(net.parameters()), list(zip(ema.buffers(), net.buffers())), decay, step)


@torch.no_grad()
def _ema_step(targets: list, sources: list, buffers: list, decay: float, step: int) -> None:
    """``ema_update`` on lists collected once (walking the module tree every step costs more than a tiny net)."""
    decay = min(decay, (1 + step) / (10 + step))
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


def derive_seed(*parts: int) -> int:
    """An independent seed for each (purpose, seed, rank, ...) tuple."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class Progress:
    """The loop's step counter, saved with Accelerate's state."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = int(state["step"])


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def process_state():
    """Accelerate's process state; on a machine without CUDA, `accelerate launch` processes join as CPU workers (gloo)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def make_accelerator(mixed_precision: str = "no", grad_accum: int = 1) -> Accelerator:
    """A fresh Accelerator for one network; the process-wide precision setting is replaced if it differs."""
    from accelerate.state import AcceleratorState

    process_state()
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state()  # keeps the distributed set-up (PartialState), changes the precision
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum,
                       cpu=not torch.cuda.is_available())


def latest_state(state_dir: str | None) -> str | None:
    """The newest complete checkpoint folder (step_XXXXXXXX) in state_dir, or None."""
    if not state_dir or not os.path.isdir(state_dir):
        return None
    done = sorted(d for d in os.listdir(state_dir) if d.startswith("step_") and not d.endswith(".tmp"))
    return os.path.join(state_dir, done[-1]) if done else None


def save_state(accelerator: Accelerator, state_dir: str, step: int, keep: int = 2) -> None:
    """Write Accelerate's state atomically (temporary folder, then rename) and keep the newest ``keep``."""
    final = os.path.join(state_dir, f"step_{step:08d}")
    tmp = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(output_dir=tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(tmp, final)
        for old in sorted(d for d in os.listdir(state_dir) if d.startswith("step_") and not d.endswith(".tmp"))[:-keep]:
            shutil.rmtree(os.path.join(state_dir, old), ignore_errors=True)
    accelerator.wait_for_everyone()


def fit(
    net: nn.Module,
    dataset,
    path,
    interval: tuple[float, float],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    t_sampler=None,
    ema_decay: float = 0.0,
    grad_clip: float = 1.0,
    warmup_steps: int = 0,
    grad_accum: int = 1,
    class_dropout: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    mixed_precision: str = "no",
    state_dir: str | None = None,
    checkpoint_every: int = 0,
    log_every: int = 50,
    desc: str = "train",
) -> dict:
    """Train ``net`` in place on t drawn inside ``interval``; returns {'ema': EMA copy or None, 'loss': last loss}."""
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise UserError(f"{desc}: mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    accelerator = make_accelerator(mixed_precision, grad_accum)
    t_sampler = t_sampler or uniform_time()
    # Fused AdamW: one kernel per step on the GPU; on a CPU the foreach variant (one op per step for all tensors).
    fused = torch.cuda.is_available()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused,
                            foreach=None if fused else True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)))
    ema = copy.deepcopy(net).requires_grad_(False) if ema_decay > 0 else None
    model, opt, sched = accelerator.prepare(net, opt, sched)
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    resume = latest_state(state_dir)
    if resume:
        accelerator.load_state(resume)
        accelerator.print(f"{desc}: resuming from {resume} at step {progress.step}")
    rank, start = accelerator.process_index, progress.step
    # Data and noise streams are reproducible functions of (seed, rank, start step); noise never shares the data's seed.
    batches = dataset.batches(batch_size, seed=derive_seed(seed, rank, start, 0))
    gen = torch.Generator(device=accelerator.device).manual_seed(derive_seed(seed, rank, start, 1))
    if state_dir and accelerator.is_main_process:
        os.makedirs(state_dir, exist_ok=True)
    log = open(os.path.join(state_dir, "log.jsonl"), "a") if state_dir and accelerator.is_main_process else None
    bar = tqdm(range(start, steps), desc=desc, leave=False, mininterval=1.0,
               disable=not accelerator.is_main_process or os.environ.get("TQDM_DISABLE") == "1")
    loss_value, tic = math.nan, time.time()
    params = list(model.parameters())
    if ema is not None:
        unwrapped = accelerator.unwrap_model(model)
        ema_lists = (list(ema.parameters()), list(unwrapped.parameters()), list(zip(ema.buffers(), unwrapped.buffers())))
    for step in bar:
        for _ in range(grad_accum):
            with accelerator.accumulate(model):
                loss = _micro_step(model, accelerator, path, batches, gen, t_sampler, interval, class_dropout,
                                   dataset.num_classes)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"{desc}: loss became {loss.item()} at step {step}; the last good checkpoint "
                        f"({latest_state(state_dir) or 'none'}) is kept; lower the learning rate or check the data")
                accelerator.backward(loss)
                if accelerator.sync_gradients and grad_clip:
                    accelerator.unscale_gradients()  # a no-op without fp16 loss scaling
                    torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
                _optimizer_step(opt, accelerator)
                sched.step()
                opt.zero_grad(set_to_none=True)
        if ema is not None:
            _ema_step(*ema_lists, ema_decay, step)
        progress.step = step + 1
        if progress.step % log_every == 0 or progress.step == steps:
            loss_value = loss.item()
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if log:
                log.write(json.dumps({"step": progress.step, "loss": loss_value, "lr": sched.get_last_lr()[0],
                                      "seconds": round(time.time() - tic, 3)}) + "\n")
                log.flush()
        if state_dir and checkpoint_every and progress.step % checkpoint_every == 0 and progress.step < steps:
            save_state(accelerator, state_dir, progress.step)
    if log:
        log.close()
    return {"ema": ema, "loss": loss_value}


def _optimizer_step(opt, accelerator: Accelerator) -> None:
    """Accelerate's optimizer step; without a loss scaler, the wrapped optimizer's own step when gradients are in
    sync (what Accelerate's does then, minus a probe for optional packages that costs ~0.6 ms on every call)."""
    if accelerator.scaler is not None:
        opt.step()
    elif accelerator.sync_gradients:
        opt.optimizer.step()


def _micro_step(model, accelerator, path, batches, gen, t_sampler, interval, class_dropout, num_classes):
    """Loss of one micro-batch."""
    x1, y = next(batches)
    x1 = x1.to(accelerator.device, non_blocking=True)
    y = None if y is None else y.to(accelerator.device)
    t = t_sampler(x1.shape[0], interval, gen)  # noise, times and dropped labels are drawn on the device
    eps = torch.randn(x1.shape, generator=gen, device=gen.device)
    y = drop_labels(y, num_classes, class_dropout, gen)
    with accelerator.autocast():
        return velocity_loss(model, path, x1, y, t, eps)


class TrainingRun:
    """The experts of one run directory: trains expert k (from the shared base if any) unless a finished checkpoint
    for exactly its interval, step count and settings exists, and says when all of them are complete."""

    def __init__(self, run_dir: str, backbone, dataset, settings: dict, steps: int, local_time: bool, seed: int,
                 config_digest: str | None, margin: float = 0.0):
        self.run_dir, self.backbone, self.dataset, self.settings = run_dir, backbone, dataset, settings
        self.steps, self.local_time, self.seed, self.config_digest = steps, local_time, seed, config_digest
        self.margin = margin

    def complete(self, path: str, interval, steps: int) -> bool:
        """A finished checkpoint for exactly this interval, step count and (when known) configuration."""
        if not os.path.exists(path):
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        return (np.allclose(state.get("interval", [-1, -1]), interval, rtol=0, atol=1e-12)
                and state.get("steps") == steps and state.get("config_digest") == self.config_digest)

    def expert(self, k: int, boundaries: np.ndarray, base: dict | None) -> None:
        from cbsflow import rundir
        from cbsflow.segmented import Expert, build_network

        n, interval = len(boundaries) - 1, (float(boundaries[k]), float(boundaries[k + 1]))
        path = rundir.checkpoint_path(self.run_dir, k)
        if self.complete(path, interval, self.steps):
            print(f"[train] expert {k + 1}/{n} is complete, skipped")
            return
        torch.manual_seed(self.seed + k)
        net = build_network(self.backbone, self.dataset)
        if base is not None:
            net.load_state_dict(base)
        expert = Expert(net, self.settings["path"], interval, self.local_time)
        # With a margin the expert also learns a little on each side of the interval it owns (it samples only its own).
        seen = (max(0.0, interval[0] - self.margin), min(1.0, interval[1] + self.margin))
        out = fit(expert, self.dataset, interval=seen, steps=self.steps, seed=self.seed + 1000 * (k + 1),
                  state_dir=rundir.state_dir(self.run_dir, f"segment_{k}"),
                  desc=f"expert {k + 1}/{n} [{interval[0]:.3f}, {interval[1]:.3f})", **self.settings)
        if process_state().is_main_process:
            rundir.save_checkpoint(path, {
                "state_dict": net.state_dict(), "ema": out["ema"] and out["ema"].net.state_dict(),
                "interval": list(interval), "train_interval": list(seen), "steps": self.steps,
                "local_time": self.local_time, "loss": out["loss"], "config_digest": self.config_digest})

    def shared_base(self, steps: int) -> dict:
        """Weights of a base network trained on all of [0, 1] (trained once, then read from checkpoints/base.pt)."""
        from cbsflow import rundir
        from cbsflow.segmented import Expert, build_network

        path = os.path.join(self.run_dir, "checkpoints", "base.pt")
        if self.complete(path, (0.0, 1.0), steps):
            return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        torch.manual_seed(self.seed)
        net = build_network(self.backbone, self.dataset)
        out = fit(Expert(net, self.settings["path"]), self.dataset, interval=(0.0, 1.0), steps=steps, seed=self.seed,
                  state_dir=rundir.state_dir(self.run_dir, "base"), desc="shared base", **self.settings)
        if process_state().is_main_process:
            rundir.save_checkpoint(path, {"state_dict": net.state_dict(), "ema": None, "interval": [0.0, 1.0],
                                          "steps": steps, "loss": out["loss"], "config_digest": self.config_digest})
        return net.state_dict()

    def all_complete(self, boundaries: np.ndarray) -> bool:
        from cbsflow import rundir

        return all(self.complete(rundir.checkpoint_path(self.run_dir, k), (float(boundaries[k]), float(boundaries[k + 1])),
                                 self.steps) for k in range(len(boundaries) - 1))

    def final_losses(self, n: int) -> list[float]:
        from cbsflow import rundir

        return [rundir.load_checkpoint(rundir.checkpoint_path(self.run_dir, k))["loss"] for k in range(n)]
