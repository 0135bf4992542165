"""The dataset protocol every registered dataset follows."""

from __future__ import annotations

import inspect
import itertools
from typing import Iterator

import torch


def dataset_fingerprint(dataset) -> str:
    """The dataset's ``fingerprint()`` if it has one, else its ``repr``: names the data a metric was measured on."""
    fingerprint = getattr(dataset, "fingerprint", None)
    return str(fingerprint()) if callable(fingerprint) else repr(dataset)


class Dataset:
    """Base class: a source of data batches ``(x1, y)``; ``y`` is None for unconditional data.

    Subclasses set ``shape`` (one sample's shape) and ``num_classes`` (0 = unconditional) and implement
    ``batches``. ``sample`` collects ``n`` samples from ``batches``; toy datasets override it directly.
    """

    shape: tuple[int, ...] = ()
    num_classes: int = 0
    pool_size: int | None = None  # how many distinct items the data has, when that is a small finite number
    # Spacing of the values the data is quantised to (in model space), or None for continuous data: the NLL metric
    # adds log2(1 / bin_width) to turn nats/dim into bits/dim of the discrete data (no dequantization).
    bin_width: float | None = None

    @property
    def is_image(self) -> bool:
        """Pixel data in [-1, 1] (C, H, W): samples are stored as uint8 and shown as a grid."""
        return len(self.shape) == 3

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """An endless iterator of training batches, reproducible for a given seed."""
        raise NotImplementedError

    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` samples (and labels) as one batch."""
        xs, ys, got = [], [], 0
        for x, y in self.batches(min(n, 1024), seed):
            xs.append(x)
            ys.append(y)
            got += x.shape[0]
            if got >= n:
                break
        x = torch.cat(xs)[:n]
        y = None if ys[0] is None else torch.cat(ys)[:n]
        return x, y


def batches_from(dataset, batch_size: int, seed: int, start: int = 0) -> Iterator:
    """``dataset.batches(batch_size, seed)`` without its first ``start`` batches, exactly as if they had been drawn: a
    resumed run replays its data stream to the step it stopped at. A dataset whose ``batches`` takes ``start`` skips
    them itself (shards skip without decoding); others draw them and drop them (cheap for in-memory data)."""
    if start and "start" in inspect.signature(dataset.batches).parameters:
        return iter(dataset.batches(batch_size, seed=seed, start=start))
    stream = iter(dataset.batches(batch_size, seed=seed))
    return itertools.islice(stream, start, None) if start else stream
