#!/usr/bin/env python
"""Evidence on images: N = 1 vs uniform-4 vs CBS-4 on CIFAR-10 at equal total training steps and equal NFE.

    python benchmarks/splits_cifar10.py                   # CPU variant (about 20-25 min on one core of this machine)
    python benchmarks/splits_cifar10.py --quick           # smoke test (tiny steps, ~2 min)
    python benchmarks/splits_cifar10.py --preset gpu --seeds 0 1 2     # GPU-sized variant (bf16, 40k steps in all)

Each preset's settings are a gin file, benchmarks/gin/splits_cifar10_<preset>.gin (cpu and gpu include
gin/cifar10_unet.gin; quick includes cpu). This script keeps only the orchestration numbers (total steps, samples,
reference images, threads) and binds what varies between runs: DATA_DIR, SEED, N_SEGMENTS, the solver, the steps
per expert, sample.n_samples and the metrics. Every run is
`python tools/run.py --gin benchmarks/gin/splits_cifar10_<preset>.gin --bind ...` (the CLI in cbsflow.cli.main) in
its own run directory under runs/bench/splits_cifar10/<preset>/seed<k>/<config>:
  cbs4      profile (dirichlet monitor on a briefly trained aux UNet) -> split (deboor, N = 4) -> train -> sample -> evaluate
  uniform4  the CBS profile copied in (so split.json reports burdens under it) -> split (uniform, N = 4) -> ...
  n1        one network on [0, 1] (uniform, N = 1) -> ...
Budget: equal TOTAL training steps (N = 1 trains 4 S steps, each of the 4 experts S steps), same batch; sampling:
Heun with the same total steps (uniform_steps schedule), so equal NFE. The profiling cost of CBS is extra and reported.
Metric: `fd_offline` -> `fd_randconv`, the Fréchet distance in fixed random-conv features against the CIFAR-10 test
shard. It is NOT FID. FID is added only when the Inception weights exist at the default path. A real-data floor
(the same metric for real training images) is computed in-process.
Data: --data-dir, by default ../shared/data/cifar10 beside this checkout.
Writes benchmarks/results/splits_cifar10_<preset>.{md,json} (+ the profile plot and sample grids), or under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchinfo import REPO, machine_record, record_md, run_cli, utc_now, write_json  # noqa: E402

DATA_DIR = REPO.parent / "shared" / "data" / "cifar10"
INCEPTION = Path("~/.cache/cbsflow/weights-inception-2015-12-05-6726825d.pth").expanduser()
CONFIGS = ("n1", "uniform4", "cbs4")

# The gin settings of each preset live in benchmarks/gin/splits_cifar10_<preset>.gin; here only what orchestrates the
# runs. `total_steps` is split equally over the experts of each configuration.
PRESETS = {
    "cpu": {"total_steps": 400, "n_samples": 500, "n_reference": 2000, "threads": 1},  # <= 25 min on one thread
    "gpu": {"total_steps": 40000, "n_samples": 10000, "n_reference": 10000, "threads": 8},
    "quick": {"total_steps": 40, "n_samples": 100, "n_reference": 200, "threads": 1},
}


def gin_file(name: str) -> str:
    """The preset's gin file, relative to the repository (where tools/run.py runs)."""
    return f"benchmarks/gin/splits_cifar10_{name}.gin"


def gin_settings(name: str) -> dict:
    """What the report quotes from the preset's gin file: the training batch and the sampling steps."""
    import gin
    from cbsflow import components, config  # noqa: F401  (components registers what the gin file names)

    cwd = os.getcwd()
    os.chdir(REPO)  # includes such as 'benchmarks/gin/...' resolve from the repository, as in tools/run.py's runs
    try:
        config.parse([gin_file(name)], [])
        settings = {"batch_size": gin.query_parameter("expert/training.batch_size"),
                    "sampling_steps": gin.query_parameter("sample.n_steps")}
    finally:
        gin.clear_config()
        os.chdir(cwd)
    return settings


def config_binds(preset: dict, config: str, seed: int, data_dir: str) -> dict:
    """One run's bindings on top of the preset's gin file: what varies between runs."""
    n = 1 if config == "n1" else 4
    binds = {"DATA_DIR": repr(data_dir), "SEED": str(seed), "N_SEGMENTS": str(n),
             "expert/training.steps": str(preset["total_steps"] // n), "sample.n_samples": str(preset["n_samples"]),
             "fd_offline.n_reference": str(preset["n_reference"])}
    metrics = ["@fd_offline()"] + (["@fid()"] if INCEPTION.is_file() else [])
    binds["evaluate.metrics"] = "[" + ", ".join(metrics) + "]"
    if INCEPTION.is_file():
        binds["fid.n_reference"] = str(preset["n_reference"])
    binds["split.solver"] = "@deboor()" if config == "cbs4" else "@uniform()"
    if config != "cbs4":
        binds["uniform.n_segments"] = str(n)
    return binds


def run_config(preset: dict, gin: str, config: str, seed: int, root: Path, data_dir: str, threads: int) -> dict:
    """Run one configuration's stages (skipping what tools/run.py finds up to date) and collect its artifacts."""
    run_dir = root / config
    run_dir.mkdir(parents=True, exist_ok=True)
    binds = config_binds(preset, config, seed, data_dir)
    if config == "cbs4":
        stages = "profile,split,train,sample,evaluate"
    else:
        shutil.copy(root / "cbs4" / "profile.json", run_dir / "profile.json")  # burdens under the same profile
        stages = "split,train,sample,evaluate"
    args = ["--gin", gin, *[a for k, v in binds.items() for a in ("--bind", f"{k} = {v}")],
            "--stages", stages, "--run-dir", str(run_dir.relative_to(REPO))]
    out = run_cli(args, threads, log_path=run_dir / "bench_log.txt")
    read = lambda name: json.loads((run_dir / name).read_text())  # noqa: E731
    split, metrics, train = read("split.json"), read("metrics.json"), read("checkpoints/train.json")
    result = {"command": out["command"], "wall_s": out["wall_s"], "stage_s": out["stage_s"],
              "boundaries": split["boundaries"], "burden": split["burden"], "solver": split["solver"],
              "final_loss": train["final_loss"], "steps_per_segment": train["steps_per_segment"],
              "nfe": metrics["nfe"], "sampling": metrics["sampling"],
              "metrics": {k: v["value"] for k, v in metrics["metrics"].items()},
              "metric_settings": {k: {s: v["settings"].get(s) for s in ("feature_extractor", "n_samples", "n_reference",
                                                                         "note", "reference")}
                                  for k, v in metrics["metrics"].items()}}
    print(f"[{config} seed {seed}] boundaries {[round(b, 4) for b in result['boundaries']]}, NFE {result['nfe']}, "
          f"final loss {[round(x, 4) for x in result['final_loss']]}, metrics "
          + ", ".join(f"{k} = {v:.4f}" for k, v in result["metrics"].items())
          + "; stages " + ", ".join(f"{k} {v:.0f} s" for k, v in out["stage_s"].items()), flush=True)
    return result


def real_floor(preset: dict, data_dir: str, n: int) -> float:
    """fd_randconv of n real TRAINING images against the test reference: the metric's value for perfect samples."""
    from cbsflow.data.shards import shards
    from cbsflow.metrics.fidelity import fd_offline

    reference = shards(urls=data_dir, shape=(3, 32, 32), num_classes=10, name_filter="test", flip=False)
    train = shards(urls=data_dir, shape=(3, 32, 32), num_classes=10, name_filter="train", flip=False)
    x, _ = train.sample(n, seed=12345)
    metric = fd_offline(n_reference=preset["n_reference"])
    value = metric(samples=x, dataset=reference, seed=2**31 - 1)["fd_randconv"]["value"]
    print(f"[floor] fd_randconv of {n} real training images vs the test reference: {value:.4f}", flush=True)
    return value


def batch_size(res: dict) -> int:
    """The experts' training batch (older results recorded it among the bindings, earlier still as train.*)."""
    if "batch_size" in res:
        return res["batch_size"]
    return int(res["binds"].get("expert/training.batch_size", res["binds"].get("train.batch_size")))


def sampling_steps(res: dict) -> int:
    return res["sampling_steps"] if "sampling_steps" in res else int(res["binds"]["sample.n_steps"])


def reading(res: dict) -> str:
    """One paragraph from the numbers (single seed: say what is and is not resolved)."""
    seeds = sorted(res["runs"])
    vals = {c: [res["runs"][s][c]["metrics"]["fd_randconv"] for s in seeds] for c in CONFIGS}
    mean = {c: sum(v) / len(v) for c, v in vals.items()}
    order = sorted(CONFIGS, key=mean.get)
    floor = res["floor_fd_randconv"]
    rel = {c: (mean[c] - mean["n1"]) / mean["n1"] for c in ("uniform4", "cbs4")}
    b = res["runs"][seeds[0]]["cbs4"]["boundaries"]
    text = (f"fd_randconv (lower is better; a random-conv feature distance, not FID; real training images score "
            f"{floor:.3f}) ranks {' < '.join(f'{c} ({mean[c]:.3f})' for c in order)} "
            f"{'(mean over seeds ' + str(seeds) + ')' if len(seeds) > 1 else 'with one seed'}. Relative to N = 1, "
            f"uniform-4 is {100 * rel['uniform4']:+.1f}% and CBS-4 {100 * rel['cbs4']:+.1f}%. CBS put its boundaries at "
            f"{', '.join(f'{x:.3f}' for x in b[1:-1])}. ")
    per_expert = res["total_steps"] // 4
    batch = batch_size(res)
    gap_cbs = abs(mean["cbs4"] - mean["uniform4"]) / min(mean["cbs4"], mean["uniform4"])
    gap_n = max(mean["uniform4"], mean["cbs4"]) / mean["n1"] if mean["n1"] < min(mean["uniform4"], mean["cbs4"]) else None
    if len(seeds) == 1:
        text += "With one seed there is no estimate of the seed-to-seed spread. "
        text += (f"The CBS-4 vs uniform-4 difference ({100 * gap_cbs:.0f}%) is "
                 + ("small and NOT resolved. " if gap_cbs < 0.2 else "not small, but unresolved without more seeds. "))
        if gap_n is not None and gap_n >= 1.5:
            text += (f"The gap between N = 1 and both 4-expert models (a factor of up to {gap_n:.1f}) is large next to that, "
                     f"and has a plausible cause: at equal total steps each expert trained only {per_expert} steps "
                     f"({per_expert * batch} images) and is far from converged, while the single network trained "
                     f"{res['total_steps']} steps on structure shared across t. So at this tiny CPU budget splitting "
                     "costs more than it gains; this says nothing about the converged regime CBS targets, and needs "
                     "more seeds and far longer training (the gpu preset) before any claim.")
        else:
            text += "No difference here should be read as an effect of the split without more seeds and longer training."
    else:
        spread = {c: (max(v) - min(v)) for c, v in vals.items()}
        text += ("Seed range per configuration: " + ", ".join(f"{c} {spread[c]:.3f}" for c in CONFIGS) +
                 "; a difference smaller than these ranges is not resolved.")
    return text


def write_md(res: dict, path: Path) -> None:
    lines = [f"# CBS on CIFAR-10, preset `{res['preset']}`", "",
             "Written by `benchmarks/splits_cifar10.py`; every figure below was printed by the command recorded here.",
             ""] + record_md(res["machine"]) + [
             "", f"Finished {res['finished_utc']}, total wall {res['wall_s'] / 60:.1f} min.", "",
             "## Settings", "",
             f"- budget: equal TOTAL training steps ({res['total_steps']}): N = 1 trains {res['total_steps']} steps, "
             f"each of the 4 experts {res['total_steps'] // 4}; batch {batch_size(res)}. CBS's profiling "
             "(aux net + monitor) is extra and timed below.",
             f"- sampling: Heun, {sampling_steps(res)} steps in total over the segments (uniform_steps), "
             f"{res['n_samples']} samples; metric `fd_offline` (reported as `fd_randconv`): Fréchet distance in fixed "
             f"random-conv features against {res['n_reference']} CIFAR-10 test images — **not FID**. "
             f"FID: {'computed' if res['fid'] else 'not computed (no Inception weights at ' + str(INCEPTION) + ')'}.",
             (f"- configuration `{res['gin']}` (on gin/cifar10_unet.gin), with these bindings in all configurations: `"
              if "gin" in res else "- bindings on gin/cifar10_unet.gin (all configurations): `")
             + "`, `".join(f"{k} = {v}" for k, v in res["binds"].items()) + "`", "",
             "## Results", "", "| seed | config | boundaries | burden | final loss per expert | NFE | metrics | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for seed, runs in res["runs"].items():
        for c in CONFIGS:
            r = runs[c]
            lines.append(f"| {seed} | {c} | {', '.join(f'{x:.3f}' for x in r['boundaries'])} | "
                         f"{', '.join(f'{x:.3f}' for x in r['burden'])} | {', '.join(f'{x:.4f}' for x in r['final_loss'])} | "
                         f"{r['nfe']} | {', '.join(f'{k} {v:.4f}' for k, v in r['metrics'].items())} | {r['wall_s']:.0f} |")
    lines += ["", f"Real-data floor: fd_randconv of {res['n_samples']} real training images = {res['floor_fd_randconv']:.4f}.",
              "", "Stage times (s): " + "; ".join(f"seed {s} {c}: " + ", ".join(f"{k} {v:.0f}" for k, v in runs[c]["stage_s"].items())
                                                for s, runs in res["runs"].items() for c in CONFIGS), ""]
    for seed, runs in res["runs"].items():
        prof = runs["cbs4"]["profile"]
        lines += [f"## Profile (seed {seed}): {prof['monitor']} on {prof['estimator']}, smoother {prof['smoother']}", "",
                  "| t | value | stderr |", "|---|---|---|"]
        lines += [f"| {t:.3f} | {v:.4g} | {s:.2g} |" for t, v, s in zip(prof["t"], prof["value"], prof["stderr"])]
        lines.append("")
    lines += ["## Reading", "", res["reading"], "", "Commands (per configuration):", ""]
    lines += [f"- `{runs[c]['command']}`" for runs in res["runs"].values() for c in CONFIGS]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=tuple(PRESETS), default="cpu")
    p.add_argument("--quick", action="store_true", help="same as --preset quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--data-dir", default=str(DATA_DIR),
                   help="folder of the CIFAR-10 shards (default: ../shared/data/cifar10 beside this checkout)")
    p.add_argument("--threads", type=int, help="OMP threads of each run (default: the preset's)")
    p.add_argument("--fresh", action="store_true", help="delete the preset's run directories first")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--render", action="store_true", help="only rebuild the reading and the markdown from the JSON")
    args = p.parse_args(argv)
    name = "quick" if args.quick else args.preset
    if args.render:
        path = Path(args.out) / f"splits_cifar10_{name}.json"
        res = json.loads(path.read_text())
        res["reading"] = reading(res)
        print("[reading] " + res["reading"])
        write_json(path, res)
        write_md(res, path.with_suffix(".md"))
        print(f"rebuilt {path.with_suffix('.md')} from {path}")
        return 0
    preset, gin = PRESETS[name], gin_file(name)
    data_dir = str(Path(args.data_dir).resolve())  # the runs work in the repository, the floor here: one folder
    threads = args.threads or preset["threads"]
    import torch

    torch.set_num_threads(threads)
    root = REPO / "runs" / "bench" / "splits_cifar10" / name
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    machine, tic = machine_record(), time.time()
    res = {"preset": name, "machine": machine, "gin": gin, **gin_settings(name), "total_steps": preset["total_steps"],
           "n_samples": preset["n_samples"], "n_reference": preset["n_reference"], "fid": INCEPTION.is_file(),
           "binds": {k: v for k, v in config_binds(preset, "cbs4", 0, data_dir).items()
                     if k not in ("SEED", "N_SEGMENTS", "split.solver", "uniform.n_segments")}, "runs": {}}
    for seed in args.seeds:
        runs = {}
        for config in ("cbs4", "uniform4", "n1"):
            runs[config] = run_config(preset, gin, config, seed, root / f"seed{seed}", data_dir, threads)
        runs["cbs4"]["profile"] = json.loads((root / f"seed{seed}" / "cbs4" / "profile.json").read_text())
        res["runs"][str(seed)] = runs
    res["floor_fd_randconv"] = real_floor(preset, data_dir, preset["n_samples"])
    res["wall_s"], res["finished_utc"] = time.time() - tic, utc_now()
    res["reading"] = reading(res)
    print("[reading] " + res["reading"])
    out = Path(args.out)
    write_json(out / f"splits_cifar10_{name}.json", res)
    write_md(res, out / f"splits_cifar10_{name}.md")
    first = root / f"seed{args.seeds[0]}"
    shutil.copy(first / "cbs4" / "profile.png", out / f"splits_cifar10_{name}_profile.png")
    for c in CONFIGS:
        if (first / c / "samples.png").exists():
            shutil.copy(first / c / "samples.png", out / f"splits_cifar10_{name}_samples_{c}.png")
    print(f"wrote {out / f'splits_cifar10_{name}.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
