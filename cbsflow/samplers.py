"""ODE samplers and step schedules.

Every sampler has the same signature, ``sampler(velocity, x, t_grid, y=None, path=None, generator=None) -> x``
(k-diffusion style), integrating dx/dt = v from t_grid[0] to t_grid[-1]. The sample stage passes its path (which
stochastic samplers need for the score) and a generator of their own for any noise they draw. A schedule allocates a total number of steps across
the segments: ``schedule(boundaries, n_steps) -> [grid of segment 0, grid of segment 1, ...]``; each grid
runs from one boundary to the next, so integration restarts at every boundary and no step straddles
two experts.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from cbsflow.errors import UserError
from cbsflow.registry import register


class CountingVelocity:
    """Wraps a velocity field and counts network evaluations (NFE)."""

    def __init__(self, velocity):
        self.velocity, self.nfe = velocity, 0

    def __call__(self, x, t, y=None):
        self.nfe += 1
        return self.velocity(x, t, y)


def _full(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=torch.float32)


@register("sampler")
@torch.no_grad()
def euler(velocity, x: torch.Tensor, t_grid, y=None, path=None, generator=None) -> torch.Tensor:
    """Euler's method (first order, one evaluation per step)."""
    for t0, t1 in zip(t_grid[:-1], t_grid[1:]):
        x = x + (t1 - t0) * velocity(x, _full(t0, x), y)
    return x


def heun_step(drift, state: tuple[torch.Tensor, ...], t0: float, t1: float) -> tuple[torch.Tensor, ...]:
    """One step of Heun's method for d(state)/dt = drift(state, t), state a tuple of tensors (EDM Algorithm 1 without
    noise). The sampler, the acceleration monitor's trajectories and the likelihood's augmented ODE all use it."""
    h = t1 - t0
    d0 = drift(state, t0)
    euler = tuple(s + h * d for s, d in zip(state, d0))  # Euler step.
    d1 = drift(euler, t1)
    return tuple(s + h * 0.5 * (a + b) for s, a, b in zip(state, d0, d1))  # Trapezoidal correction.


@register("sampler")
@torch.no_grad()
def heun(velocity, x: torch.Tensor, t_grid, y=None, path=None, generator=None, *,
         final_euler: bool = False) -> torch.Tensor:
    """Heun's method (second order, two evaluations per step; EDM Algorithm 1 without noise).

    ``final_euler``: the step that ends at t = 1 is an Euler step, as JiT's sampler takes it (LTH14/JiT denoiser.py,
    ``generate``): no evaluation at the data end, where an x-prediction's velocity divides by max(1 - t, t_eps).
    """
    def drift(state, t):
        return (velocity(state[0], _full(t, state[0]), y),)

    pairs = list(zip(t_grid[:-1], t_grid[1:]))
    for i, (t0, t1) in enumerate(pairs):
        if final_euler and i == len(pairs) - 1 and _at_data_end(t1):
            x = x + (t1 - t0) * drift((x,), t0)[0]  # Euler step.
        else:
            (x,) = heun_step(drift, (x,), t0, t1)
    return x


def _at_data_end(t: float) -> bool:
    return float(t) >= 1.0 - 1e-9


def stop_before_data_end(t_grid, last_step: float) -> list[float]:
    """A grid of k steps that ends at t = 1, remade the way SiT's SDE sampler ends (willisma/SiT transport/
    transport.py ``sample_sde``): its first k points stretched onto [t_0, 1 - last_step], then 1. A uniform grid on
    [0, 1] becomes SiT's linspace(0, 1 - last_step, k) and its final step of ``last_step``; a one-step grid keeps its
    one step."""
    ts = [float(t) for t in t_grid]
    if len(ts) < 3:
        return ts
    t0, stop = ts[0], 1.0 - last_step
    if stop <= t0:
        raise UserError(f"euler_maruyama.last_step = {last_step} is not shorter than the last segment [{t0:g}, 1]; "
                        "bind a smaller euler_maruyama.last_step")
    scale = (stop - t0) / (ts[-2] - t0)
    return [t0 + (t - t0) * scale for t in ts[:-1]] + [1.0]


@register("sampler")
class euler_maruyama:
    """Euler-Maruyama for dx = [v + (w/2) score] dt + sqrt(w) dW, w = noise * sigma(t).

    ``noise = 2`` is SiT's SDE sampler (willisma/SiT transport/integrators.py: drift v + sigma score, noise
    sqrt(2 sigma) dW with the 'sigma' diffusion form); ``noise = 1`` (our default) has half its diffusion. The score
    comes from the velocity through the path (``Path.score``); the drift keeps the marginals of the ODE. The step that
    ends at t = 1 adds no noise: with ``last_step = 0`` (ours) it is a plain Euler step in v; with ``last_step = h``
    (SiT's ``last_step='Mean'``, ``last_step_size`` 0.04) the grid that ends at 1 stops its noisy steps at 1 - h
    (``stop_before_data_end``) and its final step is the SDE drift over h, without noise. The Brownian increments come
    from ``generator`` (the sample stage gives the sampler its own, never the one that drew the starting noise).
    """

    def __init__(self, noise: float = 1.0, last_step: float = 0.0):
        if noise < 0:
            raise UserError(f"euler_maruyama.noise must be >= 0, got {noise}")
        if not 0 <= last_step < 1:
            raise UserError(f"euler_maruyama.last_step must be in [0, 1), got {last_step}")
        self.noise, self.last_step = noise, last_step

    @torch.no_grad()
    def __call__(self, velocity, x: torch.Tensor, t_grid, y=None, path=None, generator=None) -> torch.Tensor:
        if path is None:
            raise ValueError("euler_maruyama needs the path (the sample stage passes it)")
        ts = [float(t) for t in t_grid]
        to_data = _at_data_end(ts[-1])
        if to_data and self.last_step:
            ts = stop_before_data_end(ts, self.last_step)
        for i, (t0, t1) in enumerate(zip(ts[:-1], ts[1:])):
            t = _full(t0, x)
            v = velocity(x, t, y)
            final = to_data and i == len(ts) - 2
            if final and not self.last_step:
                x = x + (t1 - t0) * v  # Euler step.
                continue
            w = self.noise * path.sigma(t).reshape((-1,) + (1,) * (x.dim() - 1))  # diffusion coefficient
            x = x + (t1 - t0) * (v + 0.5 * w * path.score(v, x, t))  # Drift step (SiT's 'Mean' step when final).
            if not final:
                dw = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + torch.sqrt(w * (t1 - t0)) * dw  # Noise.
        return x


class Guided:
    """Classifier-free guidance: v_null + scale (v_y - v_null) for t inside ``interval``, plain v_y outside.

    Conditional and unconditional passes run as one doubled batch. ``null_class`` is the label index the
    backbone reserves for 'no class' (index num_classes). ``channels`` = c guides only the first c channels and
    leaves the rest conditional, as SiT does with 3 of its 4 latent channels (willisma/SiT models.py,
    ``forward_with_cfg``); None guides all.
    """

    def __init__(self, velocity, scale: float, interval: tuple[float, float], null_class: int,
                 channels: int | None = None):
        self.velocity, self.scale, self.interval, self.null_class = velocity, scale, interval, null_class
        self.channels = channels

    def __call__(self, x, t, y=None):
        lo, hi = self.interval
        if y is None or self.scale == 1.0 or not bool(((t >= lo) & (t <= hi)).any()):
            return self.velocity(x, t, y)
        both = self.velocity(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, self.null_class)]))
        cond, uncond = both.chunk(2)
        guided = uncond + self.scale * (cond - uncond)
        if self.channels is not None:
            guided = torch.cat([guided[:, :self.channels], cond[:, self.channels:]], dim=1)
        inside = ((t >= lo) & (t <= hi)).reshape((-1,) + (1,) * (x.dim() - 1))
        return torch.where(inside, guided, cond)


def allocate(weights: np.ndarray, n_steps: int) -> np.ndarray:
    """Split ``n_steps`` integers over segments in proportion to ``weights`` (largest remainder, >= 1 each)."""
    n = len(weights)
    if n_steps < n:
        raise UserError(f"sample.n_steps={n_steps} is fewer than the {n} segments; use at least one step per segment")
    share = n_steps * np.asarray(weights, np.float64) / np.sum(weights)
    steps = np.maximum(1, np.floor(share)).astype(int)
    while steps.sum() < n_steps:  # hand out the remainder by largest shortfall
        steps[np.argmax(share - steps)] += 1
    while steps.sum() > n_steps:  # undo the minimum of one step where it overshoots most
        steps[np.argmax(np.where(steps > 1, steps - share, -np.inf))] -= 1
    return steps


# Dormand-Prince 5(4) (Hairer, Norsett & Wanner, Solving ODEs I, table 5.2): nodes, stages, 5th- and 4th-order weights.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@register("sampler")
class dopri5:
    """Adaptive Dormand-Prince 5(4), SiT's default ODE sampler, through torchdiffeq (``backend='torchdiffeq'``,
    the default: ``torchdiffeq.odeint(..., method='dopri5')``) or this module's own implementation
    (``backend='builtin'``: no extra package, one step size per batch, the same error norm).

    Within each segment it integrates from one boundary to the next (the sample stage hands it one segment's grid
    at a time, and only the grid's ends are used), so it switches experts exactly at the boundaries. Both backends
    accept a step when the RMS of the local error scaled by atol + rtol max(|x|, |x_new|) is at most 1. The network
    evaluations it spent are counted like any sampler's (sample.json's ``nfe``).
    """

    def __init__(self, atol: float = 1e-6, rtol: float = 1e-3, max_steps: int = 10000, backend: str = "torchdiffeq"):
        if atol <= 0 or rtol <= 0 or max_steps < 1:
            raise UserError(f"dopri5: need atol > 0, rtol > 0, max_steps >= 1 (got {atol}, {rtol}, {max_steps})")
        if backend not in ("torchdiffeq", "builtin"):
            raise UserError(f"dopri5.backend = {backend!r}: use 'torchdiffeq' or 'builtin'")
        self.atol, self.rtol, self.max_steps, self.backend = atol, rtol, max_steps, backend

    @torch.no_grad()
    def __call__(self, velocity, x, t_grid, y=None, path=None, generator=None):
        if self.backend == "torchdiffeq":
            return self._torchdiffeq(velocity, x, float(t_grid[0]), float(t_grid[-1]), y)
        t, end = float(t_grid[0]), float(t_grid[-1])
        k1 = velocity(x, _full(t, x), y)
        h = self._first_step(x, k1, end - t)
        for _ in range(self.max_steps):
            if t >= end - 1e-12:
                return x
            h = min(h, end - t)
            ks = [k1]
            for i in range(1, 7):
                xi = x + h * sum(a * k for a, k in zip(_DP_A[i], ks) if a)
                ks.append(velocity(xi, _full(t + _DP_C[i] * h, x), y))
            new = x + h * sum(b * k for b, k in zip(_DP_B5, ks) if b)
            err = h * sum((b5 - b4) * k for b5, b4, k in zip(_DP_B5, _DP_B4, ks) if b5 != b4)
            scale = self.atol + self.rtol * torch.maximum(x.abs(), new.abs())
            ratio = float((err / scale).pow(2).mean().sqrt())
            if ratio <= 1.0:  # accept; the last stage is the next step's first (FSAL)
                t, x, k1 = t + h, new, ks[6]
            h *= min(10.0, max(0.2, 0.9 * (ratio if ratio > 0 else 1e-10) ** -0.2))
        raise UserError(f"dopri5: more than {self.max_steps} steps between t = {t_grid[0]} and {end}; raise "
                        "dopri5.max_steps or loosen dopri5.rtol / atol")

    def _torchdiffeq(self, velocity, x, t0: float, t1: float, y):
        try:
            from torchdiffeq import odeint
        except ImportError:
            raise UserError("dopri5: torchdiffeq is not installed; `pip install torchdiffeq` or bind "
                            "dopri5.backend = 'builtin'") from None
        if t1 <= t0:
            return x

        def field(t, state):
            # Steps end on t1 (step_t below), so only torchdiffeq's probe for its first step size could look past
            # the segment; it is held inside, so that every evaluation is the segment's own expert's.
            return velocity(state, _full(min(max(float(t), t0), t1), state), y)

        span = torch.tensor([t0, t1], dtype=torch.float64, device=x.device)
        try:
            out = odeint(field, x, span, rtol=self.rtol, atol=self.atol, method="dopri5",
                         options={"max_num_steps": self.max_steps, "step_t": span[1:]})
        except AssertionError as err:  # torchdiffeq signals a step budget that ran out with an assertion
            if "max_num_steps" not in str(err):
                raise
            raise UserError(f"dopri5: more than {self.max_steps} steps between t = {t0} and {t1}; raise "
                            "dopri5.max_steps or loosen dopri5.rtol / atol") from None
        return out[-1]

    def _first_step(self, x, k1, span: float) -> float:
        """Hairer's rule of thumb: a step that moves x by about 1 % of its scale."""
        scale = self.atol + self.rtol * x.abs()
        d0, d1 = float((x / scale).pow(2).mean().sqrt()), float((k1 / scale).pow(2).mean().sqrt())
        h = 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6
        return min(max(h, 1e-6 * span), span)


@register("sampler")
@torch.no_grad()
def dpm_solver_pp(velocity, x, t_grid, y=None, path=None, generator=None):
    """DPM-Solver++(2M) (Lu et al. 2022) in the flow's own parameterisation: multistep, second order, one network
    evaluation per step, on the data prediction x1_hat = path.from_velocity(v, x, t, 'x1').

    With lambda = log(alpha / sigma) and h_i = lambda_i - lambda_{i-1}, a step is
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i, where D_i = x1_hat_{i-1} on a segment's
    first step and (1 + 1/(2 r)) x1_hat_{i-1} - 1/(2 r) x1_hat_{i-2} after it, r = h_{i-1} / h_i. The ends t = 0
    (alpha = 0) and t = 1 (sigma = 0) are exact limits (h = inf). The history restarts at every boundary.
    """
    if path is None:
        raise UserError("dpm_solver_pp needs the path (the sample stage passes it; pass path=... when calling it)")
    ts = [float(v) for v in t_grid]
    lam = [_log_snr(path, t) for t in ts]
    previous, h_previous = None, None
    for i in range(1, len(ts)):
        t0, t1 = ts[i - 1], ts[i]
        d = path.from_velocity(velocity(x, _full(t0, x), y), x, _full(t0, x), "x1")
        h = lam[i] - lam[i - 1]
        if previous is not None and math.isfinite(h) and math.isfinite(h_previous):
            r = h_previous / h
            d_used = (1 + 0.5 / r) * d - (0.5 / r) * previous
        else:
            d_used = d
        a1, s0, s1 = float(path.alpha(torch.tensor(t1))), float(path.sigma(torch.tensor(t0))), float(
            path.sigma(torch.tensor(t1)))
        decay = math.exp(-h) if math.isfinite(h) else 0.0  # exp(-h) = (sigma_1 / alpha_1) (alpha_0 / sigma_0)
        x = (s1 / s0 if s0 > 0 else 0.0) * x - a1 * (decay - 1.0) * d_used
        previous, h_previous = d, h
    return x


def _log_snr(path, t: float) -> float:
    a, s = float(path.alpha(torch.tensor(t))), float(path.sigma(torch.tensor(t)))
    if a <= 0:
        return -math.inf
    if s <= 0:
        return math.inf
    return math.log(a / s)


class Schedule:
    """Base class: ``weights(boundaries)`` says how the steps are shared between the segments."""

    def weights(self, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, boundaries, n_steps: int) -> list[np.ndarray]:
        b = np.asarray(boundaries, np.float64)
        steps = allocate(self.weights(b), n_steps)
        return [np.linspace(lo, hi, k + 1) for lo, hi, k in zip(b[:-1], b[1:], steps)]


@register("schedule")
class uniform_steps(Schedule):
    """A global uniform grid in t: each segment gets steps in proportion to its width."""

    def weights(self, b):
        return np.diff(b)


@register("schedule")
class equal_steps(Schedule):
    """The same number of steps in every segment (finer steps where the segments are narrow)."""

    def weights(self, b):
        return np.ones(len(b) - 1)


@torch.no_grad()
def sample_segmented(model, sampler, grids: list[np.ndarray], x: torch.Tensor, y=None, guidance=None, path=None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Integrate from noise x through every segment with its own expert; returns samples and NFE per sample.

    ``guidance`` = (scale, interval, null_class[, channels]) applies classifier-free guidance; NFE counts network calls
    (a guided call runs the conditional and unconditional halves as one doubled batch). ``path`` and
    ``generator`` go to the sampler.
    """
    nfe = 0
    for k, grid in enumerate(grids):
        counted = CountingVelocity(model.expert(k))
        velocity = Guided(counted, *guidance) if guidance is not None else counted
        x = sampler(velocity, x, [float(v) for v in grid], y, path=path, generator=generator)
        nfe += counted.nfe
    return x, nfe


def generate(model, sampler, grids: list[np.ndarray], shape: tuple[int, ...], num_classes: int, n_samples: int,
             batch_size: int, seed: int, rank: int = 0, world: int = 1, guidance=None, path=None,
             autocast=contextlib.nullcontext) -> tuple[list[tuple[int, torch.Tensor, torch.Tensor | None]], int]:
    """This process's share of ``n_samples``: batch i (starting noise, labels and the sampler's own noise all seeded
    from (seed, i)) goes to process i mod world, so the samples do not depend on how many processes make them.
    Returns [(batch index, samples on the CPU, labels)] and the NFE per sample."""
    from cbsflow.seeding import derive_seed

    device = next(iter(model.parameters()), torch.empty(0)).device
    out, nfe = [], 0
    for i, start in enumerate(range(0, n_samples, batch_size)):
        if i % world != rank:
            continue
        n = min(batch_size, n_samples - start)
        start_gen = torch.Generator().manual_seed(derive_seed(seed, 0, i))
        x0 = torch.randn((n,) + tuple(shape), generator=start_gen)
        y = torch.randint(0, num_classes, (n,), generator=start_gen) if num_classes else None
        noise_gen = torch.Generator(device=device).manual_seed(derive_seed(seed, 1, i))
        with autocast():
            x, nfe = sample_segmented(model, sampler, grids, x0.to(device), None if y is None else y.to(device),
                                      guidance, path=path, generator=noise_gen)
        out.append((i, x.float().cpu(), y))
    return out, nfe
