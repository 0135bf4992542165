"""The 2-D toy datasets: shapes, supports, and densities that integrate to one."""

import math

import pytest
import torch

from cbsflow.data.toy import checkerboard, eight_gaussians, gaussian, moons, rings
from cbsflow.errors import UserError


@pytest.mark.parametrize("data", [checkerboard(), checkerboard(size=8), checkerboard(size=4, scale=2.0),
                                  eight_gaussians(), rings(), moons()], ids=repr)
def test_log_prob_is_a_density(data):
    """Riemann sum of exp(log p) over a grid that holds the data: 1."""
    extent = 2.5 * getattr(data, "scale", 1.0) + 0.5
    g = torch.linspace(-extent, extent, 301, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    mass = data.log_prob(pts).exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.01)


def test_checkerboard_samples_lie_on_its_dark_squares():
    data = checkerboard(size=8, scale=2.0)
    x, _ = data.sample(10000, seed=0)
    assert data.on_support(x).all() and x.abs().max() <= 4.0
    side = 4.0 * 2.0 / 8
    cells = torch.floor((x + 4.0) / side)
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    assert len({tuple(c) for c in cells.long().tolist()}) == 32  # every dark square is used
    assert data.log_prob(x).unique().tolist() == [-math.log(32 * side**2)]


def test_bad_checkerboard_settings_are_user_errors():
    with pytest.raises(UserError, match="even integer"):
        checkerboard(size=3)
    with pytest.raises(UserError, match="scale"):
        checkerboard(scale=0.0)


def test_gaussian_log_prob_is_the_closed_form():
    data = gaussian(mean=(0.7, -0.5), std=(0.3, 1.2))
    x = torch.randn(10, 2)
    z = (x.double() - torch.tensor([0.7, -0.5], dtype=torch.float64)) / torch.tensor([0.3, 1.2], dtype=torch.float64)
    expected = (-0.5 * z**2).sum(1) - math.log(0.3 * 1.2) - math.log(2 * math.pi)
    torch.testing.assert_close(data.log_prob(x), expected)
