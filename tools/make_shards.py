"""Write WebDataset shards (png/jpg/npy + cls) from an image folder, a numpy array file, the downsampled-ImageNet
release, or scikit-learn's digits.

Examples:
    python tools/make_shards.py --from-folder photos/ --out data/photos --prefix photos-train
    python tools/make_shards.py --from-folder imagenet/train --center-crop 256 --out data/in256 --prefix in256-train
    python tools/make_shards.py --from-array latents.npz --labels-key y --out data/latents --no-gzip
    python tools/make_shards.py --from-imagenet-npz 'Imagenet64_train_part*.npz' --out data/imagenet64 --prefix imagenet64-train
    python tools/make_shards.py --from-imagenet-npz Imagenet64_val_data.npz --out data/imagenet64 --prefix imagenet64-val
    python tools/make_shards.py --from-digits --size 16 --out data/digits --maxcount 500
Read them back with the ``shards`` dataset: urls="OUT/PREFIX-{000000..N}.tar.gz" (or just OUT).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from cbsflow.errors import UserError  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
Sample = dict  # {"__key__": str, "png"/"jpg"/"npy": bytes, "cls": bytes}


@dataclass
class Summary:
    samples: int
    shards: list[str]
    bytes: int

    def line(self, out: str) -> str:
        return f"wrote {self.samples} samples in {len(self.shards)} shards ({self.bytes:,} bytes) to {out}"


# ---------------------------------------------------------------------------------------------------------------------
# Encoding.


def png_bytes(img: np.ndarray) -> bytes:
    """uint8 HW or HWC (C = 1, 3, 4) array -> PNG bytes."""
    from PIL import Image

    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def to_nhwc(images: np.ndarray) -> np.ndarray:
    """uint8 images NHW, NHWC or NCHW (C = 1, 3, 4) -> NHWC."""
    if images.ndim == 3:
        return images[..., None]
    if images.ndim != 4:
        raise UserError(f"make_shards: image array has shape {images.shape}; "
                        f"expected N×H×W, N×H×W×C or N×C×H×W")
    if images.shape[-1] in (1, 3, 4):
        return images
    if images.shape[1] in (1, 3, 4):
        return images.transpose(0, 2, 3, 1)
    raise UserError(f"make_shards: cannot tell the channel axis of an image array of shape {images.shape}; "
                    f"store it as N×H×W×C or N×C×H×W with C in 1, 3, 4")


def _order(n: int, shuffle: bool, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)


# ---------------------------------------------------------------------------------------------------------------------
# Sources: each returns (number of samples, iterator of samples).


def folder_samples(folder: str, shuffle: bool = True, seed: int = 0,
                   crop: int | None = None) -> tuple[int, Iterator[Sample], list[str]]:
    """Images in one subfolder per class (class index = sorted subfolder order); also returns the class names.
    With ``crop``, every image is resized and centre-cropped to crop x crop (ADM's ImageNet preparation) as png."""
    if not os.path.isdir(folder):
        raise UserError(f"make_shards: --from-folder {folder!r} is not a directory")
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    items = [(os.path.join(folder, c, f), i) for i, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(folder, c))) if f.lower().endswith(IMAGE_SUFFIXES)]
    if not items:
        raise UserError(f"make_shards: no images ({', '.join(IMAGE_SUFFIXES)}) in class subfolders of {folder!r}; "
                        f"expected {folder}/<class name>/<image>")

    def gen() -> Iterator[Sample]:
        for n, j in enumerate(_order(len(items), shuffle, seed)):
            path, label = items[j]
            ext = os.path.splitext(path)[1].lower()
            if crop:
                from PIL import Image

                from cbsflow.data.shards import center_crop

                with Image.open(path) as im:
                    data, key = png_bytes(center_crop(im, crop)), "png"
            elif ext in (".png", ".jpg", ".jpeg"):
                with open(path, "rb") as f:
                    data, key = f.read(), ("png" if ext == ".png" else "jpg")
            else:  # other formats are re-encoded losslessly
                from PIL import Image

                with Image.open(path) as im:
                    data, key = png_bytes(np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB"))), "png"
            yield {"__key__": f"{n:08d}", key: data, "cls": str(label).encode()}

    return len(items), gen(), classes


def array_samples(path: str, images_key: str | None = None, labels_key: str | None = None,
                  shuffle: bool = True, seed: int = 0) -> tuple[int, Iterator[Sample]]:
    """uint8 images (-> png) or float arrays (-> npy latents) from a .npy or .npz file, labels from ``labels_key``."""
    if not os.path.isfile(path):
        raise UserError(f"make_shards: --from-array {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is a user error here
        raise UserError(f"make_shards: cannot read {path!r} as .npy/.npz ({exc})") from None
    labels = None
    if isinstance(loaded, np.ndarray):
        if labels_key:
            raise UserError(f"make_shards: --labels-key needs an .npz file; {path!r} is a single .npy array")
        data = loaded
    else:
        keys = list(loaded.keys())
        if labels_key is not None and labels_key not in keys:
            raise UserError(f"make_shards: --labels-key {labels_key!r} not in {path!r} (keys: {', '.join(keys)})")
        candidates = [k for k in keys if k != labels_key]
        key = images_key or next((k for k in ("x", "images", "data", "arr_0") if k in candidates), None)
        if key is None and len(candidates) == 1:
            key = candidates[0]
        if key not in keys:
            raise UserError(f"make_shards: say which array of {path!r} holds the data with --images-key "
                            f"(keys: {', '.join(keys)})")
        data = loaded[key]
        labels = loaded[labels_key] if labels_key else None
    if labels is not None and len(labels) != len(data):
        raise UserError(f"make_shards: {len(labels)} labels for {len(data)} samples in {path!r}")
    if data.dtype == np.uint8:
        data = to_nhwc(data)
    elif not np.issubdtype(data.dtype, np.floating):
        raise UserError(f"make_shards: array dtype {data.dtype} in {path!r}; use uint8 images or float latents")

    def gen() -> Iterator[Sample]:
        for n, j in enumerate(_order(len(data), shuffle, seed)):
            sample = {"__key__": f"{n:08d}"}
            if data.dtype == np.uint8:
                sample["png"] = png_bytes(data[j])
            else:
                sample["npy"] = npy_bytes(data[j])
            if labels is not None:
                sample["cls"] = str(int(labels[j])).encode()
            yield sample

    return len(data), gen()


def imagenet_npz_samples(pattern: str, shuffle: bool = True, seed: int = 0) -> tuple[int, Iterator[Sample]]:
    """The downsampled-ImageNet release (Chrabaszcz et al., 2017): .npz parts whose ``data`` rows are uint8 C x H x W
    images flattened (12,288 = 3 x 64 x 64 for ImageNet-64) and whose ``labels`` run 1..1000; every part matching the
    glob, read one at a time (shuffled within a part), labels mapped to 0..999."""
    parts = sorted(glob.glob(os.path.expanduser(pattern)))
    if not parts:
        raise UserError(f"make_shards: --from-imagenet-npz {pattern!r} matches no file; give the parts' path or a glob "
                        "such as 'Imagenet64_train_part*.npz'")
    sizes = []
    for part in parts:
        with np.load(part, allow_pickle=False) as f:
            if "data" not in f or "labels" not in f:
                raise UserError(f"make_shards: {part} has no 'data' and 'labels' arrays (keys: {', '.join(f.keys())}); "
                                "expected a downsampled-ImageNet .npz part")
            labels = np.asarray(f["labels"])
        if labels.min() < 1 or labels.max() > 1000:
            raise UserError(f"make_shards: {part} has labels in {labels.min()}..{labels.max()}; the downsampled-ImageNet "
                            "release numbers classes 1..1000")
        sizes.append(len(labels))

    def gen() -> Iterator[Sample]:
        n = 0
        for i, part in enumerate(parts):
            with np.load(part, allow_pickle=False) as f:
                data, labels = np.asarray(f["data"]), np.asarray(f["labels"]).astype(np.int64) - 1
            side = int(round((data.shape[1] / 3) ** 0.5))
            if data.dtype != np.uint8 or data.ndim != 2 or 3 * side * side != data.shape[1]:
                raise UserError(f"make_shards: {part}: 'data' must be uint8 rows of 3 x S x S pixels, got "
                                f"{data.dtype} {data.shape}")
            images = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)  # (n, S, S, 3)
            for j in _order(len(images), shuffle, seed + i):
                yield {"__key__": f"{n:08d}", "png": png_bytes(images[j]), "cls": str(int(labels[j])).encode()}
                n += 1

    return sum(sizes), gen()


def digits_images(size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (n, size, size) grayscale images and int labels: the `digits` dataset's own
    images (and resampling), mapped from [-1, 1] to 0..255."""
    from cbsflow.data.shards import digits

    data = digits(size=size, conditional=True)
    x = ((data.x[:, 0].double() + 1) * 127.5).numpy()
    return np.clip(np.round(x), 0, 255).astype(np.uint8), data.y.numpy().astype(np.int64)


def digits_samples(size: int = 8, shuffle: bool = True, seed: int = 0) -> tuple[int, Iterator[Sample]]:
    """scikit-learn's 1,797 digits as grayscale png + cls."""
    images, labels = digits_images(size)

    def gen() -> Iterator[Sample]:
        for n, j in enumerate(_order(len(images), shuffle, seed)):
            yield {"__key__": f"{n:08d}", "png": png_bytes(images[j]), "cls": str(int(labels[j])).encode()}

    return len(images), gen()


# ---------------------------------------------------------------------------------------------------------------------
# Writing.


def existing_shards(out: str, prefix: str) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(glob.escape(out), glob.escape(prefix) + "-*.tar*"))
                  if p.endswith((".tar", ".tar.gz")))


def check_out(out: str, prefix: str, force: bool) -> list[str]:
    """The shards already in ``out`` (to be replaced); raises unless ``force`` when there are any."""
    old = existing_shards(out, prefix)
    if old and not force:
        raise UserError(f"make_shards: {len(old)} shard(s) {prefix}-*.tar* already exist in {out!r} (e.g. "
                        f"{os.path.basename(old[0])}); pass --force to replace them, or choose another --out/--prefix")
    return old


def write_shards(samples: Iterator[Sample], out: str, prefix: str = "shard", maxcount: int = 10000,
                 gzip: bool = True, force: bool = False, total: int | None = None, progress: bool = True) -> Summary:
    """Write samples to ``out/prefix-%06d.tar[.gz]``, ``maxcount`` per shard; refuses to overwrite unless ``force``."""
    import webdataset as wds
    from cbsflow.progress import progress as progress_bar

    if maxcount < 1:
        raise UserError(f"make_shards: --maxcount must be at least 1 (got {maxcount})")
    old = check_out(out, prefix, force)
    os.makedirs(out, exist_ok=True)
    for p in old:
        os.remove(p)
    pattern = os.path.join(out, f"{prefix}-%06d.tar" + (".gz" if gzip else ""))
    n = 0
    with wds.ShardWriter(pattern, maxcount=maxcount, verbose=0) as sink:
        for sample in progress_bar(samples, f"writing {prefix}", total=total, disable=not progress):
            sink.write(sample)
            n += 1
    written = existing_shards(out, prefix)
    return Summary(n, written, sum(os.path.getsize(p) for p in written))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-folder", metavar="DIR", help="one subfolder of images per class (index = sorted order)")
    src.add_argument("--from-array", metavar="FILE", help=".npz/.npy: uint8 NHWC/NCHW images -> png, floats -> npy")
    src.add_argument("--from-imagenet-npz", metavar="GLOB", help="downsampled-ImageNet .npz parts (data + labels 1..1000)")
    src.add_argument("--from-digits", action="store_true", help="scikit-learn's 8x8 digits (offline)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--prefix", default="shard", help="shard names: PREFIX-000000.tar.gz, ... (default: shard)")
    p.add_argument("--maxcount", type=int, default=10000, help="samples per shard (default: 10000)")
    p.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=True, help=".tar.gz (default) or .tar")
    p.add_argument("--images-key", help="array name in the .npz (default: x, images, data, arr_0 or the only one)")
    p.add_argument("--labels-key", help="label array name in the .npz (default: no labels)")
    p.add_argument("--size", type=int, default=8, help="--from-digits: upsample to SIZE x SIZE (default: 8)")
    p.add_argument("--center-crop", type=int, metavar="SIZE",
                   help="--from-folder: resize the short side to SIZE and keep the centre SIZE x SIZE (ADM/DiT/SiT)")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                   help="shuffle sample order before writing (default: on; sorted folders would give one-class shards)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle (default: 0)")
    p.add_argument("--force", action="store_true", help="replace existing PREFIX-*.tar* shards in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_out(args.out, args.prefix, args.force)  # fail before reading the input
        classes = None
        if args.from_folder:
            total, samples, classes = folder_samples(args.from_folder, args.shuffle, args.seed, args.center_crop)
        elif args.from_array:
            total, samples = array_samples(args.from_array, args.images_key, args.labels_key, args.shuffle, args.seed)
        elif args.from_imagenet_npz:
            total, samples = imagenet_npz_samples(args.from_imagenet_npz, args.shuffle, args.seed)
        else:
            if args.size < 1:
                raise UserError(f"make_shards: --size must be at least 1 (got {args.size})")
            total, samples = digits_samples(args.size, args.shuffle, args.seed)
        summary = write_shards(samples, args.out, args.prefix, args.maxcount, args.gzip, args.force, total,
                               progress=not args.quiet)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if classes is not None:
        with open(os.path.join(args.out, "classes.json"), "w") as f:
            json.dump(classes, f, indent=1)
    print(summary.line(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
