"""What the boundary adds beyond the warm start: the preregistered studies of benchmarks/results/cause/.

    python benchmarks/cause_report.py        # reads each study's landscape report, writes cause.{md,json}

Each study (benchmarks/studies/<name>.toml, run by benchmarks/run_study.py) leaves `<out>/landscape.json`; a copy is
archived under benchmarks/results/cause/<name>-landscape.json, so a fresh clone regenerates the tables without
training. Every figure is a paired difference over the study's seeds with its two-sided 95 % t-interval (below 0:
the first configuration is better); resolved cells are bold and say (better) or (worse). Where a study has a warm-started
landscape (wb0.2 ... wb0.8), warm methods are also scored against its best point, held out (chosen on the first
seeds, scored on the rest, as tools/landscape.py does for the scratch landscape).
"""

from __future__ import annotations

import json
import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cbsflow import landscape as ls  # noqa: E402
from cbsflow.compare import paired_difference  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "cause"
STUDIES = ["cause_compare", "confirm_board_mid", "confirm_rings", "confirm_board_early_w16d2", "cause_n4_board",
           "cause_n4_board_late", "cause_warm_landscape_board_late", "cause_warm_landscape_board"]
METRICS = ("sliced_wasserstein", "mmd", "nll")
DIGITS = {"cause_warm_digits_unet": ("fd_randconv", "nll"), "cause_warm_digits_sit": ("fd_randconv", "nll")}  # study F
SHORT = {"sliced_wasserstein": "SW", "mmd": "MMD", "nll": "NLL", "fd_randconv": "FD"}
PAIRS = [("warm_split", "uniform", "the shipped method vs uniform from scratch (H1)"),
         ("warm_split", "warm_uniform", "the boundary's part: same warm start (H2)"),
         ("warm_uniform", "uniform", "the warm start's part: same boundary (H3)")]


def load(name: str, regime: str | None = None) -> tuple[dict, dict[str, ls.Measured], list[int]] | None:
    """A study's landscape report (the run's, archived here; else the archived copy); ``regime``: one combination
    of a matrix study."""
    with open(REPO / "benchmarks" / "studies" / f"{name}.toml", "rb") as f:
        study = tomllib.load(f)
    out = study["out"].format(name=regime) if regime else study["out"]
    run = REPO / out / "landscape.json"
    archived = RESULTS / (f"{name}-{regime}-landscape.json" if regime else f"{name}-landscape.json")
    if run.exists():
        shutil.copyfile(run, archived)
    if not archived.exists():
        return None
    data = json.loads(archived.read_text())
    results = {label: ls.Measured(values={int(s): v for s, v in c["values"].items()},
                                  boundaries={int(s): b for s, b in c["boundaries"].items()})
               for label, c in data["summary"]["configs"].items()}
    return data, results, list(data["settings"]["seeds"])


def fmt(mean: float, half: float) -> str:
    text = f"{mean:+.4f} ± {half:.4f}"
    return f"**{text} (better)**" if mean + half < 0 else f"**{text} (worse)**" if mean - half > 0 else text


def pair(results, a: str, b: str, metric: str, seeds) -> dict | None:
    if a not in results or b not in results:
        return None
    x, y = results[a].metric(metric, seeds), results[b].metric(metric, seeds)
    if x is None or y is None:
        return None
    d = paired_difference(ls.signed(metric, x), ls.signed(metric, y))
    return {"mean": d.mean, "half_width": d.half_width, "n": d.n}


def pair_table(results, pairs, seeds, out: dict, metrics=METRICS) -> list[str]:
    """Markdown rows of paired differences (first − second) on every metric; each also recorded in out['pairs']."""
    lines = ["| comparison (first − second) | " + " | ".join(SHORT[m] for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for a, b, what in pairs:
        cells = []
        for m in metrics:
            p = pair(results, a, b, m, seeds)
            out["pairs"].setdefault(f"{a} - {b}", {})[m] = p
            cells.append("—" if p is None else fmt(p["mean"], p["half_width"]))
        lines.append(f"| {a} − {b}{': ' + what if what else ''} | " + " | ".join(cells) + " |")
    return lines


def references(data: dict) -> tuple[list[str], list[str]]:
    """The fixed splits from scratch (grid, uniform, a search's) and the warm-started ones (wb…; at N >= 3 also
    warm_uniform, the warm search's start, which its uniform point repeats) of a landscape report."""
    configs = data["summary"]["configs"]
    scratch = [k for k, c in configs.items() if c["kind"] in ("grid", "uniform", "search")]
    warm = [k for k in configs if k.startswith("wb")]
    if warm and data["settings"].get("n", 2) >= 3 and "warm_uniform" in configs:
        warm.append("warm_uniform")
    return scratch, warm


def regrets(data: dict, results, seeds) -> list[str]:
    """Held-out regret of the warm methods against the best scratch and the best warm-started fixed split."""
    configs, primary = data["summary"]["configs"], data["settings"].get("primary", "sliced_wasserstein")
    scratch, warm = references(data)
    if not warm:
        return []
    select = seeds[:2]
    lines = ["", f"Held-out regret on {SHORT.get(primary, primary)} (best chosen on seeds {select}, scored on "
             f"{seeds[2:]}): against the best fixed split from scratch, and against the best fixed split with the same "
             "warm start.", "",
             "| method | mean boundary | vs best scratch split | vs best warm-started split |", "|---|---|---|---|"]
    for label in ("warm_split", "warm_uniform", "uniform", *[w for w in warm if w != "warm_uniform"],
                  *[k for k in ("N=1",) if k in configs]):
        cells = []
        for among in (scratch, warm):
            r, best = ls.held_out_regret(results, label, primary, seeds, among, select)
            cells.append("—" if r is None else f"{fmt(r.mean, r.half_width)} ({best})")
        b = configs[label]["mean_boundaries"]
        lines.append(f"| {label} | {', '.join(f'{v:.3f}' for v in b[1:-1]) or '—'} | {cells[0]} | {cells[1]} |")
    return lines


def section(name: str, metrics=METRICS) -> tuple[list[str], dict]:
    loaded = load(name)
    if loaded is None:
        return [f"## {name}", "", "not run yet"], {}
    data, results, seeds = loaded
    out = {"seeds": seeds, "pairs": {}}
    lines = [f"## {name}", "", f"`benchmarks/studies/{name}.toml`; report `benchmarks/results/cause/{name}-landscape.json`;"
             f" {len(seeds)} paired seeds {seeds}.", "",
             *pair_table(results, PAIRS, seeds, out, metrics)]
    means = {k: c["mean_boundaries"][1:-1] for k, c in data["summary"]["configs"].items() if k.startswith("warm")}
    lines += ["", "Mean boundaries: " + "; ".join(f"{k} {', '.join(f'{v:.3f}' for v in b)}" for k, b in means.items())]
    return lines + regrets(data, results, seeds), out


def config_table(name: str, metrics) -> list[str]:
    """Each configuration's mean ± s.e. over the seeds on ``metrics`` (the archived report's summary)."""
    loaded = load(name)
    if loaded is None:
        return []
    configs = loaded[0]["summary"]["configs"]
    lines = ["Each configuration, mean ± s.e. over the seeds:", "",
             "| configuration | boundary | " + " | ".join(SHORT[m] for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for label, c in configs.items():
        b = ", ".join(f"{v:.3f}" for v in c["mean_boundaries"][1:-1]) or "—"
        cells = [f"{c['stats'][m][0]:.4f} ± {c['stats'][m][1]:.4f}" if c["stats"].get(m) else "—" for m in metrics]
        lines.append(f"| {label} | {b} | " + " | ".join(cells) + " |")
    return lines + [""]


def restated() -> tuple[list[str], dict]:
    """The 25-seed early-board claim (seeds added 5 -> 15 -> 25 until it resolved) on the 20 seeds that did not choose
    the regime or the methods (5-24), from the archived report."""
    path = REPO / "benchmarks" / "results" / "experts" / "board_early-w16d2-more-landscape.json"
    data = json.loads(path.read_text())
    results = {label: ls.Measured(values={int(s): v for s, v in c["values"].items()})
               for label, c in data["summary"]["configs"].items()}
    fresh = [s for s in data["settings"]["seeds"] if s >= 5]
    lines = ["## The 25-seed early-board claim, restated on the seeds that chose nothing", "",
             f"`{path.relative_to(REPO)}` (board_early-w16d2: the regime was chosen with seeds 0-4, and seeds were "
             f"then added until the result resolved); here only seeds {fresh[0]}-{fresh[-1]} ({len(fresh)}).", "",
             ]
    out = {"seeds": fresh, "pairs": {}}
    pairs = [("centred_default", "uniform", ""), ("warm_split", "centred_default", ""), ("warm_split", "uniform", "")]
    return lines + pair_table(results, pairs, fresh, out), out


def grid_boundary_parts() -> tuple[list[str], dict]:
    """What the boundary adds beyond the warm start on each regime of the N = 2 grid (warm_split − warm_uniform,
    paired over the grid's 5 seeds), from the archived grid reports."""
    lines = ["## The regime grid (N = 2): the boundary's part on each regime", "",
             "`benchmarks/results/experts/<regime>-methods.json` (the grid, `benchmarks/studies/grid.toml`; seeds 0-4 "
             "chose the warm split as the default, so these are not confirmations). warm_split − warm_uniform: the "
             "same warm start, the boundary the only difference; in the last column the warm start's part on SW, "
             "warm_uniform − uniform: the same boundary, the start the only difference.", "",
             "| regime | " + " | ".join(SHORT[m] for m in METRICS) + " | warm_split's mean boundary | "
             "warm start's part (SW) |", "|---|" + "---|" * len(METRICS) + "---|---|"]
    out = {}
    for path in sorted((REPO / "benchmarks" / "results" / "experts").glob("*-methods.json")):
        data = json.loads(path.read_text())
        configs = data["summary"]["configs"]
        if "warm_split" not in configs or "warm_uniform" not in configs:
            continue
        results = {k: ls.Measured(values={int(s): v for s, v in configs[k]["values"].items()})
                   for k in ("warm_split", "warm_uniform", "uniform") if k in configs}
        seeds, regime = list(data["settings"]["seeds"]), path.name[: -len("-methods.json")]
        pairs = {m: pair(results, "warm_split", "warm_uniform", m, seeds) for m in METRICS}
        start = pair(results, "warm_uniform", "uniform", "sliced_wasserstein", seeds)
        out[regime] = {**pairs, "warm_start_sw": start}
        cells = ["—" if p is None else fmt(p["mean"], p["half_width"]) for p in [*pairs.values(), start]]
        b = configs["warm_split"]["mean_boundaries"][1:-1]
        lines.append(f"| {regime} | " + " | ".join(cells[:-1]) + f" | {', '.join(f'{v:.3f}' for v in b)} | "
                     f"{cells[-1]} |")
    return lines, out


SUMMARY = {"cause_compare": "compare demo (half-scale board, 16×1, N = 2), seeds 0–4",
           "confirm_board_mid": "board at scale 0.75 (16×1, N = 2), fresh seeds 100–107",
           "confirm_rings": "rings (16×1, N = 2), fresh seeds 100–107",
           "confirm_board_early_w16d2": "early board (16×2, N = 2), fresh seeds 200–209",
           "cause_n4_board": "4×4 board (16×1, N = 4), seeds 0–5",
           "cause_n4_board_late": "late board (16×1, N = 4), seeds 0–5"}


WARM_LANDSCAPES = {"cause_compare": "compare demo (half-scale board, 16×1)",
                   "cause_warm_landscape_board_late": "late board, 16×1 (grid)",
                   "cause_warm_landscape_board": "4×4 board, 16×1 (grid)",
                   "cause_n4_board": "4×4 board, 16×1, N = 4 (searches)",
                   "cause_n4_board_late": "late board, 16×1, N = 4 (searches)",
                   "cause_warm_digits_unet": "digits, tiny UNet",
                   "cause_warm_digits_sit": "digits, tiny SiT"}


WARM_GRID = ["board-w16d1raw", "board-w16d2", "board-w32d1", "board-w32d3raw", "board_late-w16d1raw",
             "board_late-w16d2", "board_late-w32d1", "board_early-w16d1", "board_early-w16d1raw", "board_early-w16d2",
             "board_early-w32d1", "board_early-w32d3raw"]  # cause_warm_grid.toml, in the order they run


def warm_regret_table() -> list[str]:
    """The warm split's held-out SW regret against the best scratch and the best warm-started fixed split."""
    lines = ["## The warm split against the best warm-started fixed split", "",
             "Held-out regret on each landscape's primary metric (best chosen on its first two seeds, scored on the "
             "others); below 0: better than that best split. At N = 4 both references are coordinate searches from "
             "uniform with the same settings, the warm one over warm-started splits.", "",
             "| landscape | metric | warm_split's mean boundaries | vs best split from scratch | "
             "vs best warm-started split |", "|---|---|---|---|---|"]
    grid = [(("cause_warm_grid", r), f"{r} (grid)") for r in WARM_GRID]
    for key, what in [((name, None), what) for name, what in WARM_LANDSCAPES.items()] + grid:
        loaded = load(*key)
        if loaded is None:
            lines.append(f"| {what} | — | — | not run yet | not run yet |")
            continue
        data, results, seeds = loaded
        configs, primary = data["summary"]["configs"], data["settings"].get("primary", "sliced_wasserstein")
        cells = [SHORT.get(primary, primary)]
        for among in references(data):
            if not among:  # this reference's landscape has not run
                cells.append("not run yet")
                continue
            r, best = ls.held_out_regret(results, "warm_split", primary, seeds, among, seeds[:2])
            cells.append("—" if r is None else f"{fmt(r.mean, r.half_width)} ({best})")
        b = configs["warm_split"]["mean_boundaries"][1:-1]
        lines.append(f"| {what} | {cells[0]} | {', '.join(f'{v:.3f}' for v in b)} | {cells[1]} | {cells[2]} |")
    return lines


def summary_table(record: dict) -> list[str]:
    """One row per study: the three comparisons on SW, and the boundary's part on NLL."""
    lines = ["## Summary", "", "SW of each comparison (NLL for the boundary's part beside it); every study's full "
             "table is below.", "",
             "| study | shipped − uniform (H1) | boundary: warm_split − warm_uniform (H2) | H2 on NLL | "
             "warm start: warm_uniform − uniform (H3) |", "|---|---|---|---|---|"]
    for name, what in SUMMARY.items():
        pairs = record.get(name, {}).get("pairs")
        if not pairs:
            continue
        cell = lambda key, m: "—" if pairs[key][m] is None else fmt(pairs[key][m]["mean"], pairs[key][m]["half_width"])
        lines.append(f"| {what} | {cell('warm_split - uniform', 'sliced_wasserstein')} | "
                     f"{cell('warm_split - warm_uniform', 'sliced_wasserstein')} | "
                     f"{cell('warm_split - warm_uniform', 'nll')} | {cell('warm_uniform - uniform', 'sliced_wasserstein')} |")
    return lines


def main() -> int:
    md = ["# What the boundary adds beyond the warm start", "",
          "Preregistered in `benchmarks/results/cause/PREREGISTRATION.md` (seeds and hypotheses fixed before the "
          "runs). Regenerate: `python benchmarks/cause_report.py` (reads the archived reports; "
          "`python benchmarks/run_study.py benchmarks/studies/<name>.toml` reruns a study). Each cell: mean paired "
          "difference ± the half-width of its two-sided 95 % t-interval; below 0: the first is better; "
          "resolved cells are bold and say (better) or (worse).", ""]
    record = {}
    for name in STUDIES:
        lines, out = section(name)
        md += lines + [""]
        record[name] = out
    for name, metrics in DIGITS.items():
        lines, out = section(name, metrics)
        md += lines + [""] + config_table(name, metrics)
        record[name] = out
    head = len(md)
    md[head:head] = summary_table(record) + [""] + warm_regret_table() + [""]
    lines, record["grid_boundary_part"] = grid_boundary_parts()
    md += lines + [""]
    lines, record["restated_25_seeds"] = restated()
    md += lines + [""]
    (RESULTS / "cause.md").write_text("\n".join(md))
    (RESULTS / "cause.json").write_text(json.dumps(record, indent=1))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
