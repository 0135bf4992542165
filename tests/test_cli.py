"""tools/run.py end to end on the tiny toy configuration: artifacts, skipping, swaps, custom monitors, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cbsflow.cli import main

SMOKE = "gin/smoke/toy.gin"


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, repo_root):
    run_dir = str(tmp_path_factory.mktemp("runs") / "toy")
    cwd = os.getcwd()
    os.chdir(repo_root)
    try:
        assert main(["--gin", SMOKE, "--run-dir", run_dir]) == 0
    finally:
        os.chdir(cwd)
    return run_dir


def load(run_dir, name):
    with open(os.path.join(run_dir, name)) as f:
        return json.load(f)


def snapshot(run_dir):
    """Every file in the run directory with its bytes, to check that nothing was overwritten."""
    out = {}
    for folder, _, files in os.walk(run_dir):
        for f in files:
            with open(os.path.join(folder, f), "rb") as fh:
                out[os.path.relpath(os.path.join(folder, f), run_dir)] = fh.read()
    return out


def test_all_stages_write_their_artifacts(finished_run):
    for name in ("operative_config.gin", "profile.json", "split.json", "profile.png", "samples.npz", "sample.json",
                 "metrics.json", "samples.png", "checkpoints/segment_0.pt", "checkpoints/segment_3.pt"):
        assert os.path.exists(os.path.join(finished_run, name)), name
    prof = load(finished_run, "profile.json")
    assert prof["monitor"] == "dirichlet" and len(prof["t"]) == len(prof["value"]) == len(prof["stderr"]) == 16
    assert np.all(np.diff(prof["t"]) > 0) and 0 <= prof["t"][0] and prof["t"][-1] <= 1
    split = load(finished_run, "split.json")
    assert split["solver"] == "deboor" and len(split["boundaries"]) == 5
    assert split["boundaries"][0] == 0 and split["boundaries"][-1] == 1
    np.testing.assert_allclose(split["burden"], 0.25, rtol=1e-6)
    metrics = load(finished_run, "metrics.json")
    assert metrics["nfe"] == 16 and set(metrics["metrics"]) == {"sliced_wasserstein", "mmd", "nll"}
    assert np.isfinite(metrics["metrics"]["sliced_wasserstein"]["value"])
    assert {metrics["metrics"][m]["resolves"] for m in ("sliced_wasserstein", "mmd")} <= {"yes", "no"}  # vs the floor
    assert "deboor.n_segments = %N_SEGMENTS" in open(os.path.join(finished_run, "operative_config.gin")).read()


def test_finished_stages_are_skipped_unless_forced(finished_run, capsys):
    before = snapshot(finished_run)
    assert main(["--gin", SMOKE, "--run-dir", finished_run, "--stages", "profile,split,train,sample,evaluate"]) == 0
    assert capsys.readouterr().out.count("skipped") == 5
    after = snapshot(finished_run)
    def results(files):  # everything but the record of the invocation
        return {k: v for k, v in files.items() if k != "operative_config.gin" and not k.startswith("config_history")}

    assert results(before) == results(after)
    assert len(os.listdir(os.path.join(finished_run, "config_history"))) >= 1
    assert main(["--gin", SMOKE, "--run-dir", finished_run, "--stages", "sample", "--force"]) == 0
    assert "[sample] done" in capsys.readouterr().out


def test_split_reruns_alone_on_a_handwritten_profile(tmp_path):
    t = np.linspace(0, 1, 21)
    (tmp_path / "profile.json").write_text(json.dumps({"monitor": "by hand", "t": t.tolist(),
                                                       "value": (1 + 50 * t**4).tolist(), "stderr": [0] * 21}))
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--stages", "split"]) == 0
    b = load(tmp_path, "split.json")["boundaries"]
    assert len(b) == 5 and b[2] > 0.5  # the monitor's mass sits near t = 1
    # The profile changed: split is out of date and reruns without --force; a changed split makes train stale.
    (tmp_path / "profile.json").write_text(json.dumps({"t": [0, 1], "value": [1, 1], "stderr": [0, 0]}))
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--stages", "split"]) == 0
    np.testing.assert_allclose(load(tmp_path, "split.json")["boundaries"], [0, 0.25, 0.5, 0.75, 1])


@pytest.mark.parametrize("solver", ["@uniform()", "@partition.uniform()"])
def test_a_binding_swaps_the_solver(tmp_path, solver):
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--stages", "split", "--bind", f"split.solver = {solver}",
                 "--bind", "uniform.n_segments = 3"]) == 0
    split = load(tmp_path, "split.json")
    assert split["solver"] == "uniform"
    np.testing.assert_allclose(split["boundaries"], [0, 1 / 3, 2 / 3, 1])


CUSTOM_MONITOR = '''
import torch
from cbsflow.registry import register

@register("monitor")
def {name}(velocity, x1, t, path, y=None, generator=None):
    """Test monitor: the difficulty sits around t = 0.2."""
    value = torch.exp(-((t - 0.2) / 0.15) ** 2) + 1e-4
    return value, torch.zeros_like(value)
'''


def test_custom_monitor_by_import_flag(tmp_path, monkeypatch):
    # Its own module and name: the README test imports the README's my_monitors.my_monitor in the same process.
    (tmp_path / "bump_monitors.py").write_text(CUSTOM_MONITOR.format(name="bump_monitor"))
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = str(tmp_path / "run")
    assert main(["--gin", SMOKE, "--import", "bump_monitors", "--bind", "profile.monitor = @bump_monitor",
                 "--run-dir", run_dir, "--stages", "profile,split"]) == 0
    assert load(run_dir, "profile.json")["monitor"] == "bump_monitor"
    b = load(run_dir, "split.json")["boundaries"]
    assert all(0.0 < x < 0.45 for x in b[1:-1])  # every cut lands in the bump around t = 0.2


def test_custom_monitor_by_gin_import_line(tmp_path, monkeypatch, repo_root):
    (tmp_path / "my_gin_monitors.py").write_text(CUSTOM_MONITOR.format(name="my_gin_monitor"))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "custom.gin").write_text(
        f"import my_gin_monitors\ninclude '{repo_root}/{SMOKE}'\nprofile.monitor = @my_gin_monitor\n")
    run_dir = str(tmp_path / "run")
    assert main(["--gin", str(tmp_path / "custom.gin"), "--run-dir", run_dir, "--stages", "profile,split"]) == 0
    assert all(0.0 < x < 0.45 for x in load(run_dir, "split.json")["boundaries"][1:-1])


BAD_MONITOR = '''
import torch
from cbsflow.registry import register

@register("monitor")
def {name}(velocity, x1, t, path, y=None, generator=None):
    """Test monitor returning {what}."""
    value = torch.ones_like(t)
    value[3] = {value}
    return value, torch.zeros_like(t)
'''

BAD_BINDINGS = {
    "unknown component": (["--bind", "split.solver = @no_such_solver()"], "no_such_solver"),
    "malformed binding": (["--bind", "split.solver = = 3"], "--bind 'split.solver = = 3': cannot parse"),
    "missing gin file": (["--gin", "gin/does_not_exist.gin"], "does_not_exist.gin"),
    "manual not increasing": (["--bind", "split.solver = @manual()", "--bind", "manual.boundaries = [0, 0.6, 0.4, 1]"],
                              "increase strictly"),
    "manual outside [0, 1]": (["--bind", "split.solver = @manual()", "--bind", "manual.boundaries = [0, 0.5, 1.5]"],
                              "from 0 to 1"),
    "N < 1": (["--bind", "deboor.n_segments = 0"], "n_segments"),
    "string for an integer": (["--bind", "expert/training.steps = '100'"],
                              "expert/training.steps = '100': expected an integer, got a string (write 100"),
    "non-integer steps": (["--bind", "sample.n_steps = 16.5"], "sample.n_steps = 16.5: expected an integer"),
    "class without ()": (["--bind", "profile.monitor = @dirichlet"], "write @dirichlet()"),
    "function with ()": (["--bind", "sample.sampler = @heun()"], "write @heun (no parentheses)"),
    "wrong kind in a slot": (["--bind", "profile.monitor = @uniform()"], "'uniform' is a partition, but this slot "
                             "takes a monitor"),
    "unknown macro": (["--bind", "N_SEGMENT = 2"], "no gin file uses the macro %N_SEGMENT"),
    "misspelt component": (["--bind", "split.solver = @deboo()"], "did you mean deboor?"),
    "misspelt parameter": (["--bind", "deboor.n_segment = 3"], "deboor has no parameter 'n_segment'; did you mean "
                           "n_segments?"),
    "misspelt stage": (["--bind", "sampel.n_steps = 3"], "did you mean sample?"),
    "misspelt training setting": (["--bind", "expert/training.step = 100"], "training has no parameter 'step'; did "
                                  "you mean steps? (its parameters: steps, batch_size, lr, "),
    "unknown stage": (["--stages", "split,fly"], "fly"),
    "bad import": (["--import", "no_such_module_xyz"], "no_such_module_xyz"),
}


@pytest.fixture
def existing_run(finished_run, tmp_path):
    """A copy of a finished run directory, so that every bad input is tried against real artifacts."""
    import shutil

    dst = tmp_path / "existing"
    shutil.copytree(finished_run, dst)
    return str(dst)


def _assert_clean_failure(argv, fragment, run_dir, capsys):
    before = snapshot(run_dir)
    assert main(argv + ["--run-dir", run_dir, "--force"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1 and fragment in errors[0], err
    assert err.rstrip().endswith(errors[0])  # progress bars may come before it, nothing after
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("case", sorted(BAD_BINDINGS))
def test_bad_input_fails_with_one_line_and_changes_nothing(case, existing_run, capsys):
    extra, fragment = BAD_BINDINGS[case]
    argv = extra if case == "missing gin file" else ["--gin", SMOKE] + extra
    _assert_clean_failure(argv, fragment, existing_run, capsys)


@pytest.mark.parametrize("what,value", [("negative values", "-1.0"), ("NaN", "float('nan')")])
def test_bad_monitor_values_fail_cleanly(what, value, tmp_path, monkeypatch, existing_run, capsys):
    name = f"bad_monitor_{'neg' if '-' in value else 'nan'}"
    (tmp_path / f"{name}.py").write_text(BAD_MONITOR.format(name=name, what=what, value=value))
    monkeypatch.syspath_prepend(str(tmp_path))
    _assert_clean_failure(["--gin", SMOKE, "--import", name, "--bind", f"profile.monitor = @{name}",
                           "--stages", "profile,split"], "finite and >= 0", existing_run, capsys)


@pytest.mark.parametrize("content,fragment", [
    ("{not json", "not valid JSON"),
    (json.dumps({"t": [0, 0.5, 0.4, 1], "value": [1, 1, 1, 1]}), "increase strictly"),
    (json.dumps({"t": [0, 0.5, 1], "value": [1, 1]}), "same length"),
    (json.dumps({"t": [0, 0.5, 1], "value": [1, -2, 1]}), "finite and >= 0"),
    (json.dumps({"value": [1, 1]}), "'t' must be a list"),
])
def test_malformed_profile_json_fails_cleanly(content, fragment, existing_run, capsys):
    with open(os.path.join(existing_run, "profile.json"), "w") as f:
        f.write(content)
    _assert_clean_failure(["--gin", SMOKE, "--stages", "split"], fragment, existing_run, capsys)


def test_script_prints_no_traceback_and_exits_nonzero(repo_root, tmp_path):
    proc = subprocess.run([sys.executable, "tools/run.py", "--gin", SMOKE, "--bind", "split.solver = @nope()",
                           "--run-dir", str(tmp_path)], cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error:")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_list_prints_every_kind(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for kind in ("backbone", "monitor", "estimator", "partition", "sampler", "schedule", "dataset", "metric"):
        assert f"{kind}:" in out
    assert "deboor" in out and "de Boor" in out
    for backbone in ("mlp", "sit", "jit", "unet"):
        assert any(line.split()[:1] == [backbone] and "M parameters on" in line for line in out.splitlines())


def test_sweep_runs_a_grid_of_seeds_and_compares_them(tmp_path, repo_root):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "tools/sweep.py", "--gin", SMOKE, "--seeds", "0", "1",
                          "--grid", "split.solver=@uniform(),@deboor()", "--out", str(tmp_path),
                          "--bind", "evaluate.metrics = [@sliced_wasserstein(), @nll()]",
                          "--bind", "nll.n_points = 200", "--bind", "nll.steps = 20"],
                         cwd=repo_root, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    for label in ("solver-uniform", "solver-deboor"):
        for seed in (0, 1):
            run = json.loads((tmp_path / f"{label}-seed{seed}" / "run.json").read_text())
            assert run["seed"] == seed and run["label"] == label
            metrics = load(tmp_path / f"{label}-seed{seed}", "metrics.json")["metrics"]
            assert metrics["nll"]["settings"]["sampling"]["seed"] == seed
    assert (tmp_path / "comparison.md").exists() and (tmp_path / "comparison.png").exists()
    assert "solver-deboor" in out.stdout and "sliced_wasserstein" in out.stdout


def test_checkpoint_estimator_profiles_a_trained_run(finished_run, tmp_path):
    run_dir = str(tmp_path / "reprofile")
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--stages", "profile", "--bind", "profile.estimator = @checkpoint()",
                 "--bind", f"checkpoint.path = '{finished_run}'", "--bind", "checkpoint.backbone = %BACKBONE"]) == 0
    prof = load(run_dir, "profile.json")
    assert prof["estimator"] == "checkpoint" and all(v > 0 for v in prof["value"])


def test_smoother_is_applied_and_raw_values_are_kept(tmp_path):
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--stages", "profile",
                 "--bind", "profile.smoother = @log_moving_average()", "--bind", "log_moving_average.window = 5"]) == 0
    prof = load(tmp_path, "profile.json")
    raw, smooth = np.log(prof["raw_value"]), np.log(prof["value"])
    assert prof["smoother"] == "log_moving_average" and not np.allclose(raw, smooth)
    assert np.abs(np.diff(smooth, 2)).sum() < np.abs(np.diff(raw, 2)).sum()  # smoother curve
    np.testing.assert_allclose(smooth[5], raw[3:8].mean(), rtol=1e-6)  # the geometric mean of its window


def test_shared_initialisation_trains_a_base_network_first(tmp_path, capsys):
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--stages", "profile,split,train",
                 "--bind", "train.shared_init_steps = 15"]) == 0
    base = __import__("torch").load(tmp_path / "checkpoints" / "base.pt", weights_only=True)
    assert base["steps"] == 15 and base["interval"] == [0.0, 1.0]
    assert (tmp_path / "checkpoints" / "train.json").exists()
    expert = __import__("torch").load(tmp_path / "checkpoints" / "segment_0.pt", weights_only=True)
    assert expert["steps"] == 20 and expert["inherited_steps"] == 15  # its own steps, and those it started from


def _copy(run_dir, tmp_path, name="copy"):
    import shutil

    dst = tmp_path / name
    shutil.copytree(run_dir, dst)
    return str(dst)


def _stamp(run_dir):
    """Modification time of every stage artifact, to see which stages ran."""
    names = {"profile": "profile.json", "split": "split.json", "train": "checkpoints/train.json",
             "sample": "sample.json", "evaluate": "metrics.json"}
    return {stage: os.stat(os.path.join(run_dir, f)).st_mtime_ns for stage, f in names.items()}


def test_a_changed_binding_redoes_that_stage_and_everything_after_it(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    before = _stamp(run_dir)
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--bind", "sample.n_steps = 6"]) == 0
    out = capsys.readouterr().out
    assert "[sample] redoing: its settings changed: sample.n_steps 8 -> 6" in out
    after = _stamp(run_dir)
    assert [s for s in before if before[s] != after[s]] == ["sample", "evaluate"]
    assert load(run_dir, "metrics.json")["nfe"] == 12
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--bind", "sample.n_steps = 6"]) == 0
    assert capsys.readouterr().out.count("up to date") == 5 and _stamp(run_dir) == after


def test_no_rerun_refuses_a_stale_stage_and_says_why(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    before = snapshot(run_dir)
    assert main(["--gin", SMOKE, "--bind", "expert/training.lr = 0.01", "--no-rerun", "--run-dir", run_dir]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --no-rerun: train") and "expert/training.lr 0.002 -> 0.01" in err
    assert snapshot(run_dir) == before


def test_sampling_refuses_experts_trained_for_another_split(finished_run, tmp_path, capsys):
    """The audit's case: re-split to N = 2, then sample and evaluate without retraining."""
    run_dir = _copy(finished_run, tmp_path)
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--stages", "split", "--bind", "N_SEGMENTS = 2"]) == 0
    assert len(load(run_dir, "split.json")["boundaries"]) == 3
    capsys.readouterr()
    before = snapshot(run_dir)
    for extra in ([], ["--bind", "N_SEGMENTS = 2"]):
        assert main(["--gin", SMOKE, "--run-dir", run_dir, "--stages", "sample,evaluate", *extra]) == 2
        err = capsys.readouterr().err
        assert "stale split result" in err or "stale train result" in err, err
        assert "--stages split,train,sample,evaluate" in err or "--stages train,sample,evaluate" in err
    assert snapshot(run_dir) == before
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--bind", "N_SEGMENTS = 2", "--rerun"]) == 0
    assert load(run_dir, "checkpoints/train.json")["n_segments"] == 2


def test_loading_experts_checks_each_interval_against_split_json(finished_run, tmp_path):
    from cbsflow.backbones.mlp import mlp
    from cbsflow.data.toy import checkerboard
    from cbsflow.errors import UserError
    from cbsflow.paths import linear
    from cbsflow.segmented import load_segmented

    run_dir = _copy(finished_run, tmp_path)
    split = load(run_dir, "split.json")
    split["boundaries"][1] += 0.01  # as if split.json had been edited by hand after training
    with open(os.path.join(run_dir, "split.json"), "w") as f:
        json.dump(split, f)
    backbone = lambda **kw: mlp(width=32, depth=1, **kw)  # noqa: E731
    with pytest.raises(UserError, match="segment_0.pt was trained for"):
        load_segmented(run_dir, backbone, checkerboard(), linear())
    with pytest.raises(UserError, match="split.json not found"):
        load_segmented(str(tmp_path / "empty"), backbone, checkerboard(), linear())


def test_a_later_stage_on_an_empty_directory_names_what_to_run_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "new"
    assert main(["--gin", SMOKE, "--run-dir", str(run_dir), "--stages", "sample"]) == 2
    err = capsys.readouterr().err
    assert "run it first: --stages profile,split,train,sample" in err
    assert not run_dir.exists()


def test_dry_run_says_what_would_run(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    before = snapshot(run_dir)
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--bind", "expert/training.lr = 0.01", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[split] up to date" in out and "[train] would run: its settings changed: expert/training.lr" in out
    assert "[sample] would run: train is redone first" in out
    assert snapshot(run_dir) == before


def test_readme_example_sequence_in_one_run_directory(finished_run, tmp_path, capsys, repo_root, monkeypatch):
    """The README's commands, in order, each doing what it says (the smoke configuration stands in for quickstart)."""
    import re

    readme = open(os.path.join(repo_root, "README.md")).read()
    code = re.search(r"```python\n(# my_monitors.py\n.*?)```", readme, re.S).group(1)
    (tmp_path / "my_monitors.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = _copy(finished_run, tmp_path, "quickstart")
    first = _stamp(run_dir)
    # --bind 'train.adaptation = None' --run-dir runs/uniform on the quickstart (whose split solver is uniform).
    quick = ["--gin", SMOKE, "--gin", "gin/splits/default.gin"]  # the quickstart's split at the smoke sizes
    assert main([*quick, "--bind", "train.adaptation = None", "--run-dir", str(tmp_path / "uniform")]) == 0
    np.testing.assert_allclose(load(tmp_path / "uniform", "split.json")["boundaries"], [0, 0.25, 0.5, 0.75, 1])
    assert not (tmp_path / "uniform" / "checkpoints" / "adaptation.json").exists()
    # --gin gin/splits/warm_split.gin --import my_monitors --bind 'warm_split.monitor = @my_monitor': the warm split
    # measures the new monitor.
    assert "--gin gin/splits/warm_split.gin --import my_monitors --bind 'warm_split.monitor = @my_monitor'" in readme
    warm = ["--gin", SMOKE, "--gin", "gin/splits/warm_split.gin"]
    assert main([*warm, "--import", "my_monitors", "--bind", "warm_split.monitor = @my_monitor",
                 "--run-dir", str(tmp_path / "mine")]) == 0
    record = load(tmp_path / "mine" / "checkpoints", "adaptation.json")
    assert record["history"][0]["profile"]["monitor"] == "my_monitor"
    assert load(tmp_path / "mine", "split.json")["boundaries"][2] > 0.5  # difficulty near the data end
    # The rest on gin/quickstart_aux.gin, the quickstart with a profile stage (the smoke configuration's base).
    # --stages split --force: the split is redone; the same profile gives the same split, so nothing else is stale.
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--stages", "split", "--force"]) == 0
    assert "[split] done" in capsys.readouterr().out
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("up to date") == 5
    # --import my_monitors --bind 'profile.monitor = @my_monitor': the new monitor, and every stage after it.
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--import", "my_monitors",
                 "--bind", "profile.monitor = @my_monitor", "--rerun"]) == 0
    assert load(run_dir, "profile.json")["monitor"] == "my_monitor"
    last = _stamp(run_dir)
    assert all(last[s] != first[s] for s in first)
    assert load(run_dir, "split.json")["boundaries"] != load(finished_run, "split.json")["boundaries"]
    assert "profile.monitor = @my_monitor" in open(os.path.join(run_dir, "operative_config.gin")).read()


def test_help_shows_examples_and_list_shows_one_components_parameters(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--gin gin/quickstart.gin --dry-run" in out
    assert main(["--list", "deboor"]) == 0
    out = capsys.readouterr().out
    assert "deboor.n_segments = 4" in out and "deboor.exponent = 0.5" in out
    assert main(["--list", "sample"]) == 0
    assert "sample.sampler (required)   [a sampler]" in capsys.readouterr().out


def test_list_shows_the_training_settings(capsys):
    """`training` is a gin configurable of its own (the settings each network is trained with), not a component."""
    assert main(["--list"]) == 0
    assert any(line.split()[:1] == ["training"] for line in capsys.readouterr().out.splitlines())
    assert main(["--list", "training"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("training (settings):") and "training.steps = 1000   [an integer]" in out
    assert "training.t_sampler = None   [a time_sampler]" in out
    assert main(["--list", "trainin"]) == 2
    assert "did you mean training" in capsys.readouterr().err


def test_a_split_that_needs_no_profile_skips_the_profile_stage_and_says_so(tmp_path, capsys):
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--bind", "split.solver = @uniform()",
                 "--bind", "uniform.n_segments = 2"]) == 0
    out = capsys.readouterr().out
    assert "[profile] skipped: split.solver uniform needs no profile" in out
    assert not (tmp_path / "profile.json").exists() and not (tmp_path / "aux").exists()
    assert (tmp_path / "metrics.json").exists()
    # Asked for by name, profile still runs.
    assert main(["--gin", SMOKE, "--run-dir", str(tmp_path), "--bind", "split.solver = @uniform()",
                 "--bind", "uniform.n_segments = 2", "--stages", "profile"]) == 0
    assert (tmp_path / "profile.json").exists()


def test_unset_required_macros_are_named_before_anything_else(tmp_path, capsys):
    """gin/smoke/latent.gin's header names DATA_DIR, VAE_PATH and IMAGES_DIR: all three are reported, in one line."""
    assert main(["--gin", "gin/smoke/latent.gin", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this configuration needs DATA_DIR, VAE_PATH, IMAGES_DIR: add --bind \"DATA_DIR = ...\"")
    assert "profile.estimator" not in err and not (tmp_path / "run").exists()
    # Only what the chosen stages read: training needs the data, not the evaluation's images.
    assert main(["--gin", "gin/smoke/latent.gin", "--run-dir", str(tmp_path / "run"), "--stages", "split,train"]) == 2
    assert "needs DATA_DIR: add" in capsys.readouterr().err


def test_a_launch_that_starts_fewer_processes_than_asked_warns_once(tmp_path, repo_root):
    """`accelerate launch --cpu --num_processes 2` runs one process: one warning line names the form that works."""
    out = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "tools/run.py",
                          "--gin", SMOKE, "--run-dir", str(tmp_path), "--bind", "split.solver = @uniform()",
                          "--stages", "split"], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: accelerate launch asked")]
    assert len(warnings) == 1 and "add --multi_gpu" in warnings[0]


def test_a_change_that_would_retrain_asks_for_rerun_and_says_what_changed(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    before = snapshot(run_dir)
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--bind", "expert/training.steps = 30"]) == 2
    err = capsys.readouterr().err
    assert "this would retrain the experts" in err and "expert/training.steps 20 -> 30" in err and "--rerun" in err
    assert snapshot(run_dir) == before
    stamps = _stamp(run_dir)
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--bind", "expert/training.steps = 30", "--rerun"]) == 0
    assert _stamp(run_dir)["train"] != stamps["train"]


def test_the_run_directory_alone_reruns_its_recorded_settings(finished_run, tmp_path, capsys):
    """operative_config.gin holds every stage's bindings, also after an invocation that ran one stage: --run-dir
    alone (or --gin of that file) finds every stage up to date."""
    run_dir = _copy(finished_run, tmp_path)
    assert main(["--gin", SMOKE, "--run-dir", run_dir, "--stages", "sample", "--force"]) == 0
    record = open(os.path.join(run_dir, "operative_config.gin")).read()
    assert "aux/mlp.time_scale = 5" in record and "expert/training.steps = 20" in record
    capsys.readouterr()
    assert main(["--run-dir", run_dir]) == 0
    out = capsys.readouterr().out
    assert "the run's recorded settings" in out and out.count("up to date") == 5
    assert main(["--gin", os.path.join(run_dir, "operative_config.gin"), "--run-dir", run_dir]) == 0
    assert capsys.readouterr().out.count("up to date") == 5


def test_the_record_keeps_import_modules(tmp_path, monkeypatch, capsys):
    (tmp_path / "rec_monitor.py").write_text(CUSTOM_MONITOR.format(name="rec_bump"))
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = str(tmp_path / "run")
    assert main(["--gin", SMOKE, "--import", "rec_monitor", "--bind", "profile.monitor = @rec_bump",
                 "--stages", "profile,split", "--run-dir", run_dir]) == 0
    assert open(os.path.join(run_dir, "operative_config.gin")).read().startswith("import rec_monitor\n")
    capsys.readouterr()
    assert main(["--run-dir", run_dir, "--stages", "profile,split"]) == 0
    assert capsys.readouterr().out.count("up to date") == 2


def test_a_backbone_that_cannot_be_built_is_one_error_line(tmp_path, capsys, repo_root, monkeypatch):
    """A width the transformer cannot use: exit 2, one line naming the binding to change, no traceback."""
    monkeypatch.chdir(repo_root)
    code = main(["--gin", "gin/smoke/sit.gin", "--bind", "sit.width = 90", "--bind", "split.solver = @uniform()",
                 "--bind", "uniform.n_segments = 2", "--stages", "split,train", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: transformer width 90 must be divisible") and "width = 88" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_a_run_warns_of_no_deprecated_call_and_says_how_many_threads_it_takes(repo_root, tmp_path):
    """The dirichlet monitor's torch.func.jvp made torch script its JVP decompositions, printing torch.jit.script's
    FutureWarning on every run; a CPU run with no OMP_NUM_THREADS picks its thread count and says so."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning", "tools/run.py", "--gin", SMOKE,
                           "--stages", "profile", "--run-dir", str(tmp_path)], cwd=repo_root, capture_output=True,
                          text=True, env={**env, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr[-2000:]
    assert any(line.startswith("threads: ") and "OMP_NUM_THREADS" in line for line in proc.stdout.splitlines())
