"""Figures written into run directories (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_profile(path: str, profile: dict | None, split: dict, density_fn) -> None:
    """Monitor with its error band (log scale), the normalised cumulative density, and the boundaries."""
    fig, (ax_m, ax_c) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    boundaries = np.asarray(split["boundaries"])
    if profile is not None:
        t, m, se = (np.asarray(profile[k], np.float64) for k in ("t", "value", "stderr"))
        lo = np.maximum(m - 2 * se, m * 1e-3)
        ax_m.fill_between(t, lo, m + 2 * se, alpha=0.3, label="± 2 s.e.")
        ax_m.plot(t, m, label=profile.get("monitor", "monitor"))
        if np.all(m > 0):
            ax_m.set_yscale("log")
        rho = density_fn(m)
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (rho[1:] + rho[:-1]) * np.diff(t))])
        ax_c.plot(t, cum / cum[-1], color="C1", label="cumulative density")
        ax_m.legend(loc="upper left")
        ax_c.legend(loc="upper left")
    for ax in (ax_m, ax_c):
        for b in boundaries[1:-1]:
            ax.axvline(b, color="k", linestyle="--", linewidth=0.8)
    ax_c.set_xlabel("t  (0 = noise, 1 = data)")
    ax_m.set_ylabel("monitor")
    ax_c.set_ylabel("C(t) / C(1)")
    ax_m.set_title(f"{split['solver']}: boundaries " + ", ".join(f"{b:.3f}" for b in boundaries))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scatter(path: str, samples: np.ndarray, reference: np.ndarray, title: str) -> None:
    """Generated 2-D samples next to fresh data."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    for ax, pts, name in zip(axes, (reference, samples), ("data", "samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_title(name)
        ax.set_aspect("equal")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
