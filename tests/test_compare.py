"""Run comparison: loading, grouping, mean ± se, paired/Welch differences, the CLI tools (compare, sweep --dry-run)."""

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cbsflow.compare import (
    build_table,
    difference,
    format_markdown,
    group_runs,
    load_run,
    mean_se,
    t_quantile,
)
from cbsflow.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# fid per seed; "cbs" and "uniform" share seeds 0, 1, 2 (paired), "other" has seeds 3, 4 (Welch).
FID = {"uniform": {0: 10.0, 1: 12.0, 2: 11.0}, "cbs": {0: 8.0, 1: 9.5, 2: 9.0}, "other": {3: 9.0, 4: 10.0}}


def write_run(root: Path, label: str, seed: int, fid: float, with_run_json: bool = True) -> Path:
    d = root / f"{label}-seed{seed}"
    d.mkdir(parents=True)
    cbs = label != "uniform"
    boundaries = [0.0, 0.1234 + 0.0001 * seed, 0.5, 1.0] if cbs else [0.0, 1 / 3, 2 / 3, 1.0]
    split = {"solver": "deboor" if cbs else "uniform", "boundaries": boundaries, "burden": [1, 1, 1],
             "exponent": 0.5, "floor": 0.01}
    (d / "split.json").write_text(json.dumps(split))
    if cbs:
        t = [i / 20 for i in range(21)]
        profile = {"monitor": "jacobian", "t": t, "value": [1 + 50 * x**4 for x in t], "stderr": [0.1] * 21}
        (d / "profile.json").write_text(json.dumps(profile))
    metrics = {"nfe": 30, "sampling": {"sampler": "heun", "steps": 15, "seed": seed},
               "metrics": {"fid": {"value": fid, "settings": {"n": 100}}, "nll": {"value": 1.0 + seed, "settings": {}}}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    if with_run_json:
        (d / "run.json").write_text(json.dumps({"seed": seed, "label": label}))
    return d


@pytest.fixture
def runs_root(tmp_path):
    for label, values in FID.items():
        for seed, value in values.items():
            write_run(tmp_path / "runs", label, seed, value, with_run_json=label != "other")
    return tmp_path / "runs"


def load_all(root):
    return group_runs([load_run(d) for d in sorted(root.iterdir())])


def test_mean_and_standard_error_by_hand():
    stat = mean_se([10.0, 12.0, 11.0])
    assert stat.n == 3 and stat.mean == pytest.approx(11.0)
    assert stat.se == pytest.approx(1 / math.sqrt(3))  # sample sd 1, over sqrt 3
    assert math.isnan(mean_se([1.0]).se)


def test_t_quantiles_match_tables():
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959966, abs=1e-5)


def test_grouping_uses_run_json_or_the_directory_name(runs_root):
    groups = load_all(runs_root)
    assert set(groups) == {"uniform", "cbs", "other"}
    assert [r.seed for r in groups["cbs"]] == [0, 1, 2]
    assert [r.seed for r in groups["other"]] == [3, 4]  # from "other-seed3", no run.json
    assert groups["uniform"][0].monitor is None and groups["cbs"][0].monitor == "jacobian"


def test_paired_difference_by_hand(runs_root):
    groups = load_all(runs_root)
    diff = difference(groups["cbs"], groups["uniform"], "fid")
    # paired diffs: -2, -2.5, -2 -> mean -13/6; sd = sqrt(((1/6)^2 + (1/3)^2 + (1/6)^2) / 2) = sqrt(1/12)
    assert diff.paired and diff.n == 3
    assert diff.mean == pytest.approx(-13 / 6)
    assert diff.half_width == pytest.approx(4.302653 * math.sqrt(1 / 12) / math.sqrt(3), rel=1e-6)


def test_welch_difference_by_hand(runs_root):
    groups = load_all(runs_root)
    diff = difference(groups["other"], groups["uniform"], "fid")
    # se^2: other 0.5/2 = 0.25, uniform 1/3; nu = (0.25 + 1/3)^2 / (0.25^2/1 + (1/3)^2/2) = 2.88235
    va, vb = 0.25, 1 / 3
    nu = (va + vb) ** 2 / (va**2 / 1 + vb**2 / 2)
    assert nu == pytest.approx(2.882353, abs=1e-6)
    assert not diff.paired and diff.n == (2, 3)
    assert diff.mean == pytest.approx(-1.5)
    assert diff.half_width == pytest.approx(3.257208 * math.sqrt(va + vb), rel=1e-6)


def test_table_rows(runs_root):
    groups = load_all(runs_root)
    table = build_table(groups, baseline="uniform")
    rows = {row[0]: dict(zip(table.headers, row)) for row in table.rows}
    assert rows["uniform"]["solver"] == "uniform" and rows["uniform"]["monitor"] == "—"
    assert rows["uniform"]["N"] == "3" and rows["uniform"]["boundaries"] == "[0, 0.333, 0.667, 1]"
    assert rows["cbs"]["boundaries"] == "[0, 0.123, 0.5, 1]"  # 0.1234..0.1236 agree to 3 d.p.
    assert rows["cbs"]["NFE"] == "30" and rows["cbs"]["seeds"] == "3"
    assert rows["uniform"]["fid"] == "11 ± 0.58"
    assert rows["cbs"]["fid"] == "8.833 ± 0.44"
    assert rows["cbs"]["Δfid vs uniform (95% CI)"] == "-2.167 ± 0.72 (paired n=3)"
    assert rows["other"]["Δfid vs uniform (95% CI)"] == "-1.5 ± 2.5 (Welch n=2/3)"
    assert rows["uniform"]["Δfid vs uniform (95% CI)"] == "(baseline)"
    md = format_markdown(table)
    assert md.splitlines()[0].startswith("| label | solver | monitor | N | boundaries | NFE | seeds | fid |")
    assert len(md.splitlines()) == 2 + 3


@pytest.mark.parametrize("extra", [{"solver": "uniform", "monitor": None},  # written before split.json named it
                                   {"solver": "warm_split", "monitor": "dirichlet"}])
def test_an_adapted_split_is_labelled_by_the_method_that_set_its_boundaries(tmp_path, extra):
    """A warm split starts from uniform boundaries and measures its monitor in train (no profile.json): the table
    names warm_split and its monitor, not the uniform start."""
    d = write_run(tmp_path / "runs", "warm", 0, 9.0)
    split = json.loads((d / "split.json").read_text())
    split.update({"adapted_by": "warm_split", "initial_solver": "uniform", "initial_monitor": None}, **extra)
    (d / "split.json").write_text(json.dumps(split))
    (d / "profile.json").unlink()
    run = load_run(d)
    assert run.solver == "warm_split"
    assert run.monitor == extra["monitor"]
    table = build_table(group_runs([run]))
    assert dict(zip(table.headers, table.rows[0]))["solver"] == "warm_split"


def test_missing_or_broken_run_dirs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="metrics.json"):
        load_run(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.json").write_text("{oops")
    with pytest.raises(UserError, match="invalid JSON"):
        load_run(tmp_path / "empty")


def run_tool(*args, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_compare_cli_writes_markdown_and_png(runs_root, tmp_path):
    out = tmp_path / "report"
    proc = run_tool(ROOT / "tools" / "compare.py", runs_root, "--baseline", runs_root / "uniform-seed0", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "(paired n=3)" in proc.stdout and "Welch n=2/3" in proc.stdout
    assert "-2.167 ± 0.72 (paired n=3)" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_on_a_glob_after_a_sweep_writes_next_to_the_runs(runs_root, tmp_path):
    """`tools/compare.py runs/sweep/*` right after a sweep: the glob also matches the sweep's own comparison files."""
    (runs_root / "comparison.md").write_text("earlier table\n")
    (runs_root / "comparison.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_tool(ROOT / "tools" / "compare.py", *sorted(runs_root.iterdir()), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "(paired" not in (runs_root / "comparison.md").read_text() and "uniform" in (runs_root / "comparison.md").read_text()
    assert not list(elsewhere.iterdir())


def test_compare_cli_error_is_one_line(tmp_path):
    proc = run_tool(ROOT / "tools" / "compare.py", tmp_path / "missing", "--out", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "missing" in proc.stderr


def test_sweep_dry_run_prints_the_commands(tmp_path):
    out = tmp_path / "sweep"
    proc = run_tool(
        "tools/sweep.py", "--gin", "gin/a.gin", "--bind", "train.steps = 10", "--seeds", "0", "1",
        "--grid", "split.n_segments=2,4", "--grid", "split.solver=@deboor,@uniform", "--out", out,
        "--dry-run", "--", "--stages", "train", cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 * 2 * 2
    expected = [
        sys.executable, str(ROOT / "tools" / "run.py"), "--gin", "gin/a.gin", "--bind", "train.steps = 10",
        "--bind", "split.n_segments = 4", "--bind", "split.solver = @uniform", "--bind", "SEED = 1",
        "--run-dir", str(out / "n_segments-4__solver-uniform-seed1"), "--rerun", "--stages", "train",
    ]
    assert lines[-1] == shlex.join(expected)
    first_dir = out / "n_segments-2__solver-deboor-seed0"
    assert lines[0].endswith(shlex.join(["--run-dir", str(first_dir), "--rerun", "--stages", "train"]))
    assert not out.exists()
