"""The pipeline stages: profile -> split -> train -> sample -> evaluate.

Each stage is a gin-configurable function that receives its components as arguments, reads the previous
stage's artifact from the run directory and writes its own. Called with ``run_dir=None`` a stage only
builds (and so validates) its configuration and returns; ``tools/run.py`` does that for every stage first,
so a configuration mistake never leaves a half-updated run directory.
"""

from __future__ import annotations

import os

import gin
import numpy as np
import torch
from tqdm.auto import tqdm

from cbsflow import rundir
from cbsflow.errors import UserError
from cbsflow.partition import check_boundaries
from cbsflow.registry import name_of
from cbsflow.training import fit, process_state

PROFILE, SPLIT, TRAIN, SAMPLES, METRICS = "profile.json", "split.json", "checkpoints/train.json", "sample.json", "metrics.json"
# Each stage's artifact and the artifact it reads (its output is stale when that input changed).
ARTIFACTS = {"profile": (PROFILE, None), "split": (SPLIT, PROFILE), "train": (TRAIN, SPLIT),
             "sample": (SAMPLES, TRAIN), "evaluate": (METRICS, SAMPLES)}


def is_done(run_dir: str, stage: str) -> bool:
    artifact, upstream = ARTIFACTS[stage]
    return rundir.is_current(os.path.join(run_dir, artifact), upstream and os.path.join(run_dir, upstream))


def _upstream(run_dir: str, stage: str) -> str | None:
    return rundir.digest(os.path.join(run_dir, ARTIFACTS[stage][1]))


@gin.configurable(module="stage")
def profile(run_dir, estimator=gin.REQUIRED, monitor=gin.REQUIRED, dataset=gin.REQUIRED, path=gin.REQUIRED,
            n_points: int = 64, t_min: float = 0.0, t_max: float = 0.995, n_samples: int = 512,
            smoother=None, seed: int = 0) -> None:
    """Measure the monitor on a grid of t with the estimator's velocity field; write profile.json."""
    if not 0.0 <= t_min < t_max <= 1.0 or n_points < 2:
        raise UserError(f"profile: need 0 <= t_min < t_max <= 1 and n_points >= 2, got {t_min}, {t_max}, {n_points}")
    if run_dir is None:
        return
    velocity = estimator(dataset, path, seed=seed)
    x1, y = dataset.sample(n_samples, seed=seed + 1)
    t = torch.linspace(t_min, t_max, n_points)
    mean, stderr = monitor(velocity, x1, t, path=path, y=y, generator=torch.Generator().manual_seed(seed))
    raw, raw_se = (np.asarray(torch.as_tensor(v, dtype=torch.float64).cpu()) for v in (mean, stderr))
    _check_monitor(name_of(monitor), t.numpy(), raw, raw_se)
    value, se = smoother(t.numpy(), raw, raw_se) if smoother is not None else (raw, raw_se)
    if not process_state().is_main_process:
        return
    rundir.write_json(os.path.join(run_dir, PROFILE), {
        "monitor": name_of(monitor), "estimator": name_of(estimator), "t": t.tolist(),
        "value": list(map(float, value)), "stderr": list(map(float, se)),
        "smoother": None if smoother is None else name_of(smoother),
        "raw_value": raw.tolist(), "raw_stderr": raw_se.tolist()})


def _check_monitor(name: str, t, value, stderr) -> None:
    """A monitor must return finite, non-negative values shaped like t."""
    if value.shape != t.shape or stderr.shape != t.shape:
        raise UserError(f"monitor {name!r} returned {value.shape} values for a grid of {t.shape}; return (mean, stderr) per t")
    bad = ~np.isfinite(value) | (value < 0) | ~np.isfinite(stderr)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"monitor {name!r} returned {value[i]} (stderr {stderr[i]}) at t = {t[i]:.4f}; "
                        "monitors must be finite and >= 0")


def load_profile(path: str) -> dict:
    """Read and validate profile.json (it may be written by hand)."""
    prof = rundir.read_json(path, "split")
    for key in ("t", "value"):
        if not isinstance(prof.get(key), list) or len(prof[key]) < 2:
            raise UserError(f"{path}: '{key}' must be a list of at least 2 numbers")
    prof.setdefault("stderr", [0.0] * len(prof["value"]))
    prof.setdefault("monitor", "unknown")
    try:
        t, value, se = (np.asarray(prof[k], dtype=np.float64) for k in ("t", "value", "stderr"))
    except (TypeError, ValueError):
        raise UserError(f"{path}: 't', 'value' and 'stderr' must be lists of numbers")
    if not (t.shape == value.shape == se.shape) or t.ndim != 1:
        raise UserError(f"{path}: 't', 'value' and 'stderr' must have the same length")
    if not (np.all(np.diff(t) > 0) and t[0] >= 0 and t[-1] <= 1):
        raise UserError(f"{path}: 't' must increase strictly within [0, 1]")
    _check_monitor(prof["monitor"], t, value, se)
    return prof


@gin.configurable(module="stage")
def split(run_dir, solver=gin.REQUIRED) -> None:
    """Choose the boundaries with the partition solver; write split.json and profile.png."""
    from cbsflow.partition import density
    from cbsflow.plotting import plot_profile

    if run_dir is None:
        return
    prof_path = os.path.join(run_dir, PROFILE)
    prof = load_profile(prof_path) if solver.needs_profile or os.path.exists(prof_path) else None
    if prof is None:
        t, value = np.linspace(0, 1, 2), np.ones(2)
    else:
        t, value = np.asarray(prof["t"], np.float64), np.asarray(prof["value"], np.float64)
    boundaries = check_boundaries(solver(t, value), f"solver {name_of(solver)!r}")
    result = {"solver": name_of(solver), "monitor": prof and prof["monitor"], "boundaries": boundaries.tolist(),
              "burden": solver.burden(t, value, boundaries).tolist(), "exponent": solver.exponent,
              "floor": solver.floor, "upstream": _upstream(run_dir, "split")}
    rundir.write_json(os.path.join(run_dir, SPLIT), result)
    plot_profile(os.path.join(run_dir, "profile.png"), prof, result,
                 lambda m: density(m, solver.exponent, solver.floor))


def _boundaries(run_dir: str) -> np.ndarray:
    split_json = rundir.read_json(os.path.join(run_dir, SPLIT), "train")
    return check_boundaries(split_json.get("boundaries"), os.path.join(run_dir, SPLIT))


@gin.configurable(module="stage")
def train(run_dir, backbone=gin.REQUIRED, dataset=gin.REQUIRED, path=gin.REQUIRED, steps_per_segment: int = 1000,
          batch_size: int = 256, lr: float = 1e-3, shared_init_steps: int = 0, t_sampler=None,
          ema_decay: float = 0.0, grad_clip: float = 1.0, warmup_steps: int = 0, grad_accum: int = 1,
          class_dropout: float = 0.0, betas=(0.9, 0.999), weight_decay: float = 0.0, local_time: bool = False,
          mixed_precision: str = "no", checkpoint_every: int = 0, log_every: int = 50, segments=None,
          seed: int = 0) -> None:
    """Train one expert per segment on t drawn inside its interval; write checkpoints/segment_k.pt.

    ``shared_init_steps`` > 0 first trains a base network on all of [0, 1] and starts every expert from it.
    ``segments`` (e.g. [2], set by ``tools/run.py --segment 2``) trains only those experts, so a cluster can
    train them as independent jobs; checkpoints/train.json is written once every expert is complete.
    """
    from cbsflow.segmented import checkpoint_path

    if local_time and shared_init_steps > 0:
        raise UserError("train: local_time=True rescales t per expert, so a base network trained on global t "
                        "cannot initialise the experts; set train.shared_init_steps = 0")
    if run_dir is None:
        return
    boundaries = _boundaries(run_dir)
    n = len(boundaries) - 1
    todo = list(range(n)) if segments is None else [int(k) for k in segments]
    if any(not 0 <= k < n for k in todo):
        raise UserError(f"train.segments / --segment: {todo} is outside 0..{n - 1} (the split has {n} segments)")
    settings = dict(path=path, batch_size=batch_size, lr=lr, t_sampler=t_sampler, ema_decay=ema_decay,
                    grad_clip=grad_clip, warmup_steps=warmup_steps, grad_accum=grad_accum, betas=betas,
                    class_dropout=class_dropout, weight_decay=weight_decay, mixed_precision=mixed_precision,
                    checkpoint_every=checkpoint_every, log_every=log_every)
    build = lambda: backbone(data_shape=dataset.shape, num_classes=dataset.num_classes)  # noqa: E731
    base = _shared_base(run_dir, build, dataset, shared_init_steps, seed, settings) if shared_init_steps else None
    main_process = process_state().is_main_process
    for k in todo:
        interval = (float(boundaries[k]), float(boundaries[k + 1]))
        if _complete(checkpoint_path(run_dir, k), interval, steps_per_segment):
            print(f"[train] expert {k + 1}/{n} is complete, skipped")
            continue
        torch.manual_seed(seed + k)
        net = build()
        if base is not None:
            net.load_state_dict(base)
        wrapped = _LocalTime(net, interval) if local_time else net
        out = fit(wrapped, dataset, interval=interval, steps=steps_per_segment, seed=seed + 1000 * (k + 1),
                  state_dir=os.path.join(run_dir, "checkpoints", f"segment_{k}"),
                  desc=f"expert {k + 1}/{n} [{interval[0]:.3f}, {interval[1]:.3f})", **settings)
        ema = out["ema"].net if local_time and out["ema"] is not None else out["ema"]
        if main_process:
            _save(checkpoint_path(run_dir, k), {"state_dict": net.state_dict(), "ema": ema and ema.state_dict(),
                                                "interval": list(interval), "steps": steps_per_segment,
                                                "loss": out["loss"]})
    if main_process and all(_complete(checkpoint_path(run_dir, k), (float(boundaries[k]), float(boundaries[k + 1])),
                                      steps_per_segment) for k in range(n)):
        losses = [torch.load(checkpoint_path(run_dir, k), map_location="cpu", weights_only=True)["loss"]
                  for k in range(n)]
        rundir.write_json(os.path.join(run_dir, TRAIN), {
            "n_segments": n, "boundaries": boundaries.tolist(), "final_loss": losses,
            "steps_per_segment": steps_per_segment, "local_time": local_time, "upstream": _upstream(run_dir, "train")})


def _complete(path: str, interval, steps: int) -> bool:
    """A finished expert checkpoint for exactly this interval and step count."""
    if not os.path.exists(path):
        return False
    state = torch.load(path, map_location="cpu", weights_only=True)
    return np.allclose(state.get("interval", [-1, -1]), interval) and state.get("steps") == steps


def _shared_base(run_dir, build, dataset, steps, seed, settings) -> dict:
    """Weights of a base network trained on all of [0, 1] (trained once, then read from checkpoints/base.pt)."""
    path = os.path.join(run_dir, "checkpoints", "base.pt")
    if _complete(path, (0.0, 1.0), steps):
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    torch.manual_seed(seed)
    net = build()
    out = fit(net, dataset, interval=(0.0, 1.0), steps=steps, seed=seed,
              state_dir=os.path.join(run_dir, "checkpoints", "base"), desc="shared base", **settings)
    if process_state().is_main_process:
        _save(path, {"state_dict": net.state_dict(), "ema": None, "interval": [0.0, 1.0], "steps": steps,
                     "loss": out["loss"]})
    return net.state_dict()


class _LocalTime(torch.nn.Module):
    """Feeds a network t rescaled to [0, 1] within its interval (see SegmentedVelocity.local_time)."""

    def __init__(self, net, interval):
        super().__init__()
        self.net, (self.a, self.b) = net, interval

    def forward(self, x, t, y=None):
        return self.net(x, (t - self.a) / (self.b - self.a), y)


def _save(path: str, state: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


@gin.configurable(module="stage")
def sample(run_dir, backbone=gin.REQUIRED, dataset=gin.REQUIRED, sampler=gin.REQUIRED, schedule=gin.REQUIRED,
           n_steps: int = 32, n_samples: int = 4096, batch_size: int = 1024, use_ema: bool = True,
           guidance_scale: float = 1.0, guidance_interval=(0.0, 1.0), seed: int = 0) -> None:
    """Generate samples with the segmented model, one expert per segment; write samples.npz + sample.json.

    Image data is stored as uint8 (N, C, H, W) under ``images`` with a PNG grid; other data as float32 under ``x``.
    Labels (``labels``) are drawn uniformly for class-conditional data; ``guidance_scale`` != 1 applies
    classifier-free guidance inside ``guidance_interval``.
    """
    from cbsflow.samplers import sample_segmented
    from cbsflow.segmented import load_segmented

    lo, hi = guidance_interval
    if guidance_scale != 1.0 and not dataset.num_classes:
        raise UserError("sample.guidance_scale needs class-conditional data (the dataset has num_classes = 0)")
    if not 0.0 <= lo <= hi <= 1.0:
        raise UserError(f"sample.guidance_interval must satisfy 0 <= low <= high <= 1, got {guidance_interval}")
    if run_dir is None:
        return
    rundir.read_json(os.path.join(run_dir, TRAIN), "sample")
    model = load_segmented(run_dir, backbone, dataset, use_ema=use_ema).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    grids = schedule(model.boundaries.cpu().numpy(), n_steps)
    guidance = (guidance_scale, (lo, hi), dataset.num_classes) if guidance_scale != 1.0 else None
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # stochastic samplers draw from the global generator
    xs, ys, nfe = [], [], 0
    for start in tqdm(range(0, n_samples, batch_size), desc="sample", leave=False):
        n = min(batch_size, n_samples - start)
        x0 = torch.randn((n,) + tuple(dataset.shape), generator=gen)
        y = torch.randint(0, dataset.num_classes, (n,), generator=gen) if dataset.num_classes else None
        x, nfe = sample_segmented(model, sampler, grids, x0.to(device), None if y is None else y.to(device), guidance)
        xs.append(x.float().cpu())
        ys.append(y)
    _write_samples(run_dir, torch.cat(xs), None if ys[0] is None else torch.cat(ys), dataset.is_image)
    rundir.write_json(os.path.join(run_dir, SAMPLES), {
        "sampler": name_of(sampler), "schedule": name_of(schedule), "steps": n_steps, "nfe": nfe,
        "steps_per_segment": [len(g) - 1 for g in grids], "n_samples": n_samples, "ema": use_ema, "seed": seed,
        "guidance": {"scale": guidance_scale, "interval": [lo, hi]} if guidance else None,
        "upstream": _upstream(run_dir, "sample")})


def _write_samples(run_dir: str, x: torch.Tensor, y, is_image: bool) -> None:
    arrays = {} if y is None else {"labels": y.numpy()}
    if is_image:
        images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        arrays["images"] = images.numpy()
        from torchvision.utils import save_image

        save_image(images[:64].float() / 255, os.path.join(run_dir, "samples.png"), nrow=8)
    else:
        arrays["x"] = x.numpy()
    tmp = os.path.join(run_dir, "samples.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(run_dir, "samples.npz"))


def load_samples(run_dir: str) -> torch.Tensor:
    """Samples in data space: images back to [-1, 1] floats."""
    with np.load(os.path.join(run_dir, "samples.npz")) as f:
        if "images" in f:
            return torch.from_numpy(f["images"]).float() / 127.5 - 1
        return torch.from_numpy(f["x"])


@gin.configurable(module="stage")
def evaluate(run_dir, dataset=gin.REQUIRED, metrics=(), backbone=gin.REQUIRED, reference_seed: int = 2**31 - 1) -> None:
    """Score the samples against fresh data with every metric; write metrics.json (+ a scatter plot in 2-D)."""
    from cbsflow.plotting import plot_scatter
    from cbsflow.segmented import load_segmented

    if run_dir is None:
        return
    info = rundir.read_json(os.path.join(run_dir, SAMPLES), "evaluate")
    samples = load_samples(run_dir)
    velocity = load_segmented(run_dir, backbone, dataset, use_ema=info.get("ema", True)).eval()
    sampling = {k: v for k, v in info.items() if k not in ("upstream", "steps_per_segment")}
    results = {}
    for metric in metrics:
        for name, result in metric(samples=samples, dataset=dataset, velocity=velocity, seed=reference_seed).items():
            # Every number carries the settings that produced it: the metric's own and the sampling run's.
            results[name] = {"value": result["value"], "settings": {**result.get("settings", {}), "sampling": sampling}}
    sampling["steps_per_segment"] = info.get("steps_per_segment")
    rundir.write_json(os.path.join(run_dir, METRICS), {"nfe": info["nfe"], "sampling": sampling, "metrics": results,
                                                       "upstream": _upstream(run_dir, "evaluate")})
    if samples[0].numel() == 2:
        ref, _ = dataset.sample(min(len(samples), 5000), seed=reference_seed)
        plot_scatter(os.path.join(run_dir, "samples.png"), samples[:5000].reshape(-1, 2).numpy(),
                     ref.reshape(-1, 2).numpy(), f"{len(boundaries_of(run_dir)) - 1} experts, NFE {info['nfe']}")


def boundaries_of(run_dir: str) -> list[float]:
    return rundir.read_json(os.path.join(run_dir, SPLIT), "evaluate")["boundaries"]


STAGES = {"profile": profile, "split": split, "train": train, "sample": sample, "evaluate": evaluate}
