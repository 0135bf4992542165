"""The README's cluster recipe, line by line, on tiny data with two CPU processes (slow: pytest -m slow).

The commands are read from the README itself, so the recipe cannot drift from what is tested: `$L` becomes a
two-process `accelerate launch`, `$K` every expert index, paths under /data and /weights point at tiny stand-ins, and
every tools/run.py call gets bindings that shrink the models and runs.
"""

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

LAUNCH = (f"{sys.executable} -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 "
          "--mixed_precision no --dynamo_backend no")
TINY = ["aux/training.steps = 2", "aux/training.batch_size = 4", "aux/training.mixed_precision = 'no'",
        "profile.n_points = 4", "profile.n_samples = 4", "dirichlet.n_probes = 1", "expert/training.steps = 2",
        "expert/training.batch_size = 4", "expert/training.mixed_precision = 'no'", "expert/training.checkpoint_every = 0",
        "sample.n_steps = 4", "sample.n_samples = 8", "sample.batch_size = 4", "sample.mixed_precision = 'no'",
        "shards.num_workers = 0", "shards.shuffle_buffer = 4", "evaluate.floor_draws = 1"]
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
