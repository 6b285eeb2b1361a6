"""
Every Python block of README.md runs: the quick starts cannot drift from the code. Loops marked
``# shorten for a quick check`` run one epoch and the data sets are cut to a few pieces; nothing
else of a block is changed.
"""

import re

import pyro
import pytest
from conftest import REPO_ROOT

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.S)


def shortened(code):
    code = re.sub(r"range\(\d+\)(\)?):(\s*# shorten for a quick check)", r"range(1)\1:\2", code)
    code = re.sub(r'load_music\("(\w+)", "train"\)', r'list(load_music("\1", "train"))[:6]', code)
    code = re.sub(r'load_music\("(\w+)", "test"\)', r'list(load_music("\1", "test"))[:3]', code)
    return re.sub(r"num_samples=\d+", "num_samples=5", code)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2
    assert all("# shorten for a quick check" in b for b in BLOCKS if "for epoch in range(" in b)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pyro.set_rng_seed(0)
    exec(compile(shortened(BLOCKS[index]), f"README.md block {index + 1}", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.split()
    assert printed and all(re.fullmatch(r"-?[0-9.e+-]+|nan|inf", word) for word in printed[:2]), printed
