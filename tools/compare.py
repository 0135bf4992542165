"""Compare finished runs: one table (mean ± se over seeds, Δ to a baseline with 95% CI) and a profile plot.

    python tools/compare.py RUN_DIR... [--baseline DIR_OR_LABEL] [--out DIR]

Prints the table, writes comparison.md and comparison.png to --out (default: the folder that holds the runs, e.g.
runs/sweep for `tools/compare.py runs/sweep/*`). A directory without metrics.json whose subdirectories are runs (the
--out of tools/sweep.py) stands for all of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from cbsflow.compare import (  # noqa: E402
    Run,
    build_table,
    default_out,
    find_run_dirs,
    format_markdown,
    format_text,
    group_runs,
    load_run,
)
from cbsflow.errors import UserError  # noqa: E402


def resolve_baseline(arg: str | None, runs: list[Run]) -> tuple[str | None, list[Run]]:
    """The baseline label for ``--baseline`` (a label, or a run directory added to the runs if not among them)."""
    if arg is None:
        return None, runs
    labels = {r.label for r in runs}
    if arg in labels:
        return arg, runs
    if Path(arg).is_dir():
        base = load_run(arg)
        known = {r.path.resolve() for r in runs}
        return base.label, runs + ([base] if base.path.resolve() not in known else [])
    known = ", ".join(sorted(labels))
    raise UserError(f"--baseline {arg!r} is neither a run directory nor a label; labels are: {known}")


def plot_profiles(groups: dict[str, list[Run]], path: Path) -> None:
    """Monitor profiles normalised to max 1 (log y), one colour per configuration; boundaries as ticks below."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5 + 0.25 * len(groups)), layout="constrained")
    ax, strip = fig.subplots(2, 1, sharex=True, height_ratios=[4, 0.4 + 0.3 * len(groups)])
    colors = matplotlib.colormaps["tab10"].colors
    has_profile = False
    for i, (label, runs) in enumerate(groups.items()):
        color = colors[i % len(colors)]
        for j, run in enumerate(runs):
            if run.profile and run.profile["value"]:
                has_profile |= _plot_profile(ax, run, color, label if j == 0 else None)
            if run.boundaries:
                strip.vlines(run.boundaries, i - 0.35, i + 0.35, color=color, lw=1.2)
    if has_profile:
        ax.set_yscale("log")
        ax.legend(fontsize="small", loc="best")
    else:
        ax.text(0.5, 0.5, "no profile.json (uniform splits)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylabel("monitor / max")
    ax.set_title("Monitor profiles and segment boundaries")
    strip.set_yticks(range(len(groups)), list(groups), fontsize="small")
    strip.set_ylim(len(groups) - 0.5, -0.5)
    strip.set_xlabel("t  (0 = noise, 1 = data)")
    fig.savefig(path, dpi=120)


def _plot_profile(ax, run: Run, color, label: str | None) -> bool:
    t, value, stderr = run.profile["t"], run.profile["value"], run.profile["stderr"]
    peak = max(value)
    if not peak > 0:
        return False
    floor = 1e-6  # log axis: values below floor · max are drawn at the floor
    y = [max(v / peak, floor) for v in value]
    ax.plot(t, y, color=color, lw=1.2, label=f"{label} ({run.monitor})" if label else None)
    if len(stderr) == len(value):
        lo = [max((v - s) / peak, floor) for v, s in zip(value, stderr)]
        hi = [(v + s) / peak for v, s in zip(value, stderr)]
        ax.fill_between(t, lo, hi, color=color, alpha=0.15, lw=0)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--baseline", metavar="DIR_OR_LABEL", help="configuration the others are compared to")
    parser.add_argument("--out", help="where comparison.md and comparison.png go (default: the runs' folder)")
    args = parser.parse_args(argv)
    try:
        dirs = find_run_dirs(args.run_dirs)
        if not dirs:
            raise UserError("no run directories among the arguments")
        runs = [load_run(d) for d in dirs]
        baseline, runs = resolve_baseline(args.baseline, runs)
        groups = group_runs(runs)
        table = build_table(groups, baseline)
        out = Path(args.out) if args.out else default_out(dirs)
        out.mkdir(parents=True, exist_ok=True)
    except (UserError, OSError) as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2
    print(format_text(table), end="")
    (out / "comparison.md").write_text(format_markdown(table))
    plot_profiles(groups, out / "comparison.png")
    print(f"wrote {out / 'comparison.md'} and {out / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
