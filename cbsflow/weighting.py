"""Loss weightings over time for one network: the usual alternative to splitting at all (issue 37).

A component of kind ``loss_weight`` is bound as ``expert/training.loss_weight = @min_snr()``; the training loop then
weights each sample's velocity loss by w(t), normalised so that w averages 1 over t ~ Uniform[0, 1] (the learning
rate keeps its meaning). Typically a landscape baseline: ``--baseline 'minsnr=expert/training.loss_weight =
@min_snr()'`` is one network trained with it, beside the splits (docs/math.md, "Min-SNR weighting").
"""

from __future__ import annotations

import torch

from cbsflow.errors import UserError
from cbsflow.registry import register

GRID = 4096  # points of the normalising average


@register("loss_weight")
class min_snr:
    """Min-SNR-γ (Hang et al., ICCV 2023): the loss of the clean-data prediction weighted by min(SNR(t), γ).

    In velocity terms: x̂1 − x1 = −σ/(ασ' − σα') (v̂ − v) at fixed x_t, so the weight on the velocity loss is
    min(SNR, γ) · (σ / (ασ' − σα'))², on the linear path min(t², γ (1 − t)²). γ = 5 is the paper's default.
    """

    def __init__(self, gamma: float = 5.0):
        if not gamma > 0:
            raise UserError(f"min_snr.gamma = {gamma}: the SNR cap must be > 0 (the paper's default is 5)")
        self.gamma = float(gamma)
        self._norms: dict[str, float] = {}

    def raw(self, t: torch.Tensor, path) -> torch.Tensor:
        """The unnormalised weight min(SNR(t), γ) · c(t)² at times t (float64)."""
        t = t.double().clamp(1e-9, 1 - 1e-9)
        a, s, da, ds = path.alpha(t), path.sigma(t), path.d_alpha(t), path.d_sigma(t)
        snr = torch.exp(path.log_snr(t))
        return torch.minimum(snr, torch.full_like(snr, self.gamma)) * (s / (a * ds - s * da)) ** 2

    def __call__(self, t: torch.Tensor, path) -> torch.Tensor:
        key = type(path).__name__ + repr(sorted(vars(path).items()))
        if key not in self._norms:
            grid = (torch.arange(GRID, dtype=torch.float64) + 0.5) / GRID  # midpoints of [0, 1]
            self._norms[key] = float(self.raw(grid, path).mean())
        return (self.raw(t, path) / self._norms[key]).to(torch.float32)
