"""Samplers and schedules: accuracy on a known ODE, step allocation, restarts at boundaries, NFE."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cbsflow.errors import UserError
from cbsflow.samplers import allocate, equal_steps, euler, heun, sample_segmented, uniform_steps
from cbsflow.segmented import SegmentedVelocity


def test_heun_is_second_order_and_euler_first_order():
    # dx/dt = x  =>  x(1) = e * x(0).
    velocity = lambda x, t, y=None: x  # noqa: E731
    errors = {}
    for name, sampler in (("euler", euler), ("heun", heun)):
        errs = [abs(sampler(velocity, torch.ones(1, 1, dtype=torch.float64), np.linspace(0, 1, n + 1)).item() - np.e)
                for n in (10, 20)]
        errors[name] = np.log2(errs[0] / errs[1])
    assert 0.9 < errors["euler"] < 1.1 and 1.9 < errors["heun"] < 2.1


@given(st.lists(st.floats(0.01, 10), min_size=1, max_size=10), st.integers(0, 50))
def test_allocate_sums_to_total_with_at_least_one_each(weights, extra):
    steps = allocate(np.array(weights), len(weights) + extra)
    assert steps.sum() == len(weights) + extra and steps.min() >= 1


def test_allocate_rejects_fewer_steps_than_segments():
    with pytest.raises(UserError, match="n_steps"):
        allocate(np.ones(4), 3)


@pytest.mark.parametrize("schedule", [uniform_steps(), equal_steps()])
def test_schedules_restart_at_every_boundary(schedule):
    b = np.array([0.0, 0.1, 0.35, 1.0])
    grids = schedule(b, 20)
    assert sum(len(g) - 1 for g in grids) == 20
    for k, g in enumerate(grids):
        assert g[0] == b[k] and g[-1] == b[k + 1] and np.all(np.diff(g) > 0)


def test_uniform_steps_follows_width():
    grids = uniform_steps()(np.array([0.0, 0.25, 1.0]), 8)
    assert [len(g) - 1 for g in grids] == [2, 6]


def test_sampling_calls_only_the_owning_expert_with_correct_nfe():
    calls = []

    class Expert(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x, t, y=None):
            calls.append((self.k, t[0].item()))
            return torch.ones_like(x)

    model = SegmentedVelocity([Expert(0), Expert(1)], [0.0, 0.4, 1.0])
    grids = uniform_steps()(model.boundaries.numpy(), 10)
    x, nfe = sample_segmented(model, heun, grids, torch.zeros(3, 2))
    assert nfe == 20 and len(calls) == 20
    torch.testing.assert_close(x, torch.ones(3, 2))  # dx/dt = 1 from 0 to 1
    for k, t in calls:  # the right end of segment 0 (t = 0.4) is still evaluated by expert 0
        assert (k == 0 and t <= 0.4 + 1e-6) or (k == 1 and t >= 0.4 - 1e-6)
