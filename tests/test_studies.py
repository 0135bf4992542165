"""Studies are configuration: every benchmarks/studies/*.toml turns into landscape commands over files that exist."""

import importlib.util
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "benchmarks" / "studies").glob("*.toml"))


def _run_study():
    spec = importlib.util.spec_from_file_location("run_study", REPO / "benchmarks" / "run_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_study_expands_into_landscape_commands_over_existing_files(path):
    run_study = _run_study()
    with open(path, "rb") as f:
        study = tomllib.load(f)
    landscapes = run_study.expand(study)
    assert landscapes
    for _, one in landscapes:
        cmd = run_study.command(one)
        for flag, value in zip(cmd, cmd[1:]):
            if flag == "--gin":
                assert (REPO / value).exists(), value
        for gin_file in [b for name, b in one.get("solvers", {}).items() if b.endswith(".gin")]:
            assert (REPO / gin_file).exists(), gin_file


def test_a_matrix_makes_one_landscape_per_combination_with_its_own_bindings_and_baselines():
    run_study = _run_study()
    study = {"gin": ["g.gin"], "seeds": [0], "out": "runs/x/{name}", "bind": ["common = 1"],
             "matrix": {"a": {"p": ["a = 1"], "q": ["a = 2"]},
                        "b": {"r": {"bind": ["b = 1"], "baselines": {"wide": "w = 3"}}}}}
    out = dict(run_study.expand(study))
    assert list(out) == ["p-r", "q-r"]
    assert out["q-r"]["bind"] == ["a = 2", "b = 1", "common = 1"] and out["q-r"]["out"] == "runs/x/q-r"
    assert out["p-r"]["baselines"] == {"wide": "w = 3"}
    assert list(dict(run_study.expand(study, only=["q-r"]))) == ["q-r"]
