"""Layers shared by the backbones."""

from __future__ import annotations

import math

import torch
from torch import nn
from cbsflow.errors import UserError


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1.0, max_period: float = 1e4) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (Transformer / DiT style), t scaled by ``scale`` first.

    ``scale = 1`` is what SiT, JiT and torchcfm's UNet feed (t itself); scaling t by 1000 gives the fastest
    frequency a period of 2*pi/1000 in t, so even an expert that owns an interval of width 0.01 sees embeddings
    that vary over its interval (docs/math.md, "Time scale").
    """
    if t.device.type == "cpu" and t.dim() == 1 and t.shape[0] > 1 and bool((t == t[0]).all()):
        # One t for the whole batch (every sampler step): embed it once; the same values, b times fewer sin/cos.
        # CPU only: on a GPU the test would synchronise the device on every call, and sin/cos are cheap there.
        return timestep_embedding(t[:1], dim, scale, max_period).expand(t.shape[0], -1).contiguous()
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (scale * t.float())[:, None] * freqs[None]  # (b, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t followed by a two-layer MLP (DiT's timestep embedder)."""

    def __init__(self, hidden: int, frequency_dim: int = 256, scale: float = 1.0):
        super().__init__()
        self.frequency_dim, self.scale = frequency_dim, scale
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim, self.scale))


class LabelEmbedder(nn.Module):
    """Class embedding with one extra 'null' class (index ``num_classes``) for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, y: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        return self.table(y)


def sincos_2d(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position table (grid_h * grid_w, dim), rows in raster order, in MAE / DiT / SiT / JiT's
    channel order [sin w, cos w, sin h, cos h] (each quarter over the frequencies 1 / 10000^(k / (dim/4)))."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)
    hh, ww = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for pos in (ww.reshape(-1), hh.reshape(-1)):  # the column index first, as MAE's meshgrid(w, h) does
        angle = pos[:, None] * omega[None]  # (n, dim/4)
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=1).float()  # (n, dim)


def check_image_shape(data_shape: tuple[int, ...], factor: int, hint: str) -> tuple[int, int, int]:
    """(c, h, w) of an image shape whose sides ``factor`` divides; otherwise a readable error ending in ``hint``."""
    if len(data_shape) != 3:
        raise UserError(f"image backbones need data_shape (C, H, W), got {tuple(data_shape)}; use an image dataset or @mlp for vectors")
    c, h, w = data_shape
    if h % factor or w % factor:
        raise UserError(f"image sides {h}x{w} must be divisible by {factor}; {hint}")
    return c, h, w
