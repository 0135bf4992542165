"""Latent diffusion end to end with a tiny random AutoencoderKL (no weights downloaded): images -> latent shards
(tools/encode_latents.py) -> train -> sample -> decode -> image metrics."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cbsflow.cli import main

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def latent_data(tmp_path_factory, repo_root, tiny_vae):
    """A tiny AutoencoderKL saved to disk, 48 RGB 16x16 images as shards, and their latents as shards."""
    root = tmp_path_factory.mktemp("latents")
    tiny_vae(root)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    images = np.stack([np.stack([(128 + 100 * np.sin(xx / (2 + k % 5) + c)).astype(np.uint8) for c in range(3)], -1)
                       for k in range(48)])
    np.savez(root / "images.npz", x=images, y=rng.integers(0, 3, size=48))
    subprocess.run([sys.executable, "tools/make_shards.py", "--from-array", str(root / "images.npz"), "--labels-key", "y",
                    "--out", str(root / "images"), "--prefix", "img-train", "--maxcount", "24", "--quiet"],
                   cwd=repo_root, check=True)
    encode = [sys.executable, "tools/encode_latents.py", "--shards", str(root / "images"), "--vae-path",
              str(root / "vae"), "--size", "16", "--out", str(root / "lat"), "--batch-size", "16", "--quiet"]
    proc = subprocess.run(encode, cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root, encode


def test_encoding_writes_one_latent_shard_per_image_shard_with_metadata(latent_data, repo_root):
    root, encode = latent_data
    shards = sorted(p.name for p in (root / "lat").glob("*.tar"))
    assert shards == ["latents-train-000000.tar", "latents-train-000001.tar"]
    meta = json.loads((root / "lat" / "latents.json").read_text())
    assert meta["latent_shape"] == [4, 8, 8] and meta["autoencoder"]["scale"] == 0.18215
    assert meta["autoencoder"]["path"] == str(root / "vae") and meta["shards"] == 2
    from cbsflow.data.shards import shards as shard_data

    x, y = next(shard_data(str(root / "lat"), shape=(4, 8, 8), num_classes=3, image_key="npy").batches(8))
    assert x.shape == (8, 4, 8, 8) and y.max() < 3 and 0.01 < float(x.std()) < 10
    # Rerunning skips the finished shards.
    before = {p.name: p.stat().st_mtime_ns for p in (root / "lat").glob("*.tar")}
    assert subprocess.run(encode, cwd=repo_root, capture_output=True).returncode == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in (root / "lat").glob("*.tar")}


def test_latent_model_samples_decoded_images_and_scores_them(latent_data, tmp_path, repo_root, monkeypatch):
    root, _ = latent_data
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    argv = ["--gin", "gin/smoke/latent.gin", "--bind", f"DATA_DIR = '{root / 'lat'}'",
            "--bind", f"VAE_PATH = '{root / 'vae'}'", "--bind", f"IMAGES_DIR = '{root / 'images'}'", "--run-dir", str(run),
            "--bind", "fd_offline.cache_root = ''"]
    assert main(argv + ["--stages", "split,train,sample,evaluate"]) == 0
    with np.load(run / "samples.npz") as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (32, 3, 16, 16)
    info = json.loads((run / "sample.json").read_text())
    assert info["decoded_by"]["path"] == str(root / "vae")
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert np.isfinite(metrics["fd_randconv"]["value"]) and "floor" in metrics["fd_randconv"]


def test_a_missing_autoencoder_is_one_clear_error(latent_data, tmp_path, repo_root, monkeypatch, capsys):
    root, _ = latent_data
    monkeypatch.chdir(repo_root)
    code = main(["--gin", "gin/smoke/latent.gin", "--bind", f"DATA_DIR = '{root / 'lat'}'",
                 "--bind", "VAE_PATH = 'stabilityai/sd-vae-ft-ema-not-cached'", "--bind", f"IMAGES_DIR = '{root / 'images'}'",
                 "--run-dir", str(tmp_path / "run"), "--stages", "split,train,sample"])
    err = capsys.readouterr().err
    assert code == 2 and "never downloads weights" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # found when the configuration was built, before anything ran
