"""Evaluation metrics (kind ``metric``): sample quality in data space and likelihood under the model.

Every metric is called as ``metric(samples=..., dataset=..., velocity=..., seed=...)`` and returns
``{name: {"value": float, "settings": {...}}}``; ``floors`` measures what true data scores with the same settings.
"""

from __future__ import annotations

import numpy as np

from cbsflow.seeding import derive_seed


def floors(metric, dataset, n: int, draws: int, reference_seed: int) -> dict[str, dict]:
    """Each of the metric's values on ``draws`` fresh true-data draws of n points: mean, s.d., and what it is."""
    values: dict[str, list[float]] = {}
    for i in range(draws):
        fresh, _ = dataset.sample(n, seed=derive_seed(reference_seed, 101, i))
        for name, result in metric(samples=fresh, dataset=dataset, velocity=None, seed=reference_seed).items():
            values.setdefault(name, []).append(float(result["value"]))
    what = f"the metric of {n} fresh true-data points against the same reference (a perfect model)"
    pool = getattr(dataset, "pool_size", None)
    if pool is not None and n >= pool // 2:
        what += (f"; the data has only {pool} items, so these draws largely repeat the reference's own items and the "
                 "floor is optimistic")
    return {name: {"value": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None, "draws": len(v),
                   "what": what} for name, v in values.items()}
