"""The split-landscape runner: configurations × seeds run through tools/run.py (in this process, or forked children with
``--jobs`` > 1), identical profiles and experts shared between runs, an earlier report read back (``--measured``),
the N = 2 boundary sweep and the N >= 3 coordinate search. ``tools/landscape.py`` parses the command line and
prints; the statistics live in ``cbsflow/landscape.py``, the report in ``cbsflow/landscape_report.py``.

The runner reads its settings from the tool's parsed arguments (an ``argparse.Namespace`` with the attributes of
``tools/landscape.py --help``: gin, bind, imports, n, seeds, boundaries, solver, baseline, primary, search_steps,
min_gap, max_evals, interpolate, measured, out, jobs, figures), which the report writes back as its settings.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from cbsflow import landscape as ls
from cbsflow import threads as threads_module
from cbsflow import workers
from cbsflow.errors import EXIT_PREEMPTED, UserError

RUN = [sys.executable, workers.RUN_SCRIPT]


def config_part(digest: str) -> str:
    """The configuration's part of a cache digest ('<config>-<code>'): what a read-back is compared on (the code's
    part changes with every edit of cbsflow)."""
    return digest.rsplit("-", 1)[0]


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
        self.unchecked = False  # said once: a --measured report without configuration digests
        self.code = ls.source_digest(args.imports)

    # ------------------------------------------------------------------------------------------- digests

    def gin_files(self, cfg: ls.Config) -> list[str]:
        """The call's gin files, then the configuration's own (a solver's .gin items)."""
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
        ship a method that moves them (train.adaptation, e.g. the quickstart's successive halving); a solver's own bindings
        with N_SEGMENTS = --n (gin/base.gin)."""
        if cfg.boundaries is not None:
            split = ["split.solver = @manual()", f"manual.boundaries = {list(cfg.boundaries)}",
                     "train.adaptation = None"]
        else:
            split = [f"N_SEGMENTS = {self.args.n}"]
        figures = [] if self.args.figures else [f"{stage}.figures = False" for stage in ("split", "train", "sample", "evaluate")]
        return [*self.args.bind, *cfg.bindings, *split, f"SEED = {seed}", *figures]

    def run_dir(self, cfg: ls.Config, seed: int) -> Path:
        """OUT/runs/LABEL/seedS, the label made safe for a file name: a rerun finds and resumes its runs there."""
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
                self.check_measured(cfg)
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

    def check_measured(self, cfg: ls.Config) -> None:
        """A configuration read back from --measured must have run under the train configuration this code gives
        the same bindings (a changed default, e.g. a backbone's time input, makes old numbers incomparable); reports
        written before digests were recorded are said once to be unchecked."""
        from cbsflow.errors import UserError

        measured = self.measured[cfg.label]
        for seed in measured.values:
            recorded = measured.digests.get(seed)
            if recorded is None:
                if not self.unchecked:
                    print(f"--measured {self.args.measured}: its runs record no configuration digest (written before "
                          "2026-12-07), so they are taken as comparable unchecked; rerun without --measured if "
                          "defaults changed since", flush=True)
                self.unchecked = True
                continue
            now = config_part(self.digests(cfg, self.bindings(cfg, seed))["train"])
            if now != recorded:
                raise UserError(f"--measured {self.args.measured}: {cfg.label} seed {seed} ran under another train "
                                f"configuration ({recorded}) than this code gives its bindings ({now}): a default "
                                "changed since the report; rerun without --measured")

    def _one(self, cfg: ls.Config, seed: int, binds: list[str], digests: dict[str, str]) -> None:
        if workers.stopping():  # Ctrl-C or SIGTERM: the jobs not started stay unstarted, with nothing to say
            return
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
            with self.lock:
                self.results[cfg.label].digests[seed] = config_part(digests["train"])
            print(f"  {cfg.label} seed {seed}: {time.time() - start:.0f} s", flush=True)
        except subprocess.CalledProcessError:
            if workers.stopping():  # stopped with the rest, not failed: a rerun of the command goes on with it
                return
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
                if code != 0:  # said in the log: a worker killed by a signal (code < 0) leaves no message of its own
                    with open(run_dir / "landscape.log", "a") as after:
                        after.write(f"[landscape] the run exited with code {code}"
                                    + (f" (signal {-code})" if code < 0 else "") + "\n")
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
    searched = [label for label, c in configs.items() if c.get("kind") == "search"  # a search replays them
                or (getattr(args, "search_warm", False) and c.get("kind") == "solver" and label.startswith("wb")
                    and tuple(c.get("gin_files", ())) == (WARM_SPLIT_GIN,))]
    same = [cfg.label for cfg in [*map(parse_solver, args.solver), *map(parse_baseline, args.baseline)]
            if cfg.label in configs and configs[cfg.label].get("kind") == cfg.kind
            and tuple(configs[cfg.label].get("bindings", ())) == cfg.bindings
            and tuple(configs[cfg.label].get("gin_files", ())) == cfg.gin_files]
    out = {}
    for label in required + searched + same:
        values = configs.get(label, {}).get("values", {})
        have = [s for s in args.seeds if str(s) in values]  # read back; this call's other seeds run
        if have:
            digests = configs[label].get("digests") or {}
            out[label] = ls.Measured(values={s: dict(values[str(s)]) for s in have},
                                     boundaries={s: list(configs[label]["boundaries"][str(s)]) for s in have},
                                     digests={s: digests[str(s)] for s in have if digests.get(str(s))})
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
    """A split with the same boundaries on every seed, labelled by them unless ``label`` is given."""
    b = tuple(float(x) for x in boundaries)
    return ls.Config(label or ls.split_label(b), kind, b)


def configurations(args: argparse.Namespace) -> list[ls.Config]:
    """What every call measures: N = 1, the uniform split, the N = 2 grid (less 0.5, which uniform is), each
    --solver and each --baseline, in that order."""
    n = args.n
    configs = [fixed((0.0, 1.0), "single"), fixed([k / n for k in range(n + 1)], "uniform", "uniform")]
    if n == 2:
        configs += [fixed((0.0, b, 1.0)) for b in args.boundaries if abs(b - 0.5) > 1e-9]
    configs += [parse_solver(spec) for spec in args.solver]
    configs += [parse_baseline(spec) for spec in args.baseline]
    return configs


def dry_run_commands(runner: Runner, configs: list[ls.Config]) -> list[str]:
    """The tools/run.py command line of each fixed split on the first seed (--dry-run), for a user to check the
    bindings before anything trains."""
    return [shlex.join([*RUN, "--stages", "split,train,sample,evaluate",
                        *[a for b in runner.bindings(cfg, runner.args.seeds[0]) for a in ("--bind", b)]])
            for cfg in configs if cfg.boundaries is not None]


def sweep(runner: Runner, configs: list[ls.Config]) -> None:
    """Measure ``configs`` on every seed; then, for N = 2 with --interpolate, read the solvers off the grid, and for
    N >= 3 search for a better split from uniform."""
    runner.measure(configs)
    if runner.args.n == 2 and runner.args.interpolate:
        score_by_interpolation(runner)
    if runner.args.n >= 3:
        coordinate_search(runner)
        if getattr(runner.args, "search_warm", False):
            coordinate_search(runner, warm=True)


WARM_SPLIT_GIN = "gin/splits/warm_split.gin"


def warm_fixed(boundaries) -> ls.Config:
    """The warm split's shared start with its boundaries fixed (``warm_split.solver = @manual()``): a point of the
    warm-started landscape, labelled ``wb`` and its inner boundaries. A solver, so that it never enters the
    scratch landscape's best fixed split."""
    b = [float(x) for x in boundaries]
    return ls.Config("wb" + ",".join(f"{x:g}" for x in b[1:-1]), "solver", None,
                     ("warm_split.solver = @manual()", f"manual.boundaries = {b}"), (WARM_SPLIT_GIN,))


def coordinate_search(runner: Runner, warm: bool = False) -> None:
    """Greedy first-improvement search on the primary metric's mean, one boundary at a time, from uniform: over fixed
    splits from scratch, or (``warm``) over the same splits with the warm split's shared start."""
    args, primary, seeds = runner.args, runner.args.primary, runner.args.seeds
    at = runner.configs["uniform"].boundaries
    current = warm_fixed(at) if warm else runner.configs["uniform"]
    if warm:
        runner.measure([current])
    evals = 0
    for step in args.search_steps:
        improved = True
        while improved and evals < args.max_evals:
            improved = False
            for cand in ls.neighbours(at, step, args.min_gap):
                cfg = warm_fixed(cand) if warm else fixed(cand, "search")
                runner.measure([cfg])
                evals += 1
                better = ls.best_config(runner.results, primary, seeds, [current.label, cfg.label])
                if better == cfg.label:
                    print(f"  {'warm ' if warm else ''}search: {cfg.label} improves on {current.label}", flush=True)
                    current, at, improved = cfg, cand, True
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
            names = sorted(set.intersection(*(set(runner.results[g].values.get(seed, {})) for g in grid)))
            measured.values[seed] = {m: ls.interpolate(xs, [runner.results[g].values[seed][m] for g in grid], b)
                                     for m in names}
