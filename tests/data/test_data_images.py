# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
import gzip
import hashlib
import io
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_data_root
from pyro_seq.data import (
    IMAGE_DATASETS,
    SEQUENCE_DATASETS,
    DataIntegrityError,
    DataUnavailableError,
    ImageDataset,
    SequenceBatch,
    binarize_batches,
    load_images,
    load_mnist,
    load_omniglot,
    load_sequences,
    make_batches,
)
from pyro_seq.data import download as download_mod
from pyro_seq.data import images as images_mod

ROOT = shared_data_root()
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


def _have(*relpaths):
    return all((ROOT / r).is_file() for r in relpaths)


needs_mnist = pytest.mark.skipif(
    not _have(*(f"mnist/{n}" for n in MNIST_NAMES)), reason=f"MNIST .gz files not under {ROOT}"
)
needs_omniglot = pytest.mark.skipif(
    not _have(*(f.relpath for f in images_mod.OMNIGLOT_FILES)),
    reason=f"Omniglot zips not under {ROOT}",
)
needs_binarized = pytest.mark.skipif(
    not _have("binarized_mnist/binarized_mnist.npz"),
    reason=f"binarized_mnist.npz not under {ROOT}",
)


def _no_network(url, timeout=None):
    raise AssertionError(f"test tried to download {url}")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setattr(download_mod, "URLOPEN", _no_network)


# --------------------------------------------------------------------------- MNIST


@needs_mnist
def test_mnist_grey_shared():
    train, train_y = load_mnist("train", ROOT, download=False)
    valid, valid_y = load_mnist("valid", ROOT, download=False)
    test, test_y = load_mnist("test", ROOT, download=False)
    assert train.shape == (50000, 28, 28) and valid.shape == (10000, 28, 28)
    assert test.shape == (10000, 28, 28)
    assert train.dtype == np.uint8 and test_y.dtype == np.int64
    assert np.bincount(test_y, minlength=10).tolist() == MNIST_TEST_COUNTS
    full = np.concatenate([train, valid])
    assert np.mean(full, dtype=np.float64) == pytest.approx(33.318, abs=5e-4)
    assert np.mean(test, dtype=np.float64) == pytest.approx(33.791, abs=5e-4)
    assert len(train_y) + len(valid_y) == 60000
    npz = ROOT / "mnist" / "mnist.npz"
    if npz.is_file():  # an independent copy of the same arrays, in the original order
        with np.load(npz, allow_pickle=False) as z:
            np.testing.assert_array_equal(full, z["x_train"])
            np.testing.assert_array_equal(np.concatenate([train_y, valid_y]), z["y_train"])
            np.testing.assert_array_equal(test, z["x_test"])


def _copy_mnist(tmp_path, names):
    (tmp_path / "mnist").mkdir()
    for n in names:
        shutil.copyfile(ROOT / "mnist" / n, tmp_path / "mnist" / n)
    return tmp_path


def _flip_byte(path, offset=-10):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@needs_mnist
@pytest.mark.parametrize("split,tampered", [
    ("test", "t10k-labels-idx1-ubyte.gz"),
    ("train", "train-images-idx3-ubyte.gz"),
])
def test_mnist_tampered_file_rejected_before_parsing(tmp_path, monkeypatch, split, tampered):
    prefix = "t10k" if split == "test" else "train"
    root = _copy_mnist(tmp_path, [n for n in MNIST_NAMES if n.startswith(prefix)])
    _flip_byte(root / "mnist" / tampered)

    def parser_called(*args, **kwargs):
        raise AssertionError("a file was parsed before all files were verified")

    monkeypatch.setattr(images_mod, "_read_idx", parser_called)
    with pytest.raises(DataIntegrityError) as info:
        load_mnist(split, root, download=True)
    msg = str(info.value)
    assert "sha256" in msg and tampered in msg
    info_file = next(f for f in images_mod.MNIST_FILES.values() if f.relpath.endswith(tampered))
    for accepted in info_file.sha256s:  # every accepted value is named
        assert accepted in msg


@needs_mnist
def test_mnist_bad_idx_header(tmp_path, monkeypatch):
    root = _copy_mnist(tmp_path, ["t10k-images-idx3-ubyte.gz"])
    bad = gzip.compress(struct.pack(">II", 2051, 10000) + bytes(10000), mtime=0)  # labels magic
    path = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bad)
    old = images_mod.MNIST_FILES["test_labels"]
    monkeypatch.setitem(
        images_mod.MNIST_FILES,
        "test_labels",
        images_mod.ImageFile(old.relpath, (hashlib.sha256(bad).hexdigest(),), old.url),
    )
    with pytest.raises(DataIntegrityError, match="IDX header"):
        load_mnist("test", root, download=False)


@needs_mnist
def test_mnist_download_is_verified(tmp_path, monkeypatch):
    with pytest.raises(DataUnavailableError, match="ossci-datasets"):
        load_mnist("test", tmp_path, download=False)
    urls = []

    def fake_urlopen(url, timeout=None):  # serves the shared files (canonical test files)
        urls.append(url)
        return io.BytesIO((ROOT / "mnist" / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(download_mod, "URLOPEN", fake_urlopen)
    images, labels = load_mnist("test", tmp_path)
    assert images.shape == (10000, 28, 28) and len(labels) == 10000
    assert all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in urls)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
    ]


def test_mnist_unknown_split():
    with pytest.raises(ValueError, match="valid splits"):
        load_mnist("validation")


# --------------------------------------------------------------------------- Omniglot


def _listing(root):
    return sorted((str(p), p.stat().st_mtime_ns) for p in Path(root).rglob("*"))


@needs_omniglot
def test_omniglot_splits():
    before = _listing(ROOT / "omniglot")
    splits = {s: load_omniglot(s, ROOT, download=False) for s in ("train", "valid", "test")}
    assert _listing(ROOT / "omniglot") == before  # nothing written to the data root
    assert {s: len(d.images) for s, d in splits.items()} == {
        "train": 3872, "valid": 484, "test": 484
    }
    seen = set()
    hashes = {}
    for s, d in splits.items():
        assert d.images.shape == (len(d.images), 28, 28) and d.images.dtype == np.float32
        assert d.images.min() >= 0.0 and d.images.max() <= 1.0
        assert 0.03 < d.images.mean() < 0.3  # ink = 1 is the minority
        assert len(np.unique(d.images)) > 10  # grey levels kept
        # every character in every split, 16 / 2 / 2 drawers each
        per = {"train": 16, "valid": 2, "test": 2}[s]
        assert np.bincount(d.character_ids, minlength=242).tolist() == [per] * 242
        pairs = set(zip(d.character_ids.tolist(), d.drawer_ids.tolist()))
        assert len(pairs) == len(d.images) and not (pairs & seen)
        seen |= pairs
        hashes[s] = {hashlib.sha256(im.tobytes()).hexdigest() for im in d.images}
        assert d.alphabet_ids.min() == 0 and d.alphabet_ids.max() == 7
    assert len(seen) == 242 * 20
    assert not (hashes["train"] & hashes["valid"]) and not (hashes["train"] & hashes["test"])
    assert not (hashes["valid"] & hashes["test"])
    # the same call gives the same arrays, and callers get copies
    again = load_omniglot("valid", ROOT, download=False)
    np.testing.assert_array_equal(again.images, splits["valid"].images)
    again.images[:] = 0
    assert load_omniglot("valid", ROOT, download=False).images.max() > 0


@needs_omniglot
def test_omniglot_tampered_zip(tmp_path):
    (tmp_path / "omniglot").mkdir()
    for f in images_mod.OMNIGLOT_FILES:
        shutil.copyfile(ROOT / f.relpath, tmp_path / f.relpath)
    _flip_byte(tmp_path / images_mod.OMNIGLOT_FILES[1].relpath, offset=1000)
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_omniglot("train", tmp_path, download=False)


# --------------------------------------------------------------------------- load_images


@needs_mnist
@needs_binarized
@needs_omniglot
def test_load_images_shapes_and_flags():
    for name in IMAGE_DATASETS:
        for split in ("train", "valid", "test"):
            d = load_images(name, split, ROOT, download=False, limit=300)
            assert isinstance(d, ImageDataset) and len(d) == 300
            assert d.image_shape == (28, 28) and d.x_dim == 784
            assert d[0].shape == (1, 784) and d[0].dtype == np.float32
            x = np.stack(d.sequences)
            grey_train = split == "train" and name != "binarized_mnist"
            assert d.dynamic_binarization == grey_train
            if not grey_train:
                assert set(np.unique(x).tolist()) <= {0.0, 1.0}
            else:
                assert len(np.unique(x)) > 2 and x.min() >= 0.0 and x.max() <= 1.0
            # the generic limit path of load_sequences keeps the flag
            sliced = type(d)(d.name, d.split, d.sequences[:10])
            assert sliced.dynamic_binarization == d.dynamic_binarization
    batch = next(iter(make_batches(d, 7, shuffle=False)))
    assert batch.x.shape == (7, 1, 784) and batch.mask.shape == (7, 1)


@needs_mnist
def test_load_images_fixed_binarization_deterministic():
    a = load_images("dynamic_mnist", "test", ROOT, download=False)
    b = load_images("dynamic_mnist", "test", ROOT, download=False, limit=50)
    np.testing.assert_array_equal(np.stack(a.sequences[:50]), np.stack(b.sequences))
    grey, labels = load_mnist("test", ROOT, download=False)
    x = np.stack(a.sequences).reshape(-1, 28, 28)
    assert not x[grey == 0].any() and x[grey == 255].all()
    assert x.mean() == pytest.approx(grey.mean() / 255, abs=2e-3)
    np.testing.assert_array_equal(a.labels, labels)
    v = load_images("dynamic_mnist", "valid", ROOT, download=False, limit=50)
    v1 = load_images("dynamic_mnist", "valid", ROOT, download=False, limit=50, seed=1)
    assert not np.array_equal(np.stack(v.sequences), np.stack(v1.sequences))


@needs_mnist
def test_load_sequences_dispatches_images():
    assert set(IMAGE_DATASETS) <= set(SEQUENCE_DATASETS)
    d = load_sequences("dynamic_mnist", "train", ROOT, False, limit=20)
    assert isinstance(d, ImageDataset) and len(d) == 20 and d.dynamic_binarization
    grey, _ = load_mnist("train", ROOT, download=False)
    np.testing.assert_allclose(d[3][0], grey[3].reshape(-1) / 255.0, rtol=1e-6)


def test_load_images_bad_arguments():
    with pytest.raises(ValueError) as info:
        load_images("fashion_mnist", "train")
    for name in IMAGE_DATASETS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="valid splits"):
        load_images("omniglot", "dev")
    with pytest.raises(ValueError, match="limit"):
        load_images("omniglot", "train", limit=0)


# --------------------------------------------------------------------------- binarize_batches


def _grey_batches(n=64, batch_size=16):
    g = torch.Generator().manual_seed(0)
    seqs = list(torch.rand(n, 1, 784, generator=g).numpy() ** 3)  # grey levels in [0, 1]
    return make_batches(seqs, batch_size, shuffle=False), np.stack(seqs)


def test_binarize_batches():
    batches, grey = _grey_batches()
    first = list(binarize_batches(batches, seed=3, epoch=0))
    same = list(binarize_batches(batches, seed=3, epoch=0))
    other_epoch = list(binarize_batches(batches, seed=3, epoch=1))
    other_seed = list(binarize_batches(batches, seed=4, epoch=0))
    assert len(first) == len(batches) == 4
    for b0, b1, b2, b3, src in zip(first, same, other_epoch, other_seed, batches):
        assert isinstance(b0, SequenceBatch) and b0.x.shape == src.x.shape
        assert b0.x.dtype == src.x.dtype
        assert set(b0.x.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(b0.x, b1.x)
        assert not torch.equal(b0.x, b2.x) and not torch.equal(b0.x, b3.x)
        assert torch.equal(b0.mask, src.mask) and torch.equal(b0.lengths, src.lengths)
    # different batches of one epoch use different streams
    assert not torch.equal(first[0].x, first[1].x)
    mean = torch.cat([b.x for b in first]).mean().item()
    assert mean == pytest.approx(float(grey.mean()), abs=0.01)
    with pytest.raises(ValueError, match="epoch"):
        binarize_batches(batches, seed=0, epoch=-1)


@needs_mnist
def test_binarize_dynamic_mnist_batches():
    train = load_images("dynamic_mnist", "train", ROOT, download=False, limit=500)
    batches = make_batches(train, 100, shuffle=True, seed=0, epoch=2)
    binary = torch.cat([b.x for b in binarize_batches(batches, seed=0, epoch=2)])
    assert set(binary.unique().tolist()) == {0.0, 1.0}
    grey_mean = float(np.stack(train.sequences).mean())
    assert binary.mean().item() == pytest.approx(grey_mean, abs=0.005)
