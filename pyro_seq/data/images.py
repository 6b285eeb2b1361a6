# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
28×28 image data sets served as one-frame sequences.

Each image is a float32 array ``[1, 784]`` (the 28×28 pixels in row-major
order) inside an :class:`ImageDataset`, a :class:`~pyro_seq.data.SequenceDataset`,
so :func:`~pyro_seq.data.make_batches` gives
``SequenceBatch(x [B, 1, 784], mask [B, 1], lengths)`` and the sequence
trainer and bounds work unchanged. :func:`load_images` serves the names of
:data:`IMAGE_DATASETS`:

* ``"binarized_mnist"``: the fixed binarization of Larochelle & Murray
  (:func:`~pyro_seq.data.load_binarized_mnist`), 50,000 / 10,000 / 10,000
  images with values in {0, 1}. Its test split is ordered by class.
* ``"dynamic_mnist"``: grey-level MNIST (:func:`load_mnist`) scaled to
  [0, 1]. The train split keeps the grey levels and is binarized per batch
  during training (:func:`binarize_batches`); ``dataset.dynamic_binarization``
  is ``True`` for it. The valid and test splits are binarized **once** with a
  fixed seed, so evaluation is deterministic: ``x = (u < grey)`` with
  ``u = numpy.random.default_rng([seed, k]).random((N, 28, 28))``, where
  ``k = 1`` for ``"valid"``, ``k = 2`` for ``"test"`` and ``seed`` is the
  ``seed`` argument of :func:`load_images` (default 0). ``u`` is drawn for the
  whole split before ``limit`` is applied.
* ``"omniglot"``: the Omniglot subsets of :func:`load_omniglot`, treated like
  ``"dynamic_mnist"``.

**MNIST** (LeCun et al. 1998): the IDX ``.gz`` files under ``mnist/`` in the
data root (see :func:`~pyro_seq.data.resolve_data_root`), downloaded if
missing from ``https://ossci-datasets.s3.amazonaws.com/mnist/`` (the mirror
used by torchvision). Each file's sha256 must be one of the values in
:data:`MNIST_FILES` before it is parsed. Two values are accepted for
``train-images-idx3-ubyte.gz``: LeCun's original ``.gz`` (as listed by
TensorFlow Datasets' ``url_checksums/mnist.txt``; this is also what a download
is checked against) and the rebuilt, ``gzip -9 -n``-recompressed file of the
project's ``shared/data`` whose decompressed bytes are identical to the
original. Splits: ``"train"`` is the first 50,000 of the 60,000 training
images, ``"valid"`` the last 10,000 of them, ``"test"`` the 10,000 test images.

**Omniglot** (Lake, Salakhutdinov & Tenenbaum, Science 2015): the two
``images_background_small{1,2}.zip`` files of github.com/brendenlake/omniglot
(commit ``057f034b``) under ``omniglot/`` in the data root, verified by sha256
and read in memory (no extraction). Each 105×105 1-bit drawing is turned into
ink = 1.0 / background = 0.0 and down-sampled to 28×28 by area averaging
(PIL's ``Image.BOX`` filter on the float image, a box of 3.75×3.75 source
pixels per output pixel), keeping the grey levels.

The two zips hold 2,720 and 3,120 drawings. The alphabets ``Greek`` (24
characters) and ``Latin`` (26) are in both, with the same archive paths
(``<Alphabet>/characterNN/<id>_<drawer>.png``) and identical pixels: 1,000
duplicate drawings, which are kept once. That leaves **4,840 drawings of 242
characters in 8 alphabets**, 20 drawers per character.

Split protocol (by drawer within each character): the 20 drawers of a
character, sorted, are permuted by
``numpy.random.default_rng([OMNIGLOT_SPLIT_SEED, h]).permutation(20)``, where
``h`` is the first 8 bytes (little-endian) of the sha256 of the UTF-8 key
``"<Alphabet>/characterNN"``. The first 16 drawers of the permutation go to
``"train"``, the next 2 to ``"valid"`` and the last 2 to ``"test"``: **3,872 /
484 / 484 images**. Every character appears in every split and no drawing is
in two splits. Within a split the images are ordered by alphabet, character
and drawer (so the first ``limit`` images are not a random subset).

This is **not** the 28×28 ``chardata.mat`` split of Burda et al. (24,345
train / 8,070 test images of 50 alphabets) used by the IWAE and Ladder VAE
papers: the data, down-sampling and split differ, so numbers are not directly
comparable with those papers.

The processed Omniglot arrays (which depend only on the verified zip bytes)
are kept in memory for the life of the process; nothing is written to disk
(processing both zips takes about a second).
"""

import gzip
import hashlib
import io
import logging
import struct
import zipfile
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .batching import SequenceBatch, SequenceDataset
from .download import DataIntegrityError, fetch, resolve_data_root, sha256sum
from .mnist import load_binarized_mnist

__all__ = [
    "IMAGE_DATASETS",
    "IMAGE_SHAPE",
    "ImageDataset",
    "ImageFile",
    "MNIST_FILES",
    "OMNIGLOT_ALPHABETS",
    "OMNIGLOT_FILES",
    "OMNIGLOT_SPLIT_SEED",
    "OmniglotSplit",
    "binarize_batches",
    "load_images",
    "load_mnist",
    "load_omniglot",
]

logger = logging.getLogger(__name__)

#: Names accepted by :func:`load_images`.
IMAGE_DATASETS = ("binarized_mnist", "dynamic_mnist", "omniglot")
#: Height and width of every image.
IMAGE_SHAPE = (28, 28)
_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
_SPLITS = ("train", "valid", "test")
#: Second entry of the seed of the fixed binarization of the evaluation splits.
_EVAL_SPLIT_KEY = {"valid": 1, "test": 2}


@dataclass(frozen=True)
class ImageFile:
    """
    A verified image data file.

    :ivar str relpath: path under the data root.
    :ivar tuple sha256s: accepted hex sha256 values; the first is the one a
        download is checked against.
    :ivar str url: download URL.
    """

    relpath: str
    sha256s: tuple
    url: str


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/{}"


def _mnist_file(name, *sha256s):
    return ImageFile("mnist/" + name, tuple(sha256s), _MNIST_URL.format(name))


#: The MNIST IDX files. The first sha256 of each is LeCun's original ``.gz``
#: (TensorFlow Datasets, ``tensorflow_datasets/url_checksums/mnist.txt``); the
#: second one of ``train_images`` is the recompressed rebuild of ``shared/data``
#: (its ``SOURCES.md``, section 2a), with identical decompressed bytes.
MNIST_FILES = {
    "train_images": _mnist_file(
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    ),
    "train_labels": _mnist_file(
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "test_images": _mnist_file(
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "test_labels": _mnist_file(
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}
_MNIST_COUNTS = {"train": 60000, "test": 10000}
_MNIST_NUM_TRAIN = 50000

_OMNIGLOT_URL = (
    "https://raw.githubusercontent.com/brendenlake/omniglot/"
    "057f034baf2ecb8530bc5710e5a23584d2a519cc/python/{}"
)


def _omniglot_file(name, sha256):
    return ImageFile("omniglot/" + name, (sha256,), _OMNIGLOT_URL.format(name))


#: The two Omniglot zips (``shared/data/SOURCES.md``, section 3).
OMNIGLOT_FILES = (
    _omniglot_file(
        "images_background_small1.zip",
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    ),
    _omniglot_file(
        "images_background_small2.zip",
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
    ),
)
#: ``(alphabet, number of characters)`` of the de-duplicated union of the zips,
#: sorted by name; alphabet ids index this tuple.
OMNIGLOT_ALPHABETS = (
    ("Balinese", 24),
    ("Early_Aramaic", 22),
    ("Greek", 24),
    ("Japanese_(katakana)", 47),
    ("Korean", 40),
    ("Latin", 26),
    ("Sanskrit", 42),
    ("Tagalog", 17),
)
#: Seed of the drawer permutations of the Omniglot split (see the module docstring).
OMNIGLOT_SPLIT_SEED = 20150101
_OMNIGLOT_DRAWERS = 20
_OMNIGLOT_SPLIT_SIZES = (("train", 16), ("valid", 2), ("test", 2))
_OMNIGLOT_SIDE = 105


# ---------------------------------------------------------------------------
# verification


def fetch_verified(info, data_root, download):
    """
    Return the path of ``info.relpath`` under the data root after checking that
    its sha256 is one of ``info.sha256s``; a missing file is downloaded with
    :func:`~pyro_seq.data.fetch` and checked against ``info.sha256s[0]``.

    :raises DataIntegrityError: an existing file has another sha256.
    :raises DataUnavailableError: the file is missing and could not be downloaded.
    """
    target = resolve_data_root(data_root) / info.relpath
    if target.is_file() and len(info.sha256s) > 1:
        if sha256sum(target) in info.sha256s:
            return target.absolute()
        try:
            fetch(info.relpath, info.sha256s[0], info.url, data_root=data_root, download=False)
        except DataIntegrityError as e:
            others = "\n".join(f"  also accepted    {s}" for s in info.sha256s[1:])
            raise DataIntegrityError(
                f"{e}\nAccepted sha256 values besides the expected one:\n{others}"
            ) from e
    return fetch(info.relpath, info.sha256s[0], info.url, data_root=data_root, download=download)


def _check_split(split):
    if split not in _SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid splits are: {', '.join(_SPLITS)}")


# ---------------------------------------------------------------------------
# MNIST


def _read_idx(path, magic, expected_count, item_shape):
    """
    Parse one (already verified) gzipped IDX file.

    :param int magic: 2051 for images, 2049 for labels.
    :param int expected_count: number of items.
    :param tuple item_shape: ``(28, 28)`` for images, ``()`` for labels.
    :returns: uint8 array ``[expected_count, *item_shape]``.
    """
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataIntegrityError(f"Could not decompress {path}: {e}") from e
    header_len = 4 * (2 + len(item_shape))
    if len(data) < header_len:
        raise DataIntegrityError(f"{path}: {len(data)} bytes is too short for an IDX header")
    header = struct.unpack(f">{2 + len(item_shape)}I", data[:header_len])
    expected = (magic, expected_count) + tuple(item_shape)
    if header != expected:
        raise DataIntegrityError(
            f"{path}: IDX header (magic, count, dims) is {header}, expected {expected}"
        )
    n_bytes = expected_count * int(np.prod(item_shape, dtype=np.int64))
    if len(data) != header_len + n_bytes:
        raise DataIntegrityError(
            f"{path}: {len(data) - header_len} data bytes after the header, expected {n_bytes}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(
        (expected_count,) + tuple(item_shape)
    )


def _load_mnist_part(part, data_root, download):
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of ``part`` ("train" or "test")."""
    infos = (MNIST_FILES[part + "_images"], MNIST_FILES[part + "_labels"])
    paths = [fetch_verified(info, data_root, download) for info in infos]  # verify both first
    count = _MNIST_COUNTS[part]
    images = _read_idx(paths[0], 2051, count, IMAGE_SHAPE)
    labels = _read_idx(paths[1], 2049, count, ())
    if labels.max() > 9:
        raise DataIntegrityError(f"{paths[1]}: labels must be 0..9, found {int(labels.max())}")
    return images, labels.astype(np.int64)


def load_mnist(split, data_root=None, download=True):
    """
    Grey-level MNIST: ``"train"`` (the first 50,000 training images),
    ``"valid"`` (the last 10,000 training images) or ``"test"`` (10,000).

    Every ``.gz`` file is checked against :data:`MNIST_FILES` before it is
    parsed; missing files are downloaded (if ``download``) and checked first.

    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`; the files
        are under ``mnist/``.
    :param bool download: whether missing files may be downloaded.
    :returns: ``(images, labels)``: uint8 ``[N, 28, 28]`` (0 = background,
        255 = ink) and int64 ``[N]`` class labels 0..9.
    :raises ValueError: unknown split.
    :raises ~pyro_seq.data.DataUnavailableError: a file is missing and could not be downloaded.
    :raises ~pyro_seq.data.DataIntegrityError: a file has the wrong sha256 or a bad IDX header.
    """
    _check_split(split)
    if split == "test":
        return _load_mnist_part("test", data_root, download)
    images, labels = _load_mnist_part("train", data_root, download)
    part = slice(None, _MNIST_NUM_TRAIN) if split == "train" else slice(_MNIST_NUM_TRAIN, None)
    return images[part].copy(), labels[part].copy()


# ---------------------------------------------------------------------------
# Omniglot


class OmniglotSplit(NamedTuple):
    """
    One split of Omniglot.

    :ivar numpy.ndarray images: float32 ``[N, 28, 28]`` in [0, 1], ink = 1.
    :ivar numpy.ndarray alphabet_ids: int64 ``[N]``, indices into :data:`OMNIGLOT_ALPHABETS`.
    :ivar numpy.ndarray character_ids: int64 ``[N]`` in ``0..241``: the index of
        ``(alphabet, character)`` among all characters sorted by alphabet name,
        then ``characterNN`` (so alphabet ``a`` holds the ids following the
        characters of alphabets ``0..a-1``).
    :ivar numpy.ndarray drawer_ids: int64 ``[N]`` in ``1..20``, the drawer
        number of the file name ``<id>_<drawer>.png``.
    """

    images: np.ndarray
    alphabet_ids: np.ndarray
    character_ids: np.ndarray
    drawer_ids: np.ndarray


_OMNIGLOT_MEMO = {}


def _decode_drawing(zf, name, where):
    """One 105×105 1-bit PNG of the zip as a float32 28×28 ink image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(zf.read(name))) as im:
            im.load()
            if im.size != (_OMNIGLOT_SIDE, _OMNIGLOT_SIDE) or im.mode not in ("1", "L"):
                raise DataIntegrityError(
                    f"{where}: {name} is a {im.mode} image of size {im.size}, expected a "
                    f"105×105 1-bit image"
                )
            pixels = np.asarray(im.convert("L"), dtype=np.float32) / 255.0  # [105, 105]
    except DataIntegrityError:
        raise
    except Exception as e:
        raise DataIntegrityError(f"{where}: could not read {name} as a PNG: {e}") from e
    ink = 1.0 - pixels  # white background -> 0, black ink -> 1
    small = Image.fromarray(ink).resize(IMAGE_SHAPE[::-1], Image.BOX)  # area average
    return np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)


def _split_of_drawers(key):
    """``{drawer: split}`` for the character ``key`` ("<Alphabet>/characterNN")."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    perm = np.random.default_rng([OMNIGLOT_SPLIT_SEED, h]).permutation(_OMNIGLOT_DRAWERS)
    drawers = np.arange(1, _OMNIGLOT_DRAWERS + 1)[perm]
    out, start = {}, 0
    for split, size in _OMNIGLOT_SPLIT_SIZES:
        for d in drawers[start : start + size]:
            out[int(d)] = split
        start += size
    return out


def _process_omniglot(paths):
    """All de-duplicated drawings of the verified zips, with their ids and splits."""
    drawings = {}  # "<Alphabet>/characterNN/<file>.png" -> [28, 28]
    duplicates = 0
    for path in paths:
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise DataIntegrityError(f"Could not read {path} as a zip file: {e}") from e
        with zf:
            for name in sorted(zf.namelist()):
                if not name.endswith(".png"):
                    continue
                parts = name.split("/")
                if len(parts) != 4:
                    raise DataIntegrityError(
                        f"{path}: unexpected member {name}, expected "
                        "<set>/<Alphabet>/characterNN/<id>_<drawer>.png"
                    )
                key = "/".join(parts[1:])
                image = _decode_drawing(zf, name, path)
                if key in drawings:
                    if not np.array_equal(drawings[key], image):
                        raise DataIntegrityError(
                            f"{path}: {name} differs from the drawing with the same path in "
                            "the other zip"
                        )
                    duplicates += 1
                    continue
                drawings[key] = image
    alphabets = {}
    for key in drawings:
        alphabet, character, _ = key.split("/")
        alphabets.setdefault(alphabet, set()).add(character)
    found = tuple((a, len(alphabets[a])) for a in sorted(alphabets))
    if found != OMNIGLOT_ALPHABETS:
        raise DataIntegrityError(
            f"The Omniglot zips hold the alphabets {found}, expected {OMNIGLOT_ALPHABETS}"
        )
    alphabet_index = {a: i for i, (a, _) in enumerate(OMNIGLOT_ALPHABETS)}
    char_keys = sorted(
        {k.rsplit("/", 1)[0] for k in drawings}, key=lambda k: (alphabet_index[k.split("/")[0]], k)
    )
    char_index = {k: i for i, k in enumerate(char_keys)}
    split_maps = {k: _split_of_drawers(k) for k in char_keys}
    keys = sorted(drawings, key=lambda k: (char_index[k.rsplit("/", 1)[0]], k))
    result = {s: ([], [], [], []) for s in _SPLITS}
    for key in keys:
        char_key, fname = key.rsplit("/", 1)
        try:
            drawer = int(fname[: -len(".png")].split("_")[1])
        except (IndexError, ValueError):
            raise DataIntegrityError(f"Omniglot file name {key} is not <id>_<drawer>.png")
        split = split_maps[char_key].get(drawer)
        if split is None:
            raise DataIntegrityError(f"Omniglot drawing {key} has drawer {drawer}, not 1..20")
        lists = result[split]
        lists[0].append(drawings[key])
        lists[1].append(alphabet_index[char_key.split("/")[0]])
        lists[2].append(char_index[char_key])
        lists[3].append(drawer)
    out = {}
    for split, size in _OMNIGLOT_SPLIT_SIZES:
        images, alph, chars, drawers = result[split]
        if len(images) != size * len(char_keys):
            raise DataIntegrityError(
                f"Omniglot {split} split has {len(images)} drawings, expected "
                f"{size} drawers × {len(char_keys)} characters"
            )
        out[split] = OmniglotSplit(
            np.stack(images).astype(np.float32),
            np.array(alph, dtype=np.int64),
            np.array(chars, dtype=np.int64),
            np.array(drawers, dtype=np.int64),
        )
    logger.info(
        "Omniglot: %d drawings (%d duplicates between the zips dropped), %d characters",
        len(drawings),
        duplicates,
        len(char_keys),
    )
    return out


def load_omniglot(split, data_root=None, download=True):
    """
    One split of the Omniglot background subsets at 28×28 (see the module
    docstring for the processing, de-duplication and split protocol): 3,872
    train, 484 valid and 484 test images of 242 characters.

    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`; the zips
        are under ``omniglot/``.
    :param bool download: whether missing zips may be downloaded.
    :returns: an :class:`OmniglotSplit` ``(images, alphabet_ids, character_ids,
        drawer_ids)``; ``images`` is float32 ``[N, 28, 28]`` in [0, 1], ink = 1.
    :raises ValueError: unknown split.
    :raises ~pyro_seq.data.DataUnavailableError: a zip is missing and could not be downloaded.
    :raises ~pyro_seq.data.DataIntegrityError: a zip has the wrong sha256 or contents.
    """
    _check_split(split)
    # verify both zips on every call (cheap); the processed arrays only depend
    # on the verified bytes, so they are computed once per process
    paths = [fetch_verified(info, data_root, download) for info in OMNIGLOT_FILES]
    memo_key = tuple(info.sha256s[0] for info in OMNIGLOT_FILES)
    if memo_key not in _OMNIGLOT_MEMO:
        _OMNIGLOT_MEMO[memo_key] = _process_omniglot(paths)
    data = _OMNIGLOT_MEMO[memo_key][split]
    return OmniglotSplit(*(a.copy() for a in data))


# ---------------------------------------------------------------------------
# data sets of one-frame sequences


class ImageDataset(SequenceDataset):
    """
    One split of an image data set: a :class:`~pyro_seq.data.SequenceDataset`
    of float32 arrays ``[1, 784]`` (one frame per image, pixels in row-major order).

    :param str name: data set name (one of :data:`IMAGE_DATASETS`).
    :param str split: split name.
    :param list sequences: the ``[1, 784]`` arrays.
    :param bool dynamic_binarization: whether the pixels are grey levels in
        [0, 1] to be binarized per batch (:func:`binarize_batches`); by
        default ``True`` exactly for the ``"train"`` split of
        ``"dynamic_mnist"`` and ``"omniglot"``, so ``type(d)(d.name, d.split,
        d.sequences[:n])`` keeps it.
    :param labels: optional int64 array ``[N]`` (MNIST classes, Omniglot
        character ids), ``None`` if unknown.
    :ivar tuple image_shape: ``(28, 28)``.
    """

    image_shape = IMAGE_SHAPE

    def __init__(self, name, split, sequences, dynamic_binarization=None, labels=None):
        super().__init__(name, split, sequences)
        if dynamic_binarization is None:
            dynamic_binarization = name in ("dynamic_mnist", "omniglot") and split == "train"
        self.dynamic_binarization = bool(dynamic_binarization)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (len(self.sequences),):
                raise ValueError(
                    f"labels must have shape ({len(self.sequences)},), got {labels.shape}"
                )
        self.labels = labels


def _binarize_fixed(grey, split, seed):
    """The fixed binarization of an evaluation split: ``u < grey``, u ~ U(0, 1)."""
    u = np.random.default_rng([seed, _EVAL_SPLIT_KEY[split]]).random(grey.shape)
    return (u < grey).astype(np.float32)


def load_images(name, split, data_root=None, download=True, limit=None, seed=0):
    """
    One split of an image data set as one-frame sequences ``[1, 784]``.

    * ``"binarized_mnist"``: :func:`~pyro_seq.data.load_binarized_mnist`,
      values {0, 1}, no labels;
    * ``"dynamic_mnist"``: :func:`load_mnist` scaled to [0, 1]; grey levels for
      ``"train"`` (``dynamic_binarization = True``), binarized once for
      ``"valid"``/``"test"``; labels are the digit classes;
    * ``"omniglot"``: :func:`load_omniglot`, treated like ``"dynamic_mnist"``;
      labels are the character ids.

    The fixed binarization of the evaluation splits is described in the
    module docstring; it depends only on ``seed`` and the split.

    :param str name: one of :data:`IMAGE_DATASETS`.
    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`.
    :param bool download: whether missing files may be downloaded.
    :param int limit: keep only the first ``limit`` images (the binarized
        MNIST test split and the Omniglot splits are ordered, so these are not
        a random subset).
    :param int seed: seed of the fixed binarization of the ``"valid"`` and
        ``"test"`` splits of the grey data sets (ignored otherwise).
    :rtype: ImageDataset
    :raises ValueError: unknown name or split, bad ``limit``.
    :raises ~pyro_seq.data.DataError: the data cannot be loaded.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(
            f"Unknown image data set {name!r}; valid names are: {', '.join(IMAGE_DATASETS)}"
        )
    _check_split(split)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    labels = None
    if name == "binarized_mnist":
        x = load_binarized_mnist(split, data_root=data_root, download=download)
        x = x.astype(np.float32)  # [N, 28, 28] in {0, 1}
    else:
        if name == "dynamic_mnist":
            grey, labels = load_mnist(split, data_root=data_root, download=download)
            grey = grey.astype(np.float32) / np.float32(255.0)  # [N, 28, 28]
        else:
            data = load_omniglot(split, data_root=data_root, download=download)
            grey, labels = data.images, data.character_ids
        x = grey if split == "train" else _binarize_fixed(grey, split, int(seed))
    x = np.ascontiguousarray(x[:limit], dtype=np.float32).reshape(-1, 1, _PIXELS)  # [N, 1, 784]
    if labels is not None:
        labels = labels[:limit]
    return ImageDataset(name, split, list(x), labels=labels)


def _batch_seed(seed, epoch, index):
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0])


def binarize_batches(batches, seed, epoch):
    """
    Binarize grey-level batches stochastically, a new binarization each epoch.

    For the ``i``-th batch (counting from 0) this yields
    ``SequenceBatch(x_bin, mask, lengths)`` with
    ``x_bin = (torch.rand(x.shape, generator=g) < x).to(x.dtype)``, where ``g``
    is a CPU :class:`torch.Generator` seeded with
    ``numpy.random.SeedSequence([seed, epoch, i]).generate_state(1, numpy.uint64)[0]``.
    The result is a deterministic function of ``(seed, epoch, i)`` and of the
    batch; padded frames (zeros) stay zero. ``x_bin`` is on ``x``'s device.

    Example::

        for epoch in range(num_epochs):
            batches = make_batches(train, 100, shuffle=True, seed=0, epoch=epoch)
            if train.dynamic_binarization:
                batches = binarize_batches(batches, seed=0, epoch=epoch)
            for batch in batches:
                svi.step(batch.x, batch.mask)

    :param batches: an iterable of :class:`~pyro_seq.data.SequenceBatch` with
        ``x`` in [0, 1].
    :param int seed: non-negative seed.
    :param int epoch: non-negative epoch number.
    :returns: an iterable of :class:`~pyro_seq.data.SequenceBatch` (with a length
        when ``batches`` has one, for progress bars).
    """
    for value, what in ((seed, "seed"), (epoch, "epoch")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return _Binarized(batches, int(seed), int(epoch))


class _Binarized:
    def __init__(self, batches, seed, epoch):
        self.batches, self.seed, self.epoch = batches, seed, epoch

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            x = batch.x
            g = torch.Generator()
            g.manual_seed(_batch_seed(self.seed, self.epoch, i))
            u = torch.rand(x.shape, generator=g).to(device=x.device)
            yield SequenceBatch((u < x).to(x.dtype), batch.mask, batch.lengths)
