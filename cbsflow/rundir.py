"""Run-directory artifacts: atomic writes, and which stage output is up to date with its input."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

from cbsflow.errors import UserError


def write_json(path: str, data: dict) -> None:
    """Write JSON atomically (temporary file + rename), so a killed run never leaves half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def read_json(path: str, what: str) -> dict:
    """Read a JSON artifact, turning a missing or malformed file into a one-line user error."""
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


def digest(path: str) -> str | None:
    """SHA-256 prefix of a file's bytes (None if absent): records which input a stage output came from."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def is_current(artifact: str, upstream: str | None) -> bool:
    """True if ``artifact`` exists and was made from the current content of ``upstream``."""
    if not os.path.exists(artifact):
        return False
    if upstream is None:
        return True
    try:
        with open(artifact) as f:
            recorded = json.load(f).get("upstream")
    except (json.JSONDecodeError, OSError, AttributeError):
        return False
    return recorded == digest(upstream)
