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
