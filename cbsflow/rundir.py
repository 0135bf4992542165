"""The run directory: the stages, the artifact each writes, atomic writers, readers that raise user errors, and
whether an artifact is up to date.

Layout (every path below is relative to the run directory):

    profile.json              profile   the monitor on a grid of t
    split.json                split     the boundaries (+ profile.png)
    checkpoints/segment_k.pt  train     expert k; checkpoints/segment_k/ holds its resumable state and log
    checkpoints/train.json    train     written once every expert is complete
    samples.npz, sample.json  sample    the samples (+ samples.png)
    metrics.json              evaluate  every metric with its settings (+ samples.png)

Each stage artifact records its provenance: the stage's effective configuration (every setting it ran with),
that configuration's digest, and the digest of the artifact it read. A stage is up to date when both digests
match the current configuration and the current input; a changed input changes the artifact made from it, so
staleness runs down the pipeline by itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Any

import numpy as np
import torch

from cbsflow.errors import UserError

# The pipeline, in order: stage -> (artifact it writes, stage whose artifact it reads).
STAGES: dict[str, tuple[str, str | None]] = {
    "profile": ("profile.json", None),
    "split": ("split.json", "profile"),
    "train": ("checkpoints/train.json", "split"),
    "sample": ("sample.json", "train"),
    "evaluate": ("metrics.json", "sample"),
}
STAGE_ORDER = tuple(STAGES)
SAMPLES = "samples.npz"


def artifact(run_dir: str, stage: str) -> str:
    """Path of the artifact ``stage`` writes."""
    return os.path.join(run_dir, STAGES[stage][0])


def input_stage(stage: str) -> str | None:
    return STAGES[stage][1]


def checkpoint_path(run_dir: str, k: int) -> str:
    """Expert k's final weights."""
    return os.path.join(run_dir, "checkpoints", f"segment_{k}.pt")


def state_dir(run_dir: str, name: str) -> str:
    """Folder of one network's resumable training state and log (name: 'segment_k' or 'base')."""
    return os.path.join(run_dir, "checkpoints", name)


def exists(path: str) -> bool:
    return os.path.exists(path)


# ----------------------------------------------------------------------------------------------- writers

def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (else set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: str, write) -> None:
    """Write through a temporary file in the same folder, flush it to disk and rename it, so that a killed run never
    leaves half a file; a failed write (a full disk) leaves the previous file as it was and raises one user error."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; an artifact gets what open() would give it
    finally:
        os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
        reason = getattr(err, "strerror", None) or (str(err).strip().splitlines() or [type(err).__name__])[-1]
        raise UserError(f"cannot write {path} ({reason}); "
                        f"{'the previous file is intact' if os.path.exists(path) else 'nothing was written'}: "
                        "free space (or fix the permissions) and rerun") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, data: dict) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)

    _atomic(path, write)


def write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    _atomic(path, write)


def save_checkpoint(path: str, state: dict) -> None:
    _atomic(path, lambda tmp: torch.save(state, tmp))


def save_npz(path: str, **arrays: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _atomic(path, write)


# ----------------------------------------------------------------------------------------------- readers

def read_json(path: str, what: str) -> dict:
    """Read a JSON artifact, turning a missing or malformed file into a one-line user error (``what`` needs it)."""
    if not os.path.exists(path):
        raise UserError(f"{what}: {path} not found; run the stage that writes it first")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{what}: {path} is not valid JSON ({err})")
    if not isinstance(data, dict):
        raise UserError(f"{what}: {path} must hold a JSON object")
    return data


def load_checkpoint(path: str) -> dict:
    """A cbsflow checkpoint file (a dict with 'state_dict'), or a user error saying what is wrong with it."""
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; train the expert first (--stages train)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files raise pickle, zip and runtime errors alike
        raise UserError(f"{path} is not a readable checkpoint ({type(err).__name__}); delete it and retrain")
    if not isinstance(state, dict) or "state_dict" not in state:
        raise UserError(f"{path} is not a cbsflow checkpoint (no 'state_dict')")
    return state


def check_boundaries(boundaries, where: str) -> np.ndarray:
    """Validate boundaries: strictly increasing, from exactly 0 to exactly 1."""
    try:
        b = np.asarray(boundaries, dtype=np.float64)
    except (TypeError, ValueError):
        b = np.asarray([np.nan])
    if b.ndim != 1 or len(b) < 2 or b[0] != 0.0 or b[-1] != 1.0 or not np.all(np.diff(b) > 0):
        shown = list(b) if b.ndim == 1 else boundaries
        raise UserError(f"{where}: boundaries must increase strictly from 0 to 1 (e.g. [0, 0.5, 1]), got {shown}")
    return b


def read_boundaries(run_dir: str, what: str) -> np.ndarray:
    path = artifact(run_dir, "split")
    return check_boundaries(read_json(path, what).get("boundaries"), path)


# ----------------------------------------------------------------------------------------------- provenance

def digest(path: str) -> str | None:
    """SHA-256 prefix of a file's bytes (None if absent)."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def config_digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What a stage ran with: its effective configuration and the digest of the artifact it read."""

    config: dict[str, Any]
    input_digest: str | None

    @property
    def config_digest(self) -> str:
        return config_digest(self.config)

    def record(self) -> dict[str, Any]:
        """The keys every artifact carries."""
        return {"config_digest": self.config_digest, "input_digest": self.input_digest, "config": self.config}


def provenance(run_dir: str, stage: str, config: dict[str, Any]) -> Provenance:
    """The provenance ``stage`` would record if it ran now."""
    upstream = input_stage(stage)
    return Provenance(config, upstream and digest(artifact(run_dir, upstream)))


def why_stale(run_dir: str, stage: str, config: dict[str, Any]) -> str | None:
    """None if the stage's artifact is up to date with ``config`` and its input; otherwise the reason, in words.

    An artifact without recorded provenance (written by hand, or by a script) is taken as given.
    """
    path = artifact(run_dir, stage)
    if not os.path.exists(path):
        return f"{STAGES[stage][0]} does not exist yet"
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return f"{STAGES[stage][0]} is unreadable"
    if not isinstance(recorded, dict) or "config_digest" not in recorded:
        return None
    now = provenance(run_dir, stage, config)
    if recorded["config_digest"] != now.config_digest and not _only_new_defaults(recorded.get("config"), config):
        return "its settings changed: " + describe_changes(recorded.get("config") or {}, config)
    if recorded.get("input_digest") != now.input_digest:
        return f"its input {STAGES[input_stage(stage)][0]} changed since it ran"
    return None


def _only_new_defaults(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether the only differences are parameters the record does not have, at their defaults: a parameter added by
    a newer cbsflow (e.g. train.init_from = None) leaves an artifact up to date."""
    if not isinstance(old, dict):
        return False
    defaults = getattr(new, "defaults", frozenset())
    changed = {k for k in set(old) | set(new) if k not in old or k not in new or
               json.dumps(old[k], sort_keys=True) != json.dumps(new[k], sort_keys=True)}
    return bool(changed) and all(k not in old and k in defaults for k in changed)


def describe_changes(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    """'a.b: 1 -> 2, c.d: unset -> 3' for the settings that differ (the first ``limit``); bindings the user changed
    (a key in both, or one set in ``new`` rather than defaulted) come before parameters that came along with them."""
    def text(d, k):  # JSON text: 1 and 1.0 differ in the digest, so they differ here too
        return json.dumps(d[k], sort_keys=True) if k in d else "unset"

    defaults = getattr(new, "defaults", frozenset())
    keys = sorted((k for k in set(old) | set(new) if text(old, k) != text(new, k)),
                  key=lambda k: (k not in old or k not in new, k in defaults, k))
    shown = [f"{k} {text(old, k)} -> {text(new, k)}" for k in keys[:limit]]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(shown) + more if shown else "settings differ"


# ----------------------------------------------------------------------------------------------- typed artifacts

def check_profile(name: str, t, value, stderr) -> None:
    """A monitor's profile must be finite, non-negative and shaped like its grid; a pairwise one (cbsflow/affinity.py)
    an n x n finite matrix over it."""
    if value.ndim == 2:
        if value.shape != (len(t), len(t)) or stderr.shape != value.shape or not np.all(np.isfinite(value)):
            raise UserError(f"pairwise monitor {name!r} returned a {value.shape} matrix (stderr {stderr.shape}) for a "
                            f"grid of {len(t)}; return finite (n, n) means and standard errors")
        return
    if value.shape != t.shape or stderr.shape != t.shape:
        raise UserError(f"monitor {name!r} returned {value.shape} values for a grid of {t.shape}; return (mean, stderr) per t")
    bad = ~np.isfinite(value) | (value < 0) | ~np.isfinite(stderr)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"monitor {name!r} returned {value[i]} (stderr {stderr[i]}) at t = {t[i]:.4f}; "
                        "monitors must be finite and >= 0")


def read_profile(path: str) -> dict:
    """Read and validate profile.json (it may be written by hand)."""
    prof = read_json(path, "split")
    for key in ("t", "value"):
        if not isinstance(prof.get(key), list) or len(prof[key]) < 2:
            raise UserError(f"{path}: '{key}' must be a list of at least 2 numbers")
    if "stderr" not in prof:
        prof["stderr"] = np.zeros(np.shape(prof["value"])).tolist()
    prof.setdefault("monitor", "unknown")
    try:
        t, value, se = (np.asarray(prof[k], dtype=np.float64) for k in ("t", "value", "stderr"))
    except (TypeError, ValueError):
        raise UserError(f"{path}: 't', 'value' and 'stderr' must be lists of numbers")
    pairwise = value.ndim == 2 and value.shape == se.shape == (len(t), len(t))  # cbsflow/affinity.py
    if not (pairwise or t.shape == value.shape == se.shape) or t.ndim != 1:
        raise UserError(f"{path}: 't', 'value' and 'stderr' must have the same length (or 'value' and 'stderr' be "
                        "n x n matrices over the n times of 't', a pairwise profile)")
    if not (np.all(np.diff(t) > 0) and t[0] >= 0 and t[-1] <= 1):
        raise UserError(f"{path}: 't' must increase strictly within [0, 1]")
    check_profile(prof["monitor"], t, value, se)
    return prof


def save_samples(run_dir: str, x: torch.Tensor, y: torch.Tensor | None, is_image: bool) -> None:
    """samples.npz: images as uint8 (n, c, h, w) under ``images``, other data as float32 under ``x``; ``labels``."""
    arrays = {} if y is None else {"labels": y.numpy()}
    if is_image:
        arrays["images"] = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    else:
        arrays["x"] = x.numpy()
    save_npz(os.path.join(run_dir, SAMPLES), **arrays)


def load_samples(run_dir: str, what: str) -> torch.Tensor:
    """Samples in data space: images back to [-1, 1] floats."""
    path = os.path.join(run_dir, SAMPLES)
    if not os.path.exists(path):
        raise UserError(f"{what}: {path} not found; run --stages sample first")
    with np.load(path) as f:
        if "images" in f:
            return torch.from_numpy(f["images"]).float() / 127.5 - 1
        return torch.from_numpy(f["x"])
