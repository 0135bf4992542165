#!/usr/bin/env python
"""Split landscape: how every metric depends on where the boundaries go, and how far each solver's split is from the
best one found (its regret) -- before spending GPU weeks on a split, run this on a small version of the problem.

    python tools/landscape.py --gin gin/quickstart.gin --n 2 --seeds 0 1 2 3 4 --out runs/landscape \\
        --solver 'cbs=gin/splits/warm_split.gin' --jobs 2
    python tools/landscape.py --gin gin/quickstart.gin --n 4 --seeds 0 1 2 3 4 --out runs/landscape4 --solver 'cbs=...'

For N = 2 the boundary is swept over --boundaries (default 0.1, 0.2, ..., 0.9); for N = 3 or 4 a coordinate search
starts from the uniform split and moves one boundary at a time by each --search-steps while the primary metric's mean
improves. One network (N = 1) and the uniform split are always measured; they and every fixed split train on their
own boundaries whatever train.adaptation the gin files ship (the quickstart's warm split), the solvers keep it. Each --solver NAME=BINDINGS ('; '-separated
gin bindings for the profile and split stages) is profiled and split once per seed and its split trained and
evaluated like the others (with --interpolate, N = 2 only: read off the measured landscape instead of trained).
Every configuration runs the same seeds, so differences are paired. Runs go through tools/run.py (one run directory
each, under OUT/runs), so an interrupted landscape resumes where it stopped; experts with the same settings, seed
and interval are trained once and shared (OUT/experts), and so are identical profiles (OUT/profiles).
To score a new monitor on a landscape measured earlier, pass that report with --measured: N = 1, uniform, the grid (or
the search's splits) and any solver or --baseline it already holds (same name and bindings) are read from it, and
only the new ones run -- and the seeds it lacks, so a landscape can be extended with more seeds. E.g. a monitor of
your own read off a landscape of the quickstart with a profile stage (gin/quickstart_aux.gin) measured before:

    python tools/landscape.py --gin gin/quickstart_aux.gin --n 2 --seeds 0 1 2 3 4 --out runs/landscape_aux \\
        --name mine --measured runs/landscape_aux/landscape.json --interpolate \\
        --solver 'mine=profile.monitor = @my_monitor'

--boundaries with no value measures only N = 1, the uniform split and the solvers: a paired comparison, e.g. CBS beside
uniform and single networks where the experts' capacity binds (gin/quickstart_compare.gin, 3 min on 2 cores):

    python tools/landscape.py --gin gin/quickstart_compare.gin --n 2 --boundaries --seeds 0 1 2 3 4 \
        --solver 'cbs=gin/splits/warm_split.gin' --baseline 'N1x2steps=expert/training.steps = 4000' \
        --baseline 'N1x2params=mlp.width = 29' --out runs/quickstart_compare --jobs 2

With --jobs > 1 every run is a child process forked from a server that has imported cbsflow once
(cbsflow/workers.py), so runs do not pay ~2 s of start-up each; runs draw no figures of their own unless --figures.

Writes OUT/landscape.json, OUT/landscape.md (--name changes the file names; tables of every metric, the best split per metric, the regret table, and
where metrics rank the splits differently) and OUT/landscape.png (each metric against the boundary with its 95 %
band, N = 1 and the solvers' boundaries drawn on it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from cbsflow import landscape as ls  # noqa: E402
from cbsflow import threads as threads_module  # noqa: E402
from cbsflow import workers  # noqa: E402
from cbsflow.compare import t_quantile  # noqa: E402
from cbsflow.errors import EXIT_PREEMPTED, UserError  # noqa: E402

RUN = [sys.executable, workers.RUN_SCRIPT]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/landscape.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gin", action="append", required=True, metavar="FILE", help="gin file (repeatable)")
    p.add_argument("--bind", action="append", default=[], metavar="BINDING", help="binding for every run (repeatable)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="module that registers components (passed on to tools/run.py)")
    p.add_argument("--n", type=int, default=2, help="number of experts: 2 (boundary sweep), 3 or 4 (coordinate search)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="paired seeds (default 0-4)")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=BINDING[; BINDING...]",
                   help="another one-network baseline, e.g. 'N=1 2x steps=expert/training.steps = 8000' (repeatable): "
                        "a claim that a split beats one network should say which one")
    p.add_argument("--select-seeds", type=int, nargs="+", metavar="SEED",
                   help="the seeds that choose the best split; the regret is scored on the other seeds (default: the "
                        "first half of --seeds once there are 4 or more; fewer give an in-sample regret, so labelled)")
    p.add_argument("--boundaries", type=float, nargs="*",
                   help="N = 2: boundaries to sweep (default 0.1, ..., 0.9; none: only N = 1, uniform and the solvers)")
    p.add_argument("--solver", action="append", default=[], metavar="NAME=BINDINGS",
                   help="a solver to score, e.g. 'cbs=split.solver = @deboor(); deboor.exponent = 1.0' (repeatable)")
    p.add_argument("--primary", default="sliced_wasserstein", help="metric that picks the best split (default SW)")
    p.add_argument("--search-steps", type=float, nargs="+", default=[0.1, 0.05], help="N >= 3: move sizes, in order")
    p.add_argument("--min-gap", type=float, default=0.02, help="N >= 3: narrowest segment the search may make")
    p.add_argument("--max-evals", type=int, default=40, help="N >= 3: most splits the search may measure")
    p.add_argument("--interpolate", action="store_true",
                   help="N = 2: score the solvers' splits on the measured landscape instead of training them")
    p.add_argument("--measured", metavar="REPORT",
                   help="read N = 1, uniform, the grid (or the search's splits) and every solver of the same name "
                        "and bindings from REPORT (an earlier landscape's .json with the same gin files and bindings) instead of running "
                        "them, so that new solvers are scored on a landscape already paid for; matched by names, file "
                        "names and bindings, not by what the gin files hold: after editing one, measure anew or give "
                        "the changed solver a new name")
    p.add_argument("--out", required=True, help="output folder (runs, caches and the report)")
    p.add_argument("--name", default="landscape", help="report file names: OUT/NAME.{json,md,png} (default landscape)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (each a child process, sharing the cores)")
    p.add_argument("--figures", action="store_true",
                   help="also draw each run's profile.png and samples.png (off: about 1.5 s a run)")
    p.add_argument("--dry-run", action="store_true", help="print the run commands of the fixed splits and stop")
    args = p.parse_args(argv)
    if not 2 <= args.n <= 4:
        p.error("--n must be 2, 3 or 4")
    if args.interpolate and args.n != 2:
        p.error("--interpolate needs --n 2")
    if args.boundaries is None:
        args.boundaries = [round(0.1 * k, 3) for k in range(1, 10)]
    if any(not 0 < b < 1 for b in args.boundaries):
        p.error("--boundaries must lie strictly between 0 and 1")
    if args.select_seeds and (set(args.select_seeds) - set(args.seeds) or set(args.select_seeds) >= set(args.seeds)):
        p.error("--select-seeds must be some of --seeds, leaving at least one to score the regret on")
    if args.interpolate and not args.boundaries:
        p.error("--interpolate reads the solvers' splits off the N = 2 grid: give --boundaries")
    return args


def parse_solver(spec: str) -> ls.Config:
    """'NAME=ITEM; ITEM; ...': each ITEM a gin binding or a .gin file whose bindings apply to this solver only."""
    name, sep, rest = spec.partition("=")
    items = [b.strip() for b in rest.split(";") if b.strip()]
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.+@-]+", name.strip()) or not items:
        raise UserError(f"--solver {spec!r}: expected NAME=ITEM[; ITEM...] with gin bindings or .gin files, e.g. "
                        "'cbs=split.solver = @deboor()' or 'accel=benchmarks/gin/variants/acceleration_fd.gin'")
    files = tuple(i for i in items if i.endswith(".gin") and "=" not in i)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise UserError(f"--solver {spec!r}: no such gin file {missing[0]}")
    return ls.Config(name.strip(), "solver", None, tuple(i for i in items if i not in files), files)


class Runner:
    """Runs configurations × seeds through tools/run.py, sharing identical profiles and experts between runs."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, Path(args.out)
        self.results: dict[str, ls.Measured] = {}
        self.configs: dict[str, ls.Config] = {}
        self.failures: list[str] = []
        self.lock = threading.Lock()
        os.environ["TQDM_DISABLE"] = "1"  # no progress bars, here or in the runs
        if args.jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # the cores shared out between parallel runs
            os.environ["OMP_NUM_THREADS"] = str(max(1, int(threads_module.usable_cores()) // args.jobs))
        threads = os.environ.get("OMP_NUM_THREADS", "")
        self.threads = int(threads) if args.jobs > 1 and threads.isdigit() else 0
        if args.jobs <= 1:  # the runs happen in this process
            workers.keep_freed_memory()
        self.measured = load_measured(args) if args.measured else {}
        self.code = ls.source_digest(args.imports)

    # ------------------------------------------------------------------------------------------- digests

    def gin_files(self, cfg: ls.Config) -> list[str]:
        return [*self.args.gin, *cfg.gin_files]

    def digests(self, cfg: ls.Config, bindings: list[str]) -> dict:
        """Digests of the profile and train stages for these bindings (what the caches key on), and whether the
        split's solver reads a profile."""
        from cbsflow import cli, config, rundir

        cli.import_modules(self.args.imports)
        config.parse(self.gin_files(cfg), bindings)
        # The caches key on the configuration and on the code (an edited cbsflow or --import module trains anew).
        digests = {s: f"{rundir.config_digest(cli.stage_config(s))}-{self.code}" for s in ("profile", "train")}
        return {**digests, "needs_profile": cli.solver_needs_profile()}

    def bindings(self, cfg: ls.Config, seed: int) -> list[str]:
        """A fixed split through the manual solver, its experts trained on those boundaries even where the gin files
        ship a method that moves them (train.adaptation, e.g. the quickstart's warm split); a solver's own bindings
        with N_SEGMENTS = --n (gin/base.gin)."""
        if cfg.boundaries is not None:
            split = ["split.solver = @manual()", f"manual.boundaries = {list(cfg.boundaries)}",
                     "train.adaptation = None"]
        else:
            split = [f"N_SEGMENTS = {self.args.n}"]
        figures = [] if self.args.figures else [f"{stage}.figures = False" for stage in ("split", "train", "sample", "evaluate")]
        return [*self.args.bind, *cfg.bindings, *split, f"SEED = {seed}", *figures]

    def run_dir(self, cfg: ls.Config, seed: int) -> Path:
        return self.out / "runs" / re.sub(r"[^A-Za-z0-9._=,-]+", "_", cfg.label) / f"seed{seed}"

    # ------------------------------------------------------------------------------------------- running

    def measure(self, cfgs: list[ls.Config]) -> None:
        """Run every configuration with every seed (in parallel where --jobs allows)."""
        jobs = []
        for cfg in cfgs:
            self.configs.setdefault(cfg.label, cfg)
            self.results.setdefault(cfg.label, ls.Measured())
            if cfg.label in self.measured:  # --measured: read from an earlier report, not run
                self.results[cfg.label] = self.measured[cfg.label]
            for seed in self.args.seeds:
                if seed in self.results[cfg.label].values:
                    continue
                binds = self.bindings(cfg, seed)
                jobs.append((cfg, seed, binds, self.digests(cfg, binds)))  # gin is not thread-safe: digests here
        # Longest first, so that parallel jobs end together: solvers (profile, split and N experts), then more experts
        # before fewer (sorted() is stable, so the order is otherwise the given one).
        jobs = sorted(jobs, key=lambda job: (job[0].boundaries is not None, -len(job[0].boundaries or (0.0, 0.0, 1.0))))
        if self.args.jobs <= 1:
            for job in jobs:
                self._one(*job)
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            try:
                for future in concurrent.futures.as_completed([pool.submit(self._one, *job) for job in jobs]):
                    future.result()
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the runs in flight before the pool waits for them
                workers.stop_all()
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _one(self, cfg: ls.Config, seed: int, binds: list[str], digests: dict[str, str]) -> None:
        run_dir = self.run_dir(cfg, seed)
        start = time.time()
        try:
            if cfg.boundaries is None:  # a solver: its own profile and split first
                if digests["needs_profile"]:
                    self._prefill_profile(run_dir, digests["profile"])
                    self._run(cfg, binds, "profile,split", run_dir)
                    self._share_profile(run_dir, digests["profile"])
                else:  # uniform, manual, logsnr: no profile to make
                    self._run(cfg, binds, "split", run_dir)
                self._check_segments(cfg, run_dir)
                if self.args.interpolate:  # scored on the landscape, not trained
                    self._record(cfg, seed, run_dir, metrics=False)
                    return
                self._prefill_experts(run_dir, digests["train"], self._boundaries(run_dir))
                self._run(cfg, binds, "train,sample,evaluate", run_dir)
            else:
                self._prefill_experts(run_dir, digests["train"], cfg.boundaries)
                self._run(cfg, binds, "split,train,sample,evaluate", run_dir)
            self._share_experts(run_dir, digests["train"])
            self._record(cfg, seed, run_dir)
            print(f"  {cfg.label} seed {seed}: {time.time() - start:.0f} s", flush=True)
        except subprocess.CalledProcessError:
            with self.lock:
                self.failures.append(f"{cfg.label} seed {seed} (see {run_dir}/landscape.log)")
            print(f"  {cfg.label} seed {seed}: FAILED, see {run_dir}/landscape.log", flush=True)

    def _run(self, cfg: ls.Config, binds: list[str], stages: str, run_dir: Path) -> None:
        """tools/run.py on these bindings: in this process with --jobs 1, else in a child process forked with
        everything imported (cbsflow/workers.py)."""
        argv = [*[a for f in self.gin_files(cfg) for a in ("--gin", f)], *[a for m in self.args.imports for a in
                ("--import", m)], *[a for b in binds for a in ("--bind", b)], "--stages", stages, "--run-dir", str(run_dir),
                "--rerun"]
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "landscape.log", "a") as log:
            log.write("$ " + shlex.join([*RUN, *argv]) + "\n")
            log.flush()
            if self.args.jobs > 1:
                code = workers.run(argv, str(run_dir / "landscape.log"), self.threads)
                if code != 0:
                    raise subprocess.CalledProcessError(code, "tools/run.py")
                return
            from cbsflow.cli import main as run_main

            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                try:
                    code = run_main(argv)
                except Exception:  # a crash in one run is that run's failure, with its traceback in its log
                    traceback.print_exc(file=log)
                    code = 1
            if code == EXIT_PREEMPTED:  # this process's SIGTERM reached the run's training loop first
                raise KeyboardInterrupt("SIGTERM")
            if code != 0:
                raise subprocess.CalledProcessError(code, "tools/run.py")

    def _check_segments(self, cfg: ls.Config, run_dir: Path) -> None:
        n = len(json.loads((run_dir / "split.json").read_text())["boundaries"]) - 1
        if n != self.args.n:
            with open(run_dir / "landscape.log", "a") as log:
                log.write(f"solver {cfg.label} gave {n} segments, not --n {self.args.n}: bind its n_segments\n")
            raise subprocess.CalledProcessError(2, "split")

    def _record(self, cfg: ls.Config, seed: int, run_dir: Path, metrics: bool = True) -> None:
        split = json.loads((run_dir / "split.json").read_text())
        values = {}
        if metrics:
            for name, entry in json.loads((run_dir / "metrics.json").read_text())["metrics"].items():
                if isinstance(entry.get("value"), (int, float)):
                    values[name] = float(entry["value"])
        with self.lock:
            self.results[cfg.label].values[seed] = values
            self.results[cfg.label].boundaries[seed] = split["boundaries"]

    # ------------------------------------------------------------------------------------------- caches

    def _prefill_profile(self, run_dir: Path, digest: str) -> None:
        cached = self.out / "profiles" / f"{digest}.json"
        if cached.exists() and not (run_dir / "profile.json").exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, run_dir / "profile.json")

    def _share_profile(self, run_dir: Path, digest: str) -> None:
        cached = self.out / "profiles" / f"{digest}.json"
        if (run_dir / "profile.json").exists() and not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / "profile.json", cached)

    def _expert_key(self, digest: str, k: int, interval) -> str:
        return f"{digest}-k{k}-{interval[0]:.9f}-{interval[1]:.9f}.pt"

    @staticmethod
    def _boundaries(run_dir: Path) -> list[float]:
        return json.loads((run_dir / "split.json").read_text())["boundaries"]

    def _prefill_experts(self, run_dir: Path, digest: str, b) -> None:
        for k in range(len(b) - 1):
            cached = self.out / "experts" / self._expert_key(digest, k, (b[k], b[k + 1]))
            target = run_dir / "checkpoints" / f"segment_{k}.pt"
            if cached.exists() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cached, target)

    def _share_experts(self, run_dir: Path, digest: str) -> None:
        b = self._boundaries(run_dir)
        for k in range(len(b) - 1):
            cached = self.out / "experts" / self._expert_key(digest, k, (b[k], b[k + 1]))
            if not cached.exists():
                cached.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / "checkpoints" / f"segment_{k}.pt", cached)


def load_measured(args: argparse.Namespace) -> dict[str, ls.Measured]:
    """What an earlier report (--measured) measured: N = 1, uniform, the grid or the search's splits, and every solver
    or baseline of the same name and bindings as one of this call's, for the seeds of this call it holds (the others
    run, so a landscape can be extended with more seeds); checked against this call's settings."""
    path = Path(args.measured)
    try:
        report = json.loads(path.read_text())
        settings, configs = report["settings"], report["summary"]["configs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"--measured {path}: not a landscape report ({err}); give the .json that tools/landscape.py "
                        "wrote") from None
    for key in ("gin", "bind", "n"):
        if settings.get(key) != getattr(args, key):
            raise UserError(f"--measured {path}: its {key} is {settings.get(key)!r}, this call's {getattr(args, key)!r};"
                            " score solvers only on a landscape measured with the same settings")
    if bool(settings.get("interpolate")) != args.interpolate:  # trained and interpolated solvers do not mix
        configs = {k: c for k, c in configs.items() if c.get("kind") != "solver"}
    required = [ls.split_label((0.0, 1.0)), "uniform"]  # and for N = 2 the grid of this call
    required += [ls.split_label((0.0, b, 1.0)) for b in args.boundaries if abs(b - 0.5) > 1e-9] if args.n == 2 else []
    searched = [label for label, c in configs.items() if c.get("kind") == "search"]  # a search replays them
    same = [cfg.label for cfg in [*map(parse_solver, args.solver), *map(parse_baseline, args.baseline)]
            if cfg.label in configs and configs[cfg.label].get("kind") == cfg.kind
            and tuple(configs[cfg.label].get("bindings", ())) == cfg.bindings
            and tuple(configs[cfg.label].get("gin_files", ())) == cfg.gin_files]
    out = {}
    for label in required + searched + same:
        values = configs.get(label, {}).get("values", {})
        have = [s for s in args.seeds if str(s) in values]  # read back; this call's other seeds run
        if have:
            out[label] = ls.Measured(values={s: dict(values[str(s)]) for s in have},
                                     boundaries={s: list(configs[label]["boundaries"][str(s)]) for s in have})
    if not out:
        raise UserError(f"--measured {path}: none of this call's configurations and seeds {args.seeds} is in it; pass "
                        "the report's --boundaries and --seeds (or a subset of them)")
    return out


# ----------------------------------------------------------------------------------------------- the experiment

def parse_baseline(spec: str) -> ls.Config:
    """'NAME=BINDING; ...': one network (no split) trained with these bindings, e.g. twice the steps or width."""
    cfg = parse_solver(spec)
    return ls.Config(cfg.label, "single", (0.0, 1.0), cfg.bindings, cfg.gin_files)


def fixed(boundaries, kind: str = "grid", label: str | None = None) -> ls.Config:
    b = tuple(float(x) for x in boundaries)
    return ls.Config(label or ls.split_label(b), kind, b)


def sweep(runner: Runner) -> None:
    args = runner.args
    n = args.n
    configs = [fixed((0.0, 1.0), "single"), fixed([k / n for k in range(n + 1)], "uniform", "uniform")]
    if n == 2:
        configs += [fixed((0.0, b, 1.0)) for b in args.boundaries if abs(b - 0.5) > 1e-9]
    configs += [parse_solver(spec) for spec in args.solver]
    configs += [parse_baseline(spec) for spec in args.baseline]
    if args.dry_run:
        for cfg in configs:
            if cfg.boundaries is not None:
                print(shlex.join([*RUN, "--stages", "split,train,sample,evaluate",
                                  *[a for b in runner.bindings(cfg, args.seeds[0]) for a in ("--bind", b)]]))
        return
    runner.measure(configs)
    if n == 2 and args.interpolate:
        score_by_interpolation(runner)
    if n >= 3:
        coordinate_search(runner)


def coordinate_search(runner: Runner) -> None:
    """Greedy first-improvement search on the primary metric's mean, one boundary at a time, from uniform."""
    args, primary, seeds = runner.args, runner.args.primary, runner.args.seeds
    current = runner.configs["uniform"]
    evals = 0
    for step in args.search_steps:
        improved = True
        while improved and evals < args.max_evals:
            improved = False
            for cand in ls.neighbours(current.boundaries, step, args.min_gap):
                cfg = fixed(cand, "search")
                runner.measure([cfg])
                evals += 1
                better = ls.best_config(runner.results, primary, seeds, [current.label, cfg.label])
                if better == cfg.label:
                    print(f"  search: {cfg.label} improves on {current.label}", flush=True)
                    current, improved = cfg, True
                    break
                if evals >= args.max_evals:
                    break


def score_by_interpolation(runner: Runner) -> None:
    """Each solver's metric per seed, read off that seed's N = 2 landscape at the boundary the solver chose."""
    seeds = runner.args.seeds
    grid = [label for label, c in runner.configs.items() if c.kind in ("grid", "uniform")]
    for label, cfg in runner.configs.items():
        if cfg.kind != "solver":
            continue
        measured = runner.results[label]
        for seed in seeds:
            b = measured.boundaries[seed][1]
            xs = [runner.configs[g].boundaries[1] for g in grid]
            names = set.intersection(*(set(runner.results[g].values.get(seed, {})) for g in grid))
            measured.values[seed] = {m: ls.interpolate(xs, [runner.results[g].values[seed][m] for g in grid], b)
                                     for m in names}


# ----------------------------------------------------------------------------------------------- the report

def summarise(runner: Runner) -> dict:
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
    return None if obj is None else {"mean": obj.mean, "half_width": obj.half_width, "n": obj.n,
                                     "resolved": obj.resolved, "direction": obj.direction, "method": obj.method}


def regret_cell(r: dict | None) -> str:
    """'+0.01 ± 0.004'; bold and marked '(better)' or '(worse)' where resolved, plain where not."""
    if r is None:
        return "—"
    text = f"{r['mean']:+.4g} ± {fmt(r['half_width'], 2)}"
    return f"**{text} ({'worse' if r['mean'] > 0 else 'better'})**" if r["resolved"] else text


def fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}g}"


def write_markdown(runner: Runner, summary: dict, path: Path, command: str) -> None:
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
    rows = [(label, *c["stats"][m]) for label, c in cfgs.items() if c["stats"][m]]
    rows.sort(key=lambda r: r[1])
    y = range(len(rows))
    ax.errorbar([r[1] for r in rows], y, xerr=[t95 * r[2] for r in rows], fmt="o", color="C0")
    ax.set_yticks(list(y), [r[0] for r in rows], fontsize=6)


def _interrupted(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupted)  # SIGTERM stops the runs in flight, as Ctrl-C does
    try:
        return _main(args, argv)
    except KeyboardInterrupt as stop:
        workers.stop_all()
        print(f"landscape.py: stopped ({stop or 'Ctrl-C'}); every run in flight was stopped (training runs wrote a "
              "checkpoint): rerun the same command to go on", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace, argv: list[str] | None) -> int:
    try:
        for spec in args.solver:
            parse_solver(spec)
        runner = Runner(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = shlex.join(["python", "tools/landscape.py", *(sys.argv[1:] if argv is None else argv)])
        sweep(runner)
        if args.dry_run:
            return 0
        summary = summarise(runner)
    except UserError as err:
        print(f"landscape.py: error: {err}", file=sys.stderr)
        return 2
    report = {"command": command, "settings": {k: v for k, v in vars(args).items()}, "summary": summary,
              "failures": runner.failures}
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    write_markdown(runner, summary, out / f"{args.name}.md", command)
    plot(runner, summary, out / f"{args.name}.png")
    print((out / f"{args.name}.md").read_text())
    return 1 if runner.failures else 0


if __name__ == "__main__":
    sys.exit(main())
