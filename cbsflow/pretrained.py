"""Pretrained starting points for the experts: ``train.init_from = 'PATH'`` (also the ``checkpoint`` estimator).

PATH is a file read from local disk (nothing is downloaded): this project's checkpoint (``checkpoints/base.pt`` or
``segment_k.pt``, its EMA weights when it has them), a state dict saved with ``torch.save`` (``.pt``/``.pth``, also a
training checkpoint holding ``ema``, ``model_ema1`` (JiT's EMA) or ``model``), or a ``.safetensors`` file. Keys that
match the expert's backbone load as they are; two official layouts are mapped, and the loaded network computes the
official network's function (tests/test_pretrained.py checks it against outputs of the reference code):

- SiT / DiT (willisma/SiT, facebookresearch/DiT: ``x_embedder.proj``, ``t_embedder.mlp``, ``y_embedder``,
  ``blocks.i.adaLN_modulation``, ``final_layer``) onto the ``sit`` backbone;
- JiT (LTH14/JiT, keys optionally under the denoiser's ``net.``: ``x_embedder.proj1/proj2``, ``in_context_posemb``,
  ``blocks.i.attn.q_norm/k_norm``, ``blocks.i.mlp.w12/w3``, ``final_layer.norm_final``) onto the ``jit`` backbone;
  bind ``jit.size`` (or ``in_context_start``) as the checkpoint was trained: where the class tokens join is not stored.

Patch-embedding convolutions become linear maps over (p, q, c)-ordered patches; a learned-sigma final layer (DiT, SiT
trained with it) keeps its first C channels per pixel, with a note; the fixed ``pos_embed`` table is checked against
the one the backbone builds (the same MAE-order sin-cos table) and refused with one line if it differs. Both
references feed t in [0, 1] to the time embedding: a backbone bound to another ``time_scale`` is refused with one
line. DiT is a diffusion model (integer timesteps, t = 0 is data, noise prediction): its weights load but predict
something else, so expect to fine-tune longer.
"""

from __future__ import annotations

import os
import re

import torch

from cbsflow.errors import UserError

# Per official layout: the backbone it maps onto, and (official key pattern, our key template) pairs; the tensors
# copy unchanged unless they are convolutions (CONV_KEYS) or a learned-sigma final layer.
OFFICIAL_LAYOUTS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "SiT/DiT": ("sit", (
        (r"x_embedder\.proj\.(weight|bias)", r"embed.\1"),
        (r"t_embedder\.mlp\.(0|2)\.(weight|bias)", r"time.mlp.\1.\2"),
        (r"y_embedder\.embedding_table\.weight", "label.table.weight"),
        (r"blocks\.(\d+)\.adaLN_modulation\.1\.(weight|bias)", r"blocks.\1.ada.1.\2"),
        (r"blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)", r"blocks.\1.\2.\3"),
        (r"final_layer\.adaLN_modulation\.1\.(weight|bias)", r"final.ada.1.\1"),
        (r"final_layer\.linear\.(weight|bias)", r"final.linear.\1"),
    )),
    "JiT": ("jit", (
        (r"x_embedder\.proj1\.weight", "embed.0.weight"),
        (r"x_embedder\.proj2\.(weight|bias)", r"embed.1.\1"),
        (r"t_embedder\.mlp\.(0|2)\.(weight|bias)", r"time.mlp.\1.\2"),
        (r"y_embedder\.embedding_table\.weight", "label.table.weight"),
        (r"in_context_posemb", "in_context_posemb"),
        (r"blocks\.(\d+)\.(norm1|norm2|attn\.q_norm|attn\.k_norm)\.weight", r"blocks.\1.\2.weight"),
        (r"blocks\.(\d+)\.adaLN_modulation\.1\.(weight|bias)", r"blocks.\1.ada.1.\2"),
        (r"blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.w12|mlp\.w3)\.(weight|bias)", r"blocks.\1.\2.\3"),
        (r"final_layer\.norm_final\.weight", "final.norm.weight"),
        (r"final_layer\.adaLN_modulation\.1\.(weight|bias)", r"final.ada.1.\1"),
        (r"final_layer\.linear\.(weight|bias)", r"final.linear.\1"),
    )),
}
CONV_KEYS = ("embed.weight", "embed.0.weight", "embed.1.weight")  # (out, c, p, q) convolutions -> (out, p*q*c)
FIXED = "pos_embed"  # the fixed sin-cos table: checked, not loaded (the backbone builds it)


def _load(path: str):
    """torch.load of a local file, tensors only; training checkpoints may also hold their argparse arguments."""
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state(path: str) -> dict[str, torch.Tensor]:
    """The weights in a local file, whichever of the accepted forms it has (EMA weights first)."""
    if not os.path.isfile(path):
        raise UserError(f"train.init_from: {path} does not exist; give a local checkpoint file (cbsflow never "
                        "downloads weights)")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = _load(path)
    except Exception as err:  # noqa: BLE001 -- truncated files and foreign pickles raise many kinds
        raise UserError(f"train.init_from: cannot read {path} ({type(err).__name__}: "
                        f"{str(err).strip().splitlines()[0][:160]})") from None
    if isinstance(state, dict):
        for key in ("ema", "model_ema1", "state_dict", "model"):  # ours / SiT's, JiT's EMA, a training checkpoint
            if isinstance(state.get(key), dict) and state[key]:
                state = state[key]
                break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"train.init_from: {path} holds no state dict of tensors")
    if state and all(k.startswith("net.") for k in state):  # JiT's denoiser holds the network as `net`
        state = {k[len("net."):]: v for k, v in state.items()}
    return state


def official_layout(state: dict[str, torch.Tensor]) -> str | None:
    """The official layout a state dict is in ('SiT/DiT' or 'JiT'), or None."""
    if "x_embedder.proj1.weight" in state:
        return "JiT"
    if any(k.startswith(("x_embedder.", "t_embedder.", "final_layer.")) for k in state):
        return "SiT/DiT"
    return None


def rename(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """An official state dict's tensors under our names (``pos_embed`` kept as it is), or one clear error."""
    out, unknown = {}, []
    for key, value in state.items():
        for pattern, template in OFFICIAL_LAYOUTS[layout][1]:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, template, key)] = value
                break
        else:
            if key == FIXED:
                out[key] = value
            else:
                unknown.append(key)
    if unknown:
        raise UserError(f"train.init_from: keys neither ours nor the official {layout} layout: {unknown[:4]}")
    for key in CONV_KEYS:
        w = out.get(key)
        if w is not None and w.dim() == 4:  # Conv2d (o, c, p, q) -> Linear over (p q c)-ordered patches
            out[key] = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
    return out


def map_official(state: dict[str, torch.Tensor], net: torch.nn.Module, layout: str,
                 path: str) -> tuple[dict, list[str]]:
    """An official state dict renamed and reshaped onto ``net`` (a ``sit`` or ``jit``), its fixed table and time
    scale checked; returns it and notes on what was changed."""
    name = OFFICIAL_LAYOUTS[layout][0]
    if type(net).__name__ != name:
        raise UserError(f"train.init_from: {path} is in the official {layout} layout, which maps onto the {name} "
                        f"backbone only (the experts are {type(net).__name__})")
    scale = float(net.time.scale)
    if scale != 1.0:
        raise UserError(f"train.init_from: {path} is an official {layout} network, whose time embedding takes t in "
                        f"[0, 1]; bind {name}.time_scale = 1.0 (the experts' is {scale:g})")
    out, notes = rename(state, layout), [f"mapped the official {layout} key layout"]
    pos = out.pop(FIXED, None)
    if pos is not None:
        if pos.shape != net.pos.shape or not torch.allclose(pos.float(), net.pos.float(), atol=1e-5):
            raise UserError(f"train.init_from: {path}'s pos_embed {tuple(pos.shape)} is not the sin-cos table the "
                            f"{name} backbone builds {tuple(net.pos.shape)}; bind its data shape and patch to the "
                            "checkpoint's")
        notes.append("checked pos_embed against the backbone's fixed sin-cos table")
    lin_w, lin_b, want = out.get("final.linear.weight"), out.get("final.linear.bias"), net.final.linear.weight
    pp = net.patch * net.patch
    if lin_w is not None and lin_b is not None and lin_w.shape[0] == 2 * want.shape[0]:
        c = want.shape[0] // pp  # outputs per token are (p q c)-ordered with 2c channels: keep the first c
        out["final.linear.weight"] = lin_w.reshape(pp, 2 * c, -1)[:, :c].reshape(pp * c, -1)
        out["final.linear.bias"] = lin_b.reshape(pp, 2 * c)[:, :c].reshape(-1)
        notes.append(f"dropped the learned-sigma half of the final layer ({2 * c} -> {c} channels per pixel)")
    return out, notes


def init_state(path: str, net: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict for ``net`` from ``path`` (ours, or mapped from an official layout), checked key by key."""
    state = read_state(path)
    own = net.state_dict()
    notes: list[str] = []
    layout = official_layout(state) if set(state) != set(own) else None
    if layout is not None:
        state, notes = map_official(state, net, layout, path)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        raise UserError(f"train.init_from: {path} does not fit the experts' backbone ("
                        + "; ".join(filter(None, [missing and f"missing {missing[:3]}", extra and f"unexpected {extra[:3]}",
                                                  shapes and f"shapes {shapes[:2]}"])) + "); bind the backbone's size "
                        "and patch to the checkpoint's")
    return {k: v.to(own[k].dtype) for k, v in state.items()}, notes
