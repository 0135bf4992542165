"""Partition solvers of other split methods: equal training mass (eDiff-I), SNR thresholds (Wan 2.2) and ANT's
contiguous clustering of a t grid by dynamic programming (Go et al., NeurIPS 2023), on the SNR or, as this project's
adaptation, on a monitor profile (`affinity_profile`).

All follow the project's convention (t = 0 noise, t = 1 data) and the ``Solver`` contract of
``cbsflow/partition.py``; formulas, sources and what was adapted to flow-matching time are in ``docs/math.md``.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch

from cbsflow.errors import UserError
from cbsflow.partition import DEFAULT_EXPONENT, DEFAULT_FLOOR, Solver, _check_n, density
from cbsflow.registry import Instance, name_of, register


@register("partition")
class equal_mass(Solver):
    """Boundaries at equal training mass of a time sampler: b_k = F^{-1}(k / N) (eDiff-I's equal-probability split)."""

    needs_profile = False

    def __init__(self, n_segments: int = 4, t_sampler: Instance("time_sampler") | None = None):
        from cbsflow.timesampling import uniform_time

        self.n_segments = _check_n(n_segments, "equal_mass")
        self.t_sampler = t_sampler if t_sampler is not None else uniform_time()
        if not callable(getattr(self.t_sampler, "icdf", None)):
            raise UserError(f"equal_mass.t_sampler = {t_sampler!r}: bind a time sampler, e.g. @logit_normal()")

    def __call__(self, t=None, value=None, path=None) -> np.ndarray:
        u = torch.linspace(0.0, 1.0, self.n_segments + 1, dtype=torch.float64)[1:-1]
        inner = self.t_sampler.icdf(u).double().numpy()
        b = np.concatenate([[0.0], inner, [1.0]])
        if not np.all(np.diff(b) > 0):
            raise UserError(f"equal_mass: the time sampler's quantiles {np.round(inner, 6).tolist()} are not "
                            f"strictly inside (0, 1) for n_segments = {self.n_segments}; widen its distribution")
        return b


def log_snr_to_t(path, lam: np.ndarray, iters: int = 80) -> np.ndarray:
    """The times where the path's (increasing) log-SNR equals ``lam``, by bisection in float64."""
    target = torch.as_tensor(np.asarray(lam, np.float64))
    lo, hi = torch.zeros_like(target), torch.ones_like(target)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = path.log_snr(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (0.5 * (lo + hi)).numpy()


# Wan 2.2 T2V switches experts at noise level sigma = 0.875 of its flow-matching path (x = (1 - sigma) x0 +
# sigma eps); in this project's time that is t = 0.125 on the linear path, log-SNR = 2 log(0.125 / 0.875).
WAN22_LOG_SNR = 2 * float(np.log(0.125 / 0.875))


@register("partition")
class snr_threshold(Solver):
    """Boundaries where the path's log-SNR crosses given thresholds (Wan 2.2: two experts switched at one SNR)."""

    needs_profile = False

    def __init__(self, log_snr: Sequence[float] = (WAN22_LOG_SNR,)):
        lam = [float(x) for x in log_snr]
        if not lam or any(not np.isfinite(x) for x in lam) or any(b <= a for a, b in zip(lam, lam[1:])):
            raise UserError(f"snr_threshold.log_snr = {list(log_snr)}: give one or more finite, strictly increasing "
                            "log-SNR values (N experts need N - 1), e.g. [0.0]")
        self.log_snr = lam
        self.n_segments = len(lam) + 1

    def __call__(self, t=None, value=None, path=None) -> np.ndarray:
        if path is None:
            raise ValueError("snr_threshold needs the path (the split stage passes it)")
        inner = log_snr_to_t(path, np.asarray(self.log_snr))
        b = np.concatenate([[0.0], inner, [1.0]])
        if not np.all(np.diff(b) > 0):
            raise UserError(f"snr_threshold.log_snr = {self.log_snr} gives boundaries {np.round(inner, 9).tolist()} "
                            "that are not strictly inside (0, 1) on this path; choose thresholds closer to 0")
        return b


def interval_costs(values: np.ndarray) -> np.ndarray:
    """cost[l, r] = sum_{i=l..r} |v_i - v_c|, c = floor((l + r + 1) / 2) (ANT's within-cluster cost); inf for l > r."""
    v = np.asarray(values, np.float64)
    n = len(v)
    cost = np.full((n, n), np.inf)
    for l in range(n):
        for r in range(l, n):
            cost[l, r] = np.abs(v[l:r + 1] - v[(l + r + 1) // 2]).sum()
    return cost


def contiguous_clusters(cost: np.ndarray, k: int) -> tuple[list[int], float]:
    """Exact minimum of sum_j cost[s_j, s_{j+1} - 1] over k non-empty contiguous clusters of n points (dynamic
    programming, O(k n^2)); returns the cluster starts [0 = s_0 < s_1 < ... < s_{k-1}] and the minimum."""
    n = cost.shape[0]
    best = np.full((k + 1, n + 1), np.inf)  # best[j, i]: first i points in j clusters
    arg = np.zeros((k + 1, n + 1), dtype=int)
    best[0, 0] = 0.0
    for j in range(1, k + 1):
        for i in range(j, n - (k - j) + 1):
            cands = best[j - 1, j - 1:i] + cost[j - 1:i, i - 1]  # the last cluster is points s..i-1
            s = int(np.argmin(cands))
            best[j, i], arg[j, i] = cands[s], s + j - 1
    starts, i = [], n
    for j in range(k, 0, -1):
        i = arg[j, i]
        starts.append(int(i))
    return starts[::-1], float(best[k, n])


def brute_force_clusters(cost: np.ndarray, k: int) -> tuple[list[int], float]:
    """The same minimum by enumerating every contiguous partition (a test oracle)."""
    n = cost.shape[0]
    best = (None, np.inf)
    for cuts in itertools.combinations(range(1, n), k - 1):
        edges = (0, *cuts, n)
        total = sum(cost[a, b - 1] for a, b in zip(edges, edges[1:]))
        if total < best[1]:
            best = ([0, *cuts], float(total))
    return best


@register("partition")
class affinity_clusters(Solver):
    """ANT's contiguous clustering of a t grid by dynamic programming, minimising the summed distance of each point's
    log-SNR (or the paper's SNR) to its cluster centre's (Go et al., NeurIPS 2023)."""

    needs_profile = False
    costs = ("log_snr", "snr")

    def __init__(self, n_segments: int = 4, cost: str = "log_snr", n_points: int = 100):
        self.n_segments = _check_n(n_segments, name_of(self))
        if cost not in self.costs:
            raise UserError(f"{name_of(self)}.cost = {cost!r}: choose one of {', '.join(map(repr, self.costs))}")
        if not isinstance(n_points, int) or n_points < self.n_segments:
            raise UserError(f"{name_of(self)}.n_points = {n_points!r}: need an integer >= n_segments "
                            f"({self.n_segments}), one grid cell per cluster at least")
        self.cost, self.n_points = cost, n_points

    def grid(self) -> np.ndarray:
        """Cell centres (i + 1/2) / n: the flow-matching analogue of ANT's discrete timesteps, never t = 0 or 1."""
        return (np.arange(self.n_points) + 0.5) / self.n_points

    def values(self, t: np.ndarray, value: np.ndarray, path) -> np.ndarray:
        """What each grid point is compared by: its log-SNR or SNR under the path."""
        if path is None:
            raise ValueError(f"{name_of(self)} with cost {self.cost!r} needs the path (the split stage passes it)")
        lam = path.log_snr(torch.as_tensor(self.grid(), dtype=torch.float64)).numpy()
        return lam if self.cost == "log_snr" else np.exp(lam)

    def __call__(self, t: np.ndarray, value: np.ndarray, path=None) -> np.ndarray:
        starts, _ = contiguous_clusters(interval_costs(self.values(t, value, path)), self.n_segments)
        return np.concatenate([[0.0], np.asarray(starts[1:], np.float64) / self.n_points, [1.0]])


@register("partition")
class affinity_profile(affinity_clusters):
    """ANT's dynamic program on a monitor profile (this project's adaptation): contiguous clusters of a t grid
    minimising the summed |rho(t) - rho(centre)| of the profile's density rho = (m + floor * mean m) ** exponent."""

    needs_profile = True
    costs = ("profile",)

    def __init__(self, n_segments: int = 4, n_points: int = 100, exponent: float = DEFAULT_EXPONENT,
                 floor: float = DEFAULT_FLOOR):
        super().__init__(n_segments, "profile", n_points)
        if exponent < 0 or floor < 0:
            raise UserError(f"affinity_profile: exponent and floor must be >= 0, got {exponent}, {floor}")
        self.exponent, self.floor = exponent, floor

    def values(self, t: np.ndarray, value: np.ndarray, path) -> np.ndarray:
        """The profile's density at the grid points (linear between profile points, constant beyond its ends)."""
        return np.interp(self.grid(), np.asarray(t, np.float64), density(value, self.exponent, self.floor))
