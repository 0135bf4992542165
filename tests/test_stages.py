"""The stages end to end with an exact velocity field: the path reaches every component, SDE noise is its own,
the evaluation carries its reference values."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from cbsflow.cli import main
from cbsflow.estimators import MixtureVelocity
from cbsflow.registry import Instance, register

MEAN, STD = (0.7, -0.5), (0.3, 1.2)


@register("backbone")
class gaussian_oracle(nn.Module):
    """Test backbone: the exact velocity of Gaussian data N(MEAN, STD^2) on the bound path (weights unused)."""

    def __init__(self, data_shape, num_classes: int = 0, path: Instance("path") = None):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))
        self.field = MixtureVelocity(torch.ones(1), torch.tensor([MEAN]), torch.tensor([STD]), path)

    def forward(self, x, t, y=None):
        return self.field(x, t) + 0 * self.unused


ORACLE = ["--bind", "DATASET = @gaussian()", "--bind", "BACKBONE = @gaussian_oracle",
          "--bind", "gaussian_oracle.path = %PATH", "--bind", "split.solver = @uniform()", "--bind", "N_SEGMENTS = 2",
          "--bind", "expert/training.steps = 1", "--bind", "expert/training.lr = 0.0", "--bind", "expert/training.ema_decay = 0.0",
          "--bind", "sample.n_samples = 20000", "--bind", "sample.batch_size = 20000",
          "--bind", "evaluate.metrics = [@sliced_wasserstein()]", "--bind", "evaluate.floor_draws = 0"]


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


@pytest.mark.parametrize("path", ["@linear()", "@cosine()"])
@pytest.mark.parametrize("sampler,steps", [("@heun", 32), ("@euler_maruyama()", 256)])
def test_exact_field_reproduces_the_data_moments_on_every_path(tmp_path, path, sampler, steps):
    """PATH is bound once in gin/base.gin; the SDE sampler gets it from the sample stage (and with it the score), and
    draws its increments from a generator of its own: with the starting noise reused as the first increment the
    std came out 1.23-1.24 instead of 1.20 at 256 steps."""
    run_dir = tmp_path / "run"
    assert main(["--gin", "gin/smoke/toy.gin", *ORACLE, "--bind", f"PATH = {path}", "--bind", f"sample.sampler = {sampler}",
                 "--bind", f"sample.n_steps = {steps}", "--run-dir", str(run_dir),
                 "--stages", "split,train,sample,evaluate"]) == 0
    x = torch.from_numpy(np.load(run_dir / "samples.npz")["x"]).double()
    se = torch.tensor(STD) / np.sqrt(len(x))
    assert torch.all((x.mean(0) - torch.tensor(MEAN)).abs() < 4 * se), x.mean(0)
    assert torch.all((x.std(0) - torch.tensor(STD)).abs() < 4 * se / np.sqrt(2) + 0.005), x.std(0)


def test_starting_noise_and_sde_noise_are_independent(tmp_path):
    """The sample stage's two generators: the first Brownian increment is not the starting noise."""
    from cbsflow.seeding import derive_seed

    start = torch.randn(5, 2, generator=torch.Generator().manual_seed(derive_seed(0, 0)))
    increment = torch.randn(5, 2, generator=torch.Generator().manual_seed(derive_seed(0, 1)))
    assert not torch.allclose(start, increment)


def test_metrics_carry_their_floor_and_the_data_entropy(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["--gin", "gin/smoke/toy.gin", "--run-dir", str(run_dir), "--bind", "evaluate.floor_draws = 2"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    for name in ("sliced_wasserstein", "mmd"):
        floor = metrics[name]["floor"]
        assert floor["draws"] == 2 and np.isfinite(floor["value"]) and "fresh true-data" in floor["what"]
    assert metrics["sliced_wasserstein"]["floor"]["value"] < metrics["sliced_wasserstein"]["value"]
    entropy = metrics["nll"]["floor"]
    assert entropy["value"] == pytest.approx(np.log(8) / 2) and entropy["unit"] == "nats/dim"  # uniform on 8 unit squares


def test_figures_switches_skip_the_pngs_and_leave_a_run_up_to_date(tmp_path, capsys):
    """split/sample/evaluate.figures = False draw nothing, and are not part of the stages' settings: a run made with
    figures is up to date without them (nothing reruns), so tools/landscape.py can turn them off on old runs."""
    run_dir = tmp_path / "run"
    args = ["--gin", "gin/smoke/toy.gin", *ORACLE, "--run-dir", str(run_dir), "--stages", "split,train,sample,evaluate"]
    assert main(args) == 0
    assert (run_dir / "samples.png").exists()
    assert not (run_dir / "profile.png").exists()  # a uniform split reads no profile: nothing to draw
    capsys.readouterr()
    off = [a for stage in ("split", "sample", "evaluate") for a in ("--bind", f"{stage}.figures = False")]
    assert main([*args, *off]) == 0
    assert capsys.readouterr().out.count("up to date") == 4
    fresh = tmp_path / "fresh"
    assert main([*args[:-4], "--run-dir", str(fresh), "--stages", "split,train,sample,evaluate", *off]) == 0
    assert not list(fresh.glob("*.png")) and (fresh / "metrics.json").exists()


def test_a_metric_on_its_floor_is_marked_as_not_resolving():
    from cbsflow.stages import resolves_from_floor

    assert resolves_from_floor({"value": 0.030, "floor": {"value": 0.029, "sd": 0.006}}) == "no"
    assert resolves_from_floor({"value": 0.060, "floor": {"value": 0.029, "sd": 0.006}}) == "yes"
    assert resolves_from_floor({"value": 1.4, "floor": {"value": 1.04, "sd": None}}) is None
    assert resolves_from_floor({"value": 1.4}) is None
