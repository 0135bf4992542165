"""Estimators: what provides the velocity field v(x, t) that the monitors are measured on."""

from __future__ import annotations

import os

import torch
from torch import nn

from cbsflow.errors import UserError
from cbsflow.registry import Constructor, Instance, register
from cbsflow.training import TrainSettings


def _bcast(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape((-1,) + (1,) * (ndim - 1))


class MixtureVelocity(nn.Module):
    """Exact marginal velocity E[d/dt x_t | x_t = x] of a Gaussian mixture with diagonal covariances.

    Per component k: V = alpha^2 s^2 + sigma^2, B = (alpha alpha' s^2 + sigma sigma') / V and
    v_k(x) = alpha' mu + B (x - alpha mu); v is the posterior-weighted sum of v_k. A finite point set is the
    mixture with s = 0 (optionally a small shared ``std`` to smooth the singularity at t = 1).
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, path):
        super().__init__()
        self.register_buffer("log_w", torch.log(weights / weights.sum()))
        self.register_buffer("means", means.float())  # (K, d)
        self.register_buffer("stds", stds.float())  # (K, d)
        self.path = path
        self.shared_std = bool(torch.all(stds == stds.flatten()[0]))
        self.valid_until = 1.0  # the t from which the field memorises a point set (see closed_form)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)  # (b, d)
        t = t.to(flat.dtype).expand(flat.shape[0])
        a, s = _bcast(self.path.alpha(t), 3), _bcast(self.path.sigma(t), 3)  # (b, 1, 1)
        da, ds = _bcast(self.path.d_alpha(t), 3), _bcast(self.path.d_sigma(t), 3)
        if self.shared_std:
            v = self._shared(flat, a[:, :, 0], s[:, :, 0], da[:, :, 0], ds[:, :, 0])
        else:
            var = self.stds**2  # (K, d)
            big_v = a**2 * var + s**2  # (b, K, d)
            resid = flat[:, None] - a * self.means  # (b, K, d)
            logits = self.log_w - 0.5 * ((resid**2) / big_v + torch.log(big_v)).sum(-1)  # (b, K)
            post = torch.softmax(logits, dim=-1)
            v_k = da * self.means + (a * da * var + s * ds) / big_v * resid  # (b, K, d)
            v = torch.einsum("bk,bkd->bd", post, v_k)
        return v.reshape(x.shape)

    def _shared(self, x, a, s, da, ds):
        """Fast path when every component has the same isotropic std (point sets): one matmul."""
        var = self.stds.flatten()[0] ** 2
        big_v = a**2 * var + s**2  # (b, 1)
        sq = (x**2).sum(-1, keepdim=True) - 2 * a * (x @ self.means.T) + a**2 * (self.means**2).sum(-1)  # (b, K)
        post = torch.softmax(self.log_w - 0.5 * sq / big_v, dim=-1)
        mean_mu = post @ self.means  # (b, d): posterior mean of the component centre
        gain = (a * da * var + s * ds) / big_v  # (b, 1)
        return da * mean_mu + gain * (x - a * mean_mu)


def resolution(points: torch.Tensor, k: int, max_points: int = 2048, seed: int = 0) -> float:
    """Mean distance from a point to its k-th nearest neighbour in the set (estimated on up to ``max_points``)."""
    flat = points.reshape(points.shape[0], -1).double()
    if flat.shape[0] > max_points:
        keep = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points]
        query = flat[keep]
    else:
        query = flat
    k = min(k, flat.shape[0] - 1)
    dists = torch.cat([torch.cdist(query[i:i + 256], flat).topk(k + 1, largest=False).values[:, -1]
                       for i in range(0, len(query), 256)])  # the 0-th neighbour is the point itself
    return float(dists.mean())


def memorising_from(path, std: float, scale: float) -> float:
    """First t at which a point set smoothed by ``std`` resolves structure finer than ``scale``: where the total
    kernel width sqrt(std^2 + (sigma / alpha)^2) drops below ``scale`` (1.0 if it never does)."""
    if std >= scale:
        return 1.0
    grid = torch.linspace(1e-4, 1.0, 10_001, dtype=torch.float64)
    width = torch.sqrt(std**2 + (path.sigma(grid) / path.alpha(grid)) ** 2)
    below = torch.nonzero(width < scale).flatten()
    return float(grid[below[0]]) if below.numel() else 1.0


@register("estimator")
class closed_form:
    """Exact velocity without training: the data's Gaussian mixture if known, else a smoothed point set.

    A point set of n samples is the mixture of n Gaussians of std ``std``; with std = 0 its field memorises the
    points as t -> 1 (the Jacobian blows up: on 8 Gaussians with 4,096 points the Dirichlet energy is 17x too high
    at t = 0.95). The default std = None smooths each point by the mean distance to its ``neighbours``-th nearest
    neighbour, the finest scale the sample resolves, so that the field averages over about that many points
    everywhere. The returned field's ``valid_until`` is the t from which it would memorise (1.0 when smoothed).
    """

    def __init__(self, n_points: int = 4096, std: float | None = None, neighbours: int = 20):
        if std is not None and std < 0:
            raise UserError(f"closed_form.std must be >= 0 (or None for the default smoothing), got {std}")
        if neighbours < 1:
            raise UserError(f"closed_form.neighbours must be >= 1, got {neighbours}")
        self.n_points, self.std, self.neighbours = n_points, std, neighbours

    def __call__(self, dataset, path, seed: int = 0) -> nn.Module:
        mixture = dataset.mixture() if hasattr(dataset, "mixture") else None
        if mixture is not None:
            return MixtureVelocity(*mixture, path=path).eval()
        points, _ = dataset.sample(self.n_points, seed=seed + 7919)
        points = points.reshape(points.shape[0], -1).float()
        scale = resolution(points, self.neighbours, seed=seed)
        std = scale if self.std is None else self.std
        field = MixtureVelocity(torch.ones(len(points)), points, torch.full_like(points, std), path=path).eval()
        field.valid_until = memorising_from(path, std, scale)
        return field


@register("estimator")
class aux_net:
    """A small backbone trained briefly on the data with the velocity loss (the paper's auxiliary model).

    ``settings`` is a training configuration of its own (gin: ``aux_net.settings = @aux/training()``); None trains
    with the defaults of ``cbsflow.training.TrainSettings``. With ``aux/training.ema_decay`` > 0 the field profiled
    is the EMA of the weights, as for the experts.
    """

    def __init__(self, backbone: Constructor("backbone"), settings: TrainSettings | None = None):
        self.backbone, self.settings = backbone, settings

    def __call__(self, dataset, path, seed: int = 0) -> nn.Module:
        from cbsflow.segmented import Expert, build_network
        from cbsflow.training import fit

        torch.manual_seed(seed)
        net = Expert(build_network(self.backbone, dataset), path)
        out = fit(net, dataset, path, (0.0, 1.0), self.settings or TrainSettings(), seed=seed, desc="aux net")
        return (out["ema"] if out["ema"] is not None else net).eval()


@register("estimator")
class checkpoint:
    """A trained model read from disk: a cbsflow checkpoint file, a run directory (all its experts), or a single
    network's state dict (also the official SiT layout, mapped as for ``train.init_from``)."""

    def __init__(self, path: str, backbone: Constructor("backbone"), use_ema: bool = True):
        self.path, self.backbone, self.use_ema = os.path.expanduser(path), backbone, use_ema

    def __call__(self, dataset, path, seed: int = 0) -> nn.Module:
        from cbsflow.segmented import load_expert, load_segmented

        if not os.path.exists(self.path):
            raise UserError(f"checkpoint.path: {self.path} does not exist; point it at a .pt file or a run directory")
        if os.path.isdir(self.path):
            return load_segmented(self.path, self.backbone, dataset, path, use_ema=self.use_ema).eval()
        raw = torch.load(self.path, map_location="cpu", weights_only=True) if self.path.endswith((".pt", ".pth")) else {}
        if isinstance(raw, dict) and "interval" in raw:  # this project's expert checkpoint
            return load_expert(self.path, self.backbone, dataset, path, use_ema=self.use_ema).eval()
        # Any other single network (a state dict, an official SiT checkpoint): as train.init_from reads it.
        from cbsflow.pretrained import init_state
        from cbsflow.segmented import Expert, build_network

        net = build_network(self.backbone, dataset)
        net.load_state_dict(init_state(self.path, net)[0])
        return Expert(net, path).eval()


class Difference(nn.Module):
    """The field a(x, t) - b(x, t)."""

    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b
        self.valid_until = min(getattr(a, "valid_until", 1.0), getattr(b, "valid_until", 1.0))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.a(x, t, y) - self.b(x, t, y)


@register("estimator")
class capacity_gap:
    """What a capacity-limited model misses: the field v_model - v_reference (profile it with the ``energy`` monitor).

    ``model`` is typically an aux net of the experts' size trained on all of [0, 1], ``reference`` a larger aux net or
    the smoothed point set; E ||v_model - v_reference||^2 / d at each t is then the small model's excess error there,
    a direct measure of where more capacity (another expert) can still pay.
    """

    def __init__(self, model: Instance("estimator"), reference: Instance("estimator")):
        self.model, self.reference = model, reference

    def __call__(self, dataset, path, seed: int = 0) -> nn.Module:
        return Difference(self.model(dataset, path, seed=seed), self.reference(dataset, path, seed=seed + 1)).eval()
