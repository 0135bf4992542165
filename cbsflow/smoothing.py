"""Smoothers of a monitor profile across t (kind `smoother`), applied in the profile stage."""

from __future__ import annotations

import numpy as np

from cbsflow.registry import register


def _window(n: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of the centred window at each of n grid points, cut short at the ends."""
    half, idx = window // 2, np.arange(n)
    return np.maximum(idx - half, 0), np.minimum(idx + half + 1, n)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with the window shrunk at the ends (no padding bias)."""
    c = np.concatenate([[0.0], np.cumsum(values)])
    lo, hi = _window(len(values), window)
    return (c[hi] - c[lo]) / (hi - lo)


@register("smoother")
class log_moving_average:
    """Moving average of log m(t) over ``window`` grid points (geometric mean: suits monitors spanning decades)."""

    def __init__(self, window: int = 5):
        self.window = window

    def __call__(self, t: np.ndarray, value: np.ndarray, stderr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tiny = 1e-30
        smooth = np.exp(moving_average(np.log(np.maximum(value, tiny)), self.window))
        # se(log m) at point j is about r_j = se_j / m_j; the mean of w' independent ones has sqrt(sum r_j^2) / w',
        # w' being the points the window really holds (fewer at the ends).
        lo, hi = _window(len(value), self.window)
        r2 = (stderr / np.maximum(value, tiny)) ** 2
        relative = np.sqrt(moving_average(r2, self.window) / (hi - lo))
        return smooth, relative * smooth
