"""Exact likelihood of a flow-matching model via the instantaneous change of variables (Chen et al. 2018, FFJORD).

Along the ODE dx/dt = v(x, t) the log-density obeys d/dt log p_t(x_t) = -div v(x_t, t), so
log p_1(x_1) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt, with x_0 found by integrating from t = 1 back to t = 0.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from cbsflow.data.base import dataset_fingerprint
from cbsflow.registry import register
from cbsflow.samplers import heun_step

Velocity = Callable[..., torch.Tensor]
EXACT_DIVERGENCE_MAX_DIM = 8


def divergence_exact(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Trace of dv/dx by one autograd pass per dimension; (b,)."""
    v_flat = v.flatten(1)  # (b, d)
    div = torch.zeros(x.shape[0], dtype=v.dtype, device=v.device)
    for i in range(v_flat.shape[1]):
        (grad,) = torch.autograd.grad(v_flat[:, i].sum(), x, retain_graph=True)
        div = div + grad.flatten(1)[:, i]
    return div


def divergence_hutchinson(v: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Hutchinson estimate z^T (dv/dx) z of the divergence for probes z with E[z z^T] = I; (b,)."""
    (grad,) = torch.autograd.grad((v * z).sum(), x)
    return (grad * z).flatten(1).sum(dim=1)


def _drift(
    velocity: Velocity, x: torch.Tensor, t: float, y: torch.Tensor | None, z: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(v(x, t), div v(x, t)), both detached."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        v = velocity(x, tt, y) if y is not None else velocity(x, tt)
        div = divergence_exact(v, x) if z is None else divergence_hutchinson(v, x, z)
    return v.detach(), div.detach()


def log_likelihood(
    velocity: Velocity,
    x1: torch.Tensor,
    steps: int,
    exact_divergence: bool,
    generator: torch.Generator | None = None,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p_1(x1) in nats, (n,): Heun from t = 1 to t = 0, standard normal prior at t = 0.

    A segmented model is integrated segment by segment, each on its own grid (``steps`` shared in proportion to
    the segments' widths, at least one each) with the expert that owns it, so no step mixes two experts. With
    ``exact_divergence=False`` one Rademacher probe per point (drawn from ``generator``, fixed along the
    trajectory) gives an unbiased Hutchinson estimate of the divergence integral.
    """
    z = None
    if not exact_divergence:
        z = torch.randint(0, 2, x1.shape, generator=generator).to(x1) * 2 - 1
    x = x1.detach()
    int_div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)  # int_t^1 div v dt
    for field, grid in reversed(_segments(velocity, steps)):
        def drift(state, t, field=field):  # d/dt (x, int_t^1 div v) = (v, -div v)
            v, div = _drift(field, state[0], t, y, z)
            return v, -div

        for t0, t1 in zip(grid[::-1][:-1], grid[::-1][1:]):  # from t = 1 down to 0: negative steps
            x, int_div = heun_step(drift, (x, int_div), t0, t1)
    d = x[0].numel()
    log_p0 = -0.5 * x.flatten(1).pow(2).sum(dim=1) - 0.5 * d * math.log(2 * math.pi)
    return log_p0 - int_div


def _segments(velocity: Velocity, steps: int) -> list[tuple[Velocity, list[float]]]:
    """(field, increasing time grid) per segment: the experts of a segmented model, else the whole [0, 1]."""
    from cbsflow.samplers import allocate

    boundaries = getattr(velocity, "boundaries", None)
    if boundaries is None or not hasattr(velocity, "expert"):
        return [(velocity, torch.linspace(0.0, 1.0, steps + 1).tolist())]
    b = boundaries.detach().cpu().double().numpy()
    counts = allocate(b[1:] - b[:-1], max(steps, len(b) - 1))
    return [(velocity.expert(k), torch.linspace(float(b[k]), float(b[k + 1]), int(n) + 1, dtype=torch.float64).tolist())
            for k, n in enumerate(counts)]


@register("metric")
class nll:
    """Negative log-likelihood of held-out data (nats/dim; also bits/dim for data that declares its quantisation,
    ``Dataset.bin_width``) by the probability-flow ODE.

    Its floor is the data's differential entropy per dimension, when the dataset knows its density (``log_prob``):
    no model can score lower in expectation.
    """

    compares_samples = False  # it scores the model's density on data, not the samples

    def __init__(self, n_points: int = 1000, steps: int = 100, batch_size: int = 250):
        self.n_points = n_points
        self.steps = steps
        self.batch_size = batch_size

    def __call__(
        self, *, samples: torch.Tensor | None, dataset: Any, velocity: Velocity, seed: int = 0
    ) -> dict[str, dict]:
        x, y = dataset.sample(self.n_points, seed)
        if isinstance(velocity, torch.nn.Module):  # test points go where the model is
            device = next(velocity.parameters(), x).device
            x, y = x.to(device), None if y is None else y.to(device)
        dim = x[0].numel()
        exact = dim <= EXACT_DIVERGENCE_MAX_DIM
        generator = torch.Generator().manual_seed(seed)
        logps = []
        for i in range(0, x.shape[0], self.batch_size):
            yb = None if y is None else y[i : i + self.batch_size]
            logps.append(log_likelihood(velocity, x[i : i + self.batch_size], self.steps, exact, generator, yb))
        nll_dim = float(-torch.cat(logps).mean()) / dim
        settings = {
            "n_points": int(x.shape[0]),
            "reference": dataset_fingerprint(dataset),
            "reference_seed": seed,
            "steps": self.steps,
            "solver": "heun (fixed grid, t = 1 -> 0)",
            "divergence": "exact" if exact else "hutchinson (1 Rademacher probe per point)",
            "dim": dim,
            "unit": "nats/dim",
        }
        out = {"nll": {"value": nll_dim, "settings": settings}}
        entropy = data_entropy(dataset, seed)
        if entropy is not None:
            out["nll"]["floor"] = entropy
        width = getattr(dataset, "bin_width", None)
        if width:  # quantised data (8-bit images: bins of width 2/255): + log2(1 / width) bits/dim, no dequantization
            bpd = nll_dim / math.log(2) - math.log2(width)
            out["bpd"] = {"value": bpd, "settings": settings | {"unit": "bits/dim", "dequantization": "none",
                                                                "bin_width": width}}
        return out


_ENTROPIES: dict[tuple[str, int, int], dict | None] = {}


def data_entropy(dataset: Any, seed: int, n: int = 100_000) -> dict | None:
    """Differential entropy of the data per dimension (nats), -E log p(x) by Monte Carlo with its standard error;
    None when the dataset does not know its density (computed once per dataset, seed and n in a process)."""
    if not hasattr(dataset, "log_prob"):
        return None
    key = (repr(dataset), seed, n)
    if key not in _ENTROPIES:
        _ENTROPIES[key] = _entropy(dataset, seed, n)
    return _ENTROPIES[key]


def _entropy(dataset: Any, seed: int, n: int) -> dict | None:
    x, _ = dataset.sample(n, seed=seed + 17)
    try:
        logp = dataset.log_prob(x).double()
    except NotImplementedError:
        return None
    dim = x[0].numel()
    se = float(logp.std() / math.sqrt(n)) / dim if torch.isfinite(logp).all() else math.nan
    return {"value": float(-logp.mean()) / dim, "se": se, "unit": "nats/dim", "n": n,
            "what": "differential entropy of the data: the lowest NLL any model can have in expectation"}
