r"""
Long sequences in bounded memory: streaming (truncated-backpropagation) training and chunked
evaluation with carried state, as the SRNN reference code trains on long pieces.

Each of ``batch_size`` *slots* plays a queue of whole sequences; an epoch is a run of chunks of
at most ``chunk_length`` frames. Chunk ``j`` of a slot continues the slot's current sequence
where chunk ``j - 1`` stopped, and its :class:`StreamCarry` hands the model and guide the state
at the end of the previous chunk: the deterministic RNN state, the last frame and the last
latent sample (detached: gradients stop at chunk boundaries). A new sequence always starts at the
beginning of a chunk with its slot *reset* to the model's start values, so no state crosses a
sequence boundary; the rest of a chunk after a sequence ends is padding. Slots are balanced
(longest-first onto the least-loaded slot), and a chunk batch holds only the slots that still
have frames.

Training is then the ordinary loop (the batches have ``.args = (x, mask, carry)``)::

    batches = lambda epoch: stream_batches(train, batch_size=16, chunk_length=100, seed=0, epoch=epoch)
    Trainer(model, guide, loss, batches, ...).fit(100)

The bound a chunked evaluation computes, :func:`~pyro_seq.bounds.streaming_elbo`, is the ELBO of the guide that
sees only its own chunk (a smoother's backward RNN restarts at every chunk end, a filter is
unchanged): a valid lower bound on :math:`\log p(x)` for the full sequence, whose memory does not
grow with its length.

Models that take a carry: :class:`~pyro_seq.models.SRNN` with :class:`~pyro_seq.guides.SRNNGuide`
(carried ``"x"``, ``"h"``, ``"z"``), and :class:`~pyro_seq.models.ZForcing` with
:class:`~pyro_seq.guides.ZForcingGuide` (carried ``"x"`` and the LSTM state ``"h"``, ``"c"``).
"""

from typing import Dict, Iterator, List

import numpy as np
import torch

from pyro_seq.data.batching import validate_sequences

__all__ = ["StreamCarry", "StreamBatch", "StreamBatches", "check_carry", "stream_batches"]


class StreamCarry:
    """
    The state one chunk batch starts from, and the state its guide leaves behind.

    :param dict initial: name -> ``[batch, ...]`` tensors, the stored end state of each row's
        slot (empty at the start of an epoch).
    :param torch.Tensor reset: ``[batch]`` bool, rows whose chunk starts a new sequence.
    """

    def __init__(self, initial: Dict[str, torch.Tensor], reset: torch.Tensor):
        self.initial = dict(initial)
        self.reset = reset
        self.final: Dict[str, torch.Tensor] = {}

    def get(self, name: str, default: torch.Tensor) -> torch.Tensor:
        """
        The carried value of ``name`` per row, ``default`` on reset rows and where nothing is
        carried yet.

        :param torch.Tensor default: ``[batch, ...]`` (or broadcastable) start value.
        """
        value = self.initial.get(name)
        default = default.expand(self.reset.shape[0], *default.shape[-1:]) if default.dim() == 1 else default
        if value is None:
            return default
        keep = ~self.reset.reshape(-1, *([1] * (value.dim() - 1)))  # [batch, 1, ...]
        return torch.where(keep, value.to(default.dtype), default)

    def put(self, name: str, value: torch.Tensor) -> None:
        """Record ``value [batch, ...]`` (detached) as the row's state for its next chunk."""
        self.final[name] = value.detach()

    def to(self, device, non_blocking: bool = False) -> "StreamCarry":
        carry = StreamCarry(
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.initial.items()},
            self.reset.to(device, non_blocking=non_blocking),
        )
        carry.final = self.final  # the same record: what the guide writes reaches the iterator
        return carry


def check_carry(carry, batch: int) -> None:
    """
    Refuse a carry that is not a :class:`StreamCarry` for ``batch`` rows (``None`` passes).

    :raises TypeError: ``carry`` is neither ``None`` nor a :class:`StreamCarry`.
    :raises ValueError: its ``reset`` is not ``[batch]``.
    """
    if carry is None:
        return
    if not isinstance(carry, StreamCarry):
        raise TypeError(f"carry must be a pyro_seq.data.streaming.StreamCarry or None, got {type(carry).__name__}")
    if carry.reset.shape != (batch,):
        raise ValueError(f"carry is for {tuple(carry.reset.shape)} rows, x has batch {batch}")


class StreamBatch:
    """
    One chunk of every active slot: ``x [batch, chunk, x_dim]``, ``mask [batch, chunk]``, the
    slots the rows belong to, the index of each row's sequence in the data, and the carry.
    ``args`` is what the model, guide and loss are called with; ``frames`` the real frames.
    """

    def __init__(self, x, mask, slots, sequence_index, carry: StreamCarry):
        self.x, self.mask, self.slots, self.sequence_index, self.carry = x, mask, slots, sequence_index, carry

    @property
    def args(self):
        return (self.x, self.mask, self.carry)

    @property
    def frames(self) -> float:
        return float(self.mask.sum())

    def to(self, device, non_blocking: bool = False) -> "StreamBatch":
        # the iterator commits the carry it handed out; moving keeps the same ``final`` record
        moved = StreamBatch(
            self.x.to(device, non_blocking=non_blocking),
            self.mask.to(device, non_blocking=non_blocking),
            self.slots,
            self.sequence_index,
            self.carry.to(device, non_blocking=non_blocking),
        )
        return moved


class StreamBatches:
    """
    An epoch of chunk batches over ``batch_size`` slots (see the module docstring). Iterate it
    lazily: each chunk's carry is filled from what the guide recorded on the previous chunk of
    the same slots, so the batches cannot be built ahead.

    :param sequences: list of ``[T_i, x_dim]`` arrays or tensors.
    :param int batch_size: number of slots.
    :param int chunk_length: frames per chunk (truncation length).
    :param bool shuffle: shuffle the order of sequences (deterministic in ``seed`` and ``epoch``).
    :param torch.dtype dtype: of ``x``.
    """

    def __init__(self, sequences, batch_size: int, chunk_length: int, shuffle: bool = True, seed: int = 0, epoch: int = 0, dtype=torch.float32):
        for name, value in (("batch_size", batch_size), ("chunk_length", chunk_length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.sequences = validate_sequences(sequences)
        self.batch_size, self.chunk_length, self.dtype = int(batch_size), int(chunk_length), dtype
        order = np.arange(len(self.sequences))
        if shuffle:
            order = np.random.default_rng([int(seed), int(epoch)]).permutation(order)
        chunks = {int(i): -(-len(self.sequences[i]) // self.chunk_length) for i in order}
        # longest first onto the least-loaded slot (stable in the shuffled order)
        by_length = sorted(order.tolist(), key=lambda i: -chunks[i])
        slots: List[List[int]] = [[] for _ in range(min(self.batch_size, len(order)))]
        load = [0] * len(slots)
        for i in by_length:
            s = int(np.argmin(load))
            slots[s].append(i)
            load[s] += chunks[i]
        # each slot: its list of (sequence, start frame)
        self.plan = [[(i, start) for i in queue for start in range(0, len(self.sequences[i]), self.chunk_length)] for queue in slots]
        self.num_slots = len(slots)

    def __len__(self) -> int:
        return max(len(p) for p in self.plan)

    def __iter__(self) -> Iterator[StreamBatch]:
        state: Dict[str, torch.Tensor] = {}  # name -> [num_slots, ...]
        for j in range(len(self)):
            rows = [s for s in range(self.num_slots) if j < len(self.plan[s])]
            pieces, index, reset = [], [], []
            for s in rows:
                i, start = self.plan[s][j]
                pieces.append(self.sequences[i][start : start + self.chunk_length])
                index.append(i)
                reset.append(start == 0)
            lengths = torch.tensor([len(p) for p in pieces])  # [batch]
            x = torch.zeros(len(rows), int(lengths.max()), pieces[0].shape[-1], dtype=self.dtype)  # [batch, chunk, x_dim]
            for r, p in enumerate(pieces):
                x[r, : len(p)] = p.to(self.dtype)
            mask = torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # [batch, chunk]
            slots = torch.tensor(rows)
            initial = {name: value[slots] for name, value in state.items()}
            carry = StreamCarry(initial, torch.tensor(reset))
            yield StreamBatch(x, mask, slots, torch.tensor(index), carry)
            for name, value in carry.final.items():  # commit what the guide left for the next chunk
                if name not in state:
                    state[name] = value.new_zeros((self.num_slots,) + value.shape[1:])
                state[name] = state[name].to(value.device)
                state[name][slots.to(value.device)] = value


def stream_batches(sequences, batch_size: int, chunk_length: int, shuffle: bool = True, seed: int = 0, epoch: int = 0, dtype=torch.float32) -> StreamBatches:
    """One epoch of streaming chunk batches: :class:`StreamBatches` (see there for the arguments)."""
    return StreamBatches(sequences, batch_size, chunk_length, shuffle=shuffle, seed=seed, epoch=epoch, dtype=dtype)
