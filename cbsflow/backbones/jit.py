"""JiT backbone: a plain pixel-space transformer that predicts the clean image (Li & He, 2025, "Back to Basics:
Let Denoising Generative Models Denoise"), trained with the velocity loss.

The network itself returns x_hat; ``prediction = "x1"`` tells the expert wrapper (``cbsflow.segmented.Expert``)
to turn it into a velocity with the path at the global time, with the divisor clamped at ``t_eps`` (on the
linear path v = (x_hat - x_t) / max(1 - t, t_eps), as in JiT).
"""

from __future__ import annotations

from cbsflow.backbones.transformer import PatchTransformer
from cbsflow.registry import register


@register("backbone")
class jit(PatchTransformer):
    """JiT: pixel-space transformer predicting x1, trained and sampled as a velocity (Li & He, 2025)."""

    example = ((3, 64, 64), 1000)  # data shape and classes for which `--list` counts parameters
    prediction = "x1"

    def __init__(self, data_shape: tuple[int, ...], num_classes: int = 0, size: str = "S", patch: int = 4,
                 mlp_ratio: float = 4.0, depth: int | None = None, width: int | None = None, heads: int | None = None,
                 t_eps: float = 0.05, time_scale: float = 1000.0):
        """``time_scale`` multiplies t before the sinusoidal embedding (lower: smoother in t, e.g. for aux nets)."""
        super().__init__(data_shape, num_classes, size=size, patch=patch, mlp_ratio=mlp_ratio, depth=depth,
                         width=width, heads=heads, time_scale=time_scale)
        self.min_scale = t_eps  # the x1 -> v conversion divides by max(sigma(t), t_eps)
