"""Sample metrics in data space: sliced Wasserstein, MMD (exact and binned), k-NN precision/recall, support."""

import pytest
import torch

from cbsflow.data.toy import checkerboard, moons
from cbsflow.metrics.sample_distances import (
    knn_precision_recall,
    mmd,
    mmd_squared,
    mmd_squared_binned,
    precision_recall,
    sliced_wasserstein_distance,
    support,
)

BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0)


def test_sliced_wasserstein_is_zero_for_equal_sets_and_sees_a_shift():
    a = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    assert sliced_wasserstein_distance(a, a, 64, g) == 0
    # Shifting every point by c moves each 1-D projection by c . theta: SW^2 = |c|^2 E[theta_1^2] = |c|^2 / 2 in 2-D.
    shifted = sliced_wasserstein_distance(a, a + torch.tensor([1.0, 0.0]), 4096, g)
    assert shifted == pytest.approx(2**-0.5, rel=0.05)


@pytest.mark.parametrize("other", ["same", "moons", "gaussian"])
def test_binned_mmd_matches_the_exact_pairwise_estimate(other):
    a, _ = checkerboard().sample(2000, seed=1)
    b = {"same": checkerboard().sample(2000, seed=2)[0], "moons": moons().sample(2000, seed=2)[0],
         "gaussian": torch.randn(2000, 2, generator=torch.Generator().manual_seed(3)) * 1.2}[other]
    exact, binned = mmd_squared(a, b, BANDWIDTHS).item(), mmd_squared_binned(a, b, BANDWIDTHS).item()
    assert binned == pytest.approx(exact, rel=0.02, abs=2e-4)


def test_mmd_metric_uses_every_sample_in_two_dimensions():
    x, _ = checkerboard().sample(20000, seed=5)
    out = mmd()(samples=x, dataset=checkerboard(), seed=0)["mmd"]
    assert out["settings"]["n_samples"] == 20000 and abs(out["value"]) < 1e-3


def test_knn_precision_and_recall_separate_quality_from_coverage():
    data = checkerboard()
    real, _ = data.sample(5000, seed=1)
    p, r = knn_precision_recall(data.sample(5000, seed=2)[0], real)
    assert p > 0.95 and r > 0.95
    half = real[real[:, 0] < 0][:2500]  # samples from half the board: precise, but they cover half of it
    p, r = knn_precision_recall(half, data.sample(5000, seed=3)[0])
    assert p > 0.95 and 0.4 < r < 0.6
    noise = torch.rand(5000, 2, generator=torch.Generator().manual_seed(4)) * 4 - 2  # uniform on the whole square
    p, r = knn_precision_recall(noise, real)
    assert 0.3 < p < 0.7 and r > 0.9
    out = precision_recall()(samples=noise, dataset=data, seed=0)
    assert set(out) == {"precision", "recall"} and out["precision"]["settings"]["k"] == 3


def test_support_counts_the_samples_on_the_squares():
    data = checkerboard(size=8, scale=0.5)
    x, _ = data.sample(1000, seed=0)
    assert support()(samples=x, dataset=data)["support"]["value"] == 1.0
    noise = (torch.rand(20000, 2, generator=torch.Generator().manual_seed(1)) * 4 - 2) * 0.5
    assert support()(samples=noise, dataset=data)["support"]["value"] == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="on_support"):
        support()(samples=x, dataset=moons())
