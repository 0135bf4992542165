#!/usr/bin/env python
"""Evidence II: where the split matters, and which monitor finds the best split (2-D toys and 8x8 digits).

    python benchmarks/evidence.py landscapes [--datasets ...]   # N = 2 landscapes, the default solver trained
    python benchmarks/evidence.py variants   [--datasets ...]   # every monitor / estimator / density, scored
    python benchmarks/evidence.py trained --solvers P@E ...     # chosen variants trained, not interpolated
    python benchmarks/evidence.py trained --datasets digits --seeds 0 1 2 3 4 5 6 7 8 9 --boundaries 0.8 \
        --solvers dirichlet@e0.5 dirichlet@e1 --name seeds10    # two solvers with more (and held-out) seeds
    python benchmarks/evidence.py regimes                       # N = 1 vs uniform-2 vs best-2 across expert sizes
    python benchmarks/evidence.py search     [--datasets ...]   # N = 4: coordinate search and solvers
    python benchmarks/evidence.py landscapes --datasets checkerboard --seeds 0 1 2 3 4 5 6 7 8 9 --boundaries 0.6 \
        --name seeds10                                          # more seeds for chosen splits (reuses seeds 0-4)
    python benchmarks/evidence.py margin     [--datasets ...]   # N = 2 with every expert trained on [t_k - m, t_k+1 + m]
    python benchmarks/evidence.py report                        # tables and figures -> benchmarks/results/
    python benchmarks/evidence.py restore                       # the committed reports back under runs/evidence/

Every experiment is a call of tools/landscape.py (printed before it runs) on benchmarks/gin/evidence_toy.gin (or
evidence_digits.gin), with the dataset and expert size bound per call; results land in
runs/evidence/<experiment>/<dataset>/ and are reused on a rerun. ``report`` reads the landscape reports and writes
benchmarks/results/evidence.{md,json} and figures. ``restore`` writes every report held in the committed
benchmarks/results/evidence.json back to its place under runs/evidence/ (a fresh clone has no runs/), so that
``variants --measured``, ``trained --measured`` and ``search --measured`` score new solvers on the landscapes already
measured, without training them again.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIN = "benchmarks/gin/evidence_toy.gin"
GIN_DIGITS = "benchmarks/gin/evidence_digits.gin"
STEPS_BINDING = "expert/training.steps"
VARIANTS = REPO / "benchmarks" / "gin" / "variants"
ROOT = Path("runs/evidence")
SEEDS = ["0", "1", "2", "3", "4"]
NAME = ["landscape"]  # report file names of the experiments that do not fix their own (--name)

# Dataset -> bindings. Checkerboards also report the fraction of samples on the squares.
DATASETS = {
    "checkerboard": ["DATASET = @checkerboard()"],
    "checkerboard_fine": ["DATASET = @checkerboard()", "checkerboard.size = 8"],
    "checkerboard_large": ["DATASET = @checkerboard()", "checkerboard.scale = 2.0"],
    "checkerboard_small": ["DATASET = @checkerboard()", "checkerboard.scale = 0.5"],
    "rings": ["DATASET = @rings()"],
    "eight_gaussians": ["DATASET = @eight_gaussians()"],
    "digits": [],  # benchmarks/gin/evidence_digits.gin
}
METRICS = "[@sliced_wasserstein(), @mmd(), @precision_recall(), @nll()]"
CHECKERBOARD_METRICS = "[@sliced_wasserstein(), @mmd(), @precision_recall(), @support(), @nll()]"
EXPONENTS = {"e1": 1.0, "e0.5": 0.5, "e0.33": 1 / 3, "log": 0.0}
PROFILES = ("dirichlet", "dirichlet_x1", "dirichlet_centred", "acceleration_fd", "acceleration_exact", "aux_small",
            "aux_large", "closed_form", "capacity_gap")
# Expert sizes of the regime grid beyond the landscapes' 16 x 1 (whose full landscapes are the grid's first rows).
SIZES = {"w32d1": ["mlp.width = 32", "mlp.depth = 1"]}


def dataset_bindings(name: str) -> list[str]:
    if name == "digits":
        return []
    metrics = CHECKERBOARD_METRICS if name.startswith("checkerboard") else METRICS
    return [*DATASETS[name], f"evaluate.metrics = {metrics}"]


def solver(profile: str, exponent: str) -> str:
    return f"{profile}@{exponent}={VARIANTS.relative_to(REPO) / (profile + '.gin')}; " \
           f"deboor.exponent = {EXPONENTS[exponent]!r}"


_RUNNING: list[subprocess.Popen] = []


def landscape(out: Path, bindings: list[str], extra: list[str], parallel: int, name: str | None = None) -> None:
    """One tools/landscape.py call (runs in its own process, one run at a time); up to ``parallel`` calls at once."""
    gin = GIN_DIGITS if out.name.startswith("digits") else GIN
    name = name or NAME[0]
    cmd = [sys.executable, "tools/landscape.py", "--gin", gin, "--seeds", *SEEDS, "--out", str(out), "--jobs", "1",
           "--name", name]
    cmd += [a for b in bindings for a in ("--bind", b)] + extra
    if gin == GIN_DIGITS:
        cmd += ["--primary", "fd_randconv"]
    print("$ " + shlex.join(cmd), flush=True)
    while len(_RUNNING) >= parallel:
        _RUNNING.pop(0).wait()
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / f"{name}.log", "w")
    _RUNNING.append(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}))


def wait_all() -> None:
    while _RUNNING:
        _RUNNING.pop(0).wait()


def grid(args, name: str | None = None, report: str = "landscape") -> list[str]:
    """--boundaries, and with --measured the dataset's earlier report (OUT/REPORT.json, else OUT/landscape.json) that
    stands in for running the grid and the solvers it already scored."""
    out = ["--boundaries", *args.boundaries] if args.boundaries else []
    if name and args.measured:
        path = ROOT / "landscape" / name / f"{report}.json"
        out += ["--measured", str(path if path.exists() else path.with_name("landscape.json"))]
    return out


def run_landscapes(args) -> None:
    for name in args.datasets:
        extra = ["--n", "2", *grid(args), "--solver", solver("dirichlet", "e0.5")]
        landscape(ROOT / "landscape" / name, dataset_bindings(name), extra, args.jobs)


def run_variants(args) -> None:
    """Every profile x density, split once per seed and read off the measured N = 2 landscape (--interpolate)."""
    for name in args.datasets:
        extra = ["--n", "2", *grid(args, name, "variants"), "--interpolate"]
        for profile in args.profiles:
            for exponent in EXPONENTS:
                extra += ["--solver", solver(profile, exponent)]
        landscape(ROOT / "landscape" / name, dataset_bindings(name), extra, args.jobs, "variants")


def run_trained(args) -> None:
    """The solvers named by --solvers trained and evaluated directly on the N = 2 landscape (no interpolation)."""
    for name in args.datasets:
        extra = ["--n", "2", *grid(args, name, "trained" if args.name == "landscape" else args.name)] + [
            a for s in args.solvers for a in ("--solver", solver(*s.split("@")))]
        landscape(ROOT / "landscape" / name, dataset_bindings(name), extra, args.jobs,
                  "trained" if args.name == "landscape" else args.name)


def run_regimes(args) -> None:
    """N = 1 against splits at 0.3, 0.5, 0.7 and 0.85 for larger experts, and for 16 x 1 experts trained half as long."""
    for name in args.datasets:
        for size, binds in SIZES.items():
            landscape(ROOT / "regimes" / f"{name}-{size}", dataset_bindings(name) + binds,
                      ["--n", "2", "--boundaries", "0.3", "0.7", "0.85"], args.jobs)
        landscape(ROOT / "regimes" / f"{name}-w16d1-2000steps", dataset_bindings(name) + [STEPS_BINDING + " = 2000"],
                  ["--n", "2", "--boundaries", "0.3", "0.7", "0.85"], args.jobs)


def run_search(args) -> None:
    for name in args.datasets:
        extra = ["--n", "4", "--search-steps", "0.1", "0.05", "--max-evals", str(args.max_evals)]
        extra += [a for s in args.solvers for a in ("--solver", solver(*s.split("@")))]
        if args.measured:  # the search replays the earlier report's splits; only new solvers run
            extra += ["--measured", str(ROOT / "search" / name / f"{args.name}.json")]
        landscape(ROOT / "search" / name, dataset_bindings(name), extra, args.jobs)


def run_margin(args) -> None:
    """The N = 2 landscape again with every expert trained on its interval widened by ``train.margin`` on each side."""
    for name in args.datasets:
        landscape(ROOT / "margin" / name, dataset_bindings(name) + [f"train.margin = {args.margin}"],
                  ["--n", "2", *(grid(args) or ["--boundaries", "0.3", "0.6", "0.9"])], args.jobs)


def restore(args) -> None:
    """Each report in benchmarks/results/evidence.json back to runs/evidence/.../NAME.json (an existing file is kept)."""
    import json

    held = json.loads((REPO / "benchmarks" / "results" / "evidence.json").read_text())
    for group in held.values():
        for report in group.values():
            path = REPO / report["settings"]["out"] / f"{report['settings']['name']}.json"
            if path.exists():
                print(f"kept {path.relative_to(REPO)} (already there)")
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1))
            print(f"restored {path.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["landscapes", "variants", "trained", "regimes", "search", "margin", "report",
                                        "restore"])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--solvers", nargs="+", default=["dirichlet@e0.5"], help="PROFILE@EXPONENT, e.g. capacity_gap@e1")
    p.add_argument("--max-evals", type=int, default=12)
    p.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES,
                   help="the variants' profiles (every density exponent is scored for each)")
    p.add_argument("--jobs", type=int, default=2, help="landscape calls at a time (each runs one run at a time)")
    p.add_argument("--seeds", nargs="+", default=SEEDS, help="paired seeds (default 0-4)")
    p.add_argument("--boundaries", nargs="+", help="N = 2 grid instead of the tool's 0.1, ..., 0.9")
    p.add_argument("--margin", type=float, default=0.05, help="train.margin of the margin experiment")
    p.add_argument("--measured", action="store_true",
                   help="variants, trained, search: read what the dataset's earlier report measured (N = 1, uniform, "
                        "the grid or the search's splits, solvers of the same name) instead of running it; pass its "
                        "--boundaries and --seeds")
    p.add_argument("--name", default="landscape",
                   help="report file names (OUT/NAME.json, ...) of landscapes, regimes, search, margin and trained: another "
                        "name keeps an earlier report beside the new one while sharing its runs")
    args = p.parse_args(argv)
    SEEDS[:] = args.seeds
    NAME[:] = [args.name]
    if args.what == "report":
        sys.path.insert(0, str(REPO / "benchmarks"))
        from evidence_report import main as report  # benchmarks/evidence_report.py

        return report()
    {"landscapes": run_landscapes, "variants": run_variants, "trained": run_trained, "regimes": run_regimes,
     "search": run_search, "margin": run_margin, "restore": restore}[args.what](args)
    wait_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
