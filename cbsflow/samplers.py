"""ODE samplers and step schedules.

Every sampler has the same signature, ``sampler(velocity, x, t_grid, y=None) -> x`` (k-diffusion style),
integrating dx/dt = v from t_grid[0] to t_grid[-1]. A schedule allocates a total number of steps across
the segments: ``schedule(boundaries, n_steps) -> [grid of segment 0, grid of segment 1, ...]``; each grid
runs from one boundary to the next, so integration restarts at every boundary and no step straddles
two experts.
"""

from __future__ import annotations

import numpy as np
import torch

from cbsflow.errors import UserError
from cbsflow.registry import register


class CountingVelocity:
    """Wraps a velocity field and counts network evaluations (NFE)."""

    def __init__(self, velocity):
        self.velocity, self.nfe = velocity, 0

    def __call__(self, x, t, y=None):
        self.nfe += 1
        return self.velocity(x, t, y)


def _full(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=torch.float32)


@register("sampler")
@torch.no_grad()
def euler(velocity, x: torch.Tensor, t_grid, y=None) -> torch.Tensor:
    """Euler's method (first order, one evaluation per step)."""
    for t0, t1 in zip(t_grid[:-1], t_grid[1:]):
        x = x + (t1 - t0) * velocity(x, _full(t0, x), y)
    return x


@register("sampler")
@torch.no_grad()
def heun(velocity, x: torch.Tensor, t_grid, y=None) -> torch.Tensor:
    """Heun's method (second order, two evaluations per step; EDM Algorithm 1 without noise)."""
    for t0, t1 in zip(t_grid[:-1], t_grid[1:]):
        d0 = velocity(x, _full(t0, x), y)
        x_euler = x + (t1 - t0) * d0  # Euler step.
        d1 = velocity(x_euler, _full(t1, x), y)
        x = x + (t1 - t0) * 0.5 * (d0 + d1)  # Trapezoidal correction.
    return x


def allocate(weights: np.ndarray, n_steps: int) -> np.ndarray:
    """Split ``n_steps`` integers over segments in proportion to ``weights`` (largest remainder, >= 1 each)."""
    n = len(weights)
    if n_steps < n:
        raise UserError(f"sample.n_steps={n_steps} is fewer than the {n} segments; use at least one step per segment")
    share = n_steps * np.asarray(weights, np.float64) / np.sum(weights)
    steps = np.maximum(1, np.floor(share)).astype(int)
    while steps.sum() < n_steps:  # hand out the remainder by largest shortfall
        steps[np.argmax(share - steps)] += 1
    while steps.sum() > n_steps:  # undo the minimum of one step where it overshoots most
        steps[np.argmax(np.where(steps > 1, steps - share, -np.inf))] -= 1
    return steps


@register("schedule")
class uniform_steps:
    """A global uniform grid in t: each segment gets steps in proportion to its width."""

    def __call__(self, boundaries, n_steps: int) -> list[np.ndarray]:
        b = np.asarray(boundaries, np.float64)
        steps = allocate(np.diff(b), n_steps)
        return [np.linspace(lo, hi, k + 1) for lo, hi, k in zip(b[:-1], b[1:], steps)]


@register("schedule")
class equal_steps:
    """The same number of steps in every segment (finer steps where the segments are narrow)."""

    def __call__(self, boundaries, n_steps: int) -> list[np.ndarray]:
        b = np.asarray(boundaries, np.float64)
        steps = allocate(np.ones(len(b) - 1), n_steps)
        return [np.linspace(lo, hi, k + 1) for lo, hi, k in zip(b[:-1], b[1:], steps)]


@torch.no_grad()
def sample_segmented(model, sampler, grids: list[np.ndarray], x: torch.Tensor, y=None) -> tuple[torch.Tensor, int]:
    """Integrate from noise x through every segment with its own expert; returns samples and NFE per sample."""
    nfe = 0
    for k, grid in enumerate(grids):
        counted = CountingVelocity(model.expert(k))
        x = sampler(counted, x, [float(v) for v in grid], y)
        nfe += counted.nfe
    return x, nfe
