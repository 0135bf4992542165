"""eDiff-I's progressive splitting: the step allocation, which interval splits and where, runs through the stages."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cbsflow.cli import main
from cbsflow.errors import UserError
from cbsflow.progressive import burden_midpoint, extreme_leaf, leaf_burdens, mass_split, padded, progressive
from cbsflow.timesampling import logit_normal, uniform_time

SMOKE = "gin/smoke/toy.gin"


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


@pytest.mark.parametrize("n,steps,share", [(1, 20, 0.25), (2, 20, 0.25), (3, 40, 0.25), (4, 20, 0.25), (5, 33, 0.4)])
def test_the_plan_spends_exactly_n_experts_steps(n, steps, share):
    shared, children = progressive(share=share).plan(n, SimpleNamespace(steps=steps))
    assert shared + sum(children) == n * steps and len(children) == 2 * (n - 1)
    assert max(children, default=0) - min(children, default=0) <= 1  # the children share the rest evenly
    if n > 1:
        assert shared == n * round(share * steps)


def test_eDiff_I_splits_at_equal_mass_and_only_the_extremes_keep_splitting():
    assert [extreme_leaf([(0, 1)] * k, j) for j, k in enumerate([1, 2, 3, 4, 5])] == [0, 0, 2, 0, 4]
    assert mass_split(uniform_time(), (0.2, 0.6)) == pytest.approx(0.4)
    ln = logit_normal(-0.8, 0.8)
    assert mass_split(ln, (0.0, 1.0)) == pytest.approx(1 / (1 + math.exp(0.8)))  # the median: sigmoid(mean)
    at = mass_split(ln, (0.1, 0.5))
    cdf = lambda x: float(ln.cdf(torch.tensor(x, dtype=torch.float64)))  # noqa: E731
    assert cdf(at) - cdf(0.1) == pytest.approx(cdf(0.5) - cdf(at))


def test_burdens_and_the_burden_midpoint():
    flat = [{"t": [0.0, 0.5], "value": [1.0, 1.0], "interval": (0.0, 0.5)},
            {"t": [0.5, 0.9], "value": [1.0, 1.0], "interval": (0.5, 1.0)}]  # extended by its last value to t = 1
    assert leaf_burdens(flat, 0.5, 0.05) == pytest.approx([0.5 * 1.05**0.5, 0.5 * 1.05**0.5])
    assert burden_midpoint(flat[1], 0.5, 0.05, np.array([1.0, 1.0])) == pytest.approx(0.75)
    ramp = {"t": [0.0, 1.0], "value": [0.0, 4.0], "interval": (0.0, 1.0)}  # rho = (4t + 0.1)^1: C(s) = 2s^2 + 0.1s
    s = burden_midpoint(ramp, 1.0, 0.05, np.zeros(0))
    assert 2 * s**2 + 0.1 * s == pytest.approx(0.5 * 2.1)
    assert padded([0.0, 0.5, 1.0], 4) == [0.0, 0.5, 1.0, 1.0, 1.0]


def _nodes_steps(run):
    """Optimizer steps each tree node took, from its training log."""
    out = {}
    for log in (run / "checkpoints" / "progressive").glob("node_*/log.jsonl"):
        out[log.parent.name] = [json.loads(line) for line in log.open()][-1]["step"]
    return out


def test_progressive_runs_through_the_stages_within_the_fixed_split_budget(tmp_path, capsys):
    """N = 4, 20 steps per expert: the shared network 4 x 5 steps, six children 10 each: 80 = 4 x 20."""
    run = tmp_path / "run"
    args = ["--gin", SMOKE, "--gin", "gin/splits/progressive.gin", "--bind", "N_SEGMENTS = 4", "--run-dir", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[profile] skipped" in out and out.count("[train] progressive split") == 3
    record = json.loads((run / "checkpoints" / "adaptation.json").read_text())
    split = json.loads((run / "split.json").read_text())
    # Uniform t: eDiff-I's halves of equal mass, [0, 1] first, then the noise end, then the data end.
    assert [h["split"] for h in record["history"]] == [[0.0, 1.0], [0.0, 0.5], [0.5, 1.0]]
    np.testing.assert_allclose(split["boundaries"], [0, 0.25, 0.5, 0.75, 1])
    assert split["boundaries"] == record["final_boundaries"] and split["adapted_by"] == "progressive"
    assert [h["step"] for h in record["history"]] == [5, 10, 15] and record["extra_compute"] == 0.0
    assert record["history"][0]["boundaries"] == [0.0, 0.5, 1.0, 1.0, 1.0]
    steps = _nodes_steps(run)
    assert steps == {"node_0": 20, **{f"node_{i}": 10 for i in range(1, 7)}} and sum(steps.values()) == 4 * 20
    for k in range(4):  # every expert: its own 10 steps, and its ancestors' (shared 20 + parent 10) inherited
        ckpt = torch.load(run / "checkpoints" / f"segment_{k}.pt", weights_only=True)
        assert ckpt["interval"] == split["boundaries"][k:k + 2]
        assert ckpt["steps"] == 10 and ckpt["inherited_steps"] == 30
    assert (run / "adaptation.png").exists()
    assert main(args) == 0  # the rewritten split.json leaves every stage up to date
    assert capsys.readouterr().out.count("up to date") == 4


def test_the_burden_rule_splits_by_the_monitor_measured_on_each_parent(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--gin", SMOKE, "--gin", "gin/splits/progressive_burden.gin", "--bind", "N_SEGMENTS = 3",
                 "--bind", "progressive.n_samples = 32", "--bind", "progressive.n_points = 8",
                 "--stages", "split,train", "--run-dir", str(run)]) == 0
    record = json.loads((run / "checkpoints" / "adaptation.json").read_text())
    first, second = record["history"]
    assert first["split"] == [0.0, 1.0] and 0 < first["at"] < 1 and "profile" in first
    # The second split takes the child of larger burden and cuts it inside.
    chosen = int(np.argmax(second["burden"]))
    assert second["split"] == [[0.0, first["at"]], [first["at"], 1.0]][chosen]
    assert second["split"][0] < second["at"] < second["split"][1] and sum(second["burden"]) == pytest.approx(1)
    # Profiles of the shared network and both its children (the last children are never profiled): 3 x 8 x 32 x 4
    # Jacobian-vector products against forward + backward of 3 experts x 20 steps x 128.
    assert sorted(record["profiles"]) == ["0", "1", "2"]
    assert record["extra_compute"] == pytest.approx(3 * 8 * 32 * 4 / (3 * 20 * 128))
    assert sum(_nodes_steps(run).values()) == 3 * 20
    assert json.loads((run / "split.json").read_text())["monitor"] == "dirichlet"


def test_a_logit_normal_sampler_moves_the_first_split_to_its_median(tmp_path):
    run = tmp_path / "run"
    assert main(["--gin", SMOKE, "--gin", "gin/splits/progressive.gin", "--bind", "N_SEGMENTS = 2",
                 "--bind", "expert/training.t_sampler = @logit_normal()", "--stages", "split,train",
                 "--run-dir", str(run)]) == 0
    b = json.loads((run / "split.json").read_text())["boundaries"]
    assert b[1] == pytest.approx(1 / (1 + math.exp(0.8)))


def test_bad_progressive_settings_are_one_clear_error(tmp_path, capsys):
    with pytest.raises(UserError, match="progressive.rule"):
        progressive(rule="largest")
    with pytest.raises(UserError, match="progressive.share"):
        progressive(share=1.0)
    assert main(["--gin", SMOKE, "--gin", "gin/splits/progressive.gin", "--bind", "N_SEGMENTS = 4",
                 "--bind", "expert/training.steps = 2", "--stages", "split,train", "--run-dir", str(tmp_path)]) == 2
    assert "progressive.share = 0.25 of 2 steps per expert" in capsys.readouterr().err
