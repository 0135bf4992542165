"""The regime grid's report: where the best split sits per board x expert, and every method's held-out regret.

Reads runs/experts/<board>-<expert>/methods.json (the grid with the methods and baselines) or, where the methods
have not run yet, landscape.json; writes benchmarks/results/experts_grid.{md,json,png}. Called as
``python benchmarks/experts_grid.py report``.
"""

from __future__ import annotations

import datetime
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
RESULTS = REPO / "benchmarks" / "results"
PRIMARY = "sliced_wasserstein"
BASELINES = ("N=1", "N1x2steps", "N1x2params")  # one network; trained 2x the steps; ~2x the parameters
PAIRED_AGAINST = "centred_light"  # the paired table's reference: the quickstart's split 2026-12-04 to 2026-12-05


def _timings(run_root: Path, label: str) -> list[dict]:
    out = []
    for seed_dir in sorted((run_root / "runs" / label.replace(" ", "_")).glob("seed*")):
        path = seed_dir / "timings.json"
        train = seed_dir / "checkpoints" / "train.json"
        if path.exists():
            entry = json.loads(path.read_text())
            if train.exists():
                entry["extra_compute"] = json.loads(train.read_text()).get("extra_compute")
            out.append(entry)
    return out


def extra_cost(root: Path, label: str, fixed_train_s: float | None) -> tuple[float | None, float | None]:
    """(extra compute counted in steps or forward passes, when the method records it; extra wall time as a share of
    one fixed-split training: profile + train seconds against the fixed split's train seconds)."""
    times = _timings(root, label)
    counted = [t["extra_compute"] for t in times if t.get("extra_compute") is not None]
    wall = (statistics.median(t.get("profile", 0.0) + t.get("train", 0.0) for t in times) / fixed_train_s - 1
            if times and fixed_train_s else None)  # the fixed split's runs may have been read back, not run here
    return (statistics.median(counted) if counted else None), wall


def regime(root: Path) -> dict | None:
    report = root / "methods.json" if (root / "methods.json").exists() else root / "landscape.json"
    if not report.exists():
        return None
    summary = json.loads(report.read_text())["summary"]
    cfgs, regrets = summary["configs"], summary["regret"][PRIMARY]
    grid = sorted((c["mean_boundaries"][1], c["stats"][PRIMARY][0], c["stats"][PRIMARY][1], label)
                  for label, c in cfgs.items() if c["kind"] in ("grid", "uniform"))
    best = min(grid, key=lambda g: g[1])
    fixed = [t["train"] for t in _timings(root, "uniform")]
    fixed_s = statistics.median(fixed) if fixed else None
    rows = {}
    for label, c in cfgs.items():
        if c["kind"] not in ("uniform", "solver", "single"):
            continue
        r = regrets.get(label)
        counted, wall = extra_cost(root, label, fixed_s) if c["kind"] == "solver" else (None, None)
        rows[label] = {"kind": c["kind"], "boundary": c["mean_boundaries"][1] if len(c["mean_boundaries"]) > 2 else None,
                       "sw": c["stats"][PRIMARY], "regret": r, "extra_counted": counted, "extra_wall": wall,
                       "per_seed": {k: v[PRIMARY] for k, v in c.get("values", {}).items() if PRIMARY in v}}
    u = rows.get("uniform", {}).get("regret")
    for row in rows.values():
        r = row["regret"]
        row["ratio_to_uniform"] = (r["mean"] / u["mean"]) if r and u and u["mean"] > 0 else None
    return {"report": report.name, "method": summary.get("regret_method"), "best_selected": summary["best"][PRIMARY],
            "grid": [{"b": g[0], "sw": g[1], "se": g[2]} for g in grid], "best_all_seeds": best[0], "rows": rows}


def merge_rows(name: str, new: dict, old: dict | None) -> str:
    """Rows (methods, baselines) that an earlier session measured on a regime whose grid was trained again here and
    that this report lacks. They are kept only when the grid came out the same (every mean within 5 % of its
    standard error: the grids retrained on 2026-12-04 agree with those of 2026-12-03 to ~1e-5 in SW, the same seeds
    but not bit for bit) and both reports score against
    the same fixed split; else they are left out, and the line returned says so."""
    missing = sorted(set(old["rows"]) - set(new["rows"])) if old else []
    if not missing:
        return f"{name}: nothing to keep from the earlier report"
    same_grid = [g["b"] for g in old["grid"]] == [g["b"] for g in new["grid"]] and all(
        abs(a["sw"] - b["sw"]) <= 0.05 * min(a["se"], b["se"]) for a, b in zip(old["grid"], new["grid"]))
    if not same_grid or old["best_selected"] != new["best_selected"]:
        why = "its grid differs" if not same_grid else f"it scored against {old['best_selected']}"
        return f"{name}: left out {', '.join(missing)} of the earlier report ({why}, this one against {new['best_selected']})"
    for label in missing:
        new["rows"][label] = {**old["rows"][label], "earlier_session": True}
    return f"{name}: kept {', '.join(missing)} from the earlier report (same grid, same reference split)"


def paired_section(regimes: dict, methods: list[str], reference: str = PAIRED_AGAINST) -> list[str]:
    """Each method against the shipped default, paired by seed over every seed both ran (no split is chosen here, so
    no seed is spent on a selection): mean difference of SW ± its 95 % t-interval; * = resolved."""
    from cbsflow.compare import paired_difference

    others = [m for m in methods if m != reference]
    md = ["", f"## Each method against `{reference}` (the shipped default), paired by seed", "",
          f"SW of the method − SW of `{reference}` on every seed both ran (below 0: the method is better); "
          "**bold** = resolved at 95 %. No split is chosen from these seeds, so none is held out.", "",
          "| " + " | ".join(["regime", *others]) + " |", "|---|" + "---|" * len(others)]
    for name, r in regimes.items():
        ref = r["rows"].get(reference, {}).get("per_seed") or {}
        cells = []
        for m in others:
            mine = r["rows"].get(m, {}).get("per_seed") or {}
            seeds = sorted(set(ref) & set(mine))
            if len(seeds) < 2:
                cells.append("—")
                continue
            d = paired_difference([mine[k] for k in seeds], [ref[k] for k in seeds])
            text = f"{d.mean:+.4f} ± {d.half_width:.4f}"
            cells.append(f"**{text}**" if abs(d.mean) > d.half_width else text)
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    return md


def archive(roots: list[Path]) -> None:
    """Copy each regime's landscape reports (per-seed values; small) next to the results, for --measured later."""
    for root in roots:
        for name in ("landscape.json", "methods.json"):
            if (root / name).exists():
                dest = RESULTS / "experts" / f"{root.name}-{name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes((root / name).read_bytes())


def fmt_regret(r: dict | None) -> str:
    if not r:
        return "—"
    text = f"{r['mean']:+.4f} ± {r['half_width']:.4f}"
    return f"**{text}**" if r["resolved"] else text


def plot(regimes: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boards = sorted({k.split("-")[0] for k in regimes})
    fig, axes = plt.subplots(1, len(boards), figsize=(5 * len(boards), 3.8), squeeze=False)
    for ax, board in zip(axes[0], boards):
        experts = sorted({k.split("-", 1)[1] for k in regimes})  # one colour per expert in every panel
        for name, reg in sorted((k, v) for k, v in regimes.items() if k.startswith(board + "-")):
            i = experts.index(name.split("-", 1)[1])
            xs = [g["b"] for g in reg["grid"]]
            uni = next(g["sw"] for g in reg["grid"] if abs(g["b"] - 0.5) < 1e-9)
            ys = [g["sw"] / uni for g in reg["grid"]]
            ax.plot(xs, ys, "o-", color=f"C{i}", label=name.split("-", 1)[1], ms=3)
            ax.plot([reg["best_all_seeds"]], [min(ys)], "*", color=f"C{i}", ms=12)
            default = reg["rows"].get("centred_default")
            if default and default["boundary"] is not None:
                ax.axvline(default["boundary"], color=f"C{i}", ls=":", lw=1)
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_title(f"{board}: SW / uniform's (star: best; dotted: centred default)", fontsize=8)
        ax.set_xlabel("boundary")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args=None) -> int:
    boards = ("board-", "board_late-", "board_early-")
    roots = sorted(p for p in (REPO / "runs" / "experts").glob("*-*") if p.is_dir() and p.name.startswith(boards))
    regimes = {p.name: r for p in roots if (r := regime(p)) is not None}
    archive(roots)
    stored = RESULTS / "experts_grid.json"
    if stored.exists():  # regimes measured by an earlier session whose runs this machine does not have
        earlier = json.loads(stored.read_text())
        kept = {k: v for k, v in earlier.items() if k not in regimes}
        if kept:
            print(f"kept from {stored.relative_to(REPO)} (no runs here): {', '.join(sorted(kept))}")
        for name, r in regimes.items():
            print(merge_rows(name, r, earlier.get(name)))
        regimes = dict(sorted({**regimes, **kept}.items()))
    if not regimes:
        print("no regime report under runs/experts/; run `python benchmarks/experts_grid.py grid` first")
        return 1
    methods = sorted({label for r in regimes.values() for label, row in r["rows"].items() if row["kind"] == "solver"})
    md = ["# Regime grid over experts (N = 2)", "",
          f"{datetime.date.today().isoformat()}; `python benchmarks/experts_grid.py grid`, then `methods`, then `report`."
          " Boards: the 4×4 checkerboard (`board`), at half its scale (`board_late`: squares form late) and twice"
          " (`board_early`). Experts: MLP width × depth, sinusoidal time embedding, or `raw`: t as an input. 4,000"
          " steps of batch 256 per expert; 5 paired seeds; boundaries 0.2–0.8; SW on 20,000 samples.", "",
          f"Regret: {next(iter(regimes.values()))['method']}, against the best *fixed* split (a grid point or uniform;"
          " never a method's split, so below 0 = better than every fixed split); **bold** = resolved at 95 %; † = kept"
          " from an earlier session's report of the same grid and reference split. Ratio = a method's regret /"
          " uniform's (the target is ≤ 1/3). Extra compute: counted (steps or forward passes, as the method records it)"
          " / wall time (profile + training against the fixed split's training, median over seeds).", "",
          "## Where the best split sits", "", "| regime | best boundary (mean SW, all seeds) | SW best | SW uniform |"
          " SW N=1 | centred default's boundary |", "|---|---|---|---|---|---|"]
    for name, r in regimes.items():
        best = min(r["grid"], key=lambda g: g["sw"])
        uni = next(g for g in r["grid"] if abs(g["b"] - 0.5) < 1e-9)
        one = r["rows"].get("N=1", {}).get("sw")
        default = r["rows"].get("centred_default", {}).get("boundary")
        md.append(f"| {name} | {best['b']:.1f} | {best['sw']:.4f} ± {best['se']:.4f} | {uni['sw']:.4f} ± "
                  f"{uni['se']:.4f} | {one[0]:.4f} | {'—' if default is None else f'{default:.2f}'} |")
    md += ["", "## Held-out regret on SW", "",
           "| " + " | ".join(["regime", "uniform", *methods, *BASELINES]) + " |",
           "|---|" + "---|" * (1 + len(methods) + len(BASELINES))]
    for name, r in regimes.items():
        cells = [fmt_regret(r["rows"].get("uniform", {}).get("regret"))]
        for m in methods:
            row = r["rows"].get(m)
            if not row:
                cells.append("—")
                continue
            ratio = "" if row["ratio_to_uniform"] is None else f" ({row['ratio_to_uniform']:.2f}×)"
            b = "" if row["boundary"] is None else f" @ {row['boundary']:.2f}"
            cells.append(fmt_regret(row["regret"]) + ratio + b + (" †" if row.get("earlier_session") else ""))
        cells += [fmt_regret(r["rows"].get(bl, {}).get("regret"))
                  + (" †" if r["rows"].get(bl, {}).get("earlier_session") else "") for bl in BASELINES]
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    md += ["", "## Each method across the regimes", "", "| method | regimes | ratio ≤ 1/3 (of the regimes where "
           "uniform's regret > 0) | resolved worse than the best fixed split | median extra compute "
           "(counted / wall in the landscape, several runs at once) |", "|---|---|---|---|---|"]
    for m in methods:
        rows = [r["rows"][m] for r in regimes.values() if m in r["rows"]]
        eligible = [row for row in rows if row["ratio_to_uniform"] is not None]
        good = sum(1 for row in eligible if row["ratio_to_uniform"] <= 1 / 3)
        worse = sum(1 for row in rows if row["regret"] and row["regret"]["resolved"] and row["regret"]["mean"] > 0)
        counted = [row["extra_counted"] for row in rows if row["extra_counted"] is not None]
        wall = [row["extra_wall"] for row in rows if row["extra_wall"] is not None]
        counted_text = f"{statistics.median(counted) * 100:.1f} %" if counted else "n/a"
        wall_text = f"{statistics.median(wall) * 100:.0f} %" if wall else "n/a"
        md.append(f"| {m} | {len(rows)} | {good} of {len(eligible)} | {worse} of {len(rows)} | {counted_text} / "
                  f"{wall_text} |")
    md += paired_section(regimes, methods)
    timing = RESULTS / "experts_timing.json"
    if timing.exists():
        runs = json.loads(timing.read_text())["regimes"]
        md += ["", "Wall time of one run at a time, one thread, seed 0 (`python benchmarks/experts_grid.py timing "
               "--boards board --experts ... --methods ...`; the fastest of `repeats` runs per stage), profile + "
               "training against the fixed split's training (extra), and the profile alone against it (profile share: "
               "the method trains the same steps, so this is its counted extra):", "",
               "| regime | date | method | profile s | train s | extra | profile share |", "|---|---|---|---|---|---|---|"]
        for key, t in runs.items():
            for name, sec in t["seconds"].items():
                md.append(f"| {key} | {t['date']} (×{t.get('repeats', 1)}) | {name} | {sec.get('profile', 0):.1f} | "
                          f"{sec['train']:.1f} | {t['extra_vs_fixed'][name] * 100:+.0f} % | "
                          f"{sec.get('profile', 0) / t['seconds']['fixed split (uniform)']['train'] * 100:.0f} % |")
    md += ["", "Uniform's regret near 0 (the best split is close to 0.5) makes the ratio meaningless there; such rows",
           "count as meeting the target only if the method's regret is ≤ 1/3 of uniform's all the same.", "",
           "![regime grid](experts_grid.png)"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "experts_grid.md").write_text("\n".join(md) + "\n")
    (RESULTS / "experts_grid.json").write_text(json.dumps(regimes, indent=1) + "\n")
    plot(regimes, RESULTS / "experts_grid.png")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
