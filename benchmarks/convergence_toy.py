#!/usr/bin/env python
"""Diagnostic: how far from converged is the single network of splits_toy.py? SW of N = 1 against training steps.

    python benchmarks/convergence_toy.py [--lib-commit REV] [--out benchmarks/results]

Same settings as benchmarks/splits_toy.py (FULL) except expert/training.steps (and, in the last rows, a wider
network); seed 0 only, N = 1. Writes OUT/convergence_toy.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import splits_toy as st  # noqa: E402

DATASETS = ("checkerboard", "eight_gaussians", "rings", "moons")
VARIANTS = (  # (name, extra bindings)
    ("steps800", {"expert/training.steps": "800"}),
    ("steps3200", {"expert/training.steps": "3200"}),
    ("steps12800", {"expert/training.steps": "12800"}),
    ("steps3200-w128d3", {"expert/training.steps": "3200", "mlp.width": "128", "mlp.depth": "3"}),
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="results folder (default benchmarks/results)")
    p.add_argument("--lib-commit", metavar="REV")
    args = p.parse_args(argv)
    start = time.time()
    ctx = st.make_context(argparse.Namespace(quick=False, root=None, out=args.out, datasets=None, seeds=[0],
                                             lib_commit=args.lib_commit))
    ctx["root"] = ctx["root"].parent / "convergence_toy"
    rows = []
    for name, extra in VARIANTS:
        for dataset in DATASETS:
            vctx = dict(ctx, settings=dict(st.FULL, **extra), root=ctx["root"] / name)
            run_dir = st.ensure_run(vctx, dataset, 0, "N1-uniform", 1, "uniform")
            rows.append({"variant": name, "bindings": extra, "dataset": dataset, **st.result_of(run_dir)})
    ctx["out"].mkdir(parents=True, exist_ok=True)
    lines = [f"# Diagnostic: N = 1 sliced Wasserstein against training steps (seed 0)", "",
             f"- command: `{ctx['command']}`", f"- date (UTC): {ctx['date']}; wall time {(time.time() - start) / 60:.1f} min",
             f"- machine: {ctx['machine']}", f"- library: {ctx['library']}",
             "- settings: those of splits_toy.md (" + "; ".join(f"`{k} = {v}`" for k, v in st.FULL.items())
             + ") except the bindings named per row", "",
             "| variant | " + " | ".join(DATASETS) + " |", "|---|" + "---|" * len(DATASETS)]
    for name, extra in VARIANTS:
        sw = [r["sw"] for r in rows if r["variant"] == name]
        lines.append(f"| {', '.join(f'{k} = {v}' for k, v in extra.items())} | " + " | ".join(f"{v:.4f}" for v in sw) + " |")
    (ctx["out"] / "convergence_toy.md").write_text("\n".join(lines) + "\n")
    st._write(ctx["out"] / "convergence_toy.json", {"command": ctx["command"], "date": ctx["date"], "rows": rows})
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
