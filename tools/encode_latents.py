#!/usr/bin/env python
"""Encode images into latent WebDataset shards with an autoencoder, for latent flow models such as SiT.

    python tools/encode_latents.py --shards data/imagenet256 --vae-path ~/weights/sd-vae-ft-ema --out data/in256-latents
    python tools/encode_latents.py --folder imagenet/train --size 256 --vae-path ~/weights/sd-vae-ft-ema --out DIR
    accelerate launch --num_processes 8 tools/encode_latents.py --shards ... --out ...   # shards split over processes

Images are resized so that the short side is --size and centre-cropped (as ADM, DiT and SiT prepare ImageNet), then
encoded in batches; each input shard (or each --maxcount images of a folder) becomes one output shard, written to a
temporary file and renamed, so an interrupted run resumes by skipping the shards it finished. OUT/latents.json
records the autoencoder (path, scale), the format, the latent shape and the source. Nothing is downloaded:
--vae-path is a folder written by diffusers' AutoencoderKL.save_pretrained (or a hub id already in the local cache).

Formats (--format): `posterior` (default) stores per image the VAE posterior's mean and std, times --scale, of the
image and of its horizontal flip (mean.npy, std.npy: (2, c, h, w), index 1 the flip; + cls), so that the `shards`
dataset draws a flip and a fresh posterior sample at every step as SiT trains (4x the disk of one latent: ~84 GB
for ImageNet-1k at 256 px in float32, half with --dtype float16). `latent` stores one latent per image (npy + cls:
a posterior sample, or its mean with --mean), unflipped: the older format, read as stored.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cbsflow.errors import UserError  # noqa: E402

METADATA = "latents.json"
FORMATS = ("posterior", "latent")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", metavar="URLS", help="image shards: a folder, a glob or a brace pattern")
    src.add_argument("--folder", metavar="DIR", help="one subfolder of images per class (index = sorted order)")
    p.add_argument("--vae-path", required=True, help="local AutoencoderKL folder (save_pretrained) or a cached hub id")
    p.add_argument("--scale", type=float, default=0.18215, help="latent scale factor (default 0.18215, SD-VAE)")
    p.add_argument("--size", type=int, default=256, help="image side after resize and centre crop (default 256)")
    p.add_argument("--out", required=True, help="output folder of latent shards")
    p.add_argument("--prefix", default="latents-train", help="output shard names PREFIX-000000.tar (default latents-train)")
    p.add_argument("--maxcount", type=int, default=10000, help="--folder: images per output shard (default 10000)")
    p.add_argument("--batch-size", type=int, default=64, help="images per encoder call (default 64)")
    p.add_argument("--format", choices=FORMATS, default="posterior",
                   help="posterior: mean and std of the image and its flip (default); latent: one latent per image")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored dtype (default float32)")
    p.add_argument("--mean", action="store_true", help="--format latent: the posterior mean instead of a sample")
    p.add_argument("--seed", type=int, default=0, help="--format latent: seed of the posterior samples (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def center_crop(img, size: int) -> torch.Tensor:
    """PIL image -> float (3, size, size) in [-1, 1], resized and centre-cropped (cbsflow.data.shards.center_crop)."""
    from cbsflow.data.shards import center_crop as crop

    return torch.from_numpy(crop(img, size).astype(np.float32)).permute(2, 0, 1) / 127.5 - 1


def shard_sources(args) -> list[tuple[str, object]]:
    """(output name, source) per output shard: an input shard path, or a list of (image path, label) of a folder."""
    if args.shards:
        from cbsflow.data.shards import resolve_shards

        paths = resolve_shards(args.shards)
        return [(f"{args.prefix}-{i:06d}.tar", p) for i, p in enumerate(paths)]
    from make_shards import IMAGE_SUFFIXES

    if not os.path.isdir(args.folder):
        raise UserError(f"encode_latents: --folder {args.folder!r} is not a directory")
    classes = sorted(d for d in os.listdir(args.folder) if os.path.isdir(os.path.join(args.folder, d)))
    items = [(os.path.join(args.folder, c, f), i) for i, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(args.folder, c))) if f.lower().endswith(IMAGE_SUFFIXES)]
    if not items:
        raise UserError(f"encode_latents: no images in class subfolders of {args.folder!r}")
    items = [items[j] for j in np.random.default_rng(args.seed).permutation(len(items))]
    chunks = [items[k:k + args.maxcount] for k in range(0, len(items), args.maxcount)]
    return [(f"{args.prefix}-{i:06d}.tar", chunk) for i, chunk in enumerate(chunks)]


def read_source(source, size: int) -> Iterator[tuple[str, torch.Tensor, int | None]]:
    """(key, image, label) from an input shard or a folder chunk."""
    from PIL import Image

    if isinstance(source, list):
        for n, (path, label) in enumerate(source):
            stem = os.path.splitext(os.path.basename(path))[0].replace(".", "_")  # WebDataset splits names at a dot
            with Image.open(path) as img:
                yield f"{n:08d}-{stem}", center_crop(img, size), label
        return
    import webdataset as wds

    for sample in wds.WebDataset(source, shardshuffle=False, nodesplitter=None, empty_check=False):
        key = next((k for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
        if key is None:
            continue
        with Image.open(io.BytesIO(sample[key])) as img:
            image = center_crop(img, size)
        label = int(sample["cls"].decode().strip()) if "cls" in sample else None
        yield sample["__key__"], image, label


def encode_batch(vae, images: torch.Tensor, args, generator: torch.Generator) -> list[dict[str, np.ndarray]]:
    """One record's arrays per image (b, 3, H, W): ``mean.npy`` and ``std.npy`` (2, c, h, w), index 0 the image and 1
    its horizontal flip (``--format posterior``), or ``npy`` (c, h, w), one latent of the image (``--format
    latent``)."""
    if args.format == "latent":
        return [{"npy": z} for z in vae.encode(images, generator=generator).numpy().astype(args.dtype)]
    b = images.shape[0]
    mean, std = vae.posterior(torch.cat([images, images.flip(-1)]))  # (2b, c, h, w): the images, then their flips
    mean = mean.reshape(2, b, *mean.shape[1:]).transpose(0, 1).numpy().astype(args.dtype)  # (b, 2, c, h, w)
    std = std.reshape(2, b, *std.shape[1:]).transpose(0, 1).numpy().astype(args.dtype)
    return [{"mean.npy": m, "std.npy": s} for m, s in zip(mean, std)]


def encode_shard(vae, source, target: str, args, seed: int) -> tuple[int, list[int]]:
    """Encode one source into ``target`` (via a temporary file); returns the count and the latent shape."""
    import webdataset as wds

    generator = torch.Generator(device="cuda" if torch.cuda.is_available() else "cpu").manual_seed(seed)
    tmp = target + ".tmp"
    count, shape, batch = 0, None, []
    with wds.TarWriter(tmp) as sink:
        def flush():
            nonlocal count, shape
            arrays = encode_batch(vae, torch.stack([b[1] for b in batch]), args, generator)
            count, shape = count + len(batch), list(next(iter(arrays[0].values())).shape[-3:])  # (c, h, w)
            for (key, _, label), record in zip(batch, arrays):
                labels = {} if label is None else {"cls": str(label).encode()}
                sink.write({"__key__": key, **record, **labels})
            batch.clear()

        for item in read_source(source, args.size):
            batch.append(item)
            if len(batch) == args.batch_size:
                flush()
        if batch:
            flush()
    os.replace(tmp, target)
    return count, shape


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from cbsflow.progress import progress as progress_bar

    from cbsflow.autoencoders import vae as autoencoder
    from cbsflow.seeding import derive_seed
    from cbsflow.training import process_state

    state = process_state()
    try:
        check_format(args)
        sources = shard_sources(args)
        check_existing(args, sources)
        vae = autoencoder(args.vae_path, scale=args.scale, sample_latents=not args.mean, batch_size=args.batch_size)
        vae.model  # load (and check) the weights before any shard is written
        os.makedirs(args.out, exist_ok=True)
        mine = [(i, name, src) for i, (name, src) in enumerate(sources) if i % state.num_processes == state.process_index]
        shape = None
        for i, name, src in progress_bar(mine, "encoding shards", disable=args.quiet or not state.is_main_process):
            target = os.path.join(args.out, name)
            if os.path.exists(target):
                continue  # finished by an earlier run
            _, shape = encode_shard(vae, src, target, args, derive_seed(args.seed, i))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    state.wait_for_everyone()
    if state.is_main_process:
        _write_metadata(args, vae, sources, shape)
        print(f"encoded {len(sources)} shard(s) into {args.out}")
    return 0


def check_format(args) -> None:
    """--mean and --seed choose the one latent of --format latent; the posterior format stores mean and std instead."""
    if args.format == "posterior" and args.mean:
        raise UserError("encode_latents: --mean applies to --format latent; --format posterior stores the mean and std "
                        "(train on the mean with shards.resample_posterior = False), so drop --mean or add "
                        "--format latent")


def shard_format(path: str) -> str | None:
    """The format of a finished latent shard, from its member names: posterior (``.mean.npy``), latent (``.npy``)."""
    import tarfile

    with tarfile.open(path) as tar:
        for member in tar:
            if member.name.endswith(".mean.npy") or member.name.endswith(".std.npy"):
                return "posterior"
            if member.name.endswith(".npy"):
                return "latent"
    return None


def check_existing(args, sources) -> None:
    """A resumed run only adds shards of the format already in --out: one folder never mixes the two formats."""
    done = [os.path.join(args.out, name) for name, _ in sources if os.path.exists(os.path.join(args.out, name))]
    found = shard_format(done[0]) if done else None
    if found not in (None, args.format):
        raise UserError(f"encode_latents: {done[0]} holds the {found} format but --format is {args.format}; "
                        f"write this format to a new --out folder (nothing here is overwritten), or pass "
                        f"--format {found} to finish the folder as it was begun")


def _write_metadata(args, vae, sources, shape) -> None:
    from cbsflow.rundir import write_json

    path = os.path.join(args.out, METADATA)
    old = json.load(open(path)) if os.path.exists(path) else {}
    layout = ({"mean.npy": "(2, c, h, w): the posterior mean times scale, index 0 the image, 1 its horizontal flip",
               "std.npy": "(2, c, h, w): the posterior std times scale, same layout; a latent is mean + std * eps"}
              if args.format == "posterior" else {"npy": "(c, h, w): one latent of the unflipped image, times scale"})
    autoencoder = vae.describe()
    if args.format == "posterior":
        autoencoder.pop("sample_latents", None)  # the posterior is stored, the dataset draws from it
    record = {"autoencoder": autoencoder, "format": args.format, "keys": layout, "dtype": args.dtype,
              "latent_shape": shape or old.get("latent_shape"), "image_size": args.size,
              "source": args.shards or args.folder, "shards": len(sources)}
    if args.format == "latent":
        record.update(posterior="mean" if args.mean else "sample", seed=args.seed)
    write_json(path, record)


if __name__ == "__main__":
    sys.exit(main())
