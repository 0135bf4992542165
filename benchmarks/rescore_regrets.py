"""Rescore every landscape report held in benchmarks/results/evidence.json with held-out regrets.

The reports of 2026-11 scored each configuration's regret against a best chosen on the same seeds (in-sample), which
calls equal configurations "resolved worse" 10-12 % of the time instead of 2.5 %. This script recomputes, from the
per-seed values stored in the reports (nothing is rerun), the regret against a best chosen on the first half of the
seeds and scored on the other half (``cbsflow.landscape.held_out_regret``), and lists every regret that was
resolved in-sample with what it is now.

    python benchmarks/rescore_regrets.py            # writes benchmarks/results/rescore_regrets.{md,json}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cbsflow import landscape as ls  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def measured(summary: dict) -> tuple[dict[str, ls.Measured], list[int]]:
    configs = summary["configs"]
    seeds = sorted({int(s) for c in configs.values() for s in c["values"]})
    out = {label: ls.Measured(values={int(s): v for s, v in c["values"].items()}) for label, c in configs.items()}
    return out, seeds


def rescore(summary: dict) -> list[dict]:
    results, seeds = measured(summary)
    splits = [label for label, c in summary["configs"].items() if c["kind"] != "single"]
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


def main() -> int:
    evidence = json.loads((RESULTS / "evidence.json").read_text())
    report, md = {}, ["# In-sample regrets that were resolved, rescored on held-out seeds", "",
                      "`python benchmarks/rescore_regrets.py` (from the per-seed values in evidence.json; nothing rerun)."
                      " Old: best and regret on the same seeds. New: best chosen on the first half of the seeds, "
                      "regret paired over the rest.", ""]
    kept = lost = 0
    for section, entries in evidence.items():
        for name, entry in entries.items():
            summary = entry.get("summary", entry) if isinstance(entry, dict) else None
            if not summary or "configs" not in summary or "regret" not in summary:
                continue
            rows = rescore(summary)
            if not rows:
                continue
            report[f"{section}/{name}"] = rows
            md += [f"## {section} / {name}", "", "| metric | configuration | in-sample | held out | still resolved |",
                   "|---|---|---|---|---|"]
            for r in rows:
                o, n = r["old"], r["new"]
                new = "n/a" if n is None else f"{n['mean']:+.4g} ± {n['half_width']:.2g} (n={n['n']})"
                still = n is not None and n["resolved"]
                kept, lost = kept + still, lost + (not still)
                md.append(f"| {r['metric']} | {r['label']} | {o['mean']:+.4g} ± {o['half_width']:.2g} | {new} | "
                          f"{'yes' if still else '**no**'} |")
            md.append("")
    md.insert(4, f"{kept + lost} in-sample resolved regrets: {kept} still resolved on held-out seeds, {lost} not.\n")
    (RESULTS / "rescore_regrets.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / "rescore_regrets.md").write_text("\n".join(md) + "\n")
    print(f"{kept + lost} resolved in-sample regrets: {kept} still resolved held out, {lost} not; "
          f"see {RESULTS / 'rescore_regrets.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
