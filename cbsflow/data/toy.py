"""2-D toy datasets (and a d-dimensional Gaussian with a closed-form velocity)."""

from __future__ import annotations

import math
from typing import Iterator

import torch

from cbsflow.data.base import Dataset
from cbsflow.errors import UserError
from cbsflow.registry import register


class ToyDataset(Dataset):
    """Unconditional low-dimensional data drawn on the fly: subclasses implement ``draw(n, generator)``."""

    shape = (2,)
    num_classes = 0

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, None]:
        return self.draw(n, torch.Generator().manual_seed(seed)), None

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, None]]:
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield self.draw(batch_size, generator), None

    def mixture(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(weights (K,), means (K, d), stds (K, d)) when the data is a Gaussian mixture, else None."""
        return None

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) of the data distribution in nats, (n,); subclasses whose density is known implement it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianMixtureDataset(ToyDataset):
    """Data drawn from the mixture returned by ``mixture()``."""

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        weights, means, stds = self.mixture()
        k = torch.multinomial(weights, n, replacement=True, generator=generator)
        return means[k] + stds[k] * torch.randn(n, means.shape[1], generator=generator)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        weights, means, stds = (v.double() for v in self.mixture())
        z = (x.double()[:, None] - means) / stds  # (n, K, d)
        log_k = -0.5 * (z**2).sum(-1) - torch.log(stds).sum(-1) - 0.5 * means.shape[1] * math.log(2 * math.pi)
        return torch.logsumexp(torch.log(weights / weights.sum()) + log_k, dim=1)


@register("dataset")
class checkerboard(ToyDataset):
    """Checkerboard: uniform on the dark squares of a size x size board on [-2 scale, 2 scale]^2 (default 4 x 4 on
    [-2, 2]^2, 8 squares of side 1). A larger scale forms its structure earlier in t, a finer board later."""

    def __init__(self, size: int = 4, scale: float = 1.0):
        if size < 2 or size % 2 or scale <= 0:
            raise UserError(f"checkerboard: size must be an even integer >= 2 and scale > 0, got {size}, {scale}")
        self.size, self.scale = size, scale

    @property
    def side(self) -> float:
        return 4.0 * self.scale / self.size

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        col = torch.randint(0, self.size, (n,), generator=generator)
        row = 2 * torch.randint(0, self.size // 2, (n,), generator=generator) + (col % 2)
        cells = torch.stack([col, row], dim=1) + torch.rand(n, 2, generator=generator)
        return cells * self.side - 2.0 * self.scale

    def on_support(self, x: torch.Tensor) -> torch.Tensor:
        """Whether each point lies on a dark square (the support), (n,) bool."""
        cell = torch.floor((x + 2.0 * self.scale) / self.side)
        inside = ((cell >= 0) & (cell < self.size)).all(dim=1)
        return inside & ((cell[:, 1] - cell[:, 0]) % 2 == 0)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Uniform on the dark squares: -log(total area) on the support, -inf off it."""
        area = self.size**2 / 2 * self.side**2
        inside = torch.full((x.shape[0],), -math.log(area), dtype=torch.float64)
        return torch.where(self.on_support(x), inside, torch.tensor(-math.inf, dtype=torch.float64))

    def __repr__(self) -> str:
        return f"checkerboard(size={self.size}, scale={self.scale})"


@register("dataset")
class eight_gaussians(GaussianMixtureDataset):
    """Eight Gaussians (std 0.15) evenly spaced on a circle of radius 2."""

    def __init__(self, radius: float = 2.0, std: float = 0.15):
        self.radius, self.std = radius, std

    def mixture(self):
        angle = torch.arange(8) * (2 * math.pi / 8)
        means = self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return torch.full((8,), 1 / 8), means, torch.full((8, 2), self.std)


@register("dataset")
class rings(ToyDataset):
    """Four concentric rings (radii 0.5, 1, 1.5, 2) with radial noise 0.04, points uniform in angle."""

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        radius = 0.5 * (torch.randint(0, 4, (n,), generator=generator) + 1)
        radius = radius + 0.04 * torch.randn(n, generator=generator)
        angle = 2 * math.pi * torch.rand(n, generator=generator)
        return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Polar change of variables: p(x) = [p_r(|x|) + p_r(-|x|)] / (2 pi |x|), p_r the radial mixture."""
        r = x.double().norm(dim=1)
        centres = 0.5 * torch.arange(1, 5, dtype=torch.float64)

        def log_pr(rr):
            z = (rr[:, None] - centres) / 0.04
            return torch.logsumexp(-0.5 * z**2 - math.log(0.04 * math.sqrt(2 * math.pi)) + math.log(0.25), dim=1)

        return torch.logaddexp(log_pr(r), log_pr(-r)) - torch.log(2 * math.pi * r)


@register("dataset")
class moons(ToyDataset):
    """Two interleaving half circles (scikit-learn's 'moons'), centred and scaled by 1.5, noise 0.05."""

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        upper = torch.rand(n, generator=generator) < 0.5
        angle = math.pi * torch.rand(n, generator=generator)
        x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
        y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
        pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 1.5
        return pts + 0.05 * torch.randn(n, 2, generator=generator)

    def log_prob(self, x: torch.Tensor, nodes: int = 600) -> torch.Tensor:
        """Gaussian (std 0.05) smoothing of the two arcs, the arc parameter integrated by the midpoint rule (nodes
        0.008 apart along each arc, well below the std)."""
        angle = math.pi * (torch.arange(nodes, dtype=torch.float64) + 0.5) / nodes
        upper = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
        centres = (torch.cat([upper, lower]) - torch.tensor([0.5, 0.25], dtype=torch.float64)) * 1.5  # (2M, 2)
        out = []
        for chunk in x.double().split(4096):
            sq = torch.cdist(chunk, centres) ** 2
            out.append(torch.logsumexp(-sq / (2 * 0.05**2), dim=1) - math.log(2 * nodes)
                       - math.log(2 * math.pi * 0.05**2))
        return torch.cat(out)


@register("dataset")
class gaussian(GaussianMixtureDataset):
    """A single Gaussian N(mean, diag(std^2)) in d dimensions (exact velocity and monitors in closed form)."""

    def __init__(self, mean=(0.7, -0.5), std=(0.3, 1.2)):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        self.std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if self.mean.shape != self.std.shape or not torch.all(self.std > 0):
            raise UserError(f"gaussian: mean and std need equal lengths and std > 0, got {mean} and {std}")
        self.shape = tuple(self.mean.shape)

    def mixture(self):
        return torch.ones(1), self.mean[None], self.std[None]

    def __repr__(self) -> str:
        return f"gaussian(mean={self.mean.tolist()}, std={self.std.tolist()})"
