"""``cbsflow-randconv``: a weights-free torch-fidelity feature extractor for offline runs and tests.

A fixed random conv net (He-normal weights drawn from seed 0); distances in its features are NOT FID and are reported
under their own names (``fd_randconv``, ...). Imported by :func:`cbsflow.metrics.fidelity.register_offline_extractor`
only when a fidelity metric is built, since importing torch-fidelity costs about 1.5 s.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity import FeatureExtractorBase


class RandConvFeatures(FeatureExtractorBase):
    """Fixed random-weight conv net (He-normal, seed 0): weights-free features; distances in them are NOT FID."""

    RESOLUTION = 32
    WIDTHS = (3, 32, 64, 128)
    NUM_LOGITS = 10

    def __init__(self, name: str, features_list: list[str], **kwargs: Any):
        super().__init__(name, features_list)
        generator = torch.Generator().manual_seed(0)
        convs = []
        for c_in, c_out in zip(self.WIDTHS[:-1], self.WIDTHS[1:]):
            conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            conv.weight.data = torch.randn(conv.weight.shape, generator=generator) * (2 / (c_in * 9)) ** 0.5
            conv.bias.data.zero_()
            convs.append(conv)
        self.convs = nn.ModuleList(convs)
        self.head = nn.Linear(self.WIDTHS[-1], self.NUM_LOGITS)
        self.head.weight.data = torch.randn(self.head.weight.shape, generator=generator) / self.WIDTHS[-1] ** 0.5
        self.head.bias.data.zero_()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return "128", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "128", "kid": "128", "prc": "128"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = x.float() / 127.5 - 1  # (b, 3, h, w) in [-1, 1]
        h = F.interpolate(h, size=(self.RESOLUTION, self.RESOLUTION), mode="bilinear", antialias=True)
        for conv in self.convs:
            h = F.relu(conv(h))
        pooled = h.mean(dim=(2, 3))  # (b, 128)
        features = {"128": pooled, "logits": self.head(pooled)}
        return tuple(features[name] for name in self.features_list)
