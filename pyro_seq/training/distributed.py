r"""
Data-parallel SVI over several processes with :mod:`torch.distributed` (Gloo on CPU, NCCL on GPUs).

Each process (rank) holds a full copy of the model and guide, computes the loss and gradients of
its own share of the batches, and before every optimiser step the gradients are summed over the
ranks, so every rank applies the same update and the parameters stay identical. Two paths:

- **DDP** (the default where the loss is a :class:`pyro.infer.ELBO` with ``differentiable_loss``:
  ``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceEnum_ELBO``, ``TraceTMC_ELBO``, and pyro_seq's
  warm-up, Z-Forcing, semi-supervised, IWAE and FIVO ELBOs; not ``RenyiELBO``,
  ``TraceGraph_ELBO`` or ``ReweightedWakeSleep``, which only have ``loss_and_grads``). The loss's :class:`~pyro.infer.elbo.ELBOModule`
  (``loss(model, guide)``, whose ``forward`` is the differentiable loss of one whole step, guide
  and replayed model, every particle) goes into :class:`torch.nn.parallel.DistributedDataParallel`
  (:meth:`DistributedContext.data_parallel`): its bucketed all-reduce of the module parameters'
  gradients overlaps with ``backward``, with a communication hook that sums (or averages)
  instead of DDP's mean. ``find_unused_parameters=True``: a step may leave parameters without a
  gradient (a branch a batch does not take; the Z-Forcing auxiliary network under IWAE).
  Parameters that DDP does not hold (``pyro.param`` entries of the parameter store, module
  parameters created during a step, e.g. by an autoguide's first call) are summed by hand after
  ``backward``, in the small all-reduce that carries the loss, frame count and failure flag.
  A rank whose step raises a non-finite-values error still runs a zero ``backward`` through
  DDP, so that no rank waits forever, and every rank skips the step.
- **by hand** (any other loss, e.g. :class:`~pyro_seq.losses.VAEGANLoss`, whose three routed
  losses are not one ``forward``/``backward``; or ``DistributedContext(ddp=False)``): after
  ``loss.loss_and_grads``, one flat all-reduce of every gradient with the scalars
  (:meth:`DistributedContext.reduce_step`), as :class:`pyro.optim.HorovodOptimizer` does for
  Horovod.

Both give the same sums; the DDP path differentiates ``differentiable_loss`` where the hand path
calls ``loss_and_grads``, which for a Pyro ELBO with ``num_particles > 1`` (not vectorised) sums
the particles' gradients in another order (equal to rounding).

Gradients are **summed** by default because every ``pyro_seq`` sequence loss is a sum over the
batch (nats): the summed gradient is then exactly the gradient of one process holding the union
of the ranks' batches, so ``world_size`` ranks with ``--batch-size B`` train like one process with
``world_size * B`` sequences per step. ``reduction="mean"`` is for losses that are means over the
batch.

Launch with ``torchrun`` (one process per GPU, or several CPU processes)::

    torchrun --standalone --nproc_per_node 2 -m pyro_seq train srnn --distributed --data jsb --out runs/ddp

Across nodes, the usual ``torchrun --nnodes N --node_rank R --rdzv_endpoint HOST:PORT`` arguments.

What each rank does:

- its batches: :func:`shard_batches` gives rank ``r`` the batches ``r, r + W, r + 2W, ...`` of the
  epoch's (shuffled, length-grouped) batch list, padded by wrapping round so that every rank takes
  the same number of steps (as :class:`torch.utils.data.DistributedSampler` pads its indices);
- its noise: rank 0 keeps the run's seed (a one-process distributed run is the ordinary run),
  rank ``r`` draws from :func:`rank_seed` ``(seed, r)``;
- logging, validation and checkpoints: rank 0 only; the validation figure is broadcast, so
  early stopping agrees on every rank. Checkpoints hold every rank's random state: resuming with
  the same number of ranks continues each rank's noise exactly; with another number, rank ``r``
  restarts its stream from :func:`rank_seed` of the seed and the global step (parameters,
  optimiser state and counters carry over unchanged).
"""

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DistributedContext",
    "ELBOStep",
    "init_distributed",
    "shard_batches",
    "rank_seed",
]

logger = logging.getLogger(__name__)

_REDUCTIONS = ("sum", "mean")


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """
    The seed of rank ``rank``'s noise: ``seed`` itself on rank 0 at step 0, distinct and
    deterministic otherwise.

    :param int seed: the run's seed.
    :param int rank: the process rank.
    :param int step: the global step a resumed stream restarts at (0 for a fresh run).
    :rtype: int
    """
    if rank == 0 and step == 0:
        return int(seed)
    return (int(seed) + 1_000_003 * int(rank) + 7_919 * int(step)) % (2**31 - 1)


def shard_batches(batches: Iterable, rank: int, world_size: int) -> Iterator:
    """
    Rank ``rank``'s share of an epoch's batches: every ``world_size``-th batch starting at
    ``rank``, padded by wrapping round to a multiple of ``world_size`` so that all ranks take the
    same number of steps. Lazy: the source is read once, in order, and only the first
    ``world_size`` batches are kept (for the padding).

    :param batches: the epoch's batches (any iterable).
    :param int rank: this process's rank, ``0 <= rank < world_size``.
    :param int world_size: number of processes.
    :raises ValueError: for a bad rank, or an epoch with no batches.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return _shard(iter(batches), rank, world_size)


def _shard(batches: Iterator, rank: int, world_size: int) -> Iterator:
    first: List = []
    n = 0
    for n, batch in enumerate(batches, start=1):
        if len(first) < world_size:
            first.append(batch)
        if (n - 1) % world_size == rank:
            yield batch
    if n == 0:
        raise ValueError("shard_batches: the epoch has no batches")
    for i in range(n, -(-n // world_size) * world_size):  # the padding, from the start of the epoch
        if i % world_size == rank:
            yield first[(i - n) % len(first)]


@dataclass
class DistributedContext:
    """
    The process group a :class:`~pyro_seq.training.trainer.Trainer` trains over.

    :param int rank: this process's rank.
    :param int world_size: number of processes.
    :param str reduction: how gradients, loss and frames are combined over ranks: ``"sum"``
        (losses that are sums over the batch, the default) or ``"mean"``.
    :param bool ddp: reduce an ELBO's gradients with
        :class:`~torch.nn.parallel.DistributedDataParallel` (the default); ``False`` keeps the
        hand-written all-reduce for every loss.
    """

    rank: int = 0
    world_size: int = 1
    reduction: str = "sum"
    ddp: bool = True

    def __post_init__(self):
        if self.reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {self.reduction!r}")
        if self.world_size > 1 and not dist.is_initialized():
            raise RuntimeError(
                "DistributedContext with world_size > 1 needs an initialised torch.distributed process "
                "group (init_distributed(), or run under torchrun with --distributed)"
            )

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the rank that logs, validates and writes checkpoints)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there is more than one rank to talk to."""
        return self.world_size > 1

    # ---------------------------------------------------------------------------- collectives
    def broadcast_modules(self, modules: Sequence[torch.nn.Module]) -> None:
        """Copy rank 0's parameters and buffers into every rank's modules (in place)."""
        if not self.active:
            return
        with torch.no_grad():
            for module in modules:
                for tensor in list(module.parameters()) + list(module.buffers()):
                    dist.broadcast(tensor.data, src=0)

    def reduce_step(self, params: Sequence[torch.Tensor], scalars: Sequence[float], scalars_only: bool = False) -> List[float]:
        """
        Combine one step over the ranks with a single all-reduce: the gradients of ``params``
        (same list, same order on every rank; a missing gradient counts as zeros and is filled in)
        and a few scalars (loss, frames, a failure flag), summed over the ranks; the gradients
        are then divided by ``world_size`` when ``reduction`` is ``"mean"``.

        :param params: leaf tensors whose ``.grad`` is reduced in place.
        :param scalars: floats reduced alongside (e.g. ``[loss, frames, failed]``); returned summed.
        :param bool scalars_only: ``params`` must be empty: reduce the scalars alone.
        :returns: the summed scalars.
        """
        if scalars_only and params:
            raise ValueError("reduce_step(scalars_only=True) takes no params")
        if not params and not scalars_only:
            raise ValueError("reduce_step: no parameters to reduce")
        if not self.active:
            return [float(s) for s in scalars]
        if params:
            dtype, device = params[0].dtype, params[0].device
        else:
            dtype, device = torch.float64, _collective_device()
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad.reshape(-1).to(dtype))
        head = torch.tensor([float(s) for s in scalars], dtype=dtype, device=device)
        flat = torch.cat(grads + [head])  # [sum(numel) + len(scalars)]
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n
        if self.reduction == "mean":
            for p in params:
                p.grad.div_(self.world_size)
        return [float(v) for v in flat[offset:].tolist()]

    def data_parallel(self, module: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
        """
        ``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` for this group: gradients
        summed over the ranks (or averaged, ``reduction="mean"``) by a communication hook,
        ``find_unused_parameters=True``, no buffer broadcasts (each rank keeps its own buffers,
        as on the hand path) and no synchronisation at construction (the trainer broadcasts rank
        0's parameters at its start, and the ranks' updates are the same afterwards).
        """
        accepted = inspect.signature(DistributedDataParallel.__init__).parameters
        kwargs = {"find_unused_parameters": True}
        if "forward_sync_buffers" in accepted:
            kwargs["forward_sync_buffers"] = False
        else:
            kwargs["broadcast_buffers"] = False
        if "init_sync" in accepted:
            kwargs["init_sync"] = False
        if device.type == "cuda":
            kwargs["device_ids"] = [device.index if device.index is not None else torch.cuda.current_device()]
        wrapped = DistributedDataParallel(module, **kwargs)
        wrapped.register_comm_hook(None, _allreduce_mean if self.reduction == "mean" else _allreduce_sum)
        return wrapped

    def broadcast_float(self, value: Optional[float]) -> Optional[float]:
        """Rank 0's ``value`` on every rank (``None`` stays ``None``)."""
        if not self.active:
            return value
        device = _collective_device()
        payload = torch.tensor(
            [0.0 if value is None else float(value), 1.0 if value is None else 0.0], dtype=torch.float64, device=device
        )
        dist.broadcast(payload, src=0)
        return None if payload[1].item() else float(payload[0].item())

    def gather_objects(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank (``all_gather_object``)."""
        if not self.active:
            return [obj]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.active:
            dist.barrier()


def _allreduce_sum(process_group, bucket):
    """DDP communication hook: the bucket's gradients summed over the ranks (DDP's own hook averages)."""
    group = process_group if process_group is not None else dist.group.WORLD
    return dist.all_reduce(bucket.buffer(), group=group, async_op=True).get_future().then(lambda fut: fut.value()[0])


def _allreduce_mean(process_group, bucket):
    """DDP communication hook: summed, then divided by the number of ranks (as :meth:`DistributedContext.reduce_step`)."""
    group = process_group if process_group is not None else dist.group.WORLD
    size = group.size()
    future = dist.all_reduce(bucket.buffer(), group=group, async_op=True).get_future()
    return future.then(lambda fut: fut.value()[0].div_(size))


class ELBOStep(torch.nn.Module):
    """
    What the trainer puts into :class:`~torch.nn.parallel.DistributedDataParallel`: a loss's
    :class:`~pyro.infer.elbo.ELBOModule`, whose ``forward(*args)`` is the differentiable loss of
    one step. A step that fails with an error ``recoverable`` accepts (non-finite values), or
    whose loss has no graph, returns a zero tied to every parameter instead, so that this rank
    still runs ``backward`` and joins its all-reduce; the error is kept in :attr:`error`.

    :param torch.nn.Module elbo_module: ``loss(model, guide)``.
    :param recoverable: ``ValueError -> bool``.
    """

    def __init__(self, elbo_module: torch.nn.Module, recoverable: Callable[[ValueError], bool]):
        super().__init__()
        self.elbo_module = elbo_module
        self.recoverable = recoverable
        self.error: Optional[ValueError] = None

    def forward(self, *args, **kwargs):
        self.error = None
        try:
            value = self.elbo_module(*args, **kwargs)
        except ValueError as error:
            if not self.recoverable(error):
                raise
            self.error, value = error, None
        if torch.is_tensor(value) and value.requires_grad:
            return value
        zero = sum(p.reshape(-1)[:1].sum() * 0.0 for p in self.parameters() if p.requires_grad)  # every parameter, zero gradient
        return zero if value is None else zero + value


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(device: str = "auto", reduction: str = "sum", timeout_minutes: float = 30.0, ddp: bool = True):
    """
    Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    The backend is NCCL when the processes run on GPUs and Gloo otherwise; on GPUs each process
    takes ``cuda:LOCAL_RANK``.

    :param str device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (a ``cuda:N`` index is replaced by
        the local rank).
    :param str reduction: see :class:`DistributedContext`.
    :param float timeout_minutes: collective timeout.
    :param bool ddp: see :class:`DistributedContext`.
    :returns: ``(DistributedContext, torch.device)``.
    :raises ValueError: when the environment has no ``torchrun`` variables, or CUDA is asked for
        and absent.
    """
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"--distributed: environment variable(s) {', '.join(missing)} not set; launch with torchrun, "
            "e.g. `torchrun --standalone --nproc_per_node 2 -m pyro_seq train srnn --distributed ...`"
        )
    rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("--distributed --device cuda requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        torch_device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        from datetime import timedelta

        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    logger.debug("rank %d of %d joined (%s, %s)", rank, world_size, backend, torch_device)
    return DistributedContext(rank=rank, world_size=world_size, reduction=reduction, ddp=ddp), torch_device
