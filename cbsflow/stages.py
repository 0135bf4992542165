"""The pipeline stages: profile -> split -> train -> sample -> evaluate.

Each stage is a gin-configurable function that receives its components as arguments, reads the previous
stage's artifact from the run directory and writes its own (``cbsflow.rundir`` owns the layout), stamped with
the provenance the command line gives it. Called with ``run_dir=None`` a stage only builds (and so validates)
its configuration and returns; ``tools/run.py`` does that for every chosen stage first, so a configuration
mistake never leaves a half-updated run directory.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import gin
import numpy as np
import torch

from cbsflow import rundir
from cbsflow.errors import UserError
from cbsflow.metrics import floors
from cbsflow.plotting import metrics_title, plot_samples
from cbsflow.registry import Constructor, Instance, Instances, name_of
from cbsflow.rundir import Provenance
from cbsflow.training import TrainSettings, process_state

# Parameters that do not change a stage's result (which experts this job trains, logging), left out of the
# configuration the stage records, wherever in the stage's components they are.
NOT_IN_DIGEST = {"train": ("segments", "log_every", "checkpoint_every", "log_with", "figures"), "split": ("figures",),
                 "sample": ("figures",), "evaluate": ("figures",)}


def _record(prov: Provenance | None) -> dict:
    return prov.record() if prov is not None else {}


@gin.configurable(module="stage")
def profile(run_dir, prov=None, /, *, estimator: Instance("estimator") = gin.REQUIRED,
            monitor: Instance("monitor") = gin.REQUIRED, dataset: Instance("dataset") = gin.REQUIRED,
            path: Instance("path") = gin.REQUIRED, n_points: int = 64, t_min: float = 0.0, t_max: float = 0.995,
            n_samples: int = 512, smoother: Instance("smoother") | None = None, seed: int = 0) -> None:
    """Measure the monitor on a grid of t with the estimator's velocity field; write profile.json."""
    if not 0.0 <= t_min < t_max <= 1.0 or n_points < 2 or n_samples < 2:
        raise UserError(f"profile: need 0 <= t_min < t_max <= 1, n_points >= 2 and n_samples >= 2, got t_min={t_min}, "
                        f"t_max={t_max}, n_points={n_points}, n_samples={n_samples}")
    if run_dir is None:
        return
    velocity = estimator(dataset, path, seed=seed)
    valid_until = getattr(velocity, "valid_until", 1.0)
    if t_max > valid_until:
        warnings.warn(f"profile: the {name_of(estimator)} field is not the data's beyond t = {valid_until:.3f} (it "
                      f"memorises its points there) but the grid reaches t_max = {t_max}; smooth it (leave "
                      "closed_form.std unset) or lower profile.t_max", stacklevel=2)
    x1, y = dataset.sample(n_samples, seed=seed + 1)
    t = torch.linspace(t_min, t_max, n_points)
    mean, stderr = monitor(velocity, x1, t, path=path, y=y, generator=torch.Generator().manual_seed(seed))
    raw, raw_se = (np.asarray(torch.as_tensor(v, dtype=torch.float64).cpu()) for v in (mean, stderr))
    rundir.check_profile(name_of(monitor), t.numpy(), raw, raw_se)
    if smoother is not None and raw.ndim == 2:
        raise UserError(f"profile.smoother = @{name_of(smoother)}() smooths one value per t, but {name_of(monitor)} "
                        "is a pairwise monitor (an n x n matrix); set profile.smoother = None")
    value, se = smoother(t.numpy(), raw, raw_se) if smoother is not None else (raw, raw_se)
    if not process_state().is_main_process:
        return
    rundir.write_json(rundir.artifact(run_dir, "profile"), {
        "monitor": name_of(monitor), "estimator": name_of(estimator), "t": t.tolist(),
        "value": np.asarray(value, np.float64).tolist(), "stderr": np.asarray(se, np.float64).tolist(),
        "smoother": None if smoother is None else name_of(smoother), "valid_until": valid_until,
        "raw_value": raw.tolist(), "raw_stderr": raw_se.tolist(), **_record(prov)})


@gin.configurable(module="stage")
def split(run_dir, prov=None, /, *, solver: Instance("partition") = gin.REQUIRED,
          path: Instance("path") = gin.REQUIRED, figures: bool = True) -> None:
    """Choose the boundaries with the partition solver; write split.json and (``figures``, where the split read a
    profile) profile.png."""
    from cbsflow.partition import density
    from cbsflow.plotting import plot_profile

    if run_dir is None:
        return
    prof_path = rundir.artifact(run_dir, "profile")
    prof = rundir.read_profile(prof_path) if solver.needs_profile or os.path.exists(prof_path) else None
    if prof is None:
        t, value = np.linspace(0, 1, 2), np.ones(2)
    else:
        t, value = np.asarray(prof["t"], np.float64), np.asarray(prof["value"], np.float64)
    boundaries = rundir.check_boundaries(solver(t, value, path=path), f"solver {name_of(solver)!r}")
    result = {"solver": name_of(solver), "monitor": prof and prof["monitor"], "boundaries": boundaries.tolist(),
              "burden": solver.burden(t, value, boundaries).tolist(), "exponent": solver.exponent,
              "floor": solver.floor, **_record(prov)}
    rundir.write_json(rundir.artifact(run_dir, "split"), result)
    figure = os.path.join(run_dir, "profile.png")
    if figures and prof is not None:
        plot_profile(figure, prof, result, lambda m: density(m, solver.exponent, solver.floor))
    elif prof is None and os.path.exists(figure):  # no profile (uniform, manual, log-SNR): an earlier one's is stale
        os.remove(figure)


@gin.configurable(module="stage")
def train(run_dir, prov=None, /, *, backbone: Constructor("backbone") = gin.REQUIRED,
          dataset: Instance("dataset") = gin.REQUIRED, path: Instance("path") = gin.REQUIRED,
          settings: TrainSettings = gin.REQUIRED, shared_init_steps: int = 0, local_time: bool = False,
          margin: float = 0.0, segments: list[int] | None = None, seed: int = 0,
          adaptation: Instance("adaptation") | None = None, init_from: str | None = None,
          budget: Instance("budget") | None = None, figures: bool = True) -> None:
    """Train one expert per segment on t drawn inside its interval; write checkpoints/segment_k.pt.

    ``settings`` (``@expert/training()`` in gin/base.gin) says how each expert is trained. ``shared_init_steps`` > 0
    first trains a base network on all of [0, 1] and starts every expert from it. ``margin`` > 0 trains each expert
    on its interval widened by that much on both sides (within [0, 1]); it still owns, and samples, only its own
    interval. ``segments`` (e.g. [2], set by ``tools/run.py --segment 2``) trains only those experts, so a cluster
    can train them as independent jobs; checkpoints/train.json is written once every expert is complete.
    ``adaptation`` (``@moving_mesh()``, ``@successive_halving()``) moves the boundaries while the experts train,
    starting from the split's; the final boundaries go back into split.json (the split's own stay there as
    ``initial_boundaries``) and every move into checkpoints/adaptation.json (and adaptation.png unless
    ``figures = False``). ``init_from`` starts every expert (or the shared base) from a pretrained single network:
    this project's checkpoint or an official SiT / DiT state dict (cbsflow/pretrained.py maps the keys).
    ``budget`` (``@steps_by_mass()``, ``@capacity_by_burden()``, ...; cbsflow/budget.py) gives the experts of a fixed
    split different steps or sizes; train.json then lists each expert's steps and parameters.
    """
    from cbsflow.training import TrainingRun

    if not 0.0 <= margin < 1.0:
        raise UserError(f"train.margin must be in [0, 1), got {margin}")
    if local_time and shared_init_steps > 0:
        raise UserError("train: local_time=True rescales t per expert, so a base network trained on global t "
                        "cannot initialise the experts; set train.shared_init_steps = 0")
    if local_time and init_from:
        raise UserError("train: local_time=True rescales t per expert, so a network pretrained on global t cannot "
                        "start the experts; drop train.init_from or train.local_time")
    if adaptation is not None and (segments is not None or local_time):
        raise UserError("train.adaptation moves every expert's interval together: it cannot train one expert per job "
                        "(--segment) nor rescale t per interval (local_time); drop one of them")
    if adaptation is not None and budget is not None:
        raise UserError(f"train.budget = @{name_of(budget)}() shares the steps of a fixed split, but "
                        f"train.adaptation = @{name_of(adaptation)}() sets its own; drop one of them")
    if run_dir is None:
        return
    if adaptation is not None:
        return _adapt(run_dir, prov, adaptation, figures, TrainingRun(
            run_dir, backbone, dataset, path, settings, local_time, seed,
            prov.config_digest if prov is not None else None, margin), shared_init_steps, init_from)
    boundaries = rundir.read_boundaries(run_dir, "train")
    n = len(boundaries) - 1
    todo = list(range(n)) if segments is None else [int(k) for k in segments]
    if any(not 0 <= k < n for k in todo):
        raise UserError(f"train.segments / --segment: {todo} is outside 0..{n - 1} (the split has {n} segments)")
    job = TrainingRun(run_dir, backbone, dataset, path, settings, local_time, seed,
                      prov.config_digest if prov is not None else None, margin)
    job.allocations = _allocations(run_dir, budget, boundaries, settings, backbone)
    base = job.initial_state(init_from, shared_init_steps)
    for k in todo:
        job.expert(k, boundaries, base)
    if process_state().is_main_process and job.all_complete(boundaries):
        rundir.write_json(rundir.artifact(run_dir, "train"), {
            "n_segments": n, "boundaries": boundaries.tolist(), "final_loss": job.final_losses(n),
            "steps_per_segment": settings.steps, "local_time": local_time, **_budgeted(job, budget, n),
            **_skipped(dataset), **_record(prov)})


def _allocations(run_dir, budget, boundaries, settings, backbone) -> list | None:
    """Each expert's steps and network overrides from ``train.budget`` (None: equal steps, no overrides)."""
    from cbsflow.budget import allocate

    if budget is None:
        return None
    prof_path = rundir.artifact(run_dir, "profile")
    profile = rundir.read_profile(prof_path) if budget.needs_profile else None
    return allocate(budget, boundaries, settings.steps, settings.t_sampler, profile, backbone)


def _budgeted(job, budget, n: int) -> dict:
    """train.json's record of a budget: its name, each expert's steps, overrides and parameter count."""
    from cbsflow.segmented import build_network

    if budget is None:
        return {}
    params = [sum(p.numel() for p in build_network(job.backbone, job.dataset, k, job.overrides(k)).parameters())
              for k in range(n)]
    return {"budget": name_of(budget), "steps_per_expert": [job.steps(k) for k in range(n)],
            "overrides_per_expert": [job.overrides(k) for k in range(n)], "parameters_per_expert": params}


def _skipped(dataset) -> dict:
    """Samples the shard reader could not decode this run, by shard (train.json / metrics.json); {} for data in
    memory."""
    from cbsflow.data.shards import skipped_record

    skipped = skipped_record(dataset)
    return {} if skipped is None else {"skipped_samples": skipped}


def _adapt(run_dir, prov, adaptation, figures: bool, job, shared_init_steps: int, init_from: str | None) -> None:
    """The train stage with moving boundaries: train, then publish the final split and train.json."""
    from cbsflow.adaptation import _plot

    path = rundir.artifact(run_dir, "split")
    split = rundir.read_json(path, "train")
    initial = rundir.check_boundaries(split.get("initial_boundaries", split.get("boundaries")), path)
    base = job.initial_state(init_from, shared_init_steps)
    job.origin = initial.tolist()  # every expert's training state is tied to the split the method started from
    final = np.asarray(adaptation(job, initial, base), dtype=float)
    if not process_state().is_main_process:
        return
    record = rundir.read_json(os.path.join(run_dir, "checkpoints", "adaptation.json"), "adaptation")
    # split.json keeps its own provenance (so the split stage stays up to date) and now holds the trained split,
    # named by the method that set it (the split stage's own solver and settings stay as initial_*).
    rundir.write_json(path, _adapted_split(split, adaptation, initial, final, record))
    if figures:
        _plot(run_dir, record, job.settings.steps)
        _plot_adapted_profile(run_dir, record, final)
    n = len(final) - 1
    rundir.write_json(rundir.artifact(run_dir, "train"), {
        "n_segments": n, "boundaries": final.tolist(), "initial_boundaries": initial.tolist(),
        "adaptation": name_of(adaptation), "extra_compute": record.get("extra_compute"),
        "final_loss": job.final_losses(n), "steps_per_segment": job.settings.steps, "local_time": False,
        **_skipped(job.dataset), **_record(prov), "input_digest": rundir.digest(path)})


def _adapted_split(split: dict, adaptation, initial: np.ndarray, final: np.ndarray, record: dict) -> dict:
    """split.json after an adaptation: the final boundaries named by the method, its monitor and density settings
    (where it has them), and the split it started from with the solver that made it."""
    described = record.get("described") or {}
    kept = {k: v for k, v in split.items() if k not in ("burden", "solver", "monitor", "exponent", "floor")}
    return {**kept, "solver": name_of(adaptation), "adapted_by": name_of(adaptation),
            "monitor": described.get("monitor"), "exponent": described.get("exponent"),
            "floor": described.get("floor"),
            **{k: v for k, v in described.items() if k not in ("monitor", "exponent", "floor")},
            "boundaries": final.tolist(), "initial_boundaries": initial.tolist(),
            "initial_solver": split.get("initial_solver", split.get("solver")),
            "initial_monitor": split.get("initial_monitor", split.get("monitor")),
            "initial_exponent": split.get("initial_exponent", split.get("exponent")),
            "initial_floor": split.get("initial_floor", split.get("floor"))}


def _plot_adapted_profile(run_dir: str, record: dict, final: np.ndarray) -> None:
    """profile.png again for a method that measured its own profile while training (warm_split): its monitor, the
    density it cut and the boundaries the experts were trained for."""
    from cbsflow.partition import density
    from cbsflow.plotting import plot_profile

    measured = [h for h in record.get("history", []) if "profile" in h]
    if not measured:
        return
    prof = measured[-1]["profile"]
    shown = {**prof, "monitor": f"{prof.get('monitor', 'monitor')}, shared network",
             "config": {"dirichlet.centred": bool(prof.get("centred"))}}
    exponent, floor = prof.get("exponent"), prof.get("floor")
    split = {"solver": record["method"],
             "boundaries": final.tolist(), "exponent": exponent, "floor": floor}
    plot_profile(os.path.join(run_dir, "profile.png"), shown, split,
                 lambda m: density(m, **{k: v for k, v in (('exponent', exponent), ('floor', floor)) if v is not None}))


def _checked_guidance(dataset, scale: float, interval: tuple[float, float],
                      channels: int | None) -> tuple[float, float]:
    """The sample stage's guidance settings checked (one UserError line each); returns the interval."""
    lo, hi = interval
    if scale != 1.0 and not dataset.num_classes:
        raise UserError("sample.guidance_scale needs class-conditional data (the dataset has num_classes = 0)")
    if not 0.0 <= lo <= hi <= 1.0:
        raise UserError(f"sample.guidance_interval must satisfy 0 <= low <= high <= 1, got {interval}")
    if channels is not None and not 1 <= channels <= dataset.shape[0]:
        raise UserError(f"sample.guidance_channels = {channels}: the data has {dataset.shape[0]} channels; bind 1 to "
                        f"{dataset.shape[0]}, or None to guide them all")
    return lo, hi


def _check_sampling(dataset, n_steps: int, n_samples: int, batch_size: int, mixed_precision: str,
                    autoencoder) -> None:
    """The sample stage's counts, precision and autoencoder checked against the data (one UserError line each)."""
    if n_steps < 1 or n_samples < 1 or batch_size < 1:
        raise UserError(f"sample: n_steps, n_samples and batch_size must be >= 1, got {n_steps}, {n_samples}, {batch_size}")
    if mixed_precision not in ("no", "bf16"):
        raise UserError(f"sample.mixed_precision must be 'no' or 'bf16', got {mixed_precision!r}")
    made_by = getattr(dataset, "metadata", {}).get("autoencoder")
    if autoencoder is not None and made_by and abs(made_by.get("scale", autoencoder.scale) - autoencoder.scale) > 1e-12:
        raise UserError(f"sample.autoencoder: the latent shards were made with scale {made_by['scale']} "
                        f"({made_by.get('path')}), the bound autoencoder has scale {autoencoder.scale}; bind vae.scale")


@gin.configurable(module="stage")
def sample(run_dir, prov=None, /, *, backbone: Constructor("backbone") = gin.REQUIRED,
           dataset: Instance("dataset") = gin.REQUIRED, path: Instance("path") = gin.REQUIRED,
           sampler: Instance("sampler") = gin.REQUIRED, schedule: Instance("schedule") = gin.REQUIRED,
           n_steps: int = 32, n_samples: int = 4096, batch_size: int = 1024, use_ema: bool = True,
           guidance_scale: float = 1.0, guidance_interval: tuple[float, float] = (0.0, 1.0),
           guidance_channels: int | None = None, autoencoder: Instance("autoencoder") | None = None,
           mixed_precision: str = "no", compile: bool = False, seed: int = 0, figures: bool = True) -> None:
    """Generate samples with the segmented model, one expert per segment; write samples.npz + sample.json.

    Image data is stored as uint8 (N, C, H, W) under ``images`` with a PNG grid; other data as float32 under ``x``.
    Labels (``labels``) are drawn uniformly for class-conditional data; ``guidance_scale`` != 1 applies
    classifier-free guidance inside ``guidance_interval``, to the first ``guidance_channels`` channels only when set
    (SiT guides 3 of its 4 latent channels). With an ``autoencoder`` the samples are latents, decoded
    into images before they are stored. Under ``accelerate launch`` every process makes its share of the batches
    (seeded per batch, so the samples do not depend on the number of processes) and the main one gathers them.
    ``mixed_precision = 'bf16'`` samples under bf16 autocast, ``compile`` runs every expert through torch.compile.
    ``figures = False`` skips samples.png (as tools/landscape.py does for its many runs).
    """
    from cbsflow.samplers import generate
    from cbsflow.segmented import load_segmented

    lo, hi = _checked_guidance(dataset, guidance_scale, guidance_interval, guidance_channels)
    _check_sampling(dataset, n_steps, n_samples, batch_size, mixed_precision, autoencoder)
    if run_dir is None:
        return
    state = process_state()
    model = load_segmented(run_dir, backbone, dataset, path, use_ema=use_ema).eval().to(state.device)
    if compile:
        for expert in model.experts:
            expert.net = torch.compile(expert.net)
    grids = schedule(model.boundaries.cpu().numpy(), n_steps)
    guidance = (guidance_scale, (lo, hi), dataset.num_classes, guidance_channels) if guidance_scale != 1.0 else None
    only = {"channels": guidance_channels} if guidance_channels is not None else {}
    batches, nfe = generate(model, sampler, grids, dataset.shape, dataset.num_classes, n_samples, batch_size, seed,
                            state.process_index, state.num_processes, guidance, path,
                            _autocast(state.device, mixed_precision))
    samples, labels = _gathered(batches, state)
    if not state.is_main_process:
        return
    info = {"sampler": name_of(sampler), "schedule": name_of(schedule), "steps": n_steps, "nfe": nfe,
            "steps_per_segment": [len(g) - 1 for g in grids], "n_samples": n_samples, "ema": use_ema, "seed": seed,
            "guidance": {"scale": guidance_scale, "interval": [lo, hi], **only} if guidance else None,
            "processes": state.num_processes, "mixed_precision": mixed_precision, "compile": compile,
            "decoded_by": autoencoder.describe() if autoencoder is not None else None}
    images = dataset.is_image or autoencoder is not None
    if autoencoder is not None:
        samples = autoencoder.decode(samples)
    rundir.save_samples(run_dir, samples, labels, images)
    if figures:
        reference, _ = dataset.sample(min(len(samples), 64 if images else 5000), seed=2**31 - 1)  # drawn beside them
        if autoencoder is not None:
            reference = autoencoder.decode(reference)
        plot_samples(os.path.join(run_dir, "samples.png"), samples, reference,
                     f"{model.n_segments} expert(s), NFE {nfe}, {name_of(sampler)}")
    rundir.write_json(rundir.artifact(run_dir, "sample"), {**info, **_record(prov)})


def _autocast(device: torch.device, mixed_precision: str):
    if mixed_precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _gathered(batches: list, state) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every process's (index, samples, labels) batches, in index order, on the main process (others: their own)."""
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        batches = gather_object(batches)
    batches = sorted(batches, key=lambda b: b[0])
    samples = torch.cat([b[1] for b in batches])
    labels = None if batches[0][2] is None else torch.cat([b[2] for b in batches])
    return samples, labels


def resolves_from_floor(result: dict) -> str | None:
    """Whether this sample size can tell the value from a perfect model's: 'yes' when it is more than 2 s.d. of the
    floor's draws away from the floor, 'no' when within (the metric sits on its floor: compare models on another
    one, or with more samples), None where the floor has no spread."""
    floor = result.get("floor") or {}
    if floor.get("sd") is None or "value" not in result:
        return None
    return "yes" if abs(result["value"] - floor["value"]) > 2 * floor["sd"] else "no"


@gin.configurable(module="stage")
def evaluate(run_dir, prov=None, /, *, dataset: Instance("dataset") = gin.REQUIRED,
             metrics: Instances("metric") = (), backbone: Constructor("backbone") = gin.REQUIRED,
             path: Instance("path") = gin.REQUIRED, floor_draws: int = 3, reference_seed: int = 2**31 - 1,
             figures: bool = True) -> None:
    """Score the samples against fresh data with every metric; write metrics.json (+ samples.png with the values).

    Every sample metric also gets its *floor*: the same metric of ``floor_draws`` fresh draws of true data of the
    same size against the same reference, i.e. what a perfect model would score (0 draws: no floor). Metrics that
    know a reference of their own (the data's entropy for the NLL) report it as their floor. Metrics that score the
    model itself (the NLL) load the experts; under ``accelerate launch`` image features are extracted data-parallel.
    """
    from cbsflow.data.shards import skipped_record
    from cbsflow.segmented import load_segmented

    if floor_draws < 0:
        raise UserError(f"evaluate.floor_draws must be >= 0, got {floor_draws}")
    if run_dir is None:
        return
    info = rundir.read_json(rundir.artifact(run_dir, "sample"), "evaluate")
    samples = rundir.load_samples(run_dir, "evaluate")
    velocity = None
    if any(not getattr(m, "compares_samples", True) for m in metrics):
        velocity = load_segmented(run_dir, backbone, dataset, path, use_ema=info.get("ema", True)).eval()
    sampling = {k: v for k, v in info.items() if k not in ("steps_per_segment", "config", "config_digest", "input_digest")}
    results = {}
    for metric in metrics:
        for name, result in metric(samples=samples, dataset=dataset, velocity=velocity, seed=reference_seed).items():
            # Every number carries the settings that produced it: the metric's own and the sampling run's.
            results[name] = {"value": result["value"], "settings": {**result.get("settings", {}), "sampling": sampling}}
            if "floor" in result:
                results[name]["floor"] = result["floor"]
        if getattr(metric, "compares_samples", True) and floor_draws:
            for name, floor in floors(metric, dataset, len(samples), floor_draws, reference_seed).items():
                results.setdefault(name, {})["floor"] = floor
    for result in results.values():
        result["resolves"] = resolves_from_floor(result)
    if not process_state().is_main_process:
        return
    skipped = skipped_record(dataset)  # the reference data's unreadable samples, by shard (sharded data only)
    rundir.write_json(rundir.artifact(run_dir, "evaluate"), {
        "nfe": info["nfe"], "sampling": {**sampling, "steps_per_segment": info.get("steps_per_segment")},
        "metrics": results, **({"skipped_samples": skipped} if skipped is not None else {}), **_record(prov)})
    if not figures:
        return
    n_experts = len(rundir.read_boundaries(run_dir, "evaluate")) - 1
    reference, _ = dataset.sample(min(len(samples), 64 if samples.dim() == 4 else 5000), seed=reference_seed)
    plot_samples(os.path.join(run_dir, "samples.png"), samples, reference, metrics_title(n_experts, info["nfe"], results))


STAGES = {"profile": profile, "split": split, "train": train, "sample": sample, "evaluate": evaluate}
assert tuple(STAGES) == rundir.STAGE_ORDER
