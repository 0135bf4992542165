"""Seeds derived from tuples of integers: one independent stream per (purpose, seed, rank, step, ...)."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """An independent seed for each tuple of integers (NumPy's SeedSequence hashing: nearby tuples give unrelated
    seeds, so data, noise and per-rank streams never coincide)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])
