"""Every split method shipped as a gin file (gin/splits/*.gin) runs through the ordinary stages of tools/run.py on
the smoke configuration, and says what it did in split.json."""

import json
from pathlib import Path

import pytest

from cbsflow.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPLITS = sorted(p.name for p in (ROOT / "gin" / "splits").glob("*.gin"))


def test_the_split_files_are_found():
    assert {"warm_split.gin", "warm_pilot.gin", "warm_adaptive.gin", "progressive.gin"} <= set(SPLITS)


@pytest.mark.parametrize("name", SPLITS)
def test_each_split_file_runs_every_stage_on_the_smoke_configuration(name, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    tiny = ["aux/training.steps = 20", "profile.n_points = 8", "profile.n_samples = 64", "expert/training.steps = 20",
            "sample.n_samples = 64", "sample.n_steps = 4", "nll.n_points = 16", "nll.steps = 4",
            "evaluate.floor_draws = 0", "split.figures = False", "train.figures = False", "sample.figures = False",
            "evaluate.figures = False"]
    args = ["--gin", "gin/smoke/toy.gin", "--gin", f"gin/splits/{name}", "--run-dir", str(tmp_path)]
    for binding in tiny:
        args += ["--bind", binding]
    assert main(args) == 0
    split = json.loads((tmp_path / "split.json").read_text())
    b = split["boundaries"]
    assert b[0] == 0.0 and b[-1] == 1.0 and all(x < y for x, y in zip(b, b[1:]))
    assert (tmp_path / "metrics.json").exists()
