"""Each split method's wall time against a fixed split's, one run at a time on an otherwise idle machine.

    python benchmarks/method_timing.py --boards board --experts w16d1raw          # every method of the grid
    python benchmarks/method_timing.py --boards board --methods centred_light centred_default moving_mesh warm_split

The landscapes run several processes at once, so their timings do not compare; this runs each method and the uniform
split (seed 0) for each of --experts on the first of --boards, each --repeats times on one thread, and keeps the
fastest repeat per stage (load only slows a run down). Boards, experts and methods are those of the regime grid
(benchmarks/studies/grid.toml). Every expert measured is kept in benchmarks/results/experts_timing.json, replacing its
earlier entry; `python benchmarks/run_study.py benchmarks/studies/grid.toml --report` renders it in experts_grid.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "benchmarks" / "studies" / "grid.toml"
OUT = REPO / "benchmarks" / "results" / "experts_timing.json"
FIXED = "fixed split (uniform)"
PROFILED = ("centred_default", "expert_gap", "centred_light")  # methods with a profile stage


def bindings(axis: dict, name: str) -> list[str]:
    """A grid axis value's bindings (a list, or a table with ``bind``)."""
    value = axis[name]
    return list(value["bind"] if isinstance(value, dict) else value)


def time_run(grid: dict, binds: list[str], items: list[str], stages: str, repeats: int) -> dict[str, float]:
    """The fastest seconds per stage over ``repeats`` runs of tools/run.py."""
    files = [i for i in items if i.endswith(".gin") and "=" not in i]
    own = [i for i in items if i not in files]
    cmd = [sys.executable, "tools/run.py", *[a for f in [*grid["gin"], *files] for a in ("--gin", f)],
           *[a for b in [*binds, *own] for a in ("--bind", b)], "--stages", stages]
    best: dict[str, float] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([*cmd, "--run-dir", tmp], cwd=REPO, check=True, capture_output=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
            for stage, sec in json.loads(Path(tmp, "timings.json").read_text()).items():
                best[stage] = min(sec, best.get(stage, float("inf")))
    return best


def main(argv=None) -> int:
    with open(GRID, "rb") as f:
        grid = tomllib.load(f)
    boards, experts, methods = grid["matrix"]["board"], grid["matrix"]["expert"], grid["solvers"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boards", nargs="+", default=list(boards), choices=list(boards), help="the first is timed")
    p.add_argument("--experts", nargs="+", default=list(experts), choices=list(experts))
    p.add_argument("--methods", nargs="+", default=list(methods), choices=list(methods))
    p.add_argument("--repeats", type=int, default=2, help="runs per configuration (the fastest is kept)")
    args = p.parse_args(argv)
    stored = json.loads(OUT.read_text()) if OUT.exists() else {"regimes": {}}
    for expert in args.experts:
        binds = [*bindings(boards, args.boards[0]), *bindings(experts, expert), *grid["bind"], "N_SEGMENTS = 2"]
        configs = {FIXED: ["split.solver = @uniform()"], **{m: methods[m].split("; ") for m in args.methods}}
        entry = {"regime": f"{args.boards[0]}-{expert}", "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
                 "seconds": {}}
        for name, items in configs.items():
            stages = "profile,split,train" if name in PROFILED else "split,train"
            entry["seconds"][name] = time_run(grid, binds, items, stages, args.repeats)
            print(entry["regime"], name, entry["seconds"][name], flush=True)
        fixed = entry["seconds"][FIXED]["train"]
        entry["extra_vs_fixed"] = {k: round((v.get("profile", 0) + v["train"]) / fixed - 1, 3)
                                   for k, v in entry["seconds"].items()}
        stored["regimes"][entry["regime"]] = entry
        OUT.write_text(json.dumps(stored, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
