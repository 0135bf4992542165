"""Time embeddings keep their resolution inside narrow expert intervals."""

import torch

from cbsflow.backbones.layers import timestep_embedding


def _similarity(a: float, b: float, scale: float) -> float:
    e = timestep_embedding(torch.tensor([a, b]), 256, scale=scale)
    return torch.nn.functional.cosine_similarity(e[:1], e[1:]).item()


def test_scaled_embedding_separates_the_ends_of_a_narrow_interval():
    # An expert owning [0.95, 0.96): raw t would give nearly identical embeddings, 1000 t does not.
    assert _similarity(0.95, 0.96, scale=1.0) > 0.9999
    assert _similarity(0.95, 0.96, scale=1000.0) < 0.95


def test_local_time_spans_the_whole_embedding_range():
    from cbsflow.paths import linear
    from cbsflow.segmented import Expert, SegmentedVelocity

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, y=None):
            seen.append(t)
            return x

    b = [0.0, 0.95, 1.0]
    model = SegmentedVelocity([Expert(Spy(), linear(), (b[k], b[k + 1]), local_time=True) for k in range(2)], b)
    model(torch.zeros(2, 2), torch.tensor([0.95, 0.9999]))
    assert seen[0][0] == 0.0 and seen[0][1] > 0.99  # the expert of [0.95, 1] sees t spread over [0, 1]


def test_one_t_for_the_whole_batch_gives_the_same_values_as_one_per_row():
    """The sampler's batches share t: the embedding is computed once and repeated, bit for bit the per-row one."""
    for t in (0.0, 1 / 3, 0.9999):
        for dim in (256, 255):
            shared = timestep_embedding(torch.full((500,), t), dim)
            per_row = torch.cat([timestep_embedding(torch.tensor([t, 0.5]), dim)[:1]] * 500)  # t != 0.5: the per-row path
            assert shared.shape == (500, dim) and shared.is_contiguous() and torch.equal(shared, per_row)
