"""Distances between generated samples and fresh data for low-dimensional problems."""

from __future__ import annotations

import torch

from cbsflow.registry import register


def sliced_wasserstein_distance(a: torch.Tensor, b: torch.Tensor, n_projections: int, generator) -> torch.Tensor:
    """Sliced 2-Wasserstein distance: sqrt of the mean over random directions of W2^2 of the 1-D projections."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    theta = torch.randn(a.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ theta, dim=0)  # (n, p)
    pb, _ = torch.sort(b @ theta, dim=0)
    return ((pa - pb) ** 2).mean().sqrt()


def mmd_squared(a: torch.Tensor, b: torch.Tensor, bandwidths) -> torch.Tensor:
    """Unbiased MMD^2 with a sum of Gaussian kernels exp(-||x - y||^2 / (2 h^2)) over the bandwidths h."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()

    def kernel(x, y):
        sq = torch.cdist(x, y) ** 2
        return sum(torch.exp(-sq / (2 * h**2)) for h in bandwidths)

    n, m = a.shape[0], b.shape[0]
    k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
    term_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
    term_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return term_a + term_b - 2 * k_ab.mean()


@register("metric")
class sliced_wasserstein:
    """Sliced 2-Wasserstein distance between samples and as many fresh data points."""

    def __init__(self, n_projections: int = 256):
        self.n_projections = n_projections

    def __call__(self, *, samples, dataset, velocity=None, seed: int = 0):
        ref, _ = dataset.sample(samples.shape[0], seed=seed)
        gen = torch.Generator().manual_seed(seed)
        value = sliced_wasserstein_distance(samples, ref, self.n_projections, gen).item()
        settings = {"n_samples": samples.shape[0], "n_projections": self.n_projections,
                    "reference": f"{dataset!r}, fresh draw seed {seed}"}
        return {"sliced_wasserstein": {"value": value, "settings": settings}}


@register("metric")
class mmd:
    """Unbiased squared MMD with a multi-scale Gaussian kernel, on up to ``max_points`` samples."""

    def __init__(self, bandwidths=(0.05, 0.1, 0.2, 0.5, 1.0), max_points: int = 2000):
        self.bandwidths, self.max_points = tuple(bandwidths), max_points

    def __call__(self, *, samples, dataset, velocity=None, seed: int = 0):
        n = min(samples.shape[0], self.max_points)
        ref, _ = dataset.sample(n, seed=seed + 1)
        value = mmd_squared(samples[:n], ref, self.bandwidths).item()
        settings = {"n_samples": n, "bandwidths": list(self.bandwidths),
                    "reference": f"{dataset!r}, fresh draw seed {seed + 1}"}
        return {"mmd": {"value": value, "settings": settings}}
