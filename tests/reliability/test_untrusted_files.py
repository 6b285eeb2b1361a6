"""
Untrusted files: tampered downloads and caches are rejected before any parser runs, pickles are
never unpickled (a payload that would create a file is loaded and the file is checked to be
absent), and every ``np.load``/``torch.load`` of the package is safe.
"""

import ast
import hashlib
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, shared_data_root
from reliability_cases import cli_error, record

import pyro_seq
from pyro_seq.training.checkpoint import CheckpointError, load_checkpoint
from pyro_seq.data import (
    DataIntegrityError,
    load_sequences,
)
from pyro_seq.data import download as download_module
from pyro_seq.data import images as images_module
from pyro_seq.data import mnist as mnist_module
from pyro_seq.data import music as music_module

REPO = REPO_ROOT
PACKAGE = Path(pyro_seq.__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# untrusted files
# --------------------------------------------------------------------------------------------


def _parser_called(*args, **kwargs):
    raise AssertionError("a parser ran on a file whose sha256 had not matched")


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file shows code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _serve(payload, calls):
    def urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(payload)

    return urlopen


def _forged_mat(path):
    """A well-formed TCN-layout .mat (it would parse) that is not the published file."""
    from scipy.io import savemat

    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = np.zeros((3, 88), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"traindata": cells, "validdata": cells, "testdata": cells})


@pytest.mark.parametrize("how", ["forged_file", "flipped_byte"])
def test_tampered_music_mat_is_rejected_before_parsing(tmp_path, monkeypatch, how):
    import scipy.io

    info = music_module.DATASETS["jsb"]
    target = tmp_path / info.relpath
    if how == "forged_file":
        _forged_mat(target)
    else:
        shared = shared_data_root() / info.relpath
        if not shared.is_file():
            pytest.skip(f"{info.relpath} not under {shared_data_root()}")
        data = bytearray(shared.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.parent.mkdir(parents=True)
        target.write_bytes(bytes(data))
    before = target.read_bytes()
    monkeypatch.setattr(music_module, "load_mat", _parser_called)
    monkeypatch.setattr(scipy.io, "loadmat", _parser_called)
    with pytest.raises(DataIntegrityError, match="sha256") as info_error:
        load_sequences("jsb", "train", data_root=tmp_path, download=True)
    assert info.sha256 in str(info_error.value) and hashlib.sha256(before).hexdigest() in str(info_error.value)
    assert target.read_bytes() == before  # the user's file is left alone
    record("tampered files", "music .mat", "load_sequences", how, True)


def _tampered_download_cases():
    mat = music_module.DATASETS["jsb"]
    amat = mnist_module.BINARIZED_MNIST_FILES["train"]
    zips = images_module.OMNIGLOT_FILES
    return {
        "music .mat": (lambda root: load_sequences("jsb", "train", data_root=root), [(music_module, "load_mat")], mat.relpath),
        "binarized MNIST .amat": (lambda root: load_sequences("mnist", "train", data_root=root), [(mnist_module, "_parse_amat"), (mnist_module, "_read_npz")], amat.relpath),
        "MNIST .gz": (lambda root: load_sequences("dynamic_mnist", "test", data_root=root), [(images_module, "_read_idx")], None),
        "Omniglot .zip": (lambda root: load_sequences("omniglot", "test", data_root=root), [(images_module, "_process_omniglot"), (images_module.zipfile, "ZipFile")], zips[0].relpath),
    }


@pytest.mark.parametrize("fmt", list(_tampered_download_cases()))
def test_tampered_download_is_rejected_before_parsing_and_not_kept(tmp_path, monkeypatch, fmt):
    """Every downloadable format: a download whose sha256 does not match is never parsed or kept."""
    load, parsers, relpath = _tampered_download_cases()[fmt]
    calls = []
    monkeypatch.setattr(download_module, "URLOPEN", _serve(b"tampered bytes, not the published file", calls))
    for module, attr in parsers:
        monkeypatch.setattr(module, attr, _parser_called)
    with pytest.raises(DataIntegrityError, match="sha256"):
        load(tmp_path)
    assert len(calls) == 1  # the first download was refused; nothing else was fetched
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [], files  # neither the download nor a temporary file is kept
    if relpath is not None:
        assert not (tmp_path / relpath).exists()
    record("tampered files", fmt, "download", "served tampered bytes", True)


@pytest.mark.skipif(
    not all((shared_data_root() / f.relpath).is_file() for f in images_module.OMNIGLOT_FILES),
    reason="Omniglot zips not under the shared data root",
)
def test_tampered_omniglot_zip_is_rejected_before_it_is_opened(tmp_path, monkeypatch):
    for f in images_module.OMNIGLOT_FILES:
        (tmp_path / f.relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f.relpath).write_bytes((shared_data_root() / f.relpath).read_bytes())
    target = tmp_path / images_module.OMNIGLOT_FILES[0].relpath
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x01
    target.write_bytes(bytes(data))
    monkeypatch.setattr(images_module, "_process_omniglot", _parser_called)
    monkeypatch.setattr(images_module.zipfile, "ZipFile", _parser_called)
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_sequences("omniglot", "valid", data_root=tmp_path, download=False)
    record("tampered files", "Omniglot .zip", "load_sequences", "flipped bit in a cached zip", True)


def test_chorales_cache_carrying_a_pickle_is_rejected_without_unpickling(tmp_path):
    from pyro_seq.data.chorales import CHORALES_RELPATH

    marker = tmp_path / "code_ran"
    path = tmp_path / CHORALES_RELPATH
    path.parent.mkdir(parents=True)
    payload = np.array([_Payload(marker)], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, version=payload, meta=payload)  # object arrays are pickled
    with pytest.raises(DataIntegrityError, match="chorales cache"):
        load_sequences("chorales", "train", data_root=tmp_path, download=False)
    assert not marker.exists()
    record("tampered files", "chorales .npz cache", "load_sequences", "pickle payload", True)


def test_binarized_mnist_npz_carrying_a_pickle_is_rejected_without_unpickling(tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    path = tmp_path / mnist_module.BINARIZED_MNIST_FILES["npz"].relpath
    path.parent.mkdir(parents=True)
    payload = np.array([_Payload(marker)], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, train=payload, valid=payload, test=payload)
    monkeypatch.setattr(mnist_module, "_parse_amat", _parser_called)
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_sequences("mnist", "train", data_root=tmp_path, download=False)
    assert not marker.exists()
    # even with a matching checksum the reader refuses object arrays (allow_pickle=False)
    with pytest.raises(DataIntegrityError, match="allow_pickle"):
        mnist_module._read_npz(path)
    assert not marker.exists()
    record("tampered files", "binarized MNIST .npz", "load_sequences", "pickle payload", True)


def test_checkpoint_carrying_code_is_rejected_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"pyro_seq_checkpoint": True, "format_version": 1, "kind": "srnn", "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    status, lines = cli_error(["evaluate", str(path), "--device", "cpu"], capsys)
    assert status == 1 and len(lines) == 1 and "weights_only" in lines[0]
    assert not marker.exists()
    record("tampered files", "checkpoint .pt", "load_checkpoint", "pickle payload", True)


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = ast.unparse(func)
            keywords = {k.arg: k.value for k in node.keywords}
            yield name, keywords, node.lineno


def _is_const(node, value):
    return isinstance(node, ast.Constant) and node.value is value


def test_every_load_in_the_package_is_pickle_free():
    """``np.load`` always with ``allow_pickle=False``, ``torch.load`` always with ``weights_only=True``,
    and no unpickling at all (``pickle``/``joblib``/``dill`` loads)."""
    bad, seen = [], defaultdict(int)
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                for n in names:
                    if n.split(".")[0] in ("joblib", "dill", "cloudpickle", "shelve"):
                        bad.append(f"{path.name}:{node.lineno} imports {n}")
                if isinstance(node, ast.ImportFrom) and node.module in ("numpy", "torch", "pickle") and {"load", "loads", "Unpickler"} & {a.name for a in node.names}:
                    bad.append(f"{path.name}:{node.lineno} imports a bare load from {node.module}")
        for name, keywords, line in _calls(tree):
            where = f"{path.relative_to(PACKAGE)}:{line}"
            if name in ("np.load", "numpy.load"):
                seen[name] += 1
                if not _is_const(keywords.get("allow_pickle"), False):
                    bad.append(f"{where}: {name} without allow_pickle=False")
            elif name == "torch.load":
                seen[name] += 1
                if not _is_const(keywords.get("weights_only"), True):
                    bad.append(f"{where}: torch.load without weights_only=True")
            elif name.split(".")[-1] in ("load", "loads", "Unpickler") and name.split(".")[0] in ("pickle", "_pickle", "cPickle"):
                bad.append(f"{where}: {name}")
    assert not bad, bad
    assert seen["np.load"] >= 2 and seen["torch.load"] >= 1, dict(seen)  # the scan does see them
    record("tampered files", "package source", "ast scan", f"{sum(seen.values())} load calls checked", True)


