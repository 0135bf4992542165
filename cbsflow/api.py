"""A trained run directory as a Python object: ``run = cbsflow.load_run('runs/quickstart')``.

The run's own records rebuild what it used: ``sample.json`` (or ``checkpoints/train.json``) holds the effective
configuration of its stage — the backbone with its settings, the dataset, the path, the sampler and schedule — and
``split.json`` with the checkpoints gives the experts and their boundaries. Nothing has to be retyped::

    import cbsflow
    run = cbsflow.load_run("runs/quickstart")
    x = run.sample()                       # what samples.npz holds, bit for bit (recorded n, seed, steps)
    x = run.sample(1000, seed=3, steps=8)  # anything else
    v = run.velocity(x, torch.full((1000,), 0.5))
    run.boundaries, run.config["sample"]["sample.sampler"]

Loading parses the recorded bindings into gin, replacing the process's gin configuration. Components that came from
``--import`` modules must be importable: pass ``imports=['my_module']``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
from typing import Any, Sequence

import gin
import torch

from cbsflow import rundir
from cbsflow.errors import UserError

_PARAMS = ("backbone", "dataset", "path", "sampler", "schedule", "n_steps", "n_samples", "batch_size", "use_ema",
           "guidance_scale", "guidance_interval", "autoencoder", "mixed_precision", "seed")


@gin.configurable("loaded_run", module="cbsflow.api")
def _components(backbone=gin.REQUIRED, dataset=gin.REQUIRED, path=gin.REQUIRED, sampler=None, schedule=None,
                n_steps: int = 32, n_samples: int = 4096, batch_size: int = 1024, use_ema: bool = True,
                guidance_scale: float = 1.0, guidance_interval=(0.0, 1.0), autoencoder=None, mixed_precision="no",
                seed: int = 0) -> dict:
    """What gin builds from the recorded bindings (the sample stage's parameters under the name ``loaded_run``)."""
    return dict(locals())


def _gin_value(value: Any) -> str:
    """A recorded (JSON) value as gin text: '@name()' and '%MACRO' strings are references, other strings quoted."""
    if isinstance(value, str):
        return value if value.startswith(("@", "%")) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_gin_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_gin_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


class Run:
    """A trained run: its experts as one velocity field, the components it used, and its recorded settings."""

    def __init__(self, run_dir: str, model, parts: dict, config: dict[str, dict]):
        self.run_dir, self.model, self.parts, self.config = run_dir, model, parts, config
        self.dataset, self.path = parts["dataset"], parts["path"]
        self.sampler, self.schedule = parts["sampler"], parts["schedule"]

    @property
    def boundaries(self) -> list[float]:
        return self.model.boundaries.tolist()

    @torch.no_grad()
    def velocity(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """v(x, t, y) of the expert that owns each sample's t."""
        return self.model(x, t, y)

    @torch.no_grad()
    def sample(self, n: int | None = None, seed: int | None = None, steps: int | None = None,
               batch_size: int | None = None, return_labels: bool = False):
        """Samples as the sample stage makes them (one process); the recorded settings where an argument is None,
        so ``run.sample()`` equals the run's samples.npz (before its uint8 rounding, for images)."""
        from cbsflow.samplers import generate

        p = self.parts
        if self.sampler is None or self.schedule is None:
            raise UserError(f"{self.run_dir}: no sampler recorded (sample.json is missing); run --stages sample once")
        n, seed = n or p["n_samples"], p["seed"] if seed is None else seed
        grids = self.schedule(self.model.boundaries.cpu().numpy(), steps or p["n_steps"])
        guidance = ((p["guidance_scale"], tuple(p["guidance_interval"]), self.dataset.num_classes)
                    if p["guidance_scale"] != 1.0 else None)
        batches, _ = generate(self.model, self.sampler, grids, self.dataset.shape, self.dataset.num_classes, n,
                              batch_size or p["batch_size"], seed, 0, 1, guidance, self.path, contextlib.nullcontext)
        batches = sorted(batches, key=lambda b: b[0])
        x = torch.cat([b[1] for b in batches])
        if p["autoencoder"] is not None:
            x = p["autoencoder"].decode(x)
        labels = None if batches[0][2] is None else torch.cat([b[2] for b in batches])
        return (x, labels) if return_labels else x


def load_run(run_dir: str, use_ema: bool | None = None, imports: Sequence[str] = ()) -> Run:
    """Rebuild a trained run from its records (see the module docstring); ``use_ema`` None: as it sampled."""
    from cbsflow.segmented import load_segmented

    for name in imports:
        importlib.import_module(name)
    import cbsflow.components  # noqa: F401  (every built-in component known to gin)

    records = {}
    for stage in ("profile", "split", "train", "sample", "evaluate"):
        path = rundir.artifact(run_dir, stage)
        if os.path.exists(path):
            records[stage] = rundir.read_json(path, "load_run").get("config") or {}
    if "train" not in records:
        raise UserError(f"load_run: {run_dir} has no trained experts (no checkpoints/train.json); run --stages train")
    source = records.get("sample") or records["train"]
    stage = "sample" if "sample" in records else "train"
    lines = []
    for key, value in source.items():
        selector, _, param = key.rpartition(".")
        if selector == stage:
            if param in _PARAMS:
                lines.append(f"cbsflow.api.loaded_run.{param} = {_gin_value(value)}")
        elif not selector.startswith(("sample", "train")) and param not in _call_arguments(selector):
            lines.append(f"{key} = {_gin_value(value)}")
    gin.clear_config()
    try:
        gin.parse_config("\n".join(lines))
        parts = _components()
    except Exception as err:  # noqa: BLE001 -- an unknown component (a missing --import) or a changed signature
        raise UserError(f"load_run: cannot rebuild {run_dir} from its records ({str(err).strip().splitlines()[0]}); "
                        "pass imports=[...] for components from --import modules") from None
    if use_ema is not None:
        parts["use_ema"] = use_ema
    model = load_segmented(run_dir, parts["backbone"], parts["dataset"], parts["path"], use_ema=parts["use_ema"]).eval()
    return Run(run_dir, model, parts, records)


def _call_arguments(selector: str) -> tuple[str, ...]:
    """Parameters a component receives from its caller (a sampler's y, path, generator), never bound."""
    from cbsflow import registry

    try:
        obj = registry.get(selector.split("/")[-1]).obj
    except KeyError:
        return ()
    if inspect.isfunction(getattr(obj, "__wrapped__", obj)) and registry.get(selector.split("/")[-1]).kind == "sampler":
        return ("velocity", "x", "t_grid", "y", "path", "generator")
    return ()
