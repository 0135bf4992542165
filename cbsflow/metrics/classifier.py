"""Metrics in the features of a small CIFAR-10 classifier the project trains itself at reduced resolution.

``classifier_fd``: Fréchet distance between Gaussians fitted to the classifier's penultimate (pooled, 128-d) features
of the samples and of reference images drawn from the dataset with the metric's seed. ``classifier_is``: an
Inception-Score-like number, exp(E_x KL(p(y|x) || p(y))), from the same classifier's softmax. Neither is FID or IS:
the network is ours, small and low-resolution; the numbers compare models evaluated with the same weights file only.

The network (``SmallCNN``) is trained by ``tools/train_classifier.py`` on the 50k CIFAR-10 training images, area-
downsampled to its resolution exactly as ``shards(resize=True)`` reads them; its weights and a JSON record (test
accuracy, resolution, command, torch version, training time) are committed in ``cbsflow/metrics/weights/``.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cbsflow.data.base import dataset_fingerprint
from cbsflow.errors import UserError
from cbsflow.registry import register

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = str(WEIGHTS_DIR / "cifar10_cnn16.pt")


class SmallCNN(nn.Module):
    """Three conv blocks (two 3x3 conv-BN-ReLU each, 2x2 max-pool between blocks), global average pool, linear head.

    Resolution-agnostic (the pool is global); ``features`` gives the pooled (b, widths[-1]) penultimate features.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        blocks, c_in = [], in_channels
        for i, c_out in enumerate(widths):
            layers = [nn.MaxPool2d(2)] if i else []
            for c in (c_in, c_out):
                layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            blocks.append(nn.Sequential(*layers))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(widths[-1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (b, c, h, w) in [-1, 1] -> penultimate features (b, d)."""
        return self.blocks(x).mean(dim=(2, 3))  # (b, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (b, num_classes)


def read_split(data_dir: str, split: str, size: int, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 images of the ``split`` shards ('train' or 'test') in ``data_dir`` as float (n, 3, size, size) in
    [-1, 1], resized as ``shards(resize=True)`` does (area averaging), and their labels (n,); the first ``limit``."""
    from cbsflow.data.shards import decode_image, resize_image, resolve_shards

    paths = [p for p in resolve_shards(data_dir) if f"-{split}-" in Path(p).name]
    if not paths:
        raise UserError(f"no CIFAR-10 '{split}' shards (names with '-{split}-') in {data_dir}")
    xs, ys = [], []
    for path in paths:  # in the shards' own (shuffled) order
        images, labels = {}, {}
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                key, _, ext = member.name.rpartition(".")
                if ext in ("jpg", "png"):
                    images[key] = tar.extractfile(member).read()
                elif ext == "cls":
                    labels[key] = int(tar.extractfile(member).read().decode().strip())
        for key in list(images)[: None if limit is None else limit - len(xs)]:
            xs.append(decode_image(images[key], (3, 32, 32)))
            ys.append(labels[key])
        if limit is not None and len(xs) >= limit:
            break
    return resize_image(torch.stack(xs), (size, size)), torch.tensor(ys, dtype=torch.long)  # (n, 3, size, size)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] rounded to the 256 levels of 8-bit pixels, as stored samples are (both sides of a metric)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def load_classifier(path: str) -> tuple[SmallCNN, dict[str, Any]]:
    """The classifier of a weights file written by tools/train_classifier.py (eval mode, float32) and its record.
    A bare file name that is not a file here is looked up among the committed weights (``WEIGHTS_DIR``), so a gin
    file can name ``'cifar10_cnn8.pt'`` wherever the command runs."""
    file = Path(path).expanduser()
    if not file.is_file() and file.name == str(path) and (WEIGHTS_DIR / file.name).is_file():
        file = WEIGHTS_DIR / file.name
    if not file.is_file():
        raise UserError(f"classifier weights not found: {file}; train them with `python tools/train_classifier.py` "
                        "or bind `classifier_fd.weights_path = '/path/to/weights.pt'`")
    blob = torch.load(file, map_location="cpu", weights_only=True)
    model = SmallCNN(tuple(blob["widths"]), int(blob["num_classes"]))
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    record = {k: v for k, v in blob.items() if k != "state_dict"}
    record["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    return model.eval(), record


@torch.no_grad()
def classifier_outputs(model: SmallCNN, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (n, d) and logits (n, classes) of images (n, 3, h, w) in [-1, 1], batch by batch."""
    feats, logits = [], []
    for chunk in quantize(x).split(batch_size):
        f = model.features(chunk)
        feats.append(f)
        logits.append(model.head(f))
    return torch.cat(feats), torch.cat(logits)


def gaussian_stats(features: torch.Tensor) -> dict[str, np.ndarray]:
    """Mean (float32) and unbiased covariance (float64) of features (n, d), as ``frechet_distance`` fits its side."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features.float())


def inception_score(logits: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) over the samples (Salimans et al. 2016, one split)."""
    log_p = torch.log_softmax(logits.double(), dim=1)  # (n, classes)
    log_marginal = torch.logsumexp(log_p, dim=0) - np.log(len(log_p))  # (classes,)
    kl = (log_p.exp() * (log_p - log_marginal)).sum(dim=1)  # (n,)
    return float(kl.mean().exp())


def check_images(x: torch.Tensor, resolution: int, what: str) -> None:
    """Refuse anything but RGB images at the classifier's resolution, in one line."""
    if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (resolution, resolution):
        raise UserError(f"{what}: the classifier metrics take RGB images of shape (n, 3, {resolution}, {resolution}) "
                        f"(the weights' resolution), got {tuple(x.shape)}; read the data at {resolution} px "
                        f"(shards.shape = (3, {resolution}, {resolution}), shards.resize = True) or bind weights "
                        "trained at this resolution (tools/train_classifier.py --size)")


class _ClassifierMetric:
    """Shared part of the classifier metrics: the weights (loaded when the configuration is built) and settings."""

    def __init__(self, weights_path: str = DEFAULT_WEIGHTS, batch_size: int = 500):
        self.weights_path = str(weights_path)
        self.batch_size = int(batch_size)
        self.model, self.record = load_classifier(self.weights_path)
        self.resolution = int(self.record["resolution"])

    def settings(self, samples: torch.Tensor) -> dict[str, Any]:
        return {"n_samples": int(samples.shape[0]), "weights": Path(self.weights_path).name,
                "weights_sha256": self.record["sha256"], "resolution": self.resolution,
                "classifier_test_accuracy": self.record.get("test_accuracy"),
                "note": "features of cbsflow's own small CIFAR-10 classifier (SmallCNN): NOT FID/IS, not comparable "
                        "to papers; compare only numbers measured with the same weights file"}


@register("metric")
class classifier_fd(_ClassifierMetric):
    """Fréchet distance in the penultimate features of the project's CIFAR-10 classifier against ``n_reference``
    dataset images drawn with the metric's seed (reference statistics kept in memory per data, n and seed)."""

    def __init__(self, weights_path: str = DEFAULT_WEIGHTS, n_reference: int = 5000, batch_size: int = 500):
        super().__init__(weights_path, batch_size)
        if n_reference < 2:
            raise UserError(f"classifier_fd.n_reference must be >= 2, got {n_reference}")
        self.n_reference = int(n_reference)
        self._reference: dict[tuple, dict[str, np.ndarray]] = {}

    def reference(self, dataset: Any, seed: int) -> dict[str, np.ndarray]:
        key = (dataset_fingerprint(dataset), self.n_reference, seed)
        if key not in self._reference:
            x, _ = dataset.sample(self.n_reference, seed=seed)
            check_images(x, self.resolution, "classifier_fd reference data")
            self._reference[key] = gaussian_stats(classifier_outputs(self.model, x, self.batch_size)[0])
        return self._reference[key]

    def __call__(self, *, samples: torch.Tensor, dataset: Any, velocity: Any = None, seed: int = 0) -> dict:
        from cbsflow.metrics.fidelity import frechet_distance

        check_images(samples, self.resolution, "classifier_fd samples")
        features, _ = classifier_outputs(self.model, samples, self.batch_size)
        value = frechet_distance(features, self.reference(dataset, seed))
        settings = self.settings(samples) | {"n_reference": self.n_reference, "reference_seed": seed,
                                             "reference": f"dataset {dataset_fingerprint(dataset)}"}
        return {"classifier_fd": {"value": float(value), "settings": settings}}


@register("metric")
class classifier_is(_ClassifierMetric):
    """Inception-Score-like exp(E KL(p(y|x) || p(y))) under the project's CIFAR-10 classifier (1 to 10; one split)."""

    def __call__(self, *, samples: torch.Tensor, dataset: Any, velocity: Any = None, seed: int = 0) -> dict:
        check_images(samples, self.resolution, "classifier_is samples")
        _, logits = classifier_outputs(self.model, samples, self.batch_size)
        return {"classifier_is": {"value": inception_score(logits), "settings": self.settings(samples)}}


def write_record(path: Path, record: dict[str, Any]) -> None:
    """The JSON beside a weights file (what it is, how good, how it was made)."""
    path.write_text(json.dumps(record, indent=2) + "\n")
