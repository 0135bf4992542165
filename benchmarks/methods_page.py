"""benchmarks/results/methods_table.{md,json} (the toys) and methods_cifar.{md,json} (CIFAR-10): every split method in
one table per regime (issue 37, point 3).

For each method and single-network baseline of a landscape: its mean boundary, the primary metric (mean ± s.e.), the
held-out regret against the best fixed split from scratch and against the best warm-started fixed split (wb…), the
paired difference to the uniform split from scratch, and its extra compute (counted, where the method records it).
Then, over the regimes, how often each method is resolved better or worse than uniform and than the scratch optimum.
Written by ``python benchmarks/run_study.py benchmarks/studies/methods_toys.toml`` (``--report``: from the archive).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from cbsflow import landscape as ls
from cbsflow.compare import paired_difference

import study_report as sr


def _results(report: dict) -> dict[str, ls.Measured]:
    return {label: ls.Measured(values={int(s): v for s, v in c["values"].items()},
                               boundaries={int(s): b for s, b in c["boundaries"].items()})
            for label, c in report["summary"]["configs"].items()}


def method_rows(land: sr.Landscape, stem: str = "methods_table") -> dict[str, dict]:
    """One row per configuration that is not a fixed scratch split: boundary, metric, regrets, difference to
    uniform, counted extra compute."""
    report, primary = land.report, land.report["settings"]["primary"]
    configs, results, seeds = report["summary"]["configs"], _results(report), report["settings"]["seeds"]
    select = report["settings"].get("select_seeds") or ls.default_selection(seeds)
    scratch = [k for k, c in configs.items() if c["kind"] in ("grid", "uniform", "search")]
    uniform_s = [t["train"] for t in sr._timings(land.runs, "uniform") if "train" in t]
    fixed_s = sorted(uniform_s)[len(uniform_s) // 2] if uniform_s else None
    warm = [k for k in configs if k.startswith("wb")]
    rows = {}
    for label, c in configs.items():
        if c["kind"] in ("grid", "search") or label.startswith("wb"):
            continue
        row = {"kind": c["kind"], "boundary": c["mean_boundaries"][1:-1], "stat": c["stats"][primary]}
        for key, among in (("vs_scratch", scratch), ("vs_warm", warm)):
            r, best = ls.held_out_regret(results, label, primary, seeds, among, select) if among else (None, None)
            row[key] = None if r is None else {"mean": r.mean, "half_width": r.half_width, "best": best}
        d = paired_difference(results[label].metric(primary, seeds), results["uniform"].metric(primary, seeds))
        row["vs_uniform"] = {"mean": d.mean, "half_width": d.half_width}
        row["extra_compute"], row["extra_wall"] = sr.extra_cost(land.runs, label, fixed_s)
        if land.runs is None:  # read back from the archive: the runs' costs as the committed page has them
            before = sr.stored(stem).get("regimes", {}).get(land.name, {}).get(label, {})
            row["extra_compute"], row["extra_wall"] = before.get("extra_compute"), before.get("extra_wall")
        rows[label] = row
    return rows


def choices(land: sr.Landscape, stem: str = "methods_table") -> dict[str, dict]:
    """What the deciding warm splits chose, per label and seed, from the runs under the study's ``out``; read back
    from the committed page's JSON where the runs are not on this machine."""
    if land.runs is None:
        return sr.stored(stem).get("choices", {}).get(land.name, {})
    out = {label: pilot_decisions(land, label) for label in ("warm_pilot", "warm_adaptive")}
    out.update({label: race_decisions(land, label) for label in ("warm_transfer", "warm_transfer_end", "warm_race")})
    return {label: seen for label, seen in out.items() if seen}


def per_seed(report: dict, a: str, b: str = "uniform") -> dict[str, float]:
    """a − b per seed on the primary metric ({} without both)."""
    configs, primary = report["summary"]["configs"], report["settings"]["primary"]
    if a not in configs or b not in configs:
        return {}
    return {s: configs[a]["values"][s][primary] - configs[b]["values"][s][primary]
            for s in sorted(configs[b]["values"], key=int) if s in configs[a]["values"]}


def seed_part(report: dict) -> dict[str, float]:
    """The warm start's part per seed: warm_uniform − uniform on the primary metric ({} without both)."""
    return per_seed(report, "warm_uniform")


def pilot_decisions(land: sr.Landscape, label: str = "warm_pilot") -> dict[str, dict]:
    """Per seed, the pilot's cross-interval gradient affinity and its decision (checkpoints/adaptation.json of the
    runs under the study's ``out``); {} where the runs are not on this machine."""
    import json

    out = {}
    for path in sorted((land.runs / "runs" / label).glob("seed*/checkpoints/adaptation.json")) if land.runs else []:
        decision = json.loads(path.read_text()).get("decision")
        if decision:
            checks = decision.get("checks") or [{"steps": decision["pilot_steps"], "affinity": decision["affinity"]}]
            out[path.parts[-3][len("seed"):]] = {"affinity": decision["affinity"], "warm": decision["warm"],
                                                 "checks": checks, "shared_steps": decision.get("shared_steps")}
    return out


def race_decisions(land: sr.Landscape, label: str) -> dict[str, dict]:
    """A race's decision by seed (warm_transfer, warm_race): {seed: {difference, se, warm}} from the runs; {} without."""
    import json

    out = {}
    for path in sorted((land.runs / "runs" / label).glob("seed*/checkpoints/adaptation.json")) if land.runs else []:
        d = json.loads(path.read_text()).get("decision")
        if d and "difference" in d:
            out[path.parts[-3][len("seed"):]] = {"difference": d["difference"], "se": d["se"], "warm": d["warm"]}
    return out


def race_line(label: str, races: dict[str, dict], part: dict[str, float], late: bool = False) -> list[str]:
    """A race's loss difference (± 2 s.e.) and choice by seed, and on how many seeds the choice matched the sign of
    ``part`` on that seed (warm where it is below 0): the warm-start part (warm_uniform − uniform) for a race of the
    shared network (warm_transfer), warm_split − uniform for a ``late`` race of the two (warm_race); [] without."""
    if not races:
        return []
    seen = [f"{s}: {d['difference']:+.4f} ± {2 * d['se']:.4f} ({'warm' if d['warm'] else 'scratch'})"
            for s, d in races.items()]
    both = [s for s in races if s in part]
    agree = sum(races[s]["warm"] == (part[s] < 0) for s in both)
    outcome = "warm_split − uniform" if late else "final warm-start part"
    tail = f" It chose as the seed's {outcome} turned out on {agree} of {len(both)} seeds." if both else ""
    what = "warm split − scratch at half the experts' steps" if late else "shared − scratch"
    return [f"{label}'s race ({what} loss) by seed: {', '.join(seen)}.{tail}", ""]


def margin_line(report: dict, races: dict[str, dict]) -> list[str]:
    """warm_race_margin read off warm_race's races (PREREGISTRATION.md, amendment to K of 2026-12-08 00:48 UTC), in
    the words of the late-race pages (``study_report.other_rule``): on a seed whose race resolved the warm split
    (difference + 2 s.e. < 0) warm_race's run, else the uniform split's (the same weights bit for bit); [] without."""
    configs, primary = report["summary"]["configs"], report["settings"]["primary"]
    seeds = [s for s in races if s in configs.get("warm_race", {}).get("values", {})
             and s in configs.get("uniform", {}).get("values", {})]
    return sr.other_rule(report, "warm_race", races, seeds, primary)


def split_part(report: dict) -> dict[str, float]:
    """warm_split − uniform per seed on the primary metric ({} without both): what warm_race's race decides."""
    return per_seed(report, "warm_split")


def _choice(d: dict) -> str:
    if not d["warm"]:
        return "scratch"
    if len(d["checks"]) < 2:
        return "warm"
    rechecks = ", ".join(f"{c['affinity']:+.3f}" for c in d["checks"][1:])
    return f"warm, {d['shared_steps']} shared steps; rechecks {rechecks}"


def pilot_line(rows: dict, decisions: dict[str, dict]) -> list[str]:
    """Each deciding warm split's pilot affinity and choice by seed (``decisions``: label -> seed -> decision),
    beside the warm start's part (warm_uniform − uniform) on this regime."""
    if not any(decisions.values()) or "warm_uniform" not in rows:
        return []
    part = rows["warm_uniform"]["vs_uniform"]
    lines = [f"{label}'s cross-interval gradient affinity by seed: "
             + ", ".join(f"{s}: {d['affinity']:+.3f} ({_choice(d)})" for s, d in seen.items()) + "."
             for label, seen in decisions.items() if seen]
    return lines + [f"The warm start's part here (warm_uniform − uniform): {_cell(part)}.", ""]


def _cell(r: dict | None, best: bool = False) -> str:
    if not r:
        return "—"
    text = sr.marked(f"{r['mean']:+.4f} ± {r['half_width']:.4f}", r["mean"], r["half_width"])
    return text + (f" ({r['best']})" if best and r.get("best") else "")


def attribution(land: sr.Landscape, rows: dict) -> list[str]:
    """Paired over all seeds: the warm start's part at the best scratch boundary (wb<b> − b=<b>, b chosen on the
    selection seeds), the warm split's boundary part (warm_split − warm_uniform) and progressive − warm_uniform (the
    same split at N = 2 by another route: a check)."""
    configs, primary = land.report["summary"]["configs"], land.report["settings"]["primary"]
    best = ((rows.get("uniform") or {}).get("vs_scratch") or {}).get("best")
    pairs = [("warm_split", "warm_uniform"), ("progressive", "warm_uniform")]
    if best and best.startswith("b="):
        pairs.insert(0, (f"wb{float(best[2:]):g}", best))
    elif best == "uniform":
        pairs.insert(0, ("warm_uniform", "uniform"))
    cells = [f"{a} − {b} {sr.paired(land.report, a, b, primary)}" for a, b in pairs if a in configs and b in configs]
    return [f"Paired over all seeds ({primary}): " + "; ".join(cells) + ".", ""] if cells else []


def regime_section(name: str, land: sr.Landscape, rows: dict, stem: str = "methods_table") -> list[str]:
    primary = land.report["settings"]["primary"]
    seeds = land.report["settings"]["seeds"]
    lines = [f"## {name}", "", f"`{land.report['command']}`; seeds {seeds}; primary `{primary}`.", "",
             "| configuration | boundary | mean ± s.e. | vs best scratch split | vs best warm-started split | "
             "− uniform | extra compute: counted / wall |", "|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        b = ", ".join(f"{x:.2f}" for x in row["boundary"]) or "—"
        mu, se = row["stat"] or (float("nan"), float("nan"))
        extra = " / ".join("—" if v is None else f"{100 * v:+.1f} %" for v in (row["extra_compute"], row["extra_wall"]))
        lines.append(f"| {label} ({row['kind']}) | {b} | {mu:.4f} ± {se:.4f} | {_cell(row['vs_scratch'], True)} | "
                     f"{_cell(row['vs_warm'], True)} | {_cell(row['vs_uniform'])} | {extra} |")
    chosen, part = choices(land, stem), seed_part(land.report)
    deciding = {label: chosen.get(label, {}) for label in ("warm_pilot", "warm_adaptive")}
    race = [line for label in ("warm_transfer", "warm_transfer_end")
            for line in race_line(label, chosen.get(label, {}), part)]
    race += race_line("warm_race", chosen.get("warm_race", {}), split_part(land.report), late=True)
    race += margin_line(land.report, chosen.get("warm_race", {}))
    by_seed = ([f"The warm start's part by seed (warm_uniform − uniform): "
                + ", ".join(f"{s}: {v:+.4f}" for s, v in part.items()) + ".", ""] if part and chosen else [])
    return lines + [""] + attribution(land, rows) + pilot_line(rows, deciding) + by_seed + race


def tally(all_rows: dict[str, dict]) -> list[str]:
    """Per configuration, over the regimes: resolved better / worse than uniform and than the scratch optimum."""
    labels = sorted({label for rows in all_rows.values() for label in rows})
    lines = ["## Over the regimes", "", "Regimes where a configuration is resolved better / worse (95 %).", "",
             "| configuration | regimes | vs uniform: better / worse | vs best scratch split: better / worse |",
             "|---|---|---|---|"]
    for label in labels:
        rows = [rows[label] for rows in all_rows.values() if label in rows]
        count = {key: [sr.side(r[key]["mean"], r[key]["half_width"]) for r in rows if r[key]]
                 for key in ("vs_uniform", "vs_scratch")}
        cells = [f"{c.count('better')} / {c.count('worse')}" for c in count.values()]
        lines.append(f"| {label} | {len(rows)} | {cells[0]} | {cells[1]} |")
    return lines


def one_table(all_rows: dict[str, dict]) -> list[str]:
    """Every configuration's held-out regret against the best scratch split, one column per regime, and its median
    extra compute over the regimes (counted / wall, as in the regimes' sections)."""
    labels = list(dict.fromkeys(label for rows in all_rows.values() for label in rows))
    lines = ["## One table", "", "Held-out regret against the best fixed split trained from scratch (95 %; below 0: "
             "better than it), per regime; the regimes' own sections give the reference split, the warm-started "
             "reference and the paired difference to uniform.", "",
             "| configuration | " + " | ".join(all_rows) + " | extra compute (median: counted / wall) |",
             "|---|" + "---|" * (len(all_rows) + 1)]
    for label in labels:
        cells = [_cell(rows[label]["vs_scratch"]) if label in rows else "—" for rows in all_rows.values()]
        extra = []
        for key in ("extra_compute", "extra_wall"):
            seen = [rows[label][key] for rows in all_rows.values() if label in rows and rows[label][key] is not None]
            extra.append(f"{100 * statistics.median(seen):+.1f} %" if seen else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {' / '.join(extra)} |")
    return lines + [""]


def methods_page(lands: list[sr.Landscape], out: Path, stem: str = "methods_table",
                 study: str = "benchmarks/studies/methods_toys.toml") -> list[Path]:
    all_rows = {land.name: method_rows(land, stem) for land in lands}
    head = ["# Every split method at equal compute", "",
            f"`python benchmarks/run_study.py {study} --report` (from the archived reports). "
            "Regrets are held out: the best split is chosen on the study's selection seeds and scored on the others; "
            "'vs best warm-started split' compares with the best fixed split trained from the warm split's shared "
            "start. '− uniform': paired over all seeds. Extra compute: counted (steps or forward passes, where the "
            "method records it) / wall (profile + training against uniform's training, several runs at once). "
            "Lower is better; " + sr.LEGEND + ".", ""]
    sections = [line for name, land in zip(all_rows, lands) for line in regime_section(name, land, all_rows[name], stem)]
    return sr._write_page(out, stem, head + one_table(all_rows) + sections + tally(all_rows),
                          {"regimes": all_rows, "choices": {land.name: choices(land, stem) for land in lands}})
