"""With PYRO_SEQ_REQUIRE_DATA=1 a missing data root fails the run, and a test that would skip for
missing data fails; without it the test skips and the summary says why."""

import os
import subprocess
import sys

from conftest import REPO_ROOT

DATA_TEST = '''
import pytest


def test_needs_data():
    pytest.skip("JSB_Chorales.mat not found under /nowhere")
'''


def run_pytest(tmp_path, env_extra):
    test = tmp_path / "test_needs_data.py"
    test.write_text(DATA_TEST)
    (tmp_path / "conftest.py").write_text((REPO_ROOT / "tests" / "conftest.py").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYRO_SEQ")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_missing_data_root_fails_when_data_is_required(tmp_path):
    result = run_pytest(tmp_path, {"PYRO_SEQ_DATA": str(tmp_path / "no_such_root"), "PYRO_SEQ_REQUIRE_DATA": "1"})
    assert result.returncode != 0
    assert "PYRO_SEQ_REQUIRE_DATA=1 but there is no data root" in result.stdout + result.stderr


def test_a_data_skip_fails_when_data_is_required(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "MANIFEST.txt").write_text("")
    result = run_pytest(tmp_path, {"PYRO_SEQ_DATA": str(root), "PYRO_SEQ_REQUIRE_DATA": "1"})
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout and "skipped for missing data" in result.stdout


def test_without_the_requirement_a_data_skip_is_counted_by_reason(tmp_path):
    result = run_pytest(tmp_path, {"PYRO_SEQ_DATA": str(tmp_path / "no_such_root")})
    assert result.returncode == 0, result.stdout
    assert "skipped 1: 1 data missing" in result.stdout
