"""Tests for the image backbones: sit, jit, unet."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from cbsflow.errors import UserError
from cbsflow.backbones.jit import jit
from cbsflow.paths import cosine, linear
from cbsflow.segmented import Expert
from cbsflow.backbones.sit import sit
from cbsflow.backbones.unet import unet
from cbsflow.registry import get

NUM_CLASSES = 5

# name -> (class, data_shape, tiny hyperparameters)
TINY = {
    "sit-rgb": (sit, (3, 8, 8), dict(size="T", patch=2)),
    "sit-latent": (sit, (4, 8, 8), dict(size="T", patch=2)),
    "jit": (jit, (3, 16, 16), dict(size="T", patch=4)),
    "unet": (unet, (3, 8, 8), dict(channels=16, channel_mult=(1, 2), attention_resolutions=(4,))),
}


def build(name: str, num_classes: int = NUM_CLASSES) -> torch.nn.Module:
    cls, shape, kwargs = TINY[name]
    torch.manual_seed(0)
    return cls(shape, num_classes=num_classes, **kwargs)


def inputs(name: str, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = TINY[name][1]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *shape, generator=g)
    t = torch.rand(batch, generator=g)
    y = torch.arange(batch) % (NUM_CLASSES + 1)  # includes the null class
    return x, t, y


def perturb(model: torch.nn.Module) -> None:
    """Move every parameter off its (partly zero) initialisation, so outputs depend on all of them."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))


@pytest.mark.parametrize("name", ["sit", "jit", "unet"])
def test_registered(name):
    assert get(f"backbone.{name}").obj.__name__ == name


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("num_classes", [0, NUM_CLASSES])
def test_output_shape_conditional_and_unconditional(name, num_classes):
    model = build(name, num_classes).eval()  # no dropout
    perturb(model)
    x, t, y = inputs(name)
    out_uncond = model(x, t)
    assert out_uncond.shape == x.shape
    if num_classes:
        out_cond = model(x, t, y)
        assert out_cond.shape == x.shape
        assert not torch.allclose(out_cond, out_uncond)  # labels matter
        null = torch.full_like(y, num_classes)
        torch.testing.assert_close(model(x, t, null), out_uncond)  # y=None is the null class


@pytest.mark.parametrize("name", ["sit-rgb", "sit-latent", "unet"])
def test_velocity_is_exactly_zero_at_init(name):
    model = build(name)
    x, t, y = inputs(name)
    assert torch.equal(model(x, t, y), torch.zeros_like(x))


def test_jit_predicts_zero_image_at_init():
    model = build("jit")
    x, t, y = inputs("jit")
    assert model.prediction == "x1" and torch.equal(model(x, t, y), torch.zeros_like(x))
    gap = (1 - t).clamp(min=model.min_scale)[:, None, None, None]
    torch.testing.assert_close(Expert(model, linear())(x, t, y), -x / gap)


@pytest.mark.parametrize("name", ["sit-rgb", "jit"])
def test_adaln_zero_blocks_start_as_identity(name):
    model = build(name)
    for block in model.blocks:
        assert not block.ada[-1].weight.any() and not block.ada[-1].bias.any()
    assert not model.final.linear.weight.any() and not model.final.ada[-1].weight.any()


@pytest.mark.parametrize("name", list(TINY))
def test_gradients_reach_every_parameter(name):
    """Zero-initialised layers block gradients at step 0; after two optimizer steps every parameter gets one."""
    model = build(name).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, t, y = inputs(name)
    target = torch.randn_like(x)
    for _ in range(3):
        opt.zero_grad()
        loss = (model(x, t, y) - target).square().mean()
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        opt.step()
    dead = [n for n, g in grads.items() if g is None or not g.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"


@pytest.mark.parametrize("name", list(TINY))
def test_jvp_wrt_x_under_math_attention(name):
    model = build(name).eval()
    perturb(model)
    x, t, y = inputs(name, batch=2)
    v = torch.randn_like(x)
    with sdpa_kernel(SDPBackend.MATH):
        out, jv = torch.func.jvp(lambda z: model(z, t, y), (x,), (v,))
    eps = 1e-3
    with torch.no_grad():
        fd = (model(x + eps * v, t, y) - model(x - eps * v, t, y)) / (2 * eps)
    assert out.shape == jv.shape == x.shape
    torch.testing.assert_close(jv, fd, rtol=1e-2, atol=1e-3)


class PerfectX1(torch.nn.Module):
    """An x-prediction 'backbone' that returns the true x1 whatever it is given (and records the t it saw)."""

    prediction, min_scale = "x1", 0.05

    def __init__(self, x1):
        super().__init__()
        self.x1, self.seen = x1, []

    def forward(self, x, t, y=None):
        self.seen.append(t)
        return self.x1


def test_jit_adapter_recovers_linear_path_velocity():
    """A predictor that returns x1 exactly gives v = x1 - eps on x_t = t x1 + (1 - t) eps while 1 - t > t_eps."""
    g = torch.Generator().manual_seed(2)
    x1, eps = torch.randn(6, 3, 16, 16, generator=g), torch.randn(6, 3, 16, 16, generator=g)
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 0.94, 0.97])
    tb = t[:, None, None, None]
    x_t = tb * x1 + (1 - tb) * eps
    v = Expert(PerfectX1(x1), linear())(x_t, t)
    torch.testing.assert_close(v[:5], (x1 - eps)[:5], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(v[5], (x1[5] - x_t[5]) / 0.05)  # clamped near the data end


def test_x_prediction_gives_the_velocity_of_a_non_linear_path():
    """On the cosine path v = alpha' x1 + sigma' eps: the adapter uses the path, not the linear formula."""
    path = cosine()
    g = torch.Generator().manual_seed(3)
    x1, eps = torch.randn(5, 3, 8, 8, generator=g), torch.randn(5, 3, 8, 8, generator=g)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.85])
    x_t, target = path.interpolate(x1, eps, t)
    torch.testing.assert_close(Expert(PerfectX1(x1), path)(x_t, t), target, rtol=1e-4, atol=1e-4)


def test_local_time_feeds_the_embedding_but_the_conversion_uses_global_time():
    """JiT with train.local_time: the network sees (t - a) / (b - a), the x -> v conversion the global t."""
    g = torch.Generator().manual_seed(4)
    x1, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0.55, 0.6, 0.7, 0.79])
    x_t, target = linear().interpolate(x1, eps, t)
    net = PerfectX1(x1)
    v = Expert(net, linear(), interval=(0.5, 0.8), local_time=True)(x_t, t)
    torch.testing.assert_close(net.seen[0], (t - 0.5) / 0.3)
    torch.testing.assert_close(v, target, rtol=1e-4, atol=1e-4)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_sit_b2_parameter_count():
    """SiT-B/2 on 4x32x32 latents with 1000 classes has DiT-B/2's ~130M parameters (built on the meta device)."""
    with torch.device("meta"):
        model = sit((4, 32, 32), num_classes=1000, size="B", patch=2)
    assert 129e6 < count(model) < 131e6


@pytest.mark.slow
def test_sit_xl2_parameter_count():
    """SiT-XL/2 on 4x32x32 latents with 1000 classes has DiT-XL/2's ~675M parameters."""
    with torch.device("meta"):
        model = sit((4, 32, 32), num_classes=1000, size="XL", patch=2)
    assert 670e6 < count(model) < 680e6


def test_bad_shapes_raise_readable_errors():
    with pytest.raises(UserError, match="pick another .patch."):
        sit((3, 10, 10), size="T", patch=4)
    with pytest.raises(UserError, match="unknown transformer size"):
        sit((3, 8, 8), size="Q")
    with pytest.raises(UserError, match="divisible"):
        unet((3, 6, 6), channels=16, channel_mult=(1, 2, 2))


# --- JiT as published (LTH14/JiT model_jit.py); counts from the reference code's constructors, trainable only ---
JIT_COUNTS = {  # (size, patch, side) -> trainable parameters of the official JiT with 1000 classes
    ("B", 4, 64): 130_477_872,  # gin/jit_imagenet64.gin: JiT-B hyper-parameters at patch 4, 64 px
    ("B", 16, 256): 131_123_712,  # JiT-B/16
    ("L", 16, 256): 458_877_664,  # JiT-L/16
    ("H", 16, 256): 952_514_368,  # JiT-H/16
}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("size,patch,side", [k for k in JIT_COUNTS if k[0] == "B"]
                         + [pytest.param(*k, marks=pytest.mark.slow) for k in JIT_COUNTS if k[0] != "B"])
def test_jit_parameter_count_equals_the_official_architectures(size, patch, side):
    with torch.device("meta"):
        model = jit((3, side, side), num_classes=1000, size=size, patch=patch)
    assert trainable(model) == count(model) == JIT_COUNTS[(size, patch, side)]


def test_jit_sizes_carry_the_official_constructor_settings():
    with torch.device("meta"):
        b, l, h = (jit((3, 64, 64), 1000, size=s, patch=16) for s in "BLH")
    assert (len(b.blocks), b.embed[0].out_features, b.in_context_start, b.in_context_len) == (12, 128, 4, 32)
    assert (len(l.blocks), l.embed[1].out_features, l.in_context_start) == (24, 1024, 8)
    assert (len(h.blocks), h.embed[0].out_features, h.in_context_start) == (32, 256, 10)
    block = b.blocks[0]
    assert block.mlp.w3.in_features == int(4 * 768 * 2 / 3) and b.embed[0].bias is None  # SwiGLU, bias-free bottleneck
    assert tuple(block.attn.q_norm.weight.shape) == (64,) and tuple(b.in_context_posemb.shape) == (1, 32, 768)


def test_jit_dropout_acts_in_the_middle_half_of_the_blocks_only():
    model = jit((3, 16, 16), size="T", patch=4, depth=8, attn_drop=0.1, proj_drop=0.2)
    attn = [blk.attn.attn_drop for blk in model.blocks]
    proj = [blk.attn.proj_drop.p for blk in model.blocks]
    assert attn == [0.0, 0.0, 0.1, 0.1, 0.1, 0.1, 0.0, 0.0] and proj == [0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.0, 0.0]
    assert [blk.mlp.drop.p for blk in model.blocks] == proj


def test_jit_in_context_tokens_carry_the_label_and_leave_before_the_output():
    """The L class tokens join before block in_context_start and leave before the final layer; with the label
    removed from every adaLN modulation (zero weights), labels still reach the output through the tokens alone."""
    model = build("jit").eval()
    perturb(model)
    seen = []
    for blk in model.blocks:
        blk.register_forward_hook(lambda mod, args, out: seen.append(out.shape[1]))
    model.final.register_forward_hook(lambda mod, args, out: seen.append(out.shape[1]))
    x, t, _ = inputs("jit")
    model(x, t)
    n, ctx = 16, model.in_context_len  # 16x16 pixels in 4x4 patches
    assert seen == [n] * model.in_context_start + [n + ctx] * (len(model.blocks) - model.in_context_start) + [n]
    with torch.no_grad():
        for blk in model.blocks:
            blk.ada[-1].weight.zero_()
        model.final.ada[-1].weight.zero_()
    assert not torch.allclose(model(x, t, torch.tensor([0, 0, 0])), model(x, t, torch.tensor([1, 1, 1])))


def test_jit_rotary_embedding_is_relative_along_each_axis():
    """<R(i) q, R(j) k> depends on i - j only: shifting both positions by one row (or column) keeps the logit."""
    from cbsflow.backbones.jit import apply_rope, rope_2d

    rope = rope_2d(16, 4, 4)  # (2, 16, 16): a 4x4 grid, head width 16
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def logit(i, j):
        return (apply_rope(q, rope[:, i:i + 1]) * apply_rope(k, rope[:, j:j + 1])).sum()

    torch.testing.assert_close(logit(0, 5), logit(4, 9))  # one row down: token index + 4
    torch.testing.assert_close(logit(1, 2), logit(2, 3))  # one column right
    assert not torch.allclose(logit(0, 5), logit(0, 6))
    prefixed = rope_2d(16, 4, 4, prefix=3)
    assert torch.equal(prefixed[0, :3], torch.ones(3, 16)) and torch.equal(prefixed[1, :3], torch.zeros(3, 16))
    assert torch.equal(prefixed[:, 3:], rope)


def test_fixed_position_table_has_the_mae_dit_channel_order():
    """[sin w, cos w, sin h, cos h], each over 1 / 10000^(k / (d/4)): written out here with numpy (MAE's formula)."""
    import numpy as np

    from cbsflow.backbones.layers import sincos_2d

    gh, gw, d = 3, 5, 16
    omega = 1.0 / 10000 ** (np.arange(d // 4) / (d // 4))
    rows = []
    for h in range(gh):
        for w in range(gw):
            rows.append(np.concatenate([np.sin(w * omega), np.cos(w * omega), np.sin(h * omega), np.cos(h * omega)]))
    np.testing.assert_allclose(sincos_2d(gh, gw, d).numpy(), np.stack(rows), atol=1e-7)


def test_jit_bad_settings_are_one_clear_error():
    with pytest.raises(UserError, match="unknown jit size"):
        jit((3, 16, 16), size="XL")
    with pytest.raises(UserError, match="in_context_start = 2 must name one of the 2 blocks"):
        jit((3, 16, 16), size="T", patch=4, in_context_start=2)
    with pytest.raises(UserError, match="head width divisible by 4"):
        jit((3, 16, 16), size="T", patch=4, width=40, heads=4)


# --- time as the references feed it ---
def test_image_backbones_feed_t_in_0_1_by_default_and_keep_the_option():
    from cbsflow.backbones.mlp import mlp

    for name in ("sit-rgb", "jit", "unet"):
        assert build(name).time.scale == 1.0
    assert mlp((2,)).time.scale == 1000.0  # the toy / auxiliary MLP keeps its resolving scale (docs/math.md)
    assert sit((3, 8, 8), size="T", patch=2, time_scale=1000.0).time.scale == 1000.0


# --- the reference UNet (torchcfm, examples/images/cifar10) ---
def test_unet_cifar10_configuration_is_torchcfms_network():
    """torchcfm's UNetModelWrapper(dim=(3, 32, 32), num_channels=128, num_res_blocks=2, channel_mult=[1, 2, 2, 2],
    num_heads=4, num_head_channels=64, attention_resolutions='16', dropout=0.1): 35,746,307 parameters."""
    with torch.device("meta"):
        model = unet((3, 32, 32), num_classes=10, class_cond=False)
    assert count(model) == 35_746_307 and model.label is None
    block = model.down[0].layers[0]
    assert block.emb[-1].out_features == 128 and not block.scale_shift  # the embedding is added, not FiLM


def test_unet_film_and_class_conditioning_stay_options():
    film = unet((3, 8, 8), num_classes=5, channels=16, channel_mult=(1, 2), attention_resolutions=(4,),
                scale_shift=True)
    assert film.down[0].layers[0].emb[-1].out_features == 2 * 16 and film.label is not None
    perturb(film.eval())
    x, t, y = inputs("unet")
    assert not torch.allclose(film(x, t, y), film(x, t))


def test_unet_computes_torchcfms_function():
    """torchcfm's UNet (dim (3, 8, 8), 32 channels, (1, 1), 1 res block, attention at 4x4 with 16-channel heads,
    every weight perturbed) run by the reference code; its weights renamed module by module onto ours
    (tests/fixtures/README.md): the same outputs, so the additive embedding and the head-major qkv split match."""
    import os

    f = torch.load(os.path.join(os.path.dirname(__file__), "..", "fixtures", "unet_torchcfm_tiny.pt"),
                   map_location="cpu", weights_only=True)
    model = unet((3, 8, 8), num_classes=10, channels=32, channel_mult=(1, 1), num_res_blocks=1,
                 attention_resolutions=(4,), heads=2, class_cond=False).eval()
    model.load_state_dict({k: v.float() for k, v in f["state"].items()})
    assert f["torchcfm_names"]["mid.layers.1.qkv.weight"] == "middle_block.1.qkv.weight"
    with torch.no_grad():
        torch.testing.assert_close(model(f["x"], f["t"]), f["out"], atol=1e-5, rtol=1e-5)
