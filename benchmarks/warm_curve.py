"""When does a warm start's lead turn? (issue 37, point 4; exploratory, not a preregistered study.)

The warm split trains one network on all of [0, 1] for a share of the budget and starts every expert from it. A race
at equal cost right at the end of that share (``warm_transfer.pilot = 1``) favoured the warm start on every seed of
study H's plain-MLP board, yet there the warm start ended up worse. This script follows both branches past that
point, one interval at a time, at equal cost: the warm-started expert after j quarters of its own steps against an
expert trained from scratch on the same interval for the same total cost (its share of the shared steps included).
Each comparison is the paired flow-matching loss, warm minus scratch, on fresh draws with t uniform in the interval
(EMA weights, as the experts sample). Below 0: the warm start leads.

    python benchmarks/warm_curve.py                        # the plain MLP on the 4x4 board, seeds 990-993
    python benchmarks/warm_curve.py --seeds 990 --share 0.25

The configuration (data, backbone, path) is read from a finished run of study H (``--like``); the training settings
are ``benchmarks/gin/evidence_toy.gin``'s. Writes benchmarks/results/warm_curve_plain.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from cbsflow import load_run  # noqa: E402
from cbsflow.segmented import Expert, build_network  # noqa: E402
from cbsflow.training import TrainSettings, fit  # noqa: E402
from interval_gap import gap  # noqa: E402  (benchmarks/)

LIKE = "runs/methods_toys/board-plain32x3/runs/uniform/seed300"
SETTINGS = TrainSettings(steps=4000, batch_size=256, lr=2e-3, warmup_steps=100, ema_decay=0.999)  # evidence_toy.gin


def trained(net, parts, interval, steps: int, stop_at: int, seed: int, state: Path):
    """``net`` trained on ``interval`` up to ``stop_at`` of ``steps`` (resumed from ``state``); its EMA field."""
    out = fit(Expert(net, parts["path"]), parts["dataset"], parts["path"], interval,
              dataclasses.replace(SETTINGS, steps=steps), seed=seed, state_dir=str(state), desc=state.name,
              stop_at=stop_at if stop_at < steps else None)
    return (out["ema"] if out["ema"] is not None else Expert(net, parts["path"])).eval()


def one_seed(parts, seed: int, share: float, quarters: int, n_eval: int, root: Path) -> list[dict]:
    """Both branches of both intervals of the uniform N = 2 split, compared at equal cost after each quarter."""
    per_expert = int(round(share * SETTINGS.steps))  # each expert's part of the shared network's steps
    if not 1 <= per_expert < SETTINGS.steps:
        raise SystemExit(f"error: --share {share} of {SETTINGS.steps} steps leaves {per_expert} for the shared network")
    torch.manual_seed(seed)
    shared_net = build_network(parts["backbone"], parts["dataset"])
    shared = trained(shared_net, parts, (0.0, 1.0), 2 * per_expert, 2 * per_expert, seed, root / "shared")
    rest, rows = SETTINGS.steps - per_expert, []
    for k, interval in enumerate([(0.0, 0.5), (0.5, 1.0)]):
        torch.manual_seed(seed + 1 + k)
        warm_net, scratch_net = (build_network(parts["backbone"], parts["dataset"]) for _ in range(2))
        warm_net.load_state_dict(shared.net.state_dict())
        for j in range(quarters + 1):
            own = rest * j // quarters
            warm = shared if j == 0 else trained(warm_net, parts, interval, rest, own, seed, root / f"warm{k}")
            scratch = trained(scratch_net, parts, interval, SETTINGS.steps, per_expert + own, seed + 7,
                              root / f"scratch{k}")
            mean, se = gap(warm, scratch, parts, interval, n_eval, seed * 100 + 10 * k + j)
            rows.append({"seed": seed, "interval": list(interval), "cost": per_expert + own, "warm_own_steps": own,
                         "warm_minus_scratch": mean, "se": se})
            print(f"seed {seed} interval {interval} cost {per_expert + own}: warm − scratch {mean:+.4f} ± "
                  f"{2 * se:.4f}", flush=True)
    return rows


def page(rows: list[dict], args) -> list[str]:
    costs = sorted({r["cost"] for r in rows})
    lines = ["# When does a warm start's lead turn? (exploratory)", "",
             f"`python benchmarks/warm_curve.py --seeds {' '.join(map(str, args.seeds))} --share {args.share} "
             f"--steps {args.steps}`; "
             f"configuration of `{args.like}`; seeds chosen for this script, none of study H's. Paired flow-matching "
             "loss, warm-started expert minus an expert trained from scratch on the same interval for the same cost "
             f"(± 2 s.e., {args.n_eval} fresh draws); below 0: the warm start leads. The first column is the race "
             "of `warm_transfer.pilot = 1` (the shared network itself, at the end of the share).", "",
             "| seed | interval | " + " | ".join(f"cost {c}" for c in costs) + " |", "|---|---|" + "---|" * len(costs)]
    for seed in args.seeds:
        for interval in ([0.0, 0.5], [0.5, 1.0]):
            cells = {r["cost"]: r for r in rows if r["seed"] == seed and r["interval"] == interval}
            lines.append(f"| {seed} | [{interval[0]}, {interval[1]}) | " + " | ".join(
                f"{cells[c]['warm_minus_scratch']:+.4f} ± {2 * cells[c]['se']:.4f}" for c in costs) + " |")
    return lines + [""]


def main(argv=None) -> int:
    global SETTINGS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--like", default=LIKE, help="a finished run whose data, backbone and path to use")
    p.add_argument("--seeds", type=int, nargs="+", default=[990, 991, 992, 993])
    p.add_argument("--share", type=float, default=0.25, help="warm_split.share")
    p.add_argument("--quarters", type=int, default=4)
    p.add_argument("--n-eval", type=int, default=20000)
    p.add_argument("--steps", type=int, default=SETTINGS.steps, help="each expert's steps (evidence_toy.gin: 4000)")
    p.add_argument("--runs", default="runs/warm_curve", help="training states (resumable)")
    p.add_argument("--out", default="benchmarks/results/warm_curve_plain")
    args = p.parse_args(argv)
    if not (REPO / args.like).is_dir():
        print(f"error: --like {args.like}: no such run; run study H's plain-MLP board first "
              "(python benchmarks/run_study.py benchmarks/studies/methods_toys.toml --only board-plain32x3)",
              file=sys.stderr)
        return 2
    SETTINGS = dataclasses.replace(SETTINGS, steps=args.steps, warmup_steps=min(SETTINGS.warmup_steps, args.steps // 4))
    parts = load_run(str(REPO / args.like)).parts
    rows = [r for seed in args.seeds
            for r in one_seed(parts, seed, args.share, args.quarters, args.n_eval, REPO / args.runs / f"seed{seed}")]
    out = REPO / args.out
    out.with_suffix(".md").write_text("\n".join(page(rows, args)))
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
