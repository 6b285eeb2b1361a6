# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Row-wise sequential binarized MNIST.

The fixed binarization of Salakhutdinov & Murray (2008) / Larochelle & Murray
(2011): 50,000 train, 10,000 valid and 10,000 test images of 28×28 pixels in
{0, 1}. As a sequence data set each image is read row by row: 28 time steps of
28 binary pixels, a float32 array ``[28, 28]`` (``x_dim = 28``).

Sources, in order (all under the data root, see
:func:`~pyro_seq.data.resolve_data_root`; every file is checked against its
sha256 in :data:`BINARIZED_MNIST_FILES` before anything parses it):

1. ``binarized_mnist/binarized_mnist.npz`` (keys ``train``, ``valid``,
   ``test``: uint8 arrays ``[N, 784]``), read with ``allow_pickle=False``;
2. else the original ``.amat`` text files of Larochelle
   (``binarized_mnist/binarized_mnist_{train,valid,test}.amat``, one image per
   line: 784 values ``0``/``1`` separated by single spaces), used if present
   and otherwise downloaded from
   ``http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/``.
   After parsing them, the three splits are cached as the ``.npz`` above
   (written deterministically, so the cache has the same sha256 as the
   published ``.npz``; if the local zlib compresses differently, no cache is
   written and the ``.amat`` files keep being used).

Note that the test split is ordered by class (all zeros first), so its first
``N`` images are not a random subset; the train and valid splits are shuffled.

Cite: H. Larochelle, I. Murray, "The Neural Autoregressive Distribution
Estimator", AISTATS 2011; R. Salakhutdinov, I. Murray, "On the quantitative
analysis of deep belief networks", ICML 2008.
"""

import hashlib
import io
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np

from .batching import SequenceDataset
from .download import (
    DataIntegrityError,
    DataUnavailableError,
    _umask_mode,
    fetch,
    resolve_data_root,
)

__all__ = [
    "BINARIZED_MNIST_FILES",
    "MNIST_SIZE",
    "MnistFile",
    "SequenceDataset",
    "load_binarized_mnist",
    "load_sequential_mnist",
]

logger = logging.getLogger(__name__)

#: Image side: 28 time steps of 28 pixels.
MNIST_SIZE = 28
_SPLITS = ("train", "valid", "test")
_PIXELS = MNIST_SIZE * MNIST_SIZE
#: Bytes per ``.amat`` line: 784 digits, 783 spaces, one newline.
_ROW_BYTES = 2 * _PIXELS
_AMAT_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/{}"


@dataclass(frozen=True)
class MnistFile:
    """
    A verified binarized-MNIST file.

    :ivar str relpath: path under the data root.
    :ivar int size: size in bytes (for ``.amat`` files, ``784 * 2`` bytes per image).
    :ivar str sha256: expected hex sha256.
    :ivar str url: download URL (``None`` for the ``.npz``).
    """

    relpath: str
    size: int
    sha256: str
    url: str = None


def _amat(split, size, sha256):
    name = f"binarized_mnist_{split}.amat"
    return MnistFile("binarized_mnist/" + name, size, sha256, _AMAT_URL.format(name))


#: The files of the data set: ``"npz"`` and one ``.amat`` per split. The number
#: of images of a split is ``size // 1568`` of its ``.amat`` entry. (A plain dict
#: so that tests can substitute small files.)
BINARIZED_MNIST_FILES = {
    "npz": MnistFile(
        "binarized_mnist/binarized_mnist.npz",
        2966930,
        "350243cb824d66d022e0c3e87cac231231668817ff03f5f6d7b6533017d56b4b",
    ),
    "train": _amat(
        "train", 78400000, "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"
    ),
    "valid": _amat(
        "valid", 15680000, "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"
    ),
    "test": _amat(
        "test", 15680000, "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"
    ),
}


def _num_images(split):
    return BINARIZED_MNIST_FILES[split].size // _ROW_BYTES


def _check_images(arr, split, where):
    """Check one split ``[N, 784]`` of 0/1 values; return it as uint8 ``[N, 28, 28]``."""
    expected = (_num_images(split), _PIXELS)
    if arr.shape != expected:
        raise DataIntegrityError(f"{where}: {split} has shape {arr.shape}, expected {expected}")
    if arr.dtype.kind not in "biu":
        raise DataIntegrityError(f"{where}: {split} has dtype {arr.dtype}, expected integers")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        bad = np.unique(arr[(arr < 0) | (arr > 1)])[:5]
        raise DataIntegrityError(
            f"{where}: {split} must hold binary (0/1) pixels, found values {bad.tolist()}"
        )
    return np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1, MNIST_SIZE, MNIST_SIZE)


def _read_npz(path):
    """Parse the (already verified) ``.npz``: ``{split: uint8 [N, 28, 28]}``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [s for s in _SPLITS if s not in z.files]
            if missing:
                raise DataIntegrityError(f"{path} has no array named {missing[0]!r}")
            raw = {s: z[s] for s in _SPLITS}  # [N, 784] each
    except DataIntegrityError:
        raise
    except Exception as e:
        raise DataIntegrityError(f"Could not read {path} as a .npz file: {e}") from e
    return {s: _check_images(raw[s], s, str(path)) for s in _SPLITS}


def _parse_amat(path, split):
    """
    Parse one (already verified) ``.amat`` file: one image per line, 784
    values ``0``/``1`` separated by single spaces, a newline at the end.

    :returns: uint8 ``[N, 28, 28]``.
    """
    data = np.fromfile(path, dtype=np.uint8)  # [N * 1568]
    if data.size % _ROW_BYTES:
        raise DataIntegrityError(
            f"{path}: {data.size} bytes is not a whole number of {_ROW_BYTES}-byte lines "
            "(784 space-separated 0/1 values and a newline)"
        )
    rows = data.reshape(-1, _ROW_BYTES)  # [N, 1568]
    seps = rows[:, 1::2]  # [N, 784]: 783 spaces and a newline
    expected = np.full(_PIXELS, ord(" "), np.uint8)
    expected[-1] = ord("\n")
    bad_rows = np.flatnonzero((seps != expected).any(axis=1))
    if bad_rows.size:
        raise DataIntegrityError(
            f"{path}: line {bad_rows[0] + 1} is not 784 values separated by single spaces "
            "and ended by a newline"
        )
    digits = rows[:, 0::2].astype(np.int16) - ord("0")  # [N, 784]
    bad_rows = np.flatnonzero(((digits != 0) & (digits != 1)).any(axis=1))
    if bad_rows.size:
        raise DataIntegrityError(f"{path}: line {bad_rows[0] + 1} has a value other than 0 or 1")
    return _check_images(digits.astype(np.uint8), split, str(path))


def _npz_bytes(images):
    """
    The cache file's bytes, written like :func:`numpy.savez_compressed` but with
    fixed zip metadata, so equal arrays give equal bytes.

    :param dict images: ``{split: uint8 [N, 28, 28]}``.
    :rtype: bytes
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for s in _SPLITS:
            info = zipfile.ZipInfo(s + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            flat = np.ascontiguousarray(images[s].reshape(-1, _PIXELS), dtype=np.uint8)
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, flat, allow_pickle=False)  # [N, 784]
    return buf.getvalue()


def _write_cache(path, images):
    """Write the ``.npz`` cache atomically if its bytes match the expected sha256."""
    expected = BINARIZED_MNIST_FILES["npz"].sha256
    payload = _npz_bytes(images)
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        logger.warning(
            "Not caching binarized MNIST as %s: the file written here would have sha256 %s, "
            "not the expected %s (a zlib that compresses differently?); the .amat files "
            "will be parsed again next time",
            path,
            actual,
            expected,
        )
        return False
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        logger.warning("Could not write the binarized MNIST cache %s (%s)", path, e)
        return False
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return True


def _load_all(data_root, download):
    npz = BINARIZED_MNIST_FILES["npz"]
    npz_path = resolve_data_root(data_root) / npz.relpath
    if npz_path.exists():
        # fetch() only verifies here (the file exists): a mismatch raises DataIntegrityError
        path = fetch(npz.relpath, npz.sha256, None, data_root=data_root, download=False)
        return _read_npz(path)
    paths = {}
    for s in _SPLITS:  # verify (or download) all three files before parsing any
        info = BINARIZED_MNIST_FILES[s]
        try:
            paths[s] = fetch(
                info.relpath, info.sha256, info.url, data_root=data_root, download=download
            )
        except DataUnavailableError as e:
            raise type(e)(
                f"{e}\nAlternatively, put the converted file {npz.relpath} "
                f"(sha256 {npz.sha256}) at {npz_path}."
            ) from e
    images = {}
    for s in _SPLITS:
        images[s] = _parse_amat(paths[s], s)
        logger.info("Parsed %s: %d images", paths[s], len(images[s]))
    _write_cache(npz_path, images)
    return images


def _check_split(split):
    if split is not None and split not in _SPLITS:
        raise ValueError(
            f"Unknown split {split!r}; valid splits are: {', '.join(_SPLITS)} (or None for all)"
        )


def load_binarized_mnist(split=None, data_root=None, download=True):
    """
    Load the fixed binarization of MNIST (50,000 / 10,000 / 10,000 images).

    :param str split: ``"train"``, ``"valid"``, ``"test"``, or ``None`` for all three.
    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`.
    :param bool download: whether missing ``.amat`` files may be downloaded
        (only when the ``.npz`` is absent).
    :returns: a uint8 array ``[N, 28, 28]`` of 0/1 pixels, or a dict
        ``{split: array}`` if ``split`` is ``None``.
    :raises ValueError: unknown split.
    :raises ~pyro_seq.data.DataUnavailableError: no source file and no download.
    :raises ~pyro_seq.data.DataIntegrityError: a file has the wrong checksum or contents.
    """
    _check_split(split)
    images = _load_all(data_root, download)
    return images if split is None else images[split]


def load_sequential_mnist(split=None, data_root=None, download=True, limit=None):
    """
    Binarized MNIST as sequences: each image is 28 time steps (its rows) of 28
    binary pixels.

    Example::

        train = load_sequential_mnist("train")
        batches = make_batches(train, batch_size=100, shuffle=True, seed=0, epoch=0)

    :param str split: ``"train"``, ``"valid"``, ``"test"``, or ``None`` for all three.
    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`.
    :param bool download: see :func:`load_binarized_mnist`.
    :param int limit: keep only the first ``limit`` images of each split.
    :returns: a :class:`SequenceDataset` of float32 arrays ``[28, 28]`` (name
        ``"mnist"``), or a dict ``{split: SequenceDataset}`` if ``split`` is ``None``.
    """
    _check_split(split)
    images = _load_all(data_root, download)

    def dataset(s):
        x = images[s][:limit].astype(np.float32)  # [N, 28, 28]
        return SequenceDataset("mnist", s, list(x))

    if split is not None:
        return dataset(split)
    return {s: dataset(s) for s in _SPLITS}
