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


def _gaussian_flow(path_name="linear"):
    """N(mu, diag s^2) data on the linear path: the exact field and its flow map x_t = t mu + sqrt(V(t)) z."""
    from cbsflow.estimators import MixtureVelocity
    from cbsflow.paths import linear

    mu = torch.tensor([1.0, -1.0], dtype=torch.float64)
    s = torch.tensor([0.5, 2.0], dtype=torch.float64)
    field = MixtureVelocity(torch.ones(1), mu[None], s[None], linear()).double()
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return field, linear(), (lambda t: t * mu + torch.sqrt(t * t * s * s + (1 - t) ** 2) * z)


@pytest.mark.parametrize("backend", ["torchdiffeq", "builtin"])
def test_dopri5_meets_its_tolerance_on_the_exact_gaussian_flow_and_counts_its_evaluations(backend):
    from cbsflow.samplers import CountingVelocity, dopri5

    field, path, exact = _gaussian_flow()
    errors, nfes = [], []
    for rtol in (1e-3, 1e-6):
        counted = CountingVelocity(field)
        x = dopri5(rtol=rtol, atol=rtol * 1e-3, backend=backend)(counted, exact(0.0), [0.0, 1.0], path=path)
        errors.append((x - exact(1.0)).abs().max().item())
        nfes.append(counted.nfe)
    assert errors[1] < 1e-4 and errors[1] < errors[0] < 0.05
    assert nfes[1] > nfes[0] > 6  # tighter tolerance, more evaluations (6 per step, 1 more at the start)


@pytest.mark.parametrize("backend", ["torchdiffeq", "builtin"])
def test_dopri5_switches_experts_exactly_at_the_boundaries(backend):
    from cbsflow.samplers import dopri5, uniform_steps

    field, path, exact = _gaussian_flow()
    seen = {0: [], 1: []}

    class Spy(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x, t, y=None):
            seen[self.k].append(t.min().item())
            seen[self.k].append(t.max().item())
            return field(x, t, y)

    model = SegmentedVelocity([Spy(0), Spy(1)], torch.tensor([0.0, 0.4, 1.0]))
    x, nfe = sample_segmented(model, dopri5(rtol=1e-6, atol=1e-9, backend=backend), uniform_steps()(np.array([0, 0.4, 1.0]), 2),
                              exact(0.0), path=path)
    assert max(seen[0]) <= 0.4 + 1e-6 and min(seen[1]) >= 0.4 - 1e-6 and nfe > 12  # t is float32
    torch.testing.assert_close(x, exact(1.0), atol=1e-4, rtol=0)


def test_dopri5_backends_take_the_same_steps_and_say_when_the_step_budget_runs_out():
    """Same tableau, same error norm and step-size rule: the two backends agree to round-off on the same problem."""
    from cbsflow.samplers import CountingVelocity, dopri5

    field, path, exact = _gaussian_flow()
    out, nfe = {}, {}
    for backend in ("torchdiffeq", "builtin"):
        counted = CountingVelocity(field)
        out[backend] = dopri5(rtol=1e-5, atol=1e-8, backend=backend)(counted, exact(0.0), [0.0, 1.0], path=path)
        nfe[backend] = counted.nfe
    torch.testing.assert_close(out["builtin"], out["torchdiffeq"], atol=1e-4, rtol=0)
    assert abs(nfe["builtin"] - nfe["torchdiffeq"]) <= 0.5 * nfe["torchdiffeq"]
    for backend in ("torchdiffeq", "builtin"):
        with pytest.raises(UserError, match="dopri5.max_steps"):
            dopri5(rtol=1e-9, atol=1e-12, max_steps=3, backend=backend)(field, exact(0.0), [0.0, 1.0], path=path)
    with pytest.raises(UserError, match="backend"):
        dopri5(backend="scipy")


def test_dpm_solver_pp_is_second_order_and_beats_heun_at_equal_evaluations():
    from cbsflow.samplers import dpm_solver_pp

    field, path, exact = _gaussian_flow()
    err = {n: (dpm_solver_pp(field, exact(0.1), np.linspace(0.1, 0.9, n + 1).tolist(), path=path) - exact(0.9))
           .abs().max().item() for n in (20, 40, 80)}
    assert 3.4 < err[40] / err[80] < 4.4  # error ~ h^2
    heun_20_nfe = (heun(field, exact(0.1), np.linspace(0.1, 0.9, 11).tolist()) - exact(0.9)).abs().max().item()
    assert err[20] < heun_20_nfe  # 20 steps of one evaluation against 10 of two


# --- SiT's SDE sampler and JiT's last step -------------------------------------------------------------------------
# SiT's sample_sde (willisma/SiT transport/transport.py, integrators.py), written here from its formulas: on the
# linear path with the 'sigma' diffusion form and last_step='Mean', num_steps K: t = linspace(0, 1 - h, K), K - 1 steps
# x <- x + (v + D score) dt + sqrt(2 D) sqrt(dt) z with D = 1 - t, then x <- x + (v + D score)(t = 1 - h) h, no noise.
MU, S = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.2])


def gaussian_velocity_and_score(x, t):
    """Closed forms for data N(MU, S^2) on x_t = t x1 + (1 - t) eps: the marginal is N(t MU, t^2 S^2 + (1 - t)^2)."""
    var = t**2 * S**2 + (1 - t) ** 2
    v = MU + (t * S**2 - (1 - t)) / var * (x - t * MU)
    return v, -(x - t * MU) / var


def sit_sample_sde_mean_last_step(x, num_steps, last_step_size, generator):
    ts = torch.linspace(0.0, 1.0 - last_step_size, num_steps, dtype=torch.float64)
    dt = ts[1] - ts[0]
    for t in ts[:-1]:
        dw = torch.randn(x.shape, generator=generator, dtype=x.dtype) * torch.sqrt(dt)
        v, score = gaussian_velocity_and_score(x, t)
        x = x + (v + (1 - t) * score) * dt + torch.sqrt(2 * (1 - t)) * dw
    v, score = gaussian_velocity_and_score(x, ts[-1])
    return x + (v + (1 - ts[-1]) * score) * last_step_size


def test_euler_maruyama_with_noise_2_and_last_step_is_sits_sample_sde_with_its_mean_last_step():
    from cbsflow.estimators import MixtureVelocity
    from cbsflow.paths import linear
    from cbsflow.samplers import CountingVelocity, euler_maruyama

    field = CountingVelocity(MixtureVelocity(torch.ones(1), MU[None], S[None], linear()).double())
    x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = euler_maruyama(noise=2.0, last_step=0.04)(field, x0, np.linspace(0, 1, 251), path=linear(),
                                                     generator=torch.Generator().manual_seed(0))
    sit = sit_sample_sde_mean_last_step(x0, 250, 0.04, torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours, sit, atol=1e-6, rtol=0)  # the same Brownian path; t is float32 in the sampler
    assert field.nfe == 250  # SiT's num_steps: 249 noisy steps and the last one
    torch.testing.assert_close(ours.mean(0), MU.double(), atol=0.05, rtol=0)  # and it samples the data
    torch.testing.assert_close(ours.std(0), S.double(), atol=0.03, rtol=0)


def test_euler_maruyama_last_step_ends_only_the_grid_that_reaches_the_data():
    from cbsflow.paths import linear
    from cbsflow.samplers import euler_maruyama, stop_before_data_end

    np.testing.assert_allclose(stop_before_data_end(np.linspace(0.5, 1.0, 6), 0.04),
                               [0.5, 0.615, 0.73, 0.845, 0.96, 1.0])
    assert stop_before_data_end([0.9, 1.0], 0.04) == [0.9, 1.0]  # a one-step grid keeps its one step
    seen = []

    def velocity(x, t, y=None):
        seen.append(round(float(t[0]), 6))
        return torch.zeros_like(x)

    sampler = euler_maruyama(noise=2.0, last_step=0.04)
    inner = sampler(velocity, torch.zeros(3, 2), [0.0, 0.25, 0.5], path=linear(), generator=torch.Generator())
    assert seen == [0.0, 0.25] and inner.abs().sum() > 0  # a segment that stops before t = 1 keeps its noise
    with pytest.raises(UserError, match="last_step"):
        sampler(velocity, torch.zeros(3, 2), [0.97, 0.98, 1.0], path=linear(), generator=torch.Generator())
    with pytest.raises(UserError, match="last_step"):
        euler_maruyama(last_step=1.0)


def test_heun_final_euler_takes_jits_euler_step_into_the_data_end_only():
    seen = []

    def velocity(x, t, y=None):
        seen.append(round(float(t[0]), 6))
        return torch.ones_like(x)

    x = heun(velocity, torch.zeros(2, 1), [0.0, 0.5, 1.0], final_euler=True)
    assert seen == [0.0, 0.5, 0.5] and torch.allclose(x, torch.ones(2, 1))  # Heun, then Euler from 0.5: 3 evaluations
    seen.clear()
    heun(velocity, torch.zeros(2, 1), [0.0, 0.25, 0.5], final_euler=True)
    assert seen == [0.0, 0.25, 0.25, 0.5]  # a segment that stops before t = 1 is all Heun


def test_guidance_channels_guide_only_the_first_channels_as_sit_does():
    from cbsflow.samplers import Guided

    def velocity(x, t, y):  # conditional = 1 + label, unconditional (null class 10) = 0, in every channel
        label = (1.0 + y)[:, None, None, None].expand_as(x)
        return torch.where((y == 10)[:, None, None, None], torch.zeros_like(x), label)

    x, t, y = torch.zeros(2, 4, 2, 2), torch.full((2,), 0.5), torch.tensor([1, 2])
    guided = Guided(velocity, scale=1.5, interval=(0.0, 1.0), null_class=10, channels=3)(x, t, y)
    torch.testing.assert_close(guided[:, :3], 1.5 * (1.0 + y)[:, None, None, None].expand(2, 3, 2, 2))
    torch.testing.assert_close(guided[:, 3], (1.0 + y)[:, None, None].expand(2, 2, 2))  # channel 4: conditional
    full = Guided(velocity, scale=1.5, interval=(0.0, 1.0), null_class=10)(x, t, y)
    torch.testing.assert_close(full, 1.5 * (1.0 + y)[:, None, None, None].expand_as(x))
