"""Run a grid of configurations × seeds through tools/run.py, one subprocess after another, then compare them.

    python tools/sweep.py --gin FILE [--gin FILE ...] [--bind 'x = y' ...] --seeds 0 1 2 \\
        [--grid 'split.n_segments=2,4,8' ...] --out DIR [--dry-run] [-- extra args for run.py]

Each grid point × seed runs ``tools/run.py --gin ... --bind ... --bind 'SEED = k' --run-dir OUT/<label>-seed<k>``;
after a run succeeds its run.json (``{"seed", "label", "bindings"}``) is written, and at the end the comparison
table of all finished runs is printed (and comparison.md / .png written to OUT).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).parent


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,...`` at top-level commas (commas inside (), [], {} or quotes stay)."""
    values, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += ch
    values.append(current.strip())
    return [v for v in values if v]


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``['LHS=v1,v2', ...]`` -> ``[(LHS, [v1, v2]), ...]``; a malformed spec is a SystemExit with a clear message."""
    grid = []
    for spec in specs:
        lhs, sep, rhs = spec.partition("=")
        if not sep or not lhs.strip() or not split_values(rhs):
            raise SystemExit(f"sweep.py: error: --grid {spec!r}: expected 'BINDING=v1,v2,...' (e.g. 'split.n=2,4')")
        grid.append((lhs.strip(), split_values(rhs)))
    return grid


def safe(text: str) -> str:
    """A filesystem-safe fragment: quotes and @ dropped, anything outside [A-Za-z0-9._-] becomes _."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("@", "").replace("'", "").replace('"', "")).strip("_") or "_"


def make_label(point: list[tuple[str, str]], gin_files: list[str]) -> str:
    """Label of one grid point, e.g. ``n_segments-4__solver-deboor``; the gin file stems when there is no grid."""
    if not point:
        return "+".join(safe(Path(f).stem) for f in gin_files) or "run"
    short = [lhs.replace("/", ".").split(".")[-1] for lhs, _ in point]
    keys = short if len(set(short)) == len(short) else [lhs for lhs, _ in point]
    label = "__".join(f"{safe(k)}-{safe(v)}" for k, (_, v) in zip(keys, point))
    return label + "_" if re.search(r"-seed\d+$", label) else label


def plan(args: argparse.Namespace, extra: list[str]) -> list[dict]:
    """One entry per grid point × seed: label, seed, bindings, run dir and the run.py command."""
    grid = parse_grid(args.grid)
    points = [list(zip([lhs for lhs, _ in grid], values)) for values in itertools.product(*[v for _, v in grid])]
    jobs = []
    for point in points:
        label = make_label(point, args.gin)
        bindings = list(args.bind) + [f"{lhs} = {value}" for lhs, value in point]
        for seed in args.seeds:
            run_dir = Path(args.out) / f"{label}-seed{seed}"
            cmd = [sys.executable, str(TOOLS / "run.py")]
            cmd += [a for f in args.gin for a in ("--gin", f)]
            cmd += [a for b in bindings for a in ("--bind", b)]
            cmd += ["--bind", f"SEED = {seed}", "--run-dir", str(run_dir), "--rerun", *extra]
            jobs.append({"label": label, "seed": seed, "bindings": bindings, "run_dir": run_dir, "cmd": cmd})
    return jobs


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin", action="append", required=True, metavar="FILE", help="gin file (repeatable)")
    parser.add_argument("--bind", action="append", default=[], metavar="'x = y'", help="fixed binding (repeatable)")
    parser.add_argument("--seeds", nargs="+", type=int, required=True, help="seeds, e.g. 0 1 2")
    parser.add_argument("--grid", action="append", default=[], metavar="'LHS=v1,v2'", help="swept binding")
    parser.add_argument("--out", required=True, help="directory for the run directories")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return parser.parse_args(own), extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    jobs = plan(args, extra)
    if args.dry_run:
        for job in jobs:
            print(shlex.join(job["cmd"]))
        return 0
    failed, done = [], []
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job['label']} seed {job['seed']}: {shlex.join(job['cmd'])}", flush=True)
        if subprocess.run(job["cmd"]).returncode != 0:
            failed.append(str(job["run_dir"]))
            print(f"sweep.py: run failed: {job['run_dir']} (continuing)", file=sys.stderr)
            continue
        info = {"seed": job["seed"], "label": job["label"], "bindings": job["bindings"], "gin": args.gin}
        (job["run_dir"] / "run.json").write_text(json.dumps(info, indent=2) + "\n")
        if (job["run_dir"] / "metrics.json").is_file():
            done.append(str(job["run_dir"]))
    if done:
        subprocess.run([sys.executable, str(TOOLS / "compare.py"), *done, "--out", args.out])
    else:
        print("sweep.py: no run produced metrics.json; nothing to compare", file=sys.stderr)
    if failed:
        print(f"sweep.py: {len(failed)} of {len(jobs)} runs failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
