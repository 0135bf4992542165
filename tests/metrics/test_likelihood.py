"""NLL by the probability-flow ODE against the closed-form density of Gaussian data."""

import math

import pytest
import torch

from cbsflow.metrics.likelihood import log_likelihood, nll


def gaussian_velocity(mu: torch.Tensor, s: torch.Tensor):
    """Exact velocity of the path x_t = t x1 + (1 - t) eps for x1 ~ N(mu, diag s^2), written independently."""

    def v(x, t, y=None):
        t = t[:, None]
        var = t**2 * s**2 + (1 - t) ** 2  # V(t) per coordinate
        return mu + (t * s**2 - (1 - t)) / var * (x - t * mu)

    return v


def gaussian_log_density(x, mu, s):
    return (-0.5 * ((x - mu) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)).sum(dim=1)


class GaussianData:
    def __init__(self, mu, s):
        self.mu, self.s = mu, s

    def sample(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        return self.mu + self.s * torch.randn(n, self.mu.numel(), generator=g, dtype=self.mu.dtype), None

    def fingerprint(self):
        return "gaussian-test"


def problem(d, seed=0):
    g = torch.Generator().manual_seed(100 + d)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    s = 0.3 + 1.5 * torch.rand(d, generator=g, dtype=torch.float64)
    return mu, s, GaussianData(mu, s)


def test_exact_divergence_matches_gaussian_density_pointwise():
    mu, s, data = problem(2)
    x, _ = data.sample(200, seed=1)
    logp = log_likelihood(gaussian_velocity(mu, s), x, steps=200, exact_divergence=True)
    expected = gaussian_log_density(x, mu, s)
    assert logp.shape == (200,)
    torch.testing.assert_close(logp, expected, rtol=1e-2, atol=1e-2)
    assert abs(logp.mean() / expected.mean() - 1) < 1e-3


def test_hutchinson_matches_gaussian_density_on_average():
    mu, s, data = problem(10)
    x, _ = data.sample(1000, seed=1)
    g = torch.Generator().manual_seed(0)
    logp = log_likelihood(gaussian_velocity(mu, s), x, steps=100, exact_divergence=False, generator=g)
    expected = gaussian_log_density(x, mu, s)
    assert abs(logp.mean() / expected.mean() - 1) < 1e-2


def test_hutchinson_is_reproducible_for_a_fixed_generator():
    mu, s, data = problem(10)
    x, _ = data.sample(50)
    v = gaussian_velocity(mu, s)
    a = log_likelihood(v, x, 20, False, torch.Generator().manual_seed(3))
    b = log_likelihood(v, x, 20, False, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("d, divergence", [(2, "exact"), (10, "hutchinson")])
def test_nll_metric_reports_nats_per_dim(d, divergence):
    mu, s, data = problem(d)
    out = nll(n_points=500, steps=100)(samples=None, dataset=data, velocity=gaussian_velocity(mu, s), seed=0)
    x, _ = data.sample(500, seed=0)
    expected = float(-gaussian_log_density(x, mu, s).mean()) / d
    assert out["nll"]["value"] == pytest.approx(expected, rel=1e-2)
    settings = out["nll"]["settings"]
    assert settings["divergence"].startswith(divergence)
    assert settings["n_points"] == 500 and settings["dim"] == d and settings["reference"] == "gaussian-test"
    assert "bpd" not in out


class QuantisedImages(GaussianData):
    """Gaussian 'images' (1, 2, 2) declaring the spacing of their values, as an image dataset does."""

    def __init__(self, bin_width):
        super().__init__(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
        self.bin_width = bin_width

    def sample(self, n, seed=0):
        x, _ = super().sample(n, seed)
        return x.reshape(n, 1, 2, 2), None


@pytest.mark.parametrize("bin_width, extra_bits", [(2 / 255, math.log2(127.5)), (1 / 8, 3.0), (None, None)])
def test_bits_per_dim_follow_the_datas_quantisation(bin_width, extra_bits):
    """8-bit pixels (256 levels 2/255 apart in [-1, 1]) add log2(127.5) bits/dim, digits' 17 grey levels log2(8); continuous data (latents) get no bpd."""
    data = QuantisedImages(bin_width)
    v = gaussian_velocity(data.mu, data.s)
    out = nll(n_points=200, steps=20)(samples=None, dataset=data, velocity=lambda x, t: v(x.flatten(1), t).view_as(x),
                                       seed=0)
    if extra_bits is None:
        assert "bpd" not in out
    else:
        assert out["bpd"]["value"] == pytest.approx(out["nll"]["value"] / math.log(2) + extra_bits)
        assert out["bpd"]["settings"]["bin_width"] == bin_width


def test_digits_declare_their_bin_width_unless_resampled():
    from cbsflow.data.shards import digits

    assert digits().bin_width == 1 / 8 and digits(size=16).bin_width is None


def test_hutchinson_is_unbiased_for_a_rotated_gaussian():
    """A full covariance makes the Jacobian non-diagonal, so Rademacher probes are actually noisy."""
    mu, s, data = problem(10)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    v_diag = gaussian_velocity(torch.zeros(10, dtype=torch.float64), s)
    v = lambda x, t, y=None: mu + v_diag((x - t[:, None] * mu) @ q, t) @ q.T  # noqa: E731
    x = mu + (data.sample(1000, seed=1)[0] - mu) @ q.T
    g = torch.Generator().manual_seed(0)
    logp = log_likelihood(v, x, steps=100, exact_divergence=False, generator=g)
    expected = gaussian_log_density((x - mu) @ q + mu, mu, s)
    assert (logp - expected).abs().max() > 1e-2  # the estimate is noisy per point ...
    assert abs(logp.mean() / expected.mean() - 1) < 1e-2  # ... and unbiased on average


def test_segmented_models_are_integrated_expert_by_expert():
    """Two experts with the exact field on [0, 0.37) and a field off by a constant on [0.37, 1]: the segment-wise
    integration gives the density of the composed flow, and no Heun step evaluates both experts."""
    import numpy as np

    from cbsflow.segmented import SegmentedVelocity

    mu, s, data = problem(2)
    exact = gaussian_velocity(mu, s)
    calls = []

    class Field(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x, t, y=None):
            calls.append((self.k, float(t.min()), float(t.max())))
            return exact(x, t)

    model = SegmentedVelocity([Field(0), Field(1)], np.array([0.0, 0.37, 1.0]))
    x, _ = data.sample(100, seed=2)
    logp = log_likelihood(model, x.double(), steps=100, exact_divergence=True)
    torch.testing.assert_close(logp, gaussian_log_density(x, mu, s), rtol=1e-2, atol=1e-2)
    assert all((k == 0 and hi <= 0.37 + 1e-12) or (k == 1 and lo >= 0.37 - 1e-12) for k, lo, hi in calls)
    assert {k for k, lo, hi in calls if abs(lo - 0.37) < 1e-9} == {0, 1}  # the boundary is evaluated by both sides


def test_nll_floor_is_the_data_entropy():
    from cbsflow.data.toy import checkerboard, eight_gaussians
    from cbsflow.metrics.likelihood import data_entropy

    assert data_entropy(checkerboard(), 0)["value"] == pytest.approx(math.log(8) / 2)
    assert data_entropy(checkerboard(size=4, scale=2.0), 0)["value"] == pytest.approx(math.log(32) / 2)
    # Eight well-separated Gaussians (std 0.15): log 8 plus the entropy of one, per dimension.
    one = 0.5 * math.log(2 * math.pi * math.e * 0.15**2) * 2
    assert data_entropy(eight_gaussians(), 0)["value"] == pytest.approx((math.log(8) + one) / 2, abs=0.01)
    assert data_entropy(GaussianData(torch.zeros(2), torch.ones(2)), 0) is None
