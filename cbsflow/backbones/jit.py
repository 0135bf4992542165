"""JiT backbone: a plain pixel-space transformer that predicts the clean image (Li & He, 2025, "Back to Basics:
Let Denoising Generative Models Denoise"), turned into a velocity network by the x-to-v adapter."""

from __future__ import annotations

import torch

from cbsflow.backbones.transformer import PatchTransformer
from cbsflow.registry import register


def velocity_from_x(x_hat: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, t_eps: float = 0.05) -> torch.Tensor:
    """v = (x_hat - x_t) / max(1 - t, t_eps): the velocity of the linear path given a clean-image guess (JiT)."""
    gap = (1 - t).clamp(min=t_eps).reshape(-1, *([1] * (x_t.ndim - 1)))  # (b, 1, 1, 1)
    return (x_hat - x_t) / gap


@register("backbone")
class jit(PatchTransformer):
    """JiT: pixel-space transformer predicting x1, returned as velocity (Li & He, 2025)."""

    example = ((3, 64, 64), 1000)  # data shape and classes for which `--list` counts parameters

    def __init__(self, data_shape: tuple[int, ...], num_classes: int = 0, size: str = "S", patch: int = 4,
                 mlp_ratio: float = 4.0, depth: int | None = None, width: int | None = None, heads: int | None = None,
                 t_eps: float = 0.05, time_scale: float = 1000.0):
        """``time_scale`` multiplies t before the sinusoidal embedding (lower: smoother in t, e.g. for aux nets)."""
        super().__init__(data_shape, num_classes, size, patch, mlp_ratio, depth, width, heads, time_scale)
        self.t_eps = t_eps

    def predict_x(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Clean-image prediction x_hat(x_t, t, y)."""
        return super().forward(x, t, y)  # (b, c, h, w)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return velocity_from_x(self.predict_x(x, t, y), x, t, self.t_eps)  # (b, c, h, w)
