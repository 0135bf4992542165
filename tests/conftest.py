import os
import sys

import gin
import pytest
import torch
from hypothesis import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cbsflow.components  # noqa: E402,F401  (registers every built-in component)

# Tests run many tiny ops: one thread is faster for them and immune to oversubscription on a busy 2-core box.
torch.set_num_threads(1)

settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def clean_gin():
    """Every test starts with no gin bindings (the registry of components stays)."""
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def tiny_vae():
    """A function that saves a randomly initialised 44k-parameter AutoencoderKL (x2 per side, 4 latent channels) to
    ``folder/vae`` and returns the path: latent tests need no downloaded weights."""
    diffusers = pytest.importorskip("diffusers")

    def make(folder) -> str:
        torch.manual_seed(0)
        vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                      up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                      layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16)
        vae.save_pretrained(os.path.join(folder, "vae"))
        return os.path.join(folder, "vae")

    return make
