#!/usr/bin/env python
"""How the de Boor regularisation moves the boundaries and the sliced Wasserstein distance (N = 4, Dirichlet monitor).

    python benchmarks/regularisation_toy.py [--quick] [--lib-commit REV] [--out benchmarks/results]

Density rho = (m + floor · mean m)^exponent (exponent 0: log(1 + m / min m)), min_width widens narrow segments.
Boundaries for the full grid exponent ∈ {1, 1/2, 1/3, 0} × floor ∈ {0, 0.05, 0.5} × min_width ∈ {0, 0.1} come from
the library's ``deboor`` solver on the Dirichlet profiles of benchmarks/splits_toy.py (reused, same run root);
train / sample / evaluate runs only for the one-at-a-time variations around the default (1/2, 0.05, 0), whose own
runs (N4-cbs-dirichlet) and the uniform N = 4 reference come from the splits_toy study. Writes
OUT/regularisation_toy.{md,json,png}.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import splits_toy as st  # noqa: E402

EXPONENTS = (1.0, 0.5, 1 / 3, 0.0)
FLOORS = (0.0, 0.05, 0.5)
MIN_WIDTHS = (0.0, 0.1)
DEFAULT = (0.5, 0.05, 0.0)
N = 4


def trained_settings() -> list[tuple[float, float, float]]:
    """The default and every one-at-a-time variation of it."""
    e0, f0, w0 = DEFAULT
    return ([DEFAULT] + [(e, f0, w0) for e in EXPONENTS if e != e0] + [(e0, f, w0) for f in FLOORS if f != f0]
            + [(e0, f0, w) for w in MIN_WIDTHS if w != w0])


def run_name(setting: tuple[float, float, float]) -> str:
    if setting == DEFAULT:
        return f"N{N}-cbs-dirichlet"  # the splits_toy run
    e, f, w = setting
    return f"N{N}-cbs-dirichlet-e{e:.3g}-f{f:g}-w{w:g}"


def label(setting) -> str:
    e, f, w = setting
    exp = {1.0: "1", 0.5: "1/2", 1 / 3: "1/3", 0.0: "0 (log)"}[e]
    return f"exponent {exp}, floor {f:g}, min_width {w:g}" + (" (default)" if setting == DEFAULT else "")


def grid_boundaries(ctx: dict, dataset: str) -> dict:
    """Boundaries of the library's deboor solver for every grid setting and seed (no training)."""
    from cbsflow.partition import deboor

    out = {}
    for setting in itertools.product(EXPONENTS, FLOORS, MIN_WIDTHS):
        e, f, w = setting
        per_seed = []
        for seed in ctx["seeds"]:
            prof = st._read(ctx["root"] / dataset / f"s{seed}" / "profile-dirichlet" / "profile.json")
            t, m = np.asarray(prof["t"]), np.asarray(prof["value"])
            per_seed.append(deboor(n_segments=N, exponent=e, floor=f, min_width=w)(t, m).tolist())
        out[setting] = per_seed
    return out


def run_study(ctx: dict) -> None:
    for seed in ctx["seeds"]:
        for dataset in ctx["datasets"]:
            print(f"{dataset} seed {seed}", flush=True)
            st.ensure_run(ctx, dataset, seed, f"N{N}-uniform", N, "uniform")
            for setting in trained_settings():
                e, f, w = setting
                st.ensure_run(ctx, dataset, seed, run_name(setting), N, "cbs-dirichlet",
                              deboor={"exponent": e, "floor": f, "min_width": w})


def collect(ctx: dict) -> dict:
    out = {}
    for dataset in ctx["datasets"]:
        base = ctx["root"] / dataset
        grid = grid_boundaries(ctx, dataset)
        uniform = [st.result_of(base / f"s{s}" / f"N{N}-uniform")["sw"] for s in ctx["seeds"]]
        runs = {run_name(x): [st.result_of(base / f"s{s}" / run_name(x)) for s in ctx["seeds"]] for x in trained_settings()}
        default = [r["sw"] for r in runs[run_name(DEFAULT)]]
        rows = []
        for setting in trained_settings():
            rs = runs[run_name(setting)]
            sw = [r["sw"] for r in rs]
            # The split stage and the direct solver call must agree (same profile, same solver).
            assert np.allclose([r["boundaries"] for r in rs], grid[setting], atol=1e-12), (dataset, setting)
            rows.append({"setting": setting, "label": label(setting), "run": run_name(setting),
                         "boundaries_mean": np.mean([r["boundaries"] for r in rs], 0).tolist(),
                         "sw": st.mean_se(sw), "mmd": st.mean_se([r["mmd"] for r in rs]),
                         "vs_uniform": st.paired_percent(sw, uniform),
                         "vs_default": None if setting == DEFAULT else st.paired_percent(sw, default),
                         "duplicate_of": sorted({r["duplicate_of"] for r in rs if r["duplicate_of"]})})
        out[dataset] = {"rows": rows, "runs": runs, "uniform_sw": uniform, "uniform": st.mean_se(uniform),
                        "grid": [{"setting": list(k), "boundaries": v} for k, v in grid.items()]}
    return out


def trained_table(data: dict) -> list[str]:
    lines = [f"Uniform N = {N} reference: SW {data['uniform'][0]:.4f} ± {data['uniform'][1]:.4f}.", "",
             "| setting | boundaries (mean over seeds) | SW mean ± s.e. | Δ SW vs uniform N = 4 (%) | "
             "Δ SW vs default CBS (%) | MMD² mean ± s.e. |", "|---|---|---|---|---|---|"]
    for row in data["rows"]:
        name = row["label"] + (f" (identical boundaries to {', '.join(row['duplicate_of'])}: result reused)"
                               if row["duplicate_of"] else "")
        b = ", ".join(f"{v:.3f}" for v in row["boundaries_mean"])
        lines.append(f"| {name} | {b} | {row['sw'][0]:.4f} ± {row['sw'][1]:.4f} | {st.fmt_diff(row['vs_uniform'])} | "
                     f"{st.fmt_diff(row['vs_default'])} | {row['mmd'][0]:.2e} ± {row['mmd'][1]:.1e} |")
    return lines


def grid_table(data: dict) -> list[str]:
    lines = ["| exponent | floor | min_width | boundaries (mean over seeds) | narrowest segment (mean) |",
             "|---|---|---|---|---|"]
    for entry in data["grid"]:
        e, f, w = entry["setting"]
        b = np.asarray(entry["boundaries"])
        mean = ", ".join(f"{v:.3f}" for v in b.mean(0))
        exp = {1.0: "1", 0.5: "1/2", 1 / 3: "1/3", 0.0: "0 (log)"}[e]
        lines.append(f"| {exp} | {f:g} | {w:g} | {mean} | {np.diff(b, axis=1).min(1).mean():.3f} |")
    return lines


def sentence(dataset: str, data: dict) -> str:
    beat = [r["label"] for r in data["rows"] if np.isfinite(r["vs_uniform"]["hi"]) and r["vs_uniform"]["hi"] < 0]
    lost = [r["label"] for r in data["rows"] if np.isfinite(r["vs_uniform"]["lo"]) and r["vs_uniform"]["lo"] > 0]
    rest = len(data["rows"]) - len(beat) - len(lost)
    return (f"**{dataset}**: beat uniform N = 4: {'; '.join(beat) or 'none'}. Lost to uniform N = 4: "
            f"{'; '.join(lost) or 'none'}. Not resolved (interval contains 0, or one seed): {rest} of {len(data['rows'])} settings.")


def write_markdown(path: Path, ctx: dict, results: dict) -> None:
    extra = [f"- N = {N}, monitor: Dirichlet (the splits_toy profiles, reused); trained settings: the default "
             f"(exponent 1/2, floor 0.05, min_width 0) and each one-at-a-time variation "
             f"(exponent ∈ {{1, 1/3, 0}}, floor ∈ {{0, 0.5}}, min_width = 0.1), each with train / sample / evaluate for every seed; "
             "boundaries only for the full 4 × 3 × 2 grid",
             "- Δ vs uniform uses the splits_toy uniform N = 4 runs of the same seeds; Δ vs default uses the N4-cbs-dirichlet runs"]
    lines = st.header("de Boor regularisation on the toys: exponent, floor, min_width (N = 4, Dirichlet)", ctx, extra)
    lines += ["## Verdicts (vs uniform N = 4, sliced Wasserstein, 95% paired t-interval)", ""]
    lines += [sentence(d, results[d]) + "\n" for d in ctx["datasets"]]
    for dataset in ctx["datasets"]:
        lines += [f"## {dataset}: trained settings", ""] + trained_table(results[dataset]) + [""]
        lines += [f"### {dataset}: boundaries for the full grid (no training)", ""] + grid_table(results[dataset]) + [""]
    lines += [f"Figure: `{path.with_suffix('.png').name}` (boundaries of each trained setting, one row each, and its SW).", ""]
    path.write_text("\n".join(lines))


def write_figure(path: Path, ctx: dict, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ctx["datasets"]), figsize=(6.5 * len(ctx["datasets"]), 4), squeeze=False)
    for ax, dataset in zip(axes[0], ctx["datasets"]):
        data = results[dataset]
        rows = data["rows"]
        for i, row in enumerate(rows):
            ax.plot(row["boundaries_mean"], [i] * (N + 1), "|-", ms=12, color="C0")
            ax.text(1.02, i, f"SW {row['sw'][0]:.4f}", va="center", fontsize=7)
        ax.plot(np.linspace(0, 1, N + 1), [len(rows)] * (N + 1), "|-", ms=12, color="0.5")
        ax.text(1.02, len(rows), f"SW {data['uniform'][0]:.4f}", va="center", fontsize=7)
        ax.set_yticks(range(len(rows) + 1), [r["label"].replace(", min_width", "\nmin_width") for r in rows] + ["uniform"],
                      fontsize=6)
        ax.set_xlim(0, 1.15)
        ax.set_xlabel("t (0 = noise, 1 = data)")
        ax.set_title(f"{dataset}: N = 4 boundaries (mean over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = st.common_parser(__doc__, "run directories, shared with splits_toy (default runs/bench/splits_toy)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    ctx = st.make_context(args)
    ctx["datasets"] = args.datasets or (["checkerboard"] if args.quick else ["checkerboard", "eight_gaussians"])
    ctx["seeds"] = args.seeds or ([0] if args.quick else [0, 1, 2])
    print(f"library: {ctx['library']}\nruns: {ctx['root']}\nresults: {ctx['out']}", flush=True)
    if not args.report_only:
        run_study(ctx)
    results = collect(ctx)
    names = [run_name(x) for x in trained_settings() if x != DEFAULT]
    ctx.update(wall_s=time.time() - start, run_wall_s=st.run_wall(ctx["root"], ctx["datasets"], ctx["seeds"], names))
    st.write_reports(ctx["out"] / "regularisation_toy", ctx, results, write_markdown, write_figure, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
