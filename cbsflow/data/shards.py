"""Image (or latent) datasets read from WebDataset tar shards, and scikit-learn's 8x8 digits for tests."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import tarfile
import warnings
from itertools import count
from typing import Any, Iterator

import braceexpand
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from cbsflow.data.base import Dataset
from cbsflow.errors import UserError
from cbsflow.registry import register
from cbsflow.seeding import derive_seed

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
MAKE_SHARDS_HINT = "make shards with `python tools/make_shards.py --help`"
# The latent posterior format of tools/encode_latents.py: per image, the VAE posterior's mean and std, each (2, c, h, w)
# (index 0 the image, 1 its horizontal flip), already times the VAE's scale; a read draws a flip and mean + std * eps.
POSTERIOR_KEYS = ("mean.npy", "std.npy")
POSTERIOR_STREAM = 0x1A7E  # derive_seed tag of the per-sample generators that draw flips and posterior noise


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers.


def resolve_shards(urls: str) -> list[str]:
    """Expand a brace pattern, glob or directory into the list of shard files it names (.tar / .tar.gz)."""
    found: list[str] = []
    missing: list[str] = []
    for part in braceexpand.braceexpand(os.path.expanduser(str(urls))):
        if os.path.isdir(part):
            found += sorted(p for p in glob.glob(os.path.join(glob.escape(part), "*")) if p.endswith(SHARD_SUFFIXES))
        elif glob.has_magic(part):
            found += sorted(p for p in glob.glob(part) if p.endswith(SHARD_SUFFIXES))
        elif os.path.isfile(part):
            found.append(part)
        else:
            missing.append(part)
    if not found:
        raise UserError(f"shards: no .tar/.tar.gz shard files match {urls!r}; check the path, or {MAKE_SHARDS_HINT}")
    if missing:
        raise UserError(f"shards: {len(missing)} shard file(s) of {urls!r} do not exist (first: {missing[0]}); "
                        f"fix the pattern, or {MAKE_SHARDS_HINT}")
    return list(dict.fromkeys(os.path.abspath(p) for p in found))


def shards_for_rank(paths: list[str], rank: int, world: int) -> list[str]:
    """The shards process ``rank`` of ``world`` reads: every ``world``-th one (all of them if there are too few)."""
    if world <= 1:
        return list(paths)
    if len(paths) < world:
        warnings.warn(f"shards: {len(paths)} shard(s) for {world} processes, so every process reads all shards "
                      f"(shuffled its own way); write more, smaller shards (make_shards.py --maxcount) to avoid this")
        return list(paths)
    return list(paths[rank::world])


def buffer_shuffle(items: Iterator[Any], size: int, gen: torch.Generator) -> Iterator[Any]:
    """Shuffle a stream through a buffer of ``size`` items (``size`` <= 1: pass through)."""
    if size <= 1:
        yield from items
        return
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        i = int(torch.randint(size, (1,), generator=gen))
        yield buf[i]
        buf[i] = item
    order = torch.randperm(len(buf), generator=gen).tolist()
    yield from (buf[i] for i in order)


def decode_image(data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """Encoded image bytes -> float (c, h, w) tensor in [-1, 1]; converts to ``shape``'s channel count."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert(PIL_MODES.get(shape[0], "RGB")))
    x = torch.from_numpy(arr.copy()).reshape(arr.shape[0], arr.shape[1], -1).permute(2, 0, 1)  # (c, h, w)
    return x.float() / 127.5 - 1.0


def resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images (..., c, h, w) resized to ``size`` by area averaging: where h and w are multiples of it, the mean of each
    block (32 -> 16 px averages 2x2 pixels; no thread pool, so fast per image on a busy CPU), else torch's area mode."""
    (h, w), (sh, sw) = x.shape[-2:], tuple(size)
    if (h, w) == (sh, sw):
        return x
    if h % sh == 0 and w % sw == 0:
        return x.unflatten(-1, (sw, w // sw)).unflatten(-3, (sh, h // sh)).mean(dim=(-3, -1))
    return F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(sh, sw), mode="area").reshape(*x.shape[:-2], sh, sw)


def first_image_size(path: str, image_keys: tuple[str, ...]) -> tuple[int, int] | None:
    """(height, width) of the first jpg/png member of one shard, from its header; None if it has none or is
    unreadable (a missing size only withholds bits/dim, it never stops a run)."""
    import tarfile

    from PIL import Image

    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile() and member.name.rsplit(".", 1)[-1].lower() in image_keys and \
                        member.name.rsplit(".", 1)[-1].lower() != "npy":
                    with Image.open(tar.extractfile(member)) as img:
                        return img.size[1], img.size[0]
    except (OSError, tarfile.TarError):
        return None
    return None


def center_crop(img, size: int) -> np.ndarray:
    """A PIL image as uint8 (size, size, 3): the short side resized to ``size`` (bicubic), then the centre cropped
    (ADM's, DiT's and SiT's preparation of ImageNet)."""
    from PIL import Image

    img = img.convert("RGB")
    scale = size / min(img.size)
    img = img.resize((max(size, round(img.size[0] * scale)), max(size, round(img.size[1] * scale))), Image.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def decode_npy(data: bytes) -> torch.Tensor:
    """``.npy`` bytes -> float tensor, unscaled (latents)."""
    return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32))


def is_posterior(sample: dict, image_keys: tuple[str, ...]) -> bool:
    """Whether a raw sample holds posterior moments (``mean.npy`` and ``std.npy``) where latents are read."""
    return "npy" in image_keys and all(k in sample for k in POSTERIOR_KEYS)


def decode_sample(sample: dict, shape: tuple[int, ...], num_classes: int, image_keys: tuple[str, ...],
                  resize: bool = False) -> tuple[torch.Tensor, int, str]:
    """One raw WebDataset sample -> (x, label, kind); raises ValueError if it is unusable. ``resize``: an image of
    another size is resized to ``shape``'s (``resize_image``).

    ``kind`` is ``"image"`` (x in [-1, 1]), ``"latent"`` (one stored latent, the single-latent format) or
    ``"posterior"``: x is then the moments (2 [mean, std], 2 [image, flip], *shape), for ``draw_posterior``.
    """
    if is_posterior(sample, image_keys):
        kind, x = "posterior", torch.stack([decode_npy(sample[k]) for k in POSTERIOR_KEYS])  # (2, 2, c, h, w)
        want = (2, 2, *shape)
    else:
        key = next((k for k in image_keys if k in sample), None)
        if key is None:
            keys = "/".join(image_keys) + (" or mean.npy+std.npy" if "npy" in image_keys else "")
            raise ValueError(f"none of the keys {keys} (has {sorted(k for k in sample if k[0] != '_')})")
        kind = "latent" if key == "npy" else "image"
        x = decode_image(sample[key], shape) if kind == "image" else decode_npy(sample[key])
        x = resize_image(x, tuple(shape[-2:])) if resize and kind == "image" else x
        want = tuple(shape)
    if tuple(x.shape) != want:
        raise ValueError(f"shape {tuple(x.shape)} != {want}")
    label = -1
    if num_classes > 0:
        if "cls" not in sample:
            raise ValueError("missing 'cls' label")
        label = int(sample["cls"].decode().strip()) if isinstance(sample["cls"], bytes) else int(sample["cls"])
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} outside 0..{num_classes - 1}")
    return x, label, kind


def draw_posterior(moments: torch.Tensor, flip: bool, resample: bool, gen: torch.Generator) -> torch.Tensor:
    """One training latent from the posterior moments (2 [mean, std], 2 [image, flip], c, h, w) of ``decode_sample``:
    the flipped image's with probability 1/2 (if ``flip``), then ``mean + std * eps`` (if ``resample``; else the mean).

    SiT's step (willisma/SiT train.py): ``vae.encode(x).latent_dist.sample().mul_(0.18215)`` of a randomly flipped
    image; the stored moments are already times the scale, so this is the same distribution.
    """
    f = int(flip and bool(torch.rand((), generator=gen) < 0.5))
    mean, std = moments[0, f], moments[1, f]  # (c, h, w)
    if not resample:
        return mean
    return mean + std * torch.randn(mean.shape, generator=gen)


def _open_shards(urls: Iterator[dict], handler, tally: "_Tally") -> Iterator[dict]:
    """Open each shard for webdataset's tar expander and close it once read (webdataset's opener never closes);
    ``tally`` learns which shard is being read and when it is done."""
    for src in urls:
        tally.open(src["url"])
        try:
            f = open(src["url"], "rb")
        except OSError as exc:
            handler(exc)
            tally.close()
            continue
        with f:
            if not src["url"].endswith((".gz", ".tgz")) and not _ends_cleanly(f):
                handler(tarfile.ReadError("no end-of-archive marker: the file is truncated"))  # gzip checks its own
            yield {"url": src["url"], "stream": f}
        tally.close()


def _ends_cleanly(f) -> bool:
    """A plain tar ends with two zero blocks; Python's tar reader takes a file cut at a member header for a complete
    archive, so a shard truncated there would lose its tail silently."""
    size = os.fstat(f.fileno()).st_size
    if size < 1024 or size % 512:
        return False
    f.seek(size - 1024)
    tail = f.read(1024)
    f.seek(0)
    return tail == bytes(1024)


class _Tally:
    """One reader's count per shard, over every pass through it: samples read, samples that did not decode, passes
    completed and passes that broke off (a truncated or unreadable shard: its samples after the break are lost)."""

    def __init__(self):
        # url -> [read, undecodable, passes completed, passes broken off, read in the completed passes]
        self.counts: dict[str, list[int]] = {}
        self.current, self.broken_now, self.changed = None, False, False

    def _of(self, url: str) -> list[int]:
        self.changed = True
        return self.counts.setdefault(url, [0, 0, 0, 0, 0])

    def open(self, url: str) -> None:
        self.current, self.broken_now = url, False
        self._of(url)

    def error(self) -> None:
        """A read error while ``current`` is open (per member or of the whole stream): it broke off."""
        self.broken_now = True

    def close(self) -> None:
        entry = self._of(self.current)
        entry[2] += 1
        entry[3] += self.broken_now
        entry[4] = entry[0]

    def read(self, sample: dict) -> dict:
        self._of(sample.get("__url__", self.current))[0] += 1
        return sample

    def undecodable(self, sample: dict) -> None:
        self._of(sample.get("__url__", self.current))[1] += 1

    def snapshot(self) -> dict[str, tuple[int, ...]] | None:
        """The counts if they changed since the last snapshot (sent with a batch to the main process), else None."""
        if not self.changed:
            return None
        self.changed = False
        return {url: tuple(c) for url, c in self.counts.items()}


def skip_report(counts: dict[str, tuple[int, ...]], max_skipped: float) -> dict[str, Any]:
    """Samples read (usable) and skipped, by shard file name, from per-shard counts (``_Tally``); ``shards_done``: how
    many shards were read to their end (or break) at least once; ``per_shard``: the most samples an intact shard gave
    in one pass (0 before one was read to its end).

    A shard that broke off lost the samples after the break; each broken pass is estimated to have lost what a
    complete shard holds (the most any intact shard gave in one pass) less what it gave, at least one sample.
    """
    full = max((c[4] / c[2] for c in counts.values() if c[2] and not c[3]), default=0.0)
    by_shard, estimated, usable = {}, [], 0
    for url, (read, bad, passes, broken, _) in counts.items():
        lost = broken * max(1, round(full - read / passes)) if broken else 0  # a sample cut at the break: in read
        usable += read - bad
        if bad + lost:
            by_shard[os.path.basename(url)] = bad + lost
        if broken:
            estimated.append(os.path.basename(url))
    skipped = sum(by_shard.values())
    return {"samples_read": usable, "skipped": skipped, "fraction": skipped / max(1, usable + skipped),
            "max_skipped": max_skipped, "by_shard": by_shard, "broken_shards": estimated,
            "shards_done": sum(1 for c in counts.values() if c[2]), "per_shard": round(full)}


def _above(report: dict[str, Any], bound: float, n_shards: int) -> bool:
    """Whether the skipped samples already exceed ``bound`` of all the samples a pass over the ``n_shards`` shards
    will have read (estimated once an intact shard was read to its end; else known once every shard was): a bad
    shard read first among a thousand good ones does not stop a run, one of four does."""
    intact = report["shards_done"] - len(report["broken_shards"])
    if not intact and report["shards_done"] < n_shards:
        return False
    total = max(report["samples_read"] + report["skipped"], report["per_shard"] * n_shards)
    return report["skipped"] > bound * total


def _summed(tallies: list[dict[str, tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for counts in tallies:
        for url, c in counts.items():
            out[url] = tuple(a + b for a, b in zip(out.get(url, (0,) * len(c)), c))
    return out


def skipped_record(dataset) -> dict[str, Any] | None:
    """What a stage records of the samples its dataset could not read (``skip_report``), or None for data that is
    never skipped (in-memory datasets). E.g. ``record["skipped_samples"] = skipped_record(dataset)``."""
    report = getattr(dataset, "skip_report", None)
    return report() if callable(report) else None


def _rank_world() -> tuple[int, int]:
    """This process's index and the number of processes (0, 1 when not distributed).

    Accelerate's view, unless torch.distributed was initialized without it (e.g. ``accelerate.debug_launcher``).
    """
    from accelerate import PartialState

    state = PartialState()  # under `accelerate launch` this initializes the process group
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return state.process_index, state.num_processes


# ---------------------------------------------------------------------------------------------------------------------
# The stream read by each DataLoader worker.


class _ShardStream(IterableDataset):
    """Endless batches from one process's shards: per-epoch seeded shard order, split across DataLoader workers.

    Yields ``(x, y, worker, counts)`` where ``counts`` is this worker's ``_Tally`` per shard when it changed (else
    None). ``start`` batches of the whole stream are passed over first without decoding (a resumed run). That replay
    is exact unless a passed-over sample is unusable (it is then counted as if it had been usable).
    """

    def __init__(self, ds: "shards", paths: list[str], batch_size: int, seed: int, rank: int, start: int = 0):
        self.ds, self.paths, self.batch_size, self.seed, self.rank = ds, paths, batch_size, seed, rank
        self.start = start

    def __iter__(self):
        info = get_worker_info()
        n_workers = info.num_workers if info is not None else 1
        # The DataLoader takes batch i from worker i mod W. Resumed at batch `start`, loader worker j plays the part
        # of the uninterrupted run's worker (j + start) mod W (its shards and its generator) and passes over the
        # batches that one had made before `start`.
        worker = ((info.id if info is not None else 0) + self.start) % n_workers
        pass_over = max(0, -(-(self.start - worker) // n_workers)) * self.batch_size  # samples, not decoded
        skipped, reason, tally = 0, "", _Tally()
        xs: list[torch.Tensor] = []
        ys: list[int] = []

        def on_error(exc: Exception) -> bool:  # unreadable tar member or truncated shard: count and go on
            nonlocal skipped, reason
            skipped, reason = skipped + 1, f"{type(exc).__name__}: {exc}"
            tally.error()
            return True

        for epoch in count():
            order = list(range(len(self.paths)))
            if self.ds.resampled:
                order = torch.randperm(len(order), generator=torch.Generator().manual_seed(
                    derive_seed(self.seed, self.rank, epoch))).tolist()
            urls = [{"url": self.paths[i]} for i in order][worker::n_workers]  # this worker's share
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.rank, epoch, worker + 1))
            raw = group_by_keys(tar_file_expander(_open_shards(urls, on_error, tally), handler=on_error),
                                handler=on_error)
            raw = (tally.read(sample) for sample in raw)
            good = 0
            for j, sample in enumerate(buffer_shuffle(raw, self.ds.shuffle_buffer, gen)):
                if pass_over:  # posterior latents draw from their own per-sample generator: nothing to replay
                    pass_over, good = pass_over - 1, good + 1
                    if self._draws_a_flip(sample):
                        torch.rand((), generator=gen)  # the flip draw a decoded image would have taken
                    continue
                try:
                    x, label, kind = decode_sample(sample, self.ds.shape, self.ds.num_classes, self.ds.image_keys,
                                                   self.ds.resize)
                except Exception as exc:  # noqa: BLE001 -- any undecodable sample is skipped and counted
                    skipped, reason = skipped + 1, f"{sample.get('__key__')} in {sample.get('__url__')}: {exc}"
                    tally.undecodable(sample)
                    continue
                good += 1
                xs.append(self._augment(x, kind, gen, (epoch, worker, j)))
                ys.append(label)
                if len(xs) == self.batch_size:
                    y = torch.tensor(ys, dtype=torch.long) if self.ds.num_classes > 0 else None
                    yield torch.stack(xs), y, worker, tally.snapshot()
                    xs, ys = [], []
            if good == 0:
                raise UserError(f"shards: no usable sample in {len(self.paths)} shard(s) of {self.ds.urls!r} "
                                f"({skipped} skipped; last problem: {reason or 'the shards are empty'}); check "
                                f"shape={tuple(self.ds.shape)}, image_key={self.ds.image_key!r}, num_classes")

    def _draws_a_flip(self, sample: dict) -> bool:
        """Whether decoding ``sample`` takes a flip draw from the stream's generator: images do, latents do not."""
        if not self.ds.flip or is_posterior(sample, self.ds.image_keys):
            return False
        return next((k for k in self.ds.image_keys if k in sample), "npy") != "npy"

    def _augment(self, x: torch.Tensor, kind: str, gen: torch.Generator, where: tuple[int, int, int]) -> torch.Tensor:
        """A decoded sample as training sees it: an image flipped at random (the stream's generator), posterior
        moments drawn into a latent by the generator of this sample alone (``where`` = epoch, worker, index in the
        shuffled stream), so a resumed run needs no draws to pass over them; a stored latent as it is."""
        if kind == "posterior":
            own = torch.Generator().manual_seed(derive_seed(self.seed, self.rank, *where, POSTERIOR_STREAM))
            return draw_posterior(x, self.ds.flip, self.ds.resample_posterior, own)
        if kind == "image" and self.ds.flip and torch.rand((), generator=gen) < 0.5:
            return x.flip(-1)
        return x


def _collate_one(batch):
    return batch


# ---------------------------------------------------------------------------------------------------------------------
# Registered datasets.


@register("dataset")
class shards(Dataset):
    """Images (jpg/png, scaled to [-1, 1]) or npy latents with optional ``cls`` labels from WebDataset shards.

    Latents come in two formats, told apart per sample by its keys. The posterior format (``mean.npy`` + ``std.npy``,
    what tools/encode_latents.py writes): every read draws the image or its horizontal flip (``flip``, p = 1/2) and a
    fresh posterior sample ``mean + std * eps`` (``resample_posterior``; False: the mean), as SiT trains. The
    single-latent format (``npy``: one fixed latent per image, ``encode_latents.py --format latent`` and shards written
    before the posterior format) is read as stored, never flipped or re-sampled. ``resize``: images are resized to
    ``shape``'s height and width by area averaging (e.g. CIFAR-10 at 16 px: ``shape = (3, 16, 16)``).
    """

    def __init__(self, urls: str, shape: tuple, num_classes: int = 0, image_key: str = "jpg;png;npy",
                 flip: bool = True, shuffle_buffer: int = 1000, resampled: bool = True, num_workers: int = 0,
                 name_filter: str = "", max_skipped: float = 0.01, resample_posterior: bool = True,
                 resize: bool = False):
        self.urls = str(urls)
        self.resize = bool(resize)
        self.shape = tuple(int(s) for s in shape)
        self.num_classes = int(num_classes)
        self.image_key = image_key
        self.image_keys = tuple(k.strip().lower() for k in image_key.split(";") if k.strip())
        self.flip, self.shuffle_buffer, self.resampled = flip, int(shuffle_buffer), resampled
        self.resample_posterior = bool(resample_posterior)
        self.num_workers = int(num_workers)
        self.paths = [p for p in resolve_shards(self.urls) if name_filter in os.path.basename(p)]
        if not self.paths:
            raise UserError(f"shards: no shard file name under {urls!r} contains {name_filter!r} (shards.name_filter); "
                            f"check the folder or {MAKE_SHARDS_HINT}")
        if not 0 <= max_skipped <= 1:
            raise UserError(f"shards.max_skipped must be a fraction in [0, 1] of the samples read, got {max_skipped}")
        self.max_skipped = float(max_skipped)  # above this fraction of unusable samples the run stops
        self.skipped = 0  # unusable samples (estimated for shards that broke off) in every stream read so far
        self._streams: list[dict[int, dict]] = []  # per ``batches`` iterator: worker -> its latest _Tally counts
        meta = os.path.join(os.path.dirname(self.paths[0]), "latents.json")  # written by tools/encode_latents.py
        self.metadata = json.load(open(meta)) if os.path.exists(meta) else {}
        self._note_single_latents()

    def _note_single_latents(self) -> None:
        """Warn once when latents.json says the shards hold one fixed latent per image but flips or posterior draws
        were asked for: they read as stored (the old format stays readable), which is not SiT's data."""
        fmt = self.metadata.get("format", "latent" if "autoencoder" in self.metadata else None)
        if fmt == "latent" and (self.flip or self.resample_posterior):
            warnings.warn(f"shards: {self.urls!r} holds one fixed latent per image (latents.json: the single-latent "
                          "format), read as stored: no flips, no posterior re-sampling; for SiT's data re-encode with "
                          "tools/encode_latents.py (its default format stores the posterior of both flips)",
                          UserWarning, stacklevel=3)

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3 and self.image_keys != ("npy",)  # npy shards hold latents, not pixels

    @property
    def bin_width(self) -> float | None:
        """The spacing of the values a pixel can take, for bits/dim (docs/math.md, "Likelihood"). 8-bit pixels decoded
        as v / 127.5 - 1: 256 levels 2/255 apart in [-1, 1]. Images averaged down by ``resize`` in whole blocks of
        kh x kw pixels (32 -> 16 px: 2 x 2) are means of kh*kw such levels: a lattice 2 / (255 kh kw) apart (1021
        levels at 16 px), finer than 8 bits, so their bits/dim is of that lattice and not comparable to 8-bit
        numbers. Latents, and sizes that are not whole blocks, are continuous: None, no bits/dim is claimed."""
        if not self.is_image:
            return None
        if not self.resize:
            return 2 / 255
        stored = self.stored_size()
        if stored is None or any(a % b for a, b in zip(stored, self.shape[-2:])):
            return None
        return 2 / (255 * (stored[0] // self.shape[-2]) * (stored[1] // self.shape[-1]))

    def stored_size(self) -> tuple[int, int] | None:
        """(height, width) of the first image in the first shard, as stored (before ``resize``); None if none is read."""
        if not hasattr(self, "_stored_size"):
            self._stored_size = first_image_size(self.paths[0], self.image_keys)
        return self._stored_size

    def fingerprint(self) -> str:
        """A short hash of the resolved shard paths, their sizes and the sample shape (keys cached statistics)."""
        h = hashlib.sha1(repr(self.shape).encode())
        for p in self.paths:
            h.update(f"{p}\0{os.path.getsize(p)}\n".encode())
        return h.hexdigest()[:16]

    def batches(self, batch_size: int, seed: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Endless batches, reproducible for a seed (and process count); each process reads its own shards. The first
        ``start`` batches are passed over without decoding them (a resumed run replays its stream to where it was)."""
        rank, world = _rank_world()
        paths = shards_for_rank(self.paths, rank, world)
        workers = min(self.num_workers, len(paths))  # an idle worker would never yield
        stream = _ShardStream(self, paths, batch_size, seed, rank, start)
        return self._count_skips(DataLoader(stream, batch_size=None, num_workers=workers,
                                            collate_fn=_collate_one, persistent_workers=False), len(paths))

    def skip_report(self) -> dict[str, Any]:
        """Samples read and skipped so far by every stream of this dataset, by shard: what the stages record."""
        return skip_report(_summed([c for stream in self._streams for c in stream.values()]), self.max_skipped)

    def _count_skips(self, loader: DataLoader, n_shards: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """The loader's batches. The workers' counts join the dataset's (``skip_report``); a warning each time the
        skipped samples pass a power of two; above ``max_skipped`` the stream stops with one UserError."""
        per_worker: dict[int, dict] = {}
        self._streams.append(per_worker)
        warned = self.skipped  # the count last reported
        try:
            for x, y, worker, counts in loader:
                if counts is not None:
                    per_worker[worker] = counts
                    report = self.skip_report()
                    self.skipped = report["skipped"]
                    if _above(report, self.max_skipped, n_shards):
                        warned = self.skipped  # the error says it all
                        raise UserError(self._describe(report, stop=True))
                    if self.skipped.bit_length() > warned.bit_length():  # passed a power of two
                        warned = self.skipped
                        warnings.warn(self._describe(report), RuntimeWarning, stacklevel=2)
                yield x, y
        finally:
            if self.skipped != warned:
                warnings.warn(self._describe(self.skip_report()), RuntimeWarning, stacklevel=2)

    def _describe(self, report: dict[str, Any], stop: bool = False) -> str:
        """One line: how many samples were skipped, of how many, and the worst shards."""
        worst = sorted(report["by_shard"].items(), key=lambda kv: -kv[1])
        shards_text = ", ".join(f"{name} ({n}{', broke off' if name in report['broken_shards'] else ''})"
                                for name, n in worst[:5]) + (f" and {len(worst) - 5} more" if len(worst) > 5 else "")
        total = report["samples_read"] + report["skipped"]
        text = (f"shards: skipped {report['skipped']} unusable sample(s) of {total} ({100 * report['fraction']:.1f} %)"
                f" in {self.urls!r}: {shards_text}")
        if not stop:
            return text + " (undecodable, wrong shape, missing key, or lost after a read error)"
        return (f"{text}; that is above shards.max_skipped = {self.max_skipped:g}: replace or remake those shards "
                f"({MAKE_SHARDS_HINT}), drop them with shards.name_filter, or raise shards.max_skipped")


@register("dataset")
class digits(Dataset):
    """scikit-learn's 1,797 8x8 handwritten digits in [-1, 1] (optionally upsampled), offline and tiny."""

    def __init__(self, size: int = 8, conditional: bool = False, flip: bool = False):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.from_numpy(d.images).float().unsqueeze(1) / 8.0 - 1.0  # (b, 1, 8, 8), pixels 0..16
        if size != 8:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
        self.x, self.y = x, torch.from_numpy(d.target).long()
        self.pool_size = len(self.x)
        self.shape = (1, int(size), int(size))
        self.bin_width = 1 / 8 if size == 8 else None  # 17 grey levels 0..16 -> steps of 1/8; resampled: continuous
        self.num_classes = 10 if conditional else 0
        self.flip = flip

    def fingerprint(self) -> str:
        """The data is fixed (scikit-learn's digits), so its identity is its size and labelling."""
        return f"sklearn-digits-{self.shape[-1]}px-{'cond' if self.num_classes else 'uncond'}-flip{int(self.flip)}"

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Endless batches drawn epoch by epoch from seeded permutations."""
        gen = torch.Generator().manual_seed(seed)
        order = torch.empty(0, dtype=torch.long)
        while True:
            while len(order) < batch_size:
                order = torch.cat([order, torch.randperm(len(self.x), generator=gen)])
            idx, order = order[:batch_size], order[batch_size:]
            x = self.x[idx]
            if self.flip:
                mask = torch.rand(batch_size, generator=gen) < 0.5
                x = torch.where(mask[:, None, None, None], x.flip(-1), x)
            yield x, (self.y[idx] if self.num_classes else None)
