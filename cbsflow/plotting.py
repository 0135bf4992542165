"""Figures written into run directories (matplotlib, headless)."""

from __future__ import annotations

import numpy as np


def _pyplot():
    """matplotlib's pyplot on the headless Agg backend (chosen when the first figure is drawn, not at import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def monitor_label(profile: dict) -> str:
    """The monitor's name with the settings that change what it measures (centred, prediction target)."""
    config = profile.get("config") or {}
    label = profile.get("monitor", "monitor")
    if any(k.split("/")[-1] == "dirichlet.centred" and v is True for k, v in config.items()):
        label += " (centred)"
    target = next((v for k, v in config.items() if k.split("/")[-1] == "dirichlet.target" and v != "velocity"), None)
    return label + (f", {target} prediction" if target else "")


def plot_profile(path: str, profile: dict | None, split: dict, density_fn) -> None:
    """Monitor with its error band (log scale), the normalised cumulative density, and the boundaries."""
    if profile is not None and np.ndim(profile["value"]) == 2:
        return plot_pairwise(path, profile, split)
    plt = _pyplot()
    fig, (ax_m, ax_c) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    boundaries = np.asarray(split["boundaries"])
    if profile is not None:
        t, m, se = (np.asarray(profile[k], np.float64) for k in ("t", "value", "stderr"))
        lo = np.maximum(m - 2 * se, m * 1e-3)
        ax_m.fill_between(t, lo, m + 2 * se, alpha=0.3, label="± 2 s.e.")
        ax_m.plot(t, m, label=monitor_label(profile))
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
    density = (f"; density (m + {split['floor']:g} mean m)^{split['exponent']:.3g}"
               if profile is not None and split.get("exponent") is not None and split.get("floor") is not None else "")
    ax_m.set_title(f"{split['solver']}: boundaries " + ", ".join(f"{b:.3f}" for b in boundaries) + density, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pairwise(path: str, profile: dict, split: dict) -> None:
    """A pairwise profile (cbsflow/affinity.py) as an image over t x t, with the boundaries."""
    plt = _pyplot()
    t, s = np.asarray(profile["t"], np.float64), np.asarray(profile["value"], np.float64)
    fig, ax = plt.subplots(figsize=(6, 5.2))
    half = 0.5 * (t[1] - t[0])
    image = ax.imshow(s, origin="lower", extent=(t[0] - half, t[-1] + half, t[0] - half, t[-1] + half), cmap="viridis")
    fig.colorbar(image, ax=ax, label=monitor_label(profile))
    for b in np.asarray(split["boundaries"])[1:-1]:
        ax.axvline(b, color="w", linestyle="--", linewidth=0.8)
        ax.axhline(b, color="w", linestyle="--", linewidth=0.8)
    ax.set_xlabel("t  (0 = noise, 1 = data)")
    ax.set_ylabel("t")
    ax.set_title(f"{split['solver']}: boundaries " + ", ".join(f"{b:.3f}" for b in split["boundaries"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scatter(path: str, samples: np.ndarray, reference: np.ndarray, title: str) -> None:
    """Generated 2-D samples next to fresh data."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    for ax, pts, name in zip(axes, (reference, samples), ("data", "samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_title(name)
        ax.set_aspect("equal")
    top = _suptitle(fig, title)
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _suptitle(fig, title: str, fontsize: float = 9) -> float:
    """A figure title wrapped to the figure's width (never clipped at the edges); returns the top of the free space
    below it, for tight_layout's rect."""
    import textwrap

    width_in, height_in = fig.get_size_inches()
    chars = max(20, int(width_in * 72 / (0.55 * fontsize)))  # ~0.55 em per character
    lines = [wrapped for line in title.splitlines() for wrapped in (textwrap.wrap(line, chars) or [""])]
    fig.suptitle("\n".join(lines), fontsize=fontsize)
    return 1 - (len(lines) * fontsize * 1.35 + 8) / (72 * height_in)


def _grid(images: np.ndarray, nrow: int = 8) -> np.ndarray:
    """uint8 (n, c, h, w) images tiled into one (H, W, 3) picture with 1-pixel gaps."""
    n, c, h, w = images.shape
    rows = -(-n // nrow)
    out = np.full((rows * (h + 1) + 1, nrow * (w + 1) + 1, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        tile = np.repeat(img, 3, axis=0) if c == 1 else img[:3]
        out[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = tile.transpose(1, 2, 0)
    return out


def plot_images(path: str, samples, reference, title: str) -> None:
    """Generated images beside data, each as an 8-wide grid drawn large (nearest-neighbour upscaling), titled."""
    plt = _pyplot()
    def as_uint8(x):
        x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
        return np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)

    fig, axes = plt.subplots(1, 2, figsize=(11, 6))
    for ax, imgs, name in zip(axes, (as_uint8(reference), as_uint8(samples)), ("data", "samples")):
        ax.imshow(_grid(imgs), interpolation="nearest")
        ax.set_title(f"{name} ({len(imgs)})")
        ax.axis("off")
    top = _suptitle(fig, title)
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_samples(path: str, samples, reference, title: str) -> None:
    """samples.png: the samples beside data (image grids of up to 64, or a 2-D scatter), titled; other data: none."""
    if samples.dim() == 4 and samples.shape[1] in (1, 3):
        plot_images(path, samples[:64], reference[:64], title)
    elif samples[0].numel() == 2:
        plot_scatter(path, samples[:5000].reshape(-1, 2).numpy(), reference[:5000].reshape(-1, 2).numpy(), title)


def metrics_title(n_segments: int, nfe: int, results: dict) -> str:
    """Two title lines: the model, then up to four metrics with their floors."""
    parts = []
    for name, r in list(results.items())[:4]:
        if "value" not in r:
            continue
        floor = f" (floor {r['floor']['value']:.3g})" if "floor" in r else ""
        parts.append(f"{name} {r['value']:.4g}{floor}")
    return f"{n_segments} expert(s), NFE {nfe}\n" + ", ".join(parts)
