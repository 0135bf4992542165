"""Autoencoders for latent diffusion (kind ``autoencoder``): images <-> scaled latents.

SiT and DiT train on the latents of Stable Diffusion's VAE (``stabilityai/sd-vae-ft-ema`` or ``-ft-mse``): 256 x 256
images become 4 x 32 x 32 latents, multiplied by 0.18215 so that they have roughly unit variance. The weights are
never downloaded here: ``vae.path`` is a local folder written by ``AutoencoderKL.save_pretrained`` (or a hub id
already in the Hugging Face cache), and anything else is one clear error.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from cbsflow.errors import UserError
from cbsflow.registry import register


@contextlib.contextmanager
def _offline():
    """Hugging Face hub in offline mode while loading: nothing may be downloaded at run time."""
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@register("autoencoder")
class vae:
    """A diffusers ``AutoencoderKL`` (the SD-VAE of DiT/SiT) from a local folder or a cached hub id; latents x scale.

    ``sample_latents``: encode with a draw from the posterior (as DiT/SiT do) rather than its mean.
    """

    def __init__(self, path: str, scale: float = 0.18215, sample_latents: bool = True, batch_size: int = 32):
        if scale <= 0:
            raise UserError(f"vae.scale must be > 0, got {scale}")
        self.path, self.scale, self.sample_latents, self.batch_size = os.path.expanduser(path), scale, sample_latents, batch_size
        self._model = None
        if not available(self.path):  # checked when the configuration is built, before anything runs
            raise UserError(f"vae.path = {path!r} is neither a folder written by AutoencoderKL.save_pretrained nor a hub "
                            "id in the local Hugging Face cache; cbsflow never downloads weights: fetch them once on a "
                            "machine with network access and point vae.path at the folder")

    @property
    def model(self):
        """The AutoencoderKL, loaded on first use (eval mode, on the GPU if there is one)."""
        if self._model is None:
            self._model = load_autoencoder_kl(self.path)
            self._model.to("cuda" if torch.cuda.is_available() else "cpu")
        return self._model

    def describe(self) -> dict[str, Any]:
        """What a latent shard or a sample record says about the autoencoder that made it."""
        return {"autoencoder": "vae (diffusers AutoencoderKL)", "path": self.path, "scale": self.scale,
                "sample_latents": self.sample_latents}

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (b, 3, H, W) in [-1, 1] -> scaled latents (b, c, H/f, W/f), in batches of ``batch_size``."""
        device = next(self.model.parameters()).device
        out = []
        for chunk in images.split(self.batch_size):
            dist = self.model.encode(chunk.to(device).float()).latent_dist
            z = dist.sample(generator=generator) if self.sample_latents else dist.mode()
            out.append((z * self.scale).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (b, 3, H, W) in [-1, 1] -> the posterior's mean and std (b, c, H/f, W/f) each, times ``scale``:
        ``mean + std * eps`` is a latent as DiT/SiT draw one at every training step
        (``latent_dist.sample() * scale``)."""
        device = next(self.model.parameters()).device
        means, stds = [], []
        for chunk in images.split(self.batch_size):
            dist = self.model.encode(chunk.to(device).float()).latent_dist
            means.append((dist.mean * self.scale).cpu())
            stds.append((dist.std * self.scale).cpu())
        return torch.cat(means), torch.cat(stds)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] (clamped), in batches of ``batch_size``."""
        device = next(self.model.parameters()).device
        out = [self.model.decode(chunk.to(device).float() / self.scale).sample.clamp(-1, 1).cpu()
               for chunk in latents.split(self.batch_size)]
        return torch.cat(out)


def available(path: str) -> bool:
    """A local model folder with a config.json, or a hub id whose config is in the local cache."""
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "config.json"))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(path, "config.json"), str)


def load_autoencoder_kl(path: str):
    """``AutoencoderKL.from_pretrained`` from a local folder or the local hub cache only; a clear error otherwise."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise UserError("vae: the diffusers package is missing; pip install diffusers (or pip install -e '.[latent]')")
    with _offline():
        try:
            model = AutoencoderKL.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, EnvironmentError) as err:
            raise UserError(f"vae.path = {path!r} is neither a folder written by AutoencoderKL.save_pretrained nor a hub "
                            f"id in the local Hugging Face cache ({type(err).__name__}); cbsflow never downloads weights: "
                            "fetch them once on a machine with network access and point vae.path at the folder")
    return model.eval().requires_grad_(False)
