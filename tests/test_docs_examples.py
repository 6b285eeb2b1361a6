"""
Every Python block of the documentation pages (docs/*.md, and ``code-block:: python`` in
docs/**/*.rst) runs, as tests/test_readme.py runs README's: shortened the same way (loops marked
``# shorten for a quick check`` run one epoch, music sets cut to a few pieces), and further cut
here for the pages' bigger loops: ``Trainer.fit`` runs one epoch, each ``for batch in ...`` loop
two batches, and a music split read by a variable keeps three pieces. Nothing else of a block is
changed; the data come from the shared data root.
"""

import re

import pyro
import pytest
from conftest import REPO_ROOT, shared_data_root
from test_readme import shortened

DOCS = REPO_ROOT / "docs"


def blocks():
    found = []
    for page in sorted(DOCS.glob("*.md")):
        python = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
        found += [(page.name, b) for b in python]
    for page in sorted(DOCS.rglob("*.rst")):
        if "_build" in page.parts:
            continue
        code_blocks = r"^\.\. code-block:: python\n\n((?:(?:    .*)?\n)+)"
        for block in re.findall(code_blocks, page.read_text(), flags=re.M):
            found.append((page.name, re.sub(r"^    ", "", block, flags=re.M)))
    return found


BLOCKS = blocks()


def shortened_for_docs(code):
    code = shortened(code)
    code = re.sub(r"\.fit\(\d+\)", ".fit(1)", code)
    code = re.sub(r'load_music\("(\w+)", (\w+)\)', r'list(load_music("\1", \2))[:3]', code)
    two_batches = r"\1for batch in __import__('itertools').islice(\2, 2):"
    code = re.sub(r"^(\s*)for batch in (.+):$", two_batches, code, flags=re.M)
    return code


def test_the_pages_have_python_blocks():
    assert len(BLOCKS) >= 5
    for page, block in BLOCKS:
        if "for epoch in range(" in block:
            assert "# shorten for a quick check" in block, page


IDS = [f"{page}-{i}" for i, (page, _) in enumerate(BLOCKS)]


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=IDS)
def test_docs_block_runs(index, tmp_path, monkeypatch):
    root = shared_data_root()
    if not (root / "MANIFEST.txt").is_file():
        pytest.skip(f"no data root at {root} (set PYRO_SEQ_DATA)")
    monkeypatch.setenv("PYRO_SEQ_DATA", str(root))
    monkeypatch.chdir(tmp_path)
    pyro.set_rng_seed(0)
    page, block = BLOCKS[index]
    code = compile(shortened_for_docs(block), f"{page} block {index + 1}", "exec")
    exec(code, {"__name__": "docs"})
