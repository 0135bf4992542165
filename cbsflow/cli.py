"""Command line of tools/run.py: compose components from gin files and run the pipeline stages."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import sys
import time

import gin

from cbsflow import config, locks, registry, rundir, threads
from cbsflow.errors import EXIT_PREEMPTED, Preempted, UserError
from cbsflow.rundir import STAGE_ORDER

# Stages that run on every process of `accelerate launch` (training, sampling and feature extraction are shared;
# only the main process writes); split runs on the main process while the rest wait.
DISTRIBUTED_STAGES = ("profile", "train", "sample", "evaluate")

EXAMPLES = """examples:
  python tools/run.py --gin gin/quickstart.gin                         # every stage, runs/quickstart/
  python tools/run.py --gin gin/quickstart.gin --bind 'train.adaptation = None' --run-dir runs/uniform
  python tools/run.py --gin gin/quickstart_aux.gin --import my_monitors --bind 'profile.monitor = @my_monitor'
  python tools/run.py --gin gin/quickstart_aux.gin --run-dir runs/aux    # a profile stage (auxiliary net)
  python tools/run.py --gin gin/quickstart_aux.gin --run-dir runs/aux --stages split --force  # re-split it
  python tools/run.py --gin gin/quickstart.gin --dry-run               # what would run, and why
  python tools/run.py --list                                           # every component
  python tools/run.py --list deboor                                    # one component's parameters

A stage whose artifact is up to date (same settings, same input) is skipped; one whose settings or input
changed is redone, and so is everything after it (--no-rerun stops instead and says why)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/run.py", description="Run the cbsflow pipeline (profile -> split -> "
                                "train -> sample -> evaluate) from gin files.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gin", action="append", default=[], metavar="FILE", help="gin file (repeatable, later wins)")
    p.add_argument("--bind", action="append", default=[], metavar="BINDING",
                   help="gin binding, e.g. 'split.solver = @uniform()' (repeatable, applied after the files)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module that registers components (repeatable)")
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of " + ",".join(STAGE_ORDER) + " (default: all of them, but profile "
                        "only when the split's solver reads a profile)")
    p.add_argument("--run-dir", help="run directory (default: runs/<name of the last gin file>)")
    p.add_argument("--segment", type=int, action="append", metavar="K",
                   help="train only expert K (repeatable): one job per expert on a cluster")
    p.add_argument("--branch-from", metavar="RUN_DIR",
                   help="start a new run directory from another one's profile, split and trained experts (hard links), "
                        "e.g. to sample the same experts with other settings")
    p.add_argument("--strict", action="store_true",
                   help="stop when a binding is read by none of the chosen stages (default: a warning line)")
    p.add_argument("--force", action="store_true", help="redo the chosen stages even if they are up to date")
    p.add_argument("--rerun", action="store_true",
                   help="retrain experts whose settings changed (without it a changed binding that would retrain "
                        "stops with an error saying what changed: training is the expensive stage)")
    p.add_argument("--no-rerun", action="store_true",
                   help="stop with an error instead of redoing a stage whose artifact exists but is out of date")
    p.add_argument("--dry-run", action="store_true", help="say which stages would run and why, then stop")
    p.add_argument("--list", nargs="?", const="", metavar="NAME",
                   help="list every registered component by kind, or one component's parameters, and exit")
    return p.parse_args(argv)


def import_modules(names: list[str]) -> None:
    """Import user modules (from the current directory or PYTHONPATH) so that they register components."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import cbsflow.components  # noqa: F401

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise UserError(f"--import {name}: {err}; put the module in the current directory or on PYTHONPATH")


def list_components() -> str:
    lines, kind = [], None
    for entry in registry.entries():
        if entry.kind != kind:
            kind = entry.kind
            lines.append(f"{kind}:")
        lines.append(f"  {entry.name:<22} {entry.summary}{_parameter_count(entry)}")
    lines.append("settings (bind e.g. expert/training.steps = 2000):")
    for name in config.settings_names():
        doc = inspect.getdoc(gin.get_configurable(name)) or ""
        lines.append(f"  {name:<22} {doc.splitlines()[0] if doc else ''}")
    lines.append("`tools/run.py --list NAME` shows a component's (or the settings') parameters and defaults.")
    return "\n".join(lines)


def _parameter_count(entry: registry.Entry) -> str:
    """For backbones with an ``example`` (data shape, classes): their size at default settings, built on 'meta'."""
    import torch

    if entry.kind != "backbone" or not hasattr(entry.obj, "example"):
        return ""
    shape, classes = entry.obj.example
    with torch.device("meta"):
        n = sum(p.numel() for p in entry.obj(data_shape=shape, num_classes=classes).parameters())
    return f"  [{n / 1e6:.1f}M parameters on {'x'.join(map(str, shape))}, {classes} classes]"


def select_stages(spec: str) -> list[str]:
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STAGE_ORDER]
    if unknown or not chosen:
        raise UserError(f"--stages {spec!r}: unknown stage(s) {unknown}; choose from {','.join(STAGE_ORDER)}")
    return [s for s in STAGE_ORDER if s in chosen]


def stage_config(stage: str) -> dict:
    from cbsflow.stages import NOT_IN_DIGEST

    return config.effective_config(stage, exclude=NOT_IN_DIGEST.get(stage, ()))


def plan(run_dir: str, chosen: list[str], configs: dict, force: bool) -> dict[str, str | None]:
    """For each chosen stage, why it will run (None: up to date, skipped); raises if an unchosen stage that a
    chosen one reads (directly or through other unchosen stages) is missing or out of date, before anything is
    written."""
    reasons: dict[str, str | None] = {}
    redone: list[str] = []  # stages that will run: everything after them is stale once they have
    needed = _needed(chosen, configs)
    last = STAGE_ORDER.index(chosen[-1])
    for i, stage in enumerate(STAGE_ORDER[: last + 1]):
        upstream = rundir.input_stage(stage)
        if stage in chosen:
            stale = rundir.why_stale(run_dir, stage, configs[stage])
            if upstream in redone and stale is None:
                stale = f"{upstream} is redone first"
            reasons[stage] = "--force" if force else stale
            if reasons[stage] is not None:
                redone.append(stage)
            continue
        if stage not in needed:
            continue
        reader = next(s for s in chosen if STAGE_ORDER.index(s) > i)
        todo = ",".join(STAGE_ORDER[i: last + 1])
        if not rundir.exists(rundir.artifact(run_dir, stage)):
            raise UserError(f"{reader} needs the output of {stage}, which {run_dir} does not have "
                            f"({rundir.STAGES[stage][0]}); run it first: --stages {todo}")
        rundir.read_json(rundir.artifact(run_dir, stage), reader)  # a malformed artifact: its own precise error
        stale = f"{upstream} will be redone" if upstream in redone else rundir.why_stale(run_dir, stage, configs[stage])
        if stale is not None:
            raise UserError(f"{reader} would read a stale {stage} result in {run_dir}: {stale}; "
                            f"redo it too: --stages {todo} (or drop --stages)")
    return {s: reasons[s] for s in chosen}


def branch(source: str, run_dir: str) -> None:
    """Hard-link (or copy) the profile, split and trained experts of ``source`` into a new ``run_dir``; their recorded
    provenance then decides, as always, whether they are current for this configuration."""
    import shutil

    if not os.path.isfile(rundir.artifact(source, "train")):
        raise UserError(f"--branch-from {source}: not a run directory with trained experts (no checkpoints/train.json)")
    if os.path.exists(run_dir):
        raise UserError(f"--branch-from: {run_dir} already exists; branch into a new run directory")

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    os.makedirs(run_dir)
    for name in ("profile.json", "profile.png", "split.json"):
        if os.path.exists(os.path.join(source, name)):
            link(os.path.join(source, name), os.path.join(run_dir, name))
    shutil.copytree(os.path.join(source, "checkpoints"), os.path.join(run_dir, "checkpoints"), copy_function=link,
                    ignore=shutil.ignore_patterns("step_*", "tracking"))


def _needed(chosen: list[str], configs: dict) -> set[str]:
    """Unchosen stages whose artifacts a chosen stage reads, directly or through other unchosen stages. A split
    whose solver works without a profile (uniform, manual, logsnr) does not need one."""
    needed: set[str] = set()
    for i in range(len(STAGE_ORDER) - 2, -1, -1):
        stage, reader = STAGE_ORDER[i], STAGE_ORDER[i + 1]
        if stage in chosen or not (reader in chosen or reader in needed):
            continue
        if stage == "profile" and not solver_needs_profile():
            continue
        needed.add(stage)
    return needed


def default_stages() -> tuple[list[str], str | None]:
    """Every stage, except profile when the split's solver does not read a profile (uniform, manual, logsnr); and
    the line that says so."""
    if not solver_needs_profile():
        return ([s for s in STAGE_ORDER if s != "profile"], f"[profile] skipped: split.solver {bound_solver().__name__} "
                "needs no profile (--stages profile,... runs it)")
    return list(STAGE_ORDER), None


def bound_solver():
    """The class of the partition solver bound to split.solver, or None when it is not bound or not known."""
    return bound_component("split", "solver")


def bound_component(stage: str, parameter: str):
    """The class of the component bound to ``stage.parameter``, or None when it is not bound or not known."""
    node = next(config.walk(f"{config.STAGE_MODULE}.{stage}"))
    ref = node.bound.get(parameter)
    try:
        return registry.get(ref.configurable.name).obj
    except (AttributeError, KeyError):
        return None


def solver_needs_profile() -> bool:
    """Whether the partition solver bound to split.solver reads a profile (an unknown one is assumed to), or the
    budget bound to train.budget does (cbsflow/budget.py)."""
    solver = bound_solver()
    return solver is None or bool(getattr(solver, "needs_profile", True)) or bool(
        getattr(bound_component("train", "budget"), "needs_profile", False))


def _startup() -> None:
    """Before a run: a CPU thread count that does not oversubscribe the cores (cbsflow/threads.py). (torch's
    forward-mode AD decompositions are loaded quietly by cbsflow.monitors on import.)"""
    note = threads.configure()
    if note:
        print(note)


def run(args: argparse.Namespace) -> None:
    from cbsflow import stages
    from cbsflow.training import process_state

    import_modules(args.imports)
    if args.list is not None:
        print(config.describe_component(args.list) if args.list else list_components())
        return
    _startup()
    if not args.gin and args.run_dir and os.path.exists(os.path.join(args.run_dir, RECORD)):
        args.gin = [os.path.join(args.run_dir, RECORD)]  # the run's own record: every binding and --import of it
        print(f"configuration: {args.gin[0]} (the run's recorded settings)")
    if not args.gin:
        raise UserError("no configuration: pass --gin FILE (e.g. --gin gin/quickstart.gin), --run-dir of an existing "
                        "run, or --list")
    if args.force and args.no_rerun:
        raise UserError("--force redoes stages and --no-rerun forbids it: choose one")
    segments = [f"train.segments = {args.segment}"] if args.segment else []
    config.parse(args.gin, args.bind + segments)
    chosen, skipped = (select_stages(args.stages), None) if args.stages else default_stages()
    config.check_required_macros(chosen, args.gin)  # the data a user must name, before anything else
    if skipped:
        print(skipped)
    _check_unread(args, chosen)
    for name in STAGE_ORDER:  # every binding against its annotation, before anything is built or written
        config.check(name, required=name in chosen)
    for name in chosen:  # build every chosen stage's components: their own checks run now, too
        _call(stages.STAGES[name], None)
    configs = {name: stage_config(name) for name in STAGE_ORDER}
    run_dir = args.run_dir or os.path.join("runs", os.path.splitext(os.path.basename(args.gin[-1]))[0])
    if args.branch_from:
        state = process_state()
        if state.is_main_process:
            branch(args.branch_from, run_dir)
        state.wait_for_everyone()
    reasons = plan(run_dir, chosen, configs, args.force)
    if args.dry_run or args.no_rerun:
        _report_plan(run_dir, reasons, refuse=args.no_rerun and not args.dry_run)
        if args.dry_run:
            return
    _check_retraining(run_dir, reasons, args)
    state = process_state()
    warn_unused_processes(state)
    _run_stages(run_dir, chosen, configs, reasons, args.segment is not None, state, args.imports)


def launcher_process_count() -> int | None:
    """The --num_processes that `accelerate launch` (this process's parent) was given, or None."""
    if "ACCELERATE_MIXED_PRECISION" not in os.environ:  # not started by accelerate launch
        return None
    pid = os.getppid()
    for _ in range(3):  # the launcher, or its parent (torchrun's elastic agent sits in between)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        for i, arg in enumerate(argv):
            value = arg.split("=", 1)[1] if arg.startswith("--num_processes=") else (
                argv[i + 1] if arg == "--num_processes" and i + 1 < len(argv) else None)
            if value is not None:
                return int(value) if value.isdigit() else None
        pid = parent
    return None


def warn_unused_processes(state) -> None:
    """One warning line when `accelerate launch --num_processes N` started fewer processes than asked for (on a CPU
    that happens unless --multi_gpu is given too)."""
    asked = launcher_process_count()
    if asked and asked != state.num_processes and state.is_main_process:
        print(f"warning: accelerate launch asked for {asked} processes but this run has {state.num_processes}; on a "
              "CPU add --multi_gpu (it starts gloo workers): accelerate launch --multi_gpu --num_processes "
              f"{asked} --mixed_precision no tools/run.py ...", file=sys.stderr)


def _check_unread(args, chosen: list[str]) -> None:
    """One warning line per --bind (or binding of a --gin file) that no chosen stage reads; --strict stops instead."""
    from cbsflow.unread import bindings_of, unread_bindings

    texts = ["\n".join(args.bind)]
    for path in args.gin:
        if os.path.basename(path) != RECORD:  # a run's record lists what its stages read, by construction
            with open(path) as f:
                texts.append(f.read())
    lines = unread_bindings([b for text in texts for b in bindings_of(text)], chosen)
    if lines and args.strict:
        raise UserError(lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
                        + "; remove it, or drop --strict to run anyway")
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def _check_retraining(run_dir: str, reasons: dict, args) -> None:
    """A changed binding that would retrain trained experts needs --rerun (or --force): say what changed."""
    reason = reasons.get("train")
    # Only a finished train stage (train.json) has experts to lose: a stage stopped part-way (preempted after its
    # first expert) resumes with the same command, and its training state is tied to its settings either way.
    trained = rundir.exists(rundir.artifact(run_dir, "train"))
    if reason and reason != "--force" and trained and not (args.rerun or args.force or args.dry_run):
        raise UserError(f"this would retrain the experts in {run_dir}: train is out of date ({reason}); add --rerun "
                        "to retrain, or undo the change (tools/run.py --run-dir DIR alone reruns the recorded settings)")


def _report_plan(run_dir: str, reasons: dict, refuse: bool) -> None:
    stale = {s: r for s, r in reasons.items() if r is not None and rundir.exists(rundir.artifact(run_dir, s))}
    if refuse and stale:
        stage, reason = next(iter(stale.items()))
        raise UserError(f"--no-rerun: {stage} in {run_dir} is out of date ({reason}); run without --no-rerun to redo "
                        f"{', '.join(stale)}")
    if not refuse:
        for stage, reason in reasons.items():
            print(f"[{stage}] " + ("up to date, would be skipped" if reason is None else f"would run: {reason}"))


def _run_stages(run_dir: str, chosen: list[str], configs: dict, reasons: dict, per_segment: bool, state,
                imports: list[str] = ()) -> None:
    from cbsflow import stages

    if state.is_main_process:
        os.makedirs(run_dir, exist_ok=True)
    if {"profile", "train"} & set(chosen):
        # torch imports torch._dynamo when it builds its first optimizer (~1-2 s, once per process); imported here,
        # so that timings.json does not charge it to whichever stage trains first (an auxiliary net or the experts).
        import torch._dynamo  # noqa: F401
    seconds = {}
    for name in chosen:
        state.wait_for_everyone()
        stale = reasons[name] if name == chosen[0] else rundir.why_stale(run_dir, name, configs[name])
        if stale is None and reasons[name] != "--force" and not (name == "train" and per_segment):
            state.print(f"[{name}] up to date in {run_dir}, skipped (--force redoes it)")
            continue
        start = time.time()
        # One job per stage of a run directory (the train stage locks each expert instead, so --segment jobs run
        # side by side); a job that finds the stage finished by another one once it holds the lock skips it.
        guard = contextlib.nullcontext() if name == "train" else locks.held(locks.stage_lock(run_dir, name), state)
        with guard:
            if (name != "train" and reasons[name] != "--force"
                    and rundir.why_stale(run_dir, name, configs[name]) is None):
                state.print(f"[{name}] finished by another job meanwhile, skipped")
                continue
            if stale and rundir.exists(rundir.artifact(run_dir, name)):
                state.print(f"[{name}] redoing: {stale}")
            prov = rundir.provenance(run_dir, name, configs[name])
            if name in DISTRIBUTED_STAGES or state.is_main_process:
                _call(stages.STAGES[name], run_dir, prov)
        seconds[name] = round(time.time() - start, 3)
        state.print(f"[{name}] done in {seconds[name]:.1f} s")
    state.wait_for_everyone()
    if state.is_main_process:
        write_operative_config(run_dir, chosen, imports)
        _record_timings(run_dir, seconds)
    state.print(f"run directory: {run_dir}")


def _record_timings(run_dir: str, seconds: dict) -> None:
    """timings.json: wall seconds of each stage's latest run."""
    path = os.path.join(run_dir, "timings.json")
    timings = rundir.read_json(path, "timings") if os.path.exists(path) else {}
    rundir.write_json(path, {**timings, **seconds})


RECORD = "operative_config.gin"


def write_operative_config(run_dir: str, chosen: list[str], imports: list[str] = ()) -> None:
    """operative_config.gin holds every binding of the latest invocation (all stages', the unchosen ones too) and
    its --import modules, so that `--gin` of it, or `--run-dir DIR` alone, reruns the run with every stage up to
    date; config_history/ keeps every invocation's."""
    bindings = [line for line in gin.config_str().splitlines() if not line.startswith("train.segments")]
    text = "".join(f"import {m}\n" for m in imports) + "\n".join(bindings) + "\n"
    history = os.path.join(run_dir, "config_history")
    os.makedirs(history, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (os.path.join(run_dir, "operative_config.gin"), os.path.join(history, f"{stamp}_{'-'.join(chosen)}.gin")):
        with open(path, "w") as f:
            f.write(text)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().strip('"')
    return (text.splitlines() or [type(err).__name__])[0]


def _call(stage, run_dir, prov=None) -> None:
    try:
        stage(run_dir, prov)
    except UserError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        if run_dir is None:  # raised while gin built the stage's components: a configuration mistake
            raise UserError(f"invalid configuration for stage '{stage.__name__}': {_first_line(err)}")
        raise


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except Preempted as err:
        print(f"stopped: {_first_line(err)}", file=sys.stderr)
        return EXIT_PREEMPTED
    except UserError as err:
        print(f"error: {_first_line(err)}", file=sys.stderr)
        return 2
    return 0
