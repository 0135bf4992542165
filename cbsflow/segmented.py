"""The segmented (piecewise-in-time) model: N experts behind the call of one network, v(x, t, y)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn

from cbsflow.errors import UserError


def segment_index(t: torch.Tensor, boundaries: torch.Tensor) -> torch.Tensor:
    """Owner k of each t: boundaries[k] <= t < boundaries[k+1] (half-open), and t = 1 goes to the last."""
    inner = boundaries[1:-1].to(t.dtype)
    return torch.bucketize(t, inner, right=True).clamp(0, len(boundaries) - 2)


class SegmentedVelocity(nn.Module):
    """Routes every sample of a batch, by its own t, to the one expert that owns that t.

    With ``local_time=True`` each expert sees t rescaled to [0, 1] within its interval, which gives narrow
    intervals the full resolution of the time embedding (experts must be trained the same way).
    """

    def __init__(self, experts: list[nn.Module], boundaries, local_time: bool = False):
        super().__init__()
        boundaries = torch.as_tensor(np.asarray(boundaries, dtype=np.float64))
        if len(experts) != len(boundaries) - 1:
            raise ValueError(f"{len(experts)} experts need {len(experts) + 1} boundaries, got {len(boundaries)}")
        self.experts = nn.ModuleList(experts)
        self.register_buffer("boundaries", boundaries)
        self.local_time = local_time

    @property
    def n_segments(self) -> int:
        return len(self.experts)

    def expert_time(self, k: int, t: torch.Tensor) -> torch.Tensor:
        """The time input expert k sees for global time t."""
        if not self.local_time:
            return t
        a, b = self.boundaries[k].to(t.dtype), self.boundaries[k + 1].to(t.dtype)
        return (t - a) / (b - a)

    def expert(self, k: int):
        """Expert k as a velocity field of global time (samplers use it to stay inside one segment)."""
        return lambda x, t, y=None: self.experts[k](x, self.expert_time(k, t), y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        owner = segment_index(t, self.boundaries)  # (b,)
        out = None
        for k in range(self.n_segments):
            idx = torch.nonzero(owner == k).flatten()
            if idx.numel() == 0:
                continue
            if idx.numel() == x.shape[0]:  # the whole batch belongs to one expert: no gather/scatter
                return self.expert(k)(x, t, y)
            v = self.expert(k)(x[idx], t[idx], None if y is None else y[idx])
            out = torch.zeros_like(x, dtype=v.dtype) if out is None else out
            out = out.index_copy(0, idx, v)
        return out


def checkpoint_path(run_dir: str, k: int) -> str:
    return os.path.join(run_dir, "checkpoints", f"segment_{k}.pt")


def load_network(path: str, backbone, dataset, use_ema: bool = True) -> nn.Module:
    """Build ``backbone`` for ``dataset`` and load weights from a cbsflow checkpoint file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = backbone(data_shape=dataset.shape, num_classes=dataset.num_classes)
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["state_dict"]
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{path} does not match the configured backbone ({first}); bind the backbone it was trained with")
    return net


def load_segmented(run_dir: str, backbone, dataset, use_ema: bool = True) -> SegmentedVelocity:
    """All experts of a trained run directory with the boundaries from its split.json."""
    with open(os.path.join(run_dir, "split.json")) as f:
        boundaries = json.load(f)["boundaries"]
    with open(os.path.join(run_dir, "checkpoints", "train.json")) as f:
        local_time = json.load(f).get("local_time", False)
    experts = [load_network(checkpoint_path(run_dir, k), backbone, dataset, use_ema) for k in range(len(boundaries) - 1)]
    return SegmentedVelocity(experts, boundaries, local_time=local_time)
