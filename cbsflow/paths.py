"""Interpolation paths x_t = alpha(t) * x1 + sigma(t) * eps (t = 0 noise, t = 1 data) and the conversions they own.

A network can predict the velocity v = d/dt x_t = alpha' x1 + sigma' eps, the clean data x1 or the noise eps. At a
given (x_t, t) any one of them fixes the other two, because x_t and v are two linear equations in (x1, eps):

    x1  = (sigma' x - sigma v) / (alpha sigma' - sigma alpha')
    eps = (alpha v - alpha' x) / (alpha sigma' - sigma alpha')
    v   = [(alpha' sigma - sigma' alpha) x1 + sigma' x] / sigma   (from an x1 prediction)
    v   = [alpha' x + (sigma' alpha - alpha' sigma) eps] / alpha (from an eps prediction)

and the score of p_t is -E[eps | x_t] / sigma. Every component that needs one of these (monitors in another
prediction space, the SDE sampler, x-prediction backbones such as JiT) calls the path, so a non-linear path
reaches all of them.
"""

from __future__ import annotations

import math

import torch

from cbsflow.registry import register

PREDICTIONS = ("velocity", "x1", "eps")


def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample times (b,) as a column that broadcasts against ``like`` (b, ...)."""
    return t.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


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
        t = _col(t, x1)
        x_t = self.alpha(t) * x1 + self.sigma(t) * eps
        target = self.d_alpha(t) * x1 + self.d_sigma(t) * eps
        return x_t, target

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor):
        t = _col(t, like)
        return self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)

    def from_velocity(self, v: torch.Tensor, x: torch.Tensor, t: torch.Tensor, target: str) -> torch.Tensor:
        """The ``target`` prediction ('velocity', 'x1' or 'eps') implied by velocity v at (x, t)."""
        if target == "velocity":
            return v
        a, s, da, ds = self._coefficients(t, x)
        det = a * ds - s * da
        if target == "x1":
            return (ds * x - s * v) / det
        if target == "eps":
            return (a * v - da * x) / det
        raise ValueError(f"unknown prediction {target!r}; choose one of {', '.join(PREDICTIONS)}")

    def to_velocity(self, pred: torch.Tensor, x: torch.Tensor, t: torch.Tensor, kind: str,
                    min_scale: float = 0.0) -> torch.Tensor:
        """The velocity implied by a ``kind`` prediction at (x, t); the divisor (sigma for x1, alpha for eps) is
        clamped at ``min_scale`` (on the linear path an x1 prediction gives (x1 - x) / max(1 - t, t_eps), JiT's)."""
        if kind == "velocity":
            return pred
        a, s, da, ds = self._coefficients(t, x)
        if kind == "x1":
            return ((da * s - ds * a) * pred + ds * x) / s.clamp(min=min_scale)
        if kind == "eps":
            return (da * x + (ds * a - da * s) * pred) / a.clamp(min=min_scale)
        raise ValueError(f"unknown prediction {kind!r}; choose one of {', '.join(PREDICTIONS)}")

    def score(self, v: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_x log p_t(x) = -E[eps | x_t = x] / sigma(t), from the velocity."""
        return -self.from_velocity(v, x, t, "eps") / self._coefficients(t, x)[1]


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
