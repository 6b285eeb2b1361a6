import os
from pathlib import Path

import pyro
import pytest
import torch


#: The checkout: tests live below ``tests/`` in folders that mirror the package.
REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root():
    """The benchmark data root: ``$PYRO_SEQ_DATA`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("PYRO_SEQ_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


JSB_RELPATH = Path("polyphonic_music") / "tcn_mat" / "JSB_Chorales.mat"


def jsb_available():
    return (shared_data_root() / JSB_RELPATH).is_file()


@pytest.fixture
def data_root():
    """The shared data root; skips the test when the JSB file is not under it."""
    root = shared_data_root()
    if not (root / JSB_RELPATH).is_file():
        pytest.skip(f"{JSB_RELPATH} not found under {root} (set PYRO_SEQ_DATA to a data root)")
    return root


def no_network(url, timeout=None):
    """A stand-in for ``pyro_seq.data.download.URLOPEN`` that fails any download a test attempts."""
    raise AssertionError(f"test tried to download {url}")


@pytest.fixture
def offline(monkeypatch):
    """No download can happen in the test (``URLOPEN`` raises)."""
    from pyro_seq.data import download

    monkeypatch.setattr(download, "URLOPEN", no_network)


def tree_listing(root):
    """Every path under ``root`` with its modification time (to check that nothing was written)."""
    return sorted((str(p), p.stat().st_mtime_ns) for p in Path(root).rglob("*"))


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


def pytest_collection_modifyitems(config, items):
    # cuda tests skip without a GPU; slow tests run with `-m slow` or PYRO_SEQ_SLOW=1
    run_slow = "slow" in (config.getoption("markexpr", default="") or "") or (
        os.environ.get("PYRO_SEQ_SLOW") == "1"
    )
    skip_slow = pytest.mark.skip(reason="slow: run with -m slow or PYRO_SEQ_SLOW=1")
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
    # the reliability report counts the cases of every other test: it runs last
    report = [item for item in items if item.nodeid.endswith("reliability/test_report.py::test_reliability_report")]
    for item in report:
        items.remove(item)
        items.append(item)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer checks (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "cuda: needs a CUDA device")
