#!/usr/bin/env python
"""Evidence: where does CBS help? Splits compared on the 2-D toys at equal training steps per expert and equal NFE.

    python benchmarks/splits_toy.py                      # full study (about 40 min on 2 CPU cores)
    python benchmarks/splits_toy.py --quick              # smoke test: 1 dataset, 1 seed, tiny steps (< 60 s)
    python benchmarks/splits_toy.py --lib-commit HEAD    # run against a frozen export of a commit's cbsflow/ + gin/
    python benchmarks/splits_toy.py --lib-commit HEAD --datasets checkerboard moons --seeds 0 1 2 --ns 1 4 \
        --solvers uniform cbs-dirichlet --steps 3200 --ema 0.999 --name splits_toy_3200   # a subset, longer training

Datasets × N ∈ {1, 2, 4} × solver ∈ {uniform, logsnr, CBS-Dirichlet, CBS-acceleration} × seeds. A seed is shared by
every configuration (training data stream, expert initialisation, sampling noise), so differences are paired by seed.
The monitor profile is measured once per dataset × monitor × seed and copied into every de Boor run directory.
Run directories live under runs/bench/ (ignored by git); a run whose metrics.json exists is not rerun, and a run whose
boundaries equal those of a finished run of the same dataset, seed and settings reuses its result (duplicate_of.json).
--steps and --ema change expert/training.steps and expert/training.ema_decay; any value other than the default puts the run
directories under runs/bench/splits_toy-steps<S>-ema<E> so that runs of different settings are never reused. A run
root created by this version records its settings and library in bench_settings.json, and a later invocation with
other settings or another library refuses to reuse it. --ns (N = 1 is always included as the single-network
reference) and --solvers select a subset of the configurations. Writes OUT/NAME.{md,json,png} (--name, default
splits_toy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("checkerboard", "eight_gaussians", "rings", "moons")
MONITORS = ("dirichlet", "acceleration")
SOLVERS = ("uniform", "logsnr", "cbs-dirichlet", "cbs-acceleration")
NS = (1, 2, 4)

# Bindings applied on top of gin/quickstart.gin (which sets heun, uniform_steps, lr 2e-3, warmup 100, dirichlet 4 probes,
# evaluate.metrics = [sliced_wasserstein, mmd]); the sampler and schedule are repeated here so the study pins them.
FULL = {
    "mlp.width": "64", "mlp.depth": "2",
    "aux/training.steps": "600", "aux/training.batch_size": "256",
    "profile.n_points": "48", "profile.n_samples": "512",
    "expert/training.steps": "800", "expert/training.batch_size": "256", "expert/training.ema_decay": "0.99",
    "sample.sampler": "@heun", "sample.schedule": "@uniform_steps()", "sample.n_steps": "16",
    "sample.n_samples": "4000", "mmd.max_points": "2000",
}
QUICK = dict(FULL, **{"aux/training.steps": "60", "profile.n_points": "12", "profile.n_samples": "128",
                      "expert/training.steps": "60", "sample.n_samples": "1000", "mmd.max_points": "500"})


# ----------------------------------------------------------------------------------------------- library access

def use_commit(rev: str) -> str:
    """Export ``rev``'s cbsflow/ and gin/ to runs/bench/lib-<sha> and import cbsflow from there (others edit the tree)."""
    sha = subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "--short", rev], text=True).strip()
    dest = REPO / "runs" / "bench" / f"lib-{sha}"
    if not (dest / "cbsflow" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "cbsflow", "gin"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    sys.path.insert(0, str(dest))
    return sha


def library_info() -> dict:
    """Where cbsflow is imported from, and the commit / dirty state when that is the git working tree."""
    import cbsflow

    root = Path(cbsflow.__file__).resolve().parents[1]
    info = {"cbsflow": str(root / "cbsflow"), "gin_root": str(root)}
    if root == REPO:
        git = ["git", "-C", str(REPO)]
        info["commit"] = subprocess.check_output(git + ["rev-parse", "--short", "HEAD"], text=True).strip()
        dirty = subprocess.check_output(git + ["status", "--porcelain", "cbsflow", "gin"], text=True)
        info["dirty_files"] = [line[3:] for line in dirty.splitlines() if line.strip()]  # "XY path": no strip() first
    return info


def run_cli(gin_file: str, binds: dict, stages: str, run_dir: Path) -> None:
    """One in-process call of the pipeline CLI; its output goes to run_dir/bench.log, failures raise."""
    import gin

    from cbsflow.cli import main

    argv = ["--gin", gin_file, "--stages", stages, "--run-dir", str(run_dir)]
    for key, value in binds.items():
        argv += ["--bind", f"{key} = {value}"]
    run_dir.mkdir(parents=True, exist_ok=True)
    gin.clear_config()
    with open(run_dir / "bench.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print("argv:", json.dumps(argv), flush=True)
        rc = main(argv)
    gin.clear_config()
    if rc != 0:
        tail = (run_dir / "bench.log").read_text().splitlines()[-3:]
        raise RuntimeError(f"pipeline failed (rc {rc}) in {run_dir}: {' | '.join(tail)}")


# ----------------------------------------------------------------------------------------------- runs

def base_binds(settings: dict, dataset: str, seed: int) -> dict:
    return dict(settings, DATASET=f"@{dataset}()", SEED=str(seed))


def solver_binds(solver: str, n: int, deboor: dict | None = None) -> dict:
    """Bindings that select the partition solver for N segments (de Boor extras such as exponent via ``deboor``)."""
    if solver.startswith("cbs-"):
        extra = {f"deboor.{k}": repr(v) for k, v in (deboor or {}).items()}
        return {"split.solver": "@deboor()", "deboor.n_segments": str(n), "N_SEGMENTS": str(n), **extra}
    return {"split.solver": f"@{solver}()", f"{solver}.n_segments": str(n), "N_SEGMENTS": str(n)}


def ensure_profile(ctx: dict, dataset: str, seed: int, monitor: str) -> Path:
    """profile.json for one dataset × monitor × seed (measured once, reused by every de Boor split)."""
    run_dir = ctx["root"] / dataset / f"s{seed}" / f"profile-{monitor}"
    if not (run_dir / "profile.json").exists():
        start = time.time()
        binds = dict(base_binds(ctx["settings"], dataset, seed), **{"profile.monitor": f"@{monitor}()"})
        run_cli(ctx["gin"], binds, "profile", run_dir)
        _write(run_dir / "bench_wall.json", {"profile_s": time.time() - start})
        print(f"  profile {dataset} s{seed} {monitor}: {time.time() - start:.1f} s", flush=True)
    return run_dir / "profile.json"


def ensure_run(ctx: dict, dataset: str, seed: int, name: str, n: int, solver: str, deboor: dict | None = None) -> Path:
    """Split, train, sample and evaluate one configuration unless finished (or identical to a finished run)."""
    run_dir = ctx["root"] / dataset / f"s{seed}" / name
    if (run_dir / "metrics.json").exists() or (run_dir / "duplicate_of.json").exists():
        return run_dir
    start = time.time()
    binds = dict(base_binds(ctx["settings"], dataset, seed), **solver_binds(solver, n, deboor))
    if solver.startswith("cbs-"):
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ensure_profile(ctx, dataset, seed, solver[4:]), run_dir / "profile.json")
    run_cli(ctx["gin"], binds, "split", run_dir)
    twin = find_twin(run_dir)
    if twin is not None:
        _write(run_dir / "duplicate_of.json", {"run_dir": twin.name, "reason": "identical boundaries (within 1e-9)"})
        print(f"  {dataset} s{seed} {name}: same boundaries as {twin.name}, result reused", flush=True)
        return run_dir
    run_cli(ctx["gin"], binds, "train,sample,evaluate", run_dir)
    _write(run_dir / "bench_wall.json", {"run_s": time.time() - start})
    sw = _read(run_dir / "metrics.json")["metrics"]["sliced_wasserstein"]["value"]
    print(f"  {dataset} s{seed} {name}: SW {sw:.4f} ({time.time() - start:.1f} s)", flush=True)
    return run_dir


def find_twin(run_dir: Path) -> Path | None:
    """A finished sibling run (same dataset and seed) with the same boundaries: training and sampling would repeat it."""
    mine = np.asarray(_read(run_dir / "split.json")["boundaries"])
    for other in sorted(run_dir.parent.iterdir()):
        if other == run_dir or not (other / "metrics.json").exists():
            continue
        theirs = np.asarray(_read(other / "split.json")["boundaries"])
        if theirs.shape == mine.shape and np.allclose(theirs, mine, rtol=0, atol=1e-9):
            return other
    return None


def result_of(run_dir: Path) -> dict:
    """Boundaries, metrics and wall time of a run (following duplicate_of.json)."""
    split = _read(run_dir / "split.json")
    dup = run_dir / "duplicate_of.json"
    source = run_dir.parent / _read(dup)["run_dir"] if dup.exists() else run_dir
    metrics = _read(source / "metrics.json")
    wall = _read(source / "bench_wall.json").get("run_s") if (source / "bench_wall.json").exists() else None
    return {"run_dir": str(run_dir.relative_to(REPO)) if run_dir.is_relative_to(REPO) else str(run_dir),
            "boundaries": split["boundaries"], "burden": split["burden"],
            "duplicate_of": source.name if dup.exists() else None,
            "sw": metrics["metrics"]["sliced_wasserstein"]["value"], "mmd": metrics["metrics"]["mmd"]["value"],
            "nfe": metrics["nfe"], "steps_per_segment": metrics["sampling"]["steps_per_segment"],
            "final_loss": _read(source / "checkpoints" / "train.json")["final_loss"], "wall_s": wall}


def _read(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- statistics

def mean_se(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def paired_percent(values, reference) -> dict:
    """Per-seed 100 (x - ref) / ref: mean and 95% t-interval over seeds (negative = lower SW than the reference)."""
    from scipy import stats

    d = 100 * (np.asarray(values, np.float64) - np.asarray(reference, np.float64)) / np.asarray(reference, np.float64)
    mean = float(d.mean())
    if len(d) < 2:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "per_seed": d.tolist()}
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "per_seed": d.tolist()}


def verdict(diff: dict) -> str:
    if not np.isfinite(diff["lo"]):
        return "not resolved (one seed, no interval)"
    if diff["hi"] < 0:
        return "beat uniform"
    if diff["lo"] > 0:
        return "lost to uniform"
    return "not resolved (interval contains 0)"


def fmt_diff(diff: dict | None) -> str:
    if diff is None:
        return "—"
    if not np.isfinite(diff["lo"]):
        return f"{diff['mean']:+.1f}"
    return f"{diff['mean']:+.1f} [{diff['lo']:+.1f}, {diff['hi']:+.1f}]"


def fmt_boundaries(runs: list[dict]) -> str:
    b = np.mean([r["boundaries"] for r in runs], axis=0)
    return ", ".join(f"{v:.3f}" for v in b)


# ----------------------------------------------------------------------------------------------- the study

def configurations(ctx: dict | None = None) -> list[tuple[str, int, str]]:
    """(run name, N, solver); N = 1 is a single network, where every solver coincides.

    The uniform split of every N is always included: it is the reference of the Δ vs uniform column."""
    ns = ctx["ns"] if ctx else NS
    solvers = ctx["solvers"] if ctx else SOLVERS
    return [("N1-uniform", 1, "uniform")] + [(f"N{n}-{s}", n, s) for n in ns if n > 1 for s in SOLVERS
                                             if s == "uniform" or s in solvers]


def monitors(ctx: dict | None = None) -> list[str]:
    """The monitors whose profiles the selected CBS solvers need."""
    solvers = ctx["solvers"] if ctx else SOLVERS
    return [m for m in MONITORS if f"cbs-{m}" in solvers]


def run_study(ctx: dict) -> None:
    todo = [(d, s) for s in ctx["seeds"] for d in ctx["datasets"]]  # seed-major: a cut-short study stays balanced
    for i, (dataset, seed) in enumerate(todo):
        print(f"[{i + 1}/{len(todo)}] {dataset} seed {seed}", flush=True)
        for monitor in monitors(ctx):
            ensure_profile(ctx, dataset, seed, monitor)
        for name, n, solver in configurations(ctx):
            ensure_run(ctx, dataset, seed, name, n, solver)


def collect(ctx: dict) -> dict:
    """Every run's numbers plus, per dataset and configuration, means, standard errors and paired differences."""
    out = {}
    for dataset in ctx["datasets"]:
        base = ctx["root"] / dataset
        runs = {name: [result_of(base / f"s{s}" / name) for s in ctx["seeds"]] for name, _, _ in configurations(ctx)}
        profiles = {m: [_read(base / f"s{s}" / f"profile-{m}" / "profile.json") for s in ctx["seeds"]] for m in monitors(ctx)}
        summary = {}
        for name, n, solver in configurations(ctx):
            sw, mmd = [r["sw"] for r in runs[name]], [r["mmd"] for r in runs[name]]
            ref = [r["sw"] for r in runs[f"N{n}-uniform"]]
            single = [r["sw"] for r in runs["N1-uniform"]]
            summary[name] = {"n": n, "solver": solver, "boundaries_mean": np.mean([r["boundaries"] for r in runs[name]], 0).tolist(),
                             "sw": mean_se(sw), "mmd": mean_se(mmd),
                             "vs_uniform": paired_percent(sw, ref) if solver != "uniform" else None,
                             "vs_single": paired_percent(sw, single) if n > 1 else None}
        out[dataset] = {"runs": runs, "summary": summary,
                        "profiles": {m: [{"t": p["t"], "value": p["value"], "stderr": p["stderr"]} for p in ps]
                                     for m, ps in profiles.items()}}
    return out


# ----------------------------------------------------------------------------------------------- reports

ABBREV = dict(zip(SOLVERS, ("uni", "logsnr", "CBS-D", "CBS-A")))


def short(name: str) -> str:
    """Axis label of a run name such as N4-cbs-dirichlet."""
    n, solver = name.split("-", 1)
    return "N=1" if n == "N1" else f"N={n[1:]}\n{ABBREV[solver]}"
LABELS = {"uniform": "uniform", "logsnr": "logsnr", "cbs-dirichlet": "CBS-Dirichlet", "cbs-acceleration": "CBS-acceleration"}


def header(title: str, ctx: dict, extra: list[str]) -> list[str]:
    s = ctx["settings"]
    lines = [f"# {title}", "",
             f"- command: `{ctx['command']}`",
             f"- date (UTC): {ctx['date']}; wall time of this invocation: {ctx['wall_s'] / 60:.1f} min "
             f"(sum of per-run wall times recorded in the run directories: {ctx['run_wall_s'] / 60:.1f} min)",
             f"- machine: {ctx['machine']}",
             f"- library: {ctx['library']}",
             f"- gin: `{ctx['gin_rel']}` plus the bindings: " + "; ".join(f"`{k} = {v}`" for k, v in s.items()),
             f"- datasets: {', '.join(ctx['datasets'])}; seeds: {', '.join(map(str, ctx['seeds']))} "
             "(a seed fixes the profile's auxiliary model, the experts' initialisation and training data stream, "
             "and the sampling noise for every configuration, so comparisons are paired by seed)",
             f"- sampling: `{s['sample.sampler']}`, {s['sample.n_steps']} steps in total "
             f"(NFE {2 * int(s['sample.n_steps'])} for every configuration), `{s['sample.schedule']}` "
             "(steps spread uniformly in t, so each segment gets steps in proportion to its width)",
             f"- training: {s['expert/training.steps']} steps per expert at batch {s['expert/training.batch_size']}, "
             f"EMA decay {s['expert/training.ema_decay']} "
             "(equal steps per expert, so N experts cost N times the training steps of one network)",
             f"- configurations: N ∈ {{{', '.join(map(str, ctx.get('ns', NS)))}}} (N = 1: a single network); solvers: "
             f"{', '.join(s_ for s_ in SOLVERS if s_ in ctx.get('solvers', SOLVERS))}"
             + (f" (not run: {', '.join(s_ for s_ in SOLVERS if s_ not in ctx.get('solvers', SOLVERS))})"
                if set(ctx.get('solvers', SOLVERS)) != set(SOLVERS) else ""),
             f"- run directories: `{os.path.relpath(ctx['root'], REPO)}`",
             *([f"- note: {ctx['note']}"] if ctx.get("note") else []),
             f"- metrics (from each run's metrics.json): sliced Wasserstein (primary; {s['sample.n_samples']} samples, "
             f"256 projections) and unbiased MMD² (first {s['mmd.max_points']} samples); the reference draws are fixed "
             "(evaluate.reference_seed), the same for every run",
             "- Δ %: per seed 100·(SW − SW_ref)/SW_ref, mean over seeds and 95% t-interval; negative = lower (better) SW",
             *extra, ""]
    return lines


def dataset_table(dataset: str, data: dict, ctx: dict | None = None) -> list[str]:
    lines = ["| configuration | boundaries (mean over seeds) | SW mean ± s.e. | Δ SW vs uniform, same N (%) | "
             "Δ SW vs N = 1 (%) | MMD² mean ± s.e. |", "|---|---|---|---|---|---|"]
    for name, n, solver in configurations(ctx):
        row, runs = data["summary"][name], data["runs"][name]
        label = "N = 1 (single network)" if n == 1 else f"N = {n}, {LABELS[solver]}"
        dups = sorted({r["duplicate_of"] for r in runs if r["duplicate_of"]})
        if dups:
            label += f" (identical boundaries to {', '.join(dups)} for {sum(bool(r['duplicate_of']) for r in runs)} seed(s): result reused)"
        lines.append(f"| {label} | {fmt_boundaries(runs)} | {row['sw'][0]:.4f} ± {row['sw'][1]:.4f} | "
                     f"{fmt_diff(row['vs_uniform'])} | {fmt_diff(row['vs_single'])} | "
                     f"{row['mmd'][0]:.2e} ± {row['mmd'][1]:.1e} |")
    return lines


def dataset_sentence(dataset: str, data: dict, ctx: dict | None = None) -> str:
    parts = []
    ns = [n for n in (ctx["ns"] if ctx else NS) if n > 1]
    for solver in [s for s in ("cbs-dirichlet", "cbs-acceleration") if s in (ctx["solvers"] if ctx else SOLVERS)]:
        verdicts = [f"N = {n}: {verdict(data['summary'][f'N{n}-{solver}']['vs_uniform'])} "
                    f"({fmt_diff(data['summary'][f'N{n}-{solver}']['vs_uniform'])} %)" for n in ns]
        parts.append(f"{LABELS[solver]} — " + "; ".join(verdicts))
    return f"**{dataset}**: " + ". ".join(parts) + "."


def write_markdown(path: Path, ctx: dict, results: dict) -> None:
    lines = header("Splits on the 2-D toys: uniform vs logsnr vs CBS at equal steps per expert and equal NFE", ctx, [])
    lines += ["## Verdicts (CBS vs uniform at the same N, sliced Wasserstein, 95% paired t-interval)", ""]
    lines += [dataset_sentence(d, results[d], ctx) + "\n" for d in ctx["datasets"]]
    for dataset in ctx["datasets"]:
        lines += [f"## {dataset}", ""] + dataset_table(dataset, results[dataset], ctx) + [""]
    lines += [f"Figure: `{path.with_suffix('.png').name}` (top: SW per configuration, mean ± s.e.; bottom: monitor "
              f"profiles normalised to unit integral, one line per seed, and the N = {max(ctx['ns'])} CBS boundaries "
              "averaged over seeds).", ""]
    path.write_text("\n".join(lines))


def write_figure(path: Path, ctx: dict, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c[0] for c in configurations(ctx)]
    n_max = max(ctx["ns"])
    colors = {"uniform": "0.5", "logsnr": "C2", "cbs-dirichlet": "C0", "cbs-acceleration": "C3"}
    fig, axes = plt.subplots(2, len(ctx["datasets"]), figsize=(4.2 * len(ctx["datasets"]), 7), squeeze=False)
    for j, dataset in enumerate(ctx["datasets"]):
        summ = results[dataset]["summary"]
        ax = axes[0, j]
        for i, name in enumerate(names):
            sw = summ[name]["sw"]
            ax.bar(i, sw[0], yerr=np.nan_to_num(sw[1]), color=colors[summ[name]["solver"]], capsize=2)
        ax.set_xticks(range(len(names)), [short(name) for name in names], fontsize=7)
        ax.set_title(f"{dataset}: SW (mean ± s.e.)")
        ax = axes[1, j]
        for m, c in zip(MONITORS, ("C0", "C3")):
            if m not in results[dataset]["profiles"]:
                continue
            for k, p in enumerate(results[dataset]["profiles"][m]):
                t, v = np.asarray(p["t"]), np.asarray(p["value"])
                ax.plot(t, v / np.trapezoid(v, t), color=c, alpha=0.6, lw=0.8, label=m if k == 0 else None)
            if n_max > 1:
                for b in summ[f"N{n_max}-cbs-{m}"]["boundaries_mean"][1:-1]:
                    ax.axvline(b, color=c, ls="--", lw=0.8)
        if results[dataset]["profiles"]:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_xlabel("t (0 = noise, 1 = data)")
        ax.set_title(f"monitor / its integral; N = {n_max} CBS boundaries", fontsize=9)
    shown = [s for s in colors if s == "uniform" or s in ctx["solvers"]]
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[s]) for s in shown]
    fig.legend(handles, [LABELS[s] for s in shown], loc="upper center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- entry

def common_parser(doc: str, root_help: str) -> argparse.ArgumentParser:
    """The options shared by the toy benchmarks (this script and regularisation_toy.py)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 dataset, 1 seed, tiny steps (smoke test)")
    p.add_argument("--out", help="results folder (default benchmarks/results; --quick: runs/bench/splits_toy_quick/results)")
    p.add_argument("--root", help=root_help)
    p.add_argument("--datasets", nargs="+", choices=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--lib-commit", metavar="REV", help="import cbsflow/ and gin/ as of this git commit (exported under runs/bench)")
    p.add_argument("--report-only", action="store_true", help="only collect finished runs and write the reports")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = common_parser(__doc__, "run directories (default runs/bench/splits_toy, --quick: runs/bench/splits_toy_quick)")
    p.add_argument("--steps", type=int, metavar="N", help=f"expert/training.steps (default {FULL['expert/training.steps']}; "
                   "--quick: " + QUICK["expert/training.steps"] + ")")
    p.add_argument("--ema", type=float, metavar="DECAY", help=f"expert/training.ema_decay (default {FULL['expert/training.ema_decay']})")
    p.add_argument("--ns", nargs="+", type=int, metavar="N",
                   help="numbers of experts (default 1 2 4); N = 1 is always included as the single-network reference")
    p.add_argument("--solvers", nargs="+", choices=SOLVERS, metavar="SOLVER",
                   help=f"subset of {' '.join(SOLVERS)} (default all); uniform is always run as the reference")
    p.add_argument("--name", default="splits_toy", help="results are written as OUT/NAME.{md,json,png} (default splits_toy)")
    p.add_argument("--note", help="a line added to the markdown header")
    args = p.parse_args(argv)
    if args.ns is not None and any(n < 1 for n in args.ns):
        p.error("--ns: every N must be at least 1")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be at least 1")
    if args.ema is not None and not 0 <= args.ema < 1:
        p.error("--ema must lie in [0, 1)")
    return args


def check_root(root: Path, settings: dict, library: str) -> None:
    """Refuse to reuse a run root made with other settings or another library (recorded in bench_settings.json).

    The record is written only into a root that holds no runs yet, so roots made before it existed are left alone."""
    record = {"settings": settings, "library": library}
    path = root / "bench_settings.json"
    if path.exists():
        old = _read(path)
        if old != record:
            diff = [f"{k}: {old['settings'].get(k)} -> {v}" for k, v in settings.items() if old["settings"].get(k) != v]
            if old.get("library") != library:
                diff.append(f"library: {old.get('library')} -> {library}")
            raise SystemExit(f"{root} holds runs made with other settings ({'; '.join(diff)}); choose another --root")
    elif not root.exists() or not any(p.is_dir() for p in root.iterdir()):
        _write(path, record)


def make_context(args: argparse.Namespace) -> dict:
    """Settings, paths and provenance shared by the studies in this folder."""
    import torch

    torch.set_num_threads(1)
    sha = use_commit(args.lib_commit) if args.lib_commit else None
    lib = library_info()
    quick = args.quick
    settings = dict(QUICK if quick else FULL)
    steps, ema = getattr(args, "steps", None), getattr(args, "ema", None)
    if steps is not None:
        settings["expert/training.steps"] = str(steps)
    if ema is not None:
        settings["expert/training.ema_decay"] = repr(float(ema))
    default = QUICK if quick else FULL
    tag = "".join(f"-{label}{settings[key]}" for key, label in (("expert/training.steps", "steps"), ("expert/training.ema_decay", "ema"))
                  if float(settings[key]) != float(default[key]))
    root = Path(args.root or REPO / "runs" / "bench" / (("splits_toy_quick" if quick else "splits_toy") + tag)).resolve()
    out = Path(args.out or (root / "results" if quick else REPO / "benchmarks" / "results")).resolve()
    gin_file = str(Path(lib["gin_root"]) / "gin" / "quickstart.gin")
    desc = f"cbsflow imported from {lib['cbsflow']}"
    if args.lib_commit:
        desc += f" (export of commit {sha}, not the working tree)"
    elif "commit" in lib:
        desc += f" at commit {lib['commit']}" + (f", uncommitted changes in {', '.join(lib['dirty_files'])}" if lib["dirty_files"] else "")
    ns = sorted({1, *(getattr(args, "ns", None) or NS)})
    solvers = [s for s in SOLVERS if s == "uniform" or s in (getattr(args, "solvers", None) or SOLVERS)]
    return {"quick": quick, "root": root, "out": out, "gin": gin_file, "library": desc,
            "gin_rel": os.path.relpath(gin_file, REPO), "settings": settings,
            "ns": ns, "solvers": solvers, "name": getattr(args, "name", None) or "splits_toy",
            "note": getattr(args, "note", None),
            "datasets": args.datasets or (["checkerboard"] if quick else list(DATASETS)),
            "seeds": args.seeds or ([0] if quick else [0, 1, 2, 3]),
            "command": " ".join(["python", os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
            "date": subprocess.check_output(["date", "-u"], text=True).strip(),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
                       f"torch {torch.__version__} on CPU with torch.set_num_threads(1), one process, other work on the machine"}


def run_wall(root: Path, datasets, seeds, names) -> float:
    """Sum of recorded per-run wall times (profiles and runs) over the given run directories."""
    total = 0.0
    for d in datasets:
        for s in seeds:
            for name in names:
                f = root / d / f"s{s}" / name / "bench_wall.json"
                total += sum(_read(f).values()) if f.exists() else 0.0
    return total


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    ctx = make_context(args)
    print(f"library: {ctx['library']}\nruns: {ctx['root']}\nresults: {ctx['out']}", flush=True)
    if not args.report_only:
        check_root(ctx["root"], ctx["settings"], ctx["library"])
        run_study(ctx)
    results = collect(ctx)
    names = [c[0] for c in configurations(ctx)] + [f"profile-{m}" for m in monitors(ctx)]
    ctx.update(wall_s=time.time() - start, run_wall_s=run_wall(ctx["root"], ctx["datasets"], ctx["seeds"], names))
    write_reports(ctx["out"] / ctx["name"], ctx, results, write_markdown, write_figure, start)
    return 0


def write_reports(stem: Path, ctx: dict, results, markdown, figure, start: float) -> None:
    """STEM.json (settings and raw results), STEM.md and STEM.png, shared by the toy benchmarks."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    _write(stem.with_suffix(".json"), {k: str(v) if isinstance(v, Path) else v for k, v in ctx.items()} | {"results": results})
    markdown(stem.with_suffix(".md"), ctx, results)
    figure(stem.with_suffix(".png"), ctx, results)
    print(f"wrote {stem}.md/.json/.png in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
