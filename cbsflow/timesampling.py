"""Training-time distributions of t, restricted to an expert's interval by inverse-CDF sampling."""

from __future__ import annotations

import torch

from cbsflow.registry import register


class TimeSampler:
    """A distribution on [0, 1] given by its CDF and inverse CDF."""

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def icdf(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, n: int, interval: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
        """n times drawn from the distribution conditioned on [a, b)."""
        device = generator.device
        a, b = (torch.tensor(float(v), dtype=torch.float64, device=device) for v in interval)
        lo, hi = self.cdf(a), self.cdf(b)
        u = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        # Drawn in float64, returned in float32 inside [float32(a), float32(b)): the experts are routed by comparing
        # float32 times with float32 boundaries (cbsflow.segmented.segment_index), so a time just below b must not
        # round up onto b's float32 value, which belongs to the next expert.
        a32, b32 = a.float(), b.float()
        t = self.icdf(u).clamp(a, b).float().clamp(min=a32)
        return torch.where(t >= b32, torch.nextafter(b32, a32), t)


@register("time_sampler")
class uniform_time(TimeSampler):
    """t ~ Uniform[0, 1] (flow matching, SiT)."""

    def cdf(self, t):
        return t

    def icdf(self, u):
        return u


@register("time_sampler")
class logit_normal(TimeSampler):
    """logit(t) ~ N(mean, std^2) (SD3; JiT uses mean -0.8, std 0.8)."""

    def __init__(self, mean: float = -0.8, std: float = 0.8):
        self.mean, self.std = mean, std

    def cdf(self, t):
        z = (torch.logit(t.clamp(1e-12, 1 - 1e-12)) - self.mean) / self.std
        return 0.5 * (1 + torch.erf(z / 2**0.5))

    def icdf(self, u):
        z = 2**0.5 * torch.erfinv(2 * u.clamp(1e-12, 1 - 1e-12) - 1)
        return torch.sigmoid(self.mean + self.std * z)
