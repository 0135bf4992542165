"""MLP velocity network for low-dimensional (toy) data."""

from __future__ import annotations

import math

import torch
from torch import nn

from cbsflow.backbones.layers import LabelEmbedder, TimestepEmbedder
from cbsflow.registry import register


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.net = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.net(self.norm(h) + emb)


@register("backbone")
class mlp(nn.Module):
    """Residual MLP v(x, t, y) for flat data, time (and class) embedding added in every block."""

    example = ((2,), 0)  # data shape and classes for which `--list` counts parameters

    def __init__(self, data_shape: tuple[int, ...], num_classes: int = 0, width: int = 256, depth: int = 3,
                 time_scale: float = 1000.0):
        """``time_scale`` multiplies t before the sinusoidal embedding: lower values give a smoother t-dependence."""
        super().__init__()
        self.data_shape = tuple(data_shape)
        dim = math.prod(self.data_shape)
        self.inp = nn.Linear(dim, width)
        self.time = TimestepEmbedder(width, scale=time_scale)
        self.label = LabelEmbedder(num_classes, width) if num_classes else None
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        h = self.inp(x.reshape(b, -1))  # (b, width)
        emb = self.time(t)
        if self.label is not None:
            emb = emb + self.label(y, b, x.device)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).reshape(x.shape)
