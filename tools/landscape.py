#!/usr/bin/env python
"""Split landscape: how every metric depends on where the boundaries go, and how far each solver's split is from the
best one found (its regret) -- before spending GPU weeks on a split, run this on a small version of the problem.

    python tools/landscape.py --gin gin/quickstart.gin --n 2 --seeds 0 1 2 3 4 --out runs/landscape \\
        --solver 'cbs=gin/splits/warm_split.gin' --jobs 2
    python tools/landscape.py --gin gin/quickstart.gin --n 4 --seeds 0 1 2 3 4 --out runs/landscape4 --solver 'cbs=...'

For N = 2 the boundary is swept over --boundaries (default 0.1, 0.2, ..., 0.9); for N = 3 or 4 a coordinate search
starts from the uniform split and moves one boundary at a time by each --search-steps while the primary metric's mean
improves. One network (N = 1) and the uniform split are always measured; they and every fixed split train on their
own boundaries whatever train.adaptation the gin files ship (the quickstart's successive halving), the solvers keep it. Each --solver NAME=BINDINGS ('; '-separated
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
import shlex
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from cbsflow import landscape_report as report  # noqa: E402
from cbsflow import landscape_runner as runner_module  # noqa: E402
from cbsflow import workers  # noqa: E402
from cbsflow.errors import UserError  # noqa: E402


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
    p.add_argument("--search-warm", action="store_true",
                   help="N >= 3: search again over the same splits with the warm split's shared start (labels wb...), "
                        "the regret reference for warm-started methods")
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
            runner_module.parse_solver(spec)
        runner = runner_module.Runner(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = shlex.join(["python", "tools/landscape.py", *(sys.argv[1:] if argv is None else argv)])
        configs = runner_module.configurations(args)
        if args.dry_run:
            for line in runner_module.dry_run_commands(runner, configs):
                print(line)
            return 0
        runner_module.sweep(runner, configs)
        summary = report.summarise(runner)
    except UserError as err:
        print(f"landscape.py: error: {err}", file=sys.stderr)
        return 2
    report.write_report(runner, summary, out, args.name, command)
    print((out / f"{args.name}.md").read_text())
    return 1 if runner.failures else 0

if __name__ == "__main__":
    sys.exit(main())
