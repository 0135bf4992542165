"""The split-landscape report: the summary (every configuration's values and statistics, the best fixed split per
metric, each configuration's regret, where the metrics rank the splits differently), written as OUT/NAME.json and
OUT/NAME.md, and the figure OUT/NAME.png (each metric against the boundary, or per configuration for N >= 3, with
95 % bands). Reads what ``cbsflow/landscape_runner.py`` measured; the statistics are ``cbsflow/landscape.py``'s.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING

from cbsflow import landscape as ls
from cbsflow.compare import t_quantile

if TYPE_CHECKING:
    from cbsflow.landscape_runner import Runner


def write_report(runner: Runner, summary: dict, out: Path, name: str, command: str) -> None:
    """OUT/NAME.json (the command, the settings, the summary and the failed runs), OUT/NAME.md and OUT/NAME.png."""
    report = {"command": command, "settings": {k: v for k, v in vars(runner.args).items()}, "summary": summary,
              "failures": runner.failures}
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    write_markdown(runner, summary, out / f"{name}.md", command)
    plot(runner, summary, out / f"{name}.png")


def summarise(runner: Runner) -> dict:
    """Every configuration measured on all seeds, with its statistics; per metric the best fixed split and each
    configuration's regret against it (held out when selection seeds are given or there are 4 seeds or more); the
    metrics' rankings of the splits and where they disagree with the primary metric's."""
    args, seeds = runner.args, runner.args.seeds
    labels = [label for label in runner.configs if all(s in runner.results[label].values for s in seeds)]
    metrics = sorted({m for label in labels for s in seeds for m in runner.results[label].values[s]})
    splits = [label for label in labels if runner.configs[label].kind != "single"]
    # The best is chosen among the fixed splits (grid, uniform, search), never among the solvers: a solver's regret
    # must not depend on which other solvers share the report, nor be zero by construction when it is best on the
    # selection seeds. A solver better than every fixed split has a negative regret.
    fixed = [label for label in splits if runner.configs[label].kind != "solver"]
    summary = {"metrics": metrics, "configs": {}, "best": {}, "regret": {}}
    for label in labels:
        cfg, measured = runner.configs[label], runner.results[label]
        summary["configs"][label] = {
            "kind": cfg.kind, "bindings": list(cfg.bindings), "gin_files": list(cfg.gin_files),
            "boundaries": {str(s): measured.boundaries.get(s) for s in seeds},
            "mean_boundaries": [float(sum(c) / len(c)) for c in zip(*[measured.boundaries[s] for s in seeds])],
            "values": {str(s): measured.values[s] for s in seeds},
            "digests": {str(s): measured.digests.get(s) for s in seeds},
            "stats": {m: ls.stat(runner.results, label, m, seeds) for m in metrics}}
    select = list(args.select_seeds) if args.select_seeds else ls.default_selection(seeds)
    scored = [s for s in seeds if s not in select] if select else list(seeds)
    summary["regret_method"] = ls.held_out_method(select, scored) if select else ls.IN_SAMPLE
    for m in metrics:
        if select:
            regrets = {label: ls.held_out_regret(runner.results, label, m, seeds, fixed, select) for label in labels}
            best = next(iter(regrets.values()))[1] if regrets else None
            summary["regret"][m] = {label: dataclass_dict(r) for label, (r, _) in regrets.items()}
        else:
            best = ls.best_config(runner.results, m, seeds, fixed)
            summary["regret"][m] = {label: dataclass_dict(ls.regret(runner.results, label, best, m, seeds))
                                    for label in labels}
        summary["best"][m] = best
    order = ls.rankings(runner.results, metrics, seeds, splits)
    summary["rankings"] = order
    summary["disagreements"] = ls.disagreements(order, args.primary) if args.primary in order else []
    summary["kendall_tau_vs_primary"] = {m: ls.kendall_tau(order[args.primary], order[m])
                                         for m in metrics if args.primary in order}
    return summary


def dataclass_dict(obj):
    """A Regret as the JSON report stores it (None stays None)."""
    return None if obj is None else {"mean": obj.mean, "half_width": obj.half_width, "n": obj.n,
                                     "resolved": obj.resolved, "direction": obj.direction, "method": obj.method}


def regret_cell(r: dict | None) -> str:
    """'+0.01 ± 0.004'; bold and marked '(better)' or '(worse)' where resolved, plain where not."""
    if r is None:
        return "—"
    text = f"{r['mean']:+.4g} ± {fmt(r['half_width'], 2)}"
    return f"**{text} ({'worse' if r['mean'] > 0 else 'better'})**" if r["resolved"] else text


def fmt(x: float | None, digits: int = 4) -> str:
    """``digits`` significant digits; 'n/a' for a missing or NaN value."""
    return "n/a" if x is None or x != x else f"{x:.{digits}g}"


def write_markdown(runner: Runner, summary: dict, path: Path, command: str) -> None:
    """The markdown report: the command, the seeds and how regrets are scored, each solver's verdict against uniform
    and every one network, every configuration's values, the regret table, and whether the metrics agree."""
    args, seeds, metrics = runner.args, runner.args.seeds, summary["metrics"]
    cfgs = summary["configs"]
    lines = [f"# Split landscape (N = {args.n})", "",
             f"`{command}`", "",
             f"{datetime.date.today().isoformat()}, gin {', '.join(args.gin)}, bindings {args.bind or 'none'}, "
             f"paired seeds {seeds}; primary metric `{args.primary}`. Values are means ± standard errors over seeds;"
             " regrets are paired differences to the best fixed split (never a solver's), with 95 % t-intervals"
             " (positive = worse; **bold** = resolved: the interval excludes 0, marked (better) or (worse) than the"
             " best fixed split).", "",
             f"Regret: {summary['regret_method']}.", ""]
    if args.interpolate:
        lines += ["Solver rows are **interpolated** on the measured N = 2 landscape at each seed's boundary, not "
                  "trained.", ""]
    solvers = [label for label, c in cfgs.items() if c["kind"] == "solver"]
    if solvers:  # the one-line verdicts: each solver against uniform and every one network (N = 1 and each
        # --baseline: trained longer, or wider), 95 %, paired, every seed
        lines += ["## Verdict", ""]
        singles = [label for label, c in cfgs.items() if c["kind"] == "single"]
        for label in solvers:
            parts = [f"against {other}: {ls.verdict(runner.results, label, other, metrics, seeds)}"
                     for other in ["uniform", *singles] if other in cfgs]
            lines.append(f"- **{label}** — " + " · ".join(parts))
        lines.append("")
    head = "| configuration | boundaries | " + " | ".join(metrics) + " |"
    lines += ["## Every configuration", "", head, "|" + "---|" * (len(metrics) + 2)]
    for label, c in cfgs.items():
        b = ", ".join(f"{x:.3f}" for x in c["mean_boundaries"][1:-1]) or "—"
        cells = [fmt(s[0]) + " ± " + fmt(s[1], 2) if s else "n/a" for s in (c["stats"][m] for m in metrics)]
        lines.append(f"| {label} ({c['kind']}) | {b} | " + " | ".join(cells) + " |")
    lines += ["", "## Regret against the best fixed split (grid, uniform or search; below 0: better than it)", "",
              "| configuration | " + " | ".join(f"{m} (best: {summary['best'][m]})" for m in metrics) + " |",
              "|" + "---|" * (len(metrics) + 1)]
    for label in cfgs:
        cells = []
        for m in metrics:
            r = summary["regret"][m][label]
            cells.append(regret_cell(r))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Do the metrics agree?", ""]
    lines += [f"- Kendall's tau of each metric's ranking of the splits with `{args.primary}`'s: "
              + ", ".join(f"{m} {fmt(t, 2)}" for m, t in summary["kendall_tau_vs_primary"].items())]
    lines += [f"- {note}" for note in summary["disagreements"]] or ["- every metric ranks the same split best"]
    if runner.failures:
        lines += ["", "## Failed runs", ""] + [f"- {f}" for f in runner.failures]
    path.write_text("\n".join(lines) + "\n")


def plot(runner: Runner, summary: dict, path: Path) -> None:
    """One panel per metric with 95 % bands: against the boundary for N = 2, per configuration for N >= 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, cfgs, seeds = summary["metrics"], summary["configs"], runner.args.seeds
    t95 = t_quantile(0.975, len(seeds) - 1) if len(seeds) > 1 else float("nan")
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        if runner.args.n == 2:
            _plot_sweep(ax, cfgs, m, t95)
        else:
            _plot_configs(ax, cfgs, m, t95)
        ax.set_title(m + (" (higher is better)" if ls.higher_is_better(m) else " (lower is better)"), fontsize=10)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"split landscape, N = {runner.args.n}, {len(seeds)} paired seeds (bands: 95 % intervals)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if len(handles) <= 6:  # a few entries fit in the first panel; many (every variant of a study) go beside the grid
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
    else:
        fig.legend(handles, labels, loc="center right", fontsize=6, ncol=-(-len(handles) // 40))
        fig.tight_layout(rect=(0, 0, 1 - 0.12 * -(-len(handles) // 40), 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_sweep(ax, cfgs: dict, m: str, t95: float) -> None:
    """N = 2: the fixed splits as a line against t_1, one network (and each baseline) as a level, each solver as
    the span of its seeds' boundaries with its value."""
    pts = sorted((c["mean_boundaries"][1], *c["stats"][m]) for c in cfgs.values()
                 if c["kind"] in ("grid", "uniform") and c["stats"][m])
    if pts:
        x, mu, se = (list(v) for v in zip(*pts))
        ax.plot(x, mu, "o-", color="C0", label="fixed split")
        ax.fill_between(x, [a - t95 * s for a, s in zip(mu, se)], [a + t95 * s for a, s in zip(mu, se)],
                        color="C0", alpha=0.2)
    for label, c in cfgs.items():
        if c["kind"] == "single" and c["stats"][m]:
            mu, se = c["stats"][m]
            ax.axhline(mu, color="k", ls="--" if label == "N=1" else ":", lw=1,
                       label="one network" if label == "N=1" else label)
            ax.axhspan(mu - t95 * se, mu + t95 * se, color="k", alpha=0.08)
    solvers = [(lbl, c) for lbl, c in cfgs.items() if c["kind"] == "solver"]
    for i, (label, c) in enumerate(solvers):
        color = f"C{i + 1}"
        mean = c["mean_boundaries"][1]
        per_seed = [b[1] for b in c["boundaries"].values() if b]
        lo, hi = (min(per_seed), max(per_seed)) if per_seed else (mean, mean)
        # the span of the seeds' boundaries, drawn at least 0.01 wide so that a solver whose boundary does not move
        # between seeds is still seen; the marker's horizontal bar is the same span
        ax.axvspan(min(lo, mean - 0.005), max(hi, mean + 0.005), color=color, alpha=0.18, lw=0)
        ax.axvline(mean, color=color, lw=1.2, label=f"{label} ({lo:.2f}-{hi:.2f})" if hi > lo else label)
        if c["stats"][m]:
            mu, se = c["stats"][m]
            # clipped at 0: the mean of equal boundaries can round a hair outside their min and max
            ax.errorbar([mean], [mu], xerr=[[max(mean - lo, 0.0)], [max(hi - mean, 0.0)]], yerr=[t95 * se], fmt="s",
                        color=color, ms=5, capsize=2)
    ax.set_xlabel("boundary t_1 (0 = noise, 1 = data)")
    ax.set_xlim(0, 1)


def _plot_configs(ax, cfgs: dict, m: str, t95: float) -> None:
    """N >= 3: every configuration's mean and 95 % interval, sorted by mean from the bottom up."""
    rows = [(label, *c["stats"][m]) for label, c in cfgs.items() if c["stats"][m]]
    rows.sort(key=lambda r: r[1])
    y = range(len(rows))
    ax.errorbar([r[1] for r in rows], y, xerr=[t95 * r[2] for r in rows], fmt="o", color="C0")
    ax.set_yticks(list(y), [r[0] for r in rows], fontsize=6)
