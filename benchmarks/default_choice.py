"""benchmarks/results/default_choice.{md,json}: the shipped split method chosen by the rule fixed before K's results
(benchmarks/results/cause/PREREGISTRATION.md, addendum of 2026-12-08 00:02 UTC; issue 37, point 5), and the one table
of every configuration on every regime, the toys' and CIFAR-10's (issue 37, point 3).

Reads the one table's regimes from the methods pages' JSON (``methods_table.json``: study H's four toy regimes;
``methods_cifar.json``: study K on CIFAR-10, when it exists) and applies the rule:
  1. a candidate qualifies iff its held-out regret against the best fixed split from scratch is not resolved worse
     (95 %) on any regime;
  2. among the qualifiers the default is the one with the lowest median extra compute over the regimes (counted,
     else wall);
  3. if none qualifies: the one resolved worse on the fewest regimes, then the lowest median extra compute.
Candidates are the configurations run on every regime, under their family name (the same method is labelled
``centred_light`` on the toys and ``cbs_dirichlet`` on CIFAR-10). Without K's page the choice is marked provisional.

    python benchmarks/default_choice.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAGES = ("methods_table", "methods_cifar")  # H (the toys), K (CIFAR-10)
FAMILY = {"centred_light": "cbs_dirichlet", "acceleration": "cbs_acceleration"}  # toy label -> K's label
# The candidates (the addendum's list), by K's label; the toys' labels map onto them through FAMILY.
CANDIDATES = ("uniform", "cbs_dirichlet", "cbs_acceleration", "warm_split", "warm_uniform", "warm_transfer_end",
              "successive_halving", "moving_mesh", "affinity_clusters", "gradient_affinity", "denoiser_similarity",
              "snr_threshold", "steps_by_burden", "capacity_by_burden")

# Each candidate's split file: gin/splits/default.gin, which the shipped configurations include, includes the chosen
# one's (tests/test_studies.py checks it against default_choice.json).
SPLIT_FILE = {"cbs_dirichlet": "gin/splits/centred_light.gin", "warm_split": "gin/splits/warm_split.gin",
              "warm_uniform": "gin/splits/warm_uniform.gin", "warm_transfer_end": "gin/splits/warm_transfer.gin",
              "successive_halving": "gin/splits/successive_halving.gin", "moving_mesh": "gin/splits/moving_mesh.gin",
              "affinity_clusters": "gin/splits/affinity_clusters.gin",
              "gradient_affinity": "gin/splits/gradient_affinity.gin",
              "denoiser_similarity": "gin/splits/denoiser_similarity.gin",
              "snr_threshold": "gin/splits/snr_threshold.gin", "steps_by_burden": "gin/splits/steps_by_burden.gin",
              "capacity_by_burden": "gin/splits/capacity_by_burden.gin"}


def regimes(results: Path = RESULTS, candidates_only: bool = True) -> dict[str, dict[str, dict]]:
    """{regime: {label: row}} from every methods page present, the toys' labels under K's (FAMILY); a row has
    vs_scratch, extra_compute, extra_wall. ``candidates_only``: the rule's candidates, else every configuration."""
    out = {}
    for stem in PAGES:
        path = results / f"{stem}.json"
        if not path.exists():
            continue
        for name, rows in json.loads(path.read_text())["regimes"].items():
            out[f"{stem}:{name}"] = {FAMILY.get(label, label): row for label, row in rows.items()
                                     if not candidates_only or FAMILY.get(label, label) in CANDIDATES}
    return out


def worse(row: dict) -> bool:
    """Held-out regret resolved worse than the best fixed split from scratch (lower is better: the primary metrics of
    both studies, sliced Wasserstein and classifier_fd, are distances)."""
    r = row.get("vs_scratch")
    return r is not None and r["mean"] - r["half_width"] > 0


def cost(row: dict) -> float | None:
    return row["extra_compute"] if row.get("extra_compute") is not None else row.get("extra_wall")


def choose(all_rows: dict[str, dict[str, dict]]) -> dict:
    """The rule on the candidates run on every regime: per candidate its regimes resolved worse and its median extra
    compute; the choice and by which step of the rule."""
    names = [c for c in CANDIDATES if all(c in rows for rows in all_rows.values())] if all_rows else []
    table = {}
    for c in names:
        costs = [cost(rows[c]) for rows in all_rows.values() if cost(rows[c]) is not None]
        table[c] = {"worse": [r for r, rows in all_rows.items() if worse(rows[c])],
                    "median_extra": statistics.median(costs) if costs else None}
    key = (lambda c: (len(table[c]["worse"]), table[c]["median_extra"] if table[c]["median_extra"] is not None
                      else float("inf")))
    qualifiers = [c for c in names if not table[c]["worse"]]
    chosen = min(qualifiers or names, key=key) if names else None
    return {"regimes": list(all_rows), "candidates": table, "qualifiers": qualifiers, "choice": chosen,
            "step": (2 if qualifiers else 3) if names else None,
            "provisional": not any(r.startswith("methods_cifar:") for r in all_rows)}


def page(decision: dict) -> list[str]:
    lines = ["# The default split method, by the preregistered rule", "",
             "`python benchmarks/default_choice.py`, from `methods_table.json` (study H, the toys) and "
             "`methods_cifar.json` (study K, CIFAR-10 at 8 px). Rule fixed before K's results: "
             "benchmarks/results/cause/PREREGISTRATION.md, addendum of 2026-12-08 00:02 UTC.", ""]
    if decision["provisional"]:
        lines += ["**Provisional: K (CIFAR-10) is not measured yet, so this reads the toys alone.**", ""]
    lines += [f"Regimes: {', '.join(decision['regimes'])}.", "",
              "| candidate | regimes where its held-out regret is resolved worse | median extra compute |", "|---|---|---|"]
    for c, row in decision["candidates"].items():
        extra = f"{100 * row['median_extra']:+.1f} %" if row["median_extra"] is not None else "—"
        lines.append(f"| {c} | {', '.join(row['worse']) or 'none'} | {extra} |")
    how = ("qualifies (never resolved worse) with the lowest median extra compute" if decision["step"] == 2
           else "none qualifies: resolved worse on the fewest regimes, then the lowest median extra compute")
    lines += ["", f"**Choice: {decision['choice']}** ({how}). Qualifiers: {', '.join(decision['qualifiers']) or 'none'}.",
              ""]
    return lines


def render(results: Path = RESULTS) -> tuple[str, dict]:
    """The page's text and the decision, from the methods pages' JSON under ``results``."""
    import methods_page

    decision = choose(regimes(results))
    if decision["choice"] is None:
        return "", decision
    table = methods_page.one_table(regimes(results, candidates_only=False))
    table[0] = "## One table: the toys (study H) and CIFAR-10 (study K)"
    table.insert(2, "Labels as K's: the toys' `centred_light` is `cbs_dirichlet` here, `acceleration` "
                    "`cbs_acceleration`. Regret in the primary metric: sliced Wasserstein on the toys, classifier_fd on "
                    "CIFAR-10. Each regime's own page (`methods_table.md`, `methods_cifar.md`) has the rest.")
    table.insert(3, "")
    return "\n".join(page(decision) + table), decision


def main(argv=None) -> int:
    text, decision = render()
    if decision["choice"] is None:
        print("error: no methods page under benchmarks/results/ (methods_table.json); run "
              "`python benchmarks/run_study.py benchmarks/studies/methods_toys.toml --report` first", file=sys.stderr)
        return 2
    (RESULTS / "default_choice.md").write_text(text)
    (RESULTS / "default_choice.json").write_text(json.dumps(decision, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
