"""Noise floor of the toy metrics: sliced Wasserstein and MMD^2 between two independent draws of the same data.

    python benchmarks/sw_floor.py            # prints a table and writes benchmarks/results/sw_floor.md

A model's SW cannot go below this floor with the same number of samples, so differences between splits should be
read against it (benchmarks/splits_toy.py uses 4000 samples and 256 projections, MMD on 2000 points).
"""

import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cbsflow.data.toy import checkerboard, eight_gaussians, moons, rings  # noqa: E402
from cbsflow.metrics.sample_distances import mmd_squared, sliced_wasserstein_distance  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    rows = ["| dataset | SW floor, mean ± s.e. over 5 pairs (n = 4000, 256 projections) | MMD² floor (n = 2000) |",
            "|---|---|---|"]
    for data in (checkerboard(), eight_gaussians(), rings(), moons()):
        sws, mmds = [], []
        for k in range(5):
            a, _ = data.sample(4000, seed=100 + 2 * k)
            b, _ = data.sample(4000, seed=101 + 2 * k)
            sws.append(sliced_wasserstein_distance(a, b, 256, torch.Generator().manual_seed(k)).item())
            mmds.append(mmd_squared(a[:2000], b[:2000], (0.05, 0.1, 0.2, 0.5, 1.0)).item())
        sw = torch.tensor(sws)
        rows.append(f"| {type(data).__name__} | {sw.mean():.4f} ± {sw.std() / 5 ** 0.5:.4f} | "
                    f"{sum(mmds) / 5:.1e} |")
    text = "\n".join([
        "# Noise floor of the toy metrics (two independent draws of the same data)", "",
        f"- command: `python benchmarks/sw_floor.py`; date (UTC): {datetime.datetime.utcnow():%Y-%m-%d %H:%M}; "
        f"CPU, torch {torch.__version__}", "", *rows, ""])
    print(text)
    os.makedirs("benchmarks/results", exist_ok=True)
    with open("benchmarks/results/sw_floor.md", "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
