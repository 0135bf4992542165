"""MLP velocity network for low-dimensional (toy) data."""

from __future__ import annotations

import math

import torch
from torch import nn

from cbsflow.backbones.layers import LabelEmbedder, TimestepEmbedder
from cbsflow.registry import register
from cbsflow.errors import UserError


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
                 time_scale: float = 1000.0, time_input: str = "sinusoidal", frequency_dim: int = 256):
        """``time_scale`` multiplies t before the sinusoidal embedding: lower values give a smoother t-dependence.
        ``time_input = 'raw'`` instead feeds t itself as one more input beside x (no embedding): a network that
        sees t only through its first layer, as many simple flow-matching MLPs do. ``frequency_dim``: the number of
        sinusoidal features of t (half sines, half cosines; DiT's 256), the embedding's input width."""
        super().__init__()
        if frequency_dim < 2 or frequency_dim % 2:
            raise UserError(f"mlp.frequency_dim must be an even number >= 2, got {frequency_dim}")
        if time_input not in ("sinusoidal", "raw"):
            raise UserError(f"mlp.time_input must be 'sinusoidal' or 'raw', got {time_input!r}")
        self.data_shape, self.raw_time = tuple(data_shape), time_input == "raw"
        dim = math.prod(self.data_shape)
        self.inp = nn.Linear(dim + self.raw_time, width)
        self.time = None if self.raw_time else TimestepEmbedder(width, frequency_dim, time_scale)
        self.label = LabelEmbedder(num_classes, width) if num_classes else None
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        flat = x.reshape(b, -1)
        if self.raw_time:
            h = self.inp(torch.cat([flat, t.to(flat.dtype).expand(b)[:, None]], dim=1))  # (b, width)
            emb = torch.zeros_like(h)
        else:
            h, emb = self.inp(flat), self.time(t)
        if self.label is not None:
            emb = emb + self.label(y, b, x.device)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).reshape(x.shape)


class RawTime(nn.Module):
    """t times ``scale`` as one input column (no embedding)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)

    def forward(self, t: torch.Tensor, b: int, dtype: torch.dtype) -> torch.Tensor:
        return (self.scale * t.to(dtype)).expand(b)[:, None]


@register("backbone")
class plain_mlp(nn.Module):
    """Plain MLP v(x, t, y): ``depth`` Linear layers of ``width``, each followed by SiLU, then a Linear output; t
    (times ``time_scale``) concatenated to x as one more input; no residuals, norms or time embedding (the expert of
    simple flow-matching examples)."""

    example = ((2,), 0)

    def __init__(self, data_shape: tuple[int, ...], num_classes: int = 0, width: int = 32, depth: int = 3,
                 time_scale: float = 1.0):
        super().__init__()
        if depth < 1 or width < 1:
            raise UserError(f"plain_mlp: need depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.data_shape = tuple(data_shape)
        dim = math.prod(self.data_shape)
        self.time = RawTime(time_scale)
        self.label = LabelEmbedder(num_classes, width) if num_classes else None
        self.inp = nn.Linear(dim + 1, width)
        self.hidden = nn.Sequential(*[m for _ in range(depth - 1) for m in (nn.Linear(width, width), nn.SiLU())])
        self.out = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        flat = x.reshape(b, -1)
        h = self.inp(torch.cat([flat, self.time(t, b, flat.dtype)], dim=1))
        if self.label is not None:
            h = h + self.label(y, b, x.device)
        return self.out(self.hidden(nn.functional.silu(h))).reshape(x.shape)
