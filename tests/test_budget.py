"""Experts of different budgets and capacities (cbsflow/budget.py): the allocation rules and the stages with them."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cbsflow import budget as bud
from cbsflow.cli import main
from cbsflow.errors import UserError
from cbsflow.timesampling import logit_normal

SMOKE = "gin/smoke/toy.gin"


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


@given(st.integers(4, 100_000), st.lists(st.floats(0.0, 10.0), min_size=1, max_size=8))
def test_apportion_sums_to_the_total_and_follows_the_weights(total, weights):
    if sum(weights) <= 0 or total < len(weights):
        with pytest.raises(UserError):
            bud.apportion(total, weights)
        return
    out = bud.apportion(total, weights)
    assert sum(out) == total and min(out) >= 1
    exact = total * np.asarray(weights) / sum(weights)
    if exact.min() >= 1:  # no expert raised to the minimum: each within 1 of its exact share
        assert np.all(np.abs(np.asarray(out) - exact) < 1)


def test_steps_by_mass_under_logit_normal_follow_its_closed_form():
    """Steps proportional to Phi((logit b - m) / s) differences: the late interval gets the most."""
    sampler, b = logit_normal(0.5, 1.0), np.array([0.0, 0.3, 0.6, 1.0])
    out = bud.steps_by_mass()(b, 1000, sampler)
    normal = torch.distributions.Normal(0.5, 1.0)
    logit = torch.logit(torch.tensor(b[1:-1], dtype=torch.float64))
    cdf = np.concatenate([[0.0], normal.cdf(logit).numpy(), [1.0]])
    np.testing.assert_allclose([a.steps for a in out], 3000 * np.diff(cdf), atol=1.0)
    assert sum(a.steps for a in out) == 3000 and all(a.overrides == {} for a in out)
    assert [a.steps for a in bud.steps_by_mass()(b, 1000)] == [900, 900, 1200]  # uniform t: the lengths


def test_steps_and_capacity_by_burden_follow_the_profile():
    """A profile whose density is 3x higher on [0.5, 1]: 1:3 steps, widths scaled by sqrt(burden / mean)."""
    t = np.linspace(0, 1, 1001)
    value = np.where(t < 0.5, 1.0, 9.0)  # exponent 1/2, floor 0: density 1 then 3
    profile = {"t": t, "value": value}
    b = np.array([0.0, 0.5, 1.0])
    steps = bud.steps_by_burden(exponent=0.5, floor=0.0)(b, 1000, profile=profile)
    assert [a.steps for a in steps] == pytest.approx([500, 1500], abs=2)
    cap = bud.capacity_by_burden(parameter="width", exponent=0.5, floor=0.0)
    out = bud.allocate(cap, b, 1000, profile=profile, backbone=_FakeBackbone)
    assert [a.steps for a in out] == [1000, 1000]
    assert [a.overrides["width"] for a in out] == [round(32 * 0.5**0.5), round(32 * 1.5**0.5)]
    with pytest.raises(UserError, match="reads the profile"):
        bud.steps_by_burden()(b, 1000, profile=None)


def _FakeBackbone(width: int = 32, data_shape=None, num_classes=0):  # noqa: N802
    return None


def test_per_expert_steps_must_match_the_split():
    assert [a.steps for a in bud.per_expert([3, 5])(np.array([0, 0.5, 1]), 10)] == [3, 5]
    with pytest.raises(UserError, match="one per expert"):
        bud.per_expert([3, 5, 7])(np.array([0, 0.5, 1]), 10)


def test_capacity_by_burden_through_the_stages(tmp_path, capsys):
    """The profile runs for the budget (the uniform split needs none); experts of different widths train, are
    recorded in train.json and load for sampling and evaluation."""
    assert main(["--gin", SMOKE, "--gin", "gin/splits/capacity_by_burden.gin", "--bind", "N_SEGMENTS = 2",
                 "--bind", "expert/training.steps = 5", "--run-dir", str(tmp_path)]) == 0
    assert "[profile] skipped" not in capsys.readouterr().out
    train = json.loads((tmp_path / "checkpoints" / "train.json").read_text())
    widths = [o["width"] for o in train["overrides_per_expert"]]
    assert train["budget"] == "capacity_by_burden" and len(set(widths)) == 2
    assert train["parameters_per_expert"][0] != train["parameters_per_expert"][1]
    assert (tmp_path / "metrics.json").exists()


def test_steps_by_mass_and_a_scoped_width_through_the_stages(tmp_path):
    """Steps by mass under a logit-normal sampler (the checkpoints record each expert's own), and expert 1 made
    narrower by the scoped binding expert_1/mlp.width, which sampling rebuilds from the checkpoint."""
    assert main(["--gin", SMOKE, "--gin", "gin/splits/steps_by_mass.gin", "--bind", "N_SEGMENTS = 2",
                 "--bind", "expert/training.steps = 6", "--bind", "expert/training.t_sampler = @logit_normal()",
                 "--bind", "logit_normal.mean = 1.0", "--bind", "expert_1/mlp.width = 8",
                 "--run-dir", str(tmp_path)]) == 0
    train = json.loads((tmp_path / "checkpoints" / "train.json").read_text())
    assert sum(train["steps_per_expert"]) == 12 and train["steps_per_expert"][1] > train["steps_per_expert"][0]
    for k, steps in enumerate(train["steps_per_expert"]):
        ckpt = torch.load(tmp_path / "checkpoints" / f"segment_{k}.pt", weights_only=True)
        assert ckpt["steps"] == steps and ckpt["network"]["expert"] == k
    assert train["parameters_per_expert"][1] < train["parameters_per_expert"][0]
    assert (tmp_path / "metrics.json").exists()


def test_a_budget_with_an_adaptation_stops_with_one_line(tmp_path, capsys):
    code = main(["--gin", SMOKE, "--gin", "gin/splits/steps_by_mass.gin", "--bind", "train.adaptation = @warm_split()",
                 "--run-dir", str(tmp_path)])
    assert code != 0 and "drop one of them" in capsys.readouterr().err


def test_a_scoped_expert_width_is_part_of_the_stages_configuration():
    """expert_1/mlp.width enters the train, sample and evaluate stages' configuration (so a trained run is redone
    when it changes) and counts as read (no unread-binding warning)."""
    from cbsflow import config
    from cbsflow.unread import unread_bindings

    config.parse([SMOKE], ["expert_1/mlp.width = 8"])
    for stage in ("train", "sample", "evaluate"):
        assert config.effective_config(stage)["expert_1/mlp.width"] == 8
    assert not unread_bindings(["expert_1/mlp.width"], ["train", "sample"])
    config.parse([SMOKE], [])
    assert "expert_1/mlp.width" not in config.effective_config("train")


def test_the_width_a_budget_scales_is_the_bound_one_or_the_backbones_default():
    import gin

    from cbsflow import config

    config.parse([SMOKE], ["mlp.width = 24"])
    assert bud.bound_value(gin.get_configurable("mlp"), "width") == 24
    assert bud.bound_value(gin.get_configurable("plain_mlp"), "width") == 32  # its signature's default
    with pytest.raises(UserError, match="no such argument"):
        bud.bound_value(gin.get_configurable("plain_mlp"), "channels")
