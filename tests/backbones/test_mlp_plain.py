"""The plain MLP expert: Linear-SiLU layers with t concatenated to x, nothing else."""

import torch
from torch import nn

from cbsflow.backbones.mlp import plain_mlp


def test_plain_mlp_is_linear_silu_layers_with_t_as_an_input():
    net = plain_mlp((2,), width=32, depth=3)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 32), (32, 32), (32, 32), (32, 2)]
    assert not any(isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.Embedding)) for m in net.modules())
    assert sum(p.numel() for p in net.parameters()) == 3 * 32 + 32 + 2 * (32 * 32 + 32) + 32 * 2 + 2
    x = torch.randn(5, 2)
    # t enters only through the first layer's extra column: with that column's weights zeroed, t does nothing.
    with torch.no_grad():
        net.inp.weight[:, 2] = 0
    torch.testing.assert_close(net(x, torch.zeros(5)), net(x, torch.ones(5)))
