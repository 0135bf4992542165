"""Run a study: one TOML file of settings turned into `tools/landscape.py` calls, and the results pages they feed.

    python benchmarks/run_study.py benchmarks/studies/grid.toml --dry-run  # print the commands, run nothing
    python benchmarks/run_study.py benchmarks/studies/grid.toml            # train what the archive lacks, then pages
    python benchmarks/run_study.py benchmarks/studies/grid.toml --report   # only the pages, from the archive

A study file holds `gin` (files), `bind` (bindings for every run), `n`, `boundaries` (N = 2 sweep; [] for none),
`seeds`, `out`, optional `jobs`, `name` (the report's file name), `primary`, `select_seeds`, `measured` (an earlier
report to read back: the study's archive), for N >= 3 `search_steps`, `max_evals`, `min_gap` (the coordinate search)
and `search_warm` (search again with the warm split's shared start: the warm-started reference at N >= 3),
`interpolate` (N = 2: score the solvers on the measured landscape instead of training them), and two tables of
named configurations: `[solvers]` (name = bindings or a gin file, as `--solver`) and `[baselines]` (name =
bindings, as `--baseline`). `warm_fixed = [0.2, ...]` adds, for each boundary b, the solver `wb<b>`: the
warm split's shared start with the boundary fixed at b (the warm-started landscape).

Several landscapes: a `[matrix]` of axes (each a table of name = bindings, or of name = {bind = [...], baselines =
{...}}) makes one per combination, named by the names joined with '-' (`{name}` in `out` and `measured`; a `measured`
report that does not exist is left out, so that combination trains). `[combinations]` (name = a table of the keys
above) lists the landscapes to make, each with its own settings over the study's: with a matrix, only these of its
combinations; `solvers` or `baselines` given as a list of names picks those of the study's tables, in that order.

A `[report]` table names the results pages the study writes (`pages`, benchmarks/results/<page>.md and its JSON and
figures; benchmarks/study_report.py writes them). After the landscapes they are written from the reports under
`out`, where a landscape has one, else from `measured`; `--report` writes them from `measured` alone, so that a
fresh clone regenerates them without training. Runs are resumable: the landscape tool keeps every finished run under
`out` and skips it when called again; with every configuration on record in `measured`, nothing trains.
`partial = true` in `[report]` is for a study that runs over several sessions: its pages are written from the
landscapes on record, and each page names, in one line, those of the study's landscapes that have not run yet.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/study_report.py
WARM_FIXED = "gin/splits/warm_split.gin; warm_split.solver = @manual(); manual.boundaries = [0.0, {b}, 1.0]"
REQUIRED = ("gin", "seeds", "out")


def command(study: dict) -> list[str]:
    """The tools/landscape.py command line of one landscape of a study."""
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
    for key in ("search_warm", "interpolate"):
        if study.get(key):
            cmd += ["--" + key.replace("_", "-")]
    return cmd + ["--out", study["out"], "--jobs", str(study.get("jobs", 2))]


def _matrix(study: dict) -> list[tuple[str, list[str], dict]]:
    """(name, bindings, baselines) of each combination of the ``[matrix]`` axes; one unnamed one without a matrix."""
    combos: list[tuple[list[str], list[str], dict]] = [([], [], {})]
    for axis in study.get("matrix", {}).values():  # a value: its bindings, or a table {bind = [...], baselines = {...}}
        combos = [(names + [k], binds + list(v.get("bind", []) if isinstance(v, dict) else v),
                   {**extra, **(v.get("baselines", {}) if isinstance(v, dict) else {})})
                  for names, binds, extra in combos for k, v in axis.items()]
    return [("-".join(names), binds, extra) for names, binds, extra in combos]


def _pick(study: dict, own: dict, key: str) -> dict:
    """A combination's solvers or baselines: its own table, or its list of names from the study's table."""
    value = own.get(key, study.get(key, {}))
    if isinstance(value, dict):
        return dict(value)
    unknown = [name for name in value if name not in study.get(key, {})]
    if unknown:
        raise ValueError(f"{key} {unknown} are not in the study's [{key}] table; add them there or fix the names")
    return {name: study[key][name] for name in value}


def expand(study: dict, only: list[str] | None = None) -> list[tuple[str, dict]]:
    """The landscapes of a study: one, one per combination of its ``[matrix]`` axes, or those its ``[combinations]``
    lists (each with its own settings over the study's); ``{name}`` in ``out`` and ``measured`` is the landscape's
    name. ``only`` keeps the named landscapes."""
    matrix = {name: (binds, baselines) for name, binds, baselines in _matrix(study)}
    chosen = study.get("combinations")
    names = list(chosen) if chosen is not None else list(matrix)
    if chosen is not None and "matrix" in study:
        unknown = [name for name in chosen if name not in matrix]
        if unknown:
            raise ValueError(f"[combinations] {unknown} are not combinations of the [matrix]; expected names like "
                             f"{next(iter(matrix))!r}")
    out = []
    for name in names:
        if only and name not in only:
            continue
        own = (chosen or {}).get(name, {})
        binds, baselines = matrix.get(name, ([], {}))
        one = {k: v for k, v in {**study, **own}.items() if k not in ("matrix", "combinations")}
        one["bind"] = binds + list(one.get("bind", []))
        one["solvers"] = _pick(study, own, "solvers")
        one["baselines"] = {**_pick(study, own, "baselines"), **baselines}
        name = name or Path(one.get("out", "study")).name
        for key in ("out", "measured"):
            if key in one:
                one[key] = str(one[key]).format(name=name)
        out.append((name, one))
    return out


def on_record(landscapes: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The landscapes with their ``measured`` report left out where it does not exist (those train)."""
    out = []
    for name, one in landscapes:
        if "measured" in one and not (REPO / one["measured"]).exists():
            one = {k: v for k, v in one.items() if k != "measured"}
        out.append((name, one))
    return out


def load(path: str) -> dict:
    """A study file, checked: every landscape has ``gin``, ``seeds`` and ``out``; raises ValueError."""
    try:
        with open(path, "rb") as f:
            study = tomllib.load(f)
        landscapes = expand(study)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as err:
        raise ValueError(f"cannot read the study {path}: {err}") from None
    for name, one in landscapes:
        missing = [k for k in REQUIRED if k not in one]
        if missing:
            raise ValueError(f"{path}: landscape {name!r} lacks {', '.join(missing)}; set them in the study or its "
                             "[combinations] table (see benchmarks/run_study.py's docstring)")
    return study


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", help="a TOML file under benchmarks/studies/")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--report", action="store_true", help="only write the study's results pages, from its archive")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these landscapes (of a matrix or [combinations])")
    p.add_argument("--out", metavar="DIR", help="write each landscape under DIR/<name> instead of the study's out")
    args = p.parse_args(argv)
    try:
        study = load(args.study)
        landscapes = expand(study)
        if args.out:
            landscapes = [(name, {**one, "out": str(Path(args.out) / name)}) for name, one in landscapes]
        unknown = [name for name in args.only or [] if name not in dict(landscapes)]
        if unknown:
            raise ValueError(f"--only {unknown}: no such landscape in {args.study}; it has "
                             f"{[name for name, _ in landscapes]}")
        if args.report:
            if not study.get("report", {}).get("pages"):
                raise ValueError(f"{args.study} has no [report] table with `pages`, so no results page to write (the "
                                 "cause studies' page is benchmarks/cause_report.py's)")
            return write_pages(study, landscapes, from_runs=False)
        chosen = [(name, one) for name, one in on_record(landscapes) if not args.only or name in args.only]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = 0
    for _, one in chosen:
        cmd = command(one)
        print("$ " + shlex.join(cmd), flush=True)
        if not args.dry_run:
            code = subprocess.run(cmd, cwd=REPO, env=env).returncode or code
    if args.dry_run or code:
        return code
    return write_pages(study, landscapes, from_runs=True)


def write_pages(study: dict, landscapes: list[tuple[str, dict]], from_runs: bool) -> int:
    """The study's results pages (its ``[report]`` table) from every landscape's report; 0, or 2 on a bad page."""
    if not study.get("report", {}).get("pages"):
        return 0
    import study_report

    try:
        written = study_report.write_pages(study["report"]["pages"], landscapes, from_runs=from_runs,
                                           partial=bool(study["report"].get("partial", False)))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
