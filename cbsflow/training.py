"""Training one velocity network on times drawn from one interval (the velocity / flow-matching loss)."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import tqdm
from torch import nn

from cbsflow.errors import UserError
from cbsflow.timesampling import uniform_time


def velocity_loss(net: nn.Module, path, x1: torch.Tensor, y, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """E || v(x_t, t) - d/dt x_t ||^2 (per-dimension mean)."""
    x_t, target = path.interpolate(x1, eps, t)
    return torch.mean((net(x_t, t, y) - target) ** 2)


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1 - decay)


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
    accelerator: Accelerator | None = None,
    desc: str = "train",
) -> dict:
    """Train ``net`` in place on t drawn inside ``interval``; returns the EMA copy (or None) and the last loss."""
    accelerator = accelerator or Accelerator()
    t_sampler = t_sampler or uniform_time()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)))
    ema = copy.deepcopy(net).requires_grad_(False) if ema_decay > 0 else None
    model, opt = accelerator.prepare(net, opt)
    # Noise and times get their own stream: the dataset draws from `seed`, and sharing it would correlate x1 and eps.
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
    batches = dataset.batches(batch_size, seed=seed)
    bar = tqdm(range(steps), desc=desc, main_process_only=True, leave=False, mininterval=1.0)
    loss_value = math.nan
    for step in bar:
        x1, y = next(batches)
        t = t_sampler(x1.shape[0], interval, gen)
        eps = torch.randn(x1.shape, generator=gen)
        x1, t, eps = (v.to(accelerator.device) for v in (x1, t, eps))
        y = None if y is None else y.to(accelerator.device)
        with accelerator.autocast():
            loss = velocity_loss(model, path, x1, y, t, eps)
        if not torch.isfinite(loss):
            raise UserError(f"{desc}: loss became {loss.item()} at step {step}; lower the learning rate or check the data")
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema_update(ema, accelerator.unwrap_model(model), ema_decay)
        loss_value = loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss_value:.4f}")
    return {"ema": ema, "loss": loss_value}
