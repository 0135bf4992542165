"""Experts of different budgets and capacities: how many steps each expert trains and how large its network is.

A budget (``train.budget = @steps_by_mass()``) turns the split's boundaries into one ``Allocation`` per expert: its
optimizer steps and the keyword arguments its backbone is built with on top of the gin bindings (e.g.
``{"width": 24}``). The total number of steps is always N x ``expert/training.steps``, so budgets compare at equal
training compute; capacity changes the experts' parameters (and sampling cost), which train.json reports per expert.

Static per-expert sizes need no budget: a scoped binding such as ``expert_1/mlp.width = 32`` applies to expert 1
only (every expert's network is built inside the gin scope ``expert_<k>``, k from 0). The rules (sources and
formulas in docs/math.md, "Experts of different capacity and budget"):

- ``per_expert``: steps given per expert.
- ``steps_by_mass``: steps proportional to each interval's training mass under the experts' time sampler (eDiff-I,
  Multi-stage: a stage's share of the training distribution).
- ``steps_by_burden``: steps proportional to the monitor's burden of each interval (this project's rule: the
  boundaries stay where they are and the budget follows the difficulty, instead of the boundaries moving to equal
  burden).
- ``capacity_by_burden``: one width parameter scaled per expert by (burden_k / mean burden) ** power; with power
  1/2 an MLP's or UNet's parameters (about quadratic in width) grow about in proportion to the burden.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Sequence

import gin
import numpy as np

from cbsflow.errors import UserError
from cbsflow.partition import DEFAULT_FLOOR, density, integrate
from cbsflow.registry import name_of, register


@dataclasses.dataclass(frozen=True)
class Allocation:
    """One expert's share: the optimizer steps it trains and its backbone's extra keyword arguments."""

    steps: int
    overrides: dict = dataclasses.field(default_factory=dict)


def scope(k: int) -> str:
    """The gin scope expert k's network is built in (``expert_1/mlp.width = 32`` sizes expert 1 only)."""
    return f"expert_{k}"


def apportion(total: int, weights: Sequence[float], minimum: int = 1) -> list[int]:
    """Integers summing to ``total`` in proportion to ``weights`` (largest remainders: each within 1 of its exact
    share), then raised to at least ``minimum`` from the largest."""
    w = np.asarray(weights, np.float64)
    if len(w) == 0 or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise UserError(f"budget: cannot share {total} steps by weights {np.round(w, 6).tolist()}; they must be "
                        "finite, >= 0 and not all 0")
    if total < minimum * len(w):
        raise UserError(f"budget: {total} steps cannot give each of {len(w)} experts at least {minimum}; raise "
                        "expert/training.steps")
    exact = total * w / w.sum()
    out = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - out), kind="stable")[: total - out.sum()]:
        out[i] += 1
    while out.min() < minimum:
        out[np.argmin(out)] += 1
        out[np.argmax(out)] -= 1
    return [int(x) for x in out]


class Budget:
    """How the N experts of a fixed split share N x ``steps`` and their capacity. ``needs_profile``: whether the
    rule reads the profile (the profile stage then runs even when the split's solver needs none)."""

    needs_profile = False

    def __call__(self, boundaries: np.ndarray, steps: int, t_sampler=None, profile=None,
                 backbone=None) -> list[Allocation]:
        """One allocation per interval of ``boundaries``; ``steps`` is the experts' setting, ``t_sampler`` their time
        sampler (None: uniform), ``profile`` the run's profile.json (rules that read one), ``backbone`` the experts'
        constructor (rules that size it)."""
        raise NotImplementedError


@register("budget")
class per_expert(Budget):
    """The steps of each expert as given (their sum is the run's budget; it need not be N x steps)."""

    def __init__(self, steps: Sequence[int] = ()):
        if not steps or any(not isinstance(s, int) or s < 1 for s in steps):
            raise UserError(f"per_expert.steps = {list(steps)}: give one integer >= 1 per expert, e.g. [3000, 5000]")
        self.steps = [int(s) for s in steps]

    def __call__(self, boundaries, steps, t_sampler=None, profile=None, backbone=None):
        if len(self.steps) != len(boundaries) - 1:
            raise UserError(f"per_expert.steps has {len(self.steps)} entries but the split has "
                            f"{len(boundaries) - 1} experts; give one per expert")
        return [Allocation(s) for s in self.steps]


def training_mass(boundaries: np.ndarray, t_sampler=None) -> np.ndarray:
    """Each interval's probability under the experts' time sampler (uniform when none is bound)."""
    import torch

    b = torch.as_tensor(np.asarray(boundaries, np.float64))
    cdf = t_sampler.cdf(b).double().numpy() if t_sampler is not None else b.numpy()
    return np.diff(cdf)


@register("budget")
class steps_by_mass(Budget):
    """Steps in proportion to each interval's training mass under the experts' time sampler (eDiff-I, Multi-stage)."""

    def __call__(self, boundaries, steps, t_sampler=None, profile=None, backbone=None):
        b = np.asarray(boundaries, np.float64)
        return [Allocation(s) for s in apportion(steps * (len(b) - 1), training_mass(b, t_sampler))]


class _ByBurden(Budget):
    needs_profile = True

    def __init__(self, exponent: float = 0.5, floor: float = DEFAULT_FLOOR):
        if exponent < 0 or floor < 0:
            raise UserError(f"{name_of(self)}: exponent and floor must be >= 0, got {exponent}, {floor}")
        self.exponent, self.floor = float(exponent), float(floor)

    def burden(self, boundaries, profile) -> np.ndarray:
        """The share of the profile's density rho = (m + floor * mean m) ** exponent in each interval."""
        if profile is None:
            raise UserError(f"train.budget = @{name_of(self)}() reads the profile but the run has none; run the "
                            "profile stage (tools/run.py runs it when the budget needs it)")
        t, value = (np.asarray(profile[k], np.float64) for k in ("t", "value"))
        c = integrate(t, density(value, self.exponent, self.floor), np.asarray(boundaries, np.float64))
        return np.diff(c) / c[-1]


@register("budget")
class steps_by_burden(_ByBurden):
    """Steps in proportion to each interval's burden (its share of the monitor's density), boundaries unchanged."""

    def __call__(self, boundaries, steps, t_sampler=None, profile=None, backbone=None):
        return [Allocation(s) for s in apportion(steps * (len(boundaries) - 1), self.burden(boundaries, profile))]


@register("budget")
class capacity_by_burden(_ByBurden):
    """Equal steps; the backbone's ``parameter`` (a width) scaled per expert by (burden_k / mean burden) ** power
    from its bound value, rounded to a multiple of ``multiple`` (at least one multiple)."""

    def __init__(self, parameter: str = "width", power: float = 0.5, multiple: int = 1, exponent: float = 0.5,
                 floor: float = DEFAULT_FLOOR):
        super().__init__(exponent, floor)
        if power < 0 or multiple < 1:
            raise UserError(f"capacity_by_burden: need power >= 0 and multiple >= 1, got {power}, {multiple}")
        self.parameter, self.power, self.multiple = parameter, float(power), int(multiple)

    def __call__(self, boundaries, steps, t_sampler=None, profile=None, backbone=None):
        base = bound_value(backbone, self.parameter)
        share = self.burden(boundaries, profile) * (len(boundaries) - 1)
        widths = [max(self.multiple, int(round(base * s**self.power / self.multiple)) * self.multiple) for s in share]
        return [Allocation(steps, {self.parameter: w}) for w in widths]


def bound_value(backbone, parameter: str):
    """The value the backbone's ``parameter`` is built with: its gin binding, else its signature's default."""
    if backbone is None:
        raise UserError("capacity_by_burden needs the backbone (the train stage passes it)")
    name = getattr(backbone, "__name__", None) or name_of(backbone)
    try:
        return gin.query_parameter(f"{name}.{parameter}")
    except ValueError:
        pass
    from cbsflow import registry

    try:
        signature = inspect.signature(registry.get(name).obj)
    except (KeyError, TypeError, ValueError):
        signature = inspect.signature(backbone)
    default = signature.parameters.get(parameter)
    if default is None or default.default is inspect.Parameter.empty:
        raise UserError(f"capacity_by_burden.parameter = {parameter!r}: the backbone {name} has no such argument "
                        "with a value; name its width argument (e.g. 'width' for mlp, 'channels' for unet)")
    return default.default


def allocate(budget, boundaries: np.ndarray, steps: int, t_sampler=None, profile=None, backbone=None) -> list[Allocation]:
    """The budget's allocations (equal steps, no overrides when ``budget`` is None), checked."""
    n = len(boundaries) - 1
    if budget is None:
        return [Allocation(steps) for _ in range(n)]
    out = budget(boundaries, steps, t_sampler, profile, backbone)
    if len(out) != n or any(a.steps < 1 for a in out):
        raise UserError(f"train.budget = @{name_of(budget)}(): gave {[a.steps for a in out]} steps for {n} experts")
    return out
