"""docs/extending.md's examples work: every component of docs/examples/my_plugins.py through tools/run.py."""

import json
import os

from cbsflow.cli import main

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples")


def test_the_extending_guides_components_run_through_every_stage(tmp_path, monkeypatch, repo_root):
    monkeypatch.chdir(repo_root)
    monkeypatch.syspath_prepend(EXAMPLES)
    binds = ["BACKBONE = @tiny_mlp", "profile.estimator = @point_set()", "profile.monitor = @field_norm()",
             "split.solver = @late_deboor()", "sample.sampler = @midpoint",
             "evaluate.metrics = [@mean_error(), @sliced_wasserstein()]"]
    assert main(["--gin", "gin/smoke/toy.gin", "--import", "my_plugins", "--run-dir", str(tmp_path),
                 *[a for b in binds for a in ("--bind", b)]]) == 0
    split = json.loads((tmp_path / "split.json").read_text())
    profile = json.loads((tmp_path / "profile.json").read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert split["solver"] == "late_deboor" and len(split["boundaries"]) == 3
    assert profile["monitor"] == "field_norm" and profile["estimator"] == "point_set"
    assert metrics["mean_error"]["value"] >= 0 and "sliced_wasserstein" in metrics
