"""Latent diffusion end to end with a tiny random AutoencoderKL (no weights downloaded): images -> latent shards
(tools/encode_latents.py: the posterior's mean and std of each image and its flip) -> draws of a flip and a posterior
sample at every read (SiT's data) -> train -> sample -> decode -> image metrics."""

import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

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
    assert meta["format"] == "posterior" and set(meta["keys"]) == {"mean.npy", "std.npy"}
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


def _tool():
    """tools/encode_latents.py as a module (its main runs in-process: faster than a subprocess)."""
    tool = Path(__file__).parents[1] / "tools" / "encode_latents.py"
    spec = importlib.util.spec_from_file_location("encode_latents", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _members(path) -> dict[str, dict[str, bytes]]:
    """A shard's members grouped by sample key: key -> {extension: bytes}."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return out


def _array(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(data)))


def test_the_encoder_stores_the_posterior_of_each_image_and_of_its_flip(latent_data):
    """mean.npy / std.npy (2, c, h, w): index 0 the image's posterior, 1 its horizontal flip's, both times 0.18215."""
    root, _ = latent_data
    from cbsflow.autoencoders import vae
    from cbsflow.data.shards import resolve_shards

    items = list(_tool().read_source(resolve_shards(str(root / "images"))[0], 16))  # (key, image, label)
    stored = _members(root / "lat" / "latents-train-000000.tar")
    assert sorted(stored) == sorted(key for key, _, _ in items)
    assert all(set(members) == {"mean.npy", "std.npy", "cls"} for members in stored.values())
    images = torch.stack([image for _, image, _ in items])
    autoencoder = vae(str(root / "vae"))
    for flip, batch in enumerate((images, images.flip(-1))):
        mean, std = autoencoder.posterior(batch)
        dist = autoencoder.model.encode(batch).latent_dist  # diffusers' own moments, scaled here
        assert torch.allclose(mean, dist.mean * 0.18215, atol=1e-6)
        assert torch.allclose(std, dist.std * 0.18215, atol=1e-6)
        for name, want in (("mean.npy", mean), ("std.npy", std)):
            got = torch.stack([_array(stored[key][name])[flip] for key, _, _ in items])
            assert torch.allclose(got, want, atol=1e-5), (name, flip)
    assert not torch.allclose(_array(stored[items[0][0]]["mean.npy"])[0], _array(stored[items[0][0]]["mean.npy"])[1])


@pytest.fixture(scope="module")
def one_image(latent_data, tmp_path_factory):
    """A shard holding one encoded image (its members copied from the encoder's output) and its moments."""
    root, _ = latent_data
    key, members = next(iter(_members(root / "lat" / "latents-train-000000.tar").items()))
    folder = tmp_path_factory.mktemp("one")
    with tarfile.open(folder / "one-000000.tar", "w") as tar:
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder, _array(members["mean.npy"]), _array(members["std.npy"])  # (2, 4, 8, 8) each


def _reads(folder, n: int, seed: int = 0, **kw) -> torch.Tensor:
    from cbsflow.data.shards import shards

    ds = shards(str(folder), shape=(4, 8, 8), image_key="npy", shuffle_buffer=0, resampled=False, **kw)
    return next(ds.batches(n, seed=seed))[0]  # one pass over the one-image shard per read


def test_reads_of_one_image_have_its_posterior_mean_and_variance(one_image):
    """2,000 reads: without flips, mean m0 and variance s0^2 (per element); with flips, the even mixture's
    (m0 + m1) / 2 and (s0^2 + s1^2) / 2 + (m0 - m1)^2 / 4."""
    folder, mean, std = one_image
    n = 2000
    mixture = ((mean[0] + mean[1]) / 2, (std[0] ** 2 + std[1] ** 2) / 2 + (mean[0] - mean[1]) ** 2 / 4)
    for flip, (m, var) in ((False, (mean[0], std[0] ** 2)), (True, mixture)):
        x = _reads(folder, n, flip=flip)
        z = (x.mean(0) - m) / (var / n).sqrt()
        assert float(z.abs().max()) < 4.5 and abs(float((z**2).mean()) - 1) < 0.25, flip  # 256 z-scores ~ N(0, 1)
        ratio = x.var(0) / var  # s.d. about sqrt(2 / n) = 0.03 per element
        assert float(ratio.min()) > 0.8 and float(ratio.max()) < 1.2 and abs(float(ratio.mean()) - 1) < 0.02, flip


def test_flips_happen_about_half_the_time_and_a_seed_repeats_its_draws(one_image):
    folder, mean, _ = one_image
    x = _reads(folder, 2000, resample_posterior=False)  # the mean of the image or of its flip, exactly
    is_image, is_flip = ((x == m).flatten(1).all(1) for m in mean)
    assert bool((is_image ^ is_flip).all()) and 0.45 < float(is_flip.float().mean()) < 0.55  # 4.5 s.d.
    assert torch.equal(_reads(folder, 64, seed=3), _reads(folder, 64, seed=3))
    assert not torch.equal(_reads(folder, 64, seed=3), _reads(folder, 64, seed=4))


def test_the_single_latent_format_still_encodes_and_loads_as_stored(latent_data, tmp_path, capsys):
    """--format latent writes one npy latent per image (the older format); the dataset reads it unchanged, with a
    note that it cannot flip or re-sample; a folder never mixes formats and --mean needs --format latent."""
    root, encode = latent_data
    tool = _tool()
    cut = encode.index("--out")
    args = encode[2:cut] + encode[cut + 2:] + ["--out"]  # the fixture's arguments, --out to come
    assert tool.main(args + [str(tmp_path / "single"), "--format", "latent"]) == 0
    meta = json.loads((tmp_path / "single" / "latents.json").read_text())
    assert meta["format"] == "latent" and meta["posterior"] == "sample"
    stored = _members(tmp_path / "single" / "latents-train-000000.tar")
    assert all(set(m) == {"npy", "cls"} for m in stored.values())
    from cbsflow.data.shards import shards

    with pytest.warns(UserWarning, match="one fixed latent per image.*re-encode"):
        ds = shards(str(tmp_path / "single"), shape=(4, 8, 8), num_classes=3, image_key="npy", name_filter="000000",
                    shuffle_buffer=0, resampled=False)
    x, _ = ds.sample(len(stored))
    assert torch.equal(x, torch.stack([_array(m["npy"]) for m in stored.values()]))  # never flipped, never re-drawn
    capsys.readouterr()
    assert tool.main(args + [str(tmp_path / "single")]) == 2  # the posterior format into a latent-format folder
    assert tool.main(args + [str(tmp_path / "new"), "--mean"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "holds the latent format" in err[0] and "--mean applies to --format latent" in err[1]
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("config_file", ["gin/sit_b2_imagenet256.gin", "gin/sit_xl2_imagenet256.gin",
                                         "gin/smoke/latent.gin"])
def test_latent_configs_flip_and_resample_the_posterior_as_sit(config_file, repo_root, monkeypatch):
    import gin

    from cbsflow import config

    monkeypatch.chdir(repo_root)
    config.parse([config_file], [])
    assert gin.query_parameter("shards.image_key") == "npy"
    assert gin.query_parameter("shards.flip") is True and gin.query_parameter("shards.resample_posterior") is True


def test_a_folder_of_images_with_dots_in_their_names_encodes_to_readable_samples(latent_data, tmp_path):
    """WebDataset splits a member's name at its first dot: keys made from file names keep none."""
    from PIL import Image

    from cbsflow.data.shards import shards

    root, _ = latent_data
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (20, 16), (40 * i, 90, 200)).save(tmp_path / "imgs" / c / f"n0{i}.v2.png")
    assert _tool().main(["--folder", str(tmp_path / "imgs"), "--vae-path", str(root / "vae"), "--size", "16",
                         "--out", str(tmp_path / "lat"), "--quiet"]) == 0
    ds = shards(str(tmp_path / "lat"), shape=(4, 8, 8), num_classes=2, image_key="npy", resampled=False)
    x, y = ds.sample(4)
    assert x.shape == (4, 4, 8, 8) and sorted(y.tolist()) == [0, 0, 1, 1] and ds.skip_report()["skipped"] == 0
