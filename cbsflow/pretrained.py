"""Pretrained starting points for the experts: ``train.init_from = 'PATH'``.

PATH is a file read from local disk (nothing is downloaded): this project's checkpoint (``checkpoints/base.pt`` or
``segment_k.pt``, its EMA weights when it has them), a state dict saved with ``torch.save`` (``.pt``/``.pth``, also a
training checkpoint holding ``ema`` or ``model``), or a ``.safetensors`` file. Keys that match the expert's backbone
load as they are; a state dict in the official SiT / DiT layout (``x_embedder.proj``, ``t_embedder.mlp``,
``y_embedder.embedding_table``, ``blocks.i.adaLN_modulation``, ``final_layer``) is mapped onto the ``sit`` backbone:

- the patch embedding's convolution (d, c, p, p) becomes the linear layer over (p, q, c)-ordered patches;
- with a learned sigma (DiT, SiT trained with it) the final layer predicts 2C channels per pixel: the second half
  (the variance) is dropped, with a note;
- ``pos_embed`` (fixed sin-cos) is dropped: the backbone builds the same table itself.

Official SiT feeds t in [0, 1] to its time embedding unscaled: bind ``sit.time_scale = 1.0`` (the default, 1000,
suits training from scratch). DiT is a diffusion model (integer timesteps, t = 0 is data, noise prediction): its
weights load but predict something else, so expect to fine-tune longer.
"""

from __future__ import annotations

import os
import re

import torch

from cbsflow.errors import UserError

# (official key pattern, our key template); the tensors copy unchanged unless _reshape says otherwise.
OFFICIAL_KEYS = (
    (r"x_embedder\.proj\.(weight|bias)", r"embed.\1"),
    (r"t_embedder\.mlp\.(0|2)\.(weight|bias)", r"time.mlp.\1.\2"),
    (r"y_embedder\.embedding_table\.weight", "label.table.weight"),
    (r"blocks\.(\d+)\.adaLN_modulation\.1\.(weight|bias)", r"blocks.\1.ada.1.\2"),
    (r"blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)", r"blocks.\1.\2.\3"),
    (r"final_layer\.adaLN_modulation\.1\.(weight|bias)", r"final.ada.1.\1"),
    (r"final_layer\.linear\.(weight|bias)", r"final.linear.\1"),
)
DROPPED = ("pos_embed",)


def read_state(path: str) -> dict[str, torch.Tensor]:
    """The weights in a local file, whichever of the accepted forms it has."""
    if not os.path.isfile(path):
        raise UserError(f"train.init_from: {path} does not exist; give a local checkpoint file (cbsflow never "
                        "downloads weights)")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- truncated files and foreign pickles raise many kinds
        raise UserError(f"train.init_from: cannot read {path} ({type(err).__name__}: "
                        f"{str(err).strip().splitlines()[0][:160]})") from None
    if isinstance(state, dict):
        for key in ("ema", "state_dict", "model"):  # ours (EMA first), or a training checkpoint
            if isinstance(state.get(key), dict) and state[key]:
                return state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"train.init_from: {path} holds no state dict of tensors")
    return state


def map_official(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], patch: int) -> tuple[dict, list[str]]:
    """An official SiT / DiT state dict renamed and reshaped onto our ``sit`` backbone (patch size ``patch``);
    returns it and notes on what was changed."""
    out, notes, unknown = {}, [], []
    for key, value in state.items():
        if key in DROPPED:
            continue
        for pattern, template in OFFICIAL_KEYS:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, template, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise UserError(f"train.init_from: keys neither ours nor the official SiT/DiT layout: {unknown[:4]}")
    w = out.get("embed.weight")
    if w is not None and w.dim() == 4:  # Conv2d (d, c, p, q) -> Linear over (p q c)-ordered patches
        out["embed.weight"] = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
    lin_w, lin_b, want = out.get("final.linear.weight"), out.get("final.linear.bias"), own.get("final.linear.weight")
    pp = patch * patch
    if lin_w is not None and want is not None and lin_w.shape[0] == 2 * want.shape[0]:
        c = want.shape[0] // pp  # outputs per token are (p q c)-ordered with 2c channels: keep the first c
        out["final.linear.weight"] = lin_w.reshape(pp, 2 * c, -1)[:, :c].reshape(pp * c, -1)
        out["final.linear.bias"] = lin_b.reshape(pp, 2 * c)[:, :c].reshape(-1)
        notes.append(f"dropped the learned-sigma half of the final layer ({2 * c} -> {c} channels per pixel)")
    return out, notes


def init_state(path: str, net: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict for ``net`` from ``path`` (ours, or mapped from the official layout), checked key by key."""
    state = read_state(path)
    own = net.state_dict()
    notes: list[str] = []
    if set(state) != set(own) and any(k.startswith(("x_embedder.", "t_embedder.", "final_layer.")) for k in state):
        if not hasattr(net, "patch"):
            raise UserError(f"train.init_from: {path} is in the official SiT/DiT layout, which maps onto the sit "
                            f"backbone only (the experts are {type(net).__name__})")
        state, notes = map_official(state, own, net.patch)
        notes.insert(0, "mapped the official SiT/DiT key layout")
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
