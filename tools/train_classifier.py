#!/usr/bin/env python
"""Train the small CIFAR-10 classifier of the ``classifier_fd`` / ``classifier_is`` metrics at reduced resolution.

    python tools/train_classifier.py                      # 16 px, the committed weights (cbsflow/metrics/weights/)
    python tools/train_classifier.py --size 8 --out cbsflow/metrics/weights/cifar10_cnn8.pt

Reads the 50k training images of the CIFAR-10 shards (``--data-dir``), area-downsampled to ``--size`` exactly as
``shards(resize=True)`` reads them, trains ``SmallCNN`` (SGD with Nesterov momentum, one-cycle learning rate, random
flips and reflect-padded crops) from a fixed seed on the CPU, evaluates it on the 10k test images and writes the
weights (float16 state dict, a few hundred kB) and a JSON record beside them: test accuracy, resolution, the exact
command, date, torch version and training time.
"""

from __future__ import annotations

import argparse
import datetime
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbsflow.metrics.classifier import SmallCNN, read_split, write_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "cifar10"),
                   help="folder of the CIFAR-10 shards (default: ../shared/data/cifar10 beside this checkout)")
    p.add_argument("--size", type=int, default=16, help="resolution in pixels (images are area-downsampled from 32)")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128], help="channels of the conv blocks")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (on a busy 2-core box, 2 threads ran 8x slower than 1)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (smoke runs)")
    p.add_argument("--out", default=None, help="weights file (default: cbsflow/metrics/weights/cifar10_cnn<size>.pt)")
    return p.parse_args(argv)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and crops of the images reflect-padded by size/8 pixels (b, c, s, s)."""
    b, _, s, _ = x.shape
    pad = max(1, s // 8)
    x = torch.where(torch.rand(b, generator=gen)[:, None, None, None] < 0.5, x.flip(-1), x)
    padded = F.pad(x, (pad,) * 4, mode="reflect")  # (b, c, s + 2 pad, s + 2 pad)
    oy, ox = torch.randint(2 * pad + 1, (2, b), generator=gen)
    rows = (oy[:, None] + torch.arange(s))[:, :, None]  # (b, s, 1)
    cols = (ox[:, None] + torch.arange(s))[:, None, :]  # (b, 1, s)
    return padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()  # (b, c, s, s)


@torch.no_grad()
def accuracy(model: SmallCNN, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return correct / len(y)


def train(model: SmallCNN, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> None:
    """SGD (Nesterov momentum 0.9) with a one-cycle learning rate over ``args.epochs`` epochs of shuffled batches."""
    gen = torch.Generator().manual_seed(args.seed + 1)
    steps_per_epoch = math.ceil(len(x) / args.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.25)
    for epoch in range(args.epochs):
        model.train()
        start, total = time.time(), 0.0
        for idx in torch.randperm(len(x), generator=gen).split(args.batch_size):
            loss = F.cross_entropy(model(augment(x[idx], gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / len(x):.4f} ({time.time() - start:.0f} s)", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out or REPO / "cbsflow" / "metrics" / "weights" / f"cifar10_cnn{args.size}.pt")
    t0 = time.time()
    x, y = read_split(args.data_dir, "train", args.size, args.limit)
    x_test, y_test = read_split(args.data_dir, "test", args.size)
    print(f"read {len(x)} training and {len(x_test)} test images at {args.size} px ({time.time() - t0:.0f} s)")
    model = SmallCNN(tuple(args.widths))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"SmallCNN{tuple(args.widths)}: {n_params:,} parameters", flush=True)
    t1 = time.time()
    train(model, x, y, args)
    train_time = time.time() - t1
    acc = accuracy(model, x_test, y_test)
    print(f"test accuracy {acc:.4f} ({train_time:.0f} s of training)")
    meta = {"resolution": args.size, "widths": list(args.widths), "num_classes": 10, "test_accuracy": acc}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
                **meta}, out)
    argv_text = shlex.join(sys.argv[1:] if argv is None else list(argv))
    write_record(out.with_suffix(".json"), meta | {
        "test_images": len(y_test), "train_images": len(y), "parameters": n_params, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed,
        "threads": args.threads, "augmentation": "random flips, reflect-padded crops (size/8 px)",
        "downsampling": "area averaging from 32 px (cbsflow.data.shards.resize_image)",
        "weights_dtype": "float16", "train_time_s": round(train_time, 1),
        "command": f"python tools/train_classifier.py {argv_text}".strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "data": str(Path(args.data_dir).name)})
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
