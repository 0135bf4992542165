#!/usr/bin/env python
"""What makes a boundary good: where each configuration's capacity goes in t, measured on trained landscape runs.

    python benchmarks/boundary_anatomy.py runs/evidence/landscape/checkerboard [--configs N=1 uniform b=0.600 ...]

For every configuration of a landscape (one network, uniform, each boundary, each solver) and every seed, the
flow-matching loss E ||v(x_t, t) - (x1 - eps)||^2 / d is measured on a grid of t with the same (x1, eps) draws for
all configurations (common random numbers), and reported as the change against one network at the same t, mean
over seeds with a 95 % interval. The loss at t is the irreducible conditional variance (the same for every model)
plus the model's excess error at t, so the paired difference is exactly the change in excess error: negative where
the split gives the network at t more accuracy. Nothing is trained: the runs' checkpoints are loaded (EMA weights).

Writes <landscape>/anatomy.{json,md,png} and prints the table. Each run is rebuilt from its own records
(``cbsflow.load_run``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cbsflow  # noqa: E402
from cbsflow.compare import paired_difference  # noqa: E402


def loss_per_t(model, x1: torch.Tensor, eps: torch.Tensor, ts: np.ndarray) -> np.ndarray:
    """E ||v(x_t, t) - (x1 - eps)||^2 / d at each t (linear path), with the given draws."""
    out = []
    for t in ts:
        tt = torch.full((len(x1),), float(t))
        xt = t * x1 + (1 - t) * eps
        out.append(((model(xt, tt, None) - (x1 - eps)) ** 2).mean().item())
    return np.array(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("landscape", type=Path, help="a tools/landscape.py output folder (with runs/<config>/seed<k>)")
    p.add_argument("--configs", nargs="+", help="configurations to measure (default: every one found)")
    p.add_argument("--n", type=int, default=20_000, help="(x1, eps) draws per t")
    p.add_argument("--grid", type=int, default=20, help="t values (bin centres on [0, 1])")
    args = p.parse_args(argv)
    runs = args.landscape / "runs"
    if not runs.is_dir():
        raise SystemExit(f"error: {runs} not found; give a folder written by tools/landscape.py")
    configs = args.configs or sorted(d.name for d in runs.iterdir() if d.is_dir())
    if "N=1" not in configs:
        configs = ["N=1", *configs]
    seeds = sorted({d.name for c in configs for d in (runs / c).glob("seed*")}, key=lambda s: int(s[4:]))
    ts = (np.arange(args.grid) + 0.5) / args.grid
    torch.set_grad_enabled(False)
    loss, boundaries = {}, {}
    for seed in seeds:
        dataset = cbsflow.load_run(str(runs / "N=1" / seed)).dataset  # rebuilt from the run's own records
        x1, _ = dataset.sample(args.n, seed=10_000 + int(seed[4:]))
        eps = torch.randn(x1.shape, generator=torch.Generator().manual_seed(20_000 + int(seed[4:])))
        for c in configs:
            run = runs / c / seed
            if not (run / "checkpoints" / "train.json").exists():
                continue
            model = cbsflow.load_run(str(run)).model  # EMA weights, as the run sampled
            loss.setdefault(c, {})[seed] = loss_per_t(model, x1.float(), eps, ts)
            boundaries.setdefault(c, []).append(json.loads((run / "split.json").read_text())["boundaries"])
        print(f"{seed}: {len(configs)} configurations measured", flush=True)
    rows = {}
    for c, per_seed in loss.items():
        common = [s for s in per_seed if s in loss["N=1"]]
        diffs = [paired_difference([per_seed[s][i] for s in common], [loss["N=1"][s][i] for s in common])
                 for i in range(len(ts))]
        rows[c] = {"boundaries": np.mean(boundaries[c], axis=0).tolist(),
                   "loss": np.mean([per_seed[s] for s in common], axis=0).tolist(),
                   "change_vs_one": [d.mean for d in diffs], "half_width": [d.half_width for d in diffs]}
    write(args.landscape, ts, rows, seeds, " ".join(sys.argv))
    return 0


def write(out: Path, ts: np.ndarray, rows: dict, seeds: list[str], command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "anatomy.json").write_text(json.dumps({"command": command, "t": ts.tolist(), "seeds": seeds,
                                                  "configs": rows}, indent=1))
    # Table: the change in excess error integrated over t-bands (mean over the band's grid points).
    bands = [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 0.9), (0.9, 1.0)]
    lines = [f"Change of the flow-matching loss against one network, mean over t in each band and over seeds "
             f"({len(seeds)}), x 1e-3 (negative: the split is more accurate there). `{command}`", "",
             "| configuration (boundaries) | " + " | ".join(f"t in [{a}, {b})" for a, b in bands) + " | all t |",
             "|" + "---|" * (len(bands) + 2)]
    for c, r in rows.items():
        ch = np.array(r["change_vs_one"])
        cells = [f"{1e3 * ch[(ts >= a) & (ts < b)].mean():+.2f}" for a, b in bands] + [f"{1e3 * ch.mean():+.2f}"]
        b = ", ".join(f"{x:.2f}" for x in r["boundaries"][1:-1]) or "—"
        lines.append(f"| {c} ({b}) | " + " | ".join(cells) + " |")
    (out / "anatomy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(ts, rows["N=1"]["loss"], "k-", label="N=1")
    for c, r in rows.items():
        if c == "N=1":
            continue
        ch, hw = np.array(r["change_vs_one"]), np.array(r["half_width"])
        line, = ax[1].plot(ts, ch, label=c)
        ax[1].fill_between(ts, ch - hw, ch + hw, color=line.get_color(), alpha=0.15)
        for b in r["boundaries"][1:-1]:
            ax[1].axvline(b, color=line.get_color(), ls=":", lw=0.8)
    ax[0].set(xlabel="t (0 noise, 1 data)", ylabel="flow-matching loss", title="one network: loss per t")
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].set(xlabel="t", ylabel="loss − loss(N=1)", title="where each split gains (95 % band over seeds)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "anatomy.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
