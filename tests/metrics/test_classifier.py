"""The 16 px CIFAR-10 classifier metrics: committed weights and their accuracy, Fréchet distances that tell data from
noise, one-line errors for the wrong resolution or a missing file, and gin/cifar16.gin through every stage."""

import json
import os
from pathlib import Path

import pytest
import torch

from cbsflow.errors import UserError
from cbsflow.metrics.classifier import (
    DEFAULT_WEIGHTS,
    WEIGHTS_DIR,
    classifier_fd,
    classifier_is,
    inception_score,
    load_classifier,
    read_split,
)

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"
needs_cifar = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"needs the CIFAR-10 shards in {DATA_DIR}")


@pytest.fixture(scope="module")
def cifar16():
    """The CIFAR-10 test shard read at 16 px through ``shards(resize=True)``, unflipped."""
    from cbsflow.data.shards import shards

    return shards(urls=str(DATA_DIR), shape=(3, 16, 16), resize=True, name_filter="test", num_classes=10, flip=False,
                  shuffle_buffer=200)


WEIGHTS = {16: DEFAULT_WEIGHTS, 8: str(WEIGHTS_DIR / "cifar10_cnn8.pt")}


@pytest.mark.parametrize("size", sorted(WEIGHTS))
def test_committed_weights_are_small_and_described(size):
    path = Path(WEIGHTS[size])
    assert path.is_file() and path.stat().st_size < 2 * 2**20
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["resolution"] == size and record["command"].startswith("python tools/train_classifier.py")
    assert {"test_accuracy", "date", "torch", "train_time_s"} <= set(record)


@needs_cifar
@pytest.mark.parametrize("size", sorted(WEIGHTS))
def test_committed_weights_reach_their_stated_accuracy_on_500_test_images(size):
    model, record = load_classifier(WEIGHTS[size])
    x, y = read_split(str(DATA_DIR), "test", size, limit=500)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert record["resolution"] == size and accuracy > record["test_accuracy"] - 0.06  # 500 images: s.e. ~0.02
    assert accuracy > 0.55


@needs_cifar
def test_shards_resize_reads_cifar10_at_16_px_as_the_classifier_was_trained(cifar16):
    x, y = cifar16.sample(64, seed=0)
    assert x.shape == (64, 3, 16, 16) and y.shape == (64,) and x.min() >= -1 and x.max() <= 1


@needs_cifar
def test_fd_of_data_against_itself_is_small_and_against_noise_large(cifar16):
    metric = classifier_fd(n_reference=500)
    other, _ = cifar16.sample(500, seed=1)
    noise = torch.rand(500, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    same = metric(samples=other, dataset=cifar16, seed=0)["classifier_fd"]
    far = metric(samples=noise, dataset=cifar16, seed=0)["classifier_fd"]
    assert same["settings"]["n_reference"] == 500 and same["settings"]["resolution"] == 16
    assert 0 <= same["value"] < 0.05 * far["value"], (same["value"], far["value"])
    score = classifier_is()(samples=other, dataset=cifar16, seed=0)["classifier_is"]["value"]
    assert 3 < score < 10  # real images: confident and spread over the classes


def test_inception_score_is_one_for_one_class_and_k_for_k_confident_balanced_classes():
    assert inception_score(torch.zeros(8, 10)) == pytest.approx(1.0)
    assert inception_score(torch.eye(10).repeat(3, 1) * 50) == pytest.approx(10.0, rel=1e-6)


class Images16:
    """Fixed random 16 px RGB images in [-1, 1] (no shards needed)."""

    def __init__(self, size=16):
        self.x = torch.rand(64, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def sample(self, n, seed=0):
        return self.x[:n], None

    def fingerprint(self):
        return f"images{self.x.shape[-1]}"


@pytest.mark.parametrize("shape", [(8, 3, 32, 32), (8, 1, 16, 16), (8, 2)])
def test_wrong_resolution_or_shape_is_one_clear_error(shape):
    for metric in (classifier_fd(n_reference=16), classifier_is()):
        with pytest.raises(UserError, match=r"\(n, 3, 16, 16\)") as err:
            metric(samples=torch.zeros(shape), dataset=Images16(), seed=0)
        assert "\n" not in str(err.value) and str(tuple(shape)) in str(err.value)
    with pytest.raises(UserError, match="reference data"):  # data read at another resolution
        classifier_fd(n_reference=16)(samples=torch.zeros(8, 3, 16, 16), dataset=Images16(32), seed=0)
    with pytest.raises(UserError, match=r"\(n, 3, 8, 8\)"):  # the 8 px weights refuse 16 px samples
        classifier_is(weights_path=WEIGHTS[8])(samples=torch.zeros(8, 3, 16, 16), dataset=Images16(), seed=0)


def test_missing_weights_file_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="train_classifier.py") as err:
        classifier_fd(weights_path=str(tmp_path / "none.pt"))
    assert "\n" not in str(err.value)


@needs_cifar
@pytest.mark.parametrize("gin_file, size", [("gin/cifar16.gin", 16), ("gin/cifar16_jit.gin", 16), ("gin/cifar8.gin", 8)])
def test_cifar_configurations_run_every_stage_on_the_cpu(tmp_path, gin_file, size):
    """Both expert families of the 16 px benchmark, the UNet and the small JiT, and the 8 px one (its own weights,
    named by file name alone)."""
    from cbsflow.cli import main

    tiny = ["aux/training.steps = 2", "aux/training.batch_size = 8", "profile.n_points = 3", "profile.n_samples = 8",
            "expert/training.steps = 2", "expert/training.batch_size = 8", "expert/training.warmup_steps = 0",
            "sample.n_samples = 32", "sample.n_steps = 2", "classifier_fd.n_reference = 32",
            "fd_offline.n_reference = 32", "fd_offline.cache_root = ''", "nll.n_points = 4", "nll.steps = 2",
            "evaluate.floor_draws = 1", "shards.shuffle_buffer = 16", f"DATA_DIR = '{DATA_DIR}'"]
    args = ["--gin", gin_file, "--run-dir", str(tmp_path)]
    for binding in tiny:
        args += ["--bind", binding]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert {"classifier_fd", "classifier_is", "fd_randconv", "bpd"} <= set(metrics)
    k = 32 // size  # k x k means of 8-bit levels
    assert metrics["bpd"]["settings"]["bin_width"] == pytest.approx(2 / (k * k * 255))
    assert metrics["classifier_fd"]["settings"]["resolution"] == size and "floor" in metrics["classifier_fd"]
    assert metrics["classifier_fd"]["settings"]["weights"] == f"cifar10_cnn{size}.pt"
    assert os.path.getsize(tmp_path / "samples.npz") > 0
