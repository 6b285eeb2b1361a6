# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
``chorales``: an offline Bach chorale data set built from music21's corpus.

This is *not* the Boulanger-Lewandowski JSB Chorales set (``"jsb"``); it is a
separate set that needs no download, built once from the Bach chorales bundled
with `music21 <https://web.mit.edu/music21/>`_ and cached in the user cache folder
(:func:`~pyro_seq.data.download.default_cache_dir`, ``$XDG_CACHE_HOME/pyro_seq`` or
``~/.cache/pyro_seq``) as ``chorales/chorales_v1_<checksum>.npz``, where the checksum is that of
the corpus files it is built from (:func:`source_checksum`), so a changed corpus (another music21)
is built afresh. The file is written with :func:`numpy.savez_compressed` and read with
``allow_pickle=False``. A data root is only read: a copy built before, placed at
``<data root>/chorales/chorales_v1.npz``, is used as it is, and nothing is ever written there.

Construction (version 1):

* **Pieces.** The ``.mxl``/``.xml`` files of music21's ``bach`` corpus, in
  order of their corpus path. Variants of the same movement (file names that
  differ only after a ``-``, e.g. ``bwv112.5`` / ``bwv112.5-sc``) are reduced to
  one file: the one without a suffix, else the shortest name, else the first
  by name. Pieces with fewer than four vocal parts (the keyboard prelude
  ``bwv846``) or that fail to parse are skipped and recorded in the metadata.
* **Voices.** Only the vocal parts (part names starting with Soprano, Alto,
  Tenor or Bass) are used; instrumental doublings and obbligato parts are
  dropped. Repeats are not expanded.
* **Grid.** Like the JSB data of Boulanger-Lewandowski et al., one frame per
  quarter note: frame ``k`` holds the MIDI pitches (21..108) sounding at offset
  ``phase + k`` quarter notes, where ``phase`` aligns the grid with the beat
  after an anacrusis. A note sounds on ``[onset, onset + duration)``; grace
  notes are ignored. Column ``j`` of each 88-dim 0/1 frame is pitch ``21 + j``.
  Keys are not transposed.
* **Split.** The candidate list (before parsing) is permuted with
  ``numpy.random.default_rng(0)`` and cut 70/15/15 into train/valid/test, so a
  piece's split does not depend on whether other pieces parse.

Counts with music21 10.5.1 (full build): 401 candidate files, 400 chorales kept
(1 skipped: ``bwv846.mxl``, a keyboard prelude, not a chorale);
train 280 chorales / 15,798 frames, valid 60 / 3,492, test 60 / 3,419;
lengths 24..229 frames; pitches 36..81 (MIDI); at most 5 notes per frame
(five-voice chorales); 410 / 161 / 28 silent frames (rests).
The cache file is about 76 kB. Build time on a shared 2-core machine: 20-35 s
with 2 worker processes (up to ~50 s under heavy load), about 40 s with one
(music21 parses about 0.1 s per piece); it happens once per corpus, and
reading the cache afterwards takes a fraction of a second (the corpus checksum included).
"""

import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from .download import DataIntegrityError, DataUnavailableError, atomic_savez, default_cache_dir, resolve_data_root

__all__ = [
    "CHORALES_RELPATH",
    "CHORALES_VERSION",
    "build_chorales",
    "chorales_cache_path",
    "chorale_files",
    "chorale_to_roll",
    "load_chorales",
    "read_chorales_npz",
    "source_checksum",
]

logger = logging.getLogger(__name__)

CHORALES_VERSION = 1
CHORALES_RELPATH = "chorales/chorales_v1.npz"

_SPLITS = ("train", "valid", "test")
_MIN_NOTE, _NOTE_RANGE = 21, 88
_VOICES = ("soprano", "alto", "tenor", "bass")
_EPS = 1e-6


def chorale_files(limit=None):
    """
    The corpus files used for the ``chorales`` set, one per movement, sorted by
    corpus path (see the module docstring for the de-duplication rule).

    :param int limit: keep only the first ``limit`` files (for quick tests).
    :returns: a list of absolute paths.
    :rtype: list[pathlib.Path]
    """
    from music21 import corpus

    paths = sorted(
        (Path(p) for p in corpus.getComposer("bach") if Path(p).suffix in (".mxl", ".xml")),
        key=lambda p: p.name,
    )
    groups = {}
    for p in paths:
        groups.setdefault(p.stem.split("-", 1)[0], []).append(p)
    chosen = [min(g, key=lambda p: ("-" in p.stem, len(p.stem), p.name)) for g in groups.values()]
    chosen.sort(key=lambda p: p.name)
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        chosen = chosen[: int(limit)]
    return chosen


def _corpus_folder():
    """music21's Bach corpus folder, found without importing music21 (slow); ``None`` without music21."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "corpus" / "bach"


def source_checksum():
    """
    The sha256 (hex) of what the set is built from: the construction version and the names and
    contents of the ``.mxl``/``.xml`` files of music21's Bach corpus (about 2 MB, read in a tenth of
    a second). ``None`` if music21 is not installed or its corpus has no such files.

    :rtype: str or None
    """
    folder = _corpus_folder()
    if folder is None or not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".mxl", ".xml") and p.is_file())
    if not files:
        return None
    h = hashlib.sha256(f"pyro_seq chorales v{CHORALES_VERSION}\n".encode())
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def chorales_cache_path(checksum=None, cache_dir=None):
    """
    Where the set built from a corpus with ``checksum`` (default :func:`source_checksum`) is
    cached: ``<cache_dir>/chorales/chorales_v1_<first 16 hex digits>.npz``, ``cache_dir``
    defaulting to :func:`~pyro_seq.data.download.default_cache_dir`.

    :raises DataUnavailableError: no checksum (music21 is not installed).
    """
    checksum = source_checksum() if checksum is None else checksum
    if checksum is None:
        raise DataUnavailableError(
            "the 'chorales' set is built from music21's corpus, and music21 is not installed (pip install music21)"
        )
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / "chorales" / f"chorales_v{CHORALES_VERSION}_{checksum[:16]}.npz"


def _is_vocal(part):
    name = part.partName or (part.id if isinstance(part.id, str) else "") or ""
    words = re.split(r"[\s,]+", name.strip().lower())
    return words[0] in _VOICES


def chorale_to_roll(score):
    """
    Quantise a parsed chorale to a quarter-note piano roll.

    :param score: a :class:`music21.stream.Score`.
    :returns: a uint8 array ``[T, 88]`` of 0/1 values.
    :rtype: numpy.ndarray
    :raises ValueError: if the score has fewer than four vocal parts or no notes.
    """
    parts = [p for p in score.parts if _is_vocal(p)]
    if len(parts) < 4:
        names = [p.partName for p in score.parts]
        raise ValueError(
            f"expected at least 4 vocal parts (Soprano/Alto/Tenor/Bass), found parts {names}"
        )
    measures = parts[0].getElementsByClass("Measure")
    pad = float(measures[0].paddingLeft) if len(measures) else 0.0
    phase = (-pad) % 1.0
    if phase > 1.0 - _EPS:
        phase = 0.0
    intervals = []  # (start, end, midi)
    for part in parts:
        for n in part.flatten().notes:
            ql = float(n.duration.quarterLength)
            if ql <= 0 or n.duration.isGrace:
                continue
            start = float(n.offset)
            for p in n.pitches:
                intervals.append((start, start + ql, int(p.midi)))
    if not intervals:
        raise ValueError("score has no notes")
    end = max(e for _, e, _ in intervals)
    num_frames = int(np.ceil(end - phase - _EPS))
    roll = np.zeros((num_frames, _NOTE_RANGE), dtype=np.uint8)  # [T, 88]
    for start, stop, midi in intervals:
        if not _MIN_NOTE <= midi < _MIN_NOTE + _NOTE_RANGE:
            continue
        k0 = max(0, int(np.ceil(start - phase - _EPS)))  # first grid point >= start
        k1 = min(num_frames, int(np.ceil(stop - phase - _EPS)))  # grid points < stop
        if k1 > k0:
            roll[k0:k1, midi - _MIN_NOTE] = 1
    return roll


def _convert_file(path):
    """Worker: parse one file (never via music21's pickle cache) -> (name, roll or None, error)."""
    name = Path(path).name
    try:
        from music21 import converter

        score = converter.parse(str(path), forceSource=True, storePickle=False)
        return name, chorale_to_roll(score), None
    except Exception as e:  # a broken piece is skipped, not fatal
        return name, None, f"{type(e).__name__}: {e}"


def _convert_all(paths, workers):
    # Workers are forked (Linux only): "spawn"/"forkserver" would re-import the
    # caller's __main__ script. The children only run music21, never torch.
    if workers > 1 and len(paths) > 1 and sys.platform.startswith("linux"):
        try:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            ctx = mp.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
                return list(ex.map(_convert_file, [str(p) for p in paths], chunksize=8))
        except Exception as e:  # e.g. BrokenProcessPool, no /dev/shm, restricted sandbox
            logger.warning("Parallel chorale build failed (%s); falling back to one process", e)
    return [_convert_file(p) for p in paths]


def _split_assignment(n, seed, fractions):
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    if n >= 3:  # keep every split non-empty
        n_train = min(max(n_train, 1), n - 2)
        n_valid = min(max(n_valid, 1), n - n_train - 1)
    assign = np.empty(n, dtype=np.int64)
    assign[perm[:n_train]] = 0
    assign[perm[n_train : n_train + n_valid]] = 1
    assign[perm[n_train + n_valid :]] = 2
    return assign


def _pack(data, meta):
    arrays = {
        "version": np.array(CHORALES_VERSION, dtype=np.int64),
        "meta": np.array(json.dumps(meta)),
    }
    for s in _SPLITS:
        seqs = data[s]
        arrays[f"{s}_lengths"] = np.array([len(x) for x in seqs], dtype=np.int64)  # [N]
        arrays[f"{s}_rolls"] = (
            np.concatenate(seqs, axis=0).astype(np.uint8)
            if seqs
            else np.zeros((0, _NOTE_RANGE), np.uint8)
        )  # [sum T, 88]
        arrays[f"{s}_names"] = np.array(meta["names"][s], dtype=str)
    return arrays


def build_chorales(
    path=None, data_root=None, limit=None, workers=None, seed=0, fractions=(0.70, 0.15, 0.15)
):
    """
    Build the ``chorales`` set from music21's corpus and write it atomically.

    :param path: output ``.npz``; default the cache file :func:`chorales_cache_path` (never a
        data root). ``False`` builds in memory only.
    :param data_root: unused (kept for compatibility: a data root is never written).
    :param int limit: use only the first ``limit`` corpus files (quick tests).
    :param int workers: worker processes (default ``min(2, cpu_count)``; 1 = serial).
    :param int seed: seed of the piece-level split.
    :param tuple fractions: train/valid/test fractions.
    :returns: ``(data, meta)`` where ``data = {split: [float32 [T_i, 88], ...]}``
        and ``meta`` is a JSON-able dict (names, skipped pieces, timings, counts).
    :rtype: tuple
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    t0 = time.perf_counter()
    import music21

    files = chorale_files(limit=limit)
    if not files:
        raise DataUnavailableError(
            "music21's corpus has no Bach chorale files; cannot build 'chorales'"
        )
    assign = _split_assignment(len(files), seed, fractions)
    results = _convert_all(files, int(workers))
    data = {s: [] for s in _SPLITS}
    names = {s: [] for s in _SPLITS}
    skipped = []
    for (name, roll, err), a in zip(results, assign):
        if roll is None:
            logger.warning("Skipping chorale %s: %s", name, err)
            skipped.append({"name": name, "reason": err})
            continue
        data[_SPLITS[a]].append(roll.astype(np.float32))
        names[_SPLITS[a]].append(name)
    if not any(data.values()):
        raise DataUnavailableError(f"No chorale could be converted; first errors: {skipped[:3]}")
    elapsed = time.perf_counter() - t0
    meta = {
        "version": CHORALES_VERSION,
        "music21_version": music21.__version__,
        "seed": seed,
        "fractions": list(fractions),
        "limit": limit,
        "grid": "quarter note",
        "num_candidates": len(files),
        "skipped": skipped,
        "names": names,
        "num_sequences": {s: len(data[s]) for s in _SPLITS},
        "num_frames": {s: int(sum(len(x) for x in data[s])) for s in _SPLITS},
        "build_seconds": round(elapsed, 2),
        "workers": int(workers),
    }
    logger.info("Built chorales in %.1f s: %s", elapsed, meta["num_sequences"])
    if path is not False:
        if path is None:
            path = chorales_cache_path()
        atomic_savez(path, _pack(data, meta))
    return data, meta


def read_chorales_npz(path):
    """
    Read a ``chorales`` cache file (no pickles).

    :returns: ``(data, meta)`` as in :func:`build_chorales`.
    :raises DataIntegrityError: if the file is unreadable or inconsistent.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"])
            if version != CHORALES_VERSION:
                raise DataIntegrityError(
                    f"{path} has chorales format version {version}, expected {CHORALES_VERSION}"
                )
            meta = json.loads(str(z["meta"]))
            data = {}
            for s in _SPLITS:
                lengths = z[f"{s}_lengths"]
                rolls = z[f"{s}_rolls"]
                if (
                    rolls.ndim != 2
                    or rolls.shape[1] != _NOTE_RANGE
                    or lengths.sum() != rolls.shape[0]
                ):
                    raise DataIntegrityError(f"{path}: inconsistent arrays for split {s!r}")
                if (lengths <= 0).any() or rolls.max(initial=0) > 1:
                    raise DataIntegrityError(
                        f"{path}: invalid lengths or non-binary values in split {s!r}"
                    )
                rolls = rolls.astype(np.float32)  # [sum T, 88]
                data[s] = [
                    np.ascontiguousarray(r) for r in np.split(rolls, np.cumsum(lengths)[:-1])
                ]
    except DataIntegrityError:
        raise
    except Exception as e:
        raise DataIntegrityError(
            f"Could not read the chorales cache {path} ({type(e).__name__}: {e}). "
            "It is a file that "
            "pyro_seq builds from music21's corpus: delete it to have it rebuilt."
        ) from e
    return data, meta


def _read_full_set(path):
    data, meta = read_chorales_npz(path)
    if meta.get("limit") is not None:
        raise DataIntegrityError(
            f"The chorales cache {path} was built from a subset of the corpus "
            f"(limit={meta['limit']}); delete it or load with rebuild=True "
            "to build the full set."
        )
    return data


def load_chorales(data_root=None, build=True, rebuild=False, workers=None, cache_dir=None):
    """
    Load the ``chorales`` set: a copy in the data root (``<data root>/chorales/chorales_v1.npz``)
    if there is one, else the cache built from the installed corpus (:func:`chorales_cache_path`),
    building it on first use. Nothing is written under the data root; if the cache folder is not
    writable, the set is built in memory and a warning is logged (it will be built again next
    time).

    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`.
    :param bool build: allow building from music21 if there is neither copy.
    :param bool rebuild: ignore both copies and build (into the cache).
    :param int workers: see :func:`build_chorales`.
    :param cache_dir: the cache folder (default :func:`~pyro_seq.data.download.default_cache_dir`).
    :returns: ``{split: [float32 array [T_i, 88], ...]}``
    :rtype: dict
    """
    root_copy = resolve_data_root(data_root) / CHORALES_RELPATH
    if root_copy.exists() and not rebuild:
        return _read_full_set(root_copy)
    checksum = source_checksum()
    if checksum is None:
        raise DataUnavailableError(
            f"The chorales set is not in the data root ({root_copy}) and music21, whose corpus it is built "
            "from, is not installed (pip install music21)."
        )
    path = chorales_cache_path(checksum, cache_dir)
    if path.exists() and not rebuild:
        return _read_full_set(path)
    if not build:
        raise DataUnavailableError(
            f"The chorales set is neither in the data root ({root_copy}) nor in the cache ({path}), and building "
            "it is disabled (download=False). Call pyro_seq.data.chorales.build_chorales() or load with download=True."
        )
    data, meta = build_chorales(path=False, workers=workers)
    try:
        atomic_savez(path, _pack(data, meta))
    except OSError as e:
        logger.warning(
            "Could not write the chorales cache to %s (%s); using an in-memory copy", path, e
        )
    return data


def _main():  # pragma: no cover - manual use: python -m pyro_seq.data.chorales [output.npz]
    logging.basicConfig(level=logging.INFO)
    out = sys.argv[1] if len(sys.argv) > 1 else None
    _, meta = build_chorales(path=out)
    lens = meta["num_sequences"], meta["num_frames"]
    print(
        json.dumps(
            {
                "num_sequences": lens[0],
                "num_frames": lens[1],
                "skipped": meta["skipped"],
                "build_seconds": meta["build_seconds"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":  # pragma: no cover
    _main()
