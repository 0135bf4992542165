"""Fidelity metrics with the weights-free random-conv extractor: identity, monotonicity, caching, missing weights."""

import pytest
import torch
import torch.nn.functional as F

from cbsflow.errors import UserError
from cbsflow.metrics.fidelity import (
    INCEPTION_WEIGHTS,
    OFFLINE_EXTRACTOR,
    fd_offline,
    fid,
    isc,
    kid,
    prc,
    register_offline_extractor,
    to_uint8_images,
)
from cbsflow.registry import get


class CountingImages:
    """Fixed smooth random images in [-1, 1] that count how often they are sampled."""

    def __init__(self, n=200, channels=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = F.avg_pool2d(torch.randn(n, channels, 32, 32, generator=g), 3, 1, 1)
        self.x = (x / x.abs().amax()).clamp(-1, 1)
        self.calls = 0

    def sample(self, n, seed=0):
        self.calls += 1
        return self.x[:n], None

    def fingerprint(self):
        return f"counting-images-{self.x.shape[1]}ch"


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """KID's numpy matmuls crawl when OpenBLAS threads compete with torch's on a small, busy machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it the tests are only slower
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture
def data():
    return CountingImages()


def noisy(x, level, seed=1):
    return (x + level * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(-1, 1)


def test_distance_of_a_set_to_itself_is_zero(data, tmp_path):
    metric = fd_offline(n_reference=200, cache_root=str(tmp_path))
    out = metric(samples=data.x, dataset=data, velocity=None, seed=0)
    far = metric(samples=noisy(data.x, 0.3), dataset=data, velocity=None, seed=0)
    assert set(out) == {"fd_randconv"}
    assert abs(out["fd_randconv"]["value"]) < 1e-6 * far["fd_randconv"]["value"]


def test_distance_grows_with_noise(data, tmp_path):
    metric = fd_offline(n_reference=200, cache_root=str(tmp_path))
    values = [metric(samples=noisy(data.x, s), dataset=data, velocity=None, seed=0)["fd_randconv"]["value"]
              for s in (0.05, 0.15, 0.4)]
    assert 0 < values[0] < values[1] < values[2]


def test_reference_features_are_cached_on_disk(data, tmp_path):
    first = fd_offline(n_reference=200, cache_root=str(tmp_path))(samples=noisy(data.x, 0.1), dataset=data, seed=0)
    assert data.calls == 1 and len(list(tmp_path.glob("*.pt"))) == 1
    # A fresh metric object (new process, other run) reuses the file and never reads the dataset.
    again = fd_offline(n_reference=200, cache_root=str(tmp_path))(samples=noisy(data.x, 0.1), dataset=data, seed=0)
    assert data.calls == 1
    assert again["fd_randconv"]["value"] == pytest.approx(first["fd_randconv"]["value"])
    # fid/kid/prc with the same extractor share the cached reference.
    kid(n_reference=200, feature_extractor=OFFLINE_EXTRACTOR, cache_root=str(tmp_path))(
        samples=data.x, dataset=data, velocity=None, seed=0
    )
    assert data.calls == 1
    # Another seed is another reference set.
    fd_offline(n_reference=200, cache_root=str(tmp_path))(samples=data.x, dataset=data, seed=1)
    assert data.calls == 2


def test_offline_extractor_is_never_reported_as_inception_metrics(data, tmp_path):
    kwargs = dict(n_reference=200, feature_extractor=OFFLINE_EXTRACTOR, cache_root=str(tmp_path))
    names = set()
    for metric in (fid(**kwargs), kid(**kwargs), prc(**kwargs), isc(**kwargs)):
        out = metric(samples=noisy(data.x, 0.1), dataset=data, velocity=None, seed=0)
        names |= set(out)
        for entry in out.values():
            assert isinstance(entry["value"], float)
            assert "NOT FID" in entry["settings"]["note"]
            assert entry["settings"]["feature_extractor"] == OFFLINE_EXTRACTOR
    assert names == {"fd_randconv", "kd_randconv", "precision_randconv", "recall_randconv", "is_randconv"}
    assert not names & {"fid", "kid", "isc", "precision", "recall"}


def test_settings_say_how_to_reproduce(data, tmp_path):
    out = fd_offline(n_reference=150, cache_root=str(tmp_path))(samples=data.x[:100], dataset=data, seed=3)
    settings = out["fd_randconv"]["settings"]
    assert settings["n_samples"] == 100 and settings["n_reference"] == 150 and settings["reference_seed"] == 3
    assert settings["reference"] == "dataset counting-images-3ch" and settings["feature_extractor"] == OFFLINE_EXTRACTOR


def test_grayscale_is_repeated_to_three_channels():
    x = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    u8 = to_uint8_images(x)
    assert u8.dtype == torch.uint8 and u8.shape == (1, 3, 4, 4)
    assert u8[0, 0, 0, 0] == 0 and u8[0, 2, -1, -1] == 255 and torch.equal(u8[:, 0], u8[:, 1])


def test_non_image_samples_are_a_user_error(data):
    with pytest.raises(UserError, match="shape"):
        fd_offline(n_reference=10)(samples=torch.zeros(10, 2), dataset=data, seed=0)


def test_missing_inception_weights_is_a_user_error(data, tmp_path):
    path = tmp_path / "nowhere" / INCEPTION_WEIGHTS
    with pytest.raises(UserError) as info:  # raised when the metric is built, before any data is read
        fid(n_reference=200, weights_path=str(path), cache_root=str(tmp_path))
    message = str(info.value)
    assert str(path) in message and "fid.weights_path" in message and "\n" not in message
    assert data.calls == 0


def test_registration_is_idempotent_and_metrics_are_registered():
    register_offline_extractor()
    register_offline_extractor()
    for name in ("fid", "isc", "kid", "prc", "fd_offline"):
        assert get(name).kind == "metric"


def test_reference_npz_gives_the_reference_images_or_statistics(tmp_path):
    """An ADM-style reference batch: arr_0 images (N x H x W x 3 uint8) and/or mu, sigma statistics."""
    import numpy as np

    from cbsflow.data.shards import digits
    from cbsflow.errors import UserError
    from cbsflow.metrics.fidelity import fd_offline, prc

    data = digits()
    ref, _ = data.sample(200, seed=3)
    arr_0 = ((ref.expand(-1, 3, -1, -1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "images.npz", arr_0=arr_0)
    samples, _ = data.sample(100, seed=4)
    by_images = fd_offline(reference_npz=str(tmp_path / "images.npz"), cache_root="")(samples=samples, dataset=data)
    value = by_images["fd_randconv"]["value"]
    assert "reference file" in by_images["fd_randconv"]["settings"]["reference"]
    metric = fd_offline(reference_npz=str(tmp_path / "images.npz"), cache_root="")
    entry = metric.reference(data, 0)[0]
    np.savez(tmp_path / "stats.npz", mu=entry["mu"].numpy(), sigma=entry["sigma"].numpy())
    by_stats = fd_offline(reference_npz=str(tmp_path / "stats.npz"), cache_root="")(samples=samples, dataset=data)
    assert by_stats["fd_randconv"]["value"] == pytest.approx(value, rel=1e-5)
    with pytest.raises(UserError, match="has no 'arr_0' images"):
        prc(feature_extractor="cbsflow-randconv", reference_npz=str(tmp_path / "stats.npz"))
    with pytest.raises(UserError, match="does not exist"):
        fd_offline(reference_npz=str(tmp_path / "nope.npz"))


def test_empty_cache_root_caches_nothing(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metric = fd_offline(n_reference=50, cache_root="")
    metric(samples=data.x[:40], dataset=data, seed=0)
    assert metric.reference(data, 0)[1] is False and not list(tmp_path.iterdir())


def test_fid_against_precomputed_reference_statistics_as_adm_reference_batches_hold_them(data, tmp_path, monkeypatch):
    """ADM's reference batches (openai/guided-diffusion evaluations) hold mu/sigma of the whole training set beside
    10k images; FID uses the statistics and never the images, and says so with its protocol."""
    import numpy as np
    import scipy.linalg

    from cbsflow.metrics import fidelity

    original, calls = fidelity.extract_features, []

    def counting(extractor, images, *rest):
        calls.append(images.shape[0])
        return original(extractor, images, *rest)

    extractor = fd_offline(cache_root="").extractor()
    real = original(extractor, to_uint8_images(data.x), 64, False).double().numpy()
    mu, sigma = real.mean(0), np.cov(real, rowvar=False)
    arr_0 = to_uint8_images(noisy(data.x[:20], 0.5, seed=7)).permute(0, 2, 3, 1).numpy()  # images FID must ignore
    np.savez(tmp_path / "VIRTUAL_fake.npz", mu=mu, sigma=sigma, arr_0=arr_0)
    samples = noisy(data.x, 0.1)
    metric = fd_offline(reference_npz=str(tmp_path / "VIRTUAL_fake.npz"), cache_root="", protocol="fake, 200 samples")
    monkeypatch.setattr(fidelity, "extract_features", counting)
    out = metric(samples=samples, dataset=data, seed=0)["fd_randconv"]
    again = metric(samples=samples, dataset=data, seed=0)["fd_randconv"]  # as the floor's draws: the file read once
    assert calls == [200, 200] and data.calls == 0  # the samples' features only: arr_0 is never extracted
    feats = original(extractor, to_uint8_images(samples), 64, False).double().numpy()
    m, s = feats.mean(0), np.cov(feats, rowvar=False)
    expected = ((m - mu) ** 2).sum() + np.trace(s + sigma - 2 * scipy.linalg.sqrtm(s @ sigma).real)
    assert out["value"] == pytest.approx(expected, rel=1e-4) and again["value"] == out["value"]
    settings = out["settings"]
    assert settings["protocol"] == "fake, 200 samples" and settings["reference_statistics"] == "the file's mu and sigma"
    assert settings["n_reference"] is None and "VIRTUAL_fake.npz" in settings["reference"]


def test_a_missing_reference_batch_is_one_line_that_says_where_it_goes(tmp_path):
    path = tmp_path / "VIRTUAL_imagenet256_labeled.npz"
    with pytest.raises(UserError) as info:  # when the metric is built, before any stage runs
        fd_offline(reference_npz=str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "fd_offline.reference_npz" in message
    assert "guided-diffusion" in message and "REFERENCE_BATCH" in message
