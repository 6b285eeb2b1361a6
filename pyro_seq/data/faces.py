# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
The Olivetti faces (AT&T Laboratories Cambridge "ORL Database of Faces"):
400 grey 64×64 images, ten each of 40 people.

**File**: Sam Roweis' ``olivettifaces.mat`` (the file scikit-learn's
``fetch_olivetti_faces`` reads), as saved again in 2013 in
github.com/sjgershm/DBM (commit ``a30d9abb``), at ``faces/olivettifaces.mat``
under the data root (see :func:`~pyro_seq.data.resolve_data_root`; the
project's ``shared/data/SOURCES.md``, section 6). It is downloaded if missing
and allowed, and its sha256 (:data:`OLIVETTI_FILE`) is checked **before** it
is parsed with :func:`scipy.io.loadmat`. Its sha256 differs from the copy
scikit-learn pins, but the pixels are the same.

**Layout**: one variable ``faces``, a uint8 array ``[4096, 400]`` (values
0..242). Column ``i`` is image ``i``, its 64×64 pixels stored column-major, so
``faces.T.reshape(400, 64, 64).transpose(0, 2, 1)`` gives upright images
(row 0 at the top), as in scikit-learn. The images are ordered by person,
ten consecutive images per person, so the person id of image ``i`` is
``i // 10``.

**Scaling**: as in scikit-learn, ``x = faces - faces.min()`` then
``x /= x.max()`` in float32, over the whole array of 400 images (also when
only one split is returned, so the splits share one scale). The mean pixel
is then 0.54704.

**Split protocol** (by person, so held-out faces are of unseen people):
people 0..31 are ``"train"`` (320 images), 32..35 ``"valid"`` (40) and
36..39 ``"test"`` (40); see :func:`olivetti_split`. Within a split the images
keep the file order (by person, then image number).

Nothing is written to the data root except a verified download.
"""

import numpy as np

from .download import DataIntegrityError
from .images import ImageFile, fetch_verified

__all__ = [
    "OLIVETTI_FILE",
    "OLIVETTI_IMAGE_SHAPE",
    "OLIVETTI_NUM_PEOPLE",
    "OLIVETTI_SPLITS",
    "OLIVETTI_TEST_PEOPLE",
    "OLIVETTI_VALID_PEOPLE",
    "load_olivetti_faces",
    "olivetti_split",
]

#: The Olivetti faces ``.mat`` file (``shared/data/SOURCES.md``, section 6).
OLIVETTI_FILE = ImageFile(
    "faces/olivettifaces.mat",
    ("b1988d02c72fe5b8ee82b5ef3bb7982eafc74f1e1ff0ae0ade35061ad0af534d",),
    "https://raw.githubusercontent.com/sjgershm/DBM/"
    "a30d9abb523aab874a299b8b1aa21e7df2023f60/olivettifaces.mat",
)
#: Height and width of every face image.
OLIVETTI_IMAGE_SHAPE = (64, 64)
#: Number of people; each has ten consecutive images in the file.
OLIVETTI_NUM_PEOPLE = 40
_IMAGES_PER_PERSON = 10
_NUM_IMAGES = OLIVETTI_NUM_PEOPLE * _IMAGES_PER_PERSON
_PIXELS = OLIVETTI_IMAGE_SHAPE[0] * OLIVETTI_IMAGE_SHAPE[1]
_MAT_VARIABLE = "faces"
#: Split names accepted by :func:`load_olivetti_faces` (or ``None`` for all images).
OLIVETTI_SPLITS = ("train", "valid", "test")
#: People of the ``"valid"`` split; the ``"train"`` split is everyone else
#: outside :data:`OLIVETTI_TEST_PEOPLE`.
OLIVETTI_VALID_PEOPLE = (32, 33, 34, 35)
#: People of the ``"test"`` split.
OLIVETTI_TEST_PEOPLE = (36, 37, 38, 39)


def _read_olivetti_mat(path):
    """
    Parse an (already verified) Olivetti ``.mat`` file.

    :param path: the ``.mat`` file.
    :returns: the uint8 array ``faces`` ``[4096, 400]``.
    :raises DataIntegrityError: the file cannot be read as a MATLAB file, or
        the variable ``faces`` is missing or has the wrong shape or dtype.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), variable_names=[_MAT_VARIABLE])
    except Exception as e:
        raise DataIntegrityError(f"Could not read {path} as a MATLAB file: {e}") from e
    if _MAT_VARIABLE not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataIntegrityError(
            f"{path} has no variable {_MAT_VARIABLE!r} (variables: {', '.join(found) or 'none'})"
        )
    faces = np.asarray(mat[_MAT_VARIABLE])
    expected = (_PIXELS, _NUM_IMAGES)
    if faces.shape != expected:
        raise DataIntegrityError(
            f"{path}: variable {_MAT_VARIABLE!r} has shape {faces.shape}, expected {expected}"
        )
    if faces.dtype != np.uint8:
        raise DataIntegrityError(
            f"{path}: variable {_MAT_VARIABLE!r} has dtype {faces.dtype}, expected uint8"
        )
    return faces


def _faces_to_images(faces, path):
    """
    The min-max scaled, upright float32 images ``[400, 64, 64]`` of the uint8
    ``faces`` array ``[4096, 400]`` (column-major images in the columns).
    """
    images = faces.T.reshape((_NUM_IMAGES,) + OLIVETTI_IMAGE_SHAPE).transpose(0, 2, 1)
    images = np.ascontiguousarray(images, dtype=np.float32)
    images -= images.min()
    top = images.max()
    if top <= 0:
        raise DataIntegrityError(f"{path}: all pixels of {_MAT_VARIABLE!r} are equal")
    images /= top
    return images


def _check_people(people, what):
    arr = np.asarray(people)
    if arr.ndim > 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{what} must be a sequence of integer person ids, got {people!r}")
    ids = arr.astype(np.int64).ravel()
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{what} has repeated person ids: {people!r}")
    return ids


def olivetti_split(person, valid_people=OLIVETTI_VALID_PEOPLE, test_people=OLIVETTI_TEST_PEOPLE):
    """
    Split images by person, so the held-out images are of people not seen in
    training. By default people 0..31 are ``"train"`` (320 images), 32..35
    ``"valid"`` (40) and 36..39 ``"test"`` (40); the split is deterministic
    (no randomness) and keeps the order of ``person``.

    Example::

        images, person = load_olivetti_faces()
        idx = olivetti_split(person)
        train, test = images[idx["train"]], images[idx["test"]]

    :param person: int person ids ``[N]`` (as returned by :func:`load_olivetti_faces`).
    :param valid_people: person ids of the ``"valid"`` split.
    :param test_people: person ids of the ``"test"`` split.
    :returns: ``{"train": idx, "valid": idx, "test": idx}``, sorted int64 index
        arrays into ``person``; every image is in exactly one split, and
        ``"train"`` holds the images of all other people.
    :rtype: dict
    :raises ValueError: ``person`` is not 1-D, or the valid and test people overlap.
    """
    person = np.asarray(person)
    if person.ndim != 1 or (person.size and not np.issubdtype(person.dtype, np.integer)):
        raise ValueError(
            f"person must be a 1-D array of integer ids, got a {person.dtype} array of "
            f"shape {person.shape}"
        )
    valid = _check_people(valid_people, "valid_people")
    test = _check_people(test_people, "test_people")
    both = np.intersect1d(valid, test)
    if both.size:
        raise ValueError(f"valid_people and test_people overlap: {both.tolist()}")
    in_valid = np.isin(person, valid)
    in_test = np.isin(person, test)
    return {
        "train": np.flatnonzero(~(in_valid | in_test)).astype(np.int64),
        "valid": np.flatnonzero(in_valid).astype(np.int64),
        "test": np.flatnonzero(in_test).astype(np.int64),
    }


def load_olivetti_faces(data_root=None, download=True, *, split=None):
    """
    The Olivetti faces (see the module docstring for the file, orientation,
    scaling and split protocol).

    The file's sha256 is checked against :data:`OLIVETTI_FILE` before it is
    parsed; a missing file is downloaded (if ``download``) and checked first.

    Example::

        images, person = load_olivetti_faces(split="train")  # [320, 64, 64], [320]

    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`; the file
        is ``faces/olivettifaces.mat`` under it.
    :param bool download: whether a missing file may be downloaded.
    :param str split: ``"train"`` (people 0..31, 320 images), ``"valid"``
        (32..35, 40 images), ``"test"`` (36..39, 40 images), or ``None`` for
        all 400 images.
    :returns: ``(images, person)``: float32 ``[N, 64, 64]`` upright images in
        [0, 1] (min-max scaled over all 400 images) and int64 ``[N]`` person
        ids 0..39, in file order.
    :raises ValueError: unknown split.
    :raises ~pyro_seq.data.DataUnavailableError: the file is missing and could not be downloaded.
    :raises ~pyro_seq.data.DataIntegrityError: the file has the wrong sha256 or contents.
    """
    if split is not None and split not in OLIVETTI_SPLITS:
        raise ValueError(
            f"Unknown split {split!r}; valid splits are: {', '.join(OLIVETTI_SPLITS)} "
            "(or None for all images)"
        )
    path = fetch_verified(OLIVETTI_FILE, data_root, download)  # verified before parsing
    images = _faces_to_images(_read_olivetti_mat(path), path)
    person = np.repeat(np.arange(OLIVETTI_NUM_PEOPLE, dtype=np.int64), _IMAGES_PER_PERSON)
    if split is None:
        return images, person
    idx = olivetti_split(person)[split]
    return images[idx], person[idx]
