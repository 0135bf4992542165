"""Image pipeline on CPU: every backbone's smoke configuration end to end, guidance, SDE sampler, seeds."""

import json
import os

import numpy as np
import pytest
import torch

from cbsflow.cli import main
from cbsflow.estimators import MixtureVelocity
from cbsflow.paths import linear
from cbsflow.samplers import Guided, euler_maruyama, heun


@pytest.fixture(autouse=True)
def in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


@pytest.mark.parametrize("backbone", ["unet", "sit", "jit"])
def test_backbone_smoke_configuration_runs_every_stage(backbone, tmp_path):
    assert main(["--gin", f"gin/smoke/{backbone}.gin", "--run-dir", str(tmp_path)]) == 0
    with np.load(tmp_path / "samples.npz") as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (128, 1, 8, 8)
        assert f["labels"].shape == (128,) and f["labels"].max() < 10
    from PIL import Image

    with Image.open(tmp_path / "samples.png") as png:  # data beside samples, 8x8 digits drawn large
        assert png.size[0] >= 1000 and png.size[1] >= 500
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "fd_randconv" in metrics["metrics"] and "fid" not in metrics["metrics"]
    info = json.loads((tmp_path / "sample.json").read_text())
    channels = {"channels": 1} if backbone == "sit" else {}  # the SiT smoke run guides as SiT does
    assert info["guidance"] == {"scale": 2.0, "interval": [0.2, 1.0], **channels}
    nfe = {"sit": 4, "jit": 7, "unet": 8}[backbone]  # SDE: 1 per step; JiT: Heun with an Euler step into t = 1
    assert info["nfe"] == nfe and info["sampler"] == ("euler_maruyama" if backbone == "sit" else "heun")


def test_fixed_seed_gives_identical_samples_and_another_seed_does_not(tmp_path):
    run = ["--gin", "gin/smoke/sit.gin", "--run-dir", str(tmp_path)]
    assert main(run + ["--stages", "profile,split,train,sample"]) == 0
    first = np.load(tmp_path / "samples.npz")["images"]
    assert main(run + ["--stages", "sample", "--force"]) == 0
    assert np.array_equal(first, np.load(tmp_path / "samples.npz")["images"])
    assert main(run + ["--stages", "sample", "--force", "--bind", "sample.seed = 1"]) == 0
    assert not np.array_equal(first, np.load(tmp_path / "samples.npz")["images"])


def test_guidance_combines_conditional_and_unconditional_inside_the_interval():
    def velocity(x, t, y):  # conditional velocity = label, unconditional (null class 10) = 0
        return torch.where(y[:, None] == 10, torch.zeros_like(x), y[:, None].float().expand_as(x))

    guided = Guided(velocity, scale=3.0, interval=(0.5, 1.0), null_class=10)
    y = torch.tensor([1, 2])
    inside = guided(torch.zeros(2, 2), torch.full((2,), 0.7), y)
    outside = guided(torch.zeros(2, 2), torch.full((2,), 0.2), y)
    torch.testing.assert_close(inside[:, 0], torch.tensor([3.0, 6.0]))
    torch.testing.assert_close(outside[:, 0], torch.tensor([1.0, 2.0]))


def test_sde_sampler_reaches_the_data_distribution():
    mu, s = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.2])
    field = MixtureVelocity(torch.ones(1), mu[None], s[None], linear())
    x = euler_maruyama(noise=1.0)(field, torch.randn(20000, 2), np.linspace(0, 1, 201).tolist(), path=linear(),
                                  generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), mu, atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(0), s, atol=0.03, rtol=0)
    ode = heun(field, torch.randn(20000, 2), np.linspace(0, 1, 51).tolist())
    torch.testing.assert_close(ode.std(0), s, atol=0.03, rtol=0)


def test_missing_data_gives_the_clear_data_error(tmp_path, capsys):
    code = main(["--gin", "gin/jit_imagenet64.gin", "--bind", f"DATA_DIR = '{tmp_path}/nothing'",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "no .tar/.tar.gz shard files match" in err and "make_shards.py" in err
    assert not os.path.exists(tmp_path / "run" / "profile.json")


def test_jit_config_requires_data_dir(capsys, tmp_path):
    assert main(["--gin", "gin/jit_imagenet64.gin", "--run-dir", str(tmp_path)]) == 2
    assert "DATA_DIR" in capsys.readouterr().err


@pytest.mark.parametrize("name,kwargs", [("sit", dict(size="T")), ("jit", dict(size="T", patch=4)),
                                         ("unet", dict(channels=16, channel_mult=(1, 2), attention_resolutions=(4,)))])
def test_monitors_run_batched_through_attention_backbones(name, kwargs):
    """JVPs through (otherwise fused) attention: the monitors force the math kernel."""
    from cbsflow import registry
    from cbsflow.monitors import acceleration, dirichlet

    net = registry.get(name).obj(data_shape=(3, 8, 8), num_classes=4, **kwargs).eval()
    x1, y = torch.randn(6, 3, 8, 8), torch.randint(0, 4, (6,))
    t = torch.linspace(0.1, 0.9, 3)
    for monitor in (dirichlet(n_probes=2, batch_size=4), acceleration(method="exact")):
        mean, se = monitor(net, x1, t, path=linear(), y=y)
        assert mean.shape == t.shape and torch.all(torch.isfinite(mean)) and torch.all(mean >= 0)


SHRINK = {
    "gin/jit_imagenet64.gin": (["jit.size = 'T'", "aux/jit.size = 'T'", "evaluate.metrics = []"], (3, 64, 64), "x"),
    "gin/sit_b2_imagenet256.gin": (["sit.size = 'T'", "aux/sit.size = 'T'", "sit.patch = 8",
                                    "reference/shards.shape = (3, 64, 64)", "evaluate.metrics = [@fd_offline()]",
                                    "fd_offline.n_reference = 4", "vae.batch_size = 4"], (4, 32, 32), "latents"),
    "gin/cifar10_unet.gin": (["unet.channels = 8", "unet.channel_mult = (1, 2)", "unet.attention_resolutions = (16,)",
                              "aux/unet.channels = 8", "aux/unet.channel_mult = (1, 2)", "evaluate.metrics = []"],
                             (3, 32, 32), "x"),
}
TINY = ["aux/training.steps = 2", "aux/training.batch_size = 4", "aux/training.mixed_precision = 'no'", "profile.n_points = 4",
        "profile.n_samples = 4", "dirichlet.n_probes = 1", "expert/training.steps = 4", "expert/training.batch_size = 4",
        "successive_halving.n_eval = 4",
        "expert/training.mixed_precision = 'no'", "expert/training.checkpoint_every = 0", "sample.n_steps = 4", "sample.n_samples = 4",
        "sample.batch_size = 4", "shards.num_workers = 0", "shards.shuffle_buffer = 4",
        "expert/training.ema_warmup = True"]  # a few steps: the references' EMA (no warm-up) would still be the init


@pytest.mark.parametrize("config", sorted(SHRINK))
def test_full_size_configs_run_on_small_shards_made_by_make_shards(config, tmp_path, repo_root, tiny_vae):
    import subprocess
    import sys

    bindings, shape, kind = SHRINK[config]
    gen = np.random.default_rng(0)
    if kind == "latents":
        array = gen.normal(size=(12, *shape)).astype(np.float32)
    else:
        array = gen.integers(0, 256, size=(12, shape[1], shape[2], shape[0]), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x=array, y=gen.integers(0, 10, size=12))
    for prefix in ("tiny-train", "tiny-test"):
        subprocess.run([sys.executable, "tools/make_shards.py", "--from-array", str(tmp_path / "data.npz"),
                        "--labels-key", "y", "--out", str(tmp_path / "shards"), "--prefix", prefix, "--quiet"],
                       cwd=repo_root, check=True)
    argv = ["--gin", config, "--bind", f"DATA_DIR = '{tmp_path / 'shards'}'", "--run-dir", str(tmp_path / "run")]
    if kind == "latents":  # decoded by a tiny random VAE (x2 per side), scored against 64x64 images
        argv += ["--bind", f"VAE_PATH = '{tiny_vae(tmp_path)}'", "--bind", f"IMAGES_DIR = '{tmp_path / 'shards'}'"]
        images = gen.integers(0, 256, size=(12, 64, 64, 3), dtype=np.uint8)
        np.savez(tmp_path / "images.npz", x=images, y=gen.integers(0, 10, size=12))
        subprocess.run([sys.executable, "tools/make_shards.py", "--from-array", str(tmp_path / "images.npz"),
                        "--labels-key", "y", "--out", str(tmp_path / "shards"), "--prefix", "images-train", "--quiet"],
                       cwd=repo_root, check=True)
        argv += ["--bind", "reference/shards.name_filter = 'images-train'", "--bind", "shards.name_filter = 'tiny-train'"]
    for b in bindings + TINY:
        argv += ["--bind", b]
    assert main(argv) == 0
    assert (tmp_path / "run" / "metrics.json").exists()


def test_fid_without_inception_weights_fails_before_anything_runs(tmp_path, capsys):
    code = main(["--gin", "gin/smoke/sit.gin", "--bind", "evaluate.metrics = [@fid()]",
                 "--bind", f"fid.weights_path = '{tmp_path}/weights-inception-2015-12-05-6726825d.pth'",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "weights-inception-2015-12-05-6726825d.pth" in err and "fid.weights_path" in err
    assert not (tmp_path / "run" / "profile.json").exists()
