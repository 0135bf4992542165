"""JiT backbone: the "Just image Transformer" of Li & He (2025, "Back to Basics: Let Denoising Generative Models
Denoise"), a pixel-space transformer that predicts the clean image, trained with the velocity loss.

The network is the published one (LTH14/JiT, ``model_jit.py``): a bottleneck patch embedding (p x p patches to
``bottleneck_dim`` without bias, then to the width) plus DiT's fixed sin-cos table; blocks with RMSNorm, qk-norm,
2-D rotary position embeddings on q and k and a SwiGLU MLP, conditioned by adaLN-Zero on time + class;
``in_context_len`` class tokens (the label embedding plus a learned position embedding) join the sequence before
block ``in_context_start`` (unrotated) and leave it before the final layer; attention and projection dropout act in
the middle half of the blocks only. State-dict names are this project's; ``cbsflow/pretrained.py`` maps the
official ones onto them.

The network itself returns x_hat; ``prediction = "x1"`` tells the expert wrapper (``cbsflow.segmented.Expert``)
to turn it into a velocity with the path at the global time, with the divisor clamped at ``t_eps`` (on the
linear path v = (x_hat - x_t) / max(1 - t, t_eps), as in JiT).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cbsflow.backbones.layers import LabelEmbedder, TimestepEmbedder, check_image_shape, sincos_2d
from cbsflow.backbones.transformer import modulate
from cbsflow.errors import UserError
from cbsflow.registry import register

# size -> (depth, width, heads, bottleneck_dim, in_context_start). B, L, H: the official JiT_B/L/H constructors.
# T (CPU tests) and S (DiT-S widths, for auxiliary networks) are not published sizes.
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "T": (2, 64, 2, 16, 1),
    "S": (12, 384, 6, 128, 4),
    "B": (12, 768, 12, 128, 4),
    "L": (24, 1024, 16, 128, 8),
    "H": (32, 1280, 16, 256, 10),
}


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain, normalised in float32 (Zhang & Sennrich, 2019; JiT's and Llama's form)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rope_2d(head_dim: int, grid_h: int, grid_w: int, prefix: int = 0) -> torch.Tensor:
    """cos and sin (2, prefix + grid_h * grid_w, head_dim) of JiT's 2-D rotary embedding (EVA-02's
    VisionRotaryEmbeddingFast): the first half of a head's channels turns with the row, the second with the
    column, channel pairs (2i, 2i+1) sharing the frequency 10000^(-2i / (head_dim/2)); the ``prefix`` leading
    (in-context) tokens are not turned."""
    half = head_dim // 2
    freqs = 1.0 / 10000 ** (torch.arange(0, half, 2).float() / half)  # (half/2,)
    rows = (torch.arange(grid_h) / grid_h * grid_h)[:, None] * freqs  # (gh, half/2), EVA's position formula
    cols = (torch.arange(grid_w) / grid_w * grid_w)[:, None] * freqs  # (gw, half/2)
    rows, cols = rows.repeat_interleave(2, dim=-1), cols.repeat_interleave(2, dim=-1)  # (g, half)
    angle = torch.cat([rows[:, None].expand(grid_h, grid_w, half), cols[None].expand(grid_h, grid_w, half)], dim=-1)
    angle = angle.reshape(grid_h * grid_w, head_dim)  # (n, head_dim)
    cos = torch.cat([torch.ones(prefix, head_dim), angle.cos()])
    sin = torch.cat([torch.zeros(prefix, head_dim), angle.sin()])
    return torch.stack([cos, sin])  # (2, prefix + n, head_dim)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (2i, 2i+1) of x (b, heads, n, head_dim) by the angles whose cos/sin ``rope`` holds."""
    pairs = x.unflatten(-1, (-1, 2))  # (b, heads, n, head_dim/2, 2)
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (b, heads, n, head_dim)
    return x * rope[0].to(x.dtype) + turned * rope[1].to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with RMS-normalised queries and keys (qk-norm) and rotary positions."""

    def __init__(self, width: int, heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.heads, self.attn_drop = heads, attn_drop
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm, self.k_norm = RMSNorm(width // heads), RMSNorm(width // heads)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, h: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(h), "b n (k m d) -> k b m n d", k=3, m=self.heads)  # 3 x (b, heads, n, d)
        q, k = apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(rearrange(a, "b m n d -> b n (m d)")))  # (b, n, width)


class SwiGLU(nn.Module):
    """SwiGLU MLP (Shazeer, 2020) with hidden width int(2/3 of the GELU MLP's), as JiT's SwiGLUFFN."""

    def __init__(self, width: int, mlp_hidden: int, drop: float = 0.0):
        super().__init__()
        hidden = int(mlp_hidden * 2 / 3)
        self.w12 = nn.Linear(width, 2 * hidden)
        self.w3 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(drop)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(h).chunk(2, dim=-1)
        return self.w3(self.drop(F.silu(gate) * value))


class Block(nn.Module):
    """JiT block: adaLN-Zero around RMSNorm + qk-norm rotary attention and RMSNorm + SwiGLU."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, attn_drop: float, proj_drop: float):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(width), RMSNorm(width)
        self.attn = Attention(width, heads, attn_drop, proj_drop)
        self.mlp = SwiGLU(width, int(width * mlp_ratio), proj_drop)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, h: torch.Tensor, c: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # 6 x (b, d)
        h = h + gate1[:, None] * self.attn(modulate(self.norm1(h), shift1, scale1), rope)  # (b, n, d)
        return h + gate2[:, None] * self.mlp(modulate(self.norm2(h), shift2, scale2))  # (b, n, d)


class FinalLayer(nn.Module):
    """adaLN-modulated RMSNorm and a linear map from tokens to patches (zero-initialised)."""

    def __init__(self, width: int, patch_dim: int):
        super().__init__()
        self.norm = RMSNorm(width)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, patch_dim)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)  # 2 x (b, d)
        return self.linear(modulate(self.norm(h), shift, scale))  # (b, n, p*p*c)


def resolve_size(size: str, **given: int | None) -> dict[str, int]:
    """depth, width, heads, bottleneck_dim and in_context_start of a named JiT size, each overridable."""
    if size not in SIZES:
        raise UserError(f"unknown jit size {size!r}; choose one of {', '.join(SIZES)}")
    names = ("depth", "width", "heads", "bottleneck_dim", "in_context_start")
    return {n: default if given[n] is None else given[n] for n, default in zip(names, SIZES[size])}


def check_sizes(depth: int, width: int, heads: int, in_context_len: int, in_context_start: int) -> None:
    """One readable error for widths the position tables cannot take and in-context tokens that never join."""
    if width % heads or (width // heads) % 4:
        step = 4 * heads
        fit = max(step, round(width / step) * step)
        raise UserError(f"jit: width {width} must be divisible by heads={heads} with a head width divisible by 4 "
                        f"(2-D rotary embedding); bind width = {fit} (or other heads)")
    if in_context_len and not 0 <= in_context_start < depth:
        raise UserError(f"jit: in_context_start = {in_context_start} must name one of the {depth} blocks (0 to "
                        f"{depth - 1}); bind another in_context_start, or in_context_len = 0")


@register("backbone")
class jit(nn.Module):
    """JiT as published: RMSNorm, qk-norm, 2-D RoPE, SwiGLU, bottleneck patches, in-context tokens (Li & He, 2025)."""

    example = ((3, 256, 256), 1000)  # data shape and classes for which `--list` counts parameters (JiT-B/16)
    prediction = "x1"

    def __init__(self, data_shape: tuple[int, ...], num_classes: int = 0, size: str = "B", patch: int = 16,
                 depth: int | None = None, width: int | None = None, heads: int | None = None, mlp_ratio: float = 4.0,
                 bottleneck_dim: int | None = None, in_context_len: int = 32, in_context_start: int | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, t_eps: float = 0.05, time_scale: float = 1.0):
        """Sizes B/L/H set depth, width, heads, bottleneck_dim and in_context_start as the official constructors do
        (each overridable). ``time_scale`` multiplies t before the sinusoidal embedding: 1 feeds t in [0, 1] as JiT
        does (docs/math.md, "Time scale"). ``t_eps`` clamps the x1 -> v divisor."""
        super().__init__()
        c, hgt, wid = check_image_shape(data_shape, patch, "pick another `patch`")
        s = resolve_size(size, depth=depth, width=width, heads=heads, bottleneck_dim=bottleneck_dim,
                         in_context_start=in_context_start)
        depth, width, heads = s["depth"], s["width"], s["heads"]
        check_sizes(depth, width, heads, in_context_len, s["in_context_start"])
        self.data_shape, self.patch, self.grid = (c, hgt, wid), patch, (hgt // patch, wid // patch)
        self.in_context_len, self.in_context_start = in_context_len, s["in_context_start"]
        self.min_scale = t_eps  # the x1 -> v conversion divides by max(sigma(t), t_eps)
        self.embed = nn.Sequential(nn.Linear(patch * patch * c, s["bottleneck_dim"], bias=False),
                                   nn.Linear(s["bottleneck_dim"], width))
        self.register_buffer("pos", sincos_2d(*self.grid, width)[None], persistent=False)  # (1, n, d)
        self.register_buffer("rope", rope_2d(width // heads, *self.grid), persistent=False)
        self.register_buffer("rope_ctx", rope_2d(width // heads, *self.grid, in_context_len), persistent=False)
        self.in_context_posemb = nn.Parameter(torch.zeros(1, in_context_len, width)) if in_context_len else None
        self.time = TimestepEmbedder(width, scale=time_scale)
        self.label = LabelEmbedder(num_classes, width) if num_classes else None
        middle = range(depth // 4, depth // 4 * 3)  # dropout only in the middle half of the blocks
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, attn_drop * (i in middle), proj_drop * (i in middle))
                                    for i in range(depth))
        self.final = FinalLayer(width, patch * patch * c)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """JiT's initialisation: xavier linears, N(0, 0.02) embedders and in-context positions, zero adaLN
        regressions and output layer (every block starts as the identity, the output at zero)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in (self.time.mlp[0], self.time.mlp[2]):
            nn.init.normal_(m.weight, std=0.02)
        for p in (self.label.table.weight if self.label is not None else None, self.in_context_posemb):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        for m in [b.ada[-1] for b in self.blocks] + [self.final.ada[-1], self.final.linear]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        p, (gh, gw), b = self.patch, self.grid, x.shape[0]
        tokens = rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)  # (b, n, p*p*c)
        h = self.embed(tokens) + self.pos  # (b, n, d)
        label = self.label(y, b, x.device) if self.label is not None else None  # (b, d)
        c = self.time(t) if label is None else self.time(t) + label  # (b, d)
        rope = self.rope
        for i, block in enumerate(self.blocks):
            if self.in_context_len and i == self.in_context_start:
                context = self.in_context_posemb.expand(b, -1, -1)  # (b, L, d)
                h = torch.cat([context if label is None else label[:, None] + context, h], dim=1)  # (b, L + n, d)
                rope = self.rope_ctx
            h = block(h, c, rope)
        out = self.final(h[:, self.in_context_len:], c)  # (b, n, p*p*c)
        return rearrange(out, "b (h w) (p q c) -> b c (h p) (w q)", h=gh, w=gw, p=p, q=p)  # (b, c, H, W)
