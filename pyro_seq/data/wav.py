# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Real-valued audio frames from a folder of WAV files.

This is the speech pipeline of VRNN (Chung et al., 2015), SRNN (Fraccaro et
al., 2016) and Z-Forcing (Goyal et al., 2017) on TIMIT and Blizzard: each
recording is a sequence of non-overlapping frames of ``frame_size`` raw
samples (200 by default), normalised with the mean and standard deviation of
the training samples.

Pipeline of :func:`load_wav_frames`:

* **Files.** Every ``*.wav`` (any case) under the folder, recursively, read
  with :func:`scipy.io.wavfile.read`: RIFF WAV with integer PCM (8, 16, 24, 32
  bit) or float samples. Integer samples are scaled to ``[-1, 1)``; a file
  with several channels is replaced by the mean of its channels. All files
  must have the same sample rate. (TIMIT's ``.WAV`` files are NIST SPHERE, not
  RIFF: convert them first, e.g. with ``sox``.)
* **Splits.** If the folder has sub-folders named ``train``, ``valid`` (or
  ``validation`` / ``dev``) and ``test`` (any case), the files under each one
  form that split (all three are then required; other files are ignored).
  Otherwise the files, sorted by relative path, are permuted with
  ``numpy.random.default_rng(seed)`` and cut into train/valid/test by
  ``fractions``; a split with a non-zero fraction gets at least one file. The
  split of a file depends only on the file names, the seed and the fractions.
* **Frames.** Each file becomes a float32 sequence ``[T, frame_size]`` with
  ``T = num_samples // frame_size``; the last ``num_samples % frame_size``
  samples are dropped. A file shorter than one frame is *skipped* with a
  logged warning and listed in :attr:`WavData.skipped`.
* **Normalisation.** ``mean`` and ``std`` (population standard deviation) are
  computed over all samples of all training frames; every split is normalised
  as ``(x - mean) / std`` with these training statistics.
* **Pieces.** With ``max_frames``, each sequence is cut into consecutive pieces
  of at most ``max_frames`` frames (in every split).

Models on these frames need a real-valued emission (``likelihood="gaussian"``
for SRNN).
"""

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .download import DataError, DataIntegrityError, DataUnavailableError
from .batching import SequenceDataset

__all__ = [
    "WavData",
    "WavStats",
    "find_wav_files",
    "load_wav_frames",
    "load_wav_frames_cached",
    "read_wav",
]

logger = logging.getLogger(__name__)

_SPLITS = ("train", "valid", "test")
_SPLIT_FOLDERS = {
    "train": ("train",),
    "valid": ("valid", "validation", "dev"),
    "test": ("test",),
}


@dataclass(frozen=True)
class WavStats:
    """
    Normalisation statistics, computed on the training frames.

    :ivar float mean: mean of the training samples (after scaling to ``[-1, 1)``).
    :ivar float std: their population standard deviation.
    :ivar int sample_rate: the common sample rate of the files, in Hz.
    :ivar int frame_size: samples per frame.
    :ivar int num_samples: number of training samples the statistics are computed from.
    """

    mean: float
    std: float
    sample_rate: int
    frame_size: int
    num_samples: int


@dataclass
class WavData:
    """
    The result of :func:`load_wav_frames`.

    :ivar dict splits: ``{split: SequenceDataset}`` of normalised float32 arrays
        ``[T_i, frame_size]`` (name ``"wav"``).
    :ivar WavStats stats: the training statistics used to normalise every split.
    :ivar dict files: ``{split: [relative path, ...]}``, the file of each
        sequence (repeated for each piece when ``max_frames`` is set).
    :ivar list skipped: relative paths of the files shorter than one frame.
    """

    splits: dict
    stats: WavStats
    files: dict
    skipped: list = field(default_factory=list)

    def __getitem__(self, split):
        return self.splits[split]

    @property
    def train(self):
        return self.splits["train"]

    @property
    def valid(self):
        return self.splits["valid"]

    @property
    def test(self):
        return self.splits["test"]


def _is_wav(path):
    return path.suffix.lower() == ".wav" and path.is_file()


def find_wav_files(folder):
    """
    The ``*.wav`` files (any case) under ``folder``, recursively, sorted by
    their path relative to ``folder``.

    :param folder: the folder.
    :rtype: list[pathlib.Path]
    :raises ~pyro_seq.data.DataUnavailableError: the folder does not exist.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataUnavailableError(f"WAV folder {folder} {what}")
    files = [p for p in folder.rglob("*") if _is_wav(p)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def read_wav(path):
    """
    Read one WAV file as mono float32 samples; integer PCM is scaled to ``[-1, 1)``.

    :param path: the file.
    :returns: ``(sample_rate, samples)``, samples a float32 array ``[num_samples]``.
    :raises ~pyro_seq.data.DataIntegrityError: the file is not a readable WAV file, or is cut
        short (its data chunk ends before the size its header gives).
    """
    import warnings

    from scipy.io import wavfile

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)  # unknown chunks are harmless
            rate, data = wavfile.read(str(path), mmap=False)
    except Exception as e:
        raise DataIntegrityError(
            f"{path} is not a valid WAV file ({type(e).__name__}: {e})"
        ) from e
    for warning in caught:
        if "EOF prematurely" in str(warning.message):  # scipy reads a cut file short, with a warning
            raise DataIntegrityError(f"{path} is truncated: {warning.message}")
    data = np.asarray(data)
    if data.ndim not in (1, 2):
        raise DataIntegrityError(f"{path}: unexpected sample array of shape {data.shape}")
    if data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype.kind == "i":
        x = data.astype(np.float32) / np.float32(2.0 ** (8 * data.dtype.itemsize - 1))
    elif data.dtype.kind == "f":
        x = data.astype(np.float32)
    else:
        raise DataIntegrityError(f"{path}: unsupported sample type {data.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float64).astype(np.float32)  # [samples, channels] -> [samples]
    if not np.isfinite(x).all():
        raise DataIntegrityError(f"{path}: contains NaN or infinite samples")
    return int(rate), x


def _check_fractions(fractions):
    try:
        fr = [float(f) for f in fractions]
    except TypeError as e:
        raise ValueError(f"fractions must be three numbers, got {fractions!r}") from e
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or fr[0] <= 0:
        raise ValueError(
            "fractions must be three non-negative numbers (train, valid, test) with a positive "
            f"train fraction, got {fractions!r}"
        )
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fr)})")
    return fr


def _split_folders(folder):
    """``{split: sub-folder}`` if the folder is split into sub-folders, else ``None``."""
    subdirs = {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir()}
    found = {}
    for split, names in _SPLIT_FOLDERS.items():
        for name in names:
            if name in subdirs:
                found[split] = subdirs[name]
                break
    if not found:
        return None
    missing = [s for s in _SPLITS if s not in found]
    if missing:
        have = ", ".join(f"{s}: {found[s].name}/" for s in _SPLITS if s in found)
        raise DataError(
            f"WAV folder {folder} is split into sub-folders ({have}) but has no "
            f"{' or '.join('/'.join(_SPLIT_FOLDERS[s]) for s in missing)} sub-folder; "
            "add the missing one(s), or move all files out of the split sub-folders to split "
            "them by fractions"
        )
    return found


def _assign_files(folder, fractions, seed):
    """``{split: [path, ...]}`` (each list sorted by relative path)."""
    by_folder = _split_folders(folder)
    if by_folder is not None:
        out = {}
        for s in _SPLITS:
            files = find_wav_files(by_folder[s])
            if not files:
                raise DataUnavailableError(f"No .wav files under {by_folder[s]} ({s} split)")
            out[s] = files
        return out
    files = find_wav_files(folder)
    if not files:
        raise DataUnavailableError(f"No .wav files under {folder}")
    n = len(files)
    counts = []
    for f in fractions[1:]:
        c = int(round(f * n))
        counts.append(max(c, 1) if f > 0 else 0)
    n_valid, n_test = counts
    n_train = n - n_valid - n_test
    if n_train < 1:
        raise DataError(
            f"WAV folder {folder} has {n} file(s), too few to split by fractions "
            f"{tuple(fractions)} with at least one file per non-empty split"
        )
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.split(perm, [n_train, n_train + n_valid])
    return {s: [files[i] for i in np.sort(idx)] for s, idx in zip(_SPLITS, parts)}


def load_wav_frames(folder, frame_size=200, fractions=(0.9, 0.05, 0.05), seed=0, max_frames=None):
    """
    Cut the WAV files under ``folder`` into normalised frames (see the module
    description for the details of each step).

    Example::

        data = load_wav_frames("~/data/timit_wav", frame_size=200)
        batches = make_batches(data.train, batch_size=64, shuffle=True, seed=0, epoch=0)
        signal = data.train[0] * data.stats.std + data.stats.mean  # [T, 200], unnormalised

    :param folder: a folder of ``.wav`` files (searched recursively).
    :param int frame_size: samples per frame.
    :param fractions: ``(train, valid, test)`` fractions of the files, used when
        the folder has no ``train``/``valid``/``test`` sub-folders.
    :param int seed: seed of the file permutation.
    :param int max_frames: cut sequences into pieces of at most this many frames.
    :rtype: WavData
    :raises ValueError: bad arguments.
    :raises ~pyro_seq.data.DataUnavailableError: missing folder or no ``.wav`` files.
    :raises ~pyro_seq.data.DataIntegrityError: a file is not a valid WAV file, or
        the sample rates differ.
    :raises ~pyro_seq.data.DataError: too few files or no training frames.
    """
    if isinstance(frame_size, bool) or not isinstance(frame_size, int) or frame_size < 1:
        raise ValueError(f"frame_size must be a positive integer, got {frame_size!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise ValueError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    fractions = _check_fractions(fractions)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        find_wav_files(folder)  # raises naming the folder
    assigned = _assign_files(folder, fractions, seed)

    rate_file = None  # (rate, path) of the first file read
    raw = {s: [] for s in _SPLITS}  # split -> [(relpath, float32 [T, frame_size])]
    skipped = []
    for s in _SPLITS:
        for path in assigned[s]:
            rel = path.relative_to(folder).as_posix()
            rate, x = read_wav(path)
            if rate_file is None:
                rate_file = (rate, path)
            elif rate != rate_file[0]:
                raise DataIntegrityError(
                    f"WAV files have different sample rates: {rate_file[1]} has "
                    f"{rate_file[0]} Hz, {path} has {rate} Hz; resample them to one rate"
                )
            num_frames = x.size // frame_size
            if num_frames == 0:
                logger.warning(
                    "Skipping %s: %d samples, shorter than one frame of %d",
                    path,
                    x.size,
                    frame_size,
                )
                skipped.append(rel)
                continue
            raw[s].append((rel, x[: num_frames * frame_size].reshape(num_frames, frame_size)))

    if not raw["train"]:
        raise DataError(
            f"No training frames: every training file under {folder} is shorter than "
            f"one frame of {frame_size} samples"
        )
    count = sum(f.size for _, f in raw["train"])
    mean = sum(float(f.sum(dtype=np.float64)) for _, f in raw["train"]) / count
    var = sum(float(np.square(f - mean, dtype=np.float64).sum()) for _, f in raw["train"]) / count
    std = math.sqrt(var)
    if not std > 0:
        raise DataError(
            f"The training samples under {folder} are constant ({mean}); cannot normalise"
        )
    stats = WavStats(
        mean=mean, std=std, sample_rate=rate_file[0], frame_size=frame_size, num_samples=count
    )

    splits, files = {}, {}
    for s in _SPLITS:
        seqs, names = [], []
        for rel, f in raw[s]:
            x = ((f - mean) / std).astype(np.float32)  # [T, frame_size]
            step = max_frames or len(x)
            for i in range(0, len(x), step):
                seqs.append(x[i : i + step])
                names.append(rel)
        splits[s] = SequenceDataset("wav", s, seqs)
        files[s] = names
    return WavData(splits=splits, stats=stats, files=files, skipped=skipped)


_CACHE = {}


def _fingerprint(folder):
    out = []
    for p in find_wav_files(folder):
        st = p.stat()
        out.append((p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


def load_wav_frames_cached(folder, **kwargs):
    """
    :func:`load_wav_frames`, remembering the last result: a second call with
    the same folder, arguments and unchanged files (names, sizes, modification
    times) returns the same :class:`WavData` without reading the files again.
    Used by :func:`~pyro_seq.data.load_sequences`, which is called once per split.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        find_wav_files(folder)  # raises naming the folder
    key = (os.fspath(folder.resolve()), repr(sorted(kwargs.items())), _fingerprint(folder))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load_wav_frames(folder, **kwargs)
    return _CACHE[key]
