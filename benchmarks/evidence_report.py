#!/usr/bin/env python
"""Collect Evidence II from the landscape reports under runs/evidence/ into benchmarks/results/evidence.{md,json}
and figures (each dataset's landscape plot, one figure of every N = 2 landscape).

    python benchmarks/evidence_report.py          # or: python benchmarks/evidence.py report
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cbsflow.landscape import higher_is_better  # noqa: E402

ROOT = REPO / "runs" / "evidence"
OUT = REPO / "benchmarks" / "results"
SECONDARY = "nll"
DEFAULT_SOLVER = "dirichlet_centred@e0.5"  # the shipped default: aux-net centred Dirichlet energy, exponent 1/2
PREVIOUS_DEFAULT = "dirichlet@e0.5"  # the default before this evidence: the plain (uncentred) Dirichlet energy


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def stat(summary: dict, label: str, metric: str) -> str:
    s = summary["configs"].get(label, {}).get("stats", {}).get(metric)
    return "—" if not s else f"{fmt(s[0], 4)} ± {fmt(s[1], 2)}"


def regret_cell(summary: dict, metric: str, label: str) -> tuple[str, dict | None]:
    r = summary["regret"].get(metric, {}).get(label)
    if r is None:
        return "—", None
    text = f"{r['mean']:+.3g} ± {fmt(r['half_width'], 2)}"
    return (f"**{text}**" if r["resolved"] else text), r


def primary_of(report: dict) -> str:
    return report["settings"]["primary"]


def where_it_matters(reports: dict[str, dict], trained: dict[str, dict]) -> list[str]:
    """N = 1, uniform-2 and the best N = 2 split, with paired differences of the best against both, and of the shipped
    and the previous default's trained splits against uniform (from the landscape, else the dataset's trained report)."""
    lines = ["| regime | primary | N = 1 | uniform-2 | best-2 (boundary) | best − N = 1 | best − uniform | "
             f"CBS default (boundary) − uniform | previous default (boundary) − uniform | "
             f"{SECONDARY}: N = 1 / uniform / best-2 ({SECONDARY}'s best boundary) |",
             "|" + "---|" * 10]
    for name, report in reports.items():
        s, m = report["summary"], primary_of(report)
        best = s["best"].get(m)
        if best is None:
            continue
        b = s["configs"][best]["mean_boundaries"][1:-1]
        vs_one = paired(report, best, "N=1", m)
        vs_uniform = paired(report, best, "uniform", m)
        nll_best = s["best"].get(SECONDARY)
        nll_text = "—"
        if nll_best:
            nb = ", ".join(f"{x:.2f}" for x in s["configs"][nll_best]["mean_boundaries"][1:-1])
            nll_text = (f"{stat(s, 'N=1', SECONDARY)} / {stat(s, 'uniform', SECONDARY)} / "
                        f"{stat(s, nll_best, SECONDARY)} ({nb})")
        cells = []
        for label in (DEFAULT_SOLVER, PREVIOUS_DEFAULT):
            src = next((r for r in (report, trained.get(name)) if r and label in r["summary"]["configs"]), None)
            if src is None:
                cells.append("—")
                continue
            cb = src["summary"]["configs"][label]["mean_boundaries"][1:-1]
            cells.append(f"{paired(src, label, 'uniform', m)} ({', '.join(f'{x:.2f}' for x in cb)})")
        lines.append(f"| {name} | {m} | {stat(s, 'N=1', m)} | {stat(s, 'uniform', m)} | {stat(s, best, m)} "
                     f"({', '.join(f'{x:.2f}' for x in b)}) | {vs_one} | {vs_uniform} | {' | '.join(cells)} | "
                     f"{nll_text} |")
    return lines


def paired(report: dict, a: str, b: str, metric: str) -> str:
    """a - b, paired by seed, with its 95 % interval (from the per-seed values in the report)."""
    configs = report["summary"]["configs"]
    if a not in configs or b not in configs:
        return "—"
    seeds = sorted(configs[a]["values"], key=int)
    return paired_text([configs[a]["values"][s][metric] for s in seeds],
                       [configs[b]["values"][s][metric] for s in seeds])


def paired_text(va: list[float], vb: list[float]) -> str:
    """mean [interval] of the paired differences va - vb, bold when the 95 % interval excludes 0."""
    from cbsflow.compare import paired_difference

    d = paired_difference(va, vb)
    text = f"{d.mean:+.3g} [{d.mean - d.half_width:+.3g}, {d.mean + d.half_width:+.3g}]"
    return f"**{text}**" if d.n >= 2 and (d.mean - d.half_width > 0 or d.mean + d.half_width < 0) else text


def landscape_table(name: str, report: dict) -> list[str]:
    s = report["summary"]
    metrics = s["metrics"]
    lines = [f"**{name}** (`{report['command']}`)", "",
             "| split | " + " | ".join(f"{m} ({'↑' if higher_is_better(m) else '↓'})" for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    rows = sorted(s["configs"].items(), key=lambda kv: (kv[1]["kind"] == "solver", kv[1]["mean_boundaries"][1:2]))
    for label, c in rows:
        b = ", ".join(f"{x:.3f}" for x in c["mean_boundaries"][1:-1]) or "one network"
        tag = f"{label}: {b}" if c["kind"] in ("solver", "uniform") else b
        cells = []
        for m in metrics:
            cell = stat(s, label, m)
            cells.append(f"**{cell}**" if s["best"].get(m) == label else cell)
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {d}" for d in s.get("disagreements", [])]
    taus = s.get("kendall_tau_vs_primary", {})
    if taus:
        lines.append("- Kendall's tau against the primary metric's ranking: " +
                     ", ".join(f"{m} {fmt(t, 2)}" for m, t in taus.items() if m != primary_of(report)))
    return lines + [""]


def regret_table(variants: dict[str, dict], landscapes: dict[str, dict]) -> list[str]:
    """Rows: uniform, the default solver trained, every variant (interpolated); columns: datasets; primary metric."""
    names = list(variants)
    lines = ["| solver | " + " | ".join(f"{n} ({primary_of(variants[n])})" for n in names) + " | ≤ 1/3 of uniform's |",
             "|" + "---|" * (len(names) + 2)]
    labels = []
    for report in variants.values():
        labels += [lbl for lbl, c in report["summary"]["configs"].items() if c["kind"] == "solver" and lbl not in labels]
    for label in ["uniform", *labels]:
        cells, wins = [], 0
        for n in names:
            s, m = variants[n]["summary"], primary_of(variants[n])
            text, r = regret_cell(s, m, label)
            u = s["regret"].get(m, {}).get("uniform")
            if r is not None and u is not None and label != "uniform" and r["mean"] <= u["mean"] / 3:
                wins += 1
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + ("—" if label == "uniform" else f"{wins}/{len(names)}")
                     + " |")
    return lines


def confirm_table(name: str, report: dict) -> list[str]:
    """Paired differences of every trained split (the solvers' and the grid's) against uniform and against N = 1, on
    every metric -- the check of a landscape's best splits with more seeds."""
    s = report["summary"]
    metrics, configs = s["metrics"], s["configs"]
    seeds = sorted(configs["uniform"]["values"], key=int)
    lines = [f"**{name}**, {len(seeds)} paired seeds (`{report['command']}`); bold: the 95 % interval excludes 0", "",
             "| difference | " + " | ".join(f"{m} ({'↑' if higher_is_better(m) else '↓'})" for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    for label, c in configs.items():
        if label in ("N=1", "uniform"):
            continue
        b = ", ".join(f"{x:.3f}" for x in c["mean_boundaries"][1:-1])
        others = ["uniform", "N=1"] + ([DEFAULT_SOLVER] if c["kind"] == "solver" and label != DEFAULT_SOLVER
                                        and DEFAULT_SOLVER in configs else [])
        for other in others:
            cells = [paired(report, label, other, m) for m in metrics]
            lines.append(f"| {label} ({b}) − {other} | " + " | ".join(cells) + " |")
    return lines + [""]


def margin_table(name: str, report: dict, base: dict | None) -> list[str]:
    """Paired change of every metric from training with a margin, at each boundary (same seeds, same boundary)."""
    if base is None:
        return []
    s, b = report["summary"], base["summary"]
    metrics = [m for m in s["metrics"] if m in b["metrics"]]
    lines = [f"**{name}**: with margin − without (paired seeds; bold: 95 % interval excludes 0)", "",
             "| split | " + " | ".join(f"{m} ({'↑' if higher_is_better(m) else '↓'})" for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    for label, c in s["configs"].items():
        if label not in b["configs"]:
            continue
        seeds = sorted(set(c["values"]) & set(b["configs"][label]["values"]), key=int)
        cells = [paired_text([c["values"][k][m] for k in seeds], [b["configs"][label]["values"][k][m] for k in seeds])
                 for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    landscapes = {p.parent.name: r for p in sorted(ROOT.glob("landscape/*/landscape.json")) if (r := load(p))}
    variants = {p.parent.name: r for p in sorted(ROOT.glob("landscape/*/variants.json")) if (r := load(p))}
    trained = {p.parent.name: r for p in sorted(ROOT.glob("landscape/*/trained.json")) if (r := load(p))}
    regimes = {p.parent.name: r for p in sorted(ROOT.glob("regimes/*/landscape.json")) if (r := load(p))}
    search = {p.parent.name: r for p in sorted(ROOT.glob("search/*/landscape.json")) if (r := load(p))}
    margin = {p.parent.name: r for p in sorted(ROOT.glob("margin/*/landscape.json")) if (r := load(p))}
    confirm = {f"{p.parent.name} ({p.stem})": r for p in sorted(ROOT.glob("landscape/*/seeds*.json")) if (r := load(p))}
    search_variants = {p.parent.name: r for p in sorted(ROOT.glob("search/*/variants4.json")) if (r := load(p))}
    md = ["# Evidence II — where the split matters (generated by `python benchmarks/evidence.py report`)", ""]
    md += ["## N = 1, uniform and the best N = 2 split (expert MLPs: 16 x 1 on the toys unless named, 64 x 2 on digits)", ""]
    md += where_it_matters({**landscapes, **{f"regime {k}": v for k, v in regimes.items()}}, trained) + [""]
    if confirm:
        md += ["## More seeds for the chosen splits: each against uniform and N = 1", ""]
        for name, report in confirm.items():
            md += confirm_table(name, report)
    if variants:
        md += ["## Regret of every monitor, estimator and density (N = 2, interpolated on the landscape)", ""]
        md += regret_table(variants, landscapes) + [""]
    if trained:
        md += ["## Regret of chosen solvers, trained (N = 2)", ""] + regret_table(trained, landscapes) + [""]
    if search:
        md += ["## N = 4: coordinate search from uniform, and the solvers", ""]
        for name, report in search.items():
            md += landscape_table(name, report)
        md += regret_table(search, {}) + [""]
    if search_variants:
        md += ["## N = 4: regret of several solvers, trained, against the best split the search found", ""]
        for name, report in search_variants.items():
            md += landscape_table(f"{name} (N = 4, solvers)", report)
        md += regret_table(search_variants, {}) + [""]
    if margin:
        md += ["## Experts trained on their interval widened by a margin (train.margin)", ""]
        for name, report in margin.items():
            md += landscape_table(f"{name}, margin", report) + margin_table(name, report, landscapes.get(name))
    md += ["## Every landscape", ""]
    for name, report in {**landscapes, **regimes}.items():
        md += landscape_table(name, report)
    for name in landscapes:  # figures, and benchmarks/boundary_anatomy.py's tables where it was run
        for src, dst in (("landscape.png", f"evidence_{name}.png"), ("variants.png", f"evidence_{name}_variants.png"),
                         ("anatomy.png", f"anatomy_{name}.png"),
                         ("anatomy.md", f"anatomy_{name}.md")):
            if (ROOT / "landscape" / name / src).exists():
                shutil.copyfile(ROOT / "landscape" / name / src, OUT / dst)
    (OUT / "evidence.md").write_text("\n".join(md) + "\n")
    (OUT / "evidence.json").write_text(json.dumps({"landscapes": landscapes, "variants": variants, "trained": trained,
                                                   "regimes": regimes, "search": search,
                                                   "margin": margin, "confirm": confirm,
                                                   "search_variants": search_variants}, indent=1))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
