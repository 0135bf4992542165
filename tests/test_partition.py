"""Partition solvers: hypothesis properties of de Boor equidistribution and the baselines."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbsflow.errors import UserError
from cbsflow.paths import cosine, linear
from cbsflow.partition import deboor, density, equidistribute, integrate, logsnr, manual, uniform

# A positive monitor on an increasing grid inside [0, 1].
grids = st.integers(3, 40).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0.01, 1.0), min_size=n - 1, max_size=n - 1),  # gaps between grid points
    st.floats(0.0, 0.3), st.floats(0.7, 1.0),  # first and last grid point
    st.lists(st.floats(1e-3, 1e3), min_size=n, max_size=n)))  # monitor values
segments = st.integers(1, 12)


def _profile(data):
    gaps, lo, hi, m = data
    c = np.concatenate([[0.0], np.cumsum(gaps)])
    return lo + (hi - lo) * c / c[-1], np.asarray(m)


def _dense_integral(t, rho, a, b, n=20001):
    """Independent check: trapezoid of the interpolated (edge-extended) density on a fine grid."""
    s = np.linspace(a, b, n)
    vals = np.interp(s, t, rho)  # np.interp holds the end values beyond the grid, like the solver
    return np.trapezoid(vals, s)


@given(grids, segments)
def test_boundaries_strictly_increasing_from_0_to_1(data, n):
    t, m = _profile(data)
    b = deboor(n_segments=n)(t, m)
    assert len(b) == n + 1 and b[0] == 0.0 and b[-1] == 1.0
    assert np.all(np.diff(b) > 0)


@given(grids, segments, st.sampled_from([1.0, 0.5, 1 / 3]), st.sampled_from([0.0, 0.05, 1.0]))
def test_each_segment_carries_equal_burden(data, n, exponent, floor):
    t, m = _profile(data)
    rho = density(m, exponent, floor)
    b = deboor(n_segments=n, exponent=exponent, floor=floor)(t, m)
    total = _dense_integral(t, rho, 0.0, 1.0)
    parts = np.array([_dense_integral(t, rho, lo, hi) for lo, hi in zip(b[:-1], b[1:])])
    np.testing.assert_allclose(parts, total / n, rtol=1e-3)


@given(st.integers(2, 30), segments, st.floats(1e-3, 1e3))
def test_constant_monitor_gives_uniform_boundaries(n_points, n, level):
    t = np.linspace(0, 1, n_points)
    b = deboor(n_segments=n)(t, np.full(n_points, level))
    np.testing.assert_allclose(b, np.linspace(0, 1, n + 1), atol=1e-9)


@given(grids, segments, st.floats(1e-3, 1e3))
def test_scaling_the_monitor_changes_nothing(data, n, scale):
    t, m = _profile(data)
    for exponent in (1.0, 0.5, 0.0):
        solver = deboor(n_segments=n, exponent=exponent)
        np.testing.assert_allclose(solver(t, m), solver(t, scale * m), atol=1e-9)


@given(grids, segments, st.floats(0.0, 1.0))
def test_no_segment_narrower_than_min_width(data, n, fraction):
    t, m = _profile(data)
    min_width = fraction / n
    b = deboor(n_segments=n, min_width=min_width)(t, m)
    assert np.all(np.diff(b) >= min_width - 1e-9)
    assert b[0] == 0.0 and b[-1] == 1.0


def test_min_width_keeps_equal_burden_on_unconstrained_segments():
    t = np.linspace(0, 1, 200)
    m = 1 / (1 - t + 1e-3) ** 2
    b = deboor(n_segments=4, exponent=1.0, floor=0.0, min_width=0.1)(t, m)
    widths, burden = np.diff(b), np.diff(integrate(t, density(m, 1.0, 0.0), b))
    free = widths > 0.1 + 1e-9
    assert (~free).any() and free.sum() >= 1
    np.testing.assert_allclose(burden[free], burden[free][0], rtol=1e-6)
    assert np.all(burden[~free] >= burden[free][0] * (1 - 1e-9))  # widened segments carry more


def test_equidistribute_known_density():
    # rho = 2 t  =>  C(t) = t^2  =>  boundaries sqrt(k / n).
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(equidistribute(t, 2 * t + 1e-300, 4), np.sqrt(np.arange(5) / 4), atol=1e-12)


def test_uniform_and_logsnr_and_manual():
    np.testing.assert_allclose(uniform(n_segments=4)(), [0, 0.25, 0.5, 0.75, 1])
    b = logsnr(n_segments=4)(path=linear())
    # Linear path: log-SNR = 2 log(t / (1 - t)) is 0 at t = 1/2 and the split is symmetric about it.
    np.testing.assert_allclose(b, 1 - b[::-1], atol=1e-6)
    assert abs(b[2] - 0.5) < 1e-6


def test_logsnr_follows_the_path_it_is_given():
    """Cosine path: log-SNR = 2 log tan(pi t / 2) is 0 at t = 1/2 and +-3 at t = (2 / pi) arctan(e^(+-1.5))."""
    b = logsnr(n_segments=4)(path=cosine())
    expected = 2 / np.pi * np.arctan(np.exp([-1.5, 0.0, 1.5]))
    np.testing.assert_allclose(b[1:-1], expected, atol=1e-5)
    assert not np.allclose(b, logsnr(n_segments=4)(path=linear()), atol=1e-3)
    np.testing.assert_allclose(manual(boundaries=[0, 0.2, 1])(), [0, 0.2, 1])


@pytest.mark.parametrize("bad", [[0, 0.6, 0.4, 1], [0.1, 0.5, 1], [0, 0.5, 1.2], [0, 0.5, 0.5, 1], [0.0]])
def test_manual_rejects_bad_boundaries(bad):
    with pytest.raises(UserError, match="boundaries"):
        manual(boundaries=bad)


@pytest.mark.parametrize("solver", [deboor, uniform, logsnr])
@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_n_segments_must_be_a_positive_integer(solver, n):
    with pytest.raises(UserError, match="n_segments"):
        solver(n_segments=n)


def test_impossible_min_width_is_rejected():
    with pytest.raises(UserError, match="min_width"):
        deboor(n_segments=4, min_width=0.3)
