# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Data sets and batching for :mod:`pyro_seq`.

* :func:`load_music` -- polyphonic music piano rolls (``jsb``, ``nottingham``,
  ``musedata``, ``piano`` from checksummed ``.mat`` files; ``chorales`` built
  offline from music21's corpus).
* :func:`make_batches` / :class:`SequenceBatch` -- length-grouped, padded,
  masked batches.
* :func:`fetch` / :func:`resolve_data_root` -- data root and verified downloads.
"""

from .batching import (
    BatchIterator,
    SequenceBatch,
    make_batches,
    pad_batch,
    padding_efficiency,
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
from .music import DATASETS, MIN_NOTE, NOTE_RANGE, SPLITS, DatasetInfo, MusicDataset, load_music

__all__ = [
    "BatchIterator",
    "DATASETS",
    "DataError",
    "DataIntegrityError",
    "DataUnavailableError",
    "DatasetInfo",
    "DownloadIntegrityError",
    "MIN_NOTE",
    "MusicDataset",
    "NOTE_RANGE",
    "SPLITS",
    "SequenceBatch",
    "fetch",
    "load_music",
    "make_batches",
    "pad_batch",
    "padding_efficiency",
    "resolve_data_root",
    "sha256sum",
    "validate_sequences",
]
