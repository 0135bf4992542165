"""The results pages of the studies: each page a function of the landscape reports of one study
(benchmarks/studies/<study>.toml, whose ``[report]`` table names its pages), writing benchmarks/results/<page>.md and
its JSON and figures. ``python benchmarks/run_study.py STUDY --report`` writes them from the archived reports (the
studies' ``measured``), so a fresh clone regenerates every page without training.

Pages: ``experts_grid`` (the regime grid), ``experts_beyond`` (N = 4 and digits), ``experts_more_seeds``,
``evidence`` and ``rescore_regrets`` (the evidence study), ``methods_table`` and ``methods_cifar`` (every split method;
benchmarks/methods_page.py), ``capacity`` (does an expert's capacity bind: benchmarks/results/cifar/). What a landscape
report does not hold (wall times and counted extra compute, read from the runs under ``out``; rows an earlier session
measured) is kept from the page's committed JSON where the runs are not on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
RESULTS = REPO / "benchmarks" / "results"

from cbsflow import landscape as ls  # noqa: E402
from cbsflow.compare import paired_difference  # noqa: E402


@dataclasses.dataclass
class Landscape:
    """One landscape of a study: its settings (run_study.expand), its report, where that was read, and its run
    folder when the report was read from it (None: read from the archive, no runs here)."""

    name: str
    settings: dict
    report: dict
    source: Path
    runs: Path | None


def read_landscapes(landscapes: list[tuple[str, dict]], from_runs: bool) -> list[Landscape]:
    """Each landscape's report: ``<out>/<name>.json`` when ``from_runs`` and it exists, else its archive
    (``measured``); landscapes with neither are left out."""
    out = []
    for name, settings in landscapes:
        mine = REPO / settings["out"] / f"{settings.get('name', 'landscape')}.json"
        archived = REPO / settings["measured"] if "measured" in settings else None
        source = mine if from_runs and mine.exists() else archived
        if source is None or not source.exists():
            print(f"{name}: no report at {mine if from_runs else archived}; left out of the pages")
            continue
        out.append(Landscape(name, settings, json.loads(source.read_text()), source,
                             source.parent if source == mine else None))
    return out


def write_pages(pages: list[str], landscapes: list[tuple[str, dict]], from_runs: bool,
                out: Path = RESULTS, partial: bool = False) -> list[Path]:
    """Write each page under ``out`` from the landscapes' reports; the paths written. ``partial``: a study still
    running over sessions, whose pages each end with a line naming the landscapes not yet on record."""
    unknown = [p for p in pages if p not in PAGES]
    if unknown:
        raise ValueError(f"[report] pages {unknown} unknown; benchmarks/study_report.py writes {sorted(PAGES)}")
    lands = read_landscapes(landscapes, from_runs)
    if not lands:
        raise ValueError("no landscape report to write the pages from: run the study, or archive its reports "
                         "where its `measured` points")
    out.mkdir(parents=True, exist_ok=True)
    written = [path for page in pages for path in PAGES[page](lands, out)]
    missing = [name for name, _ in landscapes if name not in {land.name for land in lands}]
    for path in written if partial and missing else []:
        if path.suffix == ".md":
            path.write_text(path.read_text().rstrip("\n") + f"\n\n*Not yet run (the same study, preregistered; "
                            f"its command goes on where it stopped): {', '.join(missing)}.*\n")
    return written


def stored(page: str) -> dict:
    """The page's committed JSON (empty when there is none)."""
    path = RESULTS / f"{page}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def side(mean: float, half_width: float, higher_is_better: bool = False) -> str | None:
    """'better' or 'worse' where the 95 % interval ``mean ± half_width`` of a difference first − second excludes 0,
    on either side; None where it does not, or is undefined (NaN: fewer than 2 seeds). Below 0 is better (regrets
    are oriented so), unless ``higher_is_better``: a raw difference of a metric where higher is better."""
    if mean - half_width > 0:
        return "better" if higher_is_better else "worse"
    if mean + half_width < 0:
        return "worse" if higher_is_better else "better"
    return None


def marked(text: str, mean: float, half_width: float, higher_is_better: bool = False) -> str:
    """``text`` bold and marked '(better)' or '(worse)' where resolved at 95 %, plain where not (as
    cbsflow/landscape_report.py's regret cells). Resolved is worked out here from the interval, never read from a
    report's ``resolved`` flag: the archived reports flagged only 'worse' (one-sided) before Regret.resolved became
    two-sided."""
    direction = side(mean, half_width, higher_is_better)
    return f"**{text} ({direction})**" if direction else text


LEGEND = "**bold** = resolved at 95 %, marked (better) or (worse)"


def fmt_regret(r: dict | None) -> str:
    """'+0.0012 ± 0.0034', bold and marked (better) or (worse) where resolved; '—' where missing."""
    if not r:
        return "—"
    return marked(f"{r['mean']:+.4f} ± {r['half_width']:.4f}", r["mean"], r["half_width"])


def _relpath(path: Path) -> str:
    return os.path.relpath(path, REPO)


# ------------------------------------------------------------------------------------------- experts_grid

PRIMARY = "sliced_wasserstein"
BASELINES = ("N=1", "N1x2steps", "N1x2params")  # one network; trained 2x the steps; ~2x the parameters
PAIRED_AGAINST = "centred_light"  # the paired table's reference: the quickstart's split 2026-12-04 to 2026-12-05


def _timings(run_root: Path | None, label: str) -> list[dict]:
    """timings.json of a configuration's runs (with the counted extra compute of checkpoints/train.json)."""
    out = []
    root = run_root / "runs" / label.replace(" ", "_") if run_root else None
    for seed_dir in sorted(root.glob("seed*")) if root else []:
        path, train = seed_dir / "timings.json", seed_dir / "checkpoints" / "train.json"
        if path.exists():
            entry = json.loads(path.read_text())
            if train.exists():
                entry["extra_compute"] = json.loads(train.read_text()).get("extra_compute")
            out.append(entry)
    return out


def extra_cost(root: Path | None, label: str, fixed_train_s: float | None) -> tuple[float | None, float | None]:
    """(extra compute counted in steps or forward passes, when the method records it; extra wall time as a share of
    one fixed-split training: profile + train seconds against the fixed split's train seconds)."""
    times = _timings(root, label)
    counted = [t["extra_compute"] for t in times if t.get("extra_compute") is not None]
    wall = (statistics.median(t.get("profile", 0.0) + t.get("train", 0.0) for t in times) / fixed_train_s - 1
            if times and fixed_train_s else None)  # the fixed split's runs may have been read back, not run here
    return (statistics.median(counted) if counted else None), wall


def regime(land: Landscape, before: dict | None) -> dict:
    """One regime of the grid: its fixed splits' SW, and per method and baseline its SW, held-out regret and extra
    cost (from the runs here, else as ``before``, the page's committed entry, has it)."""
    summary = land.report["summary"]
    cfgs, regrets = summary["configs"], summary["regret"][PRIMARY]
    grid = sorted((c["mean_boundaries"][1], c["stats"][PRIMARY][0], c["stats"][PRIMARY][1], label)
                  for label, c in cfgs.items() if c["kind"] in ("grid", "uniform"))
    fixed = [t["train"] for t in _timings(land.runs, "uniform")]
    fixed_s = statistics.median(fixed) if fixed else None
    rows = {}
    for label, c in cfgs.items():
        if c["kind"] not in ("uniform", "solver", "single"):
            continue
        counted, wall = extra_cost(land.runs, label, fixed_s) if c["kind"] == "solver" else (None, None)
        old = (before or {}).get("rows", {}).get(label, {})
        rows[label] = {"kind": c["kind"], "boundary": c["mean_boundaries"][1] if len(c["mean_boundaries"]) > 2 else None,
                       "sw": c["stats"][PRIMARY], "regret": regrets.get(label),
                       "extra_counted": old.get("extra_counted") if counted is None else counted,
                       "extra_wall": old.get("extra_wall") if wall is None else wall,
                       "per_seed": {k: v[PRIMARY] for k, v in c.get("values", {}).items() if PRIMARY in v}}
    u = rows.get("uniform", {}).get("regret")
    for row in rows.values():
        r = row["regret"]
        row["ratio_to_uniform"] = (r["mean"] / u["mean"]) if r and u and u["mean"] > 0 else None
    return {"report": f"{land.settings.get('name', 'landscape')}.json", "method": summary.get("regret_method"),
            "best_selected": summary["best"][PRIMARY], "grid": [{"b": g[0], "sw": g[1], "se": g[2]} for g in grid],
            "best_all_seeds": min(grid, key=lambda g: g[1])[0], "rows": rows}


def merge_rows(name: str, new: dict, old: dict | None) -> str:
    """Rows (methods, baselines) that an earlier session measured on a regime whose grid was trained again and that
    this report lacks. They are kept only when the grid came out the same (every mean within 5 % of its standard
    error: the grids retrained on 2026-12-04 agree with those of 2026-12-03 to ~1e-5 in SW, the same seeds but not
    bit for bit) and both reports score against the same fixed split; else they are left out, and the line returned
    says so."""
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


def grid_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/experts_grid.{md,json,png}: where the best split sits per regime, every method's held-out
    regret, each method across the regimes, the methods paired against the default, and the timed runs."""
    before = stored("experts_grid")
    regimes = {}
    for land in sorted(lands, key=lambda land: land.name):
        regimes[land.name] = regime(land, before.get(land.name))
        print(merge_rows(land.name, regimes[land.name], before.get(land.name)))
    methods = sorted({label for r in regimes.values() for label, row in r["rows"].items() if row["kind"] == "solver"})
    md = _grid_head(regimes) + _grid_regret(regimes, methods) + _grid_methods(regimes, methods)
    md += _grid_paired(regimes, methods) + _grid_timing()
    md += ["", "Uniform's regret near 0 (the best split is close to 0.5) makes the ratio meaningless there; such rows",
           "count as meeting the target only if the method's regret is ≤ 1/3 of uniform's all the same.", "",
           "![regime grid](experts_grid.png)"]
    paths = [out / "experts_grid.md", out / "experts_grid.json", out / "experts_grid.png", out / "experts_methods.png"]
    paths[0].write_text("\n".join(md) + "\n")
    paths[1].write_text(json.dumps(regimes, indent=1) + "\n")
    _grid_plot(regimes, paths[2])
    _methods_plot(regimes, methods, paths[3])
    timing = RESULTS / "experts_timing.json"
    if timing.exists():
        paths.append(out / "experts_timing.png")
        _timing_plot(json.loads(timing.read_text()), paths[-1])
    return paths


def _grid_head(regimes: dict) -> list[str]:
    md = ["# Regime grid over experts (N = 2)", "",
          "`python benchmarks/run_study.py benchmarks/studies/grid.toml --report` (from the archived reports"
          " `benchmarks/results/experts/<regime>-methods.json`; without `--report` the study trains what they lack)."
          " Boards: the 4×4 checkerboard (`board`), at half its scale (`board_late`: squares form late) and twice"
          " (`board_early`). Experts: MLP width × depth, sinusoidal time embedding, or `raw`: t as an input. 4,000"
          " steps of batch 256 per expert; 5 paired seeds; boundaries 0.2–0.8; SW on 20,000 samples.", "",
          f"Regret: {next(iter(regimes.values()))['method']}, against the best *fixed* split (a grid point or uniform;"
          f" never a method's split, so below 0 = better than every fixed split); {LEGEND} than the best fixed"
          " split; † = kept from an earlier session's report of the same grid and reference split. Ratio = a method's"
          " regret / uniform's (the target is ≤ 1/3). Extra compute: counted (steps or forward passes, as the method"
          " records it) / wall time (profile + training against the fixed split's training, median over seeds).", "",
          "## Where the best split sits", "", "| regime | best boundary (mean SW, all seeds) | SW best | SW uniform |"
          " SW N=1 | centred default's boundary |", "|---|---|---|---|---|---|"]
    for name, r in regimes.items():
        best = min(r["grid"], key=lambda g: g["sw"])
        uni = next(g for g in r["grid"] if abs(g["b"] - 0.5) < 1e-9)
        one = r["rows"].get("N=1", {}).get("sw")
        default = r["rows"].get("centred_default", {}).get("boundary")
        md.append(f"| {name} | {best['b']:.1f} | {best['sw']:.4f} ± {best['se']:.4f} | {uni['sw']:.4f} ± "
                  f"{uni['se']:.4f} | {one[0]:.4f} | {'—' if default is None else f'{default:.2f}'} |")
    return md


def _grid_regret(regimes: dict, methods: list[str]) -> list[str]:
    md = ["", "## Held-out regret on SW", "",
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
    return md


def _grid_methods(regimes: dict, methods: list[str]) -> list[str]:
    md = ["", "## Each method across the regimes", "", "| method | regimes | ratio ≤ 1/3 (of the regimes where "
          "uniform's regret > 0) | resolved worse than the best fixed split | median extra compute "
          "(counted / wall in the landscape, several runs at once) |", "|---|---|---|---|---|"]
    for m in methods:
        rows = [r["rows"][m] for r in regimes.values() if m in r["rows"]]
        eligible = [row for row in rows if row["ratio_to_uniform"] is not None]
        good = sum(1 for row in eligible if row["ratio_to_uniform"] <= 1 / 3)
        worse = sum(1 for row in rows if row["regret"] and side(row["regret"]["mean"], row["regret"]["half_width"])
                    == "worse")
        counted = [row["extra_counted"] for row in rows if row["extra_counted"] is not None]
        wall = [row["extra_wall"] for row in rows if row["extra_wall"] is not None]
        counted_text = f"{statistics.median(counted) * 100:.1f} %" if counted else "n/a"
        wall_text = f"{statistics.median(wall) * 100:.0f} %" if wall else "n/a"
        md.append(f"| {m} | {len(rows)} | {good} of {len(eligible)} | {worse} of {len(rows)} | {counted_text} / "
                  f"{wall_text} |")
    return md


def _grid_paired(regimes: dict, methods: list[str], reference: str = PAIRED_AGAINST) -> list[str]:
    """Each method against the shipped default, paired by seed over every seed both ran (no split is chosen here, so
    no seed is spent on a selection): mean difference of SW ± its 95 % t-interval; bold and marked = resolved."""
    others = [m for m in methods if m != reference]
    md = ["", f"## Each method against `{reference}` (the shipped default), paired by seed", "",
          f"SW of the method − SW of `{reference}` on every seed both ran (below 0: the method is better); "
          f"{LEGEND}: the method against `{reference}`. No split is chosen from these seeds, so none is held out.",
          "",
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
            cells.append(marked(f"{d.mean:+.4f} ± {d.half_width:.4f}", d.mean, d.half_width))
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    return md


def _grid_timing() -> list[str]:
    """The table of benchmarks/results/experts_timing.json (benchmarks/method_timing.py), if it exists."""
    timing = RESULTS / "experts_timing.json"
    if not timing.exists():
        return []
    md = ["", "Wall time of one run at a time, one thread, seed 0 (`python benchmarks/method_timing.py "
          "--boards board --experts ... --methods ...`; the fastest of `repeats` runs per stage), profile + "
          "training against the fixed split's training (extra), and the profile alone against it (profile share: "
          "the method trains the same steps, so this is its counted extra):", "",
          "| regime | date | method | profile s | train s | extra | profile share |", "|---|---|---|---|---|---|---|"]
    for key, t in json.loads(timing.read_text())["regimes"].items():
        for name, sec in t["seconds"].items():
            md.append(f"| {key} | {t['date']} (×{t.get('repeats', 1)}) | {name} | {sec.get('profile', 0):.1f} | "
                      f"{sec['train']:.1f} | {t['extra_vs_fixed'][name] * 100:+.0f} % | "
                      f"{sec.get('profile', 0) / t['seconds']['fixed split (uniform)']['train'] * 100:.0f} % |")
    return md


def _grid_plot(regimes: dict, path: Path) -> None:
    """Per board, each expert's SW of every fixed split ÷ uniform's (star: the best; dotted: the centred default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boards = sorted({k.split("-")[0] for k in regimes})
    experts = sorted({k.split("-", 1)[1] for k in regimes})  # one colour per expert in every panel
    fig, axes = plt.subplots(1, len(boards), figsize=(5 * len(boards), 3.8), squeeze=False)
    for ax, board in zip(axes[0], boards):
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _methods_plot(regimes: dict, methods: list[str], path: Path) -> None:
    """Each method's held-out SW regret on every regime it ran, with its 95 % interval (one panel per method)."""
    plt = _pyplot()
    names = sorted(regimes)
    cols = 4
    fig, axes = plt.subplots(-(-len(methods) // cols), cols, figsize=(3.2 * cols, 0.9 + 0.22 * len(names) *
                             -(-len(methods) // cols)), sharex=True, sharey=True, squeeze=False)
    for ax, method in zip(axes.flat, methods):
        for y, name in enumerate(names):
            r = (regimes[name]["rows"].get(method) or {}).get("regret")
            if r:
                direction = side(r["mean"], r["half_width"])
                color = {"better": "C2", "worse": "C3"}.get(direction, "0.35")
                ax.errorbar(r["mean"], y, xerr=r["half_width"], fmt="o", color=color, ms=3, lw=1)
        ax.axvline(0, color="k", lw=0.6)
        ax.set_title(method, fontsize=8)
        ax.set_xlabel("regret on SW", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=6)
    for ax in axes.flat[len(methods):]:
        ax.axis("off")
    fig.suptitle("Held-out SW regret against the best fixed split, 95 % intervals (green: resolved better, red: "
                 "worse, grey: not resolved)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timing_plot(timing: dict, path: Path) -> None:
    """Extra wall time of each method against the fixed split's training, per expert (one run at a time)."""
    plt = _pyplot()
    regimes = timing["regimes"]
    methods = [m for m in next(iter(regimes.values()))["extra_vs_fixed"] if m != "fixed split (uniform)"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(regimes)
    for i, (name, reg) in enumerate(regimes.items()):
        xs = [k + (i - (len(regimes) - 1) / 2) * width for k in range(len(methods))]
        ax.bar(xs, [100 * reg["extra_vs_fixed"][m] for m in methods], width, label=name.split("-", 1)[1])
    ax.set_xticks(range(len(methods)), methods, fontsize=8)
    ax.set_ylabel("extra wall time, % of a fixed split's training")
    ax.set_title("What a method costs beyond the fixed split (one run at a time, seed 0, fastest of 2)", fontsize=8)
    ax.legend(fontsize=7, title="expert", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- experts_beyond

def _cpu() -> str | None:
    """This machine's CPU model name (wall times compare only between runs on the same one); None where unknown."""
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    except OSError:
        return None
    return names[0] if names else None


def _wall(root: Path | None, label: str) -> float | None:
    """Median profile + train seconds of a configuration's runs (several runs at once: compare within a table)."""
    times = [t.get("profile", 0.0) + t.get("train", 0.0) for t in _timings(root, label)]
    return sorted(times)[len(times) // 2] if times else None


def beyond_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/experts_beyond.{md,json}: one section per landscape (its ``section`` key and ``title``)."""
    before = stored("experts_beyond")
    sections, data = [], {}
    for land in lands:
        key = land.settings.get("section", land.name)
        md, data[key] = beyond_section(land, before.get(key))
        sections += md
    head = ["# Splits that follow the experts: N = 4 and images", "",
            "`python benchmarks/run_study.py benchmarks/studies/beyond.toml --report` (from the archived reports; the"
            " runs: 2 CPU cores). Wall time: profile + training of a configuration's runs against uniform's, median over"
            " seeds, several runs at once. N1x4steps / N1x2steps: one network trained for the experts' total"
            " steps; N1x4params / N1x2params: one network with about N× an expert's parameters.", ""]
    return _write_page(out, "experts_beyond", head + sections, data)


def beyond_section(land: Landscape, before: dict | None) -> tuple[list[str], dict]:
    """One landscape's table: every configuration's primary metric, its regrets and its wall time against uniform's
    (this machine's runs, else as ``before``, the page's committed section, has it), and each solver's ratio."""
    summary, settings, primary = land.report["summary"], land.report["settings"], land.settings["primary"]
    cfgs, metrics = summary["configs"], summary["metrics"]
    cpu = _cpu() if land.runs else None

    def wall_of(label: str) -> tuple[float | None, str | None]:
        measured = _wall(land.runs, label)
        row = (before or {}).get("rows", {}).get(label, {})
        return (measured, cpu) if measured is not None else (row.get("wall_s"), row.get("wall_cpu"))

    fixed, fixed_cpu = wall_of("uniform")
    others = [m for m in metrics if m != primary]
    md = [f"### {land.settings['title']}", "", f"`{_relpath(land.source)}`; N = {settings['n']},"
          f" seeds {settings['seeds']}; regret {summary['regret_method']}; best on {primary}: "
          f"`{summary['best'][primary]}`. Regrets oriented on every metric so that above 0 = worse; {LEGEND} than"
          " the best fixed split.", "",
          "| configuration | kind | boundaries (mean) | " + f"{primary} | regret on {primary} | "
          + " | ".join(f"regret on {m}" for m in others) + " | wall vs uniform |",
          "|---|---|---|---|---|" + "---|" * len(others) + "---|"]
    rows = {}
    order = sorted(cfgs, key=lambda k: (cfgs[k]["kind"] not in ("single",), cfgs[k]["kind"] != "uniform",
                                        cfgs[k]["kind"] != "solver", cfgs[k]["stats"][primary][0]))
    for label in order:
        c = cfgs[label]
        mu, se = c["stats"][primary]
        b = c["mean_boundaries"]
        wall, wall_cpu = wall_of(label)
        # Wall times compare only when measured on the same CPU (runs read back keep the times of their machine).
        extra = (f"{wall / fixed - 1:+.0%}" if wall_cpu == fixed_cpu else "other CPU") if (
            wall and fixed and c["kind"] != "search") else ""
        regrets = {m: summary["regret"][m].get(label) for m in metrics}
        md.append(f"| {label} | {c['kind']} | {', '.join(f'{v:.2f}' for v in b[1:-1]) or '—'} | {mu:.4f} ± {se:.4f}"
                  f" | {fmt_regret(regrets[primary])} | " + " | ".join(fmt_regret(regrets[m]) for m in others)
                  + f" | {extra} |")
        rows[label] = {"kind": c["kind"], "boundaries": b, "stats": c["stats"], "regret": regrets, "wall_s": wall,
                       "wall_cpu": wall_cpu}
    return md + [""] + _ratios(rows, primary) + [""], {
        "primary": primary, "regret_method": summary["regret_method"], "rows": rows, "best": summary["best"],
        "disagreements": summary.get("disagreements", [])}


def _ratios(rows: dict, primary: str) -> list[str]:
    u = rows.get("uniform", {}).get("regret", {}).get(primary)
    md = []
    for label, row in rows.items():
        r = row["regret"][primary]
        if row["kind"] == "solver" and r and u:
            ratio = r["mean"] / u["mean"] if u["mean"] > 0 else None
            md.append(f"- {label}: regret {r['mean']:+.4f} against uniform's {u['mean']:+.4f}"
                      + (f" ({ratio:.2f}×; target ≤ 1/3)" if ratio is not None
                         else " (uniform's regret ≤ 0 on the scored seeds: no ratio)"))
    return md


# ------------------------------------------------------------------------------------------- experts_more_seeds

METRIC_NAMES = ("sliced_wasserstein", "mmd", "nll")


def more_seeds_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/experts_more_seeds.{md,json}: per landscape, every configuration's mean and every pair's
    paired difference over all its seeds (no split is chosen from them, so every seed scores)."""
    before = stored("experts_more_seeds")
    data = {"regimes": {}}
    for land in lands:
        md, entry = more_seeds_section(land)
        data["regimes"][land.name] = {**entry, "markdown": md}
    ran = any(land.runs and (land.runs / "runs").is_dir() for land in lands)
    if ran or "machine" not in before:  # the machine that measured, not one that only read the reports back
        from benchinfo import machine_record

        data["machine"] = machine_record()
    else:
        data["machine"] = before["machine"]
    sections = [line for entry in data["regimes"].values() for line in entry["markdown"]]
    head = ["# More paired seeds on the grid's regimes", "",
            "`python benchmarks/run_study.py benchmarks/studies/more_seeds.toml --report` (from the archived report;"
            " the runs: 2 CPU cores). Boards and experts as in `benchmarks/results/experts_grid.md`: 4,000 steps of"
            " batch 256 per expert.", ""]
    return _write_page(out, "experts_more_seeds", head + sections, data)


def _fmt_pair(r) -> str:
    return "—" if r is None else marked(f"{r.mean:+.4f} ± {r.half_width:.4f}", r.mean, r.half_width)


def more_seeds_section(land: Landscape) -> tuple[list[str], dict]:
    """One regime: N = 1, uniform and the study's solvers, and each solver against uniform and the others."""
    configs, seeds = land.report["summary"]["configs"], land.report["settings"]["seeds"]
    methods = list(land.settings.get("solvers", {}))
    results = {label: ls.Measured(values={int(s): v for s, v in c["values"].items()},
                                  boundaries={int(s): b for s, b in c["boundaries"].items()})
               for label, c in configs.items()}
    out = {"seeds": seeds, "report": _relpath(land.source), "mean": {}, "pairs": {}}
    md = [f"## {land.name}", "", f"`{_relpath(land.source)}`; {len(seeds)} paired seeds {seeds}; every figure"
          " a paired difference over all of them (first − second; below 0: the first is better), 95 % t-interval;"
          f" {LEGEND}: the first against the second.", "",
          "| configuration | boundary (mean) | " + " | ".join(METRIC_NAMES) + " |", "|---|---|" + "---|" * len(METRIC_NAMES)]
    for label in ["N=1", "uniform", *methods]:
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
        md.append(f"| {a} − {b} | " + " | ".join(_fmt_pair(r) for r in regrets.values()) + " |")
    return md + [""], out


# ------------------------------------------------------------------------------------------- evidence

SECONDARY = "nll"
DEFAULT_SOLVER = "dirichlet_centred@e0.5"  # the shipped default then: aux-net centred Dirichlet energy, exponent 1/2
PREVIOUS_DEFAULT = "dirichlet@e0.5"  # the default before this evidence: the plain (uncentred) Dirichlet energy
SECTIONS = ("landscapes", "variants", "trained", "regimes", "search", "margin", "confirm", "search_variants")


def _ev_fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _ev_stat(summary: dict, label: str, metric: str) -> str:
    s = summary["configs"].get(label, {}).get("stats", {}).get(metric)
    return "—" if not s else f"{_ev_fmt(s[0], 4)} ± {_ev_fmt(s[1], 2)}"


def _arrow(metric: str) -> str:
    return "↑" if ls.higher_is_better(metric) else "↓"


def paired(report: dict, a: str, b: str, metric: str) -> str:
    """a - b, paired by seed, with its 95 % interval (from the per-seed values in the report)."""
    configs = report["summary"]["configs"]
    if a not in configs or b not in configs:
        return "—"
    seeds = sorted(configs[a]["values"], key=int)
    return paired_text([configs[a]["values"][s][metric] for s in seeds],
                       [configs[b]["values"][s][metric] for s in seeds], ls.higher_is_better(metric))


def paired_text(va: list[float], vb: list[float], higher_is_better: bool = False) -> str:
    """mean [interval] of the paired differences va - vb; bold and marked (better) or (worse) -- va against vb, on a
    metric where lower is better unless ``higher_is_better`` -- when the 95 % interval excludes 0."""
    d = paired_difference(va, vb)
    text = f"{d.mean:+.3g} [{d.mean - d.half_width:+.3g}, {d.mean + d.half_width:+.3g}]"
    return marked(text, d.mean, d.half_width, higher_is_better)


PAIRED_LEGEND = (f"first − second, paired by seed, in the metric's units with its 95 % interval; {LEGEND}: the"
                 " first against the second (↓: below 0 is better, ↑: above 0 is better)")


def where_it_matters(reports: dict[str, dict], trained: dict[str, dict]) -> list[str]:
    """N = 1, uniform-2 and the best N = 2 split, with paired differences of the best against both, and of the shipped
    and the previous default's trained splits against uniform (from the landscape, else the dataset's trained report)."""
    primaries = sorted({report["settings"]["primary"] for report in reports.values()})
    lines = [f"Differences: {PAIRED_LEGEND}; the primary metrics: "
             + ", ".join(f"{m} ({_arrow(m)})" for m in primaries) + ".", "",
             "| regime | primary | N = 1 | uniform-2 | best-2 (boundary) | best − N = 1 | best − uniform | "
             f"CBS default (boundary) − uniform | previous default (boundary) − uniform | "
             f"{SECONDARY}: N = 1 / uniform / best-2 ({SECONDARY}'s best boundary) |",
             "|" + "---|" * 10]
    for name, report in reports.items():
        s, m = report["summary"], report["settings"]["primary"]
        best = s["best"].get(m)
        if best is None:
            continue
        b = s["configs"][best]["mean_boundaries"][1:-1]
        nll_best = s["best"].get(SECONDARY)
        nll_text = "—"
        if nll_best:
            nb = ", ".join(f"{x:.2f}" for x in s["configs"][nll_best]["mean_boundaries"][1:-1])
            nll_text = (f"{_ev_stat(s, 'N=1', SECONDARY)} / {_ev_stat(s, 'uniform', SECONDARY)} / "
                        f"{_ev_stat(s, nll_best, SECONDARY)} ({nb})")
        cells = []
        for label in (DEFAULT_SOLVER, PREVIOUS_DEFAULT):
            src = next((r for r in (report, trained.get(name)) if r and label in r["summary"]["configs"]), None)
            if src is None:
                cells.append("—")
                continue
            cb = src["summary"]["configs"][label]["mean_boundaries"][1:-1]
            cells.append(f"{paired(src, label, 'uniform', m)} ({', '.join(f'{x:.2f}' for x in cb)})")
        lines.append(f"| {name} | {m} | {_ev_stat(s, 'N=1', m)} | {_ev_stat(s, 'uniform', m)} | {_ev_stat(s, best, m)} "
                     f"({', '.join(f'{x:.2f}' for x in b)}) | {paired(report, best, 'N=1', m)} | "
                     f"{paired(report, best, 'uniform', m)} | {' | '.join(cells)} | {nll_text} |")
    return lines


def evidence_table(name: str, report: dict) -> list[str]:
    """Every configuration of one landscape on every metric (mean ± s.e.; bold: the metric's best)."""
    s = report["summary"]
    metrics = s["metrics"]
    lines = [f"**{name}** (`{report['command']}`)", "",
             "| split | " + " | ".join(f"{m} ({_arrow(m)})" for m in metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    rows = sorted(s["configs"].items(), key=lambda kv: (kv[1]["kind"] == "solver", kv[1]["mean_boundaries"][1:2]))
    for label, c in rows:
        b = ", ".join(f"{x:.3f}" for x in c["mean_boundaries"][1:-1]) or "one network"
        tag = f"{label}: {b}" if c["kind"] in ("solver", "uniform") else b
        cells = []
        for m in metrics:
            cell = _ev_stat(s, label, m)
            cells.append(f"**{cell}**" if s["best"].get(m) == label else cell)
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {d}" for d in s.get("disagreements", [])]
    taus = s.get("kendall_tau_vs_primary", {})
    if taus:
        lines.append("- Kendall's tau against the primary metric's ranking: " +
                     ", ".join(f"{m} {_ev_fmt(t, 2)}" for m, t in taus.items() if m != report["settings"]["primary"]))
    return lines + [""]


def regret_table(variants: dict[str, dict]) -> list[str]:
    """Rows: uniform and every solver; columns: the landscapes; each cell the regret on the landscape's primary."""
    names = list(variants)
    lines = [f"Regret against the best fixed split, oriented so that above 0 = worse; {LEGEND} than it.", "",
             "| solver | " + " | ".join(f"{n} ({variants[n]['settings']['primary']})" for n in names)
             + " | ≤ 1/3 of uniform's |", "|" + "---|" * (len(names) + 2)]
    labels = []
    for report in variants.values():
        labels += [lbl for lbl, c in report["summary"]["configs"].items() if c["kind"] == "solver" and lbl not in labels]
    for label in ["uniform", *labels]:
        cells, wins = [], 0
        for n in names:
            s, m = variants[n]["summary"], variants[n]["settings"]["primary"]
            r = s["regret"].get(m, {}).get(label)
            u = s["regret"].get(m, {}).get("uniform")
            if r is not None and u is not None and label != "uniform" and r["mean"] <= u["mean"] / 3:
                wins += 1
            cells.append("—" if r is None else marked(f"{r['mean']:+.3g} ± {_ev_fmt(r['half_width'], 2)}", r["mean"],
                                                      r["half_width"]))
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + ("—" if label == "uniform" else f"{wins}/{len(names)}")
                     + " |")
    return lines


def confirm_table(name: str, report: dict) -> list[str]:
    """Paired differences of every trained split (the solvers' and the grid's) against uniform and against N = 1, on
    every metric -- the check of a landscape's best splits with more seeds."""
    s = report["summary"]
    metrics, configs = s["metrics"], s["configs"]
    seeds = sorted(configs["uniform"]["values"], key=int)
    lines = [f"**{name}**, {len(seeds)} paired seeds (`{report['command']}`); {PAIRED_LEGEND}", "",
             "| difference | " + " | ".join(f"{m} ({_arrow(m)})" for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    for label, c in configs.items():
        if label in ("N=1", "uniform"):
            continue
        b = ", ".join(f"{x:.3f}" for x in c["mean_boundaries"][1:-1])
        others = ["uniform", "N=1"] + ([DEFAULT_SOLVER] if c["kind"] == "solver" and label != DEFAULT_SOLVER
                                        and DEFAULT_SOLVER in configs else [])
        for other in others:
            lines.append(f"| {label} ({b}) − {other} | " + " | ".join(paired(report, label, other, m) for m in metrics)
                         + " |")
    return lines + [""]


def margin_table(name: str, report: dict, base: dict | None) -> list[str]:
    """Paired change of every metric from training with a margin, at each boundary (same seeds, same boundary)."""
    if base is None:
        return []
    s, b = report["summary"], base["summary"]
    metrics = [m for m in s["metrics"] if m in b["metrics"]]
    lines = [f"**{name}**: with margin − without ({PAIRED_LEGEND})", "",
             "| split | " + " | ".join(f"{m} ({_arrow(m)})" for m in metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    for label, c in s["configs"].items():
        if label not in b["configs"]:
            continue
        seeds = sorted(set(c["values"]) & set(b["configs"][label]["values"]), key=int)
        cells = [paired_text([c["values"][k][m] for k in seeds], [b["configs"][label]["values"][k][m] for k in seeds],
                             ls.higher_is_better(m)) for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _evidence_sections(lands: list[Landscape]) -> dict[str, dict[str, dict]]:
    """The evidence study's reports by section (each landscape's ``section``) and key (its ``key``, else its name)."""
    out: dict[str, dict[str, dict]] = {section: {} for section in SECTIONS}
    for land in lands:
        section = land.settings.get("section")
        if section not in out:
            raise ValueError(f"landscape {land.name!r}: section {section!r} is not one of {list(SECTIONS)}; set "
                             "`section` in its [combinations] table")
        out[section][land.settings.get("key", land.name)] = land.report
    return out


def evidence_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/evidence.md and its figures (copied from the runs, where they are on this machine)."""
    ev = _evidence_sections(lands)
    md = ["# Evidence II — where the split matters (generated by `python benchmarks/run_study.py "
          "benchmarks/studies/evidence.toml --report`)", ""]
    md += ["## N = 1, uniform and the best N = 2 split (expert MLPs: 16 x 1 on the toys unless named, 64 x 2 on digits)", ""]
    md += where_it_matters({**ev["landscapes"], **{f"regime {k}": v for k, v in ev["regimes"].items()}}, ev["trained"])
    md += [""]
    if ev["confirm"]:
        md += ["## More seeds for the chosen splits: each against uniform and N = 1", ""]
        for name, report in ev["confirm"].items():
            md += confirm_table(name, report)
    if ev["variants"]:
        md += ["## Regret of every monitor, estimator and density (N = 2, interpolated on the landscape)", ""]
        md += regret_table(ev["variants"]) + [""]
    if ev["trained"]:
        md += ["## Regret of chosen solvers, trained (N = 2)", ""] + regret_table(ev["trained"]) + [""]
    if ev["search"]:
        md += ["## N = 4: coordinate search from uniform, and the solvers", ""]
        for name, report in ev["search"].items():
            md += evidence_table(name, report)
        md += regret_table(ev["search"]) + [""]
    if ev["search_variants"]:
        md += ["## N = 4: regret of several solvers, trained, against the best split the search found", ""]
        for name, report in ev["search_variants"].items():
            md += evidence_table(f"{name} (N = 4, solvers)", report)
        md += regret_table(ev["search_variants"]) + [""]
    if ev["margin"]:
        md += ["## Experts trained on their interval widened by a margin (train.margin)", ""]
        for name, report in ev["margin"].items():
            md += evidence_table(f"{name}, margin", report) + margin_table(name, report, ev["landscapes"].get(name))
    md += ["## Every landscape", ""]
    for name, report in {**ev["landscapes"], **ev["regimes"]}.items():
        md += evidence_table(name, report)
    (out / "evidence.md").write_text("\n".join(md) + "\n")
    return [out / "evidence.md", *_evidence_figures(lands, out)]


def _evidence_figures(lands: list[Landscape], out: Path) -> list[Path]:
    """Each N = 2 landscape's figures (and benchmarks/boundary_anatomy.py's, where it ran) from its run folder."""
    copied = []
    for land in lands:
        if land.runs is None or land.settings.get("section") != "landscapes":
            continue
        key = land.settings.get("key", land.name)
        for src, dst in (("landscape.png", f"evidence_{key}.png"), ("variants.png", f"evidence_{key}_variants.png"),
                         ("anatomy.png", f"anatomy_{key}.png"), ("anatomy.md", f"anatomy_{key}.md")):
            if (land.runs / src).exists():
                shutil.copyfile(land.runs / src, out / dst)
                copied.append(out / dst)
    return copied


# ------------------------------------------------------------------------------------------- rescore_regrets

def rescore(summary: dict) -> list[dict]:
    """Every regret a report resolved, scored again on held-out seeds (the best chosen on the first half of them)."""
    configs = summary["configs"]
    seeds = sorted({int(s) for c in configs.values() for s in c["values"]})
    results = {label: ls.Measured(values={int(s): v for s, v in c["values"].items()}) for label, c in configs.items()}
    splits = [label for label, c in configs.items() if c["kind"] != "single"]
    select = ls.default_selection(seeds)
    rows = []
    for metric, regrets in summary["regret"].items():
        for label, old in regrets.items():
            if not old or not old.get("resolved"):
                continue
            if select is None:
                rows.append({"metric": metric, "label": label, "old": old, "new": None, "note": "fewer than 4 seeds"})
                continue
            new, best = ls.held_out_regret(results, label, metric, seeds, splits, select)
            rows.append({"metric": metric, "label": label, "old": old, "best_held_out": best,
                         "new": None if new is None else {"mean": new.mean, "half_width": new.half_width, "n": new.n,
                                                          "resolved": new.resolved, "method": new.method}})
    return rows


def rescore_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/rescore_regrets.{md,json}: the in-sample regrets the evidence resolved, held out."""
    report, md = {}, ["# In-sample regrets that were resolved, rescored on held-out seeds", "",
                      "`python benchmarks/run_study.py benchmarks/studies/evidence.toml --report` (from the per-seed"
                      " values in the archived reports; nothing rerun). Old: best and regret on the same seeds. New:"
                      " best chosen on the first half of the seeds, regret paired over the rest. The rows: every regret"
                      " an archived report flagged resolved (one-sided then: only worse was flagged). Regrets above 0"
                      f" = worse than the best; {LEGEND} than it.", ""]
    kept = lost = 0
    for section, entries in _evidence_sections(lands).items():
        for name, entry in entries.items():
            rows = rescore(entry["summary"])
            if not rows:
                continue
            report[f"{section}/{name}"] = rows
            md += [f"## {section} / {name}", "", "| metric | configuration | in-sample | held out | still resolved |",
                   "|---|---|---|---|---|"]
            for r in rows:
                o, n = r["old"], r["new"]
                new = "n/a" if n is None else (marked(f"{n['mean']:+.4g} ± {n['half_width']:.2g}", n["mean"],
                                                      n["half_width"]) + f" (n={n['n']})")
                still = n is not None and n["resolved"]
                kept, lost = kept + still, lost + (not still)
                old = marked(f"{o['mean']:+.4g} ± {o['half_width']:.2g}", o["mean"], o["half_width"])
                md.append(f"| {r['metric']} | {r['label']} | {old} | {new} | {'yes' if still else '**no**'} |")
            md.append("")
    md.insert(4, f"{kept + lost} in-sample resolved regrets: {kept} still resolved on held-out seeds, {lost} not.\n")
    paths = [out / "rescore_regrets.md", out / "rescore_regrets.json"]
    paths[1].write_text(json.dumps(report, indent=1) + "\n")
    paths[0].write_text("\n".join(md) + "\n")
    return paths


def methods_table_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/methods_table.{md,json} (benchmarks/methods_page.py): every split method in one table."""
    from methods_page import methods_page

    return methods_page(lands, out)


def methods_cifar_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/methods_cifar.{md,json}: the same table for the CIFAR-10 landscape (issue 37, point 3)."""
    from methods_page import methods_page

    return methods_page(lands, out, stem="methods_cifar", study="benchmarks/studies/cifar8_methods.toml")


def capacity_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/cifar/<study out's name>.{md,json}: does capacity bind? The wider single network (the
    study's one baseline besides N=1) minus the experts' size (N=1) at equal steps, paired by seed: the rule of
    PREREGISTRATION.md (addenda I, J) is that capacity binds iff this is resolved better on the primary metric.
    Beside it: the uniform N = 2 split minus N=1 and the wide network minus the split, on every metric."""
    paths = []
    for land in lands:
        report, primary = land.report, land.report["settings"]["primary"]
        configs = report["summary"]["configs"]
        wide = [label for label, c in configs.items() if c["kind"] == "single" and label != "N=1"]
        if len(wide) != 1 or "N=1" not in configs or "uniform" not in configs:
            raise ValueError(f"{land.name}: the capacity page needs N=1, uniform and one wider baseline; has "
                             f"{sorted(configs)}")
        wide, metrics = wide[0], report["summary"]["metrics"]
        seeds = sorted(configs["N=1"]["values"], key=int)
        d = paired_difference(*([configs[c]["values"][s][primary] for s in seeds] for c in (wide, "N=1")))
        binds = side(d.mean, d.half_width, ls.higher_is_better(primary)) == "better"
        pairs = [(wide, "N=1"), ("uniform", "N=1"), (wide, "uniform")]
        lines = [f"# Does capacity bind? {land.name}", "", f"`{report['command']}`", "",
                 f"Seeds {seeds}; {wide} is `{'; '.join(configs[wide]['bindings'])}`. Rule (fixed before the runs, "
                 "benchmarks/results/cause/PREREGISTRATION.md): capacity binds iff "
                 f"{wide} − N=1 on `{primary}` is resolved better at 95 %.", "",
                 f"**{wide} − N=1 on {primary}: {d.mean:+.3f} ± {d.half_width:.3f}: capacity "
                 f"{'binds' if binds else 'is not shown to bind'}.**", "",
                 "| metric | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |", "|---|---|---|---|"]
        for m in metrics:
            lines.append(f"| {m} {_arrow(m)} | " + " | ".join(paired(report, a, b, m) for a, b in pairs) + " |")
        lines += ["", PAIRED_LEGEND + ".", "", "| configuration | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for label in ("N=1", "uniform", wide):
            row = [statistics.fmean(configs[label]["values"][s][m] for s in seeds) for m in metrics]
            lines.append(f"| {label} | " + " | ".join(f"{v:.4g}" for v in row) + " |")
        lines += ["", "Means over the seeds. Source: " + str(land.source.relative_to(REPO)
                                                            if land.source.is_relative_to(REPO) else land.source)]
        stem = Path(land.settings["out"]).name
        (out / "cifar").mkdir(parents=True, exist_ok=True)
        paths += _write_page(out / "cifar", stem, lines + [""], {
            "landscape": land.name, "primary": primary, "wide": wide, "seeds": seeds, "binds": binds,
            "wide_minus_single": {"mean": d.mean, "half_width": d.half_width, "n": d.n}})
    return paths


def warm_race_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/warm_race.{md,json}: study L's rule (PREREGISTRATION.md, addendum of 21:15 UTC): warm_race
    must not be resolved worse than the uniform split from scratch on the primary metric, on any regime; beside it
    warm_split − uniform and warm_race − warm_split on every metric, the race by seed (its choice against the sign
    of that seed's warm_split − uniform) and the extra compute. Races and costs come from the runs, else from the
    committed JSON."""
    return _race_page(lands, out, "warm_race", "# Deciding the warm start late: study L", "2026-12-07 21:15 UTC")


def warm_race_margin_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/warm_race_margin.{md,json}: study M's rule (PREREGISTRATION.md, addendum of 23:36 UTC):
    warm_race_margin must not be resolved worse than the uniform split from scratch on the primary metric, on any
    regime; reported as study L's page."""
    return _race_page(lands, out, "warm_race_margin", "# The late race with a margin: study M", "2026-12-07 23:36 UTC")


def warm_share_page(lands: list[Landscape], out: Path) -> list[Path]:
    """benchmarks/results/warm_share.{md,json} (exploratory): the warm start at uniform boundaries with each share of
    the budget (configurations ``share<s>``) minus the uniform split from scratch, paired by seed, on every metric."""
    lines, data = ["# How much to warm-start: the share (exploratory)", "",
                   "Not preregistered: seeds 980–983 chose nothing else; a rule read off this page needs fresh seeds. "
                   "`python benchmarks/run_study.py benchmarks/studies/warm_share.toml --report`.", ""], {"regimes": {}}
    for land in lands:
        report = land.report
        configs, metrics = report["summary"]["configs"], report["summary"]["metrics"]
        shares = sorted((c for c in configs if c.startswith("share")), key=lambda c: float(c[len("share"):]))
        lines += [f"## {land.name}", "", f"`{report['command']}`", "",
                  "| minus uniform | " + " | ".join(f"{m} {_arrow(m)}" for m in metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        lines += [f"| {c} | " + " | ".join(paired(report, c, "uniform", m) for m in metrics) + " |" for c in shares]
        if len(shares) > 1:  # how much the share itself moves it: the largest minus the smallest
            lines.append(f"| {shares[-1]} − {shares[0]} | "
                         + " | ".join(paired(report, shares[-1], shares[0], m) for m in metrics) + " |")
        lines += ["", PAIRED_LEGEND + ".", ""]
        seeds = sorted(configs["uniform"]["values"], key=int)
        data["regimes"][land.name] = {}
        for c in shares:
            d = {m: paired_difference(*([configs[k]["values"][s][m] for s in seeds] for k in (c, "uniform")))
                 for m in metrics}
            data["regimes"][land.name][c] = {m: {"mean": v.mean, "half_width": v.half_width} for m, v in d.items()}
    return _write_page(out, "warm_share", lines, data)


def _race_page(lands: list[Landscape], out: Path, race_label: str, title: str, filed: str) -> list[Path]:
    """A late race's page (warm_race, warm_race_margin): the rule race − uniform not resolved worse on any regime."""
    before = stored(race_label).get("regimes", {})
    lines, data = [title, ""], {"regimes": {}}
    for land in lands:
        report, primary = land.report, land.report["settings"]["primary"]
        configs, metrics = report["summary"]["configs"], report["summary"]["metrics"]
        pairs = [(race_label, "uniform"), ("warm_split", "uniform"), (race_label, "warm_split")]
        pairs += [(race_label, "uniform_eq")] if "uniform_eq" in configs else []  # L2: at warm_race's compute
        seeds = sorted(configs["uniform"]["values"], key=int)
        value = {c: {s: configs[c]["values"][s][primary] for s in seeds} for c in ("uniform", "warm_split", race_label)}
        d = paired_difference(*([value[c][s] for s in seeds] for c in (race_label, "uniform")))
        holds = side(d.mean, d.half_width, ls.higher_is_better(primary)) != "worse"
        races, extra = _races(land.runs, race_label), extra_cost(land.runs, race_label, None)[0]
        if land.runs is None:
            races, extra = before.get(land.name, {}).get("races", {}), before.get(land.name, {}).get("extra_compute")
        part = {s: value["warm_split"][s] - value["uniform"][s] for s in seeds}
        agree = sum(races[s]["warm"] == (part[s] < 0) for s in races if s in part)
        lines += [f"## {land.name}", "", f"`{report['command']}`", "",
                  f"**{race_label} − uniform on {primary}: {d.mean:+.4f} ± {d.half_width:.4f}: the rule "
                  f"{'holds' if holds else 'fails'} (not resolved worse is required).** Extra compute of {race_label}: "
                  + (f"{extra:.3f} of the budget." if extra is not None else "not recorded."), "",
                  "| metric | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |", "|---|" + "---|" * len(pairs)]
        lines += [f"| {m} {_arrow(m)} | " + " | ".join(paired(report, a, b, m) for a, b in pairs) + " |"
                  for m in metrics]
        lines += ["", PAIRED_LEGEND + ".", "", f"| seed | race: warm − scratch loss (± 2 s.e.) | choice | warm_split − "
                  f"uniform ({primary}) | {race_label} − uniform |", "|---|---|---|---|---|"]
        for s in seeds:
            r = races.get(s)
            race = f"{r['difference']:+.4f} ± {2 * r['se']:.4f}" if r else "—"
            choice = ("warm" if r["warm"] else "scratch") if r else "—"
            lines.append(f"| {s} | {race} | {choice} | {part[s]:+.4f} | "
                         f"{value[race_label][s] - value['uniform'][s]:+.4f} |")
        lines += ["", f"The race chose as the seed's warm_split − uniform turned out (warm where it is below 0) on "
                  f"{agree} of {len(races)} seeds.", ""]
        lines += other_rule(report, race_label, races, seeds, primary)
        data["regimes"][land.name] = {"primary": primary, "seeds": seeds, "holds": holds, "races": races,
                                      "extra_compute": extra, "agree": agree,
                                      "race_minus_uniform": {"mean": d.mean, "half_width": d.half_width}}
    holds = all(r["holds"] for r in data["regimes"].values())
    lines[1:1] = ["", f"Rule, fixed before the runs (benchmarks/results/cause/PREREGISTRATION.md, addendum of "
                  f"{filed}): {race_label} − uniform must not be resolved worse on any regime. "
                  f"**{'It holds' if holds else 'It fails'} on {len(data['regimes'])} regime(s).**"]
    return _write_page(out, race_label, lines, data)


def other_rule(report: dict, race_label: str, races: dict[str, dict], seeds: list[str], primary: str) -> list[str]:
    """The other late-race rule read off the same races: the plain race (warm iff the difference < 0) on the margin
    race's seeds, the margin race (warm iff difference + 2 s.e. < 0) on the plain race's. Each candidate's run is the
    same weights bit for bit as the run alone (tests/test_adaptation.py): the warm split's, or the uniform split's."""
    configs = report["summary"]["configs"]
    seeds = [s for s in seeds if s in races]
    if not seeds:
        return []
    margin = race_label == "warm_race"  # the page's rule is the plain race: read the margin rule off it
    other = "warm_race_margin" if margin else "warm_race"
    warm_run = race_label if margin else "warm_split"
    warm = {s: races[s]["difference"] + (2 * races[s]["se"] if margin else 0.0) < 0 for s in seeds}
    value = [configs[warm_run if warm[s] else "uniform"]["values"][s][primary] for s in seeds]
    d = paired_difference(value, [configs["uniform"]["values"][s][primary] for s in seeds])
    differ = [s for s in seeds if warm[s] != races[s]["warm"]]
    cell = marked(f"{d.mean:+.4f} ± {d.half_width:.4f}", d.mean, d.half_width, ls.higher_is_better(primary))
    return [f"The other rule read off the same races ({other}; its run on a seed is the warm split's or the uniform "
            f"split's, the same weights bit for bit): {other} − uniform on {primary} {cell}. The two rules choose "
            f"differently on {len(differ)} of {len(seeds)} seeds" + (f" ({', '.join(differ)})." if differ else "."),
            ""]


def _races(runs: Path | None, label: str = "warm_race") -> dict[str, dict]:
    """A late race's decision by seed ({seed: {difference, se, warm}}) from the runs' adaptation.json; {} without."""
    out = {}
    for path in sorted((runs / "runs" / label).glob("seed*/checkpoints/adaptation.json")) if runs else []:
        d = json.loads(path.read_text()).get("decision") or {}
        if "difference" in d:
            out[path.parts[-3][len("seed"):]] = {"difference": d["difference"], "se": d["se"], "warm": d["warm"]}
    return out


PAGES = {"experts_grid": grid_page, "experts_beyond": beyond_page, "experts_more_seeds": more_seeds_page,
         "evidence": evidence_page, "rescore_regrets": rescore_page, "methods_table": methods_table_page,
         "methods_cifar": methods_cifar_page, "capacity": capacity_page, "warm_race": warm_race_page,
         "warm_race_margin": warm_race_margin_page, "warm_share": warm_share_page}


def _write_page(out: Path, stem: str, lines: list[str], data: dict) -> list[Path]:
    """OUT/STEM.md from ``lines`` and OUT/STEM.json from ``data``; returns both paths."""
    paths = [out / f"{stem}.md", out / f"{stem}.json"]
    paths[0].write_text("\n".join(lines))
    paths[1].write_text(json.dumps(data, indent=1) + "\n")
    return paths
