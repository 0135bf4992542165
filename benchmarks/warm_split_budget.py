"""How many monitor evaluations the warm split needs: its boundary and the monitor's time against the sample budget.

Reads the shared networks (checkpoints/warm_base.pt) that the digits landscapes of benchmarks/studies/beyond.toml
trained for their warm_split configuration, measures the centred Dirichlet energy (4 probes) on each at several
(n_points, n_samples) budgets on one thread, and writes benchmarks/results/warm_split_budget.{md,json}:

    python benchmarks/warm_split_budget.py                 # digits x tiny UNet and tiny SiT, seeds 0-4
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import cbsflow.api as api  # noqa: E402
from cbsflow.adaptation import warm_split  # noqa: E402
from cbsflow.monitors import dirichlet  # noqa: E402
from cbsflow.partition import deboor  # noqa: E402
from cbsflow.segmented import Expert, build_network  # noqa: E402

BUDGETS = [(32, 512), (32, 256), (32, 128), (16, 128), (16, 64)]  # (n_points, n_samples); the first is the default
RESULTS = REPO / "benchmarks" / "results"


def measure(run_dir: Path, seed: int) -> list[dict]:
    run = api.load_run(str(run_dir))
    parts = api._components()  # the same gin configuration load_run parsed: the experts' backbone
    net = build_network(parts["backbone"], run.dataset)
    net.load_state_dict(torch.load(run_dir / "checkpoints" / "warm_base.pt", weights_only=True)["state_dict"])
    field = Expert(net, run.path).eval()
    job = SimpleNamespace(dataset=run.dataset, path=run.path, seed=seed)
    out = []
    for n_points, n_samples in BUDGETS:
        ws = warm_split(monitor=dirichlet(centred=True, n_probes=4, progress=False), n_points=n_points,
                        n_samples=n_samples)
        tic = time.perf_counter()
        t, value, _ = ws.profile(field, job)
        seconds = time.perf_counter() - tic
        b = deboor(n_segments=2, exponent=0.5)(t, value)
        out.append({"n_points": n_points, "n_samples": n_samples, "boundary": float(b[1]), "seconds": seconds})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experts", nargs="+", default=["unetT", "sitT"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results, md = {}, ["# Warm split: the monitor's sample budget", "",
                       f"{datetime.date.today().isoformat()}; `python benchmarks/warm_split_budget.py` (one thread). "
                       "Boundary (N = 2, de Boor, exponent 1/2) from the centred Dirichlet energy of each seed's "
                       "shared network; shift = its largest difference from the default budget's over the seeds.", ""]
    for expert in args.experts:
        root = REPO / "runs" / "experts" / f"digits-{expert}" / "runs" / "warm_split"
        per_seed = {s: measure(root / f"seed{s}", s) for s in args.seeds if (root / f"seed{s}").exists()}
        if not per_seed:
            print(f"{expert}: no warm_split runs under {root.relative_to(REPO)}; run the digits landscapes of "
                  "benchmarks/studies/beyond.toml first (without --report)")
            continue
        results[expert] = per_seed
        md += [f"## digits × tiny {expert[:-1].upper()}", "",
               "| n_points × n_samples | JVPs (4 probes) | mean boundary | largest shift | median seconds |",
               "|---|---|---|---|---|"]
        for i, (n_points, n_samples) in enumerate(BUDGETS):
            rows = [v[i] for v in per_seed.values()]
            shift = max(abs(r["boundary"] - v[0]["boundary"]) for r, v in zip(rows, per_seed.values()))
            secs = sorted(r["seconds"] for r in rows)[len(rows) // 2]
            mean_b = sum(r["boundary"] for r in rows) / len(rows)
            md.append(f"| {n_points} × {n_samples} | {4 * n_points * n_samples:,} | {mean_b:.3f} | {shift:.3f} | "
                      f"{secs:.1f} |")
        md.append("")
        print("\n".join(md[-len(BUDGETS) - 4:]), flush=True)
    if not results:
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "warm_split_budget.md").write_text("\n".join(md) + "\n")
    (RESULTS / "warm_split_budget.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
