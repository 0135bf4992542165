"""Shared helpers of the benchmark scripts: the machine record every results file carries, and CLI runs.

Imported as a sibling module (``python benchmarks/speed.py`` puts benchmarks/ on sys.path).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE_TIME = re.compile(r"^\[(\w+)\] done in ([0-9.]+) s", re.M)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_record(argv: list[str] | None = None) -> dict:
    """Command, machine (lscpu head or GPU name), torch version, threads, git state and ``date -u``."""
    import torch

    record = {
        "command": "python " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv)),
        "date_utc": _run(["date", "-u"]),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "lscpu": _run(["bash", "-c", "lscpu | head"]).splitlines(),
        "loadavg_at_start": _run(["cat", "/proc/loadavg"]),
        "git_head": _run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "git_dirty_lib": _run(["git", "-C", str(REPO), "status", "--short", "cbsflow", "gin", "benchmarks/gin"]).splitlines(),
        "top_at_start": _run(["bash", "-c", "top -b -n 1 -w 160 | sed -n '7,12p'"]).splitlines(),
        "other_benchmarks_running": [line for line in _run(["pgrep", "-af", r"benchmarks/.*\.py|pytest"]).splitlines()
                                     if not line.startswith(f"{os.getpid()} ")],
    }
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
        record["cuda"] = torch.version.cuda
    return record


def record_md(rec: dict) -> list[str]:
    """The machine record as markdown lines."""
    lines = [f"- command: `{rec['command']}`", f"- date (date -u): {rec['date_utc']}",
             f"- torch {rec['torch']}, python {rec['python']}, torch threads {rec['torch_threads']}, "
             f"OMP_NUM_THREADS={rec['OMP_NUM_THREADS']}",
             f"- git HEAD {rec['git_head']}; uncommitted library changes: {rec['git_dirty_lib'] or 'none'}",
             f"- load average at start: {rec['loadavg_at_start']}" + _contention(rec)]
    if rec.get("gpu"):
        lines.append(f"- GPU: {rec['gpu']} (CUDA {rec['cuda']})")
    lines.append("- machine (`lscpu | head`):")
    lines += ["  " + line for line in ["```", *rec["lscpu"], "```"]]
    return lines


def _contention(rec: dict) -> str:
    """What was known about other load when the record was taken (older records only checked for
    benchmarks/splits_toy.py, since retired)."""
    load = float(rec["loadavg_at_start"].split()[0]) if rec.get("loadavg_at_start") else 0.0
    text = ""
    if "top_at_start" in rec:
        others = rec["other_benchmarks_running"]
        text = f"; other benchmark/test processes: {others or 'none'}"
    else:  # recorded by earlier versions of this helper (a narrower pgrep, no top)
        text = (f"; benchmark processes found at start by an earlier, incomplete check: "
                f"{rec['other_benchmarks_running'] or 'none found'}")
    if load > 1.5:  # the load includes the recording process itself
        text += (f". **Shared machine: 1-min load {load:.2f} on 2 cores at start (this process included), so other jobs were competing and the "
                 "timings in this section are contaminated** (run with 1 thread)")
    return text


def run_cli(args: list[str], threads: int, log_path: Path | None = None) -> dict:
    """Run ``python tools/run.py ARGS`` in a subprocess; returns wall seconds, per-stage seconds and the output."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               TQDM_DISABLE="1")
    cmd = [sys.executable, "tools/run.py", *args]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    out = proc.stdout + proc.stderr
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(out)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    stages = {name: float(sec) for name, sec in STAGE_TIME.findall(proc.stdout)}
    return {"command": "OMP_NUM_THREADS=%d python tools/run.py " % threads + " ".join(shlex.quote(a) for a in args),
            "wall_s": wall, "stage_s": stages}


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
