"""Paths: derivatives against finite differences, and the prediction conversions as each other's inverses."""

import pytest
import torch

from cbsflow import registry
from cbsflow.paths import PREDICTIONS

PATHS = [e.obj() for e in registry.entries("path")]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_derivatives_match_finite_differences(path):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    for value, derivative in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        fd = (value(t + h) - value(t - h)) / (2 * h)
        torch.testing.assert_close(torch.as_tensor(derivative(t), dtype=torch.float64).expand_as(t), fd,
                                   rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_ends_are_noise_and_data(path):
    x1, eps = torch.randn(4, 3), torch.randn(4, 3)
    x0, _ = path.interpolate(x1, eps, torch.zeros(4))
    xt, _ = path.interpolate(x1, eps, torch.ones(4))
    torch.testing.assert_close(x0, eps)
    torch.testing.assert_close(xt, x1, atol=1e-6, rtol=0)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("kind", PREDICTIONS)
def test_predictions_recover_x1_eps_and_the_velocity(path, kind):
    g = torch.Generator().manual_seed(0)
    x1, eps = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.25, 0.4, 0.6, 0.8, 0.9], dtype=torch.float64)
    x, v = path.interpolate(x1, eps, t)
    truth = {"velocity": v, "x1": x1, "eps": eps}
    torch.testing.assert_close(path.from_velocity(v, x, t, kind), truth[kind])
    torch.testing.assert_close(path.to_velocity(truth[kind], x, t, kind), v)
    sigma = path.sigma(t)[:, None]
    torch.testing.assert_close(path.score(v, x, t), -eps / sigma)  # the conditional score, from the conditional velocity


def test_unknown_prediction_is_rejected():
    with pytest.raises(ValueError, match="unknown prediction"):
        PATHS[0].to_velocity(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), "noise")
