"""Sample-quality metrics computed through torch-fidelity: FID, Inception Score, KID, precision/recall.

All metrics share one pipeline: images in [-1, 1] -> uint8 3xHxW -> features from a torch-fidelity feature
extractor (fp32) -> the metric from features. Reference features are cached on disk per
(dataset fingerprint, n_reference, extractor, layer, seed), so a second evaluation never reads the dataset.

Pretrained weights are never downloaded: ``weights_path`` must point at a local file. ``cbsflow-randconv`` is
a weights-free extractor (a fixed random conv net) for offline runs and tests; distances in its feature space
are *not* FID and are reported under other names (``fd_randconv``, ``kd_randconv``, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cbsflow.data.base import dataset_fingerprint
from cbsflow.errors import UserError
from cbsflow.registry import register

if TYPE_CHECKING:
    from torch_fidelity import FeatureExtractorBase

# torch-fidelity (and the torchvision/dynamo stack it pulls in, ~1.5 s) is imported only when a metric of this module is
# built or computes, so that runs without image metrics start without it.

INCEPTION = "inception-v3-compat"
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
OFFLINE_EXTRACTOR = "cbsflow-randconv"
DEFAULT_WEIGHTS_PATH = f"~/.cache/cbsflow/{INCEPTION_WEIGHTS}"
DEFAULT_CACHE_ROOT = "~/.cache/cbsflow/fidelity"


def register_offline_extractor() -> None:
    """Register ``cbsflow-randconv`` with torch-fidelity once (a second registration would raise); called when a
    metric is built, not at import."""
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from cbsflow.metrics.randconv import RandConvFeatures

    if OFFLINE_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(OFFLINE_EXTRACTOR, RandConvFeatures)


class ImageTensors(torch.utils.data.Dataset):
    """A torch Dataset over a uint8 (n, 3, h, w) tensor, returning tensors (what torch-fidelity expects)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def to_uint8_images(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1], (n, c, h, w) with c in {1, 3} -> uint8 (n, 3, h, w); grayscale repeated to 3 channels."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserError(
            f"image metrics need images of shape (n, 1 or 3, H, W) in [-1, 1], got {tuple(x.shape)}; "
            "use a sample-space metric (e.g. nll) for non-image data"
        )
    u8 = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u8.expand(-1, 3, -1, -1).contiguous() if u8.shape[1] == 1 else u8


def extract_features(
    extractor: FeatureExtractorBase, images: torch.Tensor, batch_size: int, cuda: bool
) -> torch.Tensor:
    """Features (n, f) of uint8 images from a one-layer torch-fidelity extractor. Under ``accelerate launch`` every
    process extracts a contiguous share and all of them receive the features of all images, in order."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    from cbsflow.training import process_state

    (layer,) = extractor.get_requested_features_list()
    state = process_state()
    share = images.tensor_split(state.num_processes)[state.process_index] if state.num_processes > 1 else images
    out = get_featuresdict_from_dataset(ImageTensors(share), extractor, batch_size, cuda, True, False)
    features = out[layer].float().cpu()
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        features = torch.cat(gather_object([features]))
    return features


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """One BLAS thread: LAPACK's eigvals is mostly sequential, and OpenBLAS threads fighting torch's OpenMP
    threads made it 10-100x slower on small machines (threadpoolctl comes with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def frechet_distance(features: torch.Tensor, reference: dict[str, Any]) -> float:
    """Fréchet distance between Gaussians fitted to ``features`` and to reference statistics (mu, sigma)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats = fid_features_to_statistics(features.float())
    with _single_threaded_blas():
        return fid_statistics_to_metric(stats, reference, verbose=False)[KEY_METRIC_FID]


def _reference_cache_file(cache_root: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{key['extractor']}-{key['layer']}-n{key['n_reference']}-seed{key['seed']}-{digest}.pt"
    return Path(cache_root).expanduser() / name


def _main_process() -> bool:
    from cbsflow.training import process_state

    return process_state().is_main_process


class _FidelityMetric:
    """Shared pipeline of the torch-fidelity metrics; subclasses set ``metric`` and implement ``compute``.

    ``cache_root``: the folder of cached reference features (keyed by the data's fingerprint, n, extractor, layer and
    seed); ``''`` turns the cache off. ``reference_npz``: an ADM reference batch (or statistics alone) read from a local
    file instead of the dataset. ``protocol``: what the number is comparable with (e.g. "ADM ImageNet-256 reference
    batch, 50k samples"), recorded with it.
    """

    metric = ""  # torch-fidelity's metric key: "fid", "isc", "kid" or "prc"
    needs_reference = True

    def __init__(
        self,
        n_reference: int = 10000,
        feature_extractor: str = INCEPTION,
        weights_path: str = DEFAULT_WEIGHTS_PATH,
        cache_root: str = DEFAULT_CACHE_ROOT,
        batch_size: int = 64,
        reference_npz: str | None = None,
        protocol: str | None = None,
    ):
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        register_offline_extractor()
        if feature_extractor not in FEATURE_EXTRACTORS_REGISTRY:
            raise UserError(
                f"{type(self).__name__}.feature_extractor = {feature_extractor!r} is not a torch-fidelity extractor; "
                f"choose one of: {', '.join(FEATURE_EXTRACTORS_REGISTRY)}"
            )
        self.n_reference = n_reference
        self.feature_extractor = feature_extractor
        self.weights_path = weights_path
        self.cache_root = cache_root
        self.batch_size = batch_size
        self.cuda = torch.cuda.is_available()
        cls = FEATURE_EXTRACTORS_REGISTRY[feature_extractor]
        self.layer = cls.get_default_feature_layer_for_metric(self.metric)
        self._extractor: FeatureExtractorBase | None = None
        self.reference_npz = os.path.expanduser(reference_npz) if reference_npz else None
        self.protocol = protocol
        self._npz_entry: dict[str, Any] | None = None
        if self.reference_npz:
            self._reference_file()  # like the weights: checked when the configuration is built
        if not self.offline:
            self._weights_file()  # fail when the configuration is built, not after hours of training

    @property
    def offline(self) -> bool:
        return self.feature_extractor == OFFLINE_EXTRACTOR

    def name(self, base: str, inception_name: str) -> str:
        """The reported name: ``inception_name`` for Inception features, else ``base`` tagged with the extractor."""
        if self.feature_extractor == INCEPTION:
            return inception_name
        tag = self.feature_extractor.removeprefix("cbsflow-").replace("-", "_")
        return f"{base}_{tag}"

    def extractor(self) -> FeatureExtractorBase:
        """The torch-fidelity extractor for this metric's layer (fp32), checking local weights first."""
        if self._extractor is None:
            from torch_fidelity.utils import create_feature_extractor

            kwargs: dict[str, Any] = {"verbose": False, "feature_extractor_internal_dtype": "float32"}
            if not self.offline:
                kwargs["feature_extractor_weights_path"] = str(self._weights_file())
            self._extractor = create_feature_extractor(self.feature_extractor, [self.layer], cuda=self.cuda, **kwargs)
        return self._extractor

    def _weights_file(self) -> Path:
        path = Path(self.weights_path).expanduser()
        if not path.is_file():
            raise UserError(
                f"{self.feature_extractor} weights not found: {path} — put {path.name} there or set "
                f"`{type(self).__name__}.weights_path = '/path/to/{path.name}'` (gin file or --bind); cbsflow never "
                f"downloads weights (offline alternative, not FID: --bind \"{type(self).__name__}.feature_extractor = "
                f"'{OFFLINE_EXTRACTOR}'\", or the fd_offline metric)"
            )
        return path

    def _reference_file(self) -> dict[str, Any]:
        """The keys of ``reference_npz``: an ADM-style reference batch (``arr_0`` uint8 N x H x W x 3 images, and
        ``mu``/``sigma`` statistics of the full training set) or statistics alone."""
        path, name = self.reference_npz, type(self).__name__
        if not os.path.isfile(path):
            raise UserError(f"{name}.reference_npz: {path} does not exist — put the reference batch there (ADM's "
                            f"{os.path.basename(path)}: openai/guided-diffusion evaluations/README.md) or bind "
                            f"`{name}.reference_npz = '/path/to/it.npz'` (the image configurations: REFERENCE_BATCH); "
                            "cbsflow never downloads it")
        with np.load(path) as f:
            keys = set(f.keys())
        has_stats, has_images = {"mu", "sigma"} <= keys, "arr_0" in keys
        if not (has_stats or has_images) or (not has_images and self.metric in ("kid", "prc")):
            need = "'arr_0' images" if self.metric in ("kid", "prc") else "'mu' and 'sigma' (or 'arr_0' images)"
            raise UserError(f"{type(self).__name__}.reference_npz: {path} has no {need}; its keys: {sorted(keys)}")
        return {"stats": has_stats, "images": has_images}

    def _reference_description(self, dataset: Any) -> str:
        if not self.reference_npz:
            return f"dataset {dataset_fingerprint(dataset)}"
        if getattr(self, "_npz_digest", None) is None:  # hashed once: ADM's 256 px batch is gigabytes
            digest = hashlib.sha256()
            with open(self.reference_npz, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 24), b""):
                    digest.update(chunk)
            self._npz_digest = digest.hexdigest()[:16]
        return f"reference file {self.reference_npz} (sha256 {self._npz_digest})"

    def reference(self, dataset: Any, seed: int) -> tuple[dict[str, Any], bool]:
        """Reference features and statistics (from the disk cache when present) and whether the cache was used.

        With ``reference_npz`` the reference images are the file's ``arr_0`` and, for FID, its ``mu``/``sigma``
        replace the statistics of those features (as ADM's evaluation does with its reference batches).
        """
        from torch_fidelity.metric_fid import fid_features_to_statistics

        if self.reference_npz:
            return self._npz_reference(), False
        fingerprint = dataset_fingerprint(dataset)
        key = {
            "dataset": fingerprint,
            "n_reference": self.n_reference,
            "extractor": self.feature_extractor,
            "layer": self.layer,
            "seed": seed,
        }
        cacheable = " object at 0x" not in fingerprint and bool(self.cache_root)  # cache_root '' turns caching off
        if " object at 0x" in fingerprint:
            warnings.warn(f"{type(dataset).__name__} has no fingerprint(): reference features are not cached")
        path = _reference_cache_file(self.cache_root, key)
        if cacheable and path.is_file():
            return torch.load(path, weights_only=True), True
        x, _ = dataset.sample(self.n_reference, seed)
        features = extract_features(self.extractor(), to_uint8_images(x), self.batch_size, self.cuda)
        stats = fid_features_to_statistics(features)
        entry = {
            "key": key,
            "features": features,
            "mu": torch.from_numpy(stats["mu"]),  # float32
            "sigma": torch.from_numpy(stats["sigma"]),  # float64
        }
        if cacheable and _main_process():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(entry, tmp)
            os.replace(tmp, path)
        return entry, False

    def _npz_reference(self) -> dict[str, Any]:
        """The reference of ``reference_npz``, read once per metric object (the floor's draws reuse it). FID with the
        file's statistics never looks at its images; KID and precision/recall need them."""
        from torch_fidelity.metric_fid import fid_features_to_statistics

        if self._npz_entry is not None:
            return self._npz_entry
        kinds = self._reference_file()
        entry: dict[str, Any] = {"features": torch.empty(0, 0)}
        with np.load(self.reference_npz) as f:
            if kinds["images"] and not (kinds["stats"] and self.metric == "fid"):
                images = torch.from_numpy(np.ascontiguousarray(f["arr_0"])).permute(0, 3, 1, 2).contiguous()
                entry["features"] = extract_features(self.extractor(), images, self.batch_size, self.cuda)
                stats = fid_features_to_statistics(entry["features"])
                entry["mu"], entry["sigma"] = torch.from_numpy(stats["mu"]), torch.from_numpy(stats["sigma"])
            if kinds["stats"]:
                entry["mu"] = torch.from_numpy(np.asarray(f["mu"], dtype=np.float32))
                entry["sigma"] = torch.from_numpy(np.asarray(f["sigma"], dtype=np.float64))
                entry["statistics"] = "the file's mu and sigma"
        self._npz_entry = entry
        return entry

    def __call__(self, *, samples: torch.Tensor, dataset: Any, velocity: Any = None, seed: int = 0) -> dict[str, dict]:
        import torch_fidelity

        features = extract_features(self.extractor(), to_uint8_images(samples), self.batch_size, self.cuda)
        settings: dict[str, Any] = {
            "n_samples": int(samples.shape[0]),
            "feature_extractor": self.feature_extractor,
            "feature_layer": self.layer,
            "weights": None if self.offline else Path(self.weights_path).name,
            "dtype": "float32",
            "torch_fidelity": torch_fidelity.__version__,
        }
        reference = None
        if self.needs_reference:
            reference, _ = self.reference(dataset, seed)
            n_features = int(reference["features"].shape[0])
            settings |= {
                "reference": self._reference_description(dataset),
                "n_reference": n_features if n_features else None,
                "reference_seed": None if self.reference_npz else seed,
            }
            if "statistics" in reference:
                settings["reference_statistics"] = reference["statistics"]
        if self.protocol:
            settings["protocol"] = self.protocol
        if not self.offline and self.feature_extractor != INCEPTION:
            settings["note"] = f"computed in {self.feature_extractor} features, not Inception"
        if self.offline:
            settings["note"] = "random-conv features (cbsflow-randconv): NOT FID/IS/KID, not comparable to papers"
        results = self.compute(features, reference, seed)
        return {name: {"value": float(value), "settings": settings | extra} for name, (value, extra) in results.items()}

    def compute(self, features: torch.Tensor, reference: dict[str, Any] | None, seed: int) -> dict[str, tuple]:
        """``{name: (value, extra settings)}`` from sample features and reference features/statistics."""
        raise NotImplementedError


@register("metric")
class fid(_FidelityMetric):
    """Fréchet Inception Distance (Heusel et al. 2017) against ``n_reference`` dataset samples."""

    metric = "fid"

    def compute(self, features, reference, seed):
        stats = {"mu": reference["mu"].numpy(), "sigma": reference["sigma"].numpy()}
        return {self.name("fd", "fid"): (frechet_distance(features, stats), {})}


@register("metric")
class isc(_FidelityMetric):
    """Inception Score (Salimans et al. 2016), mean over 10 splits; the split std is in the settings."""

    metric = "isc"
    needs_reference = False

    def compute(self, features, reference, seed):
        from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

        out = isc_features_to_metric(features, splits=10, shuffle=True, rng_seed=seed)
        extra = {"splits": 10, "split_std": out[KEY_METRIC_ISC_STD], "rng_seed": seed}
        return {self.name("is", "isc"): (out[KEY_METRIC_ISC_MEAN], extra)}


@register("metric")
class kid(_FidelityMetric):
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD² with a cubic polynomial kernel."""

    metric = "kid"

    def compute(self, features, reference, seed):
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

        real = reference["features"]
        subset = min(1000, features.shape[0], real.shape[0])
        out = kid_features_to_metric(
            features, real, kid_subsets=100, kid_subset_size=subset, rng_seed=seed, verbose=False
        )
        extra = {"subsets": 100, "subset_size": subset, "kernel": "poly3", "subset_std": out[KEY_METRIC_KID_STD]}
        return {self.name("kd", "kid"): (out[KEY_METRIC_KID_MEAN], extra)}


@register("metric")
class prc(_FidelityMetric):
    """Improved precision and recall (Kynkäänniemi et al. 2019), k = 3 nearest-neighbour balls."""

    metric = "prc"

    def compute(self, features, reference, seed):
        from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

        out = prc_features_to_metric(
            features, reference["features"], prc_neighborhood=3, save_cpu_ram=False, verbose=False
        )
        extra = {"neighborhood": 3}
        return {
            self.name("precision", "precision"): (out[KEY_METRIC_PRECISION], extra),
            self.name("recall", "recall"): (out[KEY_METRIC_RECALL], extra),
        }


@register("metric")
class fd_offline(fid):
    """Fréchet distance in fixed random-conv features (``cbsflow-randconv``): weights-free, NOT FID."""

    def __init__(self, n_reference: int = 10000, cache_root: str = DEFAULT_CACHE_ROOT, batch_size: int = 64,
                 reference_npz: str | None = None, protocol: str | None = None):
        super().__init__(n_reference, OFFLINE_EXTRACTOR, "", cache_root, batch_size, reference_npz, protocol)
