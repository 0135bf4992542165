"""Component registry: one decorator that names a component and exposes it to gin.

Every component (backbone, monitor, partition solver, ...) is registered under a *kind* and a
*name*. Names are unique across all kinds, so gin files can use the short form ``@deboor`` or the
kind-qualified form ``@partition.deboor``. ``gin.register`` leaves the object itself unchanged:
bindings only apply when the component is reached through a gin reference, and direct Python
calls stay pure.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Callable, TypeVar

import gin

from cbsflow.rundir import STAGE_ORDER

KINDS = (
    "backbone",
    "path",
    "monitor",
    "smoother",
    "estimator",
    "partition",
    "sampler",
    "time_sampler",
    "loss_weight",
    "schedule",
    "dataset",
    "metric",
    "autoencoder",
    "adaptation",
    "budget",
)
# Names taken by the pipeline stages (gin configurables); components may not reuse them.
RESERVED = STAGE_ORDER

T = TypeVar("T", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any

    @property
    def summary(self) -> str:
        """The first line of the component's docstring."""
        doc = (self.obj.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_ENTRIES: dict[str, Entry] = {}


@dataclasses.dataclass(frozen=True)
class Slot:
    """Marks a parameter that takes a registered component of ``kind``: an instance (``@dirichlet()``; a function
    component such as ``@heun`` is its own instance), the constructor itself (``@mlp``, called by the stage), or a
    list of instances. ``cbsflow.config`` checks bindings against it before anything runs."""

    kind: str
    form: str = "instance"  # "instance", "constructor" or "list"


def Instance(kind: str):  # noqa: N802  (reads like a type in signatures)
    """Annotation: the parameter takes a component instance of ``kind``."""
    return Annotated[Any, Slot(kind, "instance")]


def Constructor(kind: str):  # noqa: N802
    """Annotation: the parameter takes a component's constructor (e.g. a backbone the stage builds per network)."""
    return Annotated[Any, Slot(kind, "constructor")]


def Instances(kind: str):  # noqa: N802
    """Annotation: the parameter takes a list of component instances of ``kind``."""
    return Annotated[Any, Slot(kind, "list")]


def register(kind: str, name: str | None = None) -> Callable[[T], T]:
    """Register a component under ``kind`` as ``name`` (default: the object's ``__name__``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")

    def decorator(obj: T) -> T:
        key = name or obj.__name__
        if key in RESERVED:
            raise ValueError(f"component name {key!r} is reserved for a pipeline stage")
        if key in _ENTRIES:
            old = _ENTRIES[key]
            raise ValueError(
                f"component name {key!r} is already registered as {old.kind} "
                f"({old.obj.__module__}.{old.obj.__qualname__}); choose another name"
            )
        gin.register(key, module=kind)(obj)
        _ENTRIES[key] = Entry(kind, key, obj)
        return obj

    return decorator


def entries(kind: str | None = None) -> list[Entry]:
    """All registered components (of one kind if given), sorted by kind then name."""
    found = [e for e in _ENTRIES.values() if kind is None or e.kind == kind]
    return sorted(found, key=lambda e: (KINDS.index(e.kind), e.name))


def get(name: str) -> Entry:
    """Look up a component by its short or kind-qualified name."""
    short = name.split(".")[-1]
    if short not in _ENTRIES or ("." in name and _ENTRIES[short].kind != name.split(".")[0]):
        raise KeyError(f"no component named {name!r}; see `python tools/run.py --list`")
    return _ENTRIES[short]


def name_of(obj: Any) -> str:
    """The registered name of a component instance, class or function (its class name if unregistered)."""
    candidates = [obj, getattr(obj, "__wrapped__", None), type(obj)]
    for entry in _ENTRIES.values():
        if any(c is entry.obj for c in candidates if c is not None):
            return entry.name
    return getattr(obj, "__name__", type(obj).__name__)
