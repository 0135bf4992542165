"""Pairwise profiles and the splits that cluster them: ANT's gradient affinity (Go et al., NeurIPS 2023) and
Multi-stage's optimal-denoiser similarity (Zhang et al., CVPR 2024), cut into contiguous intervals exactly by
dynamic programming (``affinity_matrix``).

A pairwise monitor returns an n x n matrix S over the profile's t grid (S[i, j]: how alike the task at t_i is to the
task at t_j) with its standard error, where an ordinary monitor returns one value per t; the profile stage and the
warm split store it as it is, and ``affinity_matrix`` reads it. Formulas, sources and what was adapted to
flow-matching time are in docs/math.md ("Split methods of the literature").
"""

from __future__ import annotations

import numpy as np
import torch

from cbsflow.clustering import contiguous_clusters
from cbsflow.errors import UserError
from cbsflow.monitors import mean_and_stderr
from cbsflow.partition import Solver, _check_n
from cbsflow.registry import name_of, register


def _parameters(velocity) -> list[torch.Tensor]:
    """Every parameter of the field's network, made to take gradients (an EMA copy's do not by default)."""
    params = list(velocity.parameters()) if hasattr(velocity, "parameters") else []
    for p in params:
        p.requires_grad_(True)
    if not params:
        raise UserError("gradient_affinity needs a trained network (the aux_net or checkpoint estimator, or the warm "
                        "split's shared network); the closed-form field has no parameters")
    return params


@register("monitor")
class gradient_affinity:
    """ANT's task affinity: S[i, j] = cos(g_i, g_j), g_i the gradient over all of the network's parameters of the
    mean velocity loss at t_i on the data points (one noise draw each, shared by every t).

    Its standard error is |S_a - S_b| / 2 from the two halves of the points, each half's gradients on its own."""

    pairwise = True

    @torch.enable_grad()
    def __call__(self, velocity, x1, t, path, y=None, generator=None):
        generator = generator or torch.Generator().manual_seed(0)
        params = _parameters(velocity)
        eps = torch.randn(x1.shape, generator=generator)
        b = x1.shape[0]
        if b < 2:
            raise UserError("gradient_affinity needs at least 2 data points (profile.n_samples)")
        halves = [slice(0, b // 2), slice(b // 2, b)]
        grads = torch.zeros(2, len(t), sum(p.numel() for p in params), dtype=torch.float64)
        for i, ti in enumerate(t.tolist()):
            for h, sl in enumerate(halves):
                n = sl.stop - sl.start
                x_t, target = path.interpolate(x1[sl], eps[sl], torch.full((n,), ti))
                yy = None if y is None else y[sl]
                loss = (velocity(x_t, torch.full((n,), ti), yy) - target).pow(2).mean()
                grads[h, i] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()
        both = torch.nn.functional.normalize(grads.sum(0), dim=-1)  # the mean gradient over all points, up to scale
        parts = [torch.nn.functional.normalize(g, dim=-1) for g in grads]
        return both @ both.T, (parts[0] @ parts[0].T - parts[1] @ parts[1].T).abs() / 2


@register("monitor")
class denoiser_similarity:
    """Multi-stage's similarity of the optimal denoiser between noise levels: S[i, j] = the fraction of coordinates
    where |D(x_{t_i}, t_i) - D(x_{t_j}, t_j)| <= ``eta``, x_{t_i} and x_{t_j} made from the same data point and noise,
    D = E[x1 | x_t] from the field's velocity (the optimal denoiser when the field is the closed-form one).

    ``eta`` = 4/255: the paper's 2/255 on [0, 1] pixels, on this project's [-1, 1] pixel scale."""

    pairwise = True

    def __init__(self, eta: float = 4 / 255, batch_size: int = 256):
        if not eta > 0:
            raise UserError(f"denoiser_similarity.eta = {eta}: the tolerance must be > 0")
        self.eta, self.batch_size = float(eta), int(batch_size)

    @torch.no_grad()
    def __call__(self, velocity, x1, t, path, y=None, generator=None):
        generator = generator or torch.Generator().manual_seed(0)
        b = x1.shape[0]
        eps = torch.randn(x1.shape, generator=generator)
        d = torch.zeros(len(t), b, x1[0].numel())
        for i, ti in enumerate(t.tolist()):
            for s in range(0, b, self.batch_size):
                sl = slice(s, min(b, s + self.batch_size))
                n = sl.stop - sl.start
                tt = torch.full((n,), ti)
                x_t, _ = path.interpolate(x1[sl], eps[sl], tt)
                v = velocity(x_t, tt, None if y is None else y[sl])
                d[i, sl] = path.from_velocity(v, x_t, tt, "x1").reshape(n, -1).float()
        close = torch.stack([(d[i][None] - d).abs().le(self.eta).double().mean(-1) for i in range(len(t))])
        return mean_and_stderr(close)  # over the data points: (n, n) means and standard errors


def is_pairwise(value) -> bool:
    """Whether a profile's values are a pairwise matrix (n x n) rather than one value per t."""
    return np.ndim(value) == 2


def affinity_costs(similarity: np.ndarray, objective: str) -> np.ndarray:
    """cost[l, r] of the cluster of grid points l..r: ANT's -sum_i S[c, i] with its centre c = int((l + r + 1) / 2)
    ('ant'), or minus the cluster's mean within-similarity sum_{i, j} S[i, j] / |C|^2 ('mean_within', Multi-stage's
    graph objective)."""
    s = np.asarray(similarity, np.float64)
    n = len(s)
    cost = np.full((n, n), np.inf)
    blocks = np.cumsum(np.cumsum(np.pad(s, ((1, 0), (1, 0))), 0), 1)  # 2-D prefix sums
    for l in range(n):
        for r in range(l, n):
            if objective == "ant":
                cost[l, r] = -s[(l + r + 1) // 2, l:r + 1].sum()
            else:
                total = blocks[r + 1, r + 1] - blocks[l, r + 1] - blocks[r + 1, l] + blocks[l, l]
                cost[l, r] = -total / (r - l + 1) ** 2
    return cost


@register("partition")
class affinity_matrix(Solver):
    """Contiguous clusters of the profile's t grid that maximise within-cluster similarity of a pairwise profile
    (``gradient_affinity``, ``denoiser_similarity``), solved exactly by dynamic programming; a boundary lies halfway
    between the last grid point of one cluster and the first of the next. ``objective``: 'ant' (ANT's cost, each
    point's similarity to its cluster's centre) or 'mean_within' (Multi-stage's: the mean similarity of all pairs)."""

    objectives = ("ant", "mean_within")

    def __init__(self, n_segments: int = 4, objective: str = "ant"):
        self.n_segments = _check_n(n_segments, "affinity_matrix")
        if objective not in self.objectives:
            raise UserError(f"affinity_matrix.objective = {objective!r}: choose one of "
                            f"{', '.join(map(repr, self.objectives))}")
        self.objective = objective

    def _checked(self, t, value) -> tuple[np.ndarray, np.ndarray]:
        t, s = np.asarray(t, np.float64), np.asarray(value, np.float64)
        if not is_pairwise(s) or s.shape != (len(t), len(t)):
            raise UserError(f"{name_of(self)} needs a pairwise profile (an n x n matrix over the t grid): bind "
                            "profile.monitor (or warm_split.monitor) to @gradient_affinity() or @denoiser_similarity()")
        if len(t) < self.n_segments:
            raise UserError(f"{name_of(self)}: {len(t)} grid points cannot make {self.n_segments} clusters; raise "
                            "profile.n_points")
        return t, s

    def __call__(self, t, value, path=None) -> np.ndarray:
        t, s = self._checked(t, value)
        starts, _ = contiguous_clusters(affinity_costs(s, self.objective), self.n_segments)
        inner = [0.5 * (t[i - 1] + t[i]) for i in starts[1:]]
        return np.array([0.0, *inner, 1.0])

    def burden(self, t, value, boundaries) -> np.ndarray:
        """Each interval's mean within-similarity (not a share of a density: a pairwise profile has none)."""
        t, s = self._checked(t, value)
        out = []
        for a, b in zip(boundaries[:-1], boundaries[1:]):
            idx = np.flatnonzero((t >= a) & (t < b) if b < 1 else (t >= a))
            out.append(float(s[np.ix_(idx, idx)].mean()) if len(idx) else float("nan"))
        return np.array(out)
