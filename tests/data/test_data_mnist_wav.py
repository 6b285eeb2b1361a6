import dataclasses
import hashlib
import json
import logging
import wave

import numpy as np
import pytest
import torch
from conftest import shared_data_root

import pyro_seq.data
from pyro_seq.cli import main
from pyro_seq.data import (
    DataError,
    DataIntegrityError,
    DataUnavailableError,
    load_binarized_mnist,
    load_sequences,
    load_sequential_mnist,
    load_wav_frames,
    make_batches,
)
from pyro_seq.data import download as download_module
from pyro_seq.data import mnist as mnist_module
from pyro_seq.data import wav as wav_module

MNIST_RELPATH = mnist_module.BINARIZED_MNIST_FILES["npz"].relpath
SHARED_NPZ = shared_data_root() / MNIST_RELPATH
needs_mnist = pytest.mark.skipif(
    not SHARED_NPZ.is_file(), reason=f"{MNIST_RELPATH} not found under {shared_data_root()}"
)
SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------------------------
# binarized MNIST
# --------------------------------------------------------------------------------------------


@needs_mnist
def test_binarized_mnist_shared():
    images = load_binarized_mnist(data_root=shared_data_root(), download=False)
    expected = {"train": (50000, 0.13056), "valid": (10000, 0.13113), "test": (10000, 0.13251)}
    for split, (n, mean) in expected.items():
        x = images[split]
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert set(np.unique(x).tolist()) == {0, 1}
        assert x.mean() == pytest.approx(mean, abs=5e-6)

    seqs = load_sequential_mnist("valid", data_root=shared_data_root(), limit=5)
    assert len(seqs) == 5 and seqs.x_dim == 28 and seqs.num_frames == 5 * 28
    for i, s in enumerate(seqs):
        assert s.dtype == np.float32 and s.shape == (28, 28)
        np.testing.assert_array_equal(s, images["valid"][i])  # row t is time step t
    batch = next(iter(make_batches(seqs, batch_size=5, shuffle=False)))
    assert batch.x.shape == (5, 28, 28) and bool(batch.mask.all())

    same = load_sequences("mnist", "valid", data_root=shared_data_root(), limit=5)
    assert len(same) == 5 and all(np.array_equal(a, b) for a, b in zip(same, seqs))


def _fake_images(seed=0, counts=(3, 2, 2)):
    rng = np.random.default_rng(seed)
    return {s: rng.integers(0, 2, size=(n, 28, 28), dtype=np.uint8) for s, n in zip(SPLITS, counts)}


def _amat_bytes(images):
    rows = images.reshape(len(images), 784)
    out = np.full((len(rows), 1568), ord(" "), np.uint8)
    out[:, 0::2] = rows + ord("0")
    out[:, -1] = ord("\n")
    return out.tobytes()


def _patch_files(monkeypatch, files, npz_sha256=None):
    """Point BINARIZED_MNIST_FILES at the given {split: amat bytes} (and npz hash)."""
    table = mnist_module.BINARIZED_MNIST_FILES
    for s, data in files.items():
        entry = dataclasses.replace(
            table[s], size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        monkeypatch.setitem(table, s, entry)
    if npz_sha256 is not None:
        monkeypatch.setitem(table, "npz", dataclasses.replace(table["npz"], sha256=npz_sha256))


def _write_amat(root, files):
    folder = root / "binarized_mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for s, data in files.items():
        (folder / f"binarized_mnist_{s}.amat").write_bytes(data)


def _no_parse(*args, **kwargs):
    raise AssertionError("parsed a file that should have been rejected or skipped")


def test_amat_parse_and_cache(tmp_path, monkeypatch):
    images = _fake_images()
    files = {s: _amat_bytes(images[s]) for s in SPLITS}
    cache_sha = hashlib.sha256(mnist_module._npz_bytes(images)).hexdigest()
    _patch_files(monkeypatch, files, npz_sha256=cache_sha)
    _write_amat(tmp_path, files)

    loaded = load_binarized_mnist(data_root=tmp_path, download=False)
    for s in SPLITS:
        assert loaded[s].dtype == np.uint8
        np.testing.assert_array_equal(loaded[s], images[s])
    cache = tmp_path / MNIST_RELPATH
    assert download_module.sha256sum(cache) == cache_sha
    assert not list(cache.parent.glob(".*.part"))

    # the next load reads the cache, not the .amat files
    monkeypatch.setattr(mnist_module, "_parse_amat", _no_parse)
    for s in SPLITS:
        (tmp_path / "binarized_mnist" / f"binarized_mnist_{s}.amat").unlink()
    seqs = load_sequential_mnist("train", data_root=tmp_path, download=False)
    assert len(seqs) == 3 and seqs[0].dtype == np.float32
    np.testing.assert_array_equal(np.stack(list(seqs)), images["train"])


def test_amat_cache_skipped_when_hash_differs(tmp_path, monkeypatch, caplog):
    images = _fake_images()
    files = {s: _amat_bytes(images[s]) for s in SPLITS}
    _patch_files(monkeypatch, files)  # the real npz hash: the fake cache cannot match it
    _write_amat(tmp_path, files)
    with caplog.at_level(logging.WARNING, logger="pyro_seq.data.mnist"):
        loaded = load_binarized_mnist("test", data_root=tmp_path, download=False)
    np.testing.assert_array_equal(loaded, images["test"])
    assert not (tmp_path / MNIST_RELPATH).exists()
    assert "Not caching" in caplog.text


def test_amat_wrong_hash_rejected_before_parsing(tmp_path, monkeypatch):
    images = _fake_images()
    files = {s: _amat_bytes(images[s]) for s in SPLITS}
    _patch_files(monkeypatch, files)
    flipped = bytearray(files["valid"])
    flipped[0] = ord("1") if flipped[0] == ord("0") else ord("0")  # still a valid .amat
    files["valid"] = bytes(flipped)
    _write_amat(tmp_path, files)
    monkeypatch.setattr(mnist_module, "_parse_amat", _no_parse)
    with pytest.raises(DataIntegrityError, match="Checksum mismatch") as e:
        load_binarized_mnist("train", data_root=tmp_path, download=False)
    assert "binarized_mnist_valid.amat" in str(e.value)
    assert not (tmp_path / MNIST_RELPATH).exists()


def test_amat_bad_contents(tmp_path, monkeypatch):
    images = _fake_images()
    files = {s: _amat_bytes(images[s]) for s in SPLITS}
    bad = bytearray(files["test"])
    bad[1568 + 10] = ord("2")  # line 2
    files["test"] = bytes(bad)
    _patch_files(monkeypatch, files)
    _write_amat(tmp_path, files)
    with pytest.raises(DataIntegrityError, match=r"binarized_mnist_test\.amat: line 2 .*0 or 1"):
        load_binarized_mnist(data_root=tmp_path, download=False)

    files["test"] = files["train"][: 2 * 1568].replace(b"0 ", b"0,", 1)
    _patch_files(monkeypatch, files)
    _write_amat(tmp_path, files)
    with pytest.raises(DataIntegrityError, match=r"binarized_mnist_test\.amat: line 1 .*spaces"):
        load_binarized_mnist(data_root=tmp_path, download=False)


def test_amat_download(tmp_path, monkeypatch):
    images = _fake_images(seed=1)
    files = {s: _amat_bytes(images[s]) for s in SPLITS}
    _patch_files(monkeypatch, files)
    served = tmp_path / "server"
    served.mkdir()
    for s, data in files.items():
        (served / f"binarized_mnist_{s}.amat").write_bytes(data)
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return open(served / url.rsplit("/", 1)[1], "rb")

    monkeypatch.setattr(download_module, "URLOPEN", fake_urlopen)
    root = tmp_path / "root"
    with pytest.raises(DataUnavailableError, match="download=False(.|\n)*binarized_mnist.npz"):
        load_binarized_mnist(data_root=root, download=False)
    assert urls == []

    loaded = load_binarized_mnist(data_root=root)
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == sorted(
        f"binarized_mnist_{s}.amat" for s in SPLITS
    )
    assert all(u.startswith("http://www.cs.toronto.edu/~larocheh/") for u in urls)
    for s in SPLITS:
        np.testing.assert_array_equal(loaded[s], images[s])
        assert (root / "binarized_mnist" / f"binarized_mnist_{s}.amat").read_bytes() == files[s]


def test_npz_corrupted_copy_rejected(tmp_path, monkeypatch):
    target = tmp_path / MNIST_RELPATH
    target.parent.mkdir(parents=True)
    if SHARED_NPZ.is_file():
        data = bytearray(SHARED_NPZ.read_bytes())
        data[len(data) // 2] ^= 0xFF
    else:
        data = b"not the npz"
    target.write_bytes(bytes(data))
    monkeypatch.setattr(mnist_module, "_parse_amat", _no_parse)
    monkeypatch.setattr(mnist_module, "_read_npz", _no_parse)
    with pytest.raises(DataIntegrityError) as e:
        load_binarized_mnist("train", data_root=tmp_path)
    msg = str(e.value)
    assert "Checksum mismatch" in msg and str(target) in msg
    assert mnist_module.BINARIZED_MNIST_FILES["npz"].sha256 in msg
    assert target.read_bytes() == bytes(data)  # left alone


def test_npz_wrong_shape(tmp_path, monkeypatch):
    images = _fake_images()
    files = {s: _amat_bytes(images[s]) for s in SPLITS}
    images["valid"] = images["valid"][:1]
    payload = mnist_module._npz_bytes(images)
    _patch_files(monkeypatch, files, npz_sha256=hashlib.sha256(payload).hexdigest())
    target = tmp_path / MNIST_RELPATH
    target.parent.mkdir(parents=True)
    target.write_bytes(payload)
    with pytest.raises(DataIntegrityError, match=r"binarized_mnist\.npz: valid has shape"):
        load_binarized_mnist(data_root=tmp_path, download=False)


@needs_mnist
@pytest.mark.slow
def test_amat_rebuilt_from_npz_matches_published_hashes(tmp_path):
    """The .amat path with the real hashes: rebuild the files, load, cache = the published npz."""
    with np.load(SHARED_NPZ, allow_pickle=False) as z:
        images = {s: z[s].reshape(-1, 28, 28) for s in SPLITS}
    _write_amat(tmp_path, {s: _amat_bytes(images[s]) for s in SPLITS})
    loaded = load_binarized_mnist(data_root=tmp_path, download=False)
    for s in SPLITS:
        np.testing.assert_array_equal(loaded[s], images[s])
    assert (tmp_path / MNIST_RELPATH).read_bytes() == SHARED_NPZ.read_bytes()


# --------------------------------------------------------------------------------------------
# WAV frames
# --------------------------------------------------------------------------------------------


def _write_wav(path, samples, rate=16000):
    """Write int16 samples ``[n]`` or ``[n, channels]`` with the stdlib wave module."""
    samples = np.asarray(samples, dtype=np.int16)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return samples


def _signal(n, seed, freq=440.0, rate=16000):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = 8000 * np.sin(2 * np.pi * freq * t) + rng.normal(0, 1000, n) + 500 * seed
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def test_wav_frames_subfolders(tmp_path):
    lengths = {"train": [1050, 640], "valid": [830], "test": [200, 1999]}
    written = {}
    for s, ns in lengths.items():
        for i, n in enumerate(ns):
            path = tmp_path / s.upper() / f"f{i}.wav"
            written[(s, i)] = _write_wav(path, _signal(n, len(written)))
    data = load_wav_frames(tmp_path, frame_size=200)

    # statistics over all framed training samples (remainders dropped), nothing else
    train = np.concatenate(
        [written[("train", i)][: n // 200 * 200] / 32768.0 for i, n in enumerate(lengths["train"])]
    )
    assert data.stats.num_samples == train.size == 5 * 200 + 3 * 200
    assert data.stats.mean == pytest.approx(train.mean(), rel=1e-6)
    assert data.stats.std == pytest.approx(train.std(), rel=1e-6)
    assert data.stats.sample_rate == 16000 and data.stats.frame_size == 200

    for s, ns in lengths.items():
        seqs = data[s]
        assert len(seqs) == len(ns) and seqs.x_dim == 200
        assert data.files[s] == [f"{s.upper()}/f{i}.wav" for i in range(len(ns))]
        for i, n in enumerate(ns):
            x = seqs[i]
            assert x.dtype == np.float32 and x.shape == (n // 200, 200)
            raw = written[(s, i)][: n // 200 * 200].reshape(-1, 200) / 32768.0
            np.testing.assert_allclose(x, (raw - data.stats.mean) / data.stats.std, atol=1e-5)
    normed = np.concatenate([np.asarray(x).ravel() for x in data.train])
    assert abs(normed.mean()) < 1e-5 and normed.std() == pytest.approx(1.0, abs=1e-5)


def test_wav_stereo_float_and_pieces(tmp_path):
    from scipy.io import wavfile

    left, right = _signal(1000, 1), _signal(1000, 2)
    _write_wav(tmp_path / "train" / "stereo.wav", np.stack([left, right], axis=1))
    float_sig = (np.sin(np.arange(700) / 5.0) * 0.3).astype(np.float32)
    (tmp_path / "valid").mkdir()
    wavfile.write(tmp_path / "valid" / "float.wav", 16000, float_sig)
    _write_wav(tmp_path / "test" / "a.WAV", _signal(450, 3))
    data = load_wav_frames(tmp_path, frame_size=100, max_frames=4)
    mono = (left.astype(np.float64) + right) / 2 / 32768.0
    assert data.stats.mean == pytest.approx(mono.mean(), rel=1e-5)
    assert [len(x) for x in data.train] == [4, 4, 2]  # 10 frames cut into pieces of <= 4
    assert data.files["train"] == ["train/stereo.wav"] * 3
    joined = np.concatenate(list(data.train)) * data.stats.std + data.stats.mean
    np.testing.assert_allclose(joined.ravel(), mono, atol=1e-5)
    valid = np.concatenate(list(data.valid)).ravel() * data.stats.std + data.stats.mean
    np.testing.assert_allclose(valid, float_sig, atol=1e-5)
    assert [len(x) for x in data.test] == [4]


def test_wav_fraction_split_deterministic(tmp_path):
    for i in range(20):
        _write_wav(tmp_path / f"spk{i % 3}" / f"u{i:02d}.wav", _signal(400 + 10 * i, i))
    a = load_wav_frames(tmp_path, fractions=(0.7, 0.15, 0.15), seed=3)
    b = load_wav_frames(tmp_path, fractions=(0.7, 0.15, 0.15), seed=3)
    c = load_wav_frames(tmp_path, fractions=(0.7, 0.15, 0.15), seed=4)
    assert a.files == b.files and a.files != c.files
    assert [len(a.files[s]) for s in SPLITS] == [14, 3, 3]
    names = [f for s in SPLITS for f in a.files[s]]
    on_disk = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav")]
    assert sorted(names) == sorted(on_disk)
    for s in SPLITS:
        assert a.files[s] == sorted(a.files[s])
        for x, y in zip(a[s], b[s]):
            np.testing.assert_array_equal(x, y)
    # stats from the training files only
    train = np.concatenate(
        [np.asarray(wav_module.read_wav(tmp_path / f)[1][:400]) for f in a.files["train"]]
    )
    assert a.stats.mean == pytest.approx(float(train.astype(np.float64).mean()), rel=1e-5)
    # with few files every non-empty split still gets one
    few = tmp_path / "few"
    for i in range(3):
        _write_wav(few / f"{i}.wav", _signal(400, i))
    assert [len(v) for v in load_wav_frames(few).files.values()] == [1, 1, 1]
    assert [len(v) for v in load_wav_frames(few, fractions=(1, 0, 0)).files.values()] == [3, 0, 0]


def test_wav_short_file_skipped(tmp_path, caplog):
    _write_wav(tmp_path / "train" / "long.wav", _signal(500, 0))
    _write_wav(tmp_path / "train" / "short.wav", _signal(150, 1))
    _write_wav(tmp_path / "valid" / "v.wav", _signal(400, 2))
    _write_wav(tmp_path / "test" / "t.wav", _signal(400, 3))
    with caplog.at_level(logging.WARNING, logger="pyro_seq.data.wav"):
        data = load_wav_frames(tmp_path)
    assert data.skipped == ["train/short.wav"] and "short.wav" in caplog.text
    assert data.files["train"] == ["train/long.wav"] and data.stats.num_samples == 400


def test_wav_errors(tmp_path):
    with pytest.raises(DataUnavailableError, match="does not exist"):
        load_wav_frames(tmp_path / "missing")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    with pytest.raises(DataUnavailableError, match="No .wav files under"):
        load_wav_frames(empty)

    bad = tmp_path / "bad"
    _write_wav(bad / "a.wav", _signal(400, 0))
    (bad / "b.wav").write_bytes(b"RIFF....not really a wave file")
    with pytest.raises(DataIntegrityError, match=r"b\.wav is not a valid WAV file"):
        load_wav_frames(bad, fractions=(1, 0, 0))

    rates = tmp_path / "rates"
    _write_wav(rates / "a.wav", _signal(400, 0), rate=16000)
    _write_wav(rates / "b.wav", _signal(400, 1), rate=8000)
    with pytest.raises(DataIntegrityError, match=r"a\.wav has 16000 Hz.*b\.wav has 8000 Hz"):
        load_wav_frames(rates, fractions=(1, 0, 0))

    short = tmp_path / "short"
    _write_wav(short / "a.wav", _signal(100, 0))
    with pytest.raises(DataError, match="No training frames"):
        load_wav_frames(short, fractions=(1, 0, 0))

    halves = tmp_path / "halves"
    _write_wav(halves / "TRAIN" / "a.wav", _signal(400, 0))
    _write_wav(halves / "TEST" / "b.wav", _signal(400, 1))
    with pytest.raises(DataError, match="no valid/validation/dev sub-folder"):
        load_wav_frames(halves)

    with pytest.raises(DataError, match="too few to split"):
        load_wav_frames(rates, fractions=(0.4, 0.3, 0.3))
    with pytest.raises(ValueError, match="sum to 1"):
        load_wav_frames(rates, fractions=(0.5, 0.3, 0.3))
    with pytest.raises(DataUnavailableError, match="--data-root"):
        load_sequences("wav", "train")


def test_wav_load_sequences_reads_once(tmp_path, monkeypatch):
    for s in SPLITS:
        _write_wav(tmp_path / s / "a.wav", _signal(600, len(s)))
    calls = []
    real = wav_module.load_wav_frames
    monkeypatch.setattr(
        wav_module, "load_wav_frames", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    monkeypatch.setattr(wav_module, "_CACHE", {})
    train = load_sequences("wav", "train", data_root=tmp_path)
    valid = load_sequences("wav", "valid", data_root=tmp_path, limit=1)
    assert len(calls) == 1 and train.x_dim == 200 and len(valid) == 1
    _write_wav(tmp_path / "train" / "b.wav", _signal(600, 9))  # a changed folder is re-read
    assert len(load_sequences("wav", "train", data_root=tmp_path)) == 2 and len(calls) == 2


def test_load_sequences_names():
    with pytest.raises(ValueError, match="valid names are: .*mnist, wav"):
        load_sequences("timit", "train")
    with pytest.raises(ValueError, match="Unknown split"):
        load_sequences("mnist", "dev")
    assert {"mnist", "wav", "jsb"} <= set(pyro_seq.data.SEQUENCE_DATASETS)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

TINY_SRNN = [
    "--d-dim", "8", "--z-dim", "4", "--a-dim", "8", "--hidden-dim", "16", "--eval-samples", "2",
    "--device", "cpu", "--no-progress",
]  # fmt: skip


@needs_mnist
def test_cli_train_mnist(tmp_path):
    out = tmp_path / "run"
    argv = [
        "train", "srnn", "--data", "mnist", "--data-root", str(shared_data_root()),
        "--max-train-sequences", "32", "--max-eval-sequences", "16", "--epochs", "1",
        *TINY_SRNN, "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["x_dim"] == 28 and config["data"]["name"] == "mnist"
    test = json.loads((out / "test.json").read_text())
    assert test["num_sequences"] == 16 and test["num_frames"] == 16 * 28
    assert np.isfinite(test["iwae"]["nats_per_frame_total"])
    assert test["iwae"]["nats_per_sequence"] == pytest.approx(28 * test["iwae"]["nats_per_frame_total"])
    # samples are images drawn row by row, not piano rolls
    assert main(["sample", str(out / "best.pt"), "--num", "3", "--steps", "28", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    assert (tmp_path / "s" / "samples.png").stat().st_size > 0
    assert np.load(tmp_path / "s" / "samples.npy").shape == (3, 28, 28)
    assert not list((tmp_path / "s").glob("*.mid"))


def test_cli_train_wav(tmp_path):
    folder = tmp_path / "wavs"
    for s, n in (("train", 3), ("valid", 1), ("test", 1)):
        for i in range(n):
            _write_wav(folder / s / f"{i}.wav", _signal(1000 + 100 * i, i))
    out = tmp_path / "run"
    argv = [
        "train", "srnn", "--data", "wav", "--data-root", str(folder), "--likelihood", "gaussian",
        "--epochs", "1", *TINY_SRNN, "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["x_dim"] == 200
    test = json.loads((out / "test.json").read_text())
    assert test["num_frames"] == 5 and torch.isfinite(
        torch.tensor(test["elbo"]["nats_per_frame_total"])
    )
    assert main(["sample", str(out / "best.pt"), "--num", "2", "--steps", "4", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    assert (tmp_path / "s" / "sample_001.png").exists() and np.load(tmp_path / "s" / "samples.npy").shape == (2, 4, 200)
