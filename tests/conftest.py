import os
from pathlib import Path

import pyro
import pytest
import torch


def shared_data_root():
    """The benchmark data root: ``$PYRO_SEQ_DATA`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("PYRO_SEQ_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def data_root():
    root = shared_data_root()
    if not (root / "polyphonic_music").is_dir():
        pytest.skip(f"shared benchmark data not found under {root} (set PYRO_SEQ_DATA)")
    return root


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer checks (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "cuda: needs a CUDA device")
