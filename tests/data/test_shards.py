"""WebDataset shards: writing with tools/make_shards.py, reading back with the `shards` dataset, and `digits`."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cbsflow.data import shards as shards_module
from cbsflow.data.shards import digits, resolve_shards, shards, shards_for_rank, skip_report, skipped_record
from cbsflow.errors import UserError
from cbsflow.registry import get

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "make_shards.py"
CIFAR_TEST = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10-test-000000.tar.gz"  # beside the repo


def _load_tool():
    spec = importlib.util.spec_from_file_location("make_shards", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_shards", module)
    spec.loader.exec_module(module)
    return module


ms = _load_tool()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, cwd="/", timeout=120)


def take(it, n: int) -> list:
    return [next(it) for _ in range(n)]


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory) -> Path:
    """scikit-learn digits written through the functions: 4 gzip shards of <= 500 samples."""
    out = tmp_path_factory.mktemp("digits")
    total, samples = ms.digits_samples(size=8)
    summary = ms.write_shards(samples, str(out), "digits", maxcount=500, total=total, progress=False)
    assert summary.samples == 1797 and len(summary.shards) == 4 and summary.bytes > 0
    return out


def test_registered():
    assert get("dataset.shards").obj is shards
    assert get("dataset.digits").obj is digits


def test_read_digit_shards(digit_shards):
    ds = shards(str(digit_shards / "digits-{000000..000003}.tar.gz"), shape=(1, 8, 8), num_classes=10)
    assert len(ds.paths) == 4
    x, y = next(ds.batches(64, seed=0))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1 and x.max() == 1
    assert y.dtype == torch.long and y.shape == (64,) and 0 <= y.min() and y.max() <= 9
    # Same images as sklearn's (png is lossless; 0..16 -> 0..255 is rounded).
    ref = digits().x
    flat = ref.reshape(len(ref), -1)
    noflip = shards(str(digit_shards), shape=(1, 8, 8), flip=False)
    xb, yb = next(noflip.batches(16, seed=3))
    assert yb is None
    dist = torch.cdist(xb.reshape(16, -1), flat).min(dim=1).values
    assert dist.max() < 0.05


def test_batches_reproducible(digit_shards):
    ds = shards(str(digit_shards / "*.tar.gz"), shape=(1, 8, 8), num_classes=10, shuffle_buffer=200)
    a, b, c = (take(ds.batches(32, seed=s), 40) for s in (0, 0, 1))  # 1280 samples: crosses shard boundaries
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(torch.cat([x for x, _ in a]), torch.cat([x for x, _ in c]))


def test_batches_endless_and_workers(digit_shards):
    ds = shards(str(digit_shards), shape=(1, 8, 8), num_classes=10, num_workers=2, shuffle_buffer=100)
    a = take(ds.batches(256, seed=0), 9)  # 2304 > 1797 samples: second epoch
    b = take(ds.batches(256, seed=0), 9)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))
    labels = torch.cat([y for _, y in a])
    assert set(labels.tolist()) == set(range(10))


def test_cli_digits_and_overwrite(tmp_path):
    out = tmp_path / "d16"
    r = run_cli("--from-digits", "--size", "16", "--out", str(out), "--maxcount", "1000", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "1797 samples in 2 shards" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar.gz", "shard-000001.tar.gz"]
    ds = shards(str(out), shape=(1, 16, 16), num_classes=10)
    x, y = next(ds.batches(8, seed=0))
    assert x.shape == (8, 1, 16, 16) and -1 <= x.min() and x.max() <= 1 and y.max() <= 9

    r = run_cli("--from-digits", "--out", str(out), "--quiet")
    assert r.returncode == 2 and "--force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_npz_roundtrip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)  # NHWC
    labels = rng.integers(0, 5, size=20)
    np.savez(tmp_path / "a.npz", x=images, y=labels)
    out = tmp_path / "npz"
    assert ms.main(["--from-array", str(tmp_path / "a.npz"), "--labels-key", "y", "--out", str(out),
                    "--no-shuffle", "--no-gzip", "--maxcount", "8", "--quiet"]) == 0
    assert "20 samples in 3 shards" in capsys.readouterr().out
    assert all(p.suffix == ".tar" for p in out.iterdir())
    ds = shards(str(out / "shard-{000000..000002}.tar"), shape=(3, 8, 8), num_classes=5,
                flip=False, shuffle_buffer=0, resampled=False)
    x, y = ds.sample(20)
    expect = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (b, c, h, w)
    assert torch.allclose(x, expect) and torch.equal(y, torch.from_numpy(labels))

    # NCHW uint8 gives the same pngs; float arrays become unscaled npy latents.
    n, gen = ms.array_samples(_save(tmp_path / "nchw.npy", images.transpose(0, 3, 1, 2)), shuffle=False)
    assert [s["png"] for s in gen] == [ms.png_bytes(im) for im in images]
    latents = rng.normal(size=(10, 4, 2, 2)).astype(np.float32) * 5
    n, gen = ms.array_samples(_save(tmp_path / "lat.npy", latents), shuffle=False)
    ms.write_shards(gen, str(tmp_path / "lat"), "lat", total=n, progress=False)
    lat = shards(str(tmp_path / "lat"), shape=(4, 2, 2), flip=True, shuffle_buffer=0, resampled=False)
    xl, yl = lat.sample(10)
    assert yl is None and torch.equal(xl, torch.from_numpy(latents))  # never flipped, never scaled


def _save(path: Path, arr: np.ndarray) -> str:
    np.save(path, arr)
    return str(path)


def test_from_folder(tmp_path, capsys):
    src = tmp_path / "src"
    for cls, value in (("cat", 10), ("dog", 200)):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(src / cls / f"{i}.png")
    out = tmp_path / "out"
    assert ms.main(["--from-folder", str(src), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "classes.json").read_text()) == ["cat", "dog"]
    x, y = shards(str(out), shape=(3, 4, 4), num_classes=2).sample(6)
    for xi, yi in zip(x, y):
        assert torch.allclose(xi, torch.full_like(xi, (10, 200)[yi] / 127.5 - 1))
    capsys.readouterr()


@pytest.mark.parametrize("args", [["--from-folder", "/nonexistent/dir"], ["--from-array", "/nonexistent/a.npz"]])
def test_cli_bad_input(tmp_path, capsys, args):
    assert ms.main([*args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "/nonexistent/" in err


def test_corrupt_samples_skipped(tmp_path):
    good = [np.full((4, 4), 17 * i, np.uint8) for i in range(6)]
    members = [(f"{i:04d}.png", png(im)) for i, im in enumerate(good)]
    members += [(f"{i:04d}.cls", b"1") for i in range(6)]
    members += [("bad1.png", b"\x89PNG not really"), ("bad1.cls", b"1"),  # undecodable
                ("bad2.png", png(np.zeros((5, 5), np.uint8))), ("bad2.cls", b"1"),  # wrong shape
                ("bad3.cls", b"1"),  # no image
                ("bad4.png", png(good[0]))]  # no label
    members.sort(key=lambda m: m[0].split(".")[0])  # webdataset groups consecutive members by key
    path = tmp_path / "corrupt-000000.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = shards(str(path), shape=(1, 4, 4), num_classes=2, flip=False, shuffle_buffer=0, resampled=False,
                max_skipped=0.5)
    with pytest.warns(RuntimeWarning, match=r"skipped \d+ unusable") as record:
        it = ds.batches(6, seed=0)  # one epoch per batch; the 4 bad samples come after the good ones
        x, y = take(it, 3)[2]
        it.close()
    assert x.shape == (6, 1, 4, 4) and torch.equal(y, torch.ones(6, dtype=torch.long))
    assert ds.skipped == 8  # 4 per epoch
    # counted as read when taken from the shard, as skipped when decoded: the next pass's first samples are read
    assert [str(w.message).split(" unusable")[0] for w in record] == ["shards: skipped 4", "shards: skipped 8"]
    assert "corrupt-000000.tar (8)" in str(record[-1].message)
    assert skipped_record(ds) == {"samples_read": 18, "skipped": 8, "fraction": 8 / 26, "max_skipped": 0.5,
                                  "by_shard": {"corrupt-000000.tar": 8}, "broken_shards": [], "shards_done": 1,
                                  "per_shard": 10}
    assert skipped_record(digits()) is None  # in-memory data is never skipped


def test_all_corrupt_raises(tmp_path):
    total, samples = ms.digits_samples(size=8)
    ms.write_shards(samples, str(tmp_path), maxcount=2000, total=total, progress=False)
    ds = shards(str(tmp_path), shape=(3, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match="no usable sample"):
            next(ds.batches(4))


def test_no_match_raises(tmp_path):
    pattern = str(tmp_path / "nothing-{000000..000003}.tar.gz")
    with pytest.raises(UserError) as info:
        shards(pattern, shape=(3, 32, 32))
    msg = str(info.value)
    assert pattern in msg and "tools/make_shards.py --help" in msg and "\n" not in msg
    with pytest.raises(UserError, match="nothing"):
        resolve_shards(str(tmp_path / "nothing*"))


def test_resolve_and_fingerprint(digit_shards):
    by_dir, by_glob = resolve_shards(str(digit_shards)), resolve_shards(str(digit_shards / "*.tar.gz"))
    by_brace = resolve_shards(str(digit_shards / "digits-{000000..000003}.tar.gz"))
    assert by_dir == by_glob == by_brace and len(by_dir) == 4
    with pytest.raises(UserError, match="do not exist"):
        resolve_shards(str(digit_shards / "digits-{000000..000009}.tar.gz"))
    a = shards(str(digit_shards), shape=(1, 8, 8))
    assert a.fingerprint() == shards(str(digit_shards / "*"), shape=(1, 8, 8)).fingerprint()
    assert a.fingerprint() != shards(str(digit_shards), shape=(3, 8, 8)).fingerprint()
    assert a.fingerprint() != shards(str(digit_shards / "digits-000000.tar.gz"), shape=(1, 8, 8)).fingerprint()


@pytest.mark.skipif(not CIFAR_TEST.exists(), reason="CIFAR-10 shards not present")
def test_cifar10_test_shard():
    ds = shards(str(CIFAR_TEST), shape=(3, 32, 32), num_classes=10, shuffle_buffer=100)
    x, y = next(ds.batches(128, seed=0))
    assert x.shape == (128, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert 0 <= y.min() and y.max() <= 9 and len(set(y.tolist())) > 5
    assert ds.skipped == 0


# ---------------------------------------------------------------------------------------------------------------------
# Several processes: each rank reads its own shards.


@pytest.fixture(scope="module")
def labelled_by_shard(tmp_path_factory) -> Path:
    """4 shards of 10 samples each whose label is the shard index."""
    out = tmp_path_factory.mktemp("byshard")
    img = png(np.zeros((2, 2), np.uint8))
    samples = ({"__key__": f"{i:04d}", "png": img, "cls": str(i // 10).encode()} for i in range(40))
    ms.write_shards(samples, str(out), maxcount=10, progress=False)
    return out


def test_shards_for_rank():
    paths = [f"s{i}" for i in range(5)]
    parts = [shards_for_rank(paths, r, 2) for r in range(2)]
    assert parts == [["s0", "s2", "s4"], ["s1", "s3"]]
    assert shards_for_rank(paths, 0, 1) == paths
    with pytest.warns(UserWarning, match="shard"):
        assert shards_for_rank(paths[:1], 1, 2) == paths[:1]


def _labels_seen(urls: str, batches: int = 10) -> set[int]:
    ds = shards(urls, shape=(1, 2, 2), num_classes=4, shuffle_buffer=5)
    return {int(v) for _, y in take(ds.batches(8, seed=0), batches) for v in y}


def test_two_ranks_disjoint_monkeypatched(labelled_by_shard, monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setattr(shards_module, "_rank_world", lambda rank=rank: (rank, 2))
        seen.append(_labels_seen(str(labelled_by_shard)))
    assert seen == [{0, 2}, {1, 3}]


def _rank_job(urls: str, out: str) -> None:
    rank, world = shards_module._rank_world()
    Path(out, f"rank{rank}.json").write_text(json.dumps([world, sorted(_labels_seen(urls))]))


def test_two_ranks_disjoint_debug_launcher(labelled_by_shard, tmp_path):
    accelerate = pytest.importorskip("accelerate")
    accelerate.debug_launcher(_rank_job, args=(str(labelled_by_shard), str(tmp_path)), num_processes=2)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results == [[2, [0, 2]], [2, [1, 3]]]


def test_digits_dataset():
    d = digits()
    assert d.shape == (1, 8, 8) and d.num_classes == 0
    x, y = next(d.batches(32, seed=0))
    assert x.shape == (32, 1, 8, 8) and y is None and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, next(d.batches(32, seed=0))[0]) and not torch.equal(x, next(d.batches(32, seed=1))[0])
    big = digits(size=16, conditional=True, flip=True)
    x, y = big.sample(2000, seed=0)
    assert big.shape == (1, 16, 16) and big.num_classes == 10 and x.shape == (2000, 1, 16, 16)
    assert y.dtype == torch.long and set(y.tolist()) == set(range(10)) and x.min() >= -1 and x.max() <= 1


def _imagenet_part(path, labels, seed, side=64):
    """A part in the downsampled-ImageNet format: uint8 rows of C x H x W pixels, labels 1..1000, a mean image."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 256, size=(n, 3, side, side), dtype=np.uint8)
    np.savez(path, data=images.reshape(n, -1), labels=labels, mean=images.reshape(n, -1).mean(0))
    return images, np.asarray(labels)


def test_imagenet_npz_parts_convert_by_one_glob(tmp_path, capsys):
    a, la = _imagenet_part(tmp_path / "Imagenet64_train_part1.npz", [1000, 1, 17, 500, 999], 0)
    b, lb = _imagenet_part(tmp_path / "Imagenet64_train_part2.npz", [2, 3, 4, 640], 1)
    out = tmp_path / "in64"
    assert ms.main(["--from-imagenet-npz", str(tmp_path / "Imagenet64_train_part*.npz"), "--out", str(out),
                    "--prefix", "imagenet64-train", "--no-shuffle", "--quiet"]) == 0
    assert "9 samples in 1 shards" in capsys.readouterr().out
    ds = shards(str(out), shape=(3, 64, 64), num_classes=1000, name_filter="train", shuffle_buffer=1, flip=False)
    got = {}
    for x, y in ds.batches(9, seed=0):
        for img, label in zip(x, y):
            got[int(label)] = img
        break
    expected = np.concatenate([a, b]).astype(np.float64) / 127.5 - 1  # CHW rows, as the shards dataset returns them
    labels = np.concatenate([la, lb]) - 1  # 1..1000 -> 0..999
    assert set(got) == set(labels.tolist()) and 999 in got and 0 in got
    for label, img in got.items():
        i = int(np.flatnonzero(labels == label)[0])
        np.testing.assert_allclose(img.numpy(), expected[i], atol=1e-6)


def test_imagenet_npz_bad_input_is_one_line(tmp_path, capsys):
    assert ms.main(["--from-imagenet-npz", str(tmp_path / "nothing*.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "matches no file" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", data=np.zeros((2, 12288), np.uint8), labels=[0, 5])
    assert ms.main(["--from-imagenet-npz", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "1..1000" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_passes_over_its_first_batches_exactly(digit_shards, workers):
    """batches(start=k) is the stream without its first k batches (flips included): a resumed run sees what an
    uninterrupted one would have seen from that step on."""
    ds = shards(str(digit_shards), shape=(1, 8, 8), num_classes=10, num_workers=workers, shuffle_buffer=100)
    assert_resume_replays(ds, batch=64, seed=5, start=5, n=4)


def assert_resume_replays(ds, batch: int, seed: int, start: int, n: int) -> None:
    """The n batches of ds.batches(start=start) equal the uninterrupted stream's batches start ... start + n - 1."""
    whole = take(iter(ds.batches(batch, seed=seed)), start + n)[start:]
    resumed = take(iter(ds.batches(batch, seed=seed, start=start)), n)
    assert len(resumed) == n
    for (x, y), (x2, y2) in zip(whole, resumed):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_the_bin_width_of_8_bit_shards_is_their_decoded_pixel_spacing(digit_shards):
    """bits/dim use the spacing of the decoded values: 8-bit pixels v / 127.5 - 1 are 2/255 apart."""
    ds = shards(str(digit_shards), shape=(1, 8, 8), num_classes=10, flip=False)
    x, _ = next(iter(ds.batches(512, seed=0)))
    levels = torch.unique(x.double())
    steps = torch.round((levels - levels[0]) / ds.bin_width)
    assert torch.allclose(levels - levels[0], steps * ds.bin_width, atol=1e-6)  # every value sits on the 2/255 grid
    assert ds.bin_width == pytest.approx(2 / 255)


def _digit_shard(path: Path, n: int, gz: bool = True) -> None:
    """n 8x8 labelled digit-like PNG samples in one shard."""
    rng = np.random.default_rng(len(path.name))
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for i in range(n):
            for name, data in ((f"{i:04d}.png", png(rng.integers(0, 256, (8, 8), dtype=np.uint8))),
                               (f"{i:04d}.cls", str(i % 10).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def damaged_shards(tmp_path) -> Path:
    """Four shards of 40 samples: -1 cut in half (gzip), -2 replaced by random bytes, -3 a plain tar cut at a member
    header (which Python's tar reader alone takes for a complete archive)."""
    out = tmp_path / "damaged"
    out.mkdir()
    for i in range(4):
        _digit_shard(out / f"d-{i:06d}.tar{'' if i == 3 else '.gz'}", 40, gz=i != 3)
    cut = out / "d-000001.tar.gz"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    noise = out / "d-000002.tar.gz"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, noise.stat().st_size, dtype=np.uint8).tobytes())
    plain = out / "d-000003.tar"
    plain.write_bytes(plain.read_bytes()[: 2 * 1024 * 30])  # 30 samples: 2 members of a header and one data block
    return out


def test_skipped_samples_are_counted_as_samples_and_named_by_shard(damaged_shards):
    """Per pass: -2 loses all its 40 samples, -3 its last 10, -1 about half; the record names exactly those."""
    ds = shards(str(damaged_shards), shape=(1, 8, 8), num_classes=10, flip=False, max_skipped=1.0,
                resampled=False, shuffle_buffer=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = ds.batches(10, seed=0)
        take(it, 40)  # several passes over the ~100 usable samples
        it.close()
    record = skipped_record(ds)
    assert set(record["by_shard"]) == set(record["broken_shards"]) == {"d-000001.tar.gz", "d-000002.tar.gz",
                                                                         "d-000003.tar"}
    passes = record["by_shard"]["d-000002.tar.gz"] // 40
    assert passes >= 2 and record["by_shard"]["d-000002.tar.gz"] == 40 * passes
    assert record["by_shard"]["d-000003.tar"] in (10 * passes, 10 * (passes + 1))
    assert 0.35 < record["fraction"] < 0.55 and record["samples_read"] >= 100  # ~72 of 160 per pass


def test_above_max_skipped_the_stream_stops_with_one_line_naming_the_shards(damaged_shards):
    ds = shards(str(damaged_shards), shape=(1, 8, 8), num_classes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing besides the error
        with pytest.raises(UserError) as info:
            take(ds.batches(10, seed=0), 40)
    msg = str(info.value)
    assert "\n" not in msg and "shards.max_skipped = 0.01" in msg
    assert "d-000002.tar.gz (40, broke off)" in msg and "d-000001.tar.gz" in msg
    with pytest.raises(UserError, match="max_skipped"):
        shards(str(damaged_shards), shape=(1, 8, 8), max_skipped=2)


def test_the_skip_report_estimates_what_a_broken_shard_lost():
    """[read, undecodable, passes, broken passes, read in completed passes] per shard: a complete shard gave 50 per
    pass, so one that broke off after 20 lost 30 per pass; an unreadable one that gave nothing lost 50."""
    counts = {"/a/s-0.tar": (100, 2, 2, 0, 100), "/a/s-1.tar": (40, 0, 2, 2, 40), "/a/s-2.tar": (0, 0, 1, 1, 0)}
    report = skip_report(counts, 0.01)
    assert report["by_shard"] == {"s-0.tar": 2, "s-1.tar": 60, "s-2.tar": 50}
    assert report["samples_read"] == 138 and report["skipped"] == 112
    assert report["fraction"] == pytest.approx(112 / 250) and report["broken_shards"] == ["s-1.tar", "s-2.tar"]


def test_one_bad_shard_among_many_good_ones_does_not_stop_a_run():
    """The bound applies to a whole pass: a bad shard read first is judged against what every shard will give."""
    def report(done, broken, per_shard, read, skipped):
        return {"shards_done": done, "broken_shards": ["s"] * broken, "per_shard": per_shard, "samples_read": read,
                "skipped": skipped}

    assert not shards_module._above(report(1, 1, 0, 0, 1), 0.01, 1000)  # nothing intact read yet
    assert not shards_module._above(report(2, 1, 500, 500, 500), 0.01, 1000)  # 500 of ~500,000
    assert shards_module._above(report(2, 1, 500, 500, 500), 0.01, 4)  # 500 of ~2,000
    assert shards_module._above(report(1, 1, 0, 0, 1), 0.01, 1)  # the only shard is unreadable


def test_a_run_on_damaged_shards_stops_or_records_what_it_skipped(damaged_shards, tmp_path):
    """The CLI: above shards.max_skipped one error line and exit 2; below it, metrics.json says what was skipped."""
    from cbsflow.cli import main

    data = ["--gin", str(ROOT / "gin/smoke/unet.gin"), "--bind", "DATASET = @shards()",
            "--bind", f"shards.urls = '{damaged_shards}'", "--bind", "shards.shape = (1, 8, 8)",
            "--bind", "shards.num_classes = 10", "--bind", "fd_offline.n_reference = 64"]
    proc = subprocess.run([sys.executable, str(ROOT / "tools/run.py"), *data, "--run-dir", str(tmp_path / "stop")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: shards: skipped"), proc.stderr[-2000:]
    assert "d-000002.tar.gz" in proc.stderr.strip().splitlines()[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*data, "--bind", "shards.max_skipped = 1.0", "--run-dir", str(tmp_path / "run")]) == 0
    for artifact in ("metrics.json", "checkpoints/train.json"):
        record = json.loads((tmp_path / "run" / artifact).read_text())["skipped_samples"]
        assert record["skipped"] > 0 and "d-000002.tar.gz" in record["by_shard"], artifact


# ---------------------------------------------------------------------------------------------------------------------
# Latents in the posterior format (tools/encode_latents.py): a flip and a posterior sample drawn at every read.


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _posterior_shard(path: Path, mean: np.ndarray, std: np.ndarray, labels=None) -> None:
    """A plain tar of posterior-format samples: ``mean``/``std`` (n, 2, c, h, w), index 1 of axis 1 the flip."""
    with tarfile.open(path, "w") as tar:
        for i in range(len(mean)):
            members = [(f"{i:05d}.mean.npy", _npy(mean[i])), (f"{i:05d}.std.npy", _npy(std[i]))]
            members += [] if labels is None else [(f"{i:05d}.cls", str(labels[i]).encode())]
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def one_posterior(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """One image's posterior (2 flips, 2 x 2 x 2 latents): the flip's mean far from the image's, distinct stds."""
    mean = np.stack([np.full((2, 2, 2), 3.0), np.full((2, 2, 2), -3.0)]).astype(np.float32)  # (2, c, h, w)
    mean += np.arange(8, dtype=np.float32).reshape(2, 2, 2) / 8
    std = np.stack([np.full((2, 2, 2), 0.5), np.full((2, 2, 2), 0.25)]).astype(np.float32)
    _posterior_shard(tmp_path / "post-000000.tar", mean[None], std[None])
    return tmp_path, mean, std


def _draws(folder: Path, n: int, **kw) -> torch.Tensor:
    """``n`` reads of a one-sample shard: every read a new pass (epoch) over it."""
    return next(shards(str(folder), shape=(2, 2, 2), shuffle_buffer=0, resampled=False, **kw).batches(n))[0]


def test_a_posterior_latent_is_a_flip_with_probability_half_then_mean_plus_std_eps(one_posterior):
    """2,000 reads of one image: the flip about half the time, each flip's draws with its posterior mean and std."""
    folder, mean, std = one_posterior
    x = _draws(folder, 2000)  # (n, c, h, w)
    flipped = x.mean(dim=(1, 2, 3)) < 0  # the flip's mean is -3 + ..., the image's +3 + ...
    assert 0.45 < float(flipped.float().mean()) < 0.55  # 4.5 s.d. of a fair coin at n = 2,000
    for f, group in ((0, x[~flipped]), (1, x[flipped])):
        m, s = torch.from_numpy(mean[f]), torch.from_numpy(std[f])
        z = (group.mean(0) - m) / (s / len(group) ** 0.5)
        assert float(z.abs().max()) < 4.5, f
        assert torch.allclose(group.var(0) / s**2, torch.ones_like(s), atol=0.2), f  # s.d. of the ratio ~0.045


def test_posterior_options_give_the_image_only_or_the_mean_only(one_posterior):
    folder, mean, std = one_posterior
    assert (_draws(folder, 400, flip=False).mean(dim=(1, 2, 3)) > 0).all()  # never the flip
    x = _draws(folder, 400, resample_posterior=False)  # exactly one of the two means
    is_image, is_flip = ((x == torch.from_numpy(m)).flatten(1).all(1) for m in mean)
    assert (is_image | is_flip).all() and 0.35 < float(is_image.float().mean()) < 0.65


@pytest.fixture
def posterior_shards(tmp_path) -> Path:
    """Three shards of 30 labelled posterior samples with random moments."""
    rng = np.random.default_rng(1)
    for k in range(3):
        mean = rng.normal(size=(30, 2, 2, 2, 2)).astype(np.float32)
        std = rng.uniform(0.1, 1.0, size=(30, 2, 2, 2, 2)).astype(np.float32)
        _posterior_shard(tmp_path / f"post-{k:06d}.tar", mean, std, labels=rng.integers(0, 3, 30))
    return tmp_path


def test_posterior_draws_repeat_for_a_seed_and_differ_between_seeds(posterior_shards):
    ds = shards(str(posterior_shards), shape=(2, 2, 2), num_classes=3, shuffle_buffer=16)
    a, b = take(iter(ds.batches(16, seed=4)), 3), take(iter(ds.batches(16, seed=4)), 3)
    assert all(torch.equal(x, x2) and torch.equal(y, y2) for (x, y), (x2, y2) in zip(a, b))
    other = take(iter(ds.batches(16, seed=5)), 3)
    assert not all(torch.equal(x, x2) for (x, _), (x2, _) in zip(a, other))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_posterior_stream_replays_flips_and_noise_exactly(posterior_shards, workers):
    """batches(start=k) of posterior latents (each sample's flip and eps from its own seeded generator) is the
    uninterrupted stream from batch k on, bit for bit."""
    ds = shards(str(posterior_shards), shape=(2, 2, 2), num_classes=3, num_workers=workers, shuffle_buffer=20)
    assert_resume_replays(ds, batch=16, seed=7, start=7, n=5)


def test_posterior_samples_of_the_wrong_shape_stop_the_stream_naming_both_shapes(posterior_shards):
    ds = shards(str(posterior_shards), shape=(2, 4, 4), num_classes=3, shuffle_buffer=0)
    with pytest.raises(UserError, match=r"shape \(2, 2, 2, 2, 2\) != \(2, 2, 2, 4, 4\)"):
        next(ds.batches(4))


@pytest.mark.parametrize("stored, read, levels_per_bin", [(8, 8, 1), (8, 4, 4), (12, 4, 9), (8, 6, None)])
def test_bin_width_is_the_lattice_the_pixels_lie_on(tmp_path, stored, read, levels_per_bin):
    """8-bit pixels are 2/255 apart; averaged down in whole k x k blocks (``resize``) they are means of k^2 levels,
    2/(255 k^2) apart, which bits/dim counts; a size that is not whole blocks is continuous (no bits/dim)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, stored, stored, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    n, gen = ms.array_samples(str(tmp_path / "a.npy"), shuffle=False)
    ms.write_shards(gen, str(tmp_path / "s"), "s", total=n, progress=False)
    ds = shards(str(tmp_path / "s"), shape=(3, read, read), resize=read != stored, flip=False, shuffle_buffer=0,
                resampled=False)
    assert ds.stored_size() == (stored, stored)
    if levels_per_bin is None:
        assert ds.bin_width is None
        return
    assert ds.bin_width == pytest.approx(2 / (255 * levels_per_bin))
    x, _ = ds.sample(16)
    steps = (x + 1) / ds.bin_width  # whole numbers of bins from -1
    assert (steps - steps.round()).abs().max() < 1e-3
    if levels_per_bin > 1:  # finer than 8 bits: more values than 8-bit pixels can take
        assert len(torch.unique(steps.round())) > 256
