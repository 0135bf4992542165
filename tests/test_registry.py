"""Registry: one decorator over gin, unique names, short and kind-qualified gin references; smoke over every component."""

import glob
import inspect
import os

import gin
import numpy as np
import pytest
import torch

from cbsflow import registry
from cbsflow.paths import cosine, linear
from cbsflow.registry import get, register
from cbsflow.training import TrainSettings


def test_duplicate_name_fails_loudly_even_across_kinds():
    with pytest.raises(ValueError, match="already registered"):
        register("sampler", name="deboor")(lambda: None)


def test_unknown_kind_and_reserved_names_fail():
    with pytest.raises(ValueError, match="unknown component kind"):
        register("colour")
    with pytest.raises(ValueError, match="reserved"):
        register("monitor", name="split")(lambda: None)


@gin.configurable(module="tests")
def receiver(solver=None):
    return solver


@pytest.mark.parametrize("ref", ["@deboor()", "@partition.deboor()"])
def test_short_and_qualified_gin_references_reach_the_component(ref):
    gin.parse_config([f"receiver.solver = {ref}", "deboor.n_segments = 7"])
    solver = receiver()
    assert registry.name_of(solver) == "deboor" and solver.n_segments == 7


def test_direct_python_calls_ignore_gin_bindings():
    from cbsflow.partition import deboor

    gin.parse_config(["deboor.n_segments = 9"])
    assert deboor().n_segments == 4


def test_every_kind_has_components():
    for kind in ("backbone", "monitor", "estimator", "partition", "sampler", "schedule", "dataset", "metric"):
        assert registry.entries(kind), kind


def test_every_component_has_a_one_line_docstring():
    for entry in registry.entries():
        assert entry.summary, entry.name


def _tiny_kwargs(entry):
    """Arguments that make a component cheap enough to build in a smoke test."""
    table = {"sit": dict(size="T"), "jit": dict(size="T"), "unet": dict(channels=16, channel_mult=(1, 2),
                                                                        attention_resolutions=(8,))}
    return table.get(entry.name, {})


@pytest.mark.parametrize("entry", registry.entries("backbone"), ids=lambda e: e.name)
def test_every_backbone_maps_x_t_y_to_x_shape(entry):
    shape = (2,) if entry.name in ("mlp", "plain_mlp") else (3, 16, 16)
    net = entry.obj(data_shape=shape, num_classes=3, **_tiny_kwargs(entry))
    x = torch.randn(2, *shape)
    assert net(x, torch.rand(2), torch.tensor([0, 2])).shape == x.shape
    assert net(x, torch.rand(2)).shape == x.shape


@pytest.mark.parametrize("entry", registry.entries("partition"), ids=lambda e: e.name)
def test_every_partition_gives_valid_boundaries(entry):
    t = np.linspace(0, 1, 30)
    pairwise = entry.name == "affinity_matrix"  # reads a pairwise profile (cbsflow/affinity.py)
    value = np.exp(-np.abs(t[:, None] ** 2 - t[None, :] ** 2)) if pairwise else 1 + t**2
    b = np.asarray(entry.obj()(t, value, path=linear()))
    assert b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)


@pytest.mark.parametrize("entry", registry.entries("monitor"), ids=lambda e: e.name)
def test_every_monitor_returns_mean_and_stderr_per_t(entry):
    from cbsflow.backbones.mlp import mlp

    t = torch.linspace(0, 0.9, 4)
    mean, se = entry.obj()(mlp(data_shape=(2,), width=8, depth=1), torch.randn(16, 2), t, path=linear())
    if getattr(entry.obj, "pairwise", False):  # an n x n matrix over the grid (cbsflow/affinity.py)
        assert mean.shape == se.shape == (4, 4) and torch.allclose(mean, mean.T) and torch.all(torch.isfinite(mean))
    else:
        assert mean.shape == se.shape == t.shape and torch.all(mean >= 0)


@pytest.mark.parametrize("path", [linear(), cosine()], ids=["linear", "cosine"])
@pytest.mark.parametrize("entry", registry.entries("sampler"), ids=lambda e: e.name)
def test_every_sampler_carries_noise_to_gaussian_data(entry, path):
    from cbsflow.estimators import MixtureVelocity

    mu, s = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0])
    field = MixtureVelocity(torch.ones(1), mu[None], s[None], path)
    sampler = entry.obj() if inspect.isclass(entry.obj) else entry.obj
    x0 = torch.randn(20000, 2, generator=torch.Generator().manual_seed(0))
    x = sampler(field, x0, np.linspace(0, 1, 101).tolist(), path=path, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(x.mean(0), mu, atol=0.05, rtol=0)
    torch.testing.assert_close(x.std(0), s, atol=0.05, rtol=0)


@pytest.mark.parametrize("entry", registry.entries("schedule"), ids=lambda e: e.name)
def test_every_schedule_covers_the_boundaries(entry):
    grids = entry.obj()(np.array([0, 0.3, 1.0]), 7)
    assert sum(len(g) - 1 for g in grids) == 7 and grids[0][0] == 0 and grids[-1][-1] == 1


@pytest.mark.parametrize("entry", [e for e in registry.entries("dataset") if e.name != "shards"], ids=lambda e: e.name)
def test_every_builtin_dataset_samples_its_shape_reproducibly(entry):
    data = entry.obj()
    x, _ = data.sample(64, seed=3)
    assert x.shape == (64, *data.shape) and torch.isfinite(x).all()
    torch.testing.assert_close(x, data.sample(64, seed=3)[0])


@pytest.mark.parametrize("entry", registry.entries("estimator"), ids=lambda e: e.name)
def test_every_estimator_signature_takes_dataset_and_path(entry):
    params = inspect.signature(entry.obj.__call__).parameters
    assert {"dataset", "path", "seed"} <= set(params)


@pytest.mark.parametrize("entry", registry.entries("time_sampler"), ids=lambda e: e.name)
def test_every_time_sampler_stays_inside_the_interval(entry):
    t = entry.obj()(5000, (0.3, 0.35), torch.Generator().manual_seed(0))
    assert t.min() >= 0.3 and t.max() < 0.35


def test_every_gin_file_parses(repo_root):
    from cbsflow import config
    from cbsflow.errors import UserError
    from cbsflow.rundir import STAGE_ORDER

    files = sorted(glob.glob(os.path.join(repo_root, "gin", "**", "*.gin"), recursive=True))
    assert files
    for f in files:
        gin.clear_config()
        try:
            config.parse([f], [])
            for stage in STAGE_ORDER:
                config.check(stage)
        except UserError as err:  # only a macro left %gin.REQUIRED for the user (or an including file) may fail
            assert "is required" in str(err), (f, err)


@pytest.mark.parametrize("entry", registry.entries("backbone"), ids=lambda e: e.name)
def test_every_backbone_takes_a_time_scale(entry):
    """Auxiliary networks need a smooth t-dependence (benchmarks/results/aux_time_scale.md): every backbone exposes it."""
    shape = (2,) if entry.name in ("mlp", "plain_mlp") else (3, 16, 16)
    net = entry.obj(data_shape=shape, time_scale=5.0, **_tiny_kwargs(entry))
    assert net.time.scale == 5.0


def test_readme_lists_every_registered_component_by_kind(repo_root):
    """The README's list of kinds and components is checked against the registry, so the two cannot drift."""
    import re

    readme = open(os.path.join(repo_root, "README.md")).read()
    line = next(ln for ln in readme.splitlines() if ln.startswith("Kinds and their built-in components:"))
    listed = {kind: set(names.split(", ")) for kind, names in re.findall(r"`(\w+)` \(([^)]*)\)", line)}
    assert set(listed) == set(registry.KINDS)
    for kind in registry.KINDS:  # the built-in ones: tests register components of their own
        assert listed[kind] == {e.name for e in registry.entries(kind) if e.obj.__module__.startswith("cbsflow.")}, kind


def test_readme_layout_names_every_module(repo_root):
    import re

    readme = open(os.path.join(repo_root, "README.md")).read()
    layout = readme[readme.index("## Layout"):]
    named = set(re.findall(r"`([\w/]+\.py)`", layout))
    modules = {os.path.relpath(p, os.path.join(repo_root, "cbsflow")) for p in
               glob.glob(os.path.join(repo_root, "cbsflow", "**", "*.py"), recursive=True)}
    modules = {m for m in modules if not m.endswith("__init__.py")}
    listed = {m for m in modules if os.path.basename(m) in {os.path.basename(n) for n in named}}
    assert listed == modules, sorted(modules - listed)


@pytest.mark.parametrize("entry", registry.entries("smoother"), ids=lambda e: e.name)
def test_every_smoother_keeps_the_grid_and_positivity(entry):
    t = np.linspace(0, 1, 11)
    value = np.exp(np.sin(6 * t)) + 0.1
    smooth, se = entry.obj()(t, value, 0.05 * value)
    assert smooth.shape == se.shape == t.shape and np.all(smooth > 0) and np.all(se >= 0)


@pytest.mark.parametrize("entry", registry.entries("path"), ids=lambda e: e.name)
def test_every_path_goes_from_noise_to_data(entry):
    path = entry.obj()
    t = torch.tensor([0.0, 1.0])
    assert torch.allclose(path.alpha(t), torch.tensor([0.0, 1.0]), atol=1e-7)
    assert torch.allclose(path.sigma(t), torch.tensor([1.0, 0.0]), atol=1e-7)


def _metric_inputs(entry):
    """(metric instance, samples, dataset) for a cheap run of any metric; image metrics on tiny digits with the
    weight-free extractor (Inception weights are never downloaded)."""
    import types

    from cbsflow.data.shards import digits
    from cbsflow.data.toy import checkerboard

    if entry.name.startswith("classifier_"):  # RGB at the committed classifier's 16 px
        x = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
        data = types.SimpleNamespace(sample=lambda n, seed=0: (x[:n], None), fingerprint=lambda: "rand16")
        return (entry.obj(n_reference=64) if entry.name == "classifier_fd" else entry.obj()), x, data
    if entry.name in ("fid", "isc", "kid", "prc", "fd_offline"):
        kwargs = {} if entry.name == "fd_offline" else {"feature_extractor": "cbsflow-randconv"}
        data = digits()
        return entry.obj(n_reference=64, cache_root="", **kwargs), data.sample(64, seed=1)[0], data
    data = checkerboard()
    metric = entry.obj(n_points=50, steps=4) if entry.name == "nll" else entry.obj()
    return metric, data.sample(500, seed=1)[0], data


@pytest.mark.parametrize("entry", registry.entries("metric"), ids=lambda e: e.name)
def test_every_metric_returns_named_finite_values_with_settings(entry, tmp_path, monkeypatch):
    from cbsflow.estimators import closed_form
    from cbsflow.paths import linear

    monkeypatch.chdir(tmp_path)  # the image metrics' reference cache goes here
    metric, samples, data = _metric_inputs(entry)
    velocity = closed_form(n_points=256)(data, linear()) if entry.name == "nll" else None
    out = metric(samples=samples, dataset=data, velocity=velocity, seed=0)
    assert out and all(np.isfinite(r["value"]) and isinstance(r.get("settings"), dict) for r in out.values())


@pytest.mark.parametrize("entry", registry.entries("autoencoder"), ids=lambda e: e.name)
def test_every_autoencoder_round_trips_image_shapes(entry, tmp_path, tiny_vae):
    """Every autoencoder (built from a tiny randomly initialised model: no weights) maps images to latents and back to
    images of the same shape in [-1, 1], and describes itself for the shards' metadata."""
    ae = entry.obj(path=tiny_vae(tmp_path), sample_latents=False)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    latents = ae.encode(images)
    assert latents.shape[0] == 2 and latents.shape[-1] < 16
    decoded = ae.decode(latents)
    assert decoded.shape == images.shape and decoded.abs().max() <= 1
    assert isinstance(ae.describe(), dict)


# Every kind of component has a test above that runs each registered component of that kind (derived from the
# registry, so a new component is tested without a new test).
@pytest.mark.parametrize("entry", registry.entries("adaptation"), ids=lambda e: e.name)
def test_every_adaptation_returns_a_valid_split_and_saves_every_expert(entry, tmp_path):
    """Started from a uniform N = 3 split, each returns N + 1 increasing boundaries from 0 to 1, with a checkpoint
    per expert for exactly its final interval."""
    from cbsflow.backbones.mlp import mlp
    from cbsflow.training import TrainingRun

    job = TrainingRun(str(tmp_path), lambda **kw: mlp(width=8, depth=1, **kw), get("gaussian").obj(), get("linear").obj(),
                      TrainSettings(steps=40, batch_size=32), local_time=False, seed=0, config_digest=None)
    b = np.asarray(entry.obj()(job, np.array([0.0, 1 / 3, 2 / 3, 1.0]), None))
    assert len(b) == 4 and b[0] == 0 and b[-1] == 1 and np.all(np.diff(b) > 0)
    for k in range(3):
        ckpt = torch.load(tmp_path / "checkpoints" / f"segment_{k}.pt", weights_only=True)
        np.testing.assert_allclose(ckpt["interval"], b[k:k + 2])


@pytest.mark.parametrize("entry", registry.entries("loss_weight"), ids=lambda e: e.name)
def test_every_loss_weight_is_finite_non_negative_and_averages_one(entry):
    from cbsflow.paths import cosine, linear

    weight = entry.obj()
    for path in (linear(), cosine()):
        t = (torch.arange(4096, dtype=torch.float64) + 0.5) / 4096
        w = weight(t, path)
        assert w.shape == t.shape and torch.all(torch.isfinite(w)) and torch.all(w >= 0)
        assert float(w.double().mean()) == pytest.approx(1.0, rel=1e-4)


BUDGET_ARGS = {"per_expert": {"steps": [3, 5, 4]}}


@pytest.mark.parametrize("entry", registry.entries("budget"), ids=lambda e: e.name)
def test_every_budget_gives_each_expert_positive_steps(entry):
    """Three experts on a profile with a harder late half: one allocation each, steps >= 1, and the rules that
    share N x steps keep that total."""
    from cbsflow.budget import allocate

    budget = entry.obj(**BUDGET_ARGS.get(entry.name, {}))
    t = np.linspace(0, 1, 101)
    profile = {"t": t, "value": 1 + 4 * (t > 0.5)}
    backbone = registry.get("mlp").obj
    out = allocate(budget, np.array([0.0, 0.2, 0.7, 1.0]), 100, None, profile, backbone)
    assert len(out) == 3 and all(a.steps >= 1 for a in out)
    if entry.name != "per_expert":
        assert sum(a.steps for a in out) == 300


KIND_TESTS = {
    "backbone": test_every_backbone_maps_x_t_y_to_x_shape, "path": test_every_path_goes_from_noise_to_data,
    "monitor": test_every_monitor_returns_mean_and_stderr_per_t, "smoother": test_every_smoother_keeps_the_grid_and_positivity,
    "estimator": test_every_estimator_signature_takes_dataset_and_path,
    "partition": test_every_partition_gives_valid_boundaries, "sampler": test_every_sampler_carries_noise_to_gaussian_data,
    "time_sampler": test_every_time_sampler_stays_inside_the_interval,
    "loss_weight": test_every_loss_weight_is_finite_non_negative_and_averages_one,
    "schedule": test_every_schedule_covers_the_boundaries,
    "dataset": test_every_builtin_dataset_samples_its_shape_reproducibly,
    "metric": test_every_metric_returns_named_finite_values_with_settings,
    "autoencoder": test_every_autoencoder_round_trips_image_shapes,
    "adaptation": test_every_adaptation_returns_a_valid_split_and_saves_every_expert,
    "budget": test_every_budget_gives_each_expert_positive_steps,
}


TESTED_ELSEWHERE = {"shards": "needs shard files: tests/data/test_shards.py"}


def test_every_kind_has_a_registry_parametrised_test():
    assert set(KIND_TESTS) == set(registry.KINDS)
    for kind, test in KIND_TESTS.items():
        marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
        builtin = [e for e in registry.entries(kind) if e.obj.__module__.startswith("cbsflow.")]
        expected = [e for e in builtin if e.name not in TESTED_ELSEWHERE]
        assert any(set(expected) <= set(m.args[1]) for m in marks), kind
