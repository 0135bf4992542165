"""More paired seeds on one regime of the grid, to resolve what 5 seeds cannot: is the centred default worse than
uniform there, and is another split method better than the centred default (issue 20, point 3)?

    python benchmarks/experts_more_seeds.py --regime board_early-w16d2 --seeds 0 1 2 ... 14
        # runs/experts_more/<regime>/landscape.json, then
        # benchmarks/results/experts_more_seeds.{md,json} (one section per regime, kept across calls)

Only one network, uniform and the methods run (tools/landscape.py --boundaries with no value); the 5 seeds the grid
measured are read back from its archived report (benchmarks/results/experts/<regime>-methods.json), so only the new
seeds train. No split is chosen from these seeds (every comparison is between two fixed configurations or methods),
so every seed scores: each figure is a paired difference over all seeds with its 95 % t-interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from benchinfo import machine_record  # noqa: E402
from experts_grid import BOARDS, EXPERTS, GIN, METHODS, METRICS  # noqa: E402

from cbsflow import landscape as ls  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
METRIC_NAMES = ("sliced_wasserstein", "mmd", "nll")


def measure(regime: str, seeds: list[str], methods: list[str], jobs: int) -> Path:
    board, expert = regime.split("-", 1)
    out = REPO / "runs" / "experts_more" / regime
    cmd = [sys.executable, "tools/landscape.py", "--gin", GIN, "--n", "2", "--boundaries", "--seeds", *seeds,
           "--primary", "sliced_wasserstein", "--out", str(out), "--jobs", str(jobs)]
    for b in BOARDS[board] + EXPERTS[expert] + [f"evaluate.metrics = {METRICS}"]:
        cmd += ["--bind", b]
    for m in methods:
        cmd += ["--solver", f"{m}=" + "; ".join(METHODS[m])]
    mine = out / "landscape.json"  # this machine's, else an earlier session's (more seeds), else the grid's
    report = next((r for r in (mine, RESULTS / "experts" / f"{regime}-more-landscape.json",
                               RESULTS / "experts" / f"{regime}-methods.json") if r.exists()), None)
    if report is not None:
        cmd += ["--measured", str(report)]
    print("$ " + shlex.join(cmd), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return mine


def _fmt(r) -> str:
    if r is None:
        return "—"
    text = f"{r.mean:+.4f} ± {r.half_width:.4f}"
    return f"**{text} ({r.direction})**" if r.resolved else text


def summarise(regime: str, report: Path, methods: list[str]) -> tuple[list[str], dict]:
    data = json.loads(report.read_text())
    configs, seeds = data["summary"]["configs"], data["settings"]["seeds"]
    results = {label: ls.Measured(values={int(s): v for s, v in c["values"].items()},
                                  boundaries={int(s): b for s, b in c["boundaries"].items()})
               for label, c in configs.items()}
    labels = ["N=1", "uniform", *methods]
    out = {"seeds": seeds, "report": os.path.relpath(report, REPO), "mean": {}, "pairs": {}}
    md = [f"## {regime}", "", f"`{os.path.relpath(report, REPO)}`; {len(seeds)} paired seeds {seeds}; every figure"
          " a paired difference over all of them (first − second; below 0: the first is better), 95 % t-interval;"
          " **bold** = resolved.", "",
          "| configuration | boundary (mean) | " + " | ".join(METRIC_NAMES) + " |", "|---|---|" + "---|" * len(METRIC_NAMES)]
    for label in labels:
        b = configs[label]["mean_boundaries"]
        stats = {m: ls.mean_se(results[label].metric(m, seeds)) for m in METRIC_NAMES}
        out["mean"][label] = {"boundary": b, **{m: [s.mean, s.se] for m, s in stats.items()}}
        md.append(f"| {label} | {', '.join(f'{v:.3f}' for v in b[1:-1]) or '—'} | "
                  + " | ".join(f"{s.mean:.4f} ± {s.se:.4f}" for s in stats.values()) + " |")
    pairs = [(m, "uniform") for m in methods] + [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
    md += ["", "| first − second | " + " | ".join(METRIC_NAMES) + " |", "|---|" + "---|" * len(METRIC_NAMES)]
    for a, b in pairs:
        regrets = {m: ls.regret(results, a, b, m, seeds) for m in METRIC_NAMES}
        out["pairs"][f"{a} - {b}"] = {m: dataclasses.asdict(r) if r else None for m, r in regrets.items()}
        md.append(f"| {a} − {b} | " + " | ".join(_fmt(r) for r in regrets.values()) + " |")
    return md + [""], out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--regime", default="board_early-w16d2")
    p.add_argument("--seeds", nargs="+", default=[str(s) for s in range(15)])
    p.add_argument("--methods", nargs="+", default=["centred_default", "centred_light", "warm_split"],
                   choices=list(METHODS))
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    board, expert = args.regime.split("-", 1)
    if board not in BOARDS or expert not in EXPERTS:
        print(f"error: --regime {args.regime!r}: expected BOARD-EXPERT with BOARD in {list(BOARDS)} and EXPERT in "
              f"{list(EXPERTS)}", file=sys.stderr)
        return 2
    report = measure(args.regime, args.seeds, args.methods, args.jobs)
    md, out = summarise(args.regime, report, args.methods)
    stored_json = RESULTS / "experts_more_seeds.json"
    stored = json.loads(stored_json.read_text()) if stored_json.exists() else {"regimes": {}}
    stored["regimes"][args.regime] = {**out, "markdown": md}
    stored["machine"] = machine_record()
    stored_json.write_text(json.dumps(stored, indent=1) + "\n")
    sections = [line for entry in stored["regimes"].values() for line in entry["markdown"]]
    # The landscape report itself, so that a later session (a fresh clone) can add seeds with --measured.
    (RESULTS / "experts" / f"{args.regime}-more-landscape.json").write_bytes(report.read_bytes())
    head = ["# More paired seeds on the grid's regimes", "",
            "`python benchmarks/experts_more_seeds.py --regime REGIME --seeds ...` (2 CPU cores; see its docstring)."
            " Boards and experts as in `benchmarks/results/experts_grid.md`: 4,000 steps of batch 256 per expert.", ""]
    (RESULTS / "experts_more_seeds.md").write_text("\n".join(head + sections))
    print("\n".join(head + sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
