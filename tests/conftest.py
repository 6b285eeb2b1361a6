import os
import re
from collections import Counter
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


# --------------------------------------------------------------------------------------------
# data required: with PYRO_SEQ_REQUIRE_DATA=1 (as CI runs), a missing data root or file fails
# --------------------------------------------------------------------------------------------

#: ``PYRO_SEQ_REQUIRE_DATA=1``: every file of the data root's MANIFEST.txt must be there, and a
#: test that skips for missing data fails instead.
REQUIRE_DATA = os.environ.get("PYRO_SEQ_REQUIRE_DATA") == "1"
#: How the data-dependent tests word their skip reasons ("... not found under ROOT", "... not under
#: the data root", "... not in the data root").
DATA_SKIP = re.compile(r"\bnot (?:found )?(?:under|in)\b|\bnot found\b", re.IGNORECASE)


def skip_reason(report):
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text


def pytest_sessionstart(session):
    if not REQUIRE_DATA:
        return
    root = shared_data_root()
    manifest = root / "MANIFEST.txt"
    if not manifest.is_file():
        pytest.exit(f"PYRO_SEQ_REQUIRE_DATA=1 but there is no data root at {root} (no MANIFEST.txt); set PYRO_SEQ_DATA", returncode=1)
    missing = [name for name in manifest.read_text().split() if not (root / name).is_file()]
    if missing:
        pytest.exit(f"PYRO_SEQ_REQUIRE_DATA=1 but {len(missing)} files of {manifest} are missing: {missing[:5]}", returncode=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_DATA and report.skipped and DATA_SKIP.search(skip_reason(report)):
        report.outcome = "failed"
        report.longrepr = f"skipped for missing data while PYRO_SEQ_REQUIRE_DATA=1: {skip_reason(report)}"


def pytest_terminal_summary(terminalreporter):
    """One line: how many tests skipped, by reason (CUDA, slow, missing data, other)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    kinds = Counter()
    for report in skipped:
        reason = skip_reason(report)
        if "CUDA" in reason:
            kinds["no CUDA device"] += 1
        elif reason.startswith("slow"):
            kinds["slow (PYRO_SEQ_SLOW=1 runs them)"] += 1
        elif DATA_SKIP.search(reason):
            kinds["data missing"] += 1
        else:
            kinds[reason[:80]] += 1
    terminalreporter.write_line(f"skipped {len(skipped)}: " + "; ".join(f"{n} {kind}" for kind, n in kinds.most_common()))
