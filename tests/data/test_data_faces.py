# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from conftest import shared_data_root, tree_listing
from pyro_seq.data import (
    OLIVETTI_FILE,
    DataIntegrityError,
    DataUnavailableError,
    load_olivetti_faces,
    olivetti_split,
)
from pyro_seq.data import faces as faces_mod
from pyro_seq.data.images import ImageFile

ROOT = shared_data_root()
SHARED_FILE = ROOT / OLIVETTI_FILE.relpath

needs_faces = pytest.mark.skipif(
    not SHARED_FILE.is_file(), reason=f"{OLIVETTI_FILE.relpath} not under {ROOT}"
)


@pytest.fixture(autouse=True)
def _offline(offline):
    """Every test here runs without network access."""


def _flip_byte(path, offset=-10):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _write_mat(root, variables):
    """A .mat at OLIVETTI_FILE.relpath under ``root``; patches nothing, returns its sha256."""
    path = root / OLIVETTI_FILE.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), variables)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _pin(monkeypatch, sha256):
    """Make the loader accept a file with ``sha256`` (for synthetic files in tmp_path)."""
    monkeypatch.setattr(
        faces_mod, "OLIVETTI_FILE", ImageFile(OLIVETTI_FILE.relpath, (sha256,), OLIVETTI_FILE.url)
    )


# --------------------------------------------------------------------------- the shared file


@needs_faces
def test_olivetti_shape_dtype_range_and_mean():
    before = tree_listing(SHARED_FILE.parent)
    images, person = load_olivetti_faces(ROOT, download=False)
    assert tree_listing(SHARED_FILE.parent) == before  # nothing written to the data root
    assert images.shape == (400, 64, 64) and images.dtype == np.float32
    assert images.flags["C_CONTIGUOUS"]
    assert images.min() == 0.0 and images.max() == 1.0
    assert len(np.unique(images)) > 100  # grey levels
    assert np.mean(images, dtype=np.float64) == pytest.approx(0.54704, abs=1e-4)
    assert person.shape == (400,) and person.dtype == np.int64
    assert person.tolist() == [i // 10 for i in range(400)]
    assert np.bincount(person).tolist() == [10] * 40


@needs_faces
def test_olivetti_data_root_from_environment(monkeypatch):
    monkeypatch.setenv("PYRO_SEQ_DATA", str(ROOT))
    images, person = load_olivetti_faces(download=False, split="valid")
    assert images.shape == (40, 64, 64) and set(person.tolist()) == {32, 33, 34, 35}


@needs_faces
def test_olivetti_orientation_matches_raw_columns():
    images, _ = load_olivetti_faces(ROOT, download=False)
    faces = scipy.io.loadmat(str(SHARED_FILE))["faces"]  # uint8 [4096, 400], column-major images
    lo, hi = float(faces.min()), float(faces.max())
    for i in (0, 1, 57, 213, 399):
        upright = faces[:, i].reshape(64, 64).T  # [row, column]
        np.testing.assert_allclose(images[i], (upright - lo) / (hi - lo), rtol=0, atol=1e-6)
    # the mean face is left-right symmetric (not top-bottom, as a transposed face would be)
    mean = images.mean(0)
    corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    assert corr(mean, mean[:, ::-1]) > 0.8 > 0.3 > corr(mean, mean[::-1])
    # and not upside down: bright forehead at the top, dark chin/neck at the bottom,
    # the dark band of the eyes in the upper half
    rows = mean.mean(1)
    assert rows[:10].mean() > rows[-10:].mean() + 0.1
    assert 12 <= int(np.argmin(rows[8:32])) + 8 <= 24


@needs_faces
def test_olivetti_splits_by_person():
    all_images, all_person = load_olivetti_faces(ROOT, download=False)
    parts = {
        s: load_olivetti_faces(ROOT, download=False, split=s) for s in ("train", "valid", "test")
    }
    assert {s: len(p[0]) for s, p in parts.items()} == {"train": 320, "valid": 40, "test": 40}
    people = {s: set(p[1].tolist()) for s, p in parts.items()}
    assert people == {
        "train": set(range(32)), "valid": set(range(32, 36)), "test": set(range(36, 40))
    }
    assert not (people["train"] & people["valid"]) and not (people["train"] & people["test"])
    assert not (people["valid"] & people["test"])
    idx = olivetti_split(all_person)
    for s, (images, person) in parts.items():
        assert images.shape == (len(person), 64, 64) and images.dtype == np.float32
        assert person.dtype == np.int64
        # the subset of the full array: same (global) scaling, file order
        np.testing.assert_array_equal(images, all_images[idx[s]])
        np.testing.assert_array_equal(person, all_person[idx[s]])
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(400))
    # deterministic
    again, _ = load_olivetti_faces(ROOT, download=False, split="test")
    np.testing.assert_array_equal(again, parts["test"][0])


@needs_faces
def test_olivetti_tampered_file_rejected_before_parsing(tmp_path, monkeypatch):
    target = tmp_path / OLIVETTI_FILE.relpath
    target.parent.mkdir(parents=True)
    shutil.copyfile(SHARED_FILE, target)
    _flip_byte(target, offset=5000)

    def parser_called(*args, **kwargs):
        raise AssertionError("the file was parsed before it was verified")

    monkeypatch.setattr(faces_mod, "_read_olivetti_mat", parser_called)
    monkeypatch.setattr(scipy.io, "loadmat", parser_called)
    with pytest.raises(DataIntegrityError) as info:
        load_olivetti_faces(tmp_path, download=True)  # an existing file is never re-downloaded
    msg = str(info.value)
    assert "sha256" in msg and "olivettifaces.mat" in msg and OLIVETTI_FILE.sha256s[0] in msg
    assert target.is_file()  # the bad copy is left alone


# --------------------------------------------------------------------------- no shared file needed


def test_olivetti_missing_file_no_download(tmp_path):
    with pytest.raises(DataUnavailableError) as info:
        load_olivetti_faces(tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path / OLIVETTI_FILE.relpath) in msg
    assert OLIVETTI_FILE.sha256s[0] in msg and OLIVETTI_FILE.url in msg
    assert not (tmp_path / "faces").exists()


def test_olivetti_unknown_split():
    with pytest.raises(ValueError) as info:
        load_olivetti_faces(split="validation")
    for name in ("train", "valid", "test"):
        assert name in str(info.value)


@pytest.mark.parametrize("variables,problem", [
    ({"faces": np.zeros((4096, 399), np.uint8)}, "shape"),
    ({"faces": np.zeros((64, 64), np.uint8)}, "shape"),
    ({"faces": np.zeros((4096, 400), np.float64)}, "dtype"),
    ({"images": np.zeros((4096, 400), np.uint8)}, "no variable 'faces'"),
])
def test_olivetti_mat_validation(tmp_path, variables, problem):
    path, _ = _write_mat(tmp_path, variables)
    with pytest.raises(DataIntegrityError, match=problem) as info:
        faces_mod._read_olivetti_mat(path)
    assert str(path) in str(info.value)


def test_olivetti_not_a_mat_file(tmp_path):
    path = tmp_path / "olivettifaces.mat"
    path.write_bytes(b"not a MATLAB file at all" * 10)
    with pytest.raises(DataIntegrityError, match="MATLAB") as info:
        faces_mod._read_olivetti_mat(path)
    assert str(path) in str(info.value)


def test_olivetti_loader_validates_after_checksum(tmp_path, monkeypatch):
    # a file with the pinned checksum but the wrong contents is rejected by the parser
    path, sha = _write_mat(tmp_path, {"faces": np.zeros((4096, 40), np.uint8)})
    _pin(monkeypatch, sha)
    with pytest.raises(DataIntegrityError, match=r"shape \(4096, 40\)") as info:
        load_olivetti_faces(tmp_path, download=False)
    assert "olivettifaces.mat" in str(info.value)


def test_olivetti_synthetic_layout(tmp_path, monkeypatch):
    # column i holds image i column-major; pixel (r, c) of image i is r + 2 * c + (i % 7)
    r, c = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    upright = np.stack([r + 2 * c + (i % 7) for i in range(400)]).astype(np.uint8)  # [400,64,64]
    faces = np.stack([im.ravel(order="F") for im in upright], axis=1)  # [4096, 400]
    _, sha = _write_mat(tmp_path, {"faces": faces})
    _pin(monkeypatch, sha)
    images, person = load_olivetti_faces(tmp_path, download=False)
    lo, hi = upright.min(), upright.max()
    np.testing.assert_allclose(images, (upright - lo) / (hi - lo), atol=1e-6)
    train, train_person = load_olivetti_faces(tmp_path, download=False, split="train")
    np.testing.assert_array_equal(train, images[:320])
    assert train_person.tolist() == [i // 10 for i in range(320)]


def test_olivetti_split_function():
    person = np.repeat(np.arange(40), 10)
    idx = olivetti_split(person)
    assert {s: len(v) for s, v in idx.items()} == {"train": 320, "valid": 40, "test": 40}
    assert idx["valid"].tolist() == list(range(320, 360)) and idx["test"].dtype == np.int64
    custom = olivetti_split(person, valid_people=[0], test_people=[1, 2])
    assert custom["valid"].tolist() == list(range(10))
    assert custom["test"].tolist() == list(range(10, 30))
    assert custom["train"].tolist() == list(range(30, 400))
    with pytest.raises(ValueError, match="overlap"):
        olivetti_split(person, valid_people=[1, 2], test_people=[2, 3])
    with pytest.raises(ValueError, match="1-D"):
        olivetti_split(person.reshape(40, 10))
