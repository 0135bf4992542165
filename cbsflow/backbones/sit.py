"""SiT backbone: the DiT transformer used as a velocity network (Ma et al., 2024, "SiT: Exploring Flow and
Diffusion-based Generative Models with Scalable Interpolant Transformers")."""

from __future__ import annotations

from cbsflow.backbones.transformer import PatchTransformer
from cbsflow.registry import register


@register("backbone")
class sit(PatchTransformer):
    """SiT / DiT transformer with adaLN-Zero predicting the velocity x1 - eps (Ma et al., 2024; Peebles & Xie, 2023)."""

    example = ((4, 32, 32), 1000)  # data shape and classes for which `--list` counts parameters

    def __init__(self, data_shape: tuple[int, ...], num_classes: int = 0, size: str = "S", patch: int = 2,
                 mlp_ratio: float = 4.0, depth: int | None = None, width: int | None = None, heads: int | None = None,
                 time_scale: float = 1.0):
        """``time_scale`` multiplies t before the sinusoidal embedding: 1 feeds t in [0, 1] as SiT does (and as
        its checkpoints need); other values are for networks trained here (docs/math.md, "Time scale")."""
        super().__init__(data_shape, num_classes, size=size, patch=patch, mlp_ratio=mlp_ratio, depth=depth,
                         width=width, heads=heads, time_scale=time_scale)
