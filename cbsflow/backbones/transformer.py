"""Patch transformer with adaLN-Zero conditioning: the DiT / SiT network (the ``sit`` backbone).

DiT (Peebles & Xie, 2023, "Scalable Diffusion Models with Transformers"), Sec. 3.2: every block regresses
shift, scale and gate from the conditioning vector; the regressors and the final layer start at zero, so
each block starts as the identity and the network output starts at exactly zero.
"""

from __future__ import annotations

import functools
import math

import torch
from einops import rearrange
from torch import nn

from cbsflow.backbones.layers import LabelEmbedder, TimestepEmbedder, check_image_shape, sincos_2d
from cbsflow.errors import UserError

# size -> (depth, width, heads); S/B/L/XL as in DiT Table 1, T is a tiny size for CPU tests.
SIZES: dict[str, tuple[int, int, int]] = {
    "T": (2, 64, 2),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}


def resolve_size(size: str, depth: int | None, width: int | None, heads: int | None) -> tuple[int, int, int]:
    """(depth, width, heads) of a named size, each overridable."""
    if size not in SIZES:
        raise UserError(f"unknown transformer size {size!r}; choose one of {', '.join(SIZES)}")
    d, w, n = SIZES[size]
    return depth or d, width or w, heads or n


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, with (b, d) modulation broadcast over tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNBlock(nn.Module):
    """Transformer block with adaLN-Zero (DiT Sec. 3.2): attention and MLP gated by zero-initialised regressions."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        from timm.layers import Attention, Mlp  # imported here: timm costs ~2 s of every run's start-up

        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        gelu = functools.partial(nn.GELU, approximate="tanh")
        self.mlp = Mlp(width, hidden_features=int(width * mlp_ratio), act_layer=gelu)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # 6 x (b, d)
        h = h + gate1[:, None] * self.attn(modulate(self.norm1(h), shift1, scale1))  # (b, n, d)
        return h + gate2[:, None] * self.mlp(modulate(self.norm2(h), shift2, scale2))  # (b, n, d)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from tokens to patches (zero-initialised)."""

    def __init__(self, width: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, patch_dim)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)  # 2 x (b, d)
        return self.linear(modulate(self.norm(h), shift, scale))  # (b, n, p*p*c)


class PatchTransformer(nn.Module):
    """DiT-style transformer over image patches; output has the shape of the input (what it means is the subclass's)."""

    def __init__(self, data_shape: tuple[int, ...], num_classes: int, *, size: str, patch: int, mlp_ratio: float,
                 depth: int | None, width: int | None, heads: int | None, time_scale: float = 1.0):
        super().__init__()
        c, hgt, wid = check_image_shape(data_shape, patch, "pick another `patch`")
        depth, width, heads = resolve_size(size, depth, width, heads)
        if width % 4 or width % heads:
            step = 4 * heads // math.gcd(4, heads)
            raise UserError(f"transformer width {width} must be divisible by 4 (2-D sin-cos embedding) and by "
                            f"heads={heads}; bind width = {max(step, round(width / step) * step)} (or other heads)")
        self.data_shape, self.patch, self.grid = (c, hgt, wid), patch, (hgt // patch, wid // patch)
        self.embed = nn.Linear(patch * patch * c, width)
        self.register_buffer("pos", sincos_2d(*self.grid, width)[None], persistent=False)  # (1, n, d), DiT's table
        self.time = TimestepEmbedder(width, scale=time_scale)
        self.label = LabelEmbedder(num_classes, width) if num_classes else None
        self.blocks = nn.ModuleList(AdaLNBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.final = FinalLayer(width, patch * patch * c)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT initialisation: xavier linears, N(0, 0.02) embedders, zero adaLN regressions and output layer."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in (self.time.mlp[0], self.time.mlp[2]):
            nn.init.normal_(m.weight, std=0.02)
        if self.label is not None:
            nn.init.normal_(self.label.table.weight, std=0.02)
        for m in [b.ada[-1] for b in self.blocks] + [self.final.ada[-1], self.final.linear]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def condition(self, t: torch.Tensor, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Conditioning vector: time embedding plus class embedding (null class when y is None)."""
        c = self.time(t)  # (b, d)
        if self.label is not None:
            c = c + self.label(y, batch, t.device)
        return c

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        p, (gh, gw) = self.patch, self.grid
        tokens = rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)  # (b, n, p*p*c)
        h = self.embed(tokens) + self.pos  # (b, n, d)
        c = self.condition(t, y, x.shape[0])  # (b, d)
        for block in self.blocks:
            h = block(h, c)  # (b, n, d)
        out = self.final(h, c)  # (b, n, p*p*c)
        return rearrange(out, "b (h w) (p q c) -> b c (h p) (w q)", h=gh, w=gw, p=p, q=p)  # (b, c, H, W)
