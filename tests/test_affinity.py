"""Pairwise profiles (cbsflow/affinity.py): ANT's gradient affinity, Multi-stage's denoiser similarity, and the exact
contiguous clustering of them."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cbsflow.affinity import affinity_costs, affinity_matrix, denoiser_similarity, gradient_affinity
from cbsflow.cli import main
from cbsflow.clustering import brute_force_clusters, contiguous_clusters
from cbsflow.errors import UserError
from cbsflow.estimators import MixtureVelocity
from cbsflow.paths import linear

SMOKE = "gin/smoke/toy.gin"


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 8), st.integers(1, 3), st.integers(0, 10_000), st.sampled_from(["ant", "mean_within"]))
def test_the_dynamic_program_finds_the_brute_force_optimum(n, k, seed, objective):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (n, n))
    s = (a + a.T) / 2
    np.fill_diagonal(s, 1.0)
    cost = affinity_costs(s, objective)
    starts, best = contiguous_clusters(cost, k)
    _, oracle = brute_force_clusters(cost, k)
    assert best == pytest.approx(oracle, abs=1e-12) and starts[0] == 0 and len(starts) == k


def test_ants_cost_is_minus_the_affinity_to_the_centre():
    s = np.arange(25, dtype=float).reshape(5, 5)
    cost = affinity_costs(s, "ant")
    assert cost[1, 3] == -s[2, 1:4].sum() and cost[0, 3] == -s[2, 0:4].sum() and cost[2, 2] == -s[2, 2]


def test_mean_within_recovers_the_blocks_of_a_block_matrix():
    t = (np.arange(12) + 0.5) / 12
    labels = np.array([0] * 3 + [1] * 5 + [2] * 4)
    s = np.where(labels[:, None] == labels[None, :], 0.9, 0.1)
    np.fill_diagonal(s, 1.0)
    b = affinity_matrix(3, "mean_within")(t, s)
    np.testing.assert_allclose(b, [0, 3 / 12, 8 / 12, 1], atol=1e-12)
    with pytest.raises(UserError, match="pairwise profile"):
        affinity_matrix(3)(t, np.ones(12))


def test_gradient_affinity_is_a_cosine_matrix_and_needs_a_network():
    from cbsflow.backbones.mlp import mlp

    torch.manual_seed(0)
    net, t = mlp(data_shape=(2,), width=16, depth=1), torch.linspace(0.05, 0.95, 5)
    s, se = gradient_affinity()(net, torch.randn(32, 2), t, path=linear())
    assert s.shape == se.shape == (5, 5) and torch.allclose(s, s.T, atol=1e-12)
    torch.testing.assert_close(torch.diagonal(s), torch.ones(5, dtype=s.dtype), atol=1e-9, rtol=0)
    assert torch.all(s.abs() <= 1 + 1e-9) and torch.all(se >= 0)
    field = MixtureVelocity(torch.ones(1), torch.zeros(1, 2), torch.ones(1, 2), linear())
    with pytest.raises(UserError, match="trained network"):
        gradient_affinity()(field, torch.randn(8, 2), t, path=linear())


def test_the_denoiser_of_a_single_point_agrees_everywhere():
    """Data that is one point: its optimal denoiser returns that point at every t, so S = 1; for two far-apart
    points the denoiser near the noise end (their mean) disagrees with the one near the data end (a point)."""
    t = torch.linspace(0.02, 0.98, 6)
    one = MixtureVelocity(torch.ones(1), torch.tensor([[2.0, -1.0]]), torch.full((1, 2), 1e-3), linear())
    s, se = denoiser_similarity(eta=1e-3)(one, torch.tensor([[2.0, -1.0]]).repeat(64, 1), t, path=linear())
    torch.testing.assert_close(s, torch.ones(6, 6, dtype=s.dtype), atol=1e-6, rtol=0)
    mu = torch.tensor([[-3.0, 0.0], [3.0, 0.0]])
    two = MixtureVelocity(torch.ones(2), mu, torch.full((2, 2), 0.05), linear())
    x1 = mu[torch.arange(256) % 2]
    s, _ = denoiser_similarity(eta=0.1)(two, x1, t, path=linear())
    assert s[0, -1] < 0.6 < s[-1, -2] and torch.allclose(s, s.T)


@pytest.mark.parametrize("gin_file", ["gradient_affinity", "denoiser_similarity"])
def test_each_affinity_split_runs_through_the_stages(tmp_path, gin_file):
    assert main(["--gin", SMOKE, "--gin", f"gin/splits/{gin_file}.gin", "--bind", "N_SEGMENTS = 3",
                 "--bind", "expert/training.steps = 5", "--run-dir", str(tmp_path)]) == 0
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert np.shape(profile["value"]) == (len(profile["t"]), len(profile["t"]))
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["solver"] == "affinity_matrix" and len(split["boundaries"]) == 4
    assert (tmp_path / "profile.png").exists() and (tmp_path / "metrics.json").exists()


def test_the_warm_split_can_cluster_its_shared_networks_gradient_affinity(tmp_path):
    assert main(["--gin", SMOKE, "--gin", "gin/splits/warm_split.gin", "--bind", "N_SEGMENTS = 2",
                 "--bind", "warm_split.monitor = @gradient_affinity()", "--bind", "warm_split.solver = @affinity_matrix()",
                 "--bind", "affinity_matrix.n_segments = 2", "--bind", "warm_split.n_points = 8",
                 "--bind", "expert/training.steps = 8", "--run-dir", str(tmp_path)]) == 0
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["adapted_by"] == "warm_split" and split["monitor"] == "gradient_affinity"
    assert (tmp_path / "profile.png").exists()
