"""UNet backbone: torchcfm's UNet (atong01/conditional-flow-matching, ``torchcfm/models/unet``), which is ADM's
(Dhariwal & Nichol, 2021, "Diffusion Models Beat GANs on Image Synthesis") with the timestep embedding added to
every residual block. ``gin/cifar10_unet.gin`` builds torchcfm's CIFAR-10 network exactly (Tong et al., 2024;
Lipman et al., 2023): 128 channels, multipliers (1, 2, 2, 2), 2 residual blocks per level, attention at 16x16 (4 heads
of 64 channels), dropout 0.1, unconditional, t in [0, 1] into the embedding; 35,746,307 parameters. ADM's
scale-shift (FiLM) conditioning and class conditioning are options."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cbsflow.backbones.layers import LabelEmbedder, TimestepEmbedder, check_image_shape
from cbsflow.registry import register
from cbsflow.errors import UserError


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or the largest divisor of 32 that divides ``channels``."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def zero_(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block; the embedding is added after the first convolution (torchcfm's default)
    or, with ``scale_shift``, modulates the second normalisation (FiLM; ADM's use_scale_shift_norm)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, scale_shift: bool = False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, (2 if scale_shift else 1) * c_out))
        self.norm2, self.drop = group_norm(c_out), nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (b, c_out, h, w)
        e = self.emb(emb)[:, :, None, None]  # (b, c_out or 2 c_out, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.drop(F.silu(h)))  # (b, c_out, h, w)
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over pixels with a zero-initialised output projection (ADM; the qkv channels
    grouped head by head, as ADM's and torchcfm's QKVAttentionLegacy split them)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise UserError(f"unet: attention heads={heads} must divide the channel count {channels}; change "
                            "unet.heads or unet.channels")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        hgt = x.shape[-2]
        qkv = rearrange(self.qkv(self.norm(x)), "b (n k d) h w -> k b n (h w) d", k=3, n=self.heads)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (b, n, h*w, d)
        return x + self.proj(rearrange(a, "b n (h w) d -> b (n d) h w", h=hgt))  # (b, c, h, w)


class Stage(nn.Module):
    """Modules applied in order, each given the embedding when it takes one (ADM's TimestepEmbedSequential)."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttnBlock)) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@register("backbone")
class unet(nn.Module):
    """torchcfm's UNet (ADM's, additive time embedding) velocity network; CIFAR-10 as in Tong et al., 2024."""

    example = ((3, 32, 32), 10)  # data shape and classes for which `--list` counts parameters

    def __init__(self, data_shape: tuple[int, ...], num_classes: int = 0, channels: int = 128,
                 channel_mult: tuple[int, ...] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: tuple[int, ...] = (16,), dropout: float = 0.1, heads: int = 4,
                 time_scale: float = 1.0, class_cond: bool = True, scale_shift: bool = False):
        """``time_scale`` multiplies t before the sinusoidal embedding: 1 feeds t in [0, 1] as torchcfm does
        (docs/math.md, "Time scale"). ``class_cond = False`` ignores the dataset's labels (torchcfm's CIFAR-10
        network is unconditional); ``scale_shift = True`` conditions by FiLM (ADM's use_scale_shift_norm) instead
        of adding the embedding."""
        super().__init__()
        c, hgt, wid = check_image_shape(data_shape, 2 ** (len(channel_mult) - 1), "the factor is 2**(len(channel_mult) - 1)")
        self.data_shape, emb_dim = (c, hgt, wid), 4 * channels
        self.time = TimestepEmbedder(emb_dim, frequency_dim=channels, scale=time_scale)
        self.label = LabelEmbedder(num_classes, emb_dim) if num_classes and class_cond else None
        self.inp = nn.Conv2d(c, channels, 3, padding=1)
        block = dict(emb_dim=emb_dim, dropout=dropout, heads=heads, attn_at=tuple(attention_resolutions),
                     scale_shift=scale_shift)
        self.down, skips, ch = _down_path(channels, tuple(channel_mult), num_res_blocks, hgt, **block)
        res = hgt // 2 ** (len(channel_mult) - 1)
        self.mid = Stage(ResBlock(ch, ch, emb_dim, dropout, scale_shift), AttnBlock(ch, heads),
                         ResBlock(ch, ch, emb_dim, dropout, scale_shift))
        self.up, ch = _up_path(channels, tuple(channel_mult), num_res_blocks, res, skips, ch, **block)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_(nn.Conv2d(ch, c, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(t)  # (b, 4*channels)
        if self.label is not None:
            emb = emb + self.label(y, x.shape[0], x.device)
        h = self.inp(x)  # (b, channels, H, W)
        skips = [h]
        for stage in self.down:
            h = stage(h, emb)
            skips.append(h)
        h = self.mid(h, emb)  # (b, c_mid, H/2^L, W/2^L)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)  # (b, c, H, W)


def _down_path(channels: int, mult: tuple[int, ...], num_res_blocks: int, res: int, emb_dim: int, dropout: float,
               heads: int, attn_at: tuple[int, ...], scale_shift: bool) -> tuple[nn.ModuleList, list[int], int]:
    """Encoder stages (one per skip connection), the skip channel counts (input conv first), and the final width."""
    stages, skips, ch = nn.ModuleList(), [channels], channels
    for level, m in enumerate(mult):
        for _ in range(num_res_blocks):
            layers = [ResBlock(ch, m * channels, emb_dim, dropout, scale_shift)]
            ch = m * channels
            layers += [AttnBlock(ch, heads)] if res in attn_at else []
            stages.append(Stage(*layers))
            skips.append(ch)
        if level < len(mult) - 1:
            stages.append(Stage(nn.Conv2d(ch, ch, 3, stride=2, padding=1)))
            skips.append(ch)
            res //= 2
    return stages, skips, ch


def _up_path(channels: int, mult: tuple[int, ...], num_res_blocks: int, res: int, skips: list[int], ch: int,
             emb_dim: int, dropout: float, heads: int, attn_at: tuple[int, ...],
             scale_shift: bool) -> tuple[nn.ModuleList, int]:
    """Decoder stages, each consuming one skip connection (last in, first out), and the final width."""
    stages, skips = nn.ModuleList(), list(skips)
    for level in reversed(range(len(mult))):
        for i in range(num_res_blocks + 1):
            layers = [ResBlock(ch + skips.pop(), mult[level] * channels, emb_dim, dropout, scale_shift)]
            ch = mult[level] * channels
            layers += [AttnBlock(ch, heads)] if res in attn_at else []
            if level > 0 and i == num_res_blocks:
                layers.append(Upsample(ch))
                res *= 2
            stages.append(Stage(*layers))
    return stages, ch
