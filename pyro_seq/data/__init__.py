# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Data sets and batching for :mod:`pyro_seq`.

* :func:`load_music` -- polyphonic music piano rolls (``jsb``, ``nottingham``,
  ``musedata``, ``piano`` from checksummed ``.mat`` files; ``chorales`` built
  offline from music21's corpus).
* :func:`load_sequential_mnist` / :func:`load_binarized_mnist` -- row-wise
  sequential binarized MNIST (28 steps of 28 pixels).
* :func:`load_wav_frames` -- normalised frames of raw audio from a folder of WAV files.
* :func:`load_images` -- 28×28 images (``binarized_mnist``, ``dynamic_mnist``,
  ``omniglot``) as one-frame sequences ``[1, 784]``; :func:`load_mnist`,
  :func:`load_omniglot` for the raw arrays and :func:`binarize_batches` for
  per-batch binarization of grey-level training images.
* :func:`load_olivetti_faces` -- the 400 Olivetti faces (64×64, 40 people) scaled to
  [0, 1], with person ids and a split by person (:func:`olivetti_split`).
* :func:`load_image_split` / :func:`image_batches` -- an image set (``mnist``, ``faces``) as a
  ``[N, 1, H, W]`` tensor and its :class:`ImageBatch` mini-batches (VAE/GAN, the plain VAE).
* :func:`load_semi_supervised` -- semi-supervised image tasks (``digits``, offline, and
  ``dynamic_mnist``) with a seeded labelled subset, and :class:`SemiSupervisedBatches` of
  labelled and unlabelled mini-batches per step.
* :func:`load_sequences` -- one split of any of these by name (used by the command line).
* :func:`make_batches` / :class:`SequenceBatch` -- length-grouped, padded,
  masked batches.
* :func:`fetch` / :func:`resolve_data_root` -- data root and verified downloads.

The protein and cluttered-MNIST data layers live with their applications, in
:mod:`pyro_seq.contrib.protein.data` and :mod:`pyro_seq.contrib.spatial.data`.
"""

from .batching import (
    BatchIterator,
    SequenceBatch,
    make_batches,
    pad_batch,
    padding_efficiency,
    to_device,
    validate_sequences,
)
from .download import (
    DataError,
    DataIntegrityError,
    DataUnavailableError,
    DownloadIntegrityError,
    fetch,
    resolve_data_root,
    sha256sum,
)
from .batching import SequenceDataset
from .faces import OLIVETTI_FILE, load_olivetti_faces, olivetti_split
from .image_batches import ImageBatch, image_batches, load_image_split
from .images import (
    IMAGE_DATASETS,
    ImageDataset,
    binarize_batches,
    load_images,
    load_mnist,
    load_omniglot,
)
from .mnist import load_binarized_mnist, load_sequential_mnist
from .music import DATASETS, MIN_NOTE, NOTE_RANGE, SPLITS, DatasetInfo, MusicDataset, load_music
from .semisupervised import (
    SEMI_SUPERVISED_DATASETS,
    LabelledBatch,
    SemiSupervisedBatch,
    SemiSupervisedBatches,
    SemiSupervisedData,
    binarized_mnist_labels,
    choose_labelled,
    labelled_batches,
    load_digits,
    load_semi_supervised,
    match_to_grey,
)
from .wav import WavData, WavStats, load_wav_frames

__all__ = [
    "BatchIterator",
    "DATASETS",
    "DataError",
    "DataIntegrityError",
    "DataUnavailableError",
    "DatasetInfo",
    "DownloadIntegrityError",
    "IMAGE_DATASETS",
    "ImageBatch",
    "ImageDataset",
    "LabelledBatch",
    "MIN_NOTE",
    "MusicDataset",
    "NOTE_RANGE",
    "OLIVETTI_FILE",
    "SEMI_SUPERVISED_DATASETS",
    "SEQUENCE_DATASETS",
    "SPLITS",
    "SequenceBatch",
    "SemiSupervisedBatch",
    "SemiSupervisedBatches",
    "SemiSupervisedData",
    "SequenceDataset",
    "WavData",
    "WavStats",
    "binarize_batches",
    "binarized_mnist_labels",
    "choose_labelled",
    "fetch",
    "image_batches",
    "labelled_batches",
    "load_binarized_mnist",
    "load_digits",
    "load_image_split",
    "load_images",
    "load_mnist",
    "load_music",
    "load_olivetti_faces",
    "load_omniglot",
    "load_semi_supervised",
    "load_sequences",
    "load_sequential_mnist",
    "load_wav_frames",
    "make_batches",
    "match_to_grey",
    "olivetti_split",
    "pad_batch",
    "padding_efficiency",
    "to_device",
    "resolve_data_root",
    "sha256sum",
    "validate_sequences",
]

#: Names accepted by :func:`load_sequences`: the music sets of :data:`DATASETS`,
#: ``"mnist"``, ``"wav"`` and the image sets of :data:`IMAGE_DATASETS`.
SEQUENCE_DATASETS = tuple(DATASETS) + ("mnist", "wav") + tuple(IMAGE_DATASETS)


def load_sequences(name, split, data_root=None, download=True, limit=None):
    """
    One split of a sequence data set by name: the single entry point of the
    trainer and the command line.

    * music names (``"jsb"``, ``"nottingham"``, ``"musedata"``, ``"piano"``,
      ``"chorales"``): :func:`load_music`, sequences ``[T_i, 88]``;
    * ``"mnist"``: :func:`load_sequential_mnist`, sequences ``[28, 28]``;
    * ``"wav"``: :func:`load_wav_frames` on the folder ``data_root`` itself
      (required; default frame size 200 and fractions), sequences
      ``[T_i, 200]`` normalised with the training statistics. The folder is
      read once for all splits while its files do not change;
    * image names (``"binarized_mnist"``, ``"dynamic_mnist"``, ``"omniglot"``):
      :func:`load_images`, each image a one-frame sequence ``[1, 784]`` (its
      28×28 pixels in row-major order) in an :class:`ImageDataset`; grey-level
      training splits have ``dynamic_binarization = True`` and are meant to be
      binarized per batch with :func:`binarize_batches`.

    :param str name: one of :data:`SEQUENCE_DATASETS`.
    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    :param data_root: the data root (see :func:`resolve_data_root`); for
        ``"wav"``, the folder of WAV files.
    :param bool download: whether missing files may be downloaded (built, for ``"chorales"``).
    :param int limit: keep only the first ``limit`` sequences.
    :returns: a :class:`MusicDataset`, :class:`SequenceDataset` or
        :class:`ImageDataset` of float32 arrays ``[T_i, x_dim]``.
    :raises ValueError: unknown name or split.
    :raises DataError: the data cannot be loaded (see the loaders).
    """
    if name not in SEQUENCE_DATASETS:
        raise ValueError(
            f"Unknown data set {name!r}; valid names are: {', '.join(SEQUENCE_DATASETS)}"
        )
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid splits are: {', '.join(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if name in IMAGE_DATASETS:
        return load_images(name, split, data_root=data_root, download=download, limit=limit)
    if name == "mnist":
        return load_sequential_mnist(split, data_root=data_root, download=download, limit=limit)
    if name == "wav":
        from .wav import load_wav_frames_cached

        if data_root is None:
            raise DataUnavailableError(
                "The wav data set reads the folder of WAV files given as data_root "
                "(--data-root on the command line); none was given"
            )
        data = load_wav_frames_cached(data_root)[split]
    else:
        data = load_music(name, split, data_root=data_root, download=download)
    if limit is not None:
        data = type(data)(data.name, data.split, data.sequences[:limit])
    return data
