"""Pretrained starting points: train.init_from with this project's checkpoints and the official SiT/DiT and JiT
layouts; the official ones are checked against outputs of the reference code (tests/fixtures/README.md)."""

import argparse
import json
import os
import re

import numpy as np

import pytest
import torch

from cbsflow.backbones.jit import jit
from cbsflow.backbones.sit import sit
from cbsflow.cli import main
from cbsflow.errors import UserError
from cbsflow.pretrained import OFFICIAL_LAYOUTS, init_state

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

OURS_TO_OFFICIAL = {  # the inverse of cbsflow/pretrained.py's table, written out by hand for the test
    r"embed\.(weight|bias)": r"x_embedder.proj.\1",
    r"time\.mlp\.(0|2)\.(weight|bias)": r"t_embedder.mlp.\1.\2",
    r"label\.table\.weight": "y_embedder.embedding_table.weight",
    r"blocks\.(\d+)\.ada\.1\.(weight|bias)": r"blocks.\1.adaLN_modulation.1.\2",
    r"blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)": r"blocks.\1.\2.\3",
    r"final\.ada\.1\.(weight|bias)": r"final_layer.adaLN_modulation.1.\1",
    r"final\.linear\.(weight|bias)": r"final_layer.linear.\1",
}


def mae_table(side: int, dim: int) -> torch.Tensor:
    """The fixed pos_embed of official DiT / SiT / JiT checkpoints, from MAE's formula: [sin w, cos w, sin h, cos h]."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
    rows = [np.concatenate([np.sin(w * omega), np.cos(w * omega), np.sin(h * omega), np.cos(h * omega)])
            for h in range(side) for w in range(side)]
    return torch.tensor(np.stack(rows), dtype=torch.float32)[None]


def official_layout(net: sit, channels: int) -> dict:
    """Our sit's weights as the official SiT code would store them: Conv2d patch embedding, a learned-sigma final
    layer with 2C channels per pixel (the variance half random), the fixed pos_embed table."""
    p, out = net.patch, {}
    for key, value in net.state_dict().items():
        new = next(re.sub(a, b, key) for a, b in OURS_TO_OFFICIAL.items() if re.fullmatch(a, key))
        out[new] = value.clone()
    w = out["x_embedder.proj.weight"]  # (d, p*p*c) over (p q c) -> (d, c, p, q)
    out["x_embedder.proj.weight"] = w.reshape(w.shape[0], p, p, channels).permute(0, 3, 1, 2).contiguous()
    lw, lb = out["final_layer.linear.weight"], out["final_layer.linear.bias"]
    sigma_w, sigma_b = torch.randn_like(lw), torch.randn_like(lb)
    out["final_layer.linear.weight"] = torch.cat([lw.reshape(p * p, channels, -1), sigma_w.reshape(p * p, channels, -1)],
                                                 1).reshape(2 * lw.shape[0], -1)
    out["final_layer.linear.bias"] = torch.cat([lb.reshape(p * p, channels), sigma_b.reshape(p * p, channels)],
                                               1).reshape(-1)
    grid, width = net.grid[0], net.pos.shape[-1]
    out["pos_embed"] = mae_table(grid, width)
    return out


def test_an_official_sit_state_dict_maps_onto_our_backbone_exactly(tmp_path):
    torch.manual_seed(0)
    net = sit(data_shape=(3, 8, 8), num_classes=10, size="T", patch=2)
    path = tmp_path / "SiT-official.pt"
    torch.save(official_layout(net, 3), path)
    state, notes = init_state(str(path), sit(data_shape=(3, 8, 8), num_classes=10, size="T", patch=2))
    assert "mapped the official SiT/DiT key layout" in notes[0]
    assert any("learned-sigma" in n for n in notes) and any("checked pos_embed" in n for n in notes)
    for key, value in net.state_dict().items():
        assert torch.equal(state[key], value), key
    x, t, y = torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([1, 2])
    loaded = sit(data_shape=(3, 8, 8), num_classes=10, size="T", patch=2)
    loaded.load_state_dict(state)
    torch.testing.assert_close(loaded(x, t, y), net(x, t, y))  # the same function, not only the same numbers
    assert len(OFFICIAL_LAYOUTS["SiT/DiT"][1]) == len(OURS_TO_OFFICIAL)


def test_a_checkpoint_that_does_not_fit_is_one_clear_error(tmp_path):
    torch.save(sit(data_shape=(3, 8, 8), num_classes=10, size="T", patch=2).state_dict(), tmp_path / "t.pt")
    with pytest.raises(UserError, match="does not fit the experts' backbone"):
        init_state(str(tmp_path / "t.pt"), sit(data_shape=(3, 8, 8), num_classes=10, size="S", patch=2))
    with pytest.raises(UserError, match="does not exist"):
        init_state(str(tmp_path / "none.pt"), sit(data_shape=(3, 8, 8), size="T", patch=2))


def test_experts_start_from_another_runs_network_through_the_train_stage(tmp_path, capsys, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    one = ["--gin", "gin/smoke/toy.gin", "--bind", "split.solver = @manual()", "--bind", "manual.boundaries = [0, 1]",
           "--stages", "split,train"]
    assert main(one + ["--run-dir", str(tmp_path / "single")]) == 0
    ckpt = tmp_path / "single" / "checkpoints" / "segment_0.pt"
    assert main(["--gin", "gin/smoke/toy.gin", "--bind", "split.solver = @uniform()", "--bind", "uniform.n_segments = 2",
                 "--bind", f"train.init_from = '{ckpt}'", "--bind", "expert/training.steps = 1",
                 "--bind", "expert/training.lr = 0.0", "--stages", "split,train", "--run-dir", str(tmp_path / "cbs")]) == 0
    assert f"experts start from {ckpt}" in capsys.readouterr().out
    start = torch.load(ckpt, weights_only=True)["ema"]
    for k in range(2):  # lr 0: each expert is still exactly the network it started from
        state = torch.load(tmp_path / "cbs" / "checkpoints" / f"segment_{k}.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(state[n], v) for n, v in start.items())
    assert json.loads((tmp_path / "cbs" / "checkpoints" / "train.json").read_text())["config"]["train.init_from"] == str(ckpt)


def test_the_checkpoint_estimator_profiles_an_official_state_dict(tmp_path):
    from cbsflow.estimators import checkpoint
    from cbsflow.paths import linear

    torch.manual_seed(0)
    net = sit(data_shape=(3, 8, 8), num_classes=0, size="T", patch=2)
    torch.save(official_layout(net, 3), tmp_path / "official.pt")

    class Data:
        shape, num_classes = (3, 8, 8), 0

    field = checkpoint(path=str(tmp_path / "official.pt"), backbone=lambda **kw: sit(size="T", patch=2, **kw))(
        Data(), linear())
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    torch.testing.assert_close(field(x, t), net(x, t))


def test_an_official_table_that_is_not_the_backbones_is_refused_in_one_line(tmp_path):
    """A zero (or otherwise foreign) pos_embed would silently change the function: it is refused, not dropped."""
    net = sit(data_shape=(3, 8, 8), num_classes=10, size="T", patch=2)
    state = official_layout(net, 3)
    state["pos_embed"] = torch.zeros_like(state["pos_embed"])
    torch.save(state, tmp_path / "zero.pt")
    with pytest.raises(UserError, match="pos_embed .* is not the sin-cos table the sit backbone builds") as err:
        init_state(str(tmp_path / "zero.pt"), net)
    assert len(str(err.value).splitlines()) == 1


def load_fixture(name: str) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(os.path.join(FIXTURES, name), map_location="cpu", weights_only=True)


def test_an_official_sit_loads_to_the_reference_outputs(tmp_path):
    """willisma/SiT's SiT (learned sigma, 10 classes, every weight perturbed), run by the reference code on fixed
    inputs: our sit with the loaded weights gives the same outputs (the first C channels, as SiT returns)."""
    f = load_fixture("sit_official_tiny.pt")
    torch.save(f["state"], tmp_path / "SiT-tiny.pt")
    net = sit((4, 8, 8), num_classes=10, size="T", patch=2, depth=2, width=32, heads=2)
    state, notes = init_state(str(tmp_path / "SiT-tiny.pt"), net)
    net.load_state_dict(state)
    with torch.no_grad():
        out = net.eval()(f["x"], f["t"], f["y"])
    torch.testing.assert_close(out, f["out"], atol=1e-5, rtol=1e-5)
    assert len(notes) == 3  # layout, table checked, learned sigma dropped


def test_an_official_jit_training_checkpoint_loads_its_ema_to_the_reference_outputs(tmp_path):
    """LTH14/JiT's JiT (bottleneck 8, 4 in-context tokens from block 1, every weight perturbed) saved as its
    training script does (model / model_ema1 under the denoiser's `net.`, with argparse args): the EMA loads
    and our jit reproduces the reference outputs."""
    f = load_fixture("jit_official_tiny.pt")
    torch.save(f["checkpoint"], tmp_path / "checkpoint-last.pth")
    cfg = f["config"]
    net = jit((3, 8, 8), num_classes=10, size="T", patch=cfg["patch_size"], depth=cfg["depth"], width=cfg["hidden_size"],
              heads=cfg["num_heads"], bottleneck_dim=cfg["bottleneck_dim"], in_context_len=cfg["in_context_len"],
              in_context_start=cfg["in_context_start"])
    state, notes = init_state(str(tmp_path / "checkpoint-last.pth"), net)
    assert notes[0] == "mapped the official JiT key layout"
    net.load_state_dict(state)
    with torch.no_grad():
        out = net.eval()(f["x"], f["t"], f["y"])
    torch.testing.assert_close(out, f["out"], atol=1e-5, rtol=1e-5)
    net.in_context_start = 0  # where the tokens join is part of the function, not of the state dict
    with torch.no_grad():
        assert not torch.allclose(net(f["x"], f["t"], f["y"]), f["out"], atol=1e-3)


def test_official_weights_need_the_references_time_scale_and_backbone(tmp_path):
    f = load_fixture("sit_official_tiny.pt")
    torch.save(f["state"], tmp_path / "SiT-tiny.pt")
    kwargs = dict(num_classes=10, size="T", patch=2, depth=2, width=32, heads=2)
    with pytest.raises(UserError, match=r"takes t in \[0, 1\]; bind sit.time_scale = 1.0 \(the experts' is 1000\)"):
        init_state(str(tmp_path / "SiT-tiny.pt"), sit((4, 8, 8), time_scale=1000.0, **kwargs))
    with pytest.raises(UserError, match="official SiT/DiT layout, which maps onto the sit backbone only"):
        init_state(str(tmp_path / "SiT-tiny.pt"), jit((4, 8, 8), **kwargs))
