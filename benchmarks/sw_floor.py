"""Noise floor of the toy metrics: what a perfect model scores, i.e. fresh true-data samples scored by the same
`sliced_wasserstein` and `mmd` metrics, against the same fixed reference draw, as the evaluate stage uses.

    python benchmarks/sw_floor.py            # prints a table and writes benchmarks/results/sw_floor.md

A model's SW is read against this floor (4000 samples, 256 projections, reference seed 2**31 - 1 as in
evaluate.reference_seed); the floor's spread over draws shows how much one run's SW moves by sampling alone.
"""

import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cbsflow.data.toy import checkerboard, eight_gaussians, moons, rings  # noqa: E402
from cbsflow.metrics.sample_distances import mmd, sliced_wasserstein  # noqa: E402

REFERENCE_SEED = 2**31 - 1  # the evaluate stage's default
DRAWS = 8


def main() -> None:
    torch.set_num_threads(1)
    rows = [f"| dataset | SW of true data: mean ± s.d. over {DRAWS} draws (min) | MMD² of true data: mean ± s.d. |",
            "|---|---|---|"]
    for data in (checkerboard(), eight_gaussians(), rings(), moons()):
        sw, mm = [], []
        for k in range(DRAWS):
            x, _ = data.sample(4000, seed=1000 + k)
            sw.append(sliced_wasserstein()(samples=x, dataset=data, seed=REFERENCE_SEED)["sliced_wasserstein"]["value"])
            mm.append(mmd()(samples=x, dataset=data, seed=REFERENCE_SEED)["mmd"]["value"])
        sw, mm = torch.tensor(sw), torch.tensor(mm)
        rows.append(f"| {type(data).__name__} | {sw.mean():.4f} ± {sw.std():.4f} ({sw.min():.4f}) | "
                    f"{mm.mean():.1e} ± {mm.std():.1e} |")
    text = "\n".join([
        "# Noise floor of the toy metrics (true data scored like a model's samples)", "",
        f"- command: `python benchmarks/sw_floor.py`; date (UTC): {datetime.datetime.utcnow():%Y-%m-%d %H:%M}; "
        f"CPU, torch {torch.__version__}; 4000 samples per draw, the evaluate stage's fixed reference "
        f"(seed {REFERENCE_SEED}), 256 projections, MMD on 2000 points", "", *rows, ""])
    print(text)
    os.makedirs("benchmarks/results", exist_ok=True)
    with open("benchmarks/results/sw_floor.md", "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
