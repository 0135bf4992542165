"""Interpolation paths x_t = alpha(t) * x1 + sigma(t) * eps (t = 0 noise, t = 1 data)."""

from __future__ import annotations

import math

import torch

from cbsflow.registry import register


class Path:
    """Base class: subclasses override only ``alpha`` and ``sigma`` and their derivatives (as SiT does)."""

    def alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def d_alpha(self, t):
        raise NotImplementedError

    def d_sigma(self, t):
        raise NotImplementedError

    def log_snr(self, t):
        """log(alpha² / sigma²), increasing in t."""
        return 2 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def interpolate(self, x1: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return x_t and the velocity target d/dt x_t for per-sample times t of shape (b,)."""
        shape = (-1,) + (1,) * (x1.dim() - 1)
        t = t.reshape(shape)
        x_t = self.alpha(t) * x1 + self.sigma(t) * eps
        target = self.d_alpha(t) * x1 + self.d_sigma(t) * eps
        return x_t, target


@register("path")
class linear(Path):
    """Linear (rectified-flow / SiT 'Linear') path: alpha = t, sigma = 1 - t."""

    def alpha(self, t):
        return t

    def sigma(self, t):
        return 1 - t

    def d_alpha(self, t):
        return torch.ones_like(t) if torch.is_tensor(t) else 1.0

    def d_sigma(self, t):
        return -torch.ones_like(t) if torch.is_tensor(t) else -1.0


@register("path")
class cosine(Path):
    """Trigonometric (SiT 'GVP') path: alpha = sin(pi t / 2), sigma = cos(pi t / 2)."""

    def alpha(self, t):
        return torch.sin(0.5 * math.pi * t)

    def sigma(self, t):
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t):
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def d_sigma(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)
