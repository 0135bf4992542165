"""cbsflow.load_run: a trained run rebuilt from its own records samples what samples.npz holds, bit for bit."""

import numpy as np
import pytest
import torch

import cbsflow
from cbsflow.cli import main
from cbsflow.errors import UserError


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, repo_root):
    import os

    run_dir = str(tmp_path_factory.mktemp("api") / "toy")
    cwd = os.getcwd()
    os.chdir(repo_root)
    try:
        assert main(["--gin", "gin/smoke/toy.gin", "--run-dir", run_dir, "--stages", "profile,split,train,sample"]) == 0
    finally:
        os.chdir(cwd)
    return run_dir


def test_the_readme_example(toy_run):
    run = cbsflow.load_run(toy_run)
    x = run.sample()  # the recorded n, seed and steps
    assert np.array_equal(x.numpy(), np.load(f"{toy_run}/samples.npz")["x"])
    other = run.sample(100, seed=3, steps=4)
    assert other.shape == (100, 2) and not torch.equal(other, x[:100])
    v = run.velocity(other, torch.full((100,), 0.5))
    assert v.shape == other.shape and torch.isfinite(v).all()
    assert len(run.boundaries) == 5 and run.config["sample"]["sample.sampler"] == "@heun"


def test_raw_weights_instead_of_the_ema(toy_run):
    ema, raw = cbsflow.load_run(toy_run), cbsflow.load_run(toy_run, use_ema=False)
    x, t = torch.randn(8, 2), torch.full((8,), 0.7)
    assert not torch.allclose(ema.velocity(x, t), raw.velocity(x, t))


def test_a_run_without_trained_experts_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="has no trained experts"):
        cbsflow.load_run(str(tmp_path))
