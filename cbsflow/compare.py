"""Compare finished runs: load run directories, group seeds into configurations, summarise, difference to a baseline.

A run directory holds ``split.json``, ``profile.json`` (absent for uniform splits), ``metrics.json`` and ``run.json``
(``{"seed", "label"}``; without it the label is the directory name minus a trailing ``-seed<k>``). Runs with the same
label are seeds of one configuration. Everything here is pure apart from ``load_run``/``find_run_dirs`` reading JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from cbsflow.errors import UserError

SEED_SUFFIX = re.compile(r"-seed(\d+)$")


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run: where it is, which configuration and seed, and what it measured."""

    path: Path
    label: str
    seed: int | None
    solver: str | None
    boundaries: tuple[float, ...] | None
    monitor: str | None
    profile: dict[str, list[float]] | None
    nfe: int | None
    metrics: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and standard error of the mean over n seeds (se is nan for n < 2)."""

    mean: float
    se: float
    n: int


@dataclasses.dataclass(frozen=True)
class Diff:
    """Difference of means (configuration - baseline) with a 95% interval mean ± half_width."""

    mean: float
    half_width: float
    n: int | tuple[int, int]  # paired: number of pairs; Welch: (n_config, n_baseline)
    paired: bool


@dataclasses.dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


def _read_json(path: Path, required: bool) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise UserError(f"{path.parent}: not a finished run directory (no {path.name}); pass run directories")
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e.msg}, line {e.lineno}); fix or delete the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _key(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise UserError(f"{path}: missing key {key!r}")
    return data[key]


def load_run(path: str | Path) -> Run:
    """Read one run directory; a missing directory or metrics.json, or malformed JSON, is a UserError."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such run directory")
    metrics_file = path / "metrics.json"
    metrics = _read_json(metrics_file, required=True)
    split = _read_json(path / "split.json", required=False) or {}
    profile = _read_json(path / "profile.json", required=False)
    info = _read_json(path / "run.json", required=False)
    if info is None:
        match = SEED_SUFFIX.search(path.name)
        label, seed = SEED_SUFFIX.sub("", path.name), int(match.group(1)) if match else None
    else:
        label, seed = str(info.get("label", SEED_SUFFIX.sub("", path.name))), info.get("seed")
    values = {}
    for name, entry in _key(metrics, "metrics", metrics_file).items():
        value = entry.get("value") if isinstance(entry, dict) else entry
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[name] = float(value)
    boundaries = split.get("boundaries")
    return Run(
        path=path,
        label=label,
        seed=None if seed is None else int(seed),
        solver=split.get("adapted_by") or split.get("solver"),  # the method that set the boundaries
        boundaries=None if boundaries is None else tuple(float(b) for b in boundaries),
        monitor=_monitor(split, profile),
        profile=None if profile is None else {k: list(profile.get(k) or []) for k in ("t", "value", "stderr")},
        nfe=metrics.get("nfe"),
        metrics=values,
    )


def _monitor(split: dict[str, Any], profile: dict[str, Any] | None) -> str | None:
    """The monitor behind the final boundaries: an adaptation's own (split.json names it, a warm split measures it
    during training), else the profile stage's."""
    if split.get("adapted_by") and split.get("monitor"):
        return split["monitor"]
    return (profile or {}).get("monitor") or split.get("monitor")


# What tools/compare.py and tools/sweep.py write next to the runs: skipped when a shell glob passes them back.
OUTPUTS = ("comparison.md", "comparison.png")


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """The given run directories; a directory without metrics.json whose children are runs (a sweep) expands, and
    the comparison files that a glob such as ``runs/sweep/*`` also matches are skipped."""
    found = []
    for p in map(Path, paths):
        if p.is_file() and p.name in OUTPUTS:
            continue
        children = sorted(c for c in p.iterdir() if (c / "metrics.json").is_file()) if p.is_dir() else []
        found.extend(children if children and not (p / "metrics.json").exists() else [p])
    return found


def default_out(run_dirs: Sequence[Path]) -> Path:
    """Where the comparison goes by default: the folder that holds all the runs (the current one if they differ)."""
    parents = {p.resolve().parent for p in run_dirs}
    return parents.pop() if len(parents) == 1 else Path(".")


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by label, in order of first appearance, seeds sorted within a group."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return {k: sorted(v, key=lambda r: (r.seed is None, r.seed or 0, str(r.path))) for k, v in groups.items()}


def mean_se(values: Sequence[float]) -> Stat:
    """Mean and standard error of the mean (sample std with n - 1 over sqrt n)."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    if n < 2:
        return Stat(mean, math.nan, n)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Stat(mean, math.sqrt(var / n), n)


def t_quantile(p: float, dof: float) -> float:
    """Quantile of Student's t distribution with ``dof`` degrees of freedom (scipy's)."""
    from scipy.stats import t

    return float(t.ppf(p, dof))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Diff:
    """Mean of a_i - b_i ± t_{0.975, n-1} · se of the paired differences."""
    stat = mean_se([x - y for x, y in zip(a, b, strict=True)])
    half = t_quantile(0.975, stat.n - 1) * stat.se if stat.n >= 2 else math.nan
    return Diff(stat.mean, half, stat.n, paired=True)


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Diff:
    """mean(a) - mean(b) ± t_{0.975, nu} · sqrt(se_a² + se_b²), nu by Welch–Satterthwaite."""
    sa, sb = mean_se(a), mean_se(b)
    va, vb = sa.se**2, sb.se**2
    half = math.nan
    if sa.n >= 2 and sb.n >= 2 and va + vb > 0:
        dof = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
        half = t_quantile(0.975, dof) * math.sqrt(va + vb)
    elif sa.n >= 2 and sb.n >= 2:
        half = 0.0
    return Diff(sa.mean - sb.mean, half, (sa.n, sb.n), paired=False)


def difference(config: Sequence[Run], baseline: Sequence[Run], metric: str) -> Diff | None:
    """config - baseline for one metric: paired by seed when both have the same distinct seeds, else Welch."""
    a = {r.seed: r.metrics[metric] for r in config if metric in r.metrics}
    b = {r.seed: r.metrics[metric] for r in baseline if metric in r.metrics}
    if not a or not b:
        return None
    same_seeds = (
        None not in a and set(a) == set(b) and len(a) == len(config) and len(b) == len(baseline) and len(a) >= 2
    )
    if same_seeds:
        seeds = sorted(a)
        return paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return welch_difference(list(a.values()), list(b.values()))


def _num(x: float, digits: int = 4) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}g}"


def format_stat(stat: Stat) -> str:
    return _num(stat.mean) if stat.n < 2 else f"{_num(stat.mean)} ± {_num(stat.se, 2)}"


def format_diff(diff: Diff | None) -> str:
    if diff is None:
        return "—"
    n = f"paired n={diff.n}" if diff.paired else f"Welch n={diff.n[0]}/{diff.n[1]}"
    return f"{diff.mean:+.4g} ± {_num(diff.half_width, 2)} ({n})"


def format_boundaries(runs: Sequence[Run]) -> str:
    """Boundaries rounded to 3 d.p. (the mean over seeds, marked ~ when seeds differ)."""
    all_b = [r.boundaries for r in runs if r.boundaries is not None]
    if not all_b:
        return "—"
    if len({len(b) for b in all_b}) > 1:
        return "varies"
    mean = [sum(col) / len(col) for col in zip(*all_b)]
    varies = any(max(col) - min(col) > 5e-4 for col in zip(*all_b))
    text = ", ".join(f"{b:.3f}".rstrip("0").rstrip(".") for b in mean)
    return f"{'~' if varies else ''}[{text}]"


def _distinct(values: Sequence[Any]) -> str:
    found = sorted({str(v) for v in values if v is not None})
    return "/".join(found) if found else "—"


def metric_names(runs: Sequence[Run]) -> list[str]:
    """Metric names in order of first appearance."""
    return list(dict.fromkeys(name for r in runs for name in r.metrics))


def build_table(groups: dict[str, list[Run]], baseline: str | None = None) -> Table:
    """One row per configuration: settings, NFE, each metric as mean ± se, and Δ to the baseline (95% CI)."""
    names = metric_names([r for runs in groups.values() for r in runs])
    headers = ["label", "solver", "monitor", "N", "boundaries", "NFE", "seeds"]
    for name in names:
        headers += [name] + ([f"Δ{name} vs {baseline} (95% CI)"] if baseline else [])
    rows = []
    order = sorted(groups, key=lambda label: label != baseline)  # baseline first, others as given
    for label in order:
        runs = groups[label]
        row = [
            label,
            _distinct([r.solver for r in runs]),
            _distinct([r.monitor for r in runs]),
            _distinct([len(r.boundaries) - 1 for r in runs if r.boundaries]),
            format_boundaries(runs),
            _distinct([r.nfe for r in runs]),
            str(len(runs)),
        ]
        for name in names:
            row.append(format_stat(mean_se([r.metrics[name] for r in runs if name in r.metrics])))
            if baseline:
                row.append("(baseline)" if label == baseline else format_diff(difference(runs, groups[baseline], name)))
        rows.append(row)
    return Table(headers, rows)


def format_markdown(table: Table) -> str:
    """The table as GitHub markdown (pipes in cells escaped)."""
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, table.headers)) + " |", "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def format_text(table: Table) -> str:
    """The table as aligned plain text for a terminal."""
    widths = [max(len(r[i]) for r in [table.headers, *table.rows]) for i in range(len(table.headers))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(table.headers), fmt(["-" * w for w in widths]), *map(fmt, table.rows)]) + "\n"
