"""Monitors against closed forms for Gaussian data (docs/math.md): exact velocity is affine in x."""

import numpy as np
import pytest
import torch

from cbsflow.estimators import MixtureVelocity
from cbsflow.monitors import acceleration, dirichlet
from cbsflow.paths import linear


def gaussian_field(mu, s):
    mu, s = torch.tensor(mu), torch.tensor(s)
    return mu, s, MixtureVelocity(torch.ones(1), mu[None], s[None], linear())


def closed_form_d(t, s):
    v = t[:, None] ** 2 * s**2 + (1 - t[:, None]) ** 2
    return (((t[:, None] * s**2 - (1 - t[:, None])) / v) ** 2).mean(-1)


def closed_form_a(t, s):
    v = t[:, None] ** 2 * s**2 + (1 - t[:, None]) ** 2
    return (s**4 / v**3).mean(-1)


def test_check_values_from_math_md():
    t, s = torch.tensor([0.5, 0.8]), torch.tensor([0.3])
    np.testing.assert_allclose(closed_form_d(t, s), [2.78798, 1.71997], rtol=1e-5)
    np.testing.assert_allclose(closed_form_a(t, s), [0.40030, 8.71241], rtol=1e-5)


def test_dirichlet_matches_closed_form_within_standard_errors():
    mu, s, field = gaussian_field([0.7, -0.3, 0.0, 1.0], [0.3, 1.0, 2.0, 0.1])
    x1 = mu + s * torch.randn(800, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.3, 0.6, 0.9, 0.97])
    mean, se = dirichlet(n_probes=8, probe="gaussian")(field, x1, t, path=linear())
    exact = closed_form_d(t, s)
    assert torch.all(se > 0)
    assert torch.all((mean - exact).abs() < 4 * se), (mean, exact, se)


def test_dirichlet_with_rademacher_probes_is_exact_for_a_diagonal_jacobian():
    # Gaussian data with diagonal covariance has a constant diagonal Jacobian: ||J z||^2 = sum B_i^2 for z = +-1.
    mu, s, field = gaussian_field([0.7, -0.3, 0.0, 1.0], [0.3, 1.0, 2.0, 0.1])
    x1 = mu + s * torch.randn(100, 4)
    t = torch.tensor([0.0, 0.3, 0.6, 0.9, 0.97])
    mean, se = dirichlet(n_probes=2, probe="rademacher")(field, x1, t, path=linear())
    np.testing.assert_allclose(mean, closed_form_d(t, s), rtol=1e-4)
    np.testing.assert_allclose(se, 0, atol=1e-4 * mean.max().item())


def test_dirichlet_is_exact_in_one_dimension_with_rademacher_probes():
    mu, s, field = gaussian_field([0.7], [0.3])
    x1 = mu + s * torch.randn(64, 1)
    t = torch.tensor([0.5, 0.8])
    mean, _ = dirichlet()(field, x1, t, path=linear())
    np.testing.assert_allclose(mean, [2.78798, 1.71997], rtol=1e-4)


@pytest.mark.parametrize("method", ["fd", "exact"])
def test_acceleration_matches_closed_form(method):
    mu, s, field = gaussian_field([0.7, -0.5], [0.3, 0.6])
    x1 = mu + s * torch.randn(3000, 2, generator=torch.Generator().manual_seed(2))
    t = torch.linspace(0.0, 0.9, 31)
    mean, se = acceleration(method=method)(field, x1, t, path=linear(), generator=torch.Generator().manual_seed(3))
    exact = closed_form_a(t, s)
    # Sampling error (a few s.e.) plus 2 % for the finite differences and the ODE discretisation.
    assert torch.all((mean - exact).abs() < 4 * se + 0.02 * exact), (mean / exact)


def test_acceleration_peaks_near_data_for_sharp_data():
    # docs/math.md: for small s the acceleration peaks near t* = 1 / (1 + s^2).
    _, s, field = gaussian_field([0.0], [0.2])
    t = torch.linspace(0.5, 0.99, 50)
    mean, _ = acceleration(method="exact")(field, torch.zeros(500, 1), t, path=linear())
    assert abs(t[mean.argmax()].item() - 1 / (1 + 0.04)) < 0.02


def test_monitors_run_through_a_network_with_class_labels():
    from cbsflow.backbones.mlp import mlp

    net = mlp(data_shape=(2,), num_classes=3, width=16, depth=1)
    x1, y = torch.randn(32, 2), torch.randint(0, 3, (32,))
    t = torch.linspace(0, 1, 5)
    for monitor in (dirichlet(n_probes=2), acceleration(), acceleration(method="exact")):
        mean, se = monitor(net, x1, t, path=linear(), y=y)
        assert mean.shape == se.shape == t.shape and torch.all(mean >= 0) and torch.all(torch.isfinite(mean))


def test_dirichlet_in_x_prediction_space_matches_closed_form():
    # x1_hat = x + (1 - t) v is affine with slope 1 + (1 - t) B per coordinate (linear path).
    mu, s, field = gaussian_field([0.7, -0.3], [0.3, 1.0])
    t = torch.tensor([0.1, 0.5, 0.9])
    mean, _ = dirichlet(n_probes=2, target="x1")(field, mu + s * torch.randn(50, 2), t, path=linear())
    v_big = t[:, None] ** 2 * s**2 + (1 - t[:, None]) ** 2
    slope = 1 + (1 - t[:, None]) * (t[:, None] * s**2 - (1 - t[:, None])) / v_big
    np.testing.assert_allclose(mean, (slope**2).mean(-1), rtol=1e-4)
    # and the x1 prediction of the exact field is the posterior mean E[x1 | x_t] = mu + t s^2 / V (x - t mu)
    x = torch.randn(4, 2)
    from cbsflow.monitors import prediction

    tt = torch.full((4,), 0.5)
    expected = mu + 0.5 * s**2 / (0.25 * s**2 + 0.25) * (x - 0.5 * mu)
    torch.testing.assert_close(prediction(field, linear(), "x1")(x, tt), expected)


def test_centred_dirichlet_is_zero_for_gaussian_data_whose_field_is_affine():
    mu, s, field = gaussian_field([0.7, -0.3, 0.0], [0.3, 1.0, 2.0])
    x1 = mu + s * torch.randn(200, 3, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.0, 0.5, 0.9])
    plain, _ = dirichlet(n_probes=4)(field, x1, t, path=linear())
    centred, _ = dirichlet(n_probes=4, centred=True)(field, x1, t, path=linear())
    assert torch.all(plain > 0.1)
    np.testing.assert_allclose(centred, 0, atol=1e-5 * plain.max().item())


def test_centred_dirichlet_is_the_variance_of_the_jacobian_in_one_dimension():
    # v(x, t) = sin(3 x): J = 3 cos(3 x), and with +-1 probes (J z - mean J z)^2 = (J - mean J)^2 exactly.
    field = lambda x, t, y=None: torch.sin(3 * x)  # noqa: E731
    x1 = torch.randn(300, 1, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.2, 0.7])
    mean, _ = dirichlet(n_probes=3, centred=True)(field, x1, t, path=linear(), generator=torch.Generator().manual_seed(6))
    gen = torch.Generator().manual_seed(6)  # the monitor's draws: eps for x_t, then the probes, at each t
    expected = []
    group = torch.arange(300) * 18 // 300  # 18 groups of 16 or 17 samples (group_size 16)
    for ti in t.tolist():
        x_t = ti * x1 + (1 - ti) * torch.randn(x1.shape, generator=gen)
        probes = torch.randint(0, 2, (3, 18, 1), generator=gen)  # noqa: F841 (advance the generator as the monitor does)
        jac = 3 * torch.cos(3 * x_t[:, 0])
        expected.append(np.mean([torch.var(jac[group == g], unbiased=True).item() for g in range(18)]))
    np.testing.assert_allclose(mean, expected, rtol=1e-4)


@pytest.mark.parametrize("centred", [False, True])
def test_dirichlet_error_bars_cover_the_exact_value_of_a_mixture(centred):
    """Two Gaussians at t = 0.5: over 80 seeds the 95 % interval mean +- 1.96 se holds the exact energy (from the
    exact Jacobian on 200k samples) at least 90 % of the time. A probe shared by the whole batch covered 29-43 %."""
    from cbsflow.estimators import MixtureVelocity

    field = MixtureVelocity(torch.ones(2), torch.tensor([[-1.5, 0.0], [1.5, 0.5]]),
                            torch.tensor([[0.3, 0.6], [0.5, 0.3]]), linear())
    gen = torch.Generator().manual_seed(0)

    def data(n):
        k = torch.randint(0, 2, (n,), generator=gen)
        return field.means[k] + field.stds[k] * torch.randn(n, 2, generator=gen)

    t = 0.5
    x_t = t * data(200_000) + (1 - t) * torch.randn(200_000, 2, generator=gen)
    jac = torch.func.vmap(torch.func.jacrev(lambda x: field(x[None], torch.tensor([t]))[0]))(x_t)  # (n, 2, 2)
    exact = ((jac - jac.mean(0)) if centred else jac).pow(2).sum((1, 2)).mean().item() / 2
    monitor = dirichlet(n_probes=2, centred=centred, progress=False)
    covered = 0
    for seed in range(80):
        mean, se = monitor(field, data(512), torch.tensor([t]), path=linear(), generator=torch.Generator().manual_seed(seed))
        covered += abs(mean.item() - exact) <= 1.96 * se.item()
    assert covered >= 72, f"{covered}/80 intervals hold the exact value {exact:.4f}"


def test_jvp_chunks_fit_a_memory_budget_and_give_the_same_profile():
    """The monitor's JVP batch is cut to what the budget holds (issue 33, point 6); the numbers do not change."""
    import pytest

    from cbsflow import memory
    from cbsflow.errors import UserError
    from cbsflow.monitors import acceleration, dirichlet
    from cbsflow.paths import linear

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2048), torch.nn.SiLU(), torch.nn.Linear(2048, 2))

    def field(x, t, y=None):
        return net(torch.cat([x, t[:, None]], dim=1))

    x = torch.randn(64, 3, requires_grad=False)
    rows = memory.jvp_rows(lambda n: torch.func.jvp(lambda x_: field(x_, torch.zeros(n)), (x[:n, :2],),
                                                     (torch.ones(n, 2),)), 256, torch.device("cpu"), 0.003, "dirichlet")
    assert 1 <= rows < 256  # 2,048 hidden units x (value + tangent) x several temporaries per row: ~3 MB holds few
    x1, t = torch.randn(64, 2), torch.linspace(0.1, 0.9, 3)
    for monitor in (dirichlet, lambda **kw: acceleration(method="exact", **kw)):
        small = monitor(memory_budget=0.003, progress=False)(field, x1, t, path=linear(),
                                                              generator=torch.Generator().manual_seed(1))
        whole = monitor(progress=False)(field, x1, t, path=linear(), generator=torch.Generator().manual_seed(1))
        for a, b in zip(small, whole):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(UserError, match=r"dirichlet: one row of its Jacobian-vector products needs about .* GB but "
                                        r"the memory budget is 0.00 GB; raise dirichlet.memory_budget"):
        dirichlet(memory_budget=1e-7, progress=False)(field, x1, t, path=linear())
