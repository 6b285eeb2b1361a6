# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Padding variable-length sequences into batches.

A :class:`SequenceBatch` holds zero-padded inputs ``x`` ``[batch, time, x_dim]``,
a boolean ``mask`` ``[batch, time]`` that is ``True`` on real frames (a prefix
of each row) and the ``lengths`` ``[batch]``. Models and guides are called as
``model(batch.x, batch.mask)``.

:func:`make_batches` groups sequences of similar length so padding stays small,
and is deterministic given ``(seed, epoch)``::

    for epoch in range(num_epochs):
        for batch in make_batches(train, batch_size=20, shuffle=True, seed=0, epoch=epoch):
            svi.step(batch.x, batch.mask)
"""

import math
from typing import NamedTuple

import numpy as np
import torch

from pyro_seq.util import check_int as _check_int

__all__ = [
    "BatchIterator",
    "SequenceBatch",
    "make_batches",
    "pad_batch",
    "padding_efficiency",
    "to_device",
    "validate_sequences",
]


class SequenceBatch(NamedTuple):
    """
    A padded batch of sequences.

    :ivar torch.Tensor x: float ``[batch, time, x_dim]``, zero after each sequence's end.
    :ivar torch.Tensor mask: bool ``[batch, time]``, ``True`` on real frames.
    :ivar torch.Tensor lengths: long ``[batch]``.
    """

    x: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor

    def to(self, device, non_blocking=False):
        """
        Move all three tensors to ``device``.

        :rtype: SequenceBatch
        """
        return SequenceBatch(
            self.x.to(device, non_blocking=non_blocking),
            self.mask.to(device, non_blocking=non_blocking),
            self.lengths.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self):
        """The batch in page-locked host memory (for asynchronous copies to a GPU)."""
        return SequenceBatch(self.x.pin_memory(), self.mask.pin_memory(), self.lengths.pin_memory())

    @property
    def batch_size(self):
        return self.x.size(0)

    @property
    def num_frames(self):
        """Number of real (unpadded) frames."""
        return int(self.lengths.sum())


def to_device(batch, device):
    """
    Move a batch (anything with ``.to(device, non_blocking=...)``) to ``device``: on a GPU it is
    first pinned (``batch.pin_memory()`` where the batch has one) and copied with
    ``non_blocking=True``, so the copy does not stall the host; elsewhere a plain ``.to``.
    Objects without ``.to`` are returned as they are.
    """
    if not hasattr(batch, "to"):
        return batch
    device = torch.device(device)
    if device.type != "cuda":
        return batch.to(device)
    if hasattr(batch, "pin_memory"):
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def _to_tensor(seq):
    if isinstance(seq, torch.Tensor):
        return seq.detach()
    return torch.as_tensor(np.asarray(seq))


def validate_sequences(seqs):
    """
    Check a list of sequences and return them as tensors.

    Each sequence must be a 2-D array or tensor ``[T_i, x_dim]`` with
    ``T_i >= 1``, the same ``x_dim`` for all, and finite values.

    :param seqs: a non-empty sequence of arrays or tensors.
    :returns: a list of tensors (sharing memory with numpy inputs where possible).
    :rtype: list[torch.Tensor]
    :raises ValueError: naming the index of the first bad sequence.
    """
    if isinstance(seqs, torch.Tensor) or isinstance(seqs, np.ndarray):
        raise ValueError(
            "Expected a list of [T_i, x_dim] sequences, got a single array; "
            "use list(array) if its first dimension indexes sequences"
        )
    seqs = list(seqs)
    if not seqs:
        raise ValueError("Expected a non-empty list of sequences, got an empty list")
    out = []
    x_dim = None
    for i, s in enumerate(seqs):
        try:
            t = _to_tensor(s)
        except Exception as e:
            raise ValueError(f"Sequence {i} cannot be converted to a tensor: {e}") from e
        if t.dim() != 2:
            raise ValueError(f"Sequence {i} must have shape [T, x_dim], got shape {tuple(t.shape)}")
        if t.size(0) == 0:
            raise ValueError(f"Sequence {i} is empty (0 time steps)")
        if x_dim is None:
            x_dim = t.size(1)
        elif t.size(1) != x_dim:
            raise ValueError(
                f"Sequence {i} has {t.size(1)} features per frame, but sequence 0 has {x_dim}"
            )
        if t.is_complex():
            raise ValueError(f"Sequence {i} has unsupported complex dtype {t.dtype}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"Sequence {i} contains NaN or infinite values")
        out.append(t)
    return out


def pad_batch(seqs, dtype=torch.float32, max_length=None):
    """
    Zero-pad sequences into a :class:`SequenceBatch`.

    :param seqs: non-empty list of ``[T_i, x_dim]`` arrays or tensors.
    :param torch.dtype dtype: dtype of ``x``.
    :param int max_length: truncate sequences to their first ``max_length`` frames.
    :rtype: SequenceBatch
    """
    tensors = validate_sequences(seqs)
    return _pad(tensors, dtype, max_length)


def _pad(tensors, dtype, max_length=None):
    if max_length is not None:
        tensors = [t[:max_length] for t in tensors]
    lengths = torch.tensor([t.size(0) for t in tensors], dtype=torch.long)  # [batch]
    batch, time, x_dim = len(tensors), int(lengths.max()), tensors[0].size(1)
    x = torch.zeros(batch, time, x_dim, dtype=dtype)  # [batch, time, x_dim]
    for i, t in enumerate(tensors):
        x[i, : t.size(0)] = t.to(dtype)
    mask = torch.arange(time).unsqueeze(0) < lengths.unsqueeze(1)  # [batch, time]
    return SequenceBatch(x, mask, lengths)


def padding_efficiency(batches):
    """
    Fraction of real frames among all padded frames, ``sum(lengths) / sum(batch * time)``
    (1.0 means no padding).

    :param batches: an iterable of :class:`SequenceBatch`, or a
        :class:`BatchIterator` (computed from lengths without padding anything).
    :rtype: float
    """
    if isinstance(batches, BatchIterator):
        return batches.padding_efficiency()
    real = padded = 0
    for b in batches:
        real += int(b.lengths.sum())
        padded += b.mask.numel()
    if padded == 0:
        raise ValueError("padding_efficiency needs at least one batch")
    return real / padded


def check_int(name, value, minimum):
    """``value`` as an ``int`` >= ``minimum`` (see :func:`pyro_seq.util.check_int`)."""
    return _check_int(name, value, minimum)


def batch_order(lengths, batch_size, shuffle=True, seed=0, epoch=0, group_by_length=True):
    """
    The indices of each batch, in iteration order, for items of the given ``lengths``: with
    ``group_by_length`` the items are sorted by length (ties in a random order when shuffling) and
    cut into consecutive batches, whose order is then shuffled when ``shuffle``; without it, a
    (shuffled) order cut into batches. All randomness comes from
    ``numpy.random.default_rng([seed, epoch])``.

    :param lengths: int array ``[N]``.
    :rtype: list[numpy.ndarray]
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    if group_by_length:
        order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if shuffle and group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class BatchIterator:
    """
    Re-iterable batches of padded sequences.

    With ``group_by_length=True`` the sequences are sorted by length (ties in a
    random order when shuffling) and cut into consecutive batches, so each batch
    holds sequences of similar length; with ``shuffle=True`` the order of the
    batches is then shuffled. All randomness comes from a
    :class:`numpy.random.Generator` seeded with ``(seed, epoch)``, so the batches
    are a deterministic function of the arguments. Use :meth:`set_epoch` (or a
    new iterator per epoch) to get a new order each epoch.

    :param sequences: non-empty list of ``[T_i, x_dim]`` arrays or tensors
        (e.g. a :class:`~pyro_seq.data.MusicDataset`).
    :param int batch_size: maximum sequences per batch.
    :param bool shuffle: shuffle (see above).
    :param int seed: random seed.
    :param int epoch: epoch number, mixed into the seed.
    :param bool group_by_length: group sequences of similar length.
    :param int max_length: truncate sequences to their first ``max_length`` frames.
    :param torch.dtype dtype: dtype of ``x``.
    """

    def __init__(
        self,
        sequences,
        batch_size,
        shuffle=True,
        seed=0,
        epoch=0,
        group_by_length=True,
        max_length=None,
        dtype=torch.float32,
    ):
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.epoch = check_int("epoch", epoch, 0)
        self.max_length = None if max_length is None else check_int("max_length", max_length, 1)
        self.shuffle = bool(shuffle)
        self.group_by_length = bool(group_by_length)
        self.dtype = dtype
        tensors = validate_sequences(sequences)
        if self.max_length is not None:
            tensors = [t[: self.max_length] for t in tensors]
        self._tensors = tensors
        self.lengths = np.array([t.size(0) for t in tensors], dtype=np.int64)  # [N]

    def set_epoch(self, epoch):
        """Set the epoch used to seed the shuffling."""
        self.epoch = check_int("epoch", epoch, 0)

    def __len__(self):
        return math.ceil(len(self._tensors) / self.batch_size)

    def batch_indices(self):
        """
        The indices of the sequences in each batch, in iteration order.

        :rtype: list[numpy.ndarray]
        """
        return batch_order(self.lengths, self.batch_size, self.shuffle, self.seed, self.epoch, self.group_by_length)

    def __iter__(self):
        for idx in self.batch_indices():
            yield _pad([self._tensors[i] for i in idx], self.dtype)

    def padding_efficiency(self):
        """Real frames / padded frames over one pass, computed from the lengths."""
        real = padded = 0
        for idx in self.batch_indices():
            lens = self.lengths[idx]
            real += int(lens.sum())
            padded += len(idx) * int(lens.max())
        return real / padded

    @property
    def num_frames(self):
        """Total real frames (after truncation)."""
        return int(self.lengths.sum())


def make_batches(
    sequences,
    batch_size,
    shuffle=True,
    seed=0,
    epoch=0,
    group_by_length=True,
    max_length=None,
    dtype=torch.float32,
):
    """
    Make a :class:`BatchIterator`; see there for the arguments. ``len()`` of
    the result is the number of batches.

    :rtype: BatchIterator
    """
    return BatchIterator(
        sequences,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        group_by_length=group_by_length,
        max_length=max_length,
        dtype=dtype,
    )


class SequenceDataset:
    """
    One split of a sequence data set: a read-only list of float32 arrays
    ``[T_i, x_dim]`` that can be passed to :func:`~pyro_seq.data.make_batches`
    (:class:`~pyro_seq.data.MusicDataset` is the piano-roll case).

    :param str name: data set name.
    :param str split: split name.
    :param list sequences: the arrays.
    """

    def __init__(self, name, split, sequences):
        self.name = name
        self.split = split
        self.sequences = list(sequences)

    def __len__(self):
        return len(self.sequences)

    def __getitem__(self, i):
        return self.sequences[i]

    def __iter__(self):
        return iter(self.sequences)

    @property
    def lengths(self):
        """Sequence lengths, an int64 array ``[N]``."""
        return np.array([len(s) for s in self.sequences], dtype=np.int64)

    @property
    def num_frames(self):
        """Total number of time steps over all sequences."""
        return int(sum(len(s) for s in self.sequences))

    @property
    def x_dim(self):
        """Number of features per frame (``None`` for an empty split)."""
        return int(self.sequences[0].shape[-1]) if self.sequences else None

    def __repr__(self):
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
            f"sequences={len(self)}, frames={self.num_frames})"
        )
