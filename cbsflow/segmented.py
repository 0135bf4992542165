"""Experts and the segmented (piecewise-in-time) model: N experts behind the call of one network, v(x, t, y).

An ``Expert`` is a backbone seen as a velocity field of *global* time on its interval [a, b): it gives the backbone
t (or, with local time, (t - a) / (b - a)) and turns what the backbone predicts (its ``prediction`` attribute:
'velocity' by default, 'x1' for JiT) into the velocity with the path, at the global t. Training, sampling, the
monitors and the likelihood all call networks through it, so local time and the prediction space are handled
in one place.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cbsflow import rundir
from cbsflow.errors import UserError


def segment_index(t: torch.Tensor, boundaries: torch.Tensor) -> torch.Tensor:
    """Owner k of each t: boundaries[k] <= t < boundaries[k+1] (half-open), and t = 1 goes to the last."""
    inner = boundaries[1:-1].to(t.dtype)
    return torch.bucketize(t, inner, right=True).clamp(0, len(boundaries) - 2)


class Expert(nn.Module):
    """A backbone as the velocity field v(x, t, y) of global time t, owning ``interval``.

    With ``local_time=True`` the backbone sees t rescaled to [0, 1] within the interval (the full resolution of
    its time embedding for a narrow interval); the conversion of its prediction to a velocity always uses the
    global t.
    """

    def __init__(self, net: nn.Module, path, interval: tuple[float, float] = (0.0, 1.0), local_time: bool = False):
        super().__init__()
        self.net, self.path, self.local_time = net, path, local_time
        self.interval = (float(interval[0]), float(interval[1]))
        self.prediction = getattr(net, "prediction", "velocity")
        self.min_scale = float(getattr(net, "min_scale", 0.0))

    def net_time(self, t: torch.Tensor) -> torch.Tensor:
        """The time input the backbone sees for global time t."""
        if not self.local_time:
            return t
        a, b = self.interval
        return (t - a) / (b - a)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        out = self.net(x, self.net_time(t), y)
        return self.path.to_velocity(out, x, t, self.prediction, self.min_scale)


class SegmentedVelocity(nn.Module):
    """Routes every sample of a batch, by its own t, to the one expert that owns that t."""

    def __init__(self, experts: list[Expert], boundaries):
        super().__init__()
        boundaries = torch.as_tensor(np.asarray(boundaries, dtype=np.float64))
        if len(experts) != len(boundaries) - 1:
            raise ValueError(f"{len(experts)} experts need {len(experts) + 1} boundaries, got {len(boundaries)}")
        self.experts = nn.ModuleList(experts)
        self.register_buffer("boundaries", boundaries)

    @property
    def n_segments(self) -> int:
        return len(self.experts)

    def expert(self, k: int) -> nn.Module:
        """Expert k as a velocity field of global time (samplers use it to stay inside one segment)."""
        return self.experts[k]

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        owner = segment_index(t, self.boundaries)  # (b,)
        out = None
        for k in range(self.n_segments):
            idx = torch.nonzero(owner == k).flatten()
            if idx.numel() == 0:
                continue
            if idx.numel() == x.shape[0]:  # the whole batch belongs to one expert: no gather/scatter
                return self.experts[k](x, t, y)
            v = self.experts[k](x[idx], t[idx], None if y is None else y[idx])
            out = torch.zeros_like(x, dtype=v.dtype) if out is None else out
            out = out.index_copy(0, idx, v)
        return out


def build_network(backbone, dataset, expert: int | None = None, overrides: dict | None = None) -> nn.Module:
    """The backbone for ``dataset``'s shape and classes; expert k's is built in the gin scope ``expert_<k>`` (so that
    ``expert_1/mlp.width = 32`` sizes expert 1 only), with a budget's ``overrides`` (cbsflow/budget.py) on top."""
    import gin

    from cbsflow.budget import scope

    kwargs = {"data_shape": dataset.shape, "num_classes": dataset.num_classes, **(overrides or {})}
    if expert is None:
        return backbone(**kwargs)
    with gin.config_scope(scope(expert)):
        return backbone(**kwargs)


def load_weights(net: nn.Module, path: str, use_ema: bool = True) -> dict:
    """Load a cbsflow checkpoint file into ``net`` (its EMA weights if present and wanted); returns the checkpoint."""
    state = rundir.load_checkpoint(path)
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["state_dict"]
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{path} does not match the configured backbone ({first}); bind the backbone it was trained with")
    return state


def load_expert(path: str, backbone, dataset, flow_path, use_ema: bool = True) -> Expert:
    """One expert from a checkpoint file, on the interval and with the time convention it was trained with, its
    network built as it was trained (its expert scope and a budget's overrides, which the checkpoint records)."""
    built = rundir.load_checkpoint(path).get("network") or {}
    net = build_network(backbone, dataset, built.get("expert"), built.get("overrides"))
    state = load_weights(net, path, use_ema)
    return Expert(net, flow_path, tuple(state.get("interval", (0.0, 1.0))), bool(state.get("local_time", False)))


def load_segmented(run_dir: str, backbone, dataset, flow_path, use_ema: bool = True) -> SegmentedVelocity:
    """All experts of a trained run directory, checked against the boundaries split.json gives them now."""
    boundaries = rundir.read_boundaries(run_dir, "load the trained experts")
    rundir.read_json(rundir.artifact(run_dir, "train"), "load the trained experts")
    experts = []
    for k in range(len(boundaries) - 1):
        path = rundir.checkpoint_path(run_dir, k)
        if not rundir.exists(path):
            raise UserError(f"{path} not found: split.json has {len(boundaries) - 1} segments but expert {k} was never "
                            "trained; run --stages train")
        expert = load_expert(path, backbone, dataset, flow_path, use_ema)
        want = (float(boundaries[k]), float(boundaries[k + 1]))
        if not np.allclose(expert.interval, want, rtol=0, atol=1e-9):
            raise UserError(f"{path} was trained for [{expert.interval[0]:.4g}, {expert.interval[1]:.4g}) but split.json "
                            f"gives expert {k} [{want[0]:.4g}, {want[1]:.4g}); retrain with --stages train")
        experts.append(expert)
    return SegmentedVelocity(experts, boundaries)
