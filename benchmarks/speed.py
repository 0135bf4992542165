#!/usr/bin/env python
"""Speed: training throughput and MFU of SiT, cost per sampling step of N experts, profiling cost, quickstart time.

    python benchmarks/speed.py                                   # every benchmark, on CUDA if present, else CPU
    python benchmarks/speed.py train_throughput --compile        # adds the torch.compile figures
    python benchmarks/speed.py sampling profiling_cost quickstart --threads 1

Benchmarks (positional, any subset; default all):
  train_throughput  img/s and model-FLOP utilisation of SiT-S/2 and SiT-B/2 at batch 256 on 4x32x32 latents,
                    1000 classes (bf16 autocast + fused AdamW on CUDA; fp32 and a tiny batch on CPU). Two loops:
                    `bare` (this file: data, noise and t on the device, optional torch.compile) and `library`
                    (cbsflow.training.fit, the loop the pipeline uses, with an in-memory dataset).
  sampling          seconds per sampling step of cbsflow.segmented.SegmentedVelocity with N = 4 vs N = 1 experts:
                    through cbsflow.samplers.sample_segmented (one expert per segment) and through the routed
                    forward (all t in one segment; t spread over every segment).
  sampling_nfe      NFE/s (network evaluations of one image per second) of the sample stage's loop
                    (cbsflow.samplers.generate, Heun) for one SiT-B/2 and for four (N = 4 segmented), eager fp32,
                    bf16 autocast, and bf16 + torch.compile (sample.mixed_precision / sample.compile); SiT-S/2 at a
                    small batch on CPU.
  profiling_cost    wall time of the profile + split stages over one expert's training (tools/run.py --segment 0),
                    for gin/quickstart.gin and for a CPU-sized gin/cifar10_unet.gin
                    (benchmarks/gin/speed_cifar10_cpu.gin).
  quickstart        wall time of `python tools/run.py --gin gin/quickstart.gin --run-dir <fresh tmp dir>`.

Results merge into benchmarks/results/speed_<cpu|cuda>.json (one entry per benchmark, each with its own command,
machine record and date) and the markdown is rebuilt from that JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # cbsflow from this checkout

from benchinfo import REPO, machine_record, record_md, run_cli, utc_now, write_json  # noqa: E402

BENCHMARKS = ("train_throughput", "sampling", "sampling_nfe", "profiling_cost", "quickstart")
LATENT, CLASSES = (4, 32, 32), 1000
H200_REFERENCE = {"SiT-B/2 eager (official SiT code, H200)": 1601, "SiT-B/2 compiled (official SiT code, H200)": 2717,
                  "target SiT-B/2 (cbsflow, H200)": 3400}


# --------------------------------------------------------------------------------------------------- timing helpers

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    """Seconds for ``repeat`` calls of fn, with the device synchronised before and after."""
    sync(device)
    tic = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return time.perf_counter() - tic


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


# ----------------------------------------------------------------------------------------------- FLOPs (analytic)

def transformer_flops(model) -> dict:
    """Analytic FLOPs per image of a cbsflow PatchTransformer (SiT/JiT), counting a multiply-add as 2 FLOPs.

    forward  = 2 · P_tok · T  +  2 · P_img  +  L · 4 · T² · d
      P_tok  weights of the linears applied to every token: patch embedding, qkv, attention projection, MLP fc1/fc2,
             final linear (biases, norms, GELU, softmax and adaLN modulation are elementwise and not counted)
      P_img  weights of the linears applied once per image: timestep MLP and the adaLN regressions (blocks and final)
      T      tokens = (H/p)·(W/p);  L layers;  d width;  4·T²·d per layer = Q·Kᵀ (2·T²·d) + A·V (2·T²·d)
    training = 3 · forward (the backward pass costs two forwards: gradients w.r.t. activations and weights).
    """
    tokens = model.grid[0] * model.grid[1]
    p_tok = p_img = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            per_image = name.startswith("time.") or ".ada." in name or name.startswith("final.ada")
            if per_image:
                p_img += m.weight.numel()
            else:
                p_tok += m.weight.numel()
    layers, width = len(model.blocks), model.embed.out_features
    attention = layers * 4 * tokens**2 * width
    forward = 2 * p_tok * tokens + 2 * p_img + attention
    return {"tokens": tokens, "params_token_matmul": p_tok, "params_image_matmul": p_img,
            "params_total": sum(p.numel() for p in model.parameters()), "attention_flops": attention,
            "forward_flops": forward, "train_flops": 3 * forward}


# ----------------------------------------------------------------------------------------------- train throughput

def build_sit(size: str, device: torch.device):
    from cbsflow.backbones.sit import sit

    torch.manual_seed(0)
    return sit(data_shape=LATENT, num_classes=CLASSES, size=size, patch=2).to(device)


def bare_loop(size: str, batch: int, device: torch.device, warmup: int, steps: int, compile_: bool) -> float:
    """Seconds per training step of the minimal loop: velocity loss, bf16 autocast (CUDA), clip 1.0, fused AdamW."""
    from cbsflow.paths import linear
    from cbsflow.training import velocity_loss

    model = build_sit(size, device).train()
    net = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=device.type == "cuda")
    path = linear()
    x1 = torch.randn((batch,) + LATENT, device=device)
    y = torch.randint(0, CLASSES, (batch,), device=device)

    def step():
        t = torch.rand(batch, device=device)
        eps = torch.randn_like(x1)
        with autocast(device):
            loss = velocity_loss(net, path, x1, y, t, eps)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    timed(step, device, warmup)  # warm-up (and compilation) excluded
    return timed(step, device, steps) / steps


class _Latents:
    """In-memory stand-in for a latent dataset: two fixed CPU batches, alternated (no data cost)."""

    shape, num_classes, is_image = LATENT, CLASSES, True

    def batches(self, batch_size: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        pool = [(torch.randn((batch_size,) + LATENT, generator=gen), torch.randint(0, CLASSES, (batch_size,), generator=gen))
                for _ in range(2)]
        i = 0
        while True:
            yield pool[i % 2]
            i += 1


def library_loop(size: str, batch: int, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per step of cbsflow.training.fit, read from its JSON-lines log (loss.item() at each log syncs)."""
    import json

    from cbsflow.paths import linear
    from cbsflow.training import TrainSettings, fit

    model = build_sit(size, device)
    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(steps=warmup + steps, batch_size=batch, lr=1e-4, log_every=warmup,
                                 mixed_precision="bf16" if device.type == "cuda" else "no")
        fit(model, _Latents(), linear(), (0.0, 1.0), settings, state_dir=tmp, desc=f"library SiT-{size}/2")
        rows = [json.loads(line) for line in open(Path(tmp) / "log.jsonl")]
    at = {r["step"]: r["seconds"] for r in rows}
    return (at[warmup + steps] - at[warmup]) / steps


def train_throughput(args, device: torch.device) -> dict:
    cpu = device.type == "cpu"
    batch = args.batch or (8 if cpu else 256)
    warmup, steps = args.warmup or (2 if cpu else 10), args.steps or (4 if cpu else 30)
    if args.loop == "library" and steps % warmup:
        steps = warmup * max(1, round(steps / warmup))  # the library logs every `warmup` steps
    rows = []
    print(f"[train_throughput] {'CPU' if cpu else torch.cuda.get_device_name(0)}, batch {batch}, "
          f"{warmup} warm-up + {steps} timed steps; MFU relative to {args.peak_tflops} TFLOP/s ({args.peak_label})")
    for size in args.sizes:
        flops = transformer_flops(build_sit(size, torch.device("cpu")))
        variants = [("bare", False)] + ([("bare", True)] if args.compile else []) + \
                   ([("library", False)] if args.loop in ("both", "library") else [])
        if args.loop == "library":
            variants = [("library", False)]
        for loop, compiled in variants:
            if loop == "bare":
                sec = bare_loop(size, batch, device, warmup, steps, compiled)
            else:
                sec = library_loop(size, batch, device, warmup, steps)
            ips = batch / sec
            tflops = ips * flops["train_flops"] / 1e12
            row = {"model": f"SiT-{size}/2", "loop": loop, "compiled": compiled, "batch": batch,
                   "precision": "fp32" if cpu else "bf16 autocast", "img_per_s": ips, "s_per_step": sec,
                   "train_gflops_per_img": flops["train_flops"] / 1e9, "achieved_tflops": tflops,
                   "mfu": tflops / args.peak_tflops, "flops": flops}
            rows.append(row)
            print(f"  SiT-{size}/2 {loop:<7} {'compiled' if compiled else 'eager   '} {ips:9.1f} img/s  "
                  f"{sec * 1e3:8.1f} ms/step  {flops['train_flops'] / 1e9:6.1f} GFLOP/img (train)  "
                  f"{tflops:7.2f} TFLOP/s  MFU {100 * tflops / args.peak_tflops:.2f}%")
    return {"device": "CPU" if cpu else torch.cuda.get_device_name(0), "batch": batch, "warmup_steps": warmup,
            "timed_steps": steps, "peak_tflops": args.peak_tflops, "peak_label": args.peak_label, "rows": rows,
            "optimizer": "AdamW" + ("(fused=True)" if not cpu else "") + " in the bare loop; fit() uses plain AdamW",
            "notes": "bare loop: synthetic latents resident on the device, t and noise drawn on the device, "
                     "grad clip 1.0, no EMA, no label dropout. library loop: cbsflow.training.fit with two fixed "
                     "CPU batches (its noise and t are drawn on the CPU and copied each step, as in the pipeline)."}


# ---------------------------------------------------------------------------------------------------- sampling

def sampling_cases(device: torch.device) -> list[dict]:
    """(name, backbone factory, data shape, classes, batch) per case: SiT-S/2 latents on CUDA, small nets on CPU."""
    from cbsflow.backbones.mlp import mlp
    from cbsflow.backbones.sit import sit

    if device.type == "cuda":
        return [dict(name="SiT-S/2 4x32x32, 1000 classes", build=lambda: sit(LATENT, CLASSES, size="S", patch=2),
                     shape=LATENT, classes=CLASSES, batch=256)]
    return [dict(name="SiT-T/2 4x32x32, 1000 classes (CPU size)", build=lambda: sit(LATENT, CLASSES, size="T", patch=2),
                 shape=LATENT, classes=CLASSES, batch=32),
            dict(name="mlp width 128 depth 3 on 2-D (quickstart size)", build=lambda: mlp((2,), 0, width=128, depth=3),
                 shape=(2,), classes=0, batch=5000)]


def segmented(case: dict, n: int, device: torch.device):
    from cbsflow.segmented import SegmentedVelocity

    torch.manual_seed(0)
    experts = [case["build"]() for _ in range(n)]
    return SegmentedVelocity(experts, torch.linspace(0, 1, n + 1).tolist()).to(device).eval()


def sampling(args, device: torch.device) -> dict:
    """Interleaved N=1 / N=4 timings (median of repeats) of a full Euler sampling run and of routed forwards."""
    from cbsflow.samplers import euler, sample_segmented, uniform_steps

    results = []
    for case in sampling_cases(device):
        b = case["batch"]
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((b,) + tuple(case["shape"]), generator=gen).to(device)
        y = torch.randint(0, case["classes"], (b,), generator=gen).to(device) if case["classes"] else None
        t_one = torch.full((b,), 0.1, device=device)  # every t in the first segment
        t_mixed = torch.linspace(0, 0.999, b, device=device)  # t spread evenly: N=4 routes a quarter to each expert
        models = {n: segmented(case, n, device) for n in (1, 4)}
        grids = {n: uniform_steps()(models[n].boundaries.cpu().numpy(), args.sampling_steps) for n in (1, 4)}
        tasks = {
            "sampler (sample_segmented, Euler)": lambda n: sample_segmented(models[n], euler, grids[n], x, y),
            "routed forward, all t in one segment": lambda n: models[n](x, t_one, y),
            "routed forward, mixed t": lambda n: models[n](x, t_mixed, y),
        }
        per_step = {"sampler (sample_segmented, Euler)": args.sampling_steps}
        row = {"case": case["name"], "batch": b, "sampling_steps": args.sampling_steps, "measure": {}}
        with torch.no_grad(), autocast(device):
            for label, fn in tasks.items():
                for n in (1, 4):
                    timed(lambda: fn(n), device, 2)  # warm-up
                calls = max(1, int(0.05 / max(1e-6, timed(lambda: fn(1), device)) ))  # >= ~50 ms per sample
                samples = {1: [], 4: []}
                for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
                    for n in (1, 4):
                        samples[n].append(timed(lambda: fn(n), device, calls) / calls / per_step.get(label, 1))
                med = {n: statistics.median(v) for n, v in samples.items()}
                ratio = med[4] / med[1]
                ratios = sorted(a / b_ for a, b_ in zip(samples[4], samples[1]))
                row["measure"][label] = {"seconds_N1": med[1], "seconds_N4": med[4], "ratio_N4_over_N1": ratio,
                                         "paired_ratio_quartiles": [ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]],
                                         "repeats": args.repeats, "calls_per_repeat": calls,
                                         "unit": "s per step" if label in per_step else "s per call"}
                print(f"[sampling] {case['name']}: {label}: N=1 {med[1] * 1e3:.3f} ms, N=4 {med[4] * 1e3:.3f} ms, "
                      f"N=4/N=1 = {ratio:.4f} (paired-ratio quartiles {ratios[len(ratios) // 4]:.4f}.."
                      f"{ratios[(3 * len(ratios)) // 4]:.4f}; {'within' if abs(ratio - 1) <= 0.02 else 'NOT within'} 2%)")
        results.append(row)
    return {"device": "CPU" if device.type == "cpu" else torch.cuda.get_device_name(0),
            "precision": "fp32" if device.type == "cpu" else "bf16 autocast", "rows": results,
            "notes": "uniform boundaries; experts randomly initialised (cost does not depend on the weights); "
                     "Euler with a global uniform grid (uniform_steps) of the given total steps."}


def sampling_nfe(args, device: torch.device) -> dict:
    """NFE/s of the sample stage's loop for N = 1 and N = 4 SiTs, eager fp32, bf16 autocast, bf16 + compile."""
    import contextlib

    from cbsflow.paths import linear
    from cbsflow.samplers import generate, heun, uniform_steps
    from cbsflow.segmented import Expert, SegmentedVelocity

    size, batch, steps = ("B", 256, 16) if device.type == "cuda" else ("S", 8, 4)
    # On a CPU only eager fp32: bf16 autocast is slower than fp32 there (0.3 against 1.8 NFE/s for SiT-S/2 on the
    # project's 2-core machine) and inductor's C++ compilation of a SiT took over 20 minutes; both are GPU switches.
    modes = ("fp32", "bf16", "bf16+compile") if device.type == "cuda" else ("fp32",)
    rows = []
    for n in (1, 4):
        for mode in modes:
            torch.manual_seed(0)
            b = torch.linspace(0, 1, n + 1).tolist()
            experts = [Expert(build_sit(size, device), linear(), (b[k], b[k + 1])) for k in range(n)]
            model = SegmentedVelocity(experts, b).to(device).eval()
            if mode.endswith("compile"):
                for e in model.experts:
                    e.net = torch.compile(e.net)
            cast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if mode != "fp32" else contextlib.nullcontext
            grids = uniform_steps()(model.boundaries.cpu().numpy(), steps)

            def run():
                return generate(model, heun, grids, LATENT, CLASSES, batch, batch, 0, autocast=cast, path=linear())

            run()  # warm-up (and compilation)
            seconds = min(timed(run, device) for _ in range(3))
            nfe = run()[1]
            rows.append({"model": f"SiT-{size}/2", "experts": n, "mode": mode, "batch": batch, "nfe": nfe,
                         "seconds": seconds, "nfe_per_s": batch * nfe / seconds})
            print(f"[sampling_nfe] SiT-{size}/2 N={n} {mode}: {batch * nfe / seconds:,.1f} NFE/s", flush=True)
    return {"device": "CPU" if device.type == "cpu" else torch.cuda.get_device_name(0), "rows": rows,
            "notes": f"Heun, {steps} steps in all, batch {batch}, 4x32x32 latents with 1000 classes, best of 3 runs "
                     f"(modes: {', '.join(modes)}); "
                     "NFE/s = batch x network evaluations per sample / seconds."}


def _md_sampling_nfe(r: dict) -> list[str]:
    lines = [f"Device: {r['device']}. {r['notes']}", "", "| model | experts | mode | NFE/s | s per run |", "|---|---|---|---|---|"]
    lines += [f"| {x['model']} | {x['experts']} | {x['mode']} | {x['nfe_per_s']:,.1f} | {x['seconds']:.3f} |" for x in r["rows"]]
    return lines


# ------------------------------------------------------------------------------------------ profiling cost / quickstart

CIFAR_CPU_GIN = "benchmarks/gin/speed_cifar10_cpu.gin"  # gin/cifar10_unet.gin at a CPU smoke size


def profiling_cost(args, device: torch.device) -> dict:
    """(profile + split) seconds over one expert's train seconds, from the stage times tools/run.py prints."""
    configs = {"quickstart (gin/quickstart.gin)": ["--gin", "gin/quickstart.gin"],
               f"CIFAR-10 UNet, CPU smoke size ({CIFAR_CPU_GIN})": ["--gin", CIFAR_CPU_GIN]}
    rows = []
    for name, cfg in configs.items():
        with tempfile.TemporaryDirectory(dir=REPO / "runs" if (REPO / "runs").is_dir() else None) as tmp:
            out = run_cli(cfg + ["--run-dir", tmp, "--stages", "profile,split,train", "--segment", "0"], args.threads)
        s = out["stage_s"]
        frac = (s["profile"] + s["split"]) / s["train"]
        rows.append({"config": name, **out, "fraction": frac})
        print(f"[profiling_cost] {name}: profile {s['profile']:.1f} s + split {s['split']:.1f} s over one expert's "
              f"training {s['train']:.1f} s = {frac:.3f}")
    return {"rows": rows, "threads": args.threads,
            "notes": "one expert = `--segment 0` (expert 0 of the configured split). The CIFAR-10 figure uses the gin's "
                     "aux net (32 ch, (1,2,2), 1 res block) and a 64-channel expert UNet at batch 16 with 20 steps each, "
                     "a 12 x 32 monitor grid (the gin: aux 5000 steps vs 100000 per expert, batch 128, 48 x 256 grid), "
                     "so its fraction is NOT the full configuration's."}


def quickstart(args, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = run_cli(["--gin", "gin/quickstart.gin", "--run-dir", str(Path(tmp) / "quickstart")], args.threads)
    print(f"[quickstart] wall {out['wall_s']:.1f} s; stages " +
          ", ".join(f"{k} {v:.1f} s" for k, v in out["stage_s"].items()))
    return {**out, "threads": args.threads}


# ------------------------------------------------------------------------------------------------------ reporting

def render_md(results: dict, tag: str) -> str:
    gpu = tag == "cuda"
    lines = [f"# Speed benchmarks ({'GPU' if gpu else 'CPU'})", "",
             "Written by `benchmarks/speed.py`; every figure below was printed by the command recorded with it.", ""]
    if not gpu:
        lines += ["**The GPU figures are not measured yet.** These are CPU runs (no GPU in the session that produced "
                  "them): SiT throughput on a 2-core CPU with a tiny batch says nothing about the H200 target. "
                  "Reference figures from the issue (official SiT code on an H200, not measured here): " +
                  ", ".join(f"{k}: {v:,} img/s" for k, v in H200_REFERENCE.items()) + ".", ""]
    else:
        lines += ["Reference figures from the issue (official SiT code on an H200; not measured by this script): " +
                  ", ".join(f"{k}: {v:,} img/s" for k, v in H200_REFERENCE.items()) + ".", ""]
    for name in BENCHMARKS:
        if name not in results:
            continue
        entry = results[name]
        lines += [f"## {name}", ""] + record_md(entry["machine"]) + [""]
        lines += globals()[f"_md_{name}"](entry["result"]) + [""]
    return "\n".join(lines)


def _md_train_throughput(r: dict) -> list[str]:
    lines = [f"Device: {r['device']}; batch {r['batch']}; {r['warmup_steps']} warm-up + {r['timed_steps']} timed "
             f"steps; MFU relative to {r['peak_tflops']} TFLOP/s ({r['peak_label']}).", "",
             "| model | loop | compiled | precision | img/s | ms/step | train GFLOP/img | TFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['model']} | {x['loop']} | {x['compiled']} | {x['precision']} | {x['img_per_s']:.1f} | "
                     f"{x['s_per_step'] * 1e3:.1f} | {x['train_gflops_per_img']:.1f} | {x['achieved_tflops']:.3f} | "
                     f"{100 * x['mfu']:.2f}% |")
    lines += ["", "FLOPs per image are analytic (`transformer_flops` in speed.py): forward = 2·P_tok·T + 2·P_img + "
              "L·4·T²·d, training = 3 × forward.", "", r["notes"]]
    return lines


def _md_sampling(r: dict) -> list[str]:
    lines = [f"Device: {r['device']} ({r['precision']}). {r['notes']}", "",
             "| case | measurement | N=1 | N=4 | N=4 / N=1 | paired-ratio quartiles | within 2% |", "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        for label, m in row["measure"].items():
            lines.append(f"| {row['case']} (batch {row['batch']}) | {label} | {m['seconds_N1'] * 1e3:.3f} ms | "
                         f"{m['seconds_N4'] * 1e3:.3f} ms | {m['ratio_N4_over_N1']:.4f} | "
                         f"{m['paired_ratio_quartiles'][0]:.4f}..{m['paired_ratio_quartiles'][1]:.4f} | "
                         f"{'yes' if abs(m['ratio_N4_over_N1'] - 1) <= 0.02 else 'no'} |")
    lines += ["", "Times are medians over interleaved repeats; sampler rows are per sampling step "
              f"({r['rows'][0]['sampling_steps']} Euler steps), routed rows per call."]
    return lines


def _md_profiling_cost(r: dict) -> list[str]:
    lines = ["| configuration | profile s | split s | one expert's train s | (profile+split)/train |", "|---|---|---|---|---|"]
    for x in r["rows"]:
        s = x["stage_s"]
        lines.append(f"| {x['config']} | {s['profile']:.1f} | {s['split']:.1f} | {s['train']:.1f} | {x['fraction']:.3f} |")
    lines += ["", "Commands:", ""] + [f"- `{x['command']}`" for x in r["rows"]] + ["", r["notes"]]
    return lines


def _md_quickstart(r: dict) -> list[str]:
    return [f"`{r['command']}`: **{r['wall_s']:.1f} s** wall (subprocess, fresh run directory, {r['threads']} thread(s)); "
            "stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["stage_s"].items()) + "."]


# ----------------------------------------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmarks", nargs="*", default=[], help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch / OMP threads on CPU (1 on a shared machine)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd training")
    p.add_argument("--loop", choices=("bare", "library", "both"), default="both")
    p.add_argument("--sizes", nargs="+", default=["S", "B"], help="SiT sizes (patch 2)")
    p.add_argument("--batch", type=int, help="training batch (default 256 on CUDA, 8 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed warm-up steps (default 10 CUDA, 2 CPU)")
    p.add_argument("--steps", type=int, help="timed steps (default 30 CUDA, 4 CPU)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="peak for MFU (default 989: H100/H200 bf16 dense)")
    p.add_argument("--peak-label", default="H100/H200 SXM bf16 dense spec")
    p.add_argument("--sampling-steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--render", action="store_true", help="only rebuild the markdown from the JSON")
    args = p.parse_args(argv)
    unknown = [b for b in args.benchmarks if b not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv=None) -> int:
    import json

    args = parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would bury the figures
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    tag = device.type
    out = Path(args.out)
    json_path = out / f"speed_{tag}.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    if args.render:
        (out / f"speed_{tag}.md").write_text(render_md(results, tag))
        print(f"rebuilt {out / f'speed_{tag}.md'} from {json_path}")
        return 0
    for name in args.benchmarks or BENCHMARKS:
        record = machine_record()
        result = globals()[name](args, device)
        results[name] = {"machine": record, "finished_utc": utc_now(), "result": result}
        write_json(json_path, results)  # after every benchmark, so a later failure keeps the earlier ones
        (out / f"speed_{tag}.md").write_text(render_md(results, tag))
    print(f"wrote {json_path} and {out / f'speed_{tag}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
