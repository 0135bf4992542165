"""Partition solvers: choose boundaries 0 = t_0 < t_1 < ... < t_N = 1 for N experts.

The core is de Boor's equidistribution principle: given a density rho(t) on [0, 1], cut its cumulative
integral C(t) into N equal parts. The density is piecewise linear between profile points and constant
beyond the first/last point, so C is piecewise quadratic and is inverted exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from cbsflow.errors import UserError
from cbsflow.registry import register
from cbsflow.rundir import check_boundaries

# Default density: rho = (m + floor * mean(m)) ** exponent. Monitors such as the Dirichlet energy or the
# acceleration are *squared* norms; exponent 1/2 turns them into an RMS-like measure (the analogue of
# de Boor's |f^(k)|^(1/k)), and it tames profiles that span several decades (benchmarks/results/evidence.md; BENCHMARKS.md, section 2).
DEFAULT_EXPONENT = 0.5
DEFAULT_FLOOR = 0.05


def density(value: np.ndarray, exponent: float = DEFAULT_EXPONENT, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """rho = (m + floor * mean(m)) ** exponent; exponent 0 means log(1 + m / min(m))."""
    m = np.asarray(value, dtype=np.float64)
    shifted = m + floor * m.mean()
    if exponent == 0:
        return np.log1p(shifted / max(shifted.min(), 1e-300))
    return shifted**exponent


def _extend(t: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Extend a profile to cover [0, 1] with constant values beyond its ends."""
    t, rho = np.asarray(t, np.float64), np.asarray(rho, np.float64)
    if t[0] > 0:
        t, rho = np.concatenate([[0.0], t]), np.concatenate([[rho[0]], rho])
    if t[-1] < 1:
        t, rho = np.concatenate([t, [1.0]]), np.concatenate([rho, [rho[-1]]])
    return t, rho


def cumulative(t: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """C(t_i) = integral of the piecewise-linear density from t_0 to t_i (trapezoid rule, exact here)."""
    return np.concatenate([[0.0], np.cumsum(0.5 * (rho[1:] + rho[:-1]) * np.diff(t))])


def _c_at(t: np.ndarray, rho: np.ndarray, c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """C(a) on an extended profile (t from 0 to 1)."""
    a = np.clip(np.asarray(a, np.float64), 0.0, 1.0)
    i = np.clip(np.searchsorted(t, a, side="right") - 1, 0, len(t) - 2)
    u = a - t[i]
    slope = (rho[i + 1] - rho[i]) / (t[i + 1] - t[i])
    return c[i] + rho[i] * u + 0.5 * slope * u**2


def integrate(t: np.ndarray, rho: np.ndarray, a: np.ndarray) -> np.ndarray:
    """C(a) = integral of the density from 0 to a, for points a in [0, 1]."""
    t, rho = _extend(t, rho)
    return _c_at(t, rho, cumulative(t, rho), a)


def _inverse(t: np.ndarray, rho: np.ndarray, c: np.ndarray, target: float) -> float:
    """Solve C(s) = target for s (C extended linearly past t = 1 so that it is invertible everywhere)."""
    if target >= c[-1]:
        return 1.0 + (target - c[-1]) / rho[-1]
    i = min(max(int(np.searchsorted(c, target, side="right")) - 1, 0), len(t) - 2)
    delta = target - c[i]
    slope = (rho[i + 1] - rho[i]) / (t[i + 1] - t[i])
    # Root of rho_i u + slope u^2 / 2 = delta, in the cancellation-free form.
    u = 2 * delta / (rho[i] + np.sqrt(max(rho[i] ** 2 + 2 * slope * delta, 0.0)))
    return float(t[i] + u)


def _march(t, rho, c, burden: float, n: int, min_width: float) -> np.ndarray:
    """Boundaries from 0 where each segment carries ``burden``, widened to ``min_width`` where needed."""
    edges = [0.0]
    for _ in range(n):
        start = edges[-1]
        if start >= 1.0:
            edges.append(start + max(min_width, burden / rho[-1]))
            continue
        edges.append(max(start + min_width, _inverse(t, rho, c, float(_c_at(t, rho, c, start)) + burden)))
    return np.asarray(edges)


def equidistribute(t: np.ndarray, rho: np.ndarray, n: int, min_width: float = 0.0) -> np.ndarray:
    """de Boor's equidistribution: boundaries b_0 = 0 < ... < b_n = 1 with equal integral of rho per segment.

    With ``min_width`` > 0, segments that would be narrower are widened to ``min_width`` and the remaining
    burden is shared equally by the other segments (bisection on the common burden).
    """
    t, rho = _extend(t, rho)
    c = cumulative(t, rho)
    if min_width <= 0:
        edges = np.array([_inverse(t, rho, c, k * c[-1] / n) for k in range(n + 1)])
    else:
        lo, hi = 0.0, c[-1]
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _march(t, rho, c, mid, n, min_width)[-1] < 1.0 else (lo, mid)
        edges = _march(t, rho, c, lo, n, min_width)
    edges[0], edges[-1] = 0.0, 1.0
    return edges
def _check_n(n_segments, where: str) -> int:
    if not isinstance(n_segments, (int, np.integer)) or isinstance(n_segments, bool) or n_segments < 1:
        raise UserError(f"{where}.n_segments must be an integer >= 1, got {n_segments!r}")
    return int(n_segments)


class Solver:
    """Base class. ``solver(t, value, path=None) -> boundaries`` (the split stage passes its path; only path-based
    solvers use it); ``exponent`` and ``floor`` define the density whose per-segment integral (the 'burden') is
    reported in split.json, so burdens compare across solvers."""

    exponent: float = DEFAULT_EXPONENT
    floor: float = DEFAULT_FLOOR
    needs_profile: bool = True

    def __call__(self, t: np.ndarray, value: np.ndarray, path=None) -> np.ndarray:
        raise NotImplementedError

    def burden(self, t: np.ndarray, value: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
        """Per-segment integral of the density, normalised to sum 1."""
        rho = density(value, self.exponent, self.floor)
        c = integrate(t, rho, boundaries)
        return np.diff(c) / c[-1]


@register("partition")
class deboor(Solver):
    """de Boor equidistribution of rho = (m + floor * mean m) ** exponent (exponent 0: log(1 + m / min m))."""

    def __init__(
        self,
        n_segments: int = 4,
        exponent: float = DEFAULT_EXPONENT,
        floor: float = DEFAULT_FLOOR,
        min_width: float = 0.0,
    ):
        self.n_segments = _check_n(n_segments, "deboor")
        if exponent < 0 or floor < 0:
            raise UserError(f"deboor: exponent and floor must be >= 0, got exponent={exponent}, floor={floor}")
        if min_width < 0 or min_width * self.n_segments > 1:
            raise UserError(
                f"deboor.min_width={min_width} is impossible for n_segments={self.n_segments}: "
                f"need 0 <= min_width <= 1 / n_segments"
            )
        self.exponent, self.floor, self.min_width = exponent, floor, min_width

    def __call__(self, t: np.ndarray, value: np.ndarray, path=None) -> np.ndarray:
        rho = density(value, self.exponent, self.floor)
        if not np.all(rho > 0):
            raise UserError("deboor: the density is zero somewhere; set deboor.floor > 0 to regularise the monitor")
        return equidistribute(t, rho, self.n_segments, self.min_width)


@register("partition")
class uniform(Solver):
    """Uniform split: N intervals of equal width (the naive baseline)."""

    needs_profile = False

    def __init__(self, n_segments: int = 4):
        self.n_segments = _check_n(n_segments, "uniform")

    def __call__(self, t=None, value=None, path=None) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.n_segments + 1)


@register("partition")
class manual(Solver):
    """Boundaries given by hand in gin, e.g. manual.boundaries = [0, 0.3, 0.7, 1]."""

    needs_profile = False

    def __init__(self, boundaries: Sequence[float] = (0.0, 1.0)):
        self.boundaries = check_boundaries(boundaries, "manual.boundaries")
        self.n_segments = len(self.boundaries) - 1

    def __call__(self, t=None, value=None, path=None) -> np.ndarray:
        return self.boundaries.copy()


@register("partition")
class logsnr(Solver):
    """Heuristic baseline: boundaries uniform in log-SNR = log(alpha^2 / sigma^2) of the path, over a clipped range."""

    needs_profile = False

    def __init__(self, n_segments: int = 4, log_snr_range: tuple[float, float] = (-6.0, 6.0)):
        self.n_segments = _check_n(n_segments, "logsnr")
        lo, hi = log_snr_range
        if not lo < hi:
            raise UserError(f"logsnr.log_snr_range must be (low, high) with low < high, got {log_snr_range}")
        self.log_snr_range = (float(lo), float(hi))

    def __call__(self, t=None, value=None, path=None) -> np.ndarray:
        if path is None:
            raise ValueError("logsnr needs the path (the split stage passes it)")
        grid = torch.linspace(1e-6, 1 - 1e-6, 100_001, dtype=torch.float64)
        lam = path.log_snr(grid).numpy()
        lo, hi = self.log_snr_range
        inner = np.interp(np.linspace(lo, hi, self.n_segments + 1)[1:-1], lam, grid.numpy())
        return np.concatenate([[0.0], inner, [1.0]])
