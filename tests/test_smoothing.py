"""Profile smoothers: the moving average and the geometric (log) moving average."""

import numpy as np
import pytest

from cbsflow.smoothing import log_moving_average, moving_average


def test_moving_average_shrinks_its_window_at_the_ends():
    v = np.arange(6, dtype=float)
    np.testing.assert_allclose(moving_average(v, 3), [0.5, 1, 2, 3, 4, 4.5])
    np.testing.assert_allclose(moving_average(v, 1), v)


def test_log_moving_average_is_a_geometric_mean_and_keeps_relative_errors():
    t = np.linspace(0, 1, 7)
    value = np.array([1.0, 10, 100, 1000, 100, 10, 1])
    stderr = 0.1 * value
    smooth, se = log_moving_average(window=3)(t, value, stderr)
    assert smooth[3] == pytest.approx((100 * 1000 * 100) ** (1 / 3))
    assert smooth[0] == pytest.approx(np.sqrt(10))
    # The relative errors of the w' points in the window, independent: sqrt(sum r^2) / w' (w' = 2 at the ends).
    np.testing.assert_allclose(se / smooth, 0.1 / np.sqrt([2, 3, 3, 3, 3, 3, 2]))


def test_the_smoothed_error_is_the_spread_of_the_smoothed_value_at_the_ends_too():
    """Monte Carlo: noisy profiles (5 % relative error), smoothed with window 5; at every grid point, including the
    ends where the window is cut short, the reported error equals the spread of log m-hat over repeats."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 12)
    truth = np.exp(3 * t)
    runs = [log_moving_average(window=5)(t, truth * (1 + 0.05 * rng.standard_normal(12)), 0.05 * truth)
            for _ in range(4000)]
    spread = np.std([np.log(smooth) for smooth, _ in runs], axis=0)
    reported = np.mean([se / smooth for smooth, se in runs], axis=0)
    np.testing.assert_allclose(reported, spread, rtol=0.06)


def test_a_flat_profile_is_unchanged():
    t = np.linspace(0, 1, 9)
    smooth, se = log_moving_average(window=5)(t, np.full(9, 2.0), np.full(9, 0.2))
    np.testing.assert_allclose(smooth, 2.0)
