"""eDiff-I's progressive splitting (Balaji et al. 2022) as an adaptation: a shared network, then repeated binary splits.

A network built like the experts trains on all of [0, 1] for a share of the budget; then, N − 1 times, one interval
(a leaf of the binary tree) splits in two and each child starts from its parent's weights (EMA if kept) and is
fine-tuned on its half. ``rule = 'mass'`` is eDiff-I's: split at equal training mass of the experts' time sampler,
only the extreme intervals keep splitting (the noise end first, then the data end, alternately). ``rule = 'burden'``
is the project's generalisation: measure a monitor on every leaf's own network on its interval, and split the leaf
with the largest burden (the integral of the density (m + floor · mean m)^exponent) at its burden midpoint — de
Boor's equidistribution grown one split at a time. The total optimizer steps equal N experts × their steps
(``progressive.plan``); every split is recorded in ``checkpoints/adaptation.json``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from cbsflow import rundir
from cbsflow.errors import UserError
from cbsflow.partition import DEFAULT_EXPONENT, DEFAULT_FLOOR, density, equidistribute
from cbsflow.registry import Instance, name_of, register
from cbsflow.seeding import derive_seed
from cbsflow.training import process_state, widened

RULES = ("mass", "burden")


def _record_path(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints", "adaptation.json")


def _node_path(run_dir: str, node: int) -> str:
    return os.path.join(run_dir, "checkpoints", "progressive", f"node_{node}.pt")


def padded(partition: list[float], n: int) -> list[float]:
    """A partition of fewer than n intervals as n + 1 boundaries, those still to come at t = 1 (what adaptation.png
    draws: a boundary line drops from the top when its split happens)."""
    return [float(x) for x in partition] + [1.0] * (n + 1 - len(partition))


def mass_split(t_sampler, interval: tuple[float, float]) -> float:
    """The time sampler's conditional median on [a, b): F^{-1}((F(a) + F(b)) / 2)."""
    a, b = (torch.tensor(float(v), dtype=torch.float64) for v in interval)
    return float(t_sampler.icdf(0.5 * (t_sampler.cdf(a) + t_sampler.cdf(b))))


def extreme_leaf(leaves: list[tuple[float, float]], split: int) -> int:
    """eDiff-I's order: the first split cuts [0, 1]; then the noise-end leaf (t = 0) and the data-end leaf (t = 1)
    split alternately."""
    return 0 if split % 2 == 1 or len(leaves) == 1 else len(leaves) - 1


def leaf_burdens(profiles: list[dict], exponent: float, floor: float) -> list[float]:
    """Each leaf's integral of the density, the density's floor set by all leaves' monitor values together (so the
    burdens compare); a profile that stops before its interval's end is extended by its last value."""
    values = np.concatenate([np.asarray(p["value"], np.float64) for p in profiles])
    rho = np.split(density(values, exponent, floor), np.cumsum([len(p["value"]) for p in profiles])[:-1])
    out = []
    for p, r in zip(profiles, rho):
        t = np.asarray(p["t"], np.float64)
        out.append(float(np.sum(0.5 * (r[1:] + r[:-1]) * np.diff(t)) + r[-1] * (p["interval"][1] - t[-1])))
    return out


def burden_midpoint(profile: dict, exponent: float, floor: float, all_values: np.ndarray) -> float:
    """Where the leaf's burden is cut in half: de Boor's equidistribution (N = 2) of its density on its interval."""
    a, b = profile["interval"]
    t = (np.asarray(profile["t"], np.float64) - a) / (b - a)
    values = np.asarray(profile["value"], np.float64)
    # The floor of the density comes from every leaf's values (as in leaf_burdens): shift, then take the power.
    rho = density(np.concatenate([values, all_values]), exponent, floor)[:len(values)]
    return float(a + (b - a) * equidistribute(t, rho, 2)[1])


@register("adaptation")
class progressive:
    """eDiff-I's recursive splitting from a shared network within the same total steps; which interval splits next
    and where: ``rule = 'mass'`` (equal training mass, the extreme intervals) or ``'burden'`` (the largest burden of a
    monitor measured on the parent, at its burden midpoint).

    ``share``: the part of the total budget (N experts × their steps) the shared network trains; the rest is shared
    equally by the 2 (N − 1) children the splits create (``plan``). ``monitor`` (default: centred Dirichlet energy,
    4 probes), ``n_points``, ``n_samples``, ``t_max``, ``exponent`` and ``floor`` are the burden rule's profile and
    density; the mass rule splits under the experts' ``training.t_sampler`` (uniform if unset).
    """

    def __init__(self, share: float = 0.25, rule: str = "mass", monitor: Instance("monitor") | None = None,
                 n_points: int = 16, n_samples: int = 512, t_max: float = 0.995,
                 exponent: float = DEFAULT_EXPONENT, floor: float = DEFAULT_FLOOR):
        if not 0 < share < 1:
            raise UserError(f"progressive.share = {share}: the shared network's part of the budget must be in (0, 1)")
        if rule not in RULES:
            raise UserError(f"progressive.rule = {rule!r}: choose one of {', '.join(map(repr, RULES))}")
        if n_points < 2 or n_samples < 2 or not 0 < t_max <= 1 or exponent < 0 or floor < 0:
            raise UserError(f"progressive: need n_points >= 2, n_samples >= 2, 0 < t_max <= 1, exponent >= 0 and "
                            f"floor >= 0 (got {n_points}, {n_samples}, {t_max}, {exponent}, {floor})")
        self.share, self.rule, self.monitor = float(share), rule, monitor
        self.n_points, self.n_samples, self.t_max = int(n_points), int(n_samples), float(t_max)
        self.exponent, self.floor = float(exponent), float(floor)

    def plan(self, n: int, settings) -> tuple[int, list[int]]:
        """(steps of the shared network, steps of each of the 2 (N − 1) children in order of creation): the shared
        network takes N · round(share · S), the children share the other N (S − round(share · S)) as evenly as
        integers allow; together exactly N · S. With N = 1 the shared network is the only expert and takes all S."""
        per_expert = int(round(self.share * settings.steps))
        if n == 1:
            return settings.steps, []
        rest, children = n * (settings.steps - per_expert), 2 * (n - 1)
        if not 1 <= per_expert < settings.steps or rest < children:
            raise UserError(f"progressive.share = {self.share} of {settings.steps} steps per expert leaves "
                            f"{per_expert} for the shared network and {rest} for {children} children; raise the "
                            "experts' training.steps or change the share")
        return n * per_expert, [rest // children + (1 if i < rest % children else 0) for i in range(children)]

    def _monitor(self):
        from cbsflow.monitors import dirichlet

        return self.monitor if self.monitor is not None else dirichlet(centred=True)

    def described(self, job) -> dict:
        """What set the boundaries (split.json and profile.png name it)."""
        if self.rule == "mass":
            return {"monitor": None, "rule": "mass", "share": self.share,
                    "t_sampler": name_of(job.settings.t_sampler) if job.settings.t_sampler else "uniform_time"}
        monitor = self._monitor()
        return {"monitor": name_of(monitor), "centred": bool(getattr(monitor, "centred", False)), "rule": "burden",
                "exponent": self.exponent, "floor": self.floor, "share": self.share}

    def __call__(self, job, initial: np.ndarray, base: dict | None) -> np.ndarray:
        if job.local_time:
            raise UserError("progressive starts every child from its parent, which saw global t; it needs "
                            "train.local_time = False")
        n = len(initial) - 1
        shared, children = self.plan(n, job.settings)
        record = self._load_record(job, initial)
        leaves = [{"node": 0, "interval": (0.0, 1.0), "inherited": 0, "steps": shared}]
        leaves[0]["ckpt"] = self.train_node(job, leaves[0], base)
        for j in range(n - 1):
            spent = shared + sum(children[:2 * j])
            leaves = self._split(job, record, leaves, j, children[2 * j:2 * j + 2], spent // n)
        for k, leaf in enumerate(leaves):
            self._save_expert(job, k, leaf)
        b = np.array([leaf["interval"][0] for leaf in leaves] + [1.0])
        record.update(final_boundaries=b.tolist(), done=True, described=self.described(job),
                      extra_compute=self.extra_compute(n, job.settings, record))
        self._save_record(job.run_dir, record)
        return b

    def _split(self, job, record: dict, leaves: list[dict], j: int, steps: list[int], step: int) -> list[dict]:
        """Split j: choose the leaf and the point (or read them from the record of an interrupted run), train both
        children from the parent's weights (EMA if kept), record it."""
        n = len(record["split_boundaries"]) - 1
        if j < len(record["history"]):
            entry = record["history"][j]
            i = [leaf["node"] for leaf in leaves].index(entry["parent"])
        else:
            i, at, extra = self.choose(job, record, leaves, j)
            entry = {"step": step, "parent": leaves[i]["node"], "split": list(leaves[i]["interval"]), "at": at,
                     "rule": self.rule, "children_steps": list(steps), **extra}
        parent = leaves[i]
        (a, b), at = parent["interval"], entry["at"]
        kids = [{"node": 2 * j + 1 + c, "interval": iv, "inherited": parent["inherited"] + parent["steps"],
                 "steps": s} for c, (iv, s) in enumerate(zip(((a, at), (at, b)), steps))]
        for kid in kids:
            kid["ckpt"] = self.train_node(job, kid, parent["ckpt"]["start"])
        leaves = leaves[:i] + kids + leaves[i + 1:]
        if j == len(record["history"]):
            partition = [leaf["interval"][0] for leaf in leaves] + [1.0]
            entry.update(partition=partition, boundaries=padded(partition, n))
            record["history"].append(entry)
            print(f"[train] progressive split {j + 1}/{n - 1} ({self.rule}) after {step} steps per expert: "
                  f"[{a:.3f}, {b:.3f}) at {at:.3f}; boundaries {np.round(partition[1:-1], 3).tolist()}", flush=True)
            self._save_record(job.run_dir, record)
        return leaves

    def choose(self, job, record: dict, leaves: list[dict], j: int) -> tuple[int, float, dict]:
        """(which leaf splits, where, what to record): eDiff-I's extreme leaf at its mass median, or the leaf of
        largest burden at its burden midpoint."""
        if self.rule == "mass":
            from cbsflow.timesampling import uniform_time

            i = extreme_leaf([leaf["interval"] for leaf in leaves], j)
            at = mass_split(job.settings.t_sampler or uniform_time(), leaves[i]["interval"])
            return i, _inside(at, leaves[i]["interval"]), {}
        profiles = [self.leaf_profile(job, record, leaf) for leaf in leaves]
        burdens = leaf_burdens(profiles, self.exponent, self.floor)
        i = int(np.argmax(burdens))
        others = np.concatenate([np.asarray(p["value"], np.float64) for k, p in enumerate(profiles) if k != i] or
                                [np.zeros(0)])
        at = burden_midpoint(profiles[i], self.exponent, self.floor, others)
        extra = {"burden": [b / sum(burdens) for b in burdens]}
        if j == 0:  # the shared network's profile, drawn in profile.png as warm_split's is
            extra["profile"] = {k: profiles[0][k] for k in ("t", "value", "stderr")} | self.described(job)
        return i, _inside(at, leaves[i]["interval"]), extra

    def leaf_profile(self, job, record: dict, leaf: dict) -> dict:
        """The monitor on a leaf's own network (EMA if kept) at n_points times of its interval (up to t_max);
        measured once per node and kept in the record."""
        from cbsflow.segmented import Expert, build_network

        key = str(leaf["node"])
        if key not in record["profiles"]:
            (a, b), monitor = leaf["interval"], self._monitor()
            net = build_network(job.backbone, job.dataset)
            net.load_state_dict(leaf["ckpt"]["start"])
            x1, y = job.dataset.sample(self.n_samples, seed=derive_seed(job.seed, 9, 21, leaf["node"]))
            hi = min(b, self.t_max) if min(b, self.t_max) > a else b
            t = torch.linspace(a, hi, self.n_points)
            mean, se = monitor(Expert(net, job.path).eval(), x1, t, path=job.path, y=y,
                               generator=torch.Generator().manual_seed(derive_seed(job.seed, 9, 22, leaf["node"])))
            mean, se = (np.asarray(torch.as_tensor(v, dtype=torch.float64).cpu()) for v in (mean, se))
            rundir.check_profile(name_of(monitor), t.numpy(), mean, se)
            record["profiles"][key] = {"t": t.double().tolist(), "value": mean.tolist(), "stderr": se.tolist()}
        return {**record["profiles"][key], "interval": leaf["interval"]}

    def train_node(self, job, node: dict, init: dict | None) -> dict:
        """Train one tree node (the shared network or a child) on its interval from ``init`` for its steps, or read
        it back from checkpoints/progressive/node_<i>.pt; returns its checkpoint with ``start``, the weights its
        children and its profile use (EMA if kept)."""
        from cbsflow.segmented import Expert, build_network
        from cbsflow.training import fit, weights_digest

        path, (a, b) = _node_path(job.run_dir, node["node"]), node["interval"]
        if job.complete(path, node["interval"], node["steps"]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        else:
            torch.manual_seed(job.seed if node["node"] == 0 else derive_seed(job.seed, 13, node["node"]))
            net = build_network(job.backbone, job.dataset)
            if init is not None:
                net.load_state_dict(init)
            seen = widened(node["interval"], job.margin)
            out = fit(Expert(net, job.path, node["interval"]), job.dataset, job.path, seen,
                      dataclasses.replace(job.settings, steps=node["steps"]),
                      seed=derive_seed(job.seed, 13, node["node"], 1),
                      state_dir=rundir.state_dir(job.run_dir, f"progressive/node_{node['node']}"),
                      desc=f"progressive node {node['node']} [{a:.3f}, {b:.3f})",
                      identity={"config": job.config_digest, "interval": [a, b],
                                "start": "fresh" if init is None else weights_digest(init)})
            ckpt = {"state_dict": net.state_dict(), "ema": out["ema"] and out["ema"].net.state_dict(),
                    "interval": [a, b], "train_interval": list(seen), "steps": node["steps"],
                    "inherited_steps": node["inherited"], "loss": out["loss"], "config_digest": job.config_digest}
            if process_state().is_main_process:
                rundir.save_checkpoint(path, ckpt)
        return {**ckpt, "start": ckpt["ema"] if ckpt["ema"] is not None else ckpt["state_dict"]}

    def _save_expert(self, job, k: int, leaf: dict) -> None:
        """checkpoints/segment_k.pt from a final leaf: its own steps, and its ancestors' as inherited steps."""
        from cbsflow.segmented import Expert, build_network

        def expert(state):
            net = build_network(job.backbone, job.dataset)
            net.load_state_dict(state)
            return Expert(net, job.path, leaf["interval"])

        ckpt = leaf["ckpt"]
        out = {"ema": None if ckpt["ema"] is None else expert(ckpt["ema"]), "loss": ckpt["loss"]}
        job.save_expert(k, expert(ckpt["state_dict"]), out, widened(leaf["interval"], job.margin),
                        steps=leaf["steps"], inherited=leaf["inherited"])

    def _load_record(self, job, initial: np.ndarray) -> dict:
        """The splits made so far by the same settings (an interrupted run continues from them), or a new record.
        ``initial_boundaries`` is what the shared network owns, [0, 1] padded to N + 1 (``padded``); the split
        stage's boundaries, which only set N, are ``split_boundaries``."""
        n = len(initial) - 1
        path = _record_path(job.run_dir)
        if os.path.exists(path):
            record = rundir.read_json(path, "adaptation")
            if (record.get("method") == "progressive" and record.get("config_digest") == job.config_digest
                    and record.get("rule") == self.rule and record.get("share") == self.share
                    and np.allclose(record.get("split_boundaries", []), initial)):
                return record
        return {"method": "progressive", "config_digest": job.config_digest, "rule": self.rule, "share": self.share,
                "initial_boundaries": padded([0.0, 1.0], n), "split_boundaries": initial.tolist(), "history": [],
                "profiles": {}, "done": False}

    @staticmethod
    def _save_record(run_dir: str, record: dict) -> None:
        if process_state().is_main_process:
            rundir.write_json(_record_path(run_dir), record)

    def extra_compute(self, n: int, settings, record: dict) -> float:
        """The burden rule's monitor passes (a Jacobian-vector product ~ 3 forward passes per probe, time and
        sample, for every profiled node) against one fixed-split training's (forward + backward ~ 3 passes per
        sample); the steps themselves add nothing, and the mass rule adds nothing at all."""
        if self.rule == "mass":
            return 0.0
        probes = getattr(self._monitor(), "n_probes", 4)
        passes = 3.0 * len(record["profiles"]) * self.n_points * self.n_samples * probes
        return passes / (3.0 * n * settings.steps * settings.batch_size * settings.grad_accum)


def _inside(at: float, interval: tuple[float, float], margin: float = 1e-3) -> float:
    """A split point kept strictly inside its interval (a share ``margin`` of its width from either end)."""
    a, b = interval
    return float(min(max(at, a + margin * (b - a)), b - margin * (b - a)))
