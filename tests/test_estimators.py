"""Estimators: the closed-form velocity of Gaussian mixtures and point sets, aux_net, checkpoint."""

import pytest
import torch

from cbsflow.data.toy import checkerboard, eight_gaussians, gaussian
from cbsflow.errors import UserError
from cbsflow.estimators import MixtureVelocity, aux_net, checkpoint, closed_form
from cbsflow.paths import cosine, linear
from cbsflow.training import TrainSettings


def test_single_gaussian_velocity_is_the_affine_closed_form():
    mu, s = torch.tensor([0.7, -1.0]), torch.tensor([0.3, 2.0])
    field = MixtureVelocity(torch.ones(1), mu[None], s[None], linear())
    x, t = torch.randn(10, 2), torch.rand(10)
    v_big = t[:, None] ** 2 * s**2 + (1 - t[:, None]) ** 2
    b = (t[:, None] * s**2 - (1 - t[:, None])) / v_big
    torch.testing.assert_close(field(x, t), mu + b * (x - t[:, None] * mu))


def test_point_set_velocity_matches_math_md():
    points = torch.randn(5, 3)
    field = MixtureVelocity(torch.ones(5), points, torch.zeros(5, 3), linear())
    x, t = torch.randn(7, 3), torch.full((7,), 0.6)
    w = torch.softmax(-((x[:, None] - 0.6 * points) ** 2).sum(-1) / (2 * 0.4**2), dim=1)
    torch.testing.assert_close(field(x, t), (w @ points - x) / 0.4, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path", [linear(), cosine()])
def test_shared_std_fast_path_equals_general_path(path):
    means = torch.randn(6, 2)
    fast = MixtureVelocity(torch.rand(6) + 0.1, means, torch.full((6, 2), 0.2), path)
    slow = MixtureVelocity(fast.log_w.exp(), means, torch.full((6, 2), 0.2), path)
    slow.shared_std = False
    x, t = torch.randn(9, 2), torch.rand(9) * 0.98
    torch.testing.assert_close(fast(x, t), slow(x, t), rtol=1e-4, atol=1e-5)


def test_mixture_velocity_is_the_conditional_expectation():
    """Monte Carlo check: E[x1 - eps | x_t near x] for the eight-Gaussian mixture at t = 1/2."""
    data = eight_gaussians()
    field = closed_form()(data, linear())
    x1, _ = data.sample(1_000_000, seed=0)
    eps = torch.randn(x1.shape, generator=torch.Generator().manual_seed(1))
    x_t = 0.5 * x1 + 0.5 * eps
    target = torch.tensor([1.0, 0.0])
    near = ((x_t - target) ** 2).sum(-1) < 0.05**2
    mc, se = (x1 - eps)[near].mean(0), (x1 - eps)[near].std(0) / near.sum().sqrt()
    assert torch.all((field(target[None], torch.tensor([0.5]))[0] - mc).abs() < 4 * se + 0.02)


def test_closed_form_uses_points_when_no_mixture_is_known():
    field = closed_form(n_points=100, std=0.05)(checkerboard(), linear())
    assert field.means.shape == (100, 2) and field.shared_std
    assert torch.isfinite(field(torch.randn(4, 2), torch.ones(4))).all()


class PointsOnly:
    """A dataset that hides its mixture: closed_form must treat it as a point set."""

    def __init__(self, data):
        self.data, self.shape, self.num_classes = data, data.shape, 0

    def sample(self, n, seed=0):
        return self.data.sample(n, seed)


def test_point_set_default_smoothing_keeps_the_dirichlet_energy_near_the_truth():
    """8 Gaussians, 4,096 points: unsmoothed, the point set's Dirichlet energy is 17x the truth at t = 0.95 (it
    memorises the points); smoothed by default it stays within a factor 2 up to t = 0.95 and 3 at t = 0.99."""
    from cbsflow.monitors import dirichlet

    data = eight_gaussians()
    x1, _ = data.sample(1000, seed=1)
    t = torch.tensor([0.5, 0.8, 0.9, 0.95, 0.99])
    monitor = dirichlet(n_probes=2)
    truth, _ = monitor(closed_form()(data, linear()), x1, t, path=linear())
    smooth = closed_form()(PointsOnly(data), linear())
    raw = closed_form(std=0.0)(PointsOnly(data), linear())
    ratio_smooth = monitor(smooth, x1, t, path=linear())[0] / truth
    ratio_raw = monitor(raw, x1, t, path=linear())[0] / truth
    assert torch.all((ratio_smooth[:4] > 0.5) & (ratio_smooth[:4] < 2)) and 1 / 3 < ratio_smooth[4] < 3, ratio_smooth
    assert ratio_raw[3] > 5  # what the default prevents
    assert smooth.valid_until == 1.0 and 0.85 < raw.valid_until < 0.97


def test_profiling_into_the_memorising_range_warns(tmp_path, repo_root, monkeypatch):
    from cbsflow.cli import main

    monkeypatch.chdir(repo_root)
    argv = ["--gin", "gin/smoke/toy.gin", "--run-dir", str(tmp_path), "--stages", "profile",
            "--bind", "profile.estimator = @closed_form()", "--bind", "closed_form.n_points = 512"]
    with pytest.warns(UserWarning, match="memorises its points"):
        assert main(argv + ["--bind", "closed_form.std = 0.0"]) == 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert main(argv + ["--force"]) == 0


def test_aux_net_learns_the_gaussian_velocity():
    from cbsflow.backbones.mlp import mlp

    data = gaussian(mean=[1.0, -1.0], std=[0.5, 0.5])
    net = aux_net(backbone=lambda **kw: mlp(width=64, depth=2, **kw),
                  settings=TrainSettings(steps=300, batch_size=256, lr=3e-3))(data, linear())
    exact = closed_form()(data, linear())
    x, t = torch.randn(256, 2), torch.rand(256) * 0.9
    with torch.no_grad():
        err = ((net(x, t) - exact(x, t)) ** 2).mean() / (exact(x, t) ** 2).mean()
    assert err < 0.1


def test_aux_net_profiles_its_ema_when_one_is_trained(monkeypatch):
    """With aux/training.ema_decay > 0 the field returned is the EMA of the weights, not the last iterate."""
    from cbsflow import training
    from cbsflow.backbones.mlp import mlp

    seen = {}
    fit = training.fit

    def spy(net, *a, **kw):
        out = fit(net, *a, **kw)
        seen.update(last=net, ema=out["ema"])
        return out

    monkeypatch.setattr(training, "fit", spy)
    data = gaussian(mean=[1.0, -1.0], std=[0.5, 0.5])
    net = aux_net(backbone=lambda **kw: mlp(width=16, depth=1, **kw),
                  settings=TrainSettings(steps=30, batch_size=64, lr=3e-3, ema_decay=0.9))(data, linear())
    assert net is seen["ema"] and net is not seen["last"]
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), seen["last"].parameters()))


def test_checkpoint_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        checkpoint(path=str(tmp_path / "nope.pt"), backbone=None)(gaussian(), linear())


def test_capacity_gap_profiles_the_excess_error_of_a_model_against_a_reference():
    """energy of (v - v) is 0; of (v_a - v_b) for two Gaussians it is E ||v_a - v_b||^2 / d under p_t of the data."""
    from cbsflow.estimators import capacity_gap
    from cbsflow.monitors import energy

    class Fixed:
        def __init__(self, data):
            self.data = data

        def __call__(self, dataset, path, seed=0):
            return closed_form()(self.data, path)

    data, other = gaussian(mean=[0.5, -0.5], std=[0.4, 0.8]), gaussian(mean=[0.5, -0.5], std=[0.8, 0.8])
    t = torch.tensor([0.2, 0.5, 0.9])
    x1, _ = data.sample(4000, seed=123)  # not the monitor's noise seed (0): the two streams would be correlated
    zero, _ = energy()(capacity_gap(Fixed(data), Fixed(data))(data, linear()), x1, t, path=linear())
    assert torch.all(zero == 0)
    gap, se = energy()(capacity_gap(Fixed(other), Fixed(data))(data, linear()), x1, t, path=linear())
    # Only coordinate 0 differs: v_a - v_b = (B_a - B_b)(x - t mu) with Var(x_0 - t mu_0) = t^2 0.4^2 + (1 - t)^2.
    b = lambda s: (t * s**2 - (1 - t)) / (t**2 * s**2 + (1 - t) ** 2)  # noqa: E731
    expected = (b(0.8) - b(0.4)) ** 2 * (t**2 * 0.4**2 + (1 - t) ** 2) / 2
    assert torch.all((gap - expected).abs() < 4 * se + 1e-6), (gap, expected)
