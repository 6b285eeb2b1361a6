"""The cluttered-MNIST generator: determinism, placement, documented statistics, cache and batches."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import shared_data_root
from pyro_seq.contrib.spatial import data as cluttered
from pyro_seq.contrib.spatial.data import CHUNK, CLUTTERED_VARIANTS, ClutterConfig, ClutteredBatches, ClutteredMNIST, generate_cluttered, load_cluttered_mnist

ROOT = shared_data_root()
needs_mnist = pytest.mark.skipif(not (ROOT / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(), reason="MNIST not under the data root")


def flat_pool(num=10):
    """Digits that are flat squares of value 20 * (k + 1), class k: their placement is readable from the pixels."""
    digits = np.stack([np.full((28, 28), 20 * (k + 1), np.uint8) for k in range(num)])
    return digits, np.arange(num)


def test_generator_is_deterministic_and_prefix_stable():
    digits, labels = flat_pool()
    config = CLUTTERED_VARIANTS["sequence3"]
    a = generate_cluttered(digits, labels, config, CHUNK + 200, seed=3, split_code=1)
    b = generate_cluttered(digits, labels, config, CHUNK + 200, seed=3, split_code=1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    prefix = generate_cluttered(digits, labels, config, CHUNK + 50, seed=3, split_code=1)  # across a chunk boundary
    for u, v in zip(a, prefix):
        np.testing.assert_array_equal(u[: CHUNK + 50], v)
    other_seed = generate_cluttered(digits, labels, config, 50, seed=4, split_code=1)
    other_split = generate_cluttered(digits, labels, config, 50, seed=3, split_code=2)
    assert not np.array_equal(a[0][:50], other_seed[0]) and not np.array_equal(a[0][:50], other_split[0])


def test_three_digits_left_to_right_at_their_boxes():
    digits, labels = flat_pool()
    config = dataclasses.replace(CLUTTERED_VARIANTS["sequence3"], num_clutter=0)
    images, y, boxes = generate_cluttered(digits, labels, config, 300, seed=0)
    assert images.dtype == np.uint8 and images.shape == (300, 100, 100) and y.shape == (300, 3) and boxes.shape == (300, 3, 2)
    cols, rows = boxes[..., 1], boxes[..., 0]
    assert (np.diff(cols, axis=1) == 28).all() and cols[:, 0].min() >= 0 and cols[:, 0].max() <= 15  # side by side, offset 0..15
    assert rows.min() >= 0 and rows.max() <= 72
    steps = np.diff(rows, axis=1)
    assert steps.min() >= -28 and steps.max() <= 26 and len(np.unique(steps)) > 10  # slopes -14..13, clamped into the canvas
    for i in range(300):
        ink = np.zeros((100, 100), bool)
        for t in range(3):
            r, c = boxes[i, t]
            assert (images[i, r : r + 28, c : c + 28] == 20 * (y[i, t] + 1)).all()  # digit t is label t
            ink[r : r + 28, c : c + 28] = True
        assert (images[i][~ink] == 0).all()  # nothing but the digits without clutter
    assert len(np.unique(y)) == 10


def test_clutter_adds_patches_and_clips():
    digits, labels = flat_pool()
    config = CLUTTERED_VARIANTS["sequence3"]
    images, y, boxes = generate_cluttered(digits, labels, config, 200, seed=0)
    plain, _, _ = generate_cluttered(digits, labels, dataclasses.replace(config, num_clutter=0), 200, seed=0)
    extra = images.astype(int) - plain
    assert (extra >= 0).all() and images.max() <= 255
    off_digit = (plain == 0) & (images > 0)
    per_image = off_digit.reshape(200, -1).sum(1)
    assert per_image.max() <= 8 * 81 and per_image.mean() > 81  # up to eight 9x9 patches outside the digits
    both = (plain > 0) & (extra > 0)
    assert (images[both] == np.minimum(plain[both] + extra[both], 255)).all()


@needs_mnist
def test_real_images_have_the_documented_statistics(tmp_path):
    data = load_cluttered_mnist("test", num_images=300, data_root=ROOT, cache_dir=tmp_path)
    x, y = data.tensors()
    assert x.dtype == torch.float32 and x.shape == (300, 1, 100, 100) and float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.shape == (300, 3) and int(y.min()) == 0 and int(y.max()) == 9
    ink_in_boxes = [float(x[i, 0, r : r + 28, c : c + 28].sum()) for i in range(300) for r, c in data.boxes[i]]
    assert min(ink_in_boxes) > 10  # every box holds a digit's ink
    assert 0.02 < float(x.mean()) < 0.08
    single = load_cluttered_mnist("train", "single40", num_images=50, data_root=ROOT, cache_dir=tmp_path)
    assert single.images.shape == (50, 40, 40) and single.labels.shape == (50, 1) and single.boxes[..., 1].max() <= 11


def fake_mnist(monkeypatch, calls):
    digits, labels = flat_pool()

    def load_mnist(split, data_root=None, download=True):
        calls.append(split)
        return digits, labels

    monkeypatch.setattr("pyro_seq.data.images.load_mnist", load_mnist)


def test_cache_is_used_checked_and_rebuilt(tmp_path, monkeypatch, caplog):
    calls = []
    fake_mnist(monkeypatch, calls)
    first = load_cluttered_mnist("valid", num_images=40, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    again = load_cluttered_mnist("valid", num_images=40, cache_dir=tmp_path)
    assert calls == ["valid"] and np.array_equal(first.images, again.images)
    path.write_bytes(path.read_bytes()[:100])  # a truncated cache: a warning and a rebuild
    rebuilt = load_cluttered_mnist("valid", num_images=40, cache_dir=tmp_path)
    assert calls == ["valid", "valid"] and np.array_equal(first.images, rebuilt.images) and "regenerating" in caplog.text
    np.savez(path, images=np.array([{"a": 1}], dtype=object), labels=first.labels, boxes=first.boxes, recipe=np.array("{}"))
    caplog.clear()
    load_cluttered_mnist("valid", num_images=40, cache_dir=tmp_path)  # a cache carrying a pickle is never unpickled
    assert len(calls) == 3 and "allow_pickle" in caplog.text
    calls.pop()
    monkeypatch.setattr(cluttered, "GENERATOR_VERSION", cluttered.GENERATOR_VERSION + 1)  # another recipe
    load_cluttered_mnist("valid", num_images=40, cache_dir=tmp_path)
    assert len(calls) == 3 and "another recipe" in caplog.text
    load_cluttered_mnist("valid", num_images=40, cache_dir=False)
    assert len(calls) == 4 and len(list(tmp_path.glob("*.npz"))) == 1 and not list(tmp_path.glob(".*part"))


def test_bad_requests_are_named(tmp_path):
    digits, labels = flat_pool()
    with pytest.raises(ValueError, match="unknown split"):
        load_cluttered_mnist("dev", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="variant"):
        load_cluttered_mnist("test", "sequence5", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="num_images"):
        load_cluttered_mnist("test", num_images=0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"uint8 \[M, 28, 28\]"):
        generate_cluttered(digits.astype(np.float32), labels, CLUTTERED_VARIANTS["sequence3"], 2)
    with pytest.raises(ValueError, match="digit_labels"):
        generate_cluttered(digits, labels[:3], CLUTTERED_VARIANTS["sequence3"], 2)
    with pytest.raises(ValueError, match="cannot hold 4 digits"):
        ClutterConfig(canvas=100, num_digits=4)


def test_batches_are_float_seeded_and_whole():
    digits, labels = flat_pool()
    images, y, boxes = generate_cluttered(digits, labels, CLUTTERED_VARIANTS["single40"], 23, seed=0)
    data = ClutteredMNIST(images, y, boxes, "single40", "train")
    batches = ClutteredBatches(data, 5, shuffle=True, seed=1, epoch=2)
    assert len(batches) == 5
    seen = [b for b in batches]
    assert sum(b.y.size(0) for b in seen) == 23 and seen[0].x.shape == (5, 1, 40, 40) and seen[0].frames == 5.0
    assert 0.0 <= float(min(b.x.min() for b in seen)) and float(max(b.x.max() for b in seen)) <= 1.0
    again = [b.y for b in ClutteredBatches(data, 5, shuffle=True, seed=1, epoch=2)]
    other = [b.y for b in ClutteredBatches(data, 5, shuffle=True, seed=1, epoch=3)]
    assert all(torch.equal(a.y, b) for a, b in zip(seen, again)) and not all(torch.equal(a.y, b) for a, b in zip(seen, other))
    assert len(ClutteredBatches(data, 5, limit=7)) == 2
