"""Monitors m(t) >= 0 of the local difficulty of a velocity field, each returned as mean and standard error.

Every monitor is called as ``monitor(velocity, x1, t, path=..., y=None, generator=None)`` where
``velocity(x, t, y)`` is the field, ``x1`` a batch of data (b, ...), ``t`` a 1-D increasing grid; it returns
``(mean, stderr)``, two tensors shaped like ``t``.
"""

from __future__ import annotations

import math

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from cbsflow.progress import progress

from cbsflow.registry import register


def _load_jvp_decompositions() -> None:
    """torch's forward-mode AD decompositions, loaded now without the ``torch.jit.script`` FutureWarning torch itself
    raises when the first torch.func.jvp loads them (the project calls no torch.jit), wherever the monitors are used:
    tools/run.py, cbsflow.api or a script."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is", category=FutureWarning)
        try:
            from torch._decomp import decompositions_for_jvp  # noqa: F401
        except ImportError:  # a torch without it: nothing to load
            pass


_load_jvp_decompositions()


def mean_and_stderr(per_sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the last axis and its standard error (sample std / sqrt(n))."""
    n = per_sample.shape[-1]
    std = per_sample.std(dim=-1, unbiased=True) if n > 1 else torch.zeros_like(per_sample[..., 0])
    return per_sample.mean(dim=-1), std / math.sqrt(n)


def jvp_context():
    """Forward-mode AD needs the math attention kernel (fused SDPA kernels lack forward AD)."""
    return sdpa_kernel(SDPBackend.MATH)


def probes(shape, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random vectors z with E[z z^T] = I: Rademacher (+-1) or Gaussian."""
    if kind == "rademacher":
        return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1
    return torch.randn(shape, generator=generator)


def chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def prediction(velocity, path, target: str):
    """The field in another prediction space: 'velocity' as is, 'x1' = E[x1 | x_t], 'eps' = E[eps | x_t].

    The path does the conversion (``Path.from_velocity``). For the linear path x1_hat = x + (1 - t) v: measured in
    x-prediction space the Dirichlet energy loses the 1 / (1 - t)^2 growth that the velocity parameterisation puts
    near the data end.
    """
    if target == "velocity":
        return velocity
    return lambda x, t, y=None: path.from_velocity(velocity(x, t, y), x, t, target)


@register("monitor")
class dirichlet:
    """Dirichlet energy D(t) = E ||dv/dx||_F^2 / d by Hutchinson JVPs: ||J||_F^2 = E_z ||J z||^2.

    ``target`` measures the Jacobian of another prediction ('x1' or 'eps') instead of the velocity.
    ``centred=True`` measures only the part of the Jacobian that varies with x, E ||J(x) - E_x J||_F^2 / d: the
    affine part of the field (all of it for Gaussian data, and most of it while x_t is still mostly noise) costs an
    expert no capacity. The batch is then cut into groups of about ``group_size`` samples; each group has probes of
    its own, shared by its samples, and the group mean of J z stands for E_x J z (m / (m - 1) makes each group's
    value unbiased). The groups are independent, so the standard error is that of the mean over groups: it counts
    the probes' variance, which a probe shared by the whole batch would hide (docs/math.md).
    """

    def __init__(self, n_probes: int = 4, probe: str = "rademacher", batch_size: int = 4096, target: str = "velocity",
                 centred: bool = False, group_size: int = 16, progress: bool = True,
                 memory_budget: float | None = None):
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(f"dirichlet.probe must be 'rademacher' or 'gaussian', got {probe!r}")
        if target not in ("velocity", "x1", "eps"):
            raise ValueError(f"dirichlet.target must be 'velocity', 'x1' or 'eps', got {target!r}")
        if group_size < 2:
            raise ValueError(f"dirichlet.group_size must be at least 2 (a group's mean needs two samples), got {group_size}")
        self.n_probes, self.probe, self.batch_size, self.target = n_probes, probe, batch_size, target
        self.centred, self.group_size, self.progress = centred, int(group_size), progress
        self.memory_budget = memory_budget  # GB for one chunk of JVPs; None: half the device's free memory

    def __call__(self, velocity, x1, t, path, y=None, generator=None):
        generator = generator or torch.Generator().manual_seed(0)
        device = _device(velocity)
        velocity = prediction(velocity, path, self.target)
        b, d = x1.shape[0], x1[0].numel()
        if self.centred and b < 2:
            raise ValueError("dirichlet(centred=True) needs at least 2 samples (profile.n_samples)")
        # Centred: sample i belongs to group[i]; the groups (sizes group_size or one more) are the independent units.
        n_groups = max(min(2, b // 2), b // self.group_size) if self.centred else b  # two groups at least: an error
        group = torch.arange(b) * n_groups // b
        per_unit = torch.zeros(len(t), n_groups)
        rows = _chunk_rows(velocity, x1, y, float(t[0]), device, min(self.batch_size, b * self.n_probes),
                           self.memory_budget, "dirichlet")
        for i, ti in enumerate(progress(t.tolist(), "dirichlet", disable=not self.progress)):
            eps = torch.randn(x1.shape, generator=generator)
            x_t, _ = path.interpolate(x1, eps, torch.full((b,), ti))
            # All probes of all samples in one batch: row p * b + i holds probe p of sample i.
            x_rep = x_t.repeat((self.n_probes,) + (1,) * (x1.dim() - 1))
            y_rep = None if y is None else y.repeat(self.n_probes)
            if self.centred:  # probe p of group g, shared by the samples of that group
                z = probes((self.n_probes, n_groups, *x1.shape[1:]), self.probe, generator)[:, group].reshape(x_rep.shape)
            else:
                z = probes(x_rep.shape, self.probe, generator)
            jzs = (_jvp_x(velocity, x_rep[sl], ti, None if y_rep is None else y_rep[sl], z[sl], device)
                   .reshape(sl.stop - sl.start, -1) for sl in chunks(len(x_rep), rows))
            if self.centred:  # every J z is needed for the group means
                jz = torch.cat([j.cpu() for j in jzs]).reshape(self.n_probes, b, -1).double()
                per_unit[i] = _centred_groups(jz, group, n_groups).mean(0).float() / d
            else:  # reduced chunk by chunk: only ||J z||^2 is kept
                per_unit[i] = torch.cat([j.pow(2).sum(-1).cpu() for j in jzs]).reshape(self.n_probes, b).mean(0) / d
        return mean_and_stderr(per_unit)


def _centred_groups(jz: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(probes, b, d) products J z -> (probes, groups): per group, sum over dimensions of the unbiased variance of
    J z across its samples, m / (m - 1) * mean_i ||J z_i - mean_group J z||^2."""
    size = torch.bincount(group, minlength=n_groups).to(jz.dtype)  # (groups,)
    index = group.view(1, -1, 1).expand_as(jz)
    sums = torch.zeros(jz.shape[0], n_groups, jz.shape[2], dtype=jz.dtype).scatter_add_(1, index, jz)
    centred = jz - (sums / size[None, :, None]).gather(1, index)
    sq = torch.zeros(jz.shape[0], n_groups, dtype=jz.dtype).scatter_add_(1, group.expand(jz.shape[0], -1),
                                                                       centred.pow(2).sum(-1))
    return sq / (size - 1).clamp(min=1)


@register("monitor")
class energy:
    """Mean squared norm of the field, E ||v(x_t, t)||^2 / d over x_t ~ p_t (with ``capacity_gap``: an excess error)."""

    def __init__(self, batch_size: int = 4096):
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, velocity, x1, t, path, y=None, generator=None):
        generator = generator or torch.Generator().manual_seed(0)
        device = _device(velocity)
        b, d = x1.shape[0], x1[0].numel()
        per_sample = torch.zeros(len(t), b)
        for i, ti in enumerate(t.tolist()):
            eps = torch.randn(x1.shape, generator=generator)
            x_t, _ = path.interpolate(x1, eps, torch.full((b,), ti))
            for sl in chunks(b, self.batch_size):
                yy = None if y is None else y[sl].to(device)
                v = velocity(x_t[sl].to(device), torch.full((sl.stop - sl.start,), ti, device=device), yy)
                per_sample[i, sl] = v.reshape(sl.stop - sl.start, -1).float().pow(2).sum(-1).cpu() / d
        return mean_and_stderr(per_sample)


def _chunk_rows(velocity, x1, y, ti: float, device, requested: int, budget: float | None, what: str,
                jvp=None) -> int:
    """Rows per chunk of JVPs that fit the memory budget (cbsflow.memory.jvp_rows), measured on this batch."""
    from cbsflow.memory import jvp_rows

    def run(n: int):
        idx = torch.arange(n) % x1.shape[0]
        yy = None if y is None else y[idx]
        if jvp is not None:
            return jvp(x1[idx].to(device), yy)
        return _jvp_x(velocity, x1[idx], ti, yy, torch.ones_like(x1[idx]), device)

    return jvp_rows(run, requested, device, budget, what)


def _jvp_x(velocity, x, ti: float, y, z, device):
    tt = torch.full((x.shape[0],), ti, device=device)
    x, z = x.to(device), z.to(device)
    yy = None if y is None else y.to(device)
    with jvp_context():
        _, jz = torch.func.jvp(lambda x_: velocity(x_, tt, yy), (x,), (z,))
    return jz.detach().float()


def _params(module):
    return module.parameters() if hasattr(module, "parameters") else iter(())


def _device(velocity):
    """The device of a module's parameters (CPU for plain functions)."""
    return next(iter(_params(velocity)), torch.empty(0)).device


@register("monitor")
class acceleration:
    """Trajectory acceleration A(t) = E ||d^2x/dt^2||^2 / d along ODE trajectories from noise.

    ``method='fd'``: finite differences of v along the integrated trajectory (central in the interior);
    ``method='exact'``: d^2x/dt^2 = dv/dt + (dv/dx) v, one JVP of v in the direction (v, 1).
    """

    def __init__(self, method: str = "fd", substeps: int = 4, refine: int = 4, progress: bool = True,
                 memory_budget: float | None = None):
        if method not in ("fd", "exact"):
            raise ValueError(f"acceleration.method must be 'fd' or 'exact', got {method!r}")
        self.method, self.substeps, self.refine, self.progress = method, substeps, refine, progress
        self.memory_budget = memory_budget  # GB for one chunk of the exact method's JVPs; None: half of what is free

    def __call__(self, velocity, x1, t, path, y=None, generator=None):
        """``refine`` - 1 extra points between grid points sharpen the finite differences ('fd' only)."""
        generator = generator or torch.Generator().manual_seed(0)
        device = _device(velocity)
        r = self.refine if self.method == "fd" and len(t) > 1 else 1
        coarse = t.double()
        t = torch.cat([torch.linspace(float(a), float(b), r + 1, dtype=torch.float64)[:-1]
                       for a, b in zip(coarse[:-1], coarse[1:])] + [coarse[-1:]])
        x = torch.randn(x1.shape, generator=generator).to(device)
        y = None if y is None else y.to(device)
        d, b = x1[0].numel(), x1.shape[0]
        x = _integrate(velocity, x, 0.0, float(t[0]), self.substeps * 4, y) if t[0] > 0 else x
        vs, accs = [], []
        if self.method == "exact":
            rows = _chunk_rows(velocity, x, y, float(t[0]), device, b, self.memory_budget, "acceleration",
                               jvp=lambda xx, yy: _total_derivative(velocity, xx, float(t[0]), yy))
        for i in progress(range(len(t)), "acceleration", disable=not self.progress):
            ti = float(t[i])
            if self.method == "exact":
                acc = torch.cat([_total_derivative(velocity, x[sl], ti, None if y is None else y[sl])[1]
                                 for sl in chunks(b, rows)])
                accs.append(acc.reshape(b, -1).pow(2).sum(-1).cpu() / d)
            else:
                with torch.no_grad():
                    v = velocity(x, torch.full((b,), ti, device=device), y)
                vs.append(v.cpu())
            if i + 1 < len(t):
                x = _integrate(velocity, x, ti, float(t[i + 1]), self.substeps, y)
        if self.method == "fd":
            accs = _finite_difference(torch.stack(vs), t)  # (n_t, b)
            accs = accs[::r].reshape(len(coarse), b, -1).pow(2).sum(-1) / d
        else:
            accs = torch.stack(accs)
        return mean_and_stderr(accs.float())


def _integrate(velocity, x, t0: float, t1: float, steps: int, y):
    """The trajectory from t0 to t1 by ``steps`` steps of the Heun sampler."""
    from cbsflow.samplers import heun

    return heun(velocity, x, torch.linspace(t0, t1, steps + 1).tolist(), y)


def _finite_difference(vs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """d/dt of samples vs (n_t, b, ...) on grid t: central differences inside, one-sided at the ends."""
    shape = (-1,) + (1,) * (vs.dim() - 1)
    dv = torch.empty_like(vs, dtype=torch.float64)
    dv[1:-1] = (vs[2:] - vs[:-2]).double() / (t[2:] - t[:-2]).reshape(shape)
    dv[0] = (vs[1] - vs[0]).double() / (t[1] - t[0])
    dv[-1] = (vs[-1] - vs[-2]).double() / (t[-1] - t[-2])
    return dv


def _total_derivative(velocity, x, ti: float, y):
    """(v, dv/dt + (dv/dx) v) at (x, t) by one JVP in the direction (v, 1)."""
    tt = torch.full((x.shape[0],), ti, device=x.device)
    with torch.no_grad():
        v = velocity(x, tt, y)
    with jvp_context():
        _, acc = torch.func.jvp(lambda x_, t_: velocity(x_, t_, y), (x, tt), (v, torch.ones_like(tt)))
    return v, acc.detach()
