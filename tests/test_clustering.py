"""Partition solvers of the literature: equal training mass, SNR thresholds and ANT's contiguous clustering."""

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cbsflow.cli import main
from cbsflow.clustering import (affinity_clusters, affinity_profile, brute_force_clusters, contiguous_clusters,
                                equal_mass, interval_costs, snr_threshold)
from cbsflow.errors import UserError
from cbsflow.paths import cosine, linear
from cbsflow.timesampling import logit_normal, uniform_time

SMOKE = "gin/smoke/toy.gin"


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


@pytest.mark.parametrize("mean,std,n", [(-0.8, 0.8, 4), (0.0, 1.0, 3), (0.5, 1.6, 7)])
def test_equal_mass_under_logit_normal_is_its_closed_form(mean, std, n):
    """b_k = sigmoid(mean + std * Phi^{-1}(k / N)): every interval holds 1/N of logit-normal training times."""
    b = equal_mass(n, logit_normal(mean, std))()
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = [0.0] + [sigmoid(mean + std * NormalDist().inv_cdf(k / n)) for k in range(1, n)] + [1.0]
    np.testing.assert_allclose(b, expected, rtol=0, atol=1e-9)
    mass = np.diff(logit_normal(mean, std).cdf(torch.tensor(b, dtype=torch.float64)).numpy())
    np.testing.assert_allclose(mass, 1 / n, atol=1e-9)


def test_equal_mass_under_uniform_time_is_the_uniform_split():
    np.testing.assert_allclose(equal_mass(5, uniform_time())(), np.linspace(0, 1, 6), atol=1e-12)


@pytest.mark.parametrize("lam", [[0.0], [-3.8918202981106265], [-2.0, 0.5, 4.0]])
def test_snr_thresholds_on_the_linear_and_cosine_paths(lam):
    """Linear: SNR = (t / (1 - t))^2, so log-SNR = lam at t = sigmoid(lam / 2); cosine: SNR = tan^2(pi t / 2)."""
    lam = np.asarray(lam)
    b = snr_threshold(lam.tolist())(path=linear())
    np.testing.assert_allclose(b, [0, *(1 / (1 + np.exp(-lam / 2))), 1], atol=1e-12)
    b = snr_threshold(lam.tolist())(path=cosine())
    np.testing.assert_allclose(b, [0, *(2 / np.pi * np.arctan(np.exp(lam / 2))), 1], atol=1e-12)


def test_wan22_default_switches_at_sigma_0875():
    s = snr_threshold()
    assert s.n_segments == 2
    np.testing.assert_allclose(s(path=linear()), [0, 0.125, 1], atol=1e-12)


@given(st.integers(0, 10_000), st.integers(1, 4))
def test_dynamic_program_equals_brute_force_on_a_small_grid(seed, k):
    """The DP's optimum equals the minimum over all C(7, k - 1) contiguous partitions of 8 points."""
    values = np.random.default_rng(seed).lognormal(size=8)
    cost = interval_costs(values)
    starts, total = contiguous_clusters(cost, k)
    _, best = brute_force_clusters(cost, k)
    assert total == pytest.approx(best, rel=1e-12, abs=1e-12)
    edges = [*starts, 8]
    assert sum(cost[a, b - 1] for a, b in zip(edges, edges[1:])) == pytest.approx(total)


def test_interval_cost_is_ants_distance_to_the_centre():
    v = np.array([1.0, 2.0, 4.0, 8.0])
    cost = interval_costs(v)
    assert cost[0, 0] == 0 and cost[0, 1] == 1  # centre floor((0 + 1 + 1) / 2) = 1
    assert cost[0, 3] == abs(1 - 4) + abs(2 - 4) + 0 + abs(8 - 4)  # centre 2
    assert np.isinf(cost[2, 1])


profiles = st.integers(3, 30).flatmap(lambda n: st.lists(st.floats(1e-3, 1e3), min_size=n, max_size=n))


@given(profiles, st.integers(1, 8), st.sampled_from(["log_snr", "snr", "profile"]), st.integers(8, 40))
def test_affinity_boundaries_increase_from_0_to_1(values, n, cost, n_points):
    t = np.linspace(0, 1, len(values))
    solver = affinity_profile(n, n_points=max(n_points, n)) if cost == "profile" else affinity_clusters(
        n, cost=cost, n_points=max(n_points, n))
    b = solver(t, np.asarray(values), path=linear())
    assert len(b) == n + 1 and b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)


def test_affinity_costs():
    """log-SNR is symmetric about t = 1/2 on the linear path, so are its clusters; the paper's raw SNR is unbounded
    at t = 1 and crowds every boundary against the data end; a constant profile costs nothing anywhere."""
    b = affinity_clusters(4, cost="log_snr")(None, None, path=linear())
    np.testing.assert_allclose(b, 1 - b[::-1], atol=1e-12)
    assert np.all(affinity_clusters(4, cost="snr")(None, None, path=linear())[1:-1] > 0.9)
    step = affinity_profile(2, n_points=20)(np.linspace(0, 1, 40), np.r_[np.ones(12), 9 * np.ones(28)])
    assert step[1] == pytest.approx(0.3, abs=0.05)  # the jump of the monitor is where the two clusters meet
    assert affinity_profile(3).needs_profile and not affinity_clusters(3).needs_profile


def test_bad_settings_are_one_clear_error():
    with pytest.raises(UserError, match="affinity_clusters.cost"):
        affinity_clusters(cost="gradient")
    with pytest.raises(UserError, match="exponent and floor"):
        affinity_profile(floor=-1)
    with pytest.raises(UserError, match="n_points"):
        affinity_clusters(n_segments=5, n_points=4)
    with pytest.raises(UserError, match="strictly increasing"):
        snr_threshold([1.0, 0.0])
    with pytest.raises(UserError, match="n_segments"):
        equal_mass(0)
    with pytest.raises(UserError, match="bind a time sampler"):
        equal_mass(2, t_sampler="logit_normal")


@pytest.mark.parametrize("gin_file", ["equal_mass", "snr_threshold", "affinity_clusters", "affinity_profile"])
def test_each_solver_runs_through_the_stages(tmp_path, gin_file, capsys):
    """gin/smoke/toy.gin with gin/splits/<solver>.gin: split, train, sample and evaluate (the profile stage only
    for the solver that reads a profile)."""
    assert main(["--gin", SMOKE, "--gin", f"gin/splits/{gin_file}.gin", "--bind", "N_SEGMENTS = 3",
                 "--bind", "expert/training.steps = 5", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("[profile] skipped" in out) == (gin_file != "affinity_profile")
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["solver"] == gin_file and (tmp_path / "metrics.json").exists()
    assert len(split["boundaries"]) == (3 if gin_file == "snr_threshold" else 4)
