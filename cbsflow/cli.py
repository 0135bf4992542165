"""Command line of tools/run.py: compose components from gin files and run the pipeline stages."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import gin

from cbsflow import registry
from cbsflow.errors import UserError

STAGE_ORDER = ("profile", "split", "train", "sample", "evaluate")
# Stages that train networks run on every process of `accelerate launch` (their writes come from the main one);
# the others run on the main process while the rest wait.
DISTRIBUTED_STAGES = ("profile", "train")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/run.py", description=__doc__)
    p.add_argument("--gin", action="append", default=[], metavar="FILE", help="gin file (repeatable, later wins)")
    p.add_argument("--bind", action="append", default=[], metavar="BINDING",
                   help="gin binding, e.g. 'split.solver = @uniform()' (repeatable, applied after the files)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module that registers components (repeatable)")
    p.add_argument("--stages", default=",".join(STAGE_ORDER), help="comma-separated subset of " + ",".join(STAGE_ORDER))
    p.add_argument("--run-dir", help="run directory (default: runs/<name of the last gin file>)")
    p.add_argument("--segment", type=int, action="append", metavar="K",
                   help="train only expert K (repeatable): one job per expert on a cluster")
    p.add_argument("--force", action="store_true", help="rerun stages whose artifacts are already up to date")
    p.add_argument("--list", action="store_true", help="list every registered component by kind and exit")
    return p.parse_args(argv)


def _quiet_gin_search():
    """gin logs an ERROR for every search folder an include is not in; only its final IOError matters."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def quiet():
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            logger.setLevel(level)

    return quiet()


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


def parse_config(files: list[str], bindings: list[str]) -> None:
    """Parse gin files and bindings, turning gin's errors into one-line user errors."""
    for f in files:
        if not os.path.isfile(f):
            raise UserError(f"--gin {f}: no such file; gin files live in gin/ (e.g. gin/quickstart.gin)")
        # Includes such as 'gin/base.gin' resolve against every folder above the file, from any working directory.
        folder = os.path.dirname(os.path.abspath(f))
        while folder != os.path.dirname(folder):
            folder = os.path.dirname(folder)
            gin.add_config_file_search_path(folder)
    try:
        with _quiet_gin_search():
            gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
    except UserError:
        raise
    except Exception as err:  # gin raises ValueError, SyntaxError, KeyError, ... for bad configs
        raise UserError(f"invalid gin configuration: {_first_line(err)}")
    check_required_macros(files)


def check_required_macros(files: list[str]) -> None:
    """A macro still bound to %gin.REQUIRED (e.g. DATA_DIR) is a setting the user must give."""
    config = getattr(gin.config, "_CONFIG", {})  # gin keeps parsed bindings here; skip the check if that changes
    for name, selector in list(config):
        if selector == "gin.macro" and repr(gin.query_parameter(f"%{name}")) == "%gin.REQUIRED":
            raise UserError(f"{name} is required: add --bind \"{name} = ...\" (see the header of {files[-1]})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().strip('"')
    return (text.splitlines() or [type(err).__name__])[0]


def select_stages(spec: str) -> list[str]:
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STAGE_ORDER]
    if unknown or not chosen:
        raise UserError(f"--stages {spec!r}: unknown stage(s) {unknown}; choose from {','.join(STAGE_ORDER)}")
    return [s for s in STAGE_ORDER if s in chosen]


def run(args: argparse.Namespace) -> None:
    from cbsflow import stages
    from cbsflow.training import process_state

    import_modules(args.imports)
    if args.list:
        print(list_components())
        return
    if not args.gin:
        raise UserError("no configuration: pass --gin FILE (e.g. --gin gin/quickstart.gin), or --list")
    parse_config(args.gin, args.bind + ([f"train.segments = {args.segment}"] if args.segment else []))
    chosen = select_stages(args.stages)
    for name in chosen:  # Build every component first: configuration errors surface before anything is written.
        _call(stages.STAGES[name], None)
    run_dir = args.run_dir or os.path.join("runs", os.path.splitext(os.path.basename(args.gin[-1]))[0])
    state = process_state()  # under `accelerate launch` every process runs this
    if state.is_main_process:
        os.makedirs(run_dir, exist_ok=True)
    seconds = {}
    for name in chosen:
        state.wait_for_everyone()
        if stages.is_done(run_dir, name) and not args.force:
            state.print(f"[{name}] up to date in {run_dir}, skipped (--force reruns it)")
            continue
        start = time.time()
        if name in DISTRIBUTED_STAGES or state.is_main_process:
            _call(stages.STAGES[name], run_dir)
        seconds[name] = round(time.time() - start, 3)
        state.print(f"[{name}] done in {seconds[name]:.1f} s")
    state.wait_for_everyone()
    if state.is_main_process:
        write_operative_config(run_dir, chosen)
        _record_timings(run_dir, seconds)
    state.print(f"run directory: {run_dir}")


def _record_timings(run_dir: str, seconds: dict) -> None:
    """timings.json: wall seconds of each stage's latest run."""
    from cbsflow import rundir

    path = os.path.join(run_dir, "timings.json")
    timings = rundir.read_json(path, "timings") if os.path.exists(path) else {}
    rundir.write_json(path, {**timings, **seconds})


def write_operative_config(run_dir: str, chosen: list[str]) -> None:
    """operative_config.gin holds the latest invocation's settings; config_history/ keeps every invocation's."""
    text = gin.operative_config_str()
    history = os.path.join(run_dir, "config_history")
    os.makedirs(history, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (os.path.join(run_dir, "operative_config.gin"), os.path.join(history, f"{stamp}_{'-'.join(chosen)}.gin")):
        with open(path, "w") as f:
            f.write(text)


def _call(stage, run_dir) -> None:
    try:
        stage(run_dir)
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
    except UserError as err:
        print(f"error: {_first_line(err)}", file=sys.stderr)
        return 2
    return 0
