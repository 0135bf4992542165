"""The image configurations against the references' recipes (fast: each file parsed and its settings read), and the
README's cluster recipe, line by line, on tiny data with two CPU processes (slow: pytest -m slow).

The recipe's commands are read from the README itself, so the recipe cannot drift from what is tested: `$L` becomes
a two-process `accelerate launch`, `$K` every expert index, paths under /data and /weights point at tiny stand-ins,
and every tools/run.py call gets bindings that shrink the models and runs. docs/recipes.md has the sources.
"""

import json
import os
import shlex
import subprocess
import sys

import gin
import numpy as np
import pytest
import torch

from cbsflow.errors import UserError

PROCESSES = 8  # the README's cluster recipe: batch sizes in the configurations are per process
SIT = ["gin/sit_b2_imagenet256.gin", "gin/sit_xl2_imagenet256.gin"]
JIT, UNET = "gin/jit_imagenet64.gin", "gin/cifar10_unet.gin"


def parsed(config_file: str, *bindings: str):
    """The configuration's expert training settings, once its file (and bindings) are parsed."""
    import cbsflow.components  # noqa: F401  (registers every component)
    from cbsflow import config

    config.parse([config_file], list(bindings))
    with gin.config_scope("expert"):
        return gin.get_configurable("settings.training")()


@pytest.mark.parametrize("config_file", SIT + [JIT])
def test_sit_and_jit_train_without_clipping_with_an_ema_that_starts_at_its_decay(config_file, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    settings = parsed(config_file)
    assert settings.grad_clip == 0 and settings.ema_decay == 0.9999 and settings.ema_warmup is False
    assert settings.weight_decay == 0 and settings.class_dropout == 0.1


@pytest.mark.parametrize("config_file", SIT)
def test_sit_configs_are_sits_recipe(config_file, repo_root, monkeypatch):
    """SiT: lr 1e-4 at global batch 256, constant; its SDE sampler (noise 2: drift v + sigma score, noise
    sqrt(2 sigma); last step 'Mean' of 0.04; 250 steps); guidance on 3 of 4 channels; FID-50k against ADM's batch."""
    monkeypatch.chdir(repo_root)
    settings = parsed(config_file)
    assert settings.lr == 1e-4 and settings.batch_size * PROCESSES == 256 and settings.warmup_steps == 0
    assert settings.betas == (0.9, 0.999)  # torch's AdamW default, SiT's
    assert gin.query_parameter("sample.sampler").selector == "euler_maruyama"
    assert gin.query_parameter("euler_maruyama.noise") == 2.0
    assert gin.query_parameter("euler_maruyama.last_step") == 0.04
    assert gin.query_parameter("sample.n_steps") == 250 and gin.query_parameter("sample.guidance_channels") == 3
    assert gin.query_parameter("%REFERENCE_BATCH").endswith("/VIRTUAL_imagenet256_labeled.npz")
    assert gin.query_parameter("sample.n_samples") == 50000 and "ADM" in gin.query_parameter("fid.protocol")


def test_jit_config_is_jits_recipe(repo_root, monkeypatch):
    """JiT: lr = blr 5e-5 x global batch / 256 (2e-4 at 1024), AdamW (0.9, 0.95), 5 warm-up epochs; Heun 50 steps with
    an Euler last step, guidance 3.0 on [0.1, 1]; FID-50k against ADM's ImageNet-64 batch."""
    monkeypatch.chdir(repo_root)
    settings = parsed(JIT)
    global_batch = settings.batch_size * PROCESSES
    assert global_batch == 1024 and settings.lr == pytest.approx(5e-5 * global_batch / 256) and settings.lr == 2e-4
    assert settings.betas == (0.9, 0.95) and settings.warmup_steps == 5 * (1_281_167 // 1024)
    assert gin.query_parameter("heun.final_euler") is True and gin.query_parameter("sample.n_steps") == 50
    assert gin.query_parameter("sample.guidance_scale") == 3.0
    assert tuple(gin.query_parameter("sample.guidance_interval")) == (0.1, 1.0)
    assert gin.query_parameter("%REFERENCE_BATCH").endswith("/VIRTUAL_imagenet64_labeled.npz")
    assert gin.query_parameter("sample.n_samples") == 50000 and "ADM" in gin.query_parameter("fid.protocol")


def test_cifar10_config_is_torchcfms_recipe_and_scores_against_the_training_set(repo_root, monkeypatch):
    """torchcfm (train_cifar10.py): Adam 2e-4, batch 128, 5k warm-up, clip 1.0, EMA 0.9999 from step 1; FID-50k
    against the 50k training images (compute_fid.py: clean-fid's 'train' split)."""
    monkeypatch.chdir(repo_root)
    settings = parsed(UNET)
    assert settings.lr == 2e-4 and settings.batch_size * PROCESSES == 128 and settings.warmup_steps == 5000
    assert settings.grad_clip == 1.0 and settings.ema_decay == 0.9999 and settings.ema_warmup is False
    assert gin.query_parameter("reference/shards.name_filter") == "train"
    assert gin.query_parameter("reference/shards.flip") is False and gin.query_parameter("fid.n_reference") == 50000
    assert gin.query_parameter("sample.n_samples") == 50000 and "training set" in gin.query_parameter("fid.protocol")


@pytest.mark.parametrize("config_file", SIT + [JIT])
def test_a_missing_adm_reference_batch_is_one_line_naming_it(config_file, repo_root, monkeypatch, tmp_path):
    monkeypatch.chdir(repo_root)
    missing = tmp_path / "VIRTUAL_imagenet_labeled.npz"
    parsed(config_file, f"REFERENCE_BATCH = '{missing}'")
    with pytest.raises(UserError) as info:  # when the metric is built: before any stage runs
        gin.get_configurable("metric.fid")()
    line = str(info.value).splitlines()[0]  # the line the CLI prints (gin adds where it was called)
    assert str(missing) in line and "REFERENCE_BATCH" in line and "guided-diffusion" in line


def test_ema_without_warm_up_decays_at_its_rate_from_the_first_step():
    """ema_warmup = False: the references' EMA, a copy of the initial weights decayed at `decay` from step 1."""
    from cbsflow.training import ema_decay_at, ema_update

    net, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    torch.nn.init.zeros_(ema.weight)
    for step in range(200):
        torch.nn.init.ones_(net.weight)
        ema_update(ema, net, decay=0.999, step=step, warmup=False)
    torch.testing.assert_close(ema.weight, torch.full((2, 2), 1 - 0.999**200))  # 82 % of the zero init remains
    assert ema_decay_at(0.9999, 0, warmup=False) == 0.9999 and ema_decay_at(0.9999, 0) == 0.1

LAUNCH = (f"{sys.executable} -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 "
          "--mixed_precision no --dynamo_backend no")
TINY = ["aux/training.steps = 2", "aux/training.batch_size = 4", "aux/training.mixed_precision = 'no'",
        "profile.n_points = 4", "profile.n_samples = 4", "dirichlet.n_probes = 1", "expert/training.steps = 4",
        "expert/training.batch_size = 4", "expert/training.mixed_precision = 'no'", "expert/training.checkpoint_every = 0",
        "sample.n_steps = 4", "sample.n_samples = 8", "sample.batch_size = 4", "sample.mixed_precision = 'no'",
        "shards.num_workers = 0", "shards.shuffle_buffer = 4", "evaluate.floor_draws = 1",
        "successive_halving.n_eval = 16", "expert/training.ema_warmup = True"]  # a few steps: the references' EMA (no warm-up) would still be the init
SHRINK = {
    "SiT": ["sit.size = 'T'", "aux/sit.size = 'T'", "sit.patch = 2", "shards.shape = (4, 16, 16)",
            "reference/shards.shape = (3, 32, 32)", "evaluate.metrics = [@fd_offline()]", "fd_offline.n_reference = 8",
            "vae.batch_size = 4"],
    "JiT": ["jit.size = 'T'", "aux/jit.size = 'T'", "shards.shape = (3, 16, 16)", "evaluate.metrics = [@fd_offline()]",
            "fd_offline.n_reference = 8"],
    "UNet": ["unet.channels = 8", "unet.channel_mult = (1, 2)", "aux/unet.channels = 8", "aux/unet.channel_mult = (1, 2)",
             "evaluate.metrics = [@fd_offline()]", "fd_offline.n_reference = 8"],
}


def recipe(repo_root) -> dict[str, list[str]]:
    """The recipe's lines per experiment (named by the first word of each block's comment)."""
    readme = open(os.path.join(repo_root, "README.md")).read()
    block = readme[readme.index("### Cluster recipe"):].split("```bash\n", 1)[1].split("```", 1)[0]
    out = {}
    for chunk in block.strip().split("\n\n"):
        lines = chunk.splitlines()
        out[lines[0].lstrip("# ").split("-")[0].split(",")[0].strip()] = lines[1:]
    return out


def script(lines: list[str], root, extra: list[str]) -> str:
    """A bash script of the recipe's lines: $L two CPU processes, $K every expert, paths and sizes made tiny."""
    out = ["set -e", f'L="{LAUNCH}"']
    for line in lines:
        line = line.replace("/data/", f"{root}/data/").replace("/weights/", f"{root}/weights/")
        line = line.replace("runs/", f"{root}/runs/").replace("--center-crop 256", "--center-crop 32")
        line = line.replace("--size 256", "--size 32")
        if "tools/run.py" in line:
            line += " " + " ".join(f"--bind {shlex.quote(b)}" for b in extra)
        out.append(f"for K in 0 1 2 3; do {line}; done" if "$K" in line else line)
    return "\n".join(out)


def tiny_data(experiment: str, root, tiny_vae) -> None:
    rng = np.random.default_rng(0)
    if experiment == "SiT":
        os.makedirs(root / "weights", exist_ok=True)
        os.rename(tiny_vae(root / "weights"), root / "weights" / "sd-vae-ft-ema")
        from PIL import Image

        for c in range(2):
            os.makedirs(root / "data" / "imagenet" / "train" / f"n0{c}", exist_ok=True)
            for i in range(6):
                img = rng.integers(0, 256, size=(40 + i, 36, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / "data" / "imagenet" / "train" / f"n0{c}" / f"{i}.png")
    elif experiment == "JiT":
        os.makedirs(root / "data", exist_ok=True)
        for part in (1, 2):
            data = rng.integers(0, 256, size=(6, 3 * 16 * 16), dtype=np.uint8)
            np.savez(root / "data" / f"Imagenet64_train_part{part}.npz", data=data, labels=rng.integers(1, 1001, 6))
    else:
        for split in ("train", "test"):
            np.savez(root / f"{split}.npz", x=rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8),
                     y=rng.integers(0, 10, 12))
            subprocess.run([sys.executable, "tools/make_shards.py", "--from-array", str(root / f"{split}.npz"),
                            "--labels-key", "y", "--out", str(root / "data" / "cifar10"), "--prefix", f"cifar10-{split}",
                            "--quiet"], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["SiT", "JiT", "UNet"])
def test_cluster_recipe_runs_on_tiny_data(experiment, tmp_path, repo_root, monkeypatch, tiny_vae):
    monkeypatch.chdir(repo_root)
    tiny_data(experiment, tmp_path, tiny_vae)
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    commands = script(recipe(repo_root)[experiment], tmp_path, TINY + SHRINK[experiment])
    proc = subprocess.run(["bash", "-c", commands], capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, f"{commands}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    runs = sorted(p for p in (tmp_path / "runs").iterdir())
    assert runs and all((p / "metrics.json").exists() for p in runs)
    if experiment == "SiT":
        cfg = json.loads((tmp_path / "runs" / "sit_xl2-cfg1.5" / "sample.json").read_text())
        assert cfg["guidance"]["scale"] == 1.5 and cfg["processes"] == 2
