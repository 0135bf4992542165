"""The segmented model: routing by t (hypothesis), only the owner runs, local time."""

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from cbsflow.paths import linear
from cbsflow.segmented import Expert, SegmentedVelocity, segment_index

boundary_sets = st.lists(st.floats(1e-4, 1 - 1e-4), min_size=0, max_size=10, unique=True).map(
    lambda inner: torch.tensor([0.0] + sorted(inner) + [1.0], dtype=torch.float32))
times = st.lists(st.one_of(st.floats(0.0, 1.0, width=32), st.sampled_from([0.0, 1.0])), min_size=1, max_size=50)


@given(boundary_sets, times)
def test_every_t_has_exactly_one_owner(boundaries, ts):
    t = torch.tensor(ts, dtype=torch.float32)
    boundaries = boundaries[torch.cat([torch.tensor([True]), torch.diff(boundaries) > 0])]  # drop float32 ties
    k = segment_index(t, boundaries)
    n = len(boundaries) - 1
    assert torch.all((k >= 0) & (k < n))
    inside = (boundaries[k] <= t) & ((t < boundaries[k + 1]) | ((t == 1.0) & (k == n - 1)))
    assert torch.all(inside)
    # Exactly one owner: t is in no other half-open interval.
    owners = ((boundaries[:-1, None] <= t) & (t < boundaries[1:, None])).sum(0) + ((t == 1.0) * 1)
    assert torch.all(owners == 1)


class Recorder(torch.nn.Module):
    """An 'expert' that returns a constant and records the times it saw."""

    def __init__(self, value):
        super().__init__()
        self.value, self.seen = value, []

    def forward(self, x, t, y=None):
        self.seen.append(t.clone())
        return torch.full_like(x, self.value)


@given(boundary_sets, times)
def test_each_sample_is_computed_by_its_owner_only(boundaries, ts):
    boundaries = boundaries[torch.cat([torch.tensor([True]), torch.diff(boundaries) > 0])]
    experts = [Recorder(float(k)) for k in range(len(boundaries) - 1)]
    model = SegmentedVelocity(experts, boundaries.double().numpy())
    t = torch.tensor(ts, dtype=torch.float32)
    out = model(torch.zeros(len(t), 2), t)
    k = segment_index(t, model.boundaries)
    assert torch.equal(out[:, 0], k.float())
    assert sum(len(torch.cat(e.seen)) if e.seen else 0 for e in experts) == len(t)  # nobody runs twice
    for j, e in enumerate(experts):
        if e.seen:
            assert torch.all(segment_index(torch.cat(e.seen), model.boundaries) == j)


def test_local_time_rescales_within_the_interval():
    nets = [Recorder(0.0), Recorder(1.0)]
    b = [0.0, 0.2, 1.0]
    experts = [Expert(net, linear(), (b[k], b[k + 1]), local_time=True) for k, net in enumerate(nets)]
    model = SegmentedVelocity(experts, np.array(b))
    model(torch.zeros(3, 2), torch.tensor([0.1, 0.2, 0.6]))
    torch.testing.assert_close(nets[0].seen[0], torch.tensor([0.5]))
    torch.testing.assert_close(nets[1].seen[0], torch.tensor([0.0, 0.5]))


def test_conditional_labels_follow_their_samples():
    class Echo(torch.nn.Module):
        def forward(self, x, t, y=None):
            return x * 0 + y[:, None].float()

    model = SegmentedVelocity([Echo(), Echo()], [0.0, 0.5, 1.0])
    y = torch.tensor([3, 1, 4, 1, 5])
    out = model(torch.zeros(5, 2), torch.tensor([0.9, 0.1, 0.7, 0.3, 0.5]), y)
    assert torch.equal(out[:, 0].long(), y)


def test_times_drawn_for_an_expert_are_routed_to_it_in_float32():
    """A time drawn just below a boundary must not round (float64 -> float32) onto the next expert's side."""
    from cbsflow.segmented import segment_index
    from cbsflow.timesampling import logit_normal, uniform_time

    boundaries = torch.tensor([0.0, 0.668, 0.6680001, 1.0], dtype=torch.float64)
    for sampler in (uniform_time(), logit_normal()):
        for k in range(3):
            interval = (float(boundaries[k]), float(boundaries[k + 1]))
            t = sampler(20000, interval, torch.Generator().manual_seed(k))
            assert t.dtype == torch.float32 and torch.all(segment_index(t, boundaries) == k), (sampler, k)
