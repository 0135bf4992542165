"""Splits that follow the experts beyond the N = 2 grid (issue 20): four experts against the coordinate search
(point 4), and a split landscape at image scale with a small transformer expert (point 5).

    python benchmarks/experts_beyond.py n4        # runs/experts_n4/<regime>/landscape.json (two regimes)
    python benchmarks/experts_beyond.py images    # runs/experts/digits-{sitT,unetT}/landscape.json
    python benchmarks/experts_beyond.py report    # benchmarks/results/experts_beyond.{md,json}

N = 4: the coordinate search of tools/landscape.py (from uniform, moves 0.1 then 0.05, at most 16 splits) finds the
best split it can; beside it uniform, the centred-Dirichlet default, the moving mesh, successive halving
ranked by SW, one network, one network
trained 4x the steps and one with about 4x the parameters. 6 paired seeds (--seeds; 0-3 until 2026-12-04, read back
from the archived report and extended): the best split is chosen on the first half of the seeds and scored on the
other half (the search itself moves on the mean of all seeds, which favours it slightly on the scored seeds).

Images: the 8x8 digits with the project's tiny SiT (benchmarks/gin/experts_digits_sit.gin) and, since 2026-12-04,
a tiny UNet (benchmarks/gin/experts_digits_unet.gin) as the expert, N = 2, boundaries 0.2-0.8, 5 paired seeds, the
offline FD (primary), precision/recall and the exact NLL.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from experts_grid import BOARDS, EXPERTS, GIN, METHODS, METRICS, STEPS  # noqa: E402
from experts_report import fmt_regret as _fmt  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
N4_REGIMES = ("board-w16d1", "board_late-w16d1")
N4_SEEDS = ["0", "1", "2", "3", "4", "5"]
N4_WIDE = {"w16d1": 49}  # mlp width with about 4x the parameters of a 16x1 expert (counted, time embedding included)
N4_METHODS = ("centred_default", "moving_mesh", "sh_metric", "centred_light", "warm_split")
IMAGE_METHODS = ("centred_default", "moving_mesh", "warm_split", "warm_uniform", "warm_split128")
# The warm split with the monitor budget small image runs should use (benchmarks/warm_split_budget.py: 32 x 128 keeps
# the boundary within 0.001 of 32 x 512 at a quarter of its cost), a name of its own so that a report read back by
# --measured never mixes it up with the default budget.
METHODS = {**METHODS, "warm_split128": ["gin/splits/warm_split.gin", "warm_split.n_samples = 128"]}
# Image landscapes (point 5): name -> gin file, steps per expert, the binding of one network with ~2x an expert's
# parameters, the report's title. Every one is N = 2 over boundaries 0.2-0.8 with 5 paired seeds.
IMAGES = {
    "sitT": ("benchmarks/gin/experts_digits_sit.gin", 1500,
             "sit.width = 92",  # 64 -> 92 wide: 2.0x the parameters (179k -> 358k)
             "Images: digits 8×8, tiny SiT experts"),
    "unetT": ("benchmarks/gin/experts_digits_unet.gin", 1000,
              "unet.channels = 22",  # 16 -> 22 channels: 1.9x the parameters (190k -> 358k)
              "Images: digits 8×8, tiny UNet experts"),
}


def _cpu() -> str | None:
    """The CPU's model name (wall times are compared only between runs on the same one); None where unknown, as for
    the rows stored before 2026-12-06 (all measured on the project's Intel Xeon machine)."""
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    except OSError:
        return None
    return names[0] if names else None


CPU = _cpu()


def _run(cmd: list[str], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    print("$ " + shlex.join(cmd), flush=True)
    with open(out / "landscape.log", "w") as log:
        return subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})


def _read_back(out: Path, key: str) -> list[str]:
    """--measured with what is on record, so that only what it lacks runs (a seed added, a method added): this
    machine's OUT/landscape.json, else the report an earlier session archived (a fresh clone)."""
    archived = RESULTS / "experts" / f"{key}-landscape.json"
    for report in (out / "landscape.json", archived):
        if report.exists():
            return ["--measured", str(report)]
    return []


def run_n4(args) -> int:
    for name in args.regimes:
        board, expert = name.split("-", 1)
        out = Path("runs/experts_n4") / name
        cmd = [sys.executable, "tools/landscape.py", "--gin", GIN, "--n", "4", "--seeds", *args.seeds,
               "--search-steps", "0.1", "0.05", "--max-evals", "16", "--primary", "sliced_wasserstein",
               "--out", str(out), "--jobs", str(args.jobs)]
        for b in BOARDS[board] + EXPERTS[expert] + [f"evaluate.metrics = {METRICS}"]:
            cmd += ["--bind", b]
        for method in N4_METHODS:
            cmd += ["--solver", f"{method}=" + "; ".join(METHODS[method])]
        cmd += ["--baseline", f"N1x4steps=expert/training.steps = {4 * STEPS}",
                "--baseline", f"N1x4params=mlp.width = {N4_WIDE[expert]}"]
        cmd += _read_back(out, f"n4-{name}")
        if _run(cmd, out):
            return 1
    return 0


def run_images(args) -> int:
    rc = 0
    for name in args.experts:
        gin_file, steps, wide, _ = IMAGES[name]
        out = Path("runs/experts") / f"digits-{name}"
        cmd = [sys.executable, "tools/landscape.py", "--gin", gin_file, "--n", "2",
               "--boundaries", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "--seeds", "0", "1", "2", "3", "4",
               *[a for m in args.methods for a in ("--solver", f"{m}=" + "; ".join(METHODS[m]))],
               "--baseline", f"N1x2steps=expert/training.steps = {2 * steps}", "--baseline", f"N1x2params={wide}",
               "--primary", "fd_randconv", "--out", str(out), "--jobs", str(args.jobs)]
        rc = max(rc, _run(cmd + _read_back(out, f"images-digits-{name}"), out))
    return rc


def _wall(root: Path, label: str) -> float | None:
    """Median profile + train seconds of a configuration's runs (several runs at once: compare within a table)."""
    times = []
    for path in sorted((root / "runs" / label.replace(" ", "_")).glob("seed*/timings.json")):
        t = json.loads(path.read_text())
        times.append(t.get("profile", 0.0) + t.get("train", 0.0))
    return sorted(times)[len(times) // 2] if times else None


def landscape_table(name: str, report: Path, primary: str, stored: dict | None = None) -> tuple[list[str], dict]:
    """One section of the report. ``stored``: this section as experts_beyond.json holds it, for the wall times of
    configurations whose runs (and their timings) are not on this machine, e.g. read back by --measured."""
    data = json.loads(report.read_text())
    summary, settings = data["summary"], data["settings"]
    cfgs, metrics = summary["configs"], summary["metrics"]
    stored_rows = (stored or {}).get("rows", {})

    def wall_of(label: str) -> tuple[float | None, str | None]:
        """(seconds, the CPU they were measured on): this machine's runs, else the stored row's."""
        measured = _wall(report.parent, label)
        if measured is not None:
            return measured, CPU
        row = stored_rows.get(label, {})
        return row.get("wall_s"), row.get("wall_cpu")

    fixed, fixed_cpu = wall_of("uniform")
    others = [m for m in metrics if m != primary]
    md = [f"### {name}", "", f"`{os.path.relpath(report, REPO)}`; N = {settings['n']},"
          f" seeds {settings['seeds']}; regret {summary['regret_method']}; best on {primary}: "
          f"`{summary['best'][primary]}`. **bold** = resolved at 95 %.", "",
          "| configuration | kind | boundaries (mean) | " + f"{primary} | regret on {primary} | "
          + " | ".join(f"regret on {m}" for m in others) + " | wall vs uniform |",
          "|---|---|---|---|---|" + "---|" * len(others) + "---|"]
    rows = {}
    order = sorted(cfgs, key=lambda k: (cfgs[k]["kind"] not in ("single",), cfgs[k]["kind"] != "uniform",
                                        cfgs[k]["kind"] != "solver", cfgs[k]["stats"][primary][0]))
    for label in order:
        c = cfgs[label]
        mu, se = c["stats"][primary]
        b = c["mean_boundaries"]
        wall, cpu = wall_of(label)
        # Wall times compare only when measured on the same CPU (runs read back from an earlier session's report
        # keep the times of the machine that ran them).
        extra = (f"{wall / fixed - 1:+.0%}" if cpu == fixed_cpu else "other CPU") if (
            wall and fixed and c["kind"] != "search") else ""
        regrets = {m: summary["regret"][m].get(label) for m in metrics}
        md.append(f"| {label} | {c['kind']} | {', '.join(f'{v:.2f}' for v in b[1:-1]) or '—'} | {mu:.4f} ± {se:.4f}"
                  f" | {_fmt(regrets[primary])} | " + " | ".join(_fmt(regrets[m]) for m in others) + f" | {extra} |")
        rows[label] = {"kind": c["kind"], "boundaries": b, "stats": c["stats"], "regret": regrets, "wall_s": wall,
                       "wall_cpu": cpu}
    u = rows.get("uniform", {}).get("regret", {}).get(primary)
    md += [""]
    for label, row in rows.items():
        r = row["regret"][primary]
        if row["kind"] == "solver" and r and u:
            ratio = r["mean"] / u["mean"] if u["mean"] > 0 else None
            md.append(f"- {label}: regret {r['mean']:+.4f} against uniform's {u['mean']:+.4f}"
                      + (f" ({ratio:.2f}×; target ≤ 1/3)" if ratio is not None
                         else " (uniform's regret ≤ 0 on the scored seeds: no ratio)"))
    return md + [""], {"primary": primary, "regret_method": summary["regret_method"], "rows": rows,
                       "best": summary["best"], "disagreements": summary.get("disagreements", [])}


def report(args) -> int:
    reports = {f"n4/{name}": (REPO / "runs" / "experts_n4" / name / "landscape.json", f"N = 4: {name}",
                              "sliced_wasserstein") for name in N4_REGIMES}
    for name, (_, _, _, title) in IMAGES.items():
        reports[f"images/digits-{name}"] = (REPO / "runs" / "experts" / f"digits-{name}" / "landscape.json", title,
                                            "fd_randconv")
    stored_json = RESULTS / "experts_beyond.json"
    stored = json.loads(stored_json.read_text()) if stored_json.exists() else {}
    sections, out, sources = [], {}, {}
    for key, (path, title, primary) in reports.items():
        archived = RESULTS / "experts" / f"{key.replace('/', '-')}-landscape.json"
        if path.exists():
            md, out[key] = landscape_table(title, path, primary, stored.get(key))
            sources[key] = path
        elif archived.exists():  # measured by an earlier session: its archived report, and its stored wall times
            print(f"{key}: read from {archived.relative_to(REPO)} (no runs here)")
            md, out[key] = landscape_table(title, archived, primary, stored.get(key, {}))
        else:
            continue
        sections += md
    if not out:
        print("nothing measured yet: run `python benchmarks/experts_beyond.py n4` or `images` first")
        return 1
    head = ["# Splits that follow the experts: N = 4 and images", "",
            f"{datetime.date.today().isoformat()}; `python benchmarks/experts_beyond.py n4`, `images`, then `report`"
            " (2 CPU cores). Wall time: profile + training of a configuration's runs against uniform's, median over"
            " seeds, several runs at once. N1x4steps / N1x2steps: one network trained for the experts' total"
            " steps; N1x4params / N1x2params: one network with about N× an expert's parameters.", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "experts_beyond.md").write_text("\n".join(head + sections))
    (RESULTS / "experts_beyond.json").write_text(json.dumps(out, indent=1) + "\n")
    for key, src in sources.items():  # the landscape reports themselves, for --measured in a later session
        dest = RESULTS / "experts" / f"{key.replace('/', '-')}-landscape.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
    print("\n".join(head + sections))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["n4", "images", "report"])
    p.add_argument("--regimes", nargs="+", default=list(N4_REGIMES), choices=list(N4_REGIMES))
    p.add_argument("--seeds", nargs="+", default=N4_SEEDS, help="n4: paired seeds (default 0-5)")
    p.add_argument("--experts", nargs="+", default=list(IMAGES), choices=list(IMAGES), help="images: the experts")
    p.add_argument("--methods", nargs="+", default=list(IMAGE_METHODS), choices=list(METHODS),
                   help="images: the split methods (those on record are read back, the others run)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    args = p.parse_args(argv)
    return {"n4": run_n4, "images": run_images, "report": report}[args.what](args)


if __name__ == "__main__":
    raise SystemExit(main())
