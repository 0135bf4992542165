"""The regime grid over experts: N = 2 landscapes on three boards x four expert architectures (issue 20, point 1).

Boards: the 4x4 checkerboard, the same at half its scale (its squares form late in t) and at twice its scale (they
form early). Experts: 16x1 MLPs with the sinusoidal time embedding (the evidence's default), 32x1 (width), 16x2
(depth), 16x1 seeing t as a raw input (`mlp.time_input = 'raw'`) and 32x3 raw (the expert of the issue's
counter-example). Every landscape: boundaries 0.2, ..., 0.8, the
uniform split, one network, 5 paired seeds, 4,000 steps per expert (benchmarks/gin/evidence_toy.gin).

    python benchmarks/experts_grid.py grid                  # runs/experts/<board>-<expert>/landscape.json
    python benchmarks/experts_grid.py methods               # adds the split methods, reading the grid (--measured)
                                                            # where a report of it is on record, else training it
    python benchmarks/experts_grid.py timing --boards board --experts w16d1raw   # wall time, one run at a time
    python benchmarks/experts_grid.py timing --boards board --methods centred_light centred_default  # every expert
    python benchmarks/experts_grid.py report                # benchmarks/results/experts_grid.{md,json,png}

`report` keeps the regimes stored in benchmarks/results/experts_grid.json that this machine's runs/experts/ lacks
(a fresh clone has no runs), and copies every landscape report it reads to benchmarks/results/experts/, so that a
later session can add a method to a regime with `--measured` instead of training its grid again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIN = "benchmarks/gin/evidence_toy.gin"
ROOT = Path("runs/experts")
SEEDS = ["0", "1", "2", "3", "4"]
BOUNDARIES = ["0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8"]
METRICS = "[@sliced_wasserstein(), @mmd(), @nll()]"
BOARDS = {
    "board": ["DATASET = @checkerboard()"],
    "board_late": ["DATASET = @checkerboard()", "checkerboard.scale = 0.5"],
    "board_early": ["DATASET = @checkerboard()", "checkerboard.scale = 2.0"],
}
EXPERTS = {
    "w16d1": ["mlp.width = 16", "mlp.depth = 1"],
    "w32d1": ["mlp.width = 32", "mlp.depth = 1"],
    "w16d2": ["mlp.width = 16", "mlp.depth = 2"],
    "w16d1raw": ["mlp.width = 16", "mlp.depth = 1", "mlp.time_input = 'raw'"],
    # the expert of the counter-example: three layers of width 32, t as a raw input
    "w32d3raw": ["mlp.width = 32", "mlp.depth = 3", "mlp.time_input = 'raw'"],
}
# One network with about twice an expert's parameters (widths found by counting parameters, the time embedding
# included): the fair "one network" of point 6, beside one network trained twice as long.
WIDE = {"w16d1": 29, "w32d1": 54, "w16d2": 28, "w16d1raw": 24, "w32d3raw": 46}
STEPS = 4000  # per expert (benchmarks/gin/evidence_toy.gin)
# Split methods scored on the grid: name -> the bindings that select it (see docs/math.md).
METHODS = {
    "centred_default": ["dirichlet.centred = True", "deboor.exponent = 0.5"],  # the shipped default of 2026-12-02
    "moving_mesh": ["gin/splits/moving_mesh.gin"],
    "successive_halving": ["gin/splits/successive_halving.gin"],
    "expert_gap": ["gin/splits/expert_gap.gin"],
    "sh_metric": ["gin/splits/successive_halving_metric.gin"],  # successive halving ranked by SW of samples
    "centred_light": ["gin/splits/centred_light.gin"],  # the default's profile at about a fifth of its cost
    "warm_split": ["gin/splits/warm_split.gin"],  # the experts' own shared start, split by its field (no aux net)
    "warm_uniform": ["gin/splits/warm_uniform.gin"],  # the same warm start on the uniform split (its control)
}
PROFILED = ("centred_default", "expert_gap", "centred_light")  # methods with a profile stage
_RUNNING: list[subprocess.Popen] = []


def landscape(out: Path, bindings: list[str], extra: list[str], parallel: int, name: str) -> None:
    cmd = [sys.executable, "tools/landscape.py", "--gin", GIN, "--seeds", *SEEDS, "--out", str(out), "--jobs", "1",
           "--name", name, "--n", "2", "--primary", "sliced_wasserstein"]
    cmd += [a for b in bindings for a in ("--bind", b)] + extra
    print("$ " + shlex.join(cmd), flush=True)
    while len(_RUNNING) >= parallel:
        _RUNNING.pop(0).wait()
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / f"{name}.log", "w")
    _RUNNING.append(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"}))


def regimes(args):
    pairs = ([r.split("-", 1) for r in args.regimes] if args.regimes
             else [(board, expert) for expert in args.experts for board in args.boards])
    for board, expert in pairs:
        yield board, expert, BOARDS[board] + EXPERTS[expert] + [f"evaluate.metrics = {METRICS}"]


def run_grid(args) -> None:
    for board, expert, binds in regimes(args):
        landscape(ROOT / f"{board}-{expert}", binds, ["--boundaries", *BOUNDARIES], args.jobs, "landscape")


def on_record(report: Path | None) -> list[str]:
    """The methods of METHODS a landscape report measured with the bindings METHODS gives them now."""
    if report is None:
        return []
    configs = json.loads(report.read_text())["summary"]["configs"]
    out = []
    for method, items in METHODS.items():
        files = [i for i in items if i.endswith(".gin")]
        c = configs.get(method, {})
        if c.get("kind") == "solver" and c.get("gin_files", []) == files and c.get("bindings", []) == [
                i for i in items if i not in files]:
            out.append(method)
    return out


def run_methods(args) -> None:
    for board, expert, binds in regimes(args):
        out = ROOT / f"{board}-{expert}"
        # The grid (and any method or baseline measured before) from a report: this machine's grid, else the one
        # `report` archived (methods first: it holds the methods too); with none, the grid trains in this call.
        # Runs already in this regime's folder are reused either way.
        archived = REPO / "benchmarks" / "results" / "experts"
        reports = [out / "landscape.json", archived / f"{board}-{expert}-methods.json",
                   archived / f"{board}-{expert}-landscape.json"]
        extra = ["--boundaries", *BOUNDARIES]
        report = next((r for r in reports if r.exists()), None)
        extra += ["--measured", str(report)] if report else []
        # The methods on record there come along (read back, not run again), so the new report keeps them.
        for method in [*args.methods, *(m for m in on_record(report) if m not in args.methods)]:
            extra += ["--solver", f"{method}=" + "; ".join(METHODS[method])]
        if args.baselines:
            extra += ["--baseline", f"N1x2steps=expert/training.steps = {2 * STEPS}",
                      "--baseline", f"N1x2params=mlp.width = {WIDE[expert]}"]
        landscape(out, binds, extra, args.jobs, "methods")


def run_timing(args) -> None:
    """Each method's wall time against a fixed split's, measured one run at a time on an otherwise idle machine
    (the landscapes run several processes at once, so their timings do not compare): seed 0, for each of --experts on
    the first of --boards, each configuration --repeats times (the fastest repeat per stage is kept: load only slows a
    run down). Every expert measured is kept in benchmarks/results/experts_timing.json, replacing its earlier entry."""
    import tempfile
    import time

    board = args.boards[0]
    path = REPO / "benchmarks" / "results" / "experts_timing.json"
    stored = json.loads(path.read_text()) if path.exists() else {"regimes": {}}
    for expert in args.experts:
        binds = BOARDS[board] + EXPERTS[expert] + [f"evaluate.metrics = {METRICS}", "N_SEGMENTS = 2"]
        configs = {"fixed split (uniform)": ["split.solver = @uniform()"],
                   **{m: METHODS[m] for m in args.methods}}
        out = {"regime": f"{board}-{expert}", "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
               "seconds": {}}
        for name, items in configs.items():
            files = [i for i in items if i.endswith(".gin")]
            cmd = [sys.executable, "tools/run.py", "--gin", GIN, *[a for f in files for a in ("--gin", f)],
                   *[a for b in binds + [i for i in items if i not in files] for a in ("--bind", b)],
                   "--stages", "profile,split,train" if name in PROFILED else "split,train"]
            best: dict[str, float] = {}
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    subprocess.run(cmd + ["--run-dir", tmp], cwd=REPO, check=True, capture_output=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
                    for stage, sec in json.loads(Path(tmp, "timings.json").read_text()).items():
                        best[stage] = min(sec, best.get(stage, float("inf")))
            out["seconds"][name] = best
            print(out["regime"], name, best, flush=True)
        fixed = out["seconds"]["fixed split (uniform)"]["train"]
        out["extra_vs_fixed"] = {k: round((v.get("profile", 0) + v["train"]) / fixed - 1, 3)
                                 for k, v in out["seconds"].items()}
        stored["regimes"][out["regime"]] = out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=1) + "\n")
        print(json.dumps(out["extra_vs_fixed"], indent=1), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["grid", "methods", "timing", "report"])
    p.add_argument("--boards", nargs="+", default=list(BOARDS), choices=list(BOARDS))
    p.add_argument("--experts", nargs="+", default=list(EXPERTS), choices=list(EXPERTS))
    p.add_argument("--regimes", nargs="+", metavar="BOARD-EXPERT",
                   choices=[f"{b}-{e}" for b in BOARDS for e in EXPERTS],
                   help="these regimes, in this order (instead of --boards x --experts)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="methods: leave out the one-network baselines with 2x steps and 2x parameters")
    p.add_argument("--repeats", type=int, default=2, help="timing: runs per configuration (the fastest is kept)")
    p.add_argument("--jobs", type=int, default=2, help="landscapes at a time (each runs one run at a time)")
    args = p.parse_args(argv)
    if args.what == "report":
        sys.path.insert(0, str(REPO / "benchmarks"))
        from experts_report import main as report

        return report(args)
    {"grid": run_grid, "methods": run_methods, "timing": run_timing}[args.what](args)
    while _RUNNING:
        _RUNNING.pop(0).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
