"""Split landscapes: best split, regret, metric agreement, search moves (pure), and tools/landscape.py end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cbsflow import landscape as ls
from cbsflow import landscape_report as report


def measured(per_seed: dict[int, dict[str, float]], boundaries=None) -> ls.Measured:
    m = ls.Measured()
    m.values = per_seed
    m.boundaries = {s: boundaries for s in per_seed} if boundaries else {}
    return m


SEEDS = [0, 1, 2]
RESULTS = {
    "N=1": measured({s: {"sw": 1.0 + 0.01 * s, "nll": 1.0, "precision": 0.5} for s in SEEDS}),
    "uniform": measured({s: {"sw": 0.6 + 0.01 * s, "nll": 1.2, "precision": 0.7} for s in SEEDS}),
    "b=0.700": measured({s: {"sw": 0.5 + 0.01 * s + 0.002 * (s == 1), "nll": 1.3, "precision": 0.8} for s in SEEDS}),
}


def test_best_split_and_regret_are_oriented_per_metric():
    splits = ["uniform", "b=0.700"]
    assert ls.best_config(RESULTS, "sw", SEEDS, splits) == "b=0.700"
    assert ls.best_config(RESULTS, "nll", SEEDS, splits) == "uniform"
    assert ls.best_config(RESULTS, "precision", SEEDS, splits) == "b=0.700"  # higher is better
    r = ls.regret(RESULTS, "uniform", "b=0.700", "sw", SEEDS)
    assert r.mean == pytest.approx(0.1 - 0.002 / 3) and r.resolved and r.n == 3
    r = ls.regret(RESULTS, "uniform", "b=0.700", "precision", SEEDS)
    assert r.mean == pytest.approx(0.1) and r.half_width == 0  # identical differences: zero-width interval
    assert ls.regret(RESULTS, "b=0.700", "b=0.700", "sw", SEEDS).mean == 0


def _equal_configs(rng, k: int, seeds: int) -> dict:
    """k configurations of equal true quality: a shared seed effect plus independent noise."""
    vals = 2 * rng.standard_normal(seeds)[None, :] + rng.standard_normal((k, seeds))
    return {f"c{i}": measured({s: {"m": float(vals[i, s])} for s in range(seeds)}) for i in range(k)}


def test_held_out_regret_resolves_equal_configurations_at_the_nominal_rate():
    """10 configurations of equal quality, 6 paired seeds, 3000 repeats: choosing the best and scoring the regret
    on the same seeds calls a given one "resolved worse" far above the nominal 2.5 % and gives it a positive mean
    regret; choosing on half the seeds and scoring on the other half does neither."""
    rng = np.random.default_rng(0)
    seeds, in_sample, held_out, either, means = list(range(6)), 0, 0, 0, []
    select = ls.default_selection(seeds)
    assert select == [0, 1, 2]
    for _ in range(3000):
        results = _equal_configs(rng, 10, 6)
        labels = list(results)
        best = ls.best_config(results, "m", seeds, labels)
        in_sample += best != "c0" and ls.regret(results, "c0", best, "m", seeds).worse
        r, _ = ls.held_out_regret(results, "c0", "m", seeds, labels, select)
        held_out += r.worse
        either += r.resolved
        means.append(r.mean)
        assert r.n == 3 and "scored on seeds [3, 4, 5]" in r.method
    assert in_sample / 3000 > 0.08
    assert held_out / 3000 < 0.035 and abs(np.mean(means)) < 0.05
    assert either / 3000 < 0.065  # two-sided: resolved better or worse, nominally 5 %


@pytest.mark.parametrize("diffs, direction", [([0.10, 0.11, 0.12], "worse"), ([-0.10, -0.11, -0.12], "better"),
                                              ([-0.1, 0.1, 0.01], None)])
def test_a_regret_is_resolved_when_its_interval_excludes_zero_on_either_side(diffs, direction):
    """docs/math.md: "resolved" means the interval excludes 0 -- better than the best fixed split as well as worse."""
    results = {"a": measured({s: {"sw": 1.0 + d} for s, d in enumerate(diffs)}),
               "best": measured({s: {"sw": 1.0} for s in range(3)})}
    r = ls.regret(results, "a", "best", "sw", SEEDS)
    assert r.direction == direction and r.resolved == (direction is not None)
    assert (r.better, r.worse) == (direction == "better", direction == "worse")


def test_fewer_than_four_seeds_give_an_in_sample_regret_labelled_as_such():
    assert ls.default_selection([0, 1, 2]) is None
    assert "in-sample" in ls.regret(RESULTS, "uniform", "b=0.700", "sw", SEEDS).method


def test_rankings_and_their_disagreements():
    order = ls.rankings(RESULTS, ["sw", "nll", "precision"], SEEDS, ["N=1", "uniform", "b=0.700"])
    assert order["sw"] == ["b=0.700", "uniform", "N=1"] and order["nll"] == ["N=1", "uniform", "b=0.700"]
    notes = ls.disagreements(order, "sw")
    assert any("nll ranks N=1 best" in n for n in notes) and any("opposite order" in n for n in notes)
    assert not any(n.startswith("precision") for n in notes)
    assert ls.kendall_tau(order["sw"], order["nll"]) == -1 and ls.kendall_tau(order["sw"], order["precision"]) == 1


def test_interpolation_and_search_moves():
    assert ls.interpolate([0.1, 0.5, 0.3], [1.0, 3.0, 2.0], 0.4) == pytest.approx(2.5)
    assert ls.interpolate([0.1, 0.5], [1.0, 3.0], 0.9) == 3.0  # flat beyond the measured range
    moves = ls.neighbours((0.0, 0.25, 0.5, 0.75, 1.0), 0.1, min_gap=0.02)
    assert len(moves) == 6 and (0.0, 0.35, 0.5, 0.75, 1.0) in moves and (0.0, 0.25, 0.5, 0.65, 1.0) in moves
    assert ls.neighbours((0.0, 0.05, 1.0), 0.1, min_gap=0.02) == [(0.0, 0.15, 1.0)]  # 0.05 - 0.1 < 0.02: not a move
    assert ls.split_label((0.0, 1.0)) == "N=1" and ls.split_label((0.0, 0.25, 1.0)) == "b=0.250"


def test_landscape_tool_end_to_end(tmp_path, repo_root):
    """Two seeds, one swept boundary, one solver: runs, regret table, plot, and a resumed second call."""
    out = tmp_path / "landscape"
    cmd = [sys.executable, "tools/landscape.py", "--gin", "gin/smoke/toy.gin", "--n", "2", "--seeds", "0", "1",
           "--boundaries", "0.3", "--solver", "cbs=split.solver = @deboor()", "--out", str(out),
           "--baseline", "wide=mlp.width = 48",
           "--bind", "evaluate.metrics = [@sliced_wasserstein(), @precision_recall(), @nll()]",
           "--bind", "evaluate.floor_draws = 0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "landscape.json").read_text())["summary"]
    assert set(report["configs"]) == {"N=1", "uniform", "b=0.300", "cbs", "wide"}
    assert report["configs"]["wide"]["kind"] == "single"
    assert set(report["metrics"]) == {"sliced_wasserstein", "precision", "recall", "nll"}
    cbs = report["configs"]["cbs"]
    assert cbs["kind"] == "solver" and len(cbs["boundaries"]["0"]) == 3
    assert report["best"]["sliced_wasserstein"] in {"uniform", "b=0.300"}  # a fixed split, never the solver's
    for label, r in report["regret"]["sliced_wasserstein"].items():
        assert r["n"] == 2 and (r["mean"] >= 0 or label in ("N=1", "cbs", "wide"))
    md = (out / "landscape.md").read_text()
    assert "## Regret against the best fixed split" in md and "Kendall's tau" in md
    assert (out / "landscape.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "experts").glob("*.pt"))) == 2 * (1 + 2 + 2 + 2 + 1)  # seeds x experts of the 5 configs
    again = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0
    log = (out / "runs" / "b=0.300" / "seed0" / "landscape.log").read_text()
    assert log.count("up to date") >= 4  # the second call found every stage done

    # --measured: another solver scored on this landscape without running its grid again.
    scored = tmp_path / "scored"
    solver = "e1=split.solver = @deboor(); deboor.exponent = 1.0"
    rescore = list(cmd)
    rescore[cmd.index("--solver") + 1], rescore[cmd.index("--out") + 1] = solver, str(scored)
    rescore += ["--interpolate", "--measured", str(out / "landscape.json")]
    proc = subprocess.run(rescore, cwd=repo_root, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # only the solver's profile and split ran: the baseline of the same name and bindings is read back too
    assert sorted(p.name for p in (scored / "runs").iterdir()) == ["e1"]
    new = json.loads((scored / "landscape.json").read_text())["summary"]["configs"]
    for label in ("N=1", "uniform", "b=0.300", "wide"):
        assert new[label]["values"] == report["configs"][label]["values"]
    for seed in ("0", "1"):
        b = new["e1"]["boundaries"][seed][1]
        grid = [(0.3, report["configs"]["b=0.300"]["values"][seed]), (0.5, report["configs"]["uniform"]["values"][seed])]
        expected = ls.interpolate([g[0] for g in grid], [g[1]["sliced_wasserstein"] for g in grid], b)
        assert new["e1"]["values"][seed]["sliced_wasserstein"] == pytest.approx(expected)
    again = list(rescore)  # a solver the report already scored is read from it too: nothing runs
    again[rescore.index("--out") + 1], again[rescore.index("--measured") + 1] = str(tmp_path / "again"), str(
        scored / "landscape.json")
    proc = subprocess.run(again, cwd=repo_root, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and not (tmp_path / "again" / "runs").exists(), proc.stderr[-2000:]
    assert json.loads((tmp_path / "again" / "landscape.json").read_text())["summary"]["configs"]["e1"] == new["e1"]
    other = [*rescore, "--bind", "evaluate.floor_draws = 1"]
    bad = subprocess.run(other, cwd=repo_root, capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "its bind is" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

    # --boundaries with no value: a paired comparison of N = 1, uniform and the solvers only (here all read back).
    compare = [*cmd[:cmd.index("--boundaries") + 1], *cmd[cmd.index("--boundaries") + 2:]]
    compare[compare.index("--out") + 1] = str(tmp_path / "compare")
    proc = subprocess.run([*compare, "--measured", str(out / "landscape.json")], cwd=repo_root, capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0 and not (tmp_path / "compare" / "runs").exists(), proc.stderr[-2000:]
    assert set(json.loads((tmp_path / "compare" / "landscape.json").read_text())["summary"]["configs"]) == {
        "N=1", "uniform", "cbs", "wide"}
    bad = subprocess.run([*compare, "--interpolate"], cwd=repo_root, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "give --boundaries" in bad.stderr


def test_search_shares_experts_whose_interval_did_not_change(tmp_path, repo_root):
    """N = 3: a move of one boundary retrains the two experts next to it; the third comes from the expert cache."""
    out = tmp_path / "search"
    cmd = [sys.executable, "tools/landscape.py", "--gin", "gin/smoke/toy.gin", "--n", "3", "--seeds", "0",
           "--search-steps", "0.1", "--max-evals", "1", "--out", str(out),
           "--bind", "evaluate.metrics = [@sliced_wasserstein()]", "--bind", "evaluate.floor_draws = 0"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "landscape.json").read_text())["summary"]
    moved = [label for label, c in report["configs"].items() if c["kind"] == "search"]
    assert len(moved) == 1
    b = report["configs"][moved[0]]["mean_boundaries"]
    assert np.allclose(b, [0, 1 / 3 + 0.1, 2 / 3, 1], atol=1e-6)
    log = (out / "runs" / moved[0] / "seed0" / "landscape.log").read_text()
    assert "expert 3/3 is complete, skipped" in log and "expert 1/3 is complete" not in log  # shared, not retrained
    # --measured: the same search replays from the report, running nothing.
    replay = [*cmd[:cmd.index("--out")], "--out", str(tmp_path / "replay"), *cmd[cmd.index("--out") + 2:],
              "--measured", str(out / "landscape.json")]
    proc = subprocess.run(replay, cwd=repo_root, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0 and not (tmp_path / "replay" / "runs").exists(), proc.stderr[-2000:]
    again = json.loads((tmp_path / "replay" / "landscape.json").read_text())["summary"]
    assert again["configs"] == report["configs"] and again["best"] == report["best"]
    # --measured with a seed the report lacks: seed 0 is read back, only seed 1 runs (a landscape extended in seeds).
    more = [*replay[:replay.index("--seeds") + 2], "1", *replay[replay.index("--seeds") + 2:]]
    more[more.index("--out") + 1] = str(tmp_path / "more")
    proc = subprocess.run(more, cwd=repo_root, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ran = sorted(d.name for d in (tmp_path / "more" / "runs").glob("*/seed*"))
    assert ran and set(ran) == {"seed1"}
    extended = json.loads((tmp_path / "more" / "landscape.json").read_text())["summary"]["configs"]
    for label, c in report["configs"].items():
        assert extended[label]["values"]["0"] == c["values"]["0"] and set(extended[label]["values"]) == {"0", "1"}


def test_parallel_runs_are_forked_and_match_serial_ones(tmp_path, repo_root):
    """--jobs 2 runs each configuration in a child forked from a warm server (cbsflow/workers.py): the same numbers
    as --jobs 1 in one process, no per-run figures unless --figures, and a failing run is that run's failure."""
    cmd = [sys.executable, "tools/landscape.py", "--gin", "gin/smoke/toy.gin", "--n", "2", "--boundaries", "--seeds",
           "0", "--solver", "cbs=split.solver = @deboor()", "--bind", "evaluate.metrics = [@sliced_wasserstein()]",
           "--bind", "evaluate.floor_draws = 0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    configs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        proc = subprocess.run([*cmd, "--out", str(out), "--jobs", jobs], cwd=repo_root, capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        configs[jobs] = json.loads((out / "landscape.json").read_text())["summary"]["configs"]
        run = out / "runs" / "cbs" / "seed0"
        assert (run / "metrics.json").exists() and not list(run.glob("*.png"))
        assert "[evaluate] done" in (run / "landscape.log").read_text()  # the child's output went to its log
    for label in ("N=1", "uniform", "cbs"):
        assert configs["2"][label]["values"] == configs["1"][label]["values"]
        assert configs["2"][label]["boundaries"] == configs["1"][label]["boundaries"]

    bad = tmp_path / "bad"
    proc = subprocess.run([*cmd, "--out", str(bad), "--jobs", "2", "--figures", "--bind", "sample.n_steps = 0"],
                          cwd=repo_root, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    log = (bad / "runs" / "uniform" / "seed0" / "landscape.log").read_text()
    assert "sample: n_steps, n_samples and batch_size must be >= 1" in log
    assert (bad / "runs" / "cbs" / "seed0" / "profile.png").exists()  # --figures: each run draws its own


def test_fixed_splits_stay_fixed_where_the_configuration_ships_a_moving_split(tmp_path, repo_root):
    """On a configuration whose train.adaptation moves the boundaries (here the warm split), N = 1, uniform
    and the grid are trained where the landscape puts them; only the solver (the configured method) moves."""
    cmd = [sys.executable, "tools/landscape.py", "--gin", "gin/smoke/toy.gin", "--gin", "gin/splits/warm_split.gin",
           "--n", "2", "--boundaries", "0.3", "--seeds", "0", "--solver", "warm=warm_split.n_samples = 64",
           "--bind", "evaluate.metrics = [@sliced_wasserstein()]", "--bind", "evaluate.floor_draws = 0",
           "--out", str(tmp_path), "--jobs", "1"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    configs = json.loads((tmp_path / "landscape.json").read_text())["summary"]["configs"]
    assert configs["uniform"]["boundaries"]["0"] == [0.0, 0.5, 1.0]
    assert configs["b=0.300"]["boundaries"]["0"] == [0.0, 0.3, 1.0]
    assert not (tmp_path / "runs" / "b=0.300" / "seed0" / "checkpoints" / "adaptation.json").exists()
    warm = tmp_path / "runs" / "warm" / "seed0"
    assert json.loads((warm / "split.json").read_text())["adapted_by"] == "warm_split"
    assert configs["warm"]["boundaries"]["0"][1] != 0.5


def test_the_best_is_a_fixed_split_so_a_solvers_regret_ignores_the_other_solvers():
    """A solver better than every fixed split has a negative regret (it is never the reference), and adding another
    solver to the report leaves the first one's regret as it was."""
    import types

    seeds = [0, 1, 2, 3]
    sw = {"N=1": 0.9, "uniform": 0.5, "b=0.300": 0.6, "good": 0.4, "better": 0.3}  # plus a small seed effect
    kinds = {"N=1": "single", "uniform": "uniform", "b=0.300": "grid", "good": "solver", "better": "solver"}

    def summary(labels):
        configs = {k: ls.Config(k, kinds[k], None) for k in labels}
        results = {k: ls.Measured(values={s: {"sliced_wasserstein": sw[k] + 0.01 * s} for s in seeds},
                                  boundaries={s: [0.0, 0.5, 1.0] for s in seeds}) for k in labels}
        runner = types.SimpleNamespace(args=types.SimpleNamespace(seeds=seeds, select_seeds=None,
                                                                  primary="sliced_wasserstein"),
                                       configs=configs, results=results)
        return report.summarise(runner)

    one = summary(["N=1", "uniform", "b=0.300", "good"])
    both = summary(["N=1", "uniform", "b=0.300", "good", "better"])
    for s in (one, both):
        assert s["best"]["sliced_wasserstein"] == "uniform"
        assert s["regret"]["sliced_wasserstein"]["good"]["mean"] == pytest.approx(-0.1)
        assert s["regret"]["sliced_wasserstein"]["uniform"]["mean"] == pytest.approx(0.0)
    assert both["regret"]["sliced_wasserstein"]["better"]["mean"] == pytest.approx(-0.2)


def test_the_shared_caches_key_on_the_code_too(tmp_path, monkeypatch):
    """An edit of cbsflow or of an --import module changes the digest the shared profiles and experts are keyed on."""
    module = tmp_path / "my_monitor_mod.py"
    module.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before, plain = ls.source_digest(["my_monitor_mod"]), ls.source_digest()
    assert before != plain and ls.source_digest(["my_monitor_mod"]) == before
    module.write_text("X = 2\n")
    assert ls.source_digest(["my_monitor_mod"]) != before and ls.source_digest() == plain


def _descendants(pid: int) -> set[int]:
    """Every live process below pid (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_stop_the_landscape_and_its_workers(sig, tmp_path, repo_root):
    """--jobs 2: a signal to tools/landscape.py stops every run in flight (no orphans) and exits 130 with one line."""
    import signal
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, "tools/landscape.py", "--gin", "gin/smoke/toy.gin", "--n", "2", "--boundaries", "0.3", "0.7",
           "--seeds", "0", "1", "--jobs", "2", "--out", str(out), "--bind", "expert/training.steps = 100000",
           "--bind", "evaluate.metrics = [@sliced_wasserstein()]"]
    cmd.insert(1, "-Xfaulthandler")  # SIGABRT then prints every thread's stack: what a hang waits on
    # A shell starts a background job (`pytest ... &`) with SIGINT ignored, and an ignored signal stays ignored in
    # every child, where Python then installs no Ctrl-C handler: the landscape would rightly not hear it. The user's
    # Ctrl-C reaches a foreground process, so the landscape starts as one would.
    proc = subprocess.Popen(cmd, cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("runs/*/seed*/checkpoints/segment_0")):
        time.sleep(0.2)  # a run is training
    below = _descendants(proc.pid)
    assert below, "no worker started"
    proc.send_signal(getattr(signal, sig))
    try:
        stdout, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # say what it hung on: the process tree and every thread's stack
        mine = {proc.pid} | below | _descendants(proc.pid)
        tree = "\n".join(line for line in subprocess.run(["ps", "-e", "-o", "pid=,ppid=,stat=,etime=,args="],
                                                        capture_output=True, text=True).stdout.splitlines()
                         if int(line.split()[0]) in mine)
        exited = proc.poll()  # not None: the landscape exited, and something below it holds its pipes open
        if exited is None:
            proc.send_signal(signal.SIGABRT)
        for p in mine - {proc.pid}:
            subprocess.run(["kill", "-9", str(p)], capture_output=True)
        _, err = proc.communicate(timeout=30)
        logs = "".join(f"--- {f}\n{f.read_text()[-1500:]}" for f in out.glob("runs/*/seed*/landscape.log"))
        raise AssertionError(f"no exit 120 s after {sig} (landscape exit code then: {exited})\n{tree}\n"
                             f"{err[-6000:]}\n{logs}")
    assert proc.returncode == 130 and "landscape.py: stopped" in err and "Traceback" not in err, err[-2000:]
    assert "FAILED" not in stdout, stdout  # the runs stopped, and those never started, are not failures
    time.sleep(0.5)
    assert not [p for p in below if os.path.exists(f"/proc/{p}") and
                open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]


def test_the_verdict_line_says_better_worse_or_not_resolved_per_metric():
    assert ls.verdict(RESULTS, "b=0.700", "uniform", ["sw", "nll", "precision"], SEEDS) == \
        "better on sw, precision; worse on nll"
    noisy = {"a": measured({0: {"m": 1.0}, 1: {"m": 2.0}, 2: {"m": 0.5}}),
             "b": measured({0: {"m": 1.1}, 1: {"m": 1.0}, 2: {"m": 1.2}})}
    assert ls.verdict(noisy, "a", "b", ["m"], SEEDS) == "not resolved on m"


def test_a_solver_whose_boundary_never_moves_is_reported_and_drawn(tmp_path):
    """Regression: 3 seeds at 0.7 average to 0.6999999999999998 < min, and matplotlib refused the negative error bar
    after the report was written (ValueError: 'xerr' must not contain negative values). The report also marks a
    resolved regret better as well as worse, each said in words."""
    import types

    sw = {"N=1": 0.9, "uniform": 0.5, "b=0.300": 0.6, "w0.7": 0.4}
    kinds = {"N=1": "single", "uniform": "uniform", "b=0.300": "grid", "w0.7": "solver"}
    bounds = {"N=1": [0.0, 1.0], "uniform": [0.0, 0.5, 1.0], "b=0.300": [0.0, 0.3, 1.0], "w0.7": [0.0, 0.7, 1.0]}
    configs = {k: ls.Config(k, kinds[k], None) for k in sw}
    results = {k: ls.Measured(values={s: {"sliced_wasserstein": sw[k] + 0.01 * s + 0.001 * (s == 1)} for s in SEEDS},
                              boundaries={s: bounds[k] for s in SEEDS}) for k in sw}
    args = types.SimpleNamespace(seeds=SEEDS, select_seeds=None, primary="sliced_wasserstein", n=2, gin=["g.gin"],
                                 bind=[], interpolate=False)
    runner = types.SimpleNamespace(args=args, configs=configs, results=results, failures=[])
    summary = report.summarise(runner)
    assert summary["configs"]["w0.7"]["mean_boundaries"][1] < 0.7  # the rounding that broke the plot
    report.plot(runner, summary, tmp_path / "l.png")
    assert (tmp_path / "l.png").stat().st_size > 0
    report.write_markdown(runner, summary, tmp_path / "l.md", "python tools/landscape.py")
    text = (tmp_path / "l.md").read_text()
    assert "| w0.7 | **-0.1 ± 0 (better)** |" in text and "| b=0.300 | **+0.1 ± 0 (worse)** |" in text, text


def test_the_warm_search_moves_the_warm_started_splits_and_replays(tmp_path, repo_root):
    """--search-warm: after the scratch search, the same moves over the warm split's shared start (solvers wb...,
    never the scratch reference), starting at the warm-started uniform split; --measured replays them."""
    out = tmp_path / "warm"
    cmd = [sys.executable, "tools/landscape.py", "--gin", "gin/smoke/toy.gin", "--n", "3", "--seeds", "0",
           "--search-steps", "0.1", "--max-evals", "1", "--search-warm", "--out", str(out),
           "--bind", "evaluate.metrics = [@sliced_wasserstein()]", "--bind", "evaluate.floor_draws = 0"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    configs = json.loads((out / "landscape.json").read_text())["summary"]["configs"]
    warm = {label: c for label, c in configs.items() if label.startswith("wb")}
    assert len(warm) == 2 and all(c["kind"] == "solver" for c in warm.values())
    start = configs[f"wb{1 / 3:g},{2 / 3:g}"]
    assert np.allclose(start["mean_boundaries"], [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    moved = next(c for label, c in warm.items() if c is not start)
    assert np.allclose(moved["mean_boundaries"], [0, 1 / 3 + 0.1, 2 / 3, 1], atol=1e-6)
    log = (out / "runs" / f"wb{1 / 3:g},{2 / 3:g}" / "seed0" / "landscape.log").read_text()
    assert "warm" in log  # trained through the warm split, not as a fixed split from scratch
    replay = [*cmd[:cmd.index("--out")], "--out", str(tmp_path / "replay"), *cmd[cmd.index("--out") + 2:],
              "--measured", str(out / "landscape.json")]
    proc = subprocess.run(replay, cwd=repo_root, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0 and not (tmp_path / "replay" / "runs").exists(), proc.stderr[-2000:]


def test_a_read_back_run_under_another_configuration_is_refused(tmp_path, repo_root):
    """--measured compares each read-back run's recorded train-configuration digest with the one this code gives its
    bindings: a mismatch (a default changed since the report) stops with one line; a report without digests is
    read back with one line saying it is unchecked."""
    out = tmp_path / "first"
    cmd = [sys.executable, "tools/landscape.py", "--gin", "gin/smoke/toy.gin", "--n", "2", "--seeds", "0",
           "--boundaries", "--out", str(out), "--bind", "evaluate.metrics = [@sliced_wasserstein()]",
           "--bind", "evaluate.floor_draws = 0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    assert subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600, env=env).returncode == 0
    report = json.loads((out / "landscape.json").read_text())
    assert all(c["digests"]["0"] for c in report["summary"]["configs"].values())
    for name, change in (("changed", "0123456789abcdef"), ("old", None)):
        edited = json.loads(json.dumps(report))
        for c in edited["summary"]["configs"].values():
            if change is None:
                del c["digests"]
            else:
                c["digests"]["0"] = change
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(edited))
        again = [*cmd[:cmd.index("--out")], "--out", str(tmp_path / name), *cmd[cmd.index("--out") + 2:],
                 "--measured", str(path)]
        proc = subprocess.run(again, cwd=repo_root, capture_output=True, text=True, timeout=600, env=env)
        if change is None:
            assert proc.returncode == 0 and proc.stdout.count("record no configuration digest") == 1
        else:
            assert proc.returncode != 0 and "another train configuration" in proc.stderr
            assert "Traceback" not in proc.stderr and not (tmp_path / name / "runs").exists()


def test_every_registered_score_where_higher_is_better_is_known_as_such():
    """The Inception-Score-like metrics rank higher as better (a missed name once marked a better IS 'worse')."""
    from cbsflow.landscape import higher_is_better

    for name in ("classifier_is", "isc", "precision", "recall"):
        assert higher_is_better(name), name
    for name in ("classifier_fd", "fd_randconv", "bpd", "nll", "sliced_wasserstein", "mmd"):
        assert not higher_is_better(name), name
