"""Where in t does one configuration's final field beat another's? (issue 37, point 4.)

For two configurations of a landscape with the same boundaries (e.g. ``warm_uniform`` against ``uniform``: the same
split with and without the warm start), the paired flow-matching loss of their final fields (EMA weights, as they
sample), a minus b, on fresh draws with t uniform in each of ``--intervals``, seed by seed, beside the two runs'
difference in the landscape's primary metric. Read-only: it loads finished runs and trains nothing.

    python benchmarks/interval_gap.py runs/methods_toys/board-plain32x3    # warm_uniform - uniform, seeds 300-305

Writes benchmarks/results/interval_gap_<landscape>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cbsflow import load_run  # noqa: E402
from cbsflow.adaptation import paired_losses  # noqa: E402


def gap(a, b, parts, interval, n: int, seed: int) -> tuple[float, float]:
    """Paired flow-matching loss a − b on n fresh draws with t uniform in ``interval``: mean and its s.e."""
    gen = torch.Generator().manual_seed(seed)
    x1, y = parts["dataset"].sample(n, seed=seed)
    eps = torch.randn(x1.shape, generator=gen)
    t = interval[0] + (interval[1] - interval[0]) * torch.rand(n, generator=gen)
    d = paired_losses([a, b], parts["path"], x1, y, eps, t)
    d = (d[0] - d[1]).double()
    return float(d.mean()), float(d.std() / math.sqrt(n))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("landscape", help="a landscape's --out folder (its runs/<label>/seed<s> and landscape.json)")
    p.add_argument("--a", default="warm_uniform")
    p.add_argument("--b", default="uniform")
    p.add_argument("--intervals", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="edges of the t bins")
    p.add_argument("--n-eval", type=int, default=20000)
    args = p.parse_args(argv)
    root = Path(args.landscape)
    report = json.loads((root / "landscape.json").read_text())
    primary, configs = report["settings"]["primary"], report["summary"]["configs"]
    bins = list(zip(args.intervals, args.intervals[1:]))
    rows = []
    for seed in report["settings"]["seeds"]:
        a, b = (load_run(str(root / "runs" / label / f"seed{seed}")) for label in (args.a, args.b))
        gaps = [gap(a.model, b.model, a.parts, iv, args.n_eval, 7919 * seed + k) for k, iv in enumerate(bins)]
        metric = configs[args.a]["values"][str(seed)][primary] - configs[args.b]["values"][str(seed)][primary]
        rows.append({"seed": seed, "gaps": gaps, primary: metric})
        print(f"seed {seed}: " + ", ".join(f"{m:+.4f}" for m, _ in gaps) + f"; {primary} {metric:+.4f}", flush=True)
    head = " | ".join(f"loss, t in [{lo:g}, {hi:g})" for lo, hi in bins)
    lines = [f"# {args.a} − {args.b} by interval: {root.name}", "",
             f"`python benchmarks/interval_gap.py {args.landscape} --a {args.a} --b {args.b}`: paired flow-matching "
             f"loss of the final fields (± 2 s.e., {args.n_eval} fresh draws per interval) beside the landscape's "
             f"{primary} difference, seed by seed. Below 0: {args.a} is better.", "",
             f"| seed | {head} | {primary} |", "|---|" + "---|" * (len(bins) + 1)]
    for r in rows:
        lines.append(f"| {r['seed']} | " + " | ".join(f"{m:+.4f} ± {2 * se:.4f}" for m, se in r["gaps"])
                     + f" | {r[primary]:+.4f} |")
    out = REPO / "benchmarks" / "results" / f"interval_gap_{root.name}"
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
    print(f"wrote {out.with_suffix('.md').relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
