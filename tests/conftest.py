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
