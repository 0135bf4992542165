"""Run a study: one TOML file of settings turned into one `tools/landscape.py` call.

    python benchmarks/run_study.py benchmarks/studies/cause_compare.toml            # train what is missing
    python benchmarks/run_study.py benchmarks/studies/cause_compare.toml --dry-run  # print the command only

A study file holds `gin` (files), `bind` (bindings for every run), `n`, `boundaries` (N = 2 sweep; [] for none),
`seeds`, `out`, optional `jobs`, `primary`, `select_seeds`, `measured` (an earlier report to read back), for N >= 3
`search_steps`, `max_evals`, `min_gap` (the coordinate search) and `search_warm` (search again with the warm split's
shared start: the warm-started reference at N >= 3), and two
tables of named configurations: `[solvers]` (name = bindings or a gin file, as `--solver`) and `[baselines]`
(name = bindings, as `--baseline`). `warm_fixed = [0.2, ...]` adds, for each boundary b, the solver `wb<b>`: the
warm split's shared start with the boundary fixed at b (the warm-started landscape). A `[matrix]` of axes (each a
table of name = bindings, or of name = {bind = [...], baselines = {...}}) makes one landscape per combination, named by the names joined with '-' (`{name}` in `out`
and `measured`; a `measured` report that does not exist is left out, so that combination trains). Runs are
resumable: the landscape tool keeps every finished run under `out` and skips it when called again; with every
configuration on record in `measured`, a study only rewrites its reports, without training.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARM_FIXED = "gin/splits/warm_split.gin; warm_split.solver = @manual(); manual.boundaries = [0.0, {b}, 1.0]"


def command(study: dict) -> list[str]:
    """The tools/landscape.py command line of a study."""
    cmd = [sys.executable, "tools/landscape.py"]
    for g in study["gin"]:
        cmd += ["--gin", g]
    for b in study.get("bind", []):
        cmd += ["--bind", b]
    cmd += ["--n", str(study.get("n", 2)), "--boundaries", *map(str, study.get("boundaries", []))]
    cmd += ["--seeds", *map(str, study["seeds"])]
    if "select_seeds" in study:
        cmd += ["--select-seeds", *map(str, study["select_seeds"])]
    solvers = dict(study.get("solvers", {}))
    solvers.update({f"wb{b}": WARM_FIXED.format(b=b) for b in study.get("warm_fixed", [])})
    for name, bindings in solvers.items():
        cmd += ["--solver", f"{name}={bindings}"]
    for name, bindings in study.get("baselines", {}).items():
        cmd += ["--baseline", f"{name}={bindings}"]
    for key, flag in (("primary", "--primary"), ("measured", "--measured"), ("name", "--name"),
                      ("max_evals", "--max-evals"), ("min_gap", "--min-gap")):
        if key in study:
            cmd += [flag, str(study[key])]
    if "search_steps" in study:
        cmd += ["--search-steps", *map(str, study["search_steps"])]
    if study.get("search_warm"):
        cmd += ["--search-warm"]
    return cmd + ["--out", study["out"], "--jobs", str(study.get("jobs", 2))]


def expand(study: dict, only: list[str] | None = None) -> list[tuple[str, dict]]:
    """The landscapes of a study: one, or with a ``[matrix]`` table one per combination of its axes (each axis a
    table of name = bindings), named by the names joined with '-'; ``{name}`` in ``out`` and ``measured`` is that
    name. ``only`` keeps the named combinations."""
    axes = list(study.get("matrix", {}).values())
    combos: list[tuple[list[str], list[str], dict]] = [([], [], {})]
    for axis in axes:  # a value: its bindings, or a table {bind = [...], baselines = {...}}
        combos = [(names + [k], binds + list(v.get("bind", []) if isinstance(v, dict) else v),
                   {**extra, **(v.get("baselines", {}) if isinstance(v, dict) else {})})
                  for names, binds, extra in combos for k, v in axis.items()]
    out = []
    for names, binds, baselines in combos:
        name = "-".join(names) or Path(study["out"]).name
        if only and name not in only:
            continue
        one = {k: v for k, v in study.items() if k != "matrix"}
        one["bind"] = binds + list(study.get("bind", []))
        one["baselines"] = {**study.get("baselines", {}), **baselines}
        for key in ("out", "measured"):
            if key in one:
                one[key] = str(one[key]).format(name=name)
        if "measured" in one and not (REPO / one["measured"]).exists():
            del one["measured"]  # nothing on record for this combination: it trains
        out.append((name, one))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", help="a TOML file under benchmarks/studies/")
    p.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    p.add_argument("--only", nargs="+", metavar="NAME", help="a matrix study: only these combinations")
    args = p.parse_args(argv)
    try:
        with open(args.study, "rb") as f:
            study = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as err:
        print(f"error: cannot read the study {args.study}: {err}", file=sys.stderr)
        return 2
    missing = [k for k in ("gin", "seeds", "out") if k not in study]
    if missing:
        print(f"error: {args.study} lacks {', '.join(missing)}; see benchmarks/run_study.py's docstring", file=sys.stderr)
        return 2
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = 0
    for _, one in expand(study, args.only):
        cmd = command(one)
        print("$ " + shlex.join(cmd), flush=True)
        if not args.dry_run:
            code = subprocess.run(cmd, cwd=REPO, env=env).returncode or code
    return code


if __name__ == "__main__":
    sys.exit(main())
