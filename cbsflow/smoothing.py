"""Smoothers of a monitor profile across t (kind `smoother`), applied in the profile stage."""

from __future__ import annotations

import numpy as np

from cbsflow.registry import register


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with the window shrunk at the ends (no padding bias)."""
    half = window // 2
    c = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(len(values))
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, len(values))
    return (c[hi] - c[lo]) / (hi - lo)


@register("smoother")
class log_moving_average:
    """Moving average of log m(t) over ``window`` grid points (geometric mean: suits monitors spanning decades)."""

    def __init__(self, window: int = 5):
        self.window = window

    def __call__(self, t: np.ndarray, value: np.ndarray, stderr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tiny = 1e-30
        smooth = np.exp(moving_average(np.log(np.maximum(value, tiny)), self.window))
        relative = moving_average(stderr / np.maximum(value, tiny), self.window) / np.sqrt(self.window)
        return smooth, relative * smooth
