"""How cheap can the centred-Dirichlet profile be and still put the boundaries where the full one does?

For experts as small as the toys' 16-wide MLPs the shipped profile (a 128x3 auxiliary net, 1,500 steps of batch
512, the monitor at 64 times on 1,024 samples) costs more than training the experts. This script runs the profile
and split stages alone (N = 2) for cheaper settings of the auxiliary net and the monitor's sampling, on the three
boards of the regime grid (benchmarks/studies/grid.toml), 3 seeds each, and compares each setting's boundary with the
full profile's.
A setting *agrees* when on every board its mean boundary is within ``TOLERANCE`` of the full profile's mean: the
criterion is fidelity to the full estimate, not closeness to any measured optimum (those are the test set).

    python benchmarks/profile_cost.py          # benchmarks/results/profile_cost.{md,json}; reads back stored settings
    python benchmarks/profile_cost.py --rerun  # every setting again (settings are read back by name: rename a changed one)

Seconds are the profile stage's wall time with two processes at a time (one thread each); `benchmarks/method_timing.py`
measures the chosen setting one run at a time against a fixed split's training.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIN = "benchmarks/gin/evidence_toy.gin"
BOARDS = {"board": ["DATASET = @checkerboard()"],
          "board_late": ["DATASET = @checkerboard()", "checkerboard.scale = 0.5"],
          "board_early": ["DATASET = @checkerboard()", "checkerboard.scale = 2.0"]}
SEEDS = (1, 2, 3)
TOLERANCE = 0.015
COMMON = ["dirichlet.centred = True", "deboor.exponent = 0.5", "N_SEGMENTS = 2"]
FEW_POINTS = ["profile.n_points = 32", "profile.n_samples = 512"]


def aux(width: int, steps: int, batch: int, lr: float | None = None, decay: str | None = None,
        depth: int | None = None) -> list[str]:
    out = [f"aux/mlp.width = {width}", f"aux/training.steps = {steps}", f"aux/training.batch_size = {batch}"]
    out += [f"aux/training.lr = {lr}"] if lr is not None else []
    out += [f"aux/training.lr_decay = '{decay}'"] if decay is not None else []
    return out + ([f"aux/mlp.depth = {depth}"] if depth is not None else [])


# name -> bindings on top of benchmarks/gin/evidence_toy.gin (whose profile is the full one: 128x3, 1,500 x 512)
SETTINGS = {
    "full (128x3, 1500x512, 64x1024)": [],
    "128x3, 1500x512, 32x512": FEW_POINTS,
    "128x3, 400x256, 32x512": aux(128, 400, 256) + FEW_POINTS,
    "64x3, 1500x256, 32x512": aux(64, 1500, 256) + FEW_POINTS,
    "64x3, 800x256, 32x512": aux(64, 800, 256) + FEW_POINTS,
    "64x3, 500x256, 64x1024": aux(64, 500, 256),
    "64x3, 500x256, 32x512": aux(64, 500, 256) + FEW_POINTS,
    "64x3, 300x256, 64x1024": aux(64, 300, 256),
    "32x3, 1500x256, 32x512 (gin/splits/centred_light.gin)": aux(32, 1500, 256) + FEW_POINTS,
    "32x3, 1500x128, 32x512": aux(32, 1500, 128) + FEW_POINTS,
    "32x3, 1000x256, 32x512": aux(32, 1000, 256) + FEW_POINTS,
    "32x3, 500x256, 64x1024": aux(32, 500, 256),
    # 2026-12-04 (third session): a learning rate decayed linearly to 0 (training.lr_decay), fewer steps.
    "32x3, 1000x256 lr 2e-3 linear decay, 32x512": aux(32, 1000, 256, decay="linear") + FEW_POINTS,
    "32x3, 750x256 lr 2e-3 linear decay, 32x512": aux(32, 750, 256, decay="linear") + FEW_POINTS,
    "32x3, 750x256 lr 4e-3 linear decay, 32x512": aux(32, 750, 256, 4e-3, "linear") + FEW_POINTS,
    "32x3, 500x256 lr 4e-3 linear decay, 32x512": aux(32, 500, 256, 4e-3, "linear") + FEW_POINTS,
    "32x2, 1000x256 lr 2e-3 linear decay, 32x512": aux(32, 1000, 256, decay="linear", depth=2) + FEW_POINTS,
    "32x3, 1500x256 lr 2e-3 linear decay, 32x512": aux(32, 1500, 256, decay="linear") + FEW_POINTS,
    # ... larger batches at fewer steps, and cheaper ways for the auxiliary net to see t (aux/mlp.frequency_dim:
    # sinusoidal features of t, 256 by default; aux/mlp.time_input = 'raw': t as one more input).
    "32x3, 1000x512, 32x512": aux(32, 1000, 512) + FEW_POINTS,
    "32x3, 750x512 lr 4e-3, 32x512": aux(32, 750, 512, 4e-3) + FEW_POINTS,
    "32x3 (32 t-features), 1500x256, 32x512": aux(32, 1500, 256) + ["aux/mlp.frequency_dim = 32"] + FEW_POINTS,
    "32x3 (32 t-features), 1000x256, 32x512": aux(32, 1000, 256) + ["aux/mlp.frequency_dim = 32"] + FEW_POINTS,
    "32x3 (raw t), 1500x256, 32x512": aux(32, 1500, 256) + ["aux/mlp.time_input = 'raw'"] + FEW_POINTS,
}


def profile_once(job: tuple[str, str, int]) -> tuple[str, str, int, float, float]:
    name, board, seed = job
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "tools/run.py", "--gin", GIN, "--stages", "profile,split", "--run-dir", tmp]
        for b in BOARDS[board] + COMMON + SETTINGS[name] + [f"SEED = {seed}", "split.figures = False"]:
            cmd += ["--bind", b]
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
        seconds = json.loads(Path(tmp, "timings.json").read_text())["profile"]
        boundary = json.loads(Path(tmp, "split.json").read_text())["boundaries"][1]
    return name, board, seed, boundary, seconds


def main() -> int:
    # Settings already in the results file (same seeds) are read back; only new ones run (--rerun: all of them).
    stored_path = REPO / "benchmarks" / "results" / "profile_cost.json"
    stored = {} if "--rerun" in sys.argv or not stored_path.exists() else json.loads(stored_path.read_text())
    keep = {name: row for name, row in stored.items() if name in SETTINGS and row.get("seeds", list(SEEDS)) == list(SEEDS)}
    jobs = [(name, board, seed) for name in SETTINGS if name not in keep for board in BOARDS for seed in SEEDS]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(profile_once, jobs))
    table: dict[str, dict] = {name: {"boundaries": {b: [] for b in BOARDS}, "seconds": [], "seeds": list(SEEDS)}
                              for name in SETTINGS}
    for name, row in keep.items():
        table[name]["boundaries"], table[name]["seconds"] = row["boundaries"], row["seconds"]
    for name, board, _, boundary, seconds in results:
        table[name]["boundaries"][board].append(round(boundary, 4))
        table[name]["seconds"].append(seconds)
    full = table[next(iter(SETTINGS))]
    ref = {b: statistics.mean(v) for b, v in full["boundaries"].items()}
    for row in table.values():
        row["shift"] = {b: statistics.mean(v) - ref[b] for b, v in row["boundaries"].items()}
        row["agrees"] = all(abs(s) <= TOLERANCE for s in row["shift"].values())
        row["median_seconds"] = statistics.median(row["seconds"])
    md = ["# The centred-Dirichlet profile at lower cost", "",
          "`python benchmarks/profile_cost.py`: profile and split stages only, N = 2, seeds "
          f"{', '.join(map(str, SEEDS))}; aux net width x depth, training steps x batch, monitor times x samples. "
          f"Agrees = mean boundary within {TOLERANCE} of the full profile's on every board. Seconds: profile stage, "
          "two processes at a time, one thread each (median over boards and seeds); settings read back from an earlier run "
          "keep that run's seconds (before 2026-12-04's third session they include a one-off ~1 s import of "
          "torch._dynamo, and the machine's load differed): compare seconds only between rows run together.", "",
          "| setting | board | board_late | board_early | largest shift | agrees | seconds |", "|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        cells = [" ".join(f"{x:.3f}" for x in row["boundaries"][b]) for b in BOARDS]
        worst = max(row["shift"].values(), key=abs)
        md.append(f"| {name} | " + " | ".join(cells) + f" | {worst:+.3f} | {'yes' if row['agrees'] else 'no'} | "
                  f"{row['median_seconds']:.1f} |")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile_cost.md").write_text("\n".join(md) + "\n")
    (out / "profile_cost.json").write_text(json.dumps(table, indent=1) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
