"""Splits that follow the experts: boundaries moved during training by what the current experts find hard.

A component of kind ``adaptation`` is bound as ``train.adaptation = @moving_mesh()`` (or ``@successive_halving()``).
The train stage then hands it the split's boundaries as a starting point; it trains the experts, moves the
boundaries, and returns the ones the experts were finally trained for, which the train stage writes back into
``split.json`` (the starting split is kept there as ``initial_boundaries``), so sampling, evaluation and the
staleness checks read the final split as for any other. Each keeps a record of every move in
``checkpoints/adaptation.json`` and draws it (``adaptation.png``: boundaries against training progress).

``moving_mesh`` — de Boor's equidistribution applied to the error of the current approximation, as in moving-mesh
methods. After a share of the training budget, at each boundary b between experts k and k + 1, both experts are
scored on the same draws (x1, eps, t) with t in a window around b: the indicator is the mean paired difference of
their flow-matching losses, D = E[L_k - L_{k+1}]. The irreducible part of the loss (the conditional variance of the
target) is the same for both and cancels. Under the load model e_k(t) = rho(t) g(M_k) — an expert's excess error at t
is the local difficulty times a function of how much difficulty M_k its interval holds — equal loads M_k (de Boor's
condition) is the same as e_k(b) = e_{k+1}(b) at every boundary; D > 0 says expert k carries too much, so b moves
towards it. A move happens only when D is resolved (|D| > z se) and by a step that shrinks at each stage; the experts
continue from their weights on their new intervals, within the same total steps as a fixed split. During the
adaptive stages each expert trains on its interval widened by ``overlap``, so that both know the window around a
boundary. Extra compute: the indicator's forward passes only (reported as a fraction of one fixed-split training).

``successive_halving`` — the honest comparator: every candidate split trains its experts briefly, the half with the
lowest validation flow-matching loss of the whole segmented model (on draws shared by all candidates) goes on, and so
on; the winner's experts continue to the full budget from their weights. Its cost is every loser's steps.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch

from cbsflow import rundir
from cbsflow.errors import UserError
from cbsflow.monitors import _device
from cbsflow.registry import Instance, name_of, register
from cbsflow.seeding import derive_seed
from cbsflow.training import process_state, widened


def _record_path(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints", "adaptation.json")


def cross_affinity(similarity: np.ndarray, t: np.ndarray, boundaries: np.ndarray) -> float:
    """The mean of S[i, j] over pairs of grid times t_i, t_j in different intervals of ``boundaries``."""
    segment = np.searchsorted(np.asarray(boundaries)[1:-1], np.asarray(t), side="right")
    across = segment[:, None] != segment[None, :]
    if not across.any():
        raise UserError("warm_split.pilot: every grid time lies in one interval; raise warm_split.n_points")
    return float(np.asarray(similarity)[across].mean())


def _load_record(job, method: str, initial: np.ndarray) -> dict:
    """The moves made so far by the same method, start and training configuration (a resumed run continues from
    them), or a new record."""
    path = _record_path(job.run_dir)
    if os.path.exists(path):
        record = rundir.read_json(path, "adaptation")
        if (record.get("method") == method and record.get("config_digest") == job.config_digest
                and np.allclose(record.get("initial_boundaries", []), initial)):
            return record
    return {"method": method, "config_digest": job.config_digest, "initial_boundaries": initial.tolist(),
            "history": [], "done": False}


def _save_record(run_dir: str, record: dict) -> None:
    if process_state().is_main_process:
        rundir.write_json(_record_path(run_dir), record)


@torch.no_grad()
def paired_losses(nets: Sequence, path, x1: torch.Tensor, y, eps: torch.Tensor, t: torch.Tensor,
                  batch_size: int = 4096) -> torch.Tensor:
    """(len(nets), n) per-sample flow-matching losses of each network on the same draws."""
    out = torch.zeros(len(nets), x1.shape[0])
    for sl in (slice(i, min(i + batch_size, x1.shape[0])) for i in range(0, x1.shape[0], batch_size)):
        x_t, target = path.interpolate(x1[sl], eps[sl], t[sl])
        for j, net in enumerate(nets):
            device = _device(net)
            yy = None if y is None else y[sl].to(device)
            v = net(x_t.to(device), t[sl].to(device), yy).float().cpu()
            out[j, sl] = (v - target.float()).pow(2).flatten(1).mean(1)
    return out


def _draws(dataset, n: int, seed: int, tag: int):
    """n data samples and noise from their own seeds (never the training streams')."""
    x1, y = dataset.sample(n, seed=derive_seed(seed, 9, tag))
    gen = torch.Generator().manual_seed(derive_seed(seed, 9, tag, 1))
    return x1, y, torch.randn(x1.shape, generator=gen), gen


def _plot(run_dir: str, record: dict, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = record["history"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [0] + [h["step"] for h in hist] + [steps]
    bs = [record["initial_boundaries"]] + [h["boundaries"] for h in hist] + [record["final_boundaries"]]
    for j in range(1, len(bs[0]) - 1):
        ax.step(xs, [b[j] for b in bs], where="post", marker="o", label=f"b{j}")
    ax.set_xlabel("optimizer steps per expert")
    ax.set_ylabel("boundary t")
    ax.set_ylim(0, 1)
    ax.set_title(f"{record['method']}: boundaries during training", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "adaptation.png"), dpi=110)
    plt.close(fig)


@register("adaptation")
class moving_mesh:
    """Move the boundaries during training to equalise the current experts' errors at each boundary.

    ``at``: the shares of the training budget after which boundaries may move; ``steps``: how far a resolved move
    goes at each of them (shrinking, so the boundaries settle); ``window``: the t-window around a boundary the
    indicator is measured on; ``overlap``: how far each expert trains beyond its interval before the last move;
    ``n_eval``: paired draws per boundary; ``z``: how many standard errors make a difference resolved;
    ``min_width``: the narrowest interval allowed.
    """

    def __init__(self, at: Sequence[float] = (0.25, 0.45, 0.65), steps: Sequence[float] = (0.15, 0.1, 0.05),
                 window: float = 0.1, overlap: float = 0.05, n_eval: int = 32768, z: float = 2.0,
                 min_width: float = 0.05):
        if len(at) != len(steps) or not all(0 < a < 1 for a in at) or list(at) != sorted(at):
            raise UserError(f"moving_mesh: 'at' must be increasing shares in (0, 1), one per step; got at={list(at)}, "
                            f"steps={list(steps)}")
        if not 0 < window <= 0.5 or overlap < 0 or n_eval < 2 or min_width <= 0:
            raise UserError(f"moving_mesh: need 0 < window <= 0.5, overlap >= 0, n_eval >= 2, min_width > 0 (got "
                            f"window={window}, overlap={overlap}, n_eval={n_eval}, min_width={min_width})")
        self.at, self.steps = [float(a) for a in at], [float(s) for s in steps]
        self.window, self.overlap, self.n_eval, self.z, self.min_width = window, overlap, int(n_eval), z, min_width

    def indicator(self, experts, b: np.ndarray, job, tag: int) -> list[dict]:
        """At each inner boundary: mean and standard error of L_k - L_{k+1} on shared draws near it."""
        out = []
        for j in range(1, len(b) - 1):
            x1, y, eps, gen = _draws(job.dataset, self.n_eval, job.seed, 100 * tag + j)
            half = self.window / 2
            lo, hi = max(b[j] - half, b[j - 1]), min(b[j] + half, b[j + 1])
            t = lo + (hi - lo) * torch.rand(self.n_eval, generator=gen)
            left, right = experts[j - 1], experts[j]
            loss = paired_losses([left, right], job.path, x1, y, eps, t)
            d = (loss[0] - loss[1]).double()
            out.append({"mean": float(d.mean()), "se": float(d.std() / math.sqrt(len(d)))})
        return out

    def move(self, b: np.ndarray, ind: list[dict], step: float) -> np.ndarray:
        new = b.copy()
        for j, d in enumerate(ind, start=1):
            if abs(d["mean"]) > self.z * d["se"]:
                new[j] = b[j] - step * math.copysign(1.0, d["mean"])
        # Keep the order and the narrowest width: clip each boundary between its neighbours.
        for j in range(1, len(new) - 1):
            new[j] = min(max(new[j], new[j - 1] + self.min_width), 1.0 - self.min_width * (len(new) - 1 - j))
        return new

    def __call__(self, job, initial: np.ndarray, base: dict | None) -> np.ndarray:
        settings, n = job.settings, len(initial) - 1
        record = _load_record(job, "moving_mesh", initial)
        b = np.array(record["history"][-1]["boundaries"] if record["history"] else initial, dtype=float)
        experts = [job.new_expert(k, (b[k], b[k + 1]), base) for k in range(n)]
        stops = [max(1, int(round(a * settings.steps))) for a in self.at]
        outs = [None] * n
        for stage, stop in enumerate(stops + [settings.steps]):
            last = stage == len(stops)
            for k, expert in enumerate(experts):
                expert.interval = (float(b[k]), float(b[k + 1]))
                seen = widened(expert.interval, job.margin if last else max(self.overlap, job.margin))
                outs[k] = job.fit_expert(k, n, expert, seen, stop_at=None if last else stop)
            if last or stage < len(record["history"]):
                continue  # a resumed run: this move was made (and recorded) before
            ind = self.indicator([o["ema"] or e for o, e in zip(outs, experts)], b, job, stage)
            new = self.move(b, ind, self.steps[stage])
            record["history"].append({"step": stop, "boundaries": new.tolist(), "indicator": ind,
                                      "moved": bool(np.any(new != b))})
            print(f"[train] moving_mesh after {stop} steps: boundaries {np.round(b[1:-1], 3).tolist()} -> "
                  f"{np.round(new[1:-1], 3).tolist()} (L_left - L_right: "
                  + ", ".join(f"{d['mean']:+.4f} ± {d['se']:.4f}" for d in ind) + ")", flush=True)
            b = new
            _save_record(job.run_dir, record)
        for k, expert in enumerate(experts):
            job.save_expert(k, expert, outs[k], widened(expert.interval, job.margin))
        record.update(final_boundaries=b.tolist(), done=True, extra_compute=self.extra_compute(n, settings))
        _save_record(job.run_dir, record)
        return b

    def extra_compute(self, n: int, settings) -> float:
        """Forward passes of the indicator, as a share of one fixed-split training (forward + backward ~ 3 passes
        per sample)."""
        evals = len(self.at) * (n - 1) * 2 * self.n_eval
        return evals / (3.0 * n * settings.steps * settings.batch_size * settings.grad_accum)


def default_candidates(n: int) -> list[list[float]]:
    """N = 2: boundaries 0.2, ..., 0.8; N > 2: uniform boundaries warped by t -> t^p for a few p."""
    if n == 2:
        return [[0.0, round(0.1 * k, 3), 1.0] for k in range(2, 9)]
    return [[(k / n) ** p for k in range(n + 1)] for p in (0.5, 0.7, 1.0, 1.4, 2.0)]


@register("adaptation")
class successive_halving:
    """Train every candidate split briefly, keep the best half by validation loss, repeat; finish the winner.

    ``candidates``: inner boundaries per candidate (e.g. [[0.3], [0.5], [0.7]]), None for ``default_candidates``;
    ``rungs``: the shares of the budget at which candidates are compared; ``keep``: the share kept at each rung;
    ``n_eval``: validation draws (t uniform on [0, 1], shared by every candidate) of the flow-matching loss.
    ``metric``: None ranks by that loss; a metric component (e.g. ``@sliced_wasserstein()``) ranks instead by that
    metric of ``n_eval`` samples of each candidate's current experts (EMA weights; Heun, ``sample_steps`` steps
    spread over the segments as ``uniform_steps``; starting noise and the metric's reference drawn from seeds of
    their own, shared by every candidate, never the evaluate stage's).
    """

    def __init__(self, candidates: Sequence[Sequence[float]] | None = None,
                 rungs: Sequence[float] = (0.025, 0.05, 0.1), keep: float = 0.5, n_eval: int = 16384,
                 metric=None, sample_steps: int = 16):
        if not rungs or list(rungs) != sorted(rungs) or not all(0 < r < 1 for r in rungs) or not 0 < keep < 1:
            raise UserError(f"successive_halving: rungs must be increasing shares in (0, 1) and 0 < keep < 1; got "
                            f"rungs={list(rungs)}, keep={keep}")
        if metric is not None and not callable(metric):
            raise UserError(f"successive_halving.metric = {metric!r}: bind a metric component, e.g. "
                            "@sliced_wasserstein() (with the parentheses), or None for the validation loss")
        if sample_steps < 2:
            raise UserError(f"successive_halving.sample_steps = {sample_steps}: need at least 2")
        self.candidates = None if candidates is None else [[float(x) for x in c] for c in candidates]
        self.rungs, self.keep, self.n_eval = [float(r) for r in rungs], keep, int(n_eval)
        self.metric, self.sample_steps = metric, int(sample_steps)

    def _candidates(self, n: int) -> list[np.ndarray]:
        if self.candidates is None:
            return [np.array(c) for c in default_candidates(n)]
        out = [np.array([0.0, *c, 1.0]) for c in self.candidates]
        for c in out:
            if len(c) != n + 1 or np.any(np.diff(c) <= 0):
                raise UserError(f"successive_halving.candidates: {c[1:-1].tolist()} is not {n - 1} increasing "
                                "boundaries inside (0, 1)")
        return out

    def score(self, experts, b: np.ndarray, job) -> float:
        """Lower is better: the validation flow-matching loss of the segmented model on draws shared by every
        candidate, or (``metric`` bound) that metric of its samples, signed so that lower is better."""
        if self.metric is not None:
            return self._metric_score(experts, b, job)
        x1, y, eps, gen = _draws(job.dataset, self.n_eval, job.seed, 7)
        t = torch.rand(self.n_eval, generator=gen)
        owner = torch.as_tensor(np.searchsorted(b[1:-1], t.numpy(), side="right"))
        loss = paired_losses(experts, job.path, x1, y, eps, t)
        return float(loss.gather(0, owner[None]).mean())

    @torch.no_grad()
    def _metric_score(self, experts, b: np.ndarray, job) -> float:
        from cbsflow.landscape import higher_is_better
        from cbsflow.samplers import generate, heun, uniform_steps
        from cbsflow.segmented import SegmentedVelocity

        model = SegmentedVelocity(list(experts), b)
        batches, _ = generate(model, heun, uniform_steps()(b, self.sample_steps), job.dataset.shape,
                              job.dataset.num_classes, self.n_eval, 4096, seed=derive_seed(job.seed, 9, 8),
                              path=job.path)
        samples = torch.cat([x for _, x, _ in batches])
        result = self.metric(samples=samples, dataset=job.dataset, seed=derive_seed(job.seed, 9, 9))
        name, entry = next(iter(result.items()))  # a metric that reports several numbers ranks by its first
        return -entry["value"] if higher_is_better(name) else entry["value"]

    @staticmethod
    def _drop_states(job, losers: list[int]) -> None:
        """The training states of candidates that will not train again (on the main process, once every process has
        ranked them): a candidate's experts keep their optimizer state, so at image scale they fill the disk."""
        if losers and process_state().is_main_process:
            import shutil

            for i in losers:  # every expert's state folder of the candidate: halving/c{i}/segment_k
                shutil.rmtree(rundir.state_dir(job.run_dir, f"halving/c{i}"), ignore_errors=True)

    def __call__(self, job, initial: np.ndarray, base: dict | None) -> np.ndarray:
        settings, n = job.settings, len(initial) - 1
        cands = self._candidates(n)
        record = _load_record(job, "successive_halving", initial)
        record.setdefault("candidates", [c.tolist() for c in cands])
        alive = list(range(len(cands)))
        experts = {i: [job.new_expert(k, (c[k], c[k + 1]), base) for k in range(n)] for i, c in enumerate(cands)}
        spent, scoring = 0, 0  # training steps of every candidate; forward passes spent on ranking them
        for r, share in enumerate(self.rungs):
            stop = max(1, int(round(share * settings.steps)))
            done = record["history"][r] if r < len(record["history"]) else None
            if done is not None and done["step"] == stop:  # ranked before a stop: its losers' states are gone
                scores = {int(i): v for i, v in done["scores"].items()}
            else:
                scores = {}
                for i in alive:
                    outs = [job.fit_expert(k, n, e, widened(e.interval, job.margin), stop_at=stop,
                                           state=f"halving/c{i}/segment_{k}") for k, e in enumerate(experts[i])]
                    scored = experts[i] if self.metric is None else [o["ema"] or e for o, e in zip(outs, experts[i])]
                    scores[i] = self.score(scored, cands[i], job)
            previous = 0 if r == 0 else int(round(self.rungs[r - 1] * settings.steps))
            spent += len(alive) * n * (stop - previous)
            scoring += len(alive) * self.n_eval * (1 if self.metric is None else 2 * self.sample_steps)
            ranked = sorted(alive, key=scores.get)
            kept = ranked[:max(1, math.ceil(self.keep * len(alive)))] if r < len(self.rungs) - 1 else ranked[:1]
            if done is None or done["step"] != stop:
                del record["history"][r:]
                record["history"].append({"step": stop, "scores": {str(i): scores[i] for i in alive},
                                          "kept": kept, "boundaries": cands[ranked[0]].tolist()})
                _save_record(job.run_dir, record)
            print(f"[train] successive_halving after {stop} steps: " + ", ".join(
                f"{np.round(cands[i][1:-1], 3).tolist()} {scores[i]:.4f}" for i in ranked) + f"; {len(kept)} go on",
                flush=True)
            self._drop_states(job, [i for i in alive if i not in kept])
            alive = kept
        win = alive[0]
        b = cands[win]
        for k, expert in enumerate(experts[win]):
            out = job.fit_expert(k, n, expert, widened(expert.interval, job.margin), state=f"halving/c{win}/segment_{k}")
            job.save_expert(k, expert, out, widened(expert.interval, job.margin))
        spent += n * (settings.steps - int(round(self.rungs[-1] * settings.steps)))
        # Extra compute: the losers' steps, plus the ranking's forward passes against one training's (forward +
        # backward ~ 3 passes per sample).
        passes = 3.0 * n * settings.steps * settings.batch_size * settings.grad_accum
        record.update(final_boundaries=b.tolist(), done=True,
                      extra_compute=spent / (n * settings.steps) - 1.0 + scoring / passes)
        _save_record(job.run_dir, record)
        return b


@register("adaptation")
class warm_split:
    """Train one network like the experts on all of [0, 1] for a share of the budget, split by its own field's
    monitor, and start every expert from it — within the same total steps as a fixed split.

    ``share``: the part of the total budget (N experts × their steps) the shared network trains, taken evenly from
    every expert's steps; ``monitor`` (default: the centred Dirichlet energy, 4 probes) is measured on its EMA field
    at ``n_points`` times in [0, ``t_max``] on ``n_samples`` data points; ``solver`` (default: de Boor with
    exponent 1/2) turns the profile into N intervals. Every expert then starts from the shared network's weights (EMA
    if kept) and trains the rest of its steps on its own interval.

    ``pilot`` > 0 makes the warm start a decision (docs/math.md, "The warm start as a choice"): the shared network
    first trains that part of its steps; the gradient affinity (ANT's cosine of loss gradients) between times in
    different intervals of the initial split is measured on it, and only if its mean exceeds ``min_affinity`` does
    the shared network go on and start the experts. Otherwise every expert trains all its steps from scratch on the
    initial split (the pilot's steps then count as extra compute). ``warm_adaptive`` also decides how much;
    ``warm_transfer`` decides by a race at equal cost instead of the affinity.
    """

    recheck = False  # warm_adaptive: measure the affinity again after every further pilot of the shared steps

    def __init__(self, share: float = 0.25, monitor: Instance("monitor") | None = None,
                 solver: Instance("partition") | None = None, n_points: int = 32, n_samples: int = 512,
                 t_max: float = 0.995, pilot: float = 0.0, min_affinity: float = 0.0):
        if not 0 < share < 1:
            raise UserError(f"warm_split.share = {share}: the shared network's part of the budget must be in (0, 1)")
        if not 0 <= pilot < 1 or not -1 <= min_affinity < 1:
            raise UserError(f"warm_split: need 0 <= pilot < 1 (a part of the shared network's steps; 0: always warm "
                            f"start) and -1 <= min_affinity < 1 (a cosine), got pilot={pilot}, "
                            f"min_affinity={min_affinity}")
        self.pilot, self.min_affinity = float(pilot), float(min_affinity)
        if n_points < 2 or n_samples < 2 or not 0 < t_max <= 1:
            raise UserError(f"warm_split: need n_points >= 2, n_samples >= 2 and 0 < t_max <= 1 (got n_points="
                            f"{n_points}, n_samples={n_samples}, t_max={t_max})")
        self.share, self.monitor, self.solver = float(share), monitor, solver
        self.n_points, self.n_samples, self.t_max = int(n_points), int(n_samples), float(t_max)

    def _parts(self, n: int, settings) -> tuple[int, int]:
        """(steps of the shared network, steps each expert trains after it); together exactly N × steps."""
        per_expert = int(round(self.share * settings.steps))
        if not 1 <= per_expert < settings.steps:
            raise UserError(f"warm_split.share = {self.share} of {settings.steps} steps per expert leaves "
                            f"{per_expert} for the shared network; raise it or the experts' training.steps")
        return n * per_expert, settings.steps - per_expert

    def _solver(self, n: int):
        from cbsflow.partition import deboor

        solver = self.solver if self.solver is not None else deboor(n_segments=n, exponent=0.5)
        if getattr(solver, "n_segments", n) != n:
            raise UserError(f"warm_split.solver makes {solver.n_segments} segments but the split has {n}; bind its "
                            "n_segments to %N_SEGMENTS")
        return solver

    def base(self, job, steps: int, init: dict | None, used: int | None = None):
        """The shared network (trained once; then read from checkpoints/warm_base.pt) and the field to profile:
        ``used`` of its ``steps`` (all by default; fewer where rechecks ended the sharing early).
        Locked while it trains: a second job in the same run directory stops with one line naming the holder."""
        from cbsflow import locks

        with locks.held(locks.expert_lock(job.run_dir, "warm_base"), process_state()):
            return self._base(job, steps, init, steps if used is None else used)

    def _base(self, job, steps: int, init: dict | None, used: int):
        from cbsflow.segmented import Expert, build_network

        path = os.path.join(job.run_dir, "checkpoints", "warm_base.pt")
        torch.manual_seed(job.seed)
        net = build_network(job.backbone, job.dataset)
        if job.complete(path, (0.0, 1.0), used):
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
            return net.state_dict(), Expert(net, job.path).eval()
        field, out = self._train_base(job, net, steps, init, None if used == steps else used)
        state = field.net.state_dict()
        if process_state().is_main_process:
            rundir.save_checkpoint(path, {"state_dict": state, "ema": None, "interval": [0.0, 1.0], "steps": used,
                                          "loss": out["loss"], "config_digest": job.config_digest})
        return state, field.eval()

    def _train_base(self, job, net, steps: int, init: dict | None, stop_at: int | None = None):
        """The shared network trained to ``stop_at`` (the pilot) or all ``steps``, resumable from its state folder:
        a pilot's run goes on, unchanged, when the warm start is chosen. Returns its field (EMA if kept) and fit's
        output."""
        import dataclasses

        from cbsflow.segmented import Expert
        from cbsflow.training import fit

        if init is not None:
            net.load_state_dict(init)
        out = fit(Expert(net, job.path), job.dataset, job.path, (0.0, 1.0),
                  dataclasses.replace(job.settings, steps=steps), seed=job.seed,
                  state_dir=rundir.state_dir(job.run_dir, "warm_base"), desc="warm_split: shared network",
                  identity={"config": job.config_digest, "start": job.start_digest(init), "share": self.share},
                  stop_at=stop_at)
        return (out["ema"] if out["ema"] is not None else Expert(net, job.path)), out

    def checks(self, shared: int, n: int) -> list[int]:
        """The shared network's steps at which the affinity is measured: the pilot's, then (``recheck``) every
        further ``pilot`` of ``shared`` short of the end, rounded to whole steps per expert so that the experts can
        start from any of them within the budget."""
        first = max(1, int(round(self.pilot * shared)))
        if not self.recheck:
            return [first]
        steps = [first]
        for k in range(2, int(math.ceil(1 / self.pilot)) + 1):
            s = n * int(round(k * self.pilot * shared / n))
            if steps[-1] < s < shared:
                steps.append(s)
        return steps

    def transfers(self, job, initial: np.ndarray, shared: int, init: dict | None, record: dict) -> int:
        """How many of the shared network's ``shared`` steps the experts start from (all without a pilot; 0: none,
        every expert from scratch). The pilot's mean gradient affinity between times in different intervals of
        ``initial`` against ``min_affinity`` decides whether; with ``recheck`` the next checks decide how much.
        Each check is measured once and kept in the record, so a resumed run goes on where it stopped."""
        if self.pilot <= 0:
            return shared
        n = len(initial) - 1
        decision = record.get("decision")
        if decision is None or "checks" not in decision:  # a record written before rechecks holds one check
            decision = record["decision"] = {"min_affinity": self.min_affinity, "t": None, "matrix": None,
                                             **(decision or {}), "checks": []}
            if "affinity" in decision:
                decision["checks"].append({"steps": decision["pilot_steps"], "affinity": decision["affinity"]})
                if decision["affinity"] <= self.min_affinity:
                    decision["shared_steps"] = 0
        planned = self.checks(shared, n)
        while "shared_steps" not in decision:
            k = len(decision["checks"])
            if k == len(planned):  # every check passed: the whole share
                decision["shared_steps"] = shared
                break
            steps = planned[k]
            affinity, s, t = self._affinity(job, initial, shared, init, steps)
            decision["checks"].append({"steps": steps, "affinity": affinity})
            if k == 0:
                decision.update(pilot_steps=steps, affinity=affinity, warm=affinity > self.min_affinity,
                                t=t.tolist(), matrix=s.tolist())
            if affinity <= self.min_affinity:
                decision["shared_steps"] = 0 if k == 0 else steps
            _save_record(job.run_dir, record)
            verdict = ("go on" if "shared_steps" not in decision else
                       "experts from scratch" if decision["shared_steps"] == 0 else
                       f"experts start here ({steps} of {shared} shared steps)")
            print(f"[train] {type(self).__name__}: after {steps} steps of the shared network, gradient affinity "
                  f"across the intervals {affinity:+.3f} (min {self.min_affinity:+.3f}): {verdict}", flush=True)
        decision["warm"] = decision["shared_steps"] > 0
        _save_record(job.run_dir, record)
        return int(decision["shared_steps"])

    def _affinity(self, job, initial: np.ndarray, shared: int, init: dict | None, steps: int):
        """The shared network trained to ``steps`` (resumable; the same run as without checks) and its mean
        cross-interval gradient affinity, with the matrix and its grid."""
        from cbsflow import locks
        from cbsflow.affinity import gradient_affinity
        from cbsflow.segmented import build_network

        with locks.held(locks.expert_lock(job.run_dir, "warm_base"), process_state()):
            torch.manual_seed(job.seed)
            field, _ = self._train_base(job, build_network(job.backbone, job.dataset), shared, init, steps)
        x1, y = job.dataset.sample(self.n_samples, seed=derive_seed(job.seed, 9, 13))
        t = torch.linspace(0.0, self.t_max, self.n_points)
        s, _ = gradient_affinity()(field, x1, t, path=job.path, y=y,
                                   generator=torch.Generator().manual_seed(derive_seed(job.seed, 9, 14)))
        return cross_affinity(s.numpy(), t.numpy(), initial), s, t

    def _check_passes(self, record: dict, settings) -> float:
        """The affinity checks' passes (per-sample gradients ~ 3 passes per sample and time, per check)."""
        return 3.0 * self.n_points * self.n_samples * len(record.get("decision", {}).get("checks", []))

    def from_scratch(self, job, initial: np.ndarray, record: dict) -> np.ndarray:
        """The decision against a warm start: every expert trains all its steps from scratch on ``initial``; the
        pilot's steps and its affinity passes are the extra compute."""
        n, settings = len(initial) - 1, job.settings
        for k in range(n):
            job.expert(k, initial, None)
        passes = self._check_passes(record, settings)
        budget = n * settings.steps
        record.update(final_boundaries=initial.tolist(), done=True, described={
            "boundary_solver": "none: no warm start", "monitor": None, "share": 0.0},
            extra_compute=record["decision"]["pilot_steps"] / budget
            + passes / (3.0 * budget * settings.batch_size * settings.grad_accum))
        _save_record(job.run_dir, record)
        return initial

    def _monitor(self):
        from cbsflow.monitors import dirichlet

        return self.monitor if self.monitor is not None else dirichlet(centred=True)

    def _described(self, solver) -> dict:
        """What set the boundaries: the solver, the monitor (None when the solver needs no profile) and the density
        the solver cut (what profile.png and split.json name)."""
        if not getattr(solver, "needs_profile", True):
            return {"boundary_solver": name_of(solver), "monitor": None, "share": self.share}
        monitor = self._monitor()
        return {"boundary_solver": name_of(solver), "monitor": name_of(monitor),
                "centred": bool(getattr(monitor, "centred", False)), "exponent": getattr(solver, "exponent", None),
                "floor": getattr(solver, "floor", None), "share": self.share}

    def profile(self, field, job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        monitor = self._monitor()
        x1, y = job.dataset.sample(self.n_samples, seed=derive_seed(job.seed, 9, 11))
        t = torch.linspace(0.0, self.t_max, self.n_points)
        mean, se = monitor(field, x1, t, path=job.path, y=y,
                           generator=torch.Generator().manual_seed(derive_seed(job.seed, 9, 12)))
        mean, se = (np.asarray(torch.as_tensor(v, dtype=torch.float64).cpu()) for v in (mean, se))
        rundir.check_profile(name_of(monitor), t.numpy(), mean, se)
        return t.numpy().astype(np.float64), mean, se

    def __call__(self, job, initial: np.ndarray, base: dict | None) -> np.ndarray:
        if job.local_time:
            raise UserError("warm_split starts every expert from a network that saw global t; it needs "
                            "train.local_time = False")
        settings, n = job.settings, len(initial) - 1
        solver = self._solver(n)
        shared, rest = self._parts(n, settings)
        record = _load_record(job, type(self).__name__, initial)
        used = self.transfers(job, initial, shared, base, record)
        if used == 0:
            return self.from_scratch(job, initial, record)
        rest += (shared - used) // n  # sharing ended early: the experts train the steps it did not take
        state, field = self.base(job, shared, base, used)
        if record["history"]:
            b = np.array(record["history"][-1]["boundaries"], dtype=float)
        else:
            b = self._split(job, field, solver, record, initial, used)
        for k in range(n):
            self._expert(job, k, b, state, used, rest)
        pilot = self._check_passes(record, settings)
        described = self._described(solver)
        if used < shared:
            described["share"] = self.share * used / shared
        record.update(final_boundaries=b.tolist(), done=True, described=described,
                      extra_compute=self.extra_compute(n, settings, solver)
                      + pilot / (3.0 * n * settings.steps * settings.batch_size * settings.grad_accum))
        _save_record(job.run_dir, record)
        return b

    def _split(self, job, field, solver, record: dict, initial: np.ndarray, shared: int) -> np.ndarray:
        """The boundaries from the shared network's profile (none is measured for a solver that needs none, e.g.
        the uniform control ``warm_uniform``), recorded in checkpoints/adaptation.json."""
        n = len(initial) - 1
        entry = {"step": shared // n, "moved": True}
        if getattr(solver, "needs_profile", True):
            t, value, se = self.profile(field, job)
            b = rundir.check_boundaries(solver(t, value, path=job.path), "warm_split.solver")
            entry["profile"] = {"t": t.tolist(), "value": value.tolist(), "stderr": se.tolist(),
                                **self._described(solver)}
        else:
            b = rundir.check_boundaries(solver(path=job.path), "warm_split.solver")
        record["history"].append({**entry, "boundaries": b.tolist()})
        print(f"[train] warm_split after {shared} steps of the shared network ({shared // n} per expert): "
              f"boundaries {np.round(initial[1:-1], 3).tolist()} -> {np.round(b[1:-1], 3).tolist()}", flush=True)
        _save_record(job.run_dir, record)
        return b

    def _expert(self, job, k: int, b: np.ndarray, state: dict, shared: int, rest: int,
                folder: str | None = None) -> None:
        """Expert k from the shared weights, trained ``rest`` steps on its interval (its training state in
        ``folder``, default segment_k); skipped when a finished checkpoint of it exists (a resumed run); locked as
        the fixed split's experts are."""
        import dataclasses

        from cbsflow import locks

        n, interval = len(b) - 1, (float(b[k]), float(b[k + 1]))
        with locks.held(locks.expert_lock(job.run_dir, k), process_state()):
            if job.complete(rundir.checkpoint_path(job.run_dir, k), interval, rest):
                print(f"[train] expert {k + 1}/{n} is complete, skipped")
                return
            expert = job.new_expert(k, interval, state)
            seen = widened(expert.interval, job.margin)
            out = job.fit_expert(k, n, expert, seen, state=folder, settings=dataclasses.replace(job.settings,
                                                                                              steps=rest))
            job.save_expert(k, expert, out, seen, steps=rest, inherited=shared)

    def extra_compute(self, n: int, settings, solver=None) -> float:
        """The monitor's passes (a Jacobian-vector product ~ 3 forward passes, per probe, time and sample) against
        one fixed-split training's (forward + backward ~ 3 passes per sample); the steps themselves add nothing, and
        a solver that needs no profile (the uniform control) adds nothing at all."""
        if solver is not None and not getattr(solver, "needs_profile", True):
            return 0.0
        probes = getattr(self.monitor, "n_probes", 4) if self.monitor is not None else 4
        passes = 3.0 * self.n_points * self.n_samples * probes
        return passes / (3.0 * n * settings.steps * settings.batch_size * settings.grad_accum)


@register("adaptation")
class warm_adaptive(warm_split):
    """The warm split that decides whether and how much to warm-start (docs/math.md, "The warm start as a choice").

    As ``warm_split`` with a ``pilot``: the gradient affinity across the initial split's intervals, measured on the
    shared network after ``pilot`` of its steps, decides whether. Then it is measured again after every further
    ``pilot`` of them, and the sharing ends at the first check at or below ``min_affinity``: the experts start from
    the shared network as it is there and train the steps it did not take (the budget stays N x steps); if every
    check passes, the share is ``share``.
    """

    recheck = True

    def __init__(self, share: float = 0.25, monitor: Instance("monitor") | None = None,
                 solver: Instance("partition") | None = None, n_points: int = 32, n_samples: int = 512,
                 t_max: float = 0.995, pilot: float = 0.2, min_affinity: float = 0.0):
        if not 0 < pilot < 1:
            raise UserError(f"warm_adaptive.pilot = {pilot}: the part of the shared network's steps between two "
                            "checks of the affinity must be in (0, 1), e.g. 0.2")
        super().__init__(share=share, monitor=monitor, solver=solver, n_points=n_points, n_samples=n_samples,
                         t_max=t_max, pilot=pilot, min_affinity=min_affinity)


@register("adaptation")
class warm_transfer(warm_split):
    """The warm split that decides whether to warm-start by a race at equal cost (docs/math.md, "The warm start as a
    choice").

    The shared network trains ``pilot`` of its steps (s, a multiple of N); beside it, every expert k trains from
    scratch on its interval of the initial split for s / N of its own steps, which costs the same. On fresh paired
    draws (``n_eval`` per interval, t uniform in it) the flow-matching loss of the shared network is compared with
    expert k's; the differences, weighted by the intervals' lengths, give D. D < 0 (the shared steps taught each
    interval more than the same steps spent on it alone): the shared network goes on, as the warm split's, and the
    scratch experts' steps are the extra compute. Otherwise the scratch experts go on to all their steps (nothing of
    theirs is lost) and the pilot's shared steps are the extra compute. The share is not chosen: ``share`` when warm.
    """

    def __init__(self, share: float = 0.25, monitor: Instance("monitor") | None = None,
                 solver: Instance("partition") | None = None, n_points: int = 32, n_samples: int = 512,
                 t_max: float = 0.995, pilot: float = 0.2, n_eval: int = 4096):
        if not 0 < pilot <= 1 or n_eval < 2:
            raise UserError(f"warm_transfer: need 0 < pilot <= 1 (the shared network's part trained before the race, "
                            f"e.g. 0.2) and n_eval >= 2, got pilot={pilot}, n_eval={n_eval}")
        super().__init__(share=share, monitor=monitor, solver=solver, n_points=n_points, n_samples=n_samples,
                         t_max=t_max)
        self.pilot = float(pilot)
        self.n_eval = int(n_eval)

    def transfers(self, job, initial: np.ndarray, shared: int, init: dict | None, record: dict) -> int:
        """``shared`` if the race favours the shared network, else 0; raced once, kept in the record."""
        from cbsflow import locks
        from cbsflow.segmented import build_network

        decision = record.get("decision")
        if decision is None or "shared_steps" not in decision:
            n = len(initial) - 1
            steps = n * max(1, int(round(self.pilot * shared / n)))
            with locks.held(locks.expert_lock(job.run_dir, "warm_base"), process_state()):
                torch.manual_seed(job.seed)
                field, _ = self._train_base(job, build_network(job.backbone, job.dataset), shared, init, steps)
            race = [self._race(job, k, initial, field, steps // n) for k in range(n)]
            weights = np.diff(initial)
            mean = float(sum(w * r["mean"] for w, r in zip(weights, race)))
            se = float(math.sqrt(sum((w * r["se"]) ** 2 for w, r in zip(weights, race))))
            record["decision"] = {"pilot_steps": steps, "scratch_steps": steps // n, "intervals": race,
                                  "difference": mean, "se": se, "warm": mean < 0,
                                  "shared_steps": shared if mean < 0 else 0}
            _save_record(job.run_dir, record)
            if mean < 0 and process_state().is_main_process:  # the race's experts lost: their training states go
                import shutil

                for k in range(n):
                    shutil.rmtree(rundir.state_dir(job.run_dir, f"segment_{k}"), ignore_errors=True)
            print(f"[train] warm_transfer: shared network after {steps} steps minus experts from scratch after "
                  f"{steps // n} each, flow-matching loss {mean:+.4g} ± {2 * se:.2g}: "
                  f"{'warm start' if mean < 0 else 'experts from scratch'}", flush=True)
        return int(record["decision"]["shared_steps"])

    def _race(self, job, k: int, initial: np.ndarray, field, steps: int) -> dict:
        """Expert k from scratch to ``steps`` of its own (its state folder: it goes on from there if it wins) and the
        paired loss difference, shared network minus it, on draws from its interval."""
        from cbsflow import locks

        n, interval = len(initial) - 1, (float(initial[k]), float(initial[k + 1]))
        with locks.held(locks.expert_lock(job.run_dir, k), process_state()):
            expert = job.new_expert(k, interval, None)
            out = job.fit_expert(k, n, expert, widened(interval, job.margin), stop_at=steps)
        scratch = (out["ema"] if out["ema"] is not None else expert).eval()
        x1, y, eps, gen = _draws(job.dataset, self.n_eval, job.seed, 300 + k)
        t = interval[0] + (interval[1] - interval[0]) * torch.rand(self.n_eval, generator=gen)
        d = paired_losses([field, scratch], job.path, x1, y, eps, t)
        d = (d[0] - d[1]).double()
        return {"interval": list(interval), "mean": float(d.mean()), "se": float(d.std() / math.sqrt(len(d)))}

    def _check_passes(self, record: dict, settings) -> float:
        """The race's forward passes (two networks on n_eval draws per interval) and, when the warm start won, the
        scratch experts' steps (~3 passes per sample each)."""
        decision = record.get("decision", {})
        n = len(decision.get("intervals", []))
        lost = n * decision.get("scratch_steps", 0) * settings.batch_size * settings.grad_accum
        return 2.0 * n * self.n_eval + (3.0 * lost if decision.get("warm") else 0.0)


@register("adaptation")
class warm_race(warm_split):
    """The warm split against the uniform split from scratch, raced late in the experts' training (docs/math.md,
    "The warm start as a choice").

    Both candidates train side by side at equal cost: the warm split's (shared network, its split, experts from it;
    states ``warm_segment_k``) and the initial split's experts from scratch (states ``segment_k``). When the warm
    experts have taken ``race_at`` of their own steps (the scratch experts then have taken the same total: their
    share of the shared steps more), the two composite fields are compared by the flow-matching loss on ``n_eval``
    fresh paired draws with t uniform in [0, 1). The lower one goes on to all its steps, from where the race left it
    (bit for bit the run it would have been alone); the other's steps are the extra compute. ``race_at = 1`` trains
    both to the end and keeps the better.
    """

    def __init__(self, share: float = 0.25, monitor: Instance("monitor") | None = None,
                 solver: Instance("partition") | None = None, n_points: int = 32, n_samples: int = 512,
                 t_max: float = 0.995, race_at: float = 0.5, n_eval: int = 8192):
        if not 0 < race_at <= 1 or n_eval < 2:
            raise UserError(f"warm_race: need 0 < race_at <= 1 (the part of the warm experts' own steps taken before "
                            f"the race, e.g. 0.5) and n_eval >= 2, got race_at={race_at}, n_eval={n_eval}")
        super().__init__(share=share, monitor=monitor, solver=solver, n_points=n_points, n_samples=n_samples,
                         t_max=t_max)
        self.race_at, self.n_eval = float(race_at), int(n_eval)

    def __call__(self, job, initial: np.ndarray, base: dict | None) -> np.ndarray:
        if job.local_time:
            raise UserError("warm_race starts experts from a network that saw global t; it needs "
                            "train.local_time = False")
        settings, n = job.settings, len(initial) - 1
        solver = self._solver(n)
        shared, rest = self._parts(n, settings)
        record = _load_record(job, type(self).__name__, initial)
        state, field = self.base(job, shared, base)
        if record["history"]:
            b = np.array(record["history"][-1]["boundaries"], dtype=float)
        else:
            b = self._split(job, field, solver, record, initial, shared)
        own = max(1, int(round(self.race_at * rest)))  # the warm experts' steps at the race
        trained = {}  # the race's experts, kept for the winner when the race ran to the end of its steps
        decision = record.get("decision")
        if decision is None:
            decision = record["decision"] = self._race(job, initial, b, state, shared, rest, own, trained)
            _save_record(job.run_dir, record)
        warm = decision["warm"]
        for k in range(n):
            if warm and own == rest and warm in trained:  # the race trained it to the end
                self._save(job, k, b, *trained[warm][k], rest, shared)
            elif warm:  # from the race's state on
                self._expert(job, k, b, state, shared, rest, folder=f"warm_segment_{k}")
            elif decision["scratch_steps"] == settings.steps and warm in trained:
                self._save(job, k, initial, *trained[warm][k], settings.steps, job.inherited)
            else:
                job.expert(k, initial, None)  # from the race's state on, as the fixed split's expert
        if warm:
            final, described, lost = b, self._described(solver), n * decision["scratch_steps"]
        else:
            final, lost = initial, shared + n * decision["warm_steps"]
            described = {"boundary_solver": "none: no warm start", "monitor": None, "share": 0.0}
        extra = self.extra_compute(n, settings, solver)  # the warm split's profile, measured either way
        if process_state().is_main_process:  # the loser's training states are not needed again
            import shutil

            for k in range(n):
                shutil.rmtree(rundir.state_dir(job.run_dir, f"segment_{k}" if warm else f"warm_segment_{k}"),
                              ignore_errors=True)
        race = 2.0 * 2 * self.n_eval  # two composite fields' forward passes on n_eval draws, in forward-pass units
        budget = n * settings.steps
        record.update(final_boundaries=np.asarray(final).tolist(), done=True, described=described,
                      extra_compute=extra + lost / budget
                      + race / (3.0 * budget * settings.batch_size * settings.grad_accum))
        _save_record(job.run_dir, record)
        return final

    def _race(self, job, initial: np.ndarray, b: np.ndarray, state: dict, shared: int, rest: int, own: int,
              trained: dict) -> dict:
        """Both candidates trained to the race at equal cost (kept in ``trained``: True the warm split's experts,
        False the scratch ones) and the paired flow-matching loss of their composite fields; the decision."""
        from cbsflow.segmented import SegmentedVelocity

        n, steps = len(initial) - 1, job.settings.steps
        mine = min(steps, shared // n + own)  # the scratch experts' steps at the same cost
        trained[True] = [self._train(job, k, b, state, rest, own) for k in range(n)]
        trained[False] = [self._train(job, k, initial, None, steps, mine) for k in range(n)]
        fields = [SegmentedVelocity([self._field(*trained[w][k]) for k in range(n)], bounds)
                  for w, bounds in ((True, b), (False, initial))]
        x1, y, eps, gen = _draws(job.dataset, self.n_eval, job.seed, 400)
        d = paired_losses(fields, job.path, x1, y, eps, torch.rand(self.n_eval, generator=gen))
        d = (d[0] - d[1]).double()
        mean, se = float(d.mean()), float(d.std() / math.sqrt(len(d)))
        warm = self.chooses_warm(mean, se)
        print(f"[train] {type(self).__name__}: after {shared} shared steps and {own} of each warm expert's, warm split "
              f"minus uniform from scratch at the same cost, flow-matching loss {mean:+.4g} ± {2 * se:.2g}: "
              f"{'warm split' if warm else 'experts from scratch'}", flush=True)
        return {"warm_steps": own, "scratch_steps": mine, "difference": mean, "se": se, "warm": warm}

    def chooses_warm(self, difference: float, se: float) -> bool:
        """The decision from the race's paired loss difference (warm − scratch) and its standard error: the lower."""
        return difference < 0

    def _train(self, job, k: int, b: np.ndarray, state: dict | None, steps: int, stop_at: int):
        """Expert k of the split ``b`` (warm from ``state``, else from scratch) trained to ``stop_at`` of ``steps``
        in its own state folder (resumable); the expert and fit's output."""
        import dataclasses

        from cbsflow import locks

        n, interval = len(b) - 1, (float(b[k]), float(b[k + 1]))
        with locks.held(locks.expert_lock(job.run_dir, k), process_state()):
            expert = job.new_expert(k, interval, state)
            out = job.fit_expert(k, n, expert, widened(interval, job.margin), stop_at=stop_at if stop_at < steps
                                 else None, state=None if state is None else f"warm_segment_{k}",
                                 settings=dataclasses.replace(job.settings, steps=steps))
        return expert, out

    @staticmethod
    def _field(expert, out):
        return (out["ema"] if out["ema"] is not None else expert).eval()

    @staticmethod
    def _save(job, k: int, b: np.ndarray, expert, out: dict, steps: int, inherited: int) -> None:
        job.save_expert(k, expert, out, widened((float(b[k]), float(b[k + 1])), job.margin), steps=steps,
                        inherited=inherited)


@register("adaptation")
class warm_race_margin(warm_race):
    """warm_race that warm-starts only where the race resolves it (docs/math.md, "The warm start as a choice"): the
    warm split goes on iff its flow-matching loss minus the scratch split's is below ``-margin`` standard errors of
    the paired difference; an unresolved race keeps the experts from scratch (bit for bit the uniform split's run).
    """

    def __init__(self, share: float = 0.25, monitor: Instance("monitor") | None = None,
                 solver: Instance("partition") | None = None, n_points: int = 32, n_samples: int = 512,
                 t_max: float = 0.995, race_at: float = 0.5, n_eval: int = 8192, margin: float = 2.0):
        if not margin >= 0:
            raise UserError(f"warm_race_margin.margin must be >= 0 (standard errors the warm split must win the race "
                            f"by, e.g. 2), got {margin}")
        super().__init__(share=share, monitor=monitor, solver=solver, n_points=n_points, n_samples=n_samples,
                         t_max=t_max, race_at=race_at, n_eval=n_eval)
        self.margin = float(margin)

    def chooses_warm(self, difference: float, se: float) -> bool:
        return difference + self.margin * se < 0
