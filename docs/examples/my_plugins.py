"""One minimal working component of every kind a contributor usually adds (docs/extending.md).

    python tools/run.py --gin gin/quickstart.gin --import my_plugins --bind 'BACKBONE = @tiny_mlp' ...

(with docs/examples on PYTHONPATH). ``tests/test_extending.py`` imports this file and runs each component through
the pipeline.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from cbsflow.estimators import closed_form
from cbsflow.partition import Solver, deboor
from cbsflow.registry import register


@register("backbone")
class tiny_mlp(nn.Module):
    """A backbone: built as ``tiny_mlp(data_shape=..., num_classes=..., **bindings)``; forward(x, t, y) -> x.shape."""

    def __init__(self, data_shape, num_classes: int = 0, width: int = 32):
        super().__init__()
        dim = math.prod(data_shape)
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x, t, y=None):
        flat = x.reshape(x.shape[0], -1)
        return self.net(torch.cat([flat, t.expand(x.shape[0])[:, None].to(flat.dtype)], 1)).reshape(x.shape)


@register("monitor")
class field_norm:
    """A monitor: (velocity, x1, t, path, y, generator) -> (mean, stderr), two tensors shaped like t."""

    def __call__(self, velocity, x1, t, path, y=None, generator=None):
        means, errors = [], []
        for ti in t.tolist():
            eps = torch.randn(x1.shape, generator=generator)
            x_t, _ = path.interpolate(x1, eps, torch.full((x1.shape[0],), ti))
            with torch.no_grad():
                sq = velocity(x_t, torch.full((x1.shape[0],), ti), y).flatten(1).pow(2).mean(1)
            means.append(sq.mean())
            errors.append(sq.std() / math.sqrt(len(sq)))
        return torch.stack(means), torch.stack(errors)


@register("estimator")
class point_set:
    """An estimator: (dataset, path, seed) -> a velocity module v(x, t, y) to profile (here the smoothed point set)."""

    def __init__(self, n_points: int = 512):
        self.n_points = n_points

    def __call__(self, dataset, path, seed: int = 0):
        return closed_form(n_points=self.n_points)(dataset, path, seed=seed)


@register("partition")
class late_deboor(Solver):
    """A partition solver: (t, value, path) -> boundaries 0 = t_0 < ... < t_N = 1 (here de Boor on m(t) * t)."""

    def __init__(self, n_segments: int = 2):
        self.n_segments = n_segments

    def __call__(self, t, value, path=None):
        return deboor(n_segments=self.n_segments)(t, np.asarray(value) * np.asarray(t), path)


@register("sampler")
@torch.no_grad()
def midpoint(velocity, x, t_grid, y=None, path=None, generator=None):
    """A sampler: (velocity, x at t_grid[0], t_grid, y, path, generator) -> x at t_grid[-1]."""
    for t0, t1 in zip(t_grid[:-1], t_grid[1:]):
        h = t1 - t0
        full = lambda s: torch.full((x.shape[0],), s, dtype=x.dtype)  # noqa: E731
        mid = x + 0.5 * h * velocity(x, full(t0), y)
        x = x + h * velocity(mid, full(t0 + 0.5 * h), y)
    return x


@register("metric")
class mean_error:
    """A metric: (samples, dataset, velocity, seed) -> {name: {'value': float, 'settings': dict}}."""

    def __call__(self, *, samples, dataset, velocity=None, seed: int = 0):
        ref, _ = dataset.sample(samples.shape[0], seed=seed + 1)
        value = float((samples.flatten(1).mean(0) - ref.flatten(1).mean(0)).norm())
        return {"mean_error": {"value": value, "settings": {"n_samples": samples.shape[0]}}}
