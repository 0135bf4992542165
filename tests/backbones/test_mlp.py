"""The MLP backbone's two ways of seeing t: the sinusoidal embedding in every block, or t as a raw input."""

import pytest
import torch

from cbsflow.errors import UserError
from cbsflow.backbones.mlp import mlp


def test_raw_time_is_one_more_input_and_no_embedding():
    net = mlp((2,), width=16, depth=1, time_input="raw")
    assert net.time is None and net.inp.in_features == 3
    x = torch.randn(8, 2)
    a, b = net(x, torch.zeros(8)), net(x, torch.ones(8))
    assert a.shape == x.shape and not torch.allclose(a, b)  # the output depends on t
    # Only the first layer sees t: moving t is the same as moving the first layer's bias along its t column.
    with torch.no_grad():
        shifted = mlp((2,), width=16, depth=1, time_input="raw")
        shifted.load_state_dict(net.state_dict())
        shifted.inp.bias += shifted.inp.weight[:, 2]
    torch.testing.assert_close(shifted(x, torch.zeros(8)), b)
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in mlp((2,), width=16, depth=1).parameters())


def test_an_unknown_time_input_is_an_error():
    with pytest.raises(UserError, match="mlp.time_input must be 'sinusoidal' or 'raw'"):
        mlp((2,), time_input="fourier")


def test_frequency_dim_sets_the_embeddings_input_and_is_checked():
    net = mlp((2,), width=16, depth=1, frequency_dim=32)
    assert net.time.mlp[0].in_features == 32
    assert net(torch.zeros(3, 2), torch.rand(3)).shape == (3, 2)
    with pytest.raises(UserError, match="mlp.frequency_dim must be an even number"):
        mlp((2,), frequency_dim=31)
