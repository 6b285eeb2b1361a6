"""
A generic stochastic variational inference trainer used by every ``pyro_seq`` model.

:class:`Trainer` runs SVI epochs over batches of padded sequences
(:class:`pyro_seq.data.SequenceBatch`: ``x [batch, time, x_dim]``, ``mask [batch, time]``), calling
``model(x, mask)`` and ``guide(x, mask)``. Each epoch it evaluates the validation bound (negative
ELBO in nats per frame, total nats / total frames), writes a JSON-lines log, and atomically writes
``last.pt`` and, when the validation bound improved, ``best.pt`` under ``out_dir``. A run
interrupted at any point resumes from ``last.pt`` with ``resume=True`` and ends with the same
parameters as an uninterrupted run (on CPU, same seed): module, parameter store, optimiser and
random number generator states, epoch and global step are all restored.

Gradient steps with a non-finite loss or gradient are skipped without touching parameters or
optimiser state; after ``max_bad_steps`` consecutive skips training stops with
:class:`NonFiniteLossError`.

With a :class:`~pyro_seq.training.distributed.DistributedContext` the same loop runs data-parallel over
``torch.distributed`` ranks (see :mod:`pyro_seq.training.distributed`): each rank steps on its share of the
batches, gradients are summed over ranks before every update (by
:class:`~torch.nn.parallel.DistributedDataParallel` over the loss's ``ELBOModule`` where the loss
is an ELBO, by one hand-written all-reduce otherwise), and rank 0 logs, validates and writes
checkpoints.
"""

import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.elbo import ELBO
from pyro.infer.util import zero_grads
from torch.distributions import constraints
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pyro_seq.bounds import evaluate
from pyro_seq.data.batching import to_device
from pyro_seq.training.checkpoint import (
    CheckpointError,
    get_rng_state,
    hold_signals,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    set_rng_state,
)
from pyro_seq.training.distributed import DistributedContext, ELBOStep, rank_seed, shard_batches
from pyro_seq.util import claim_pyro_name, pyro_param_names

__all__ = [
    "Trainer",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "RunOutputError",
    "LogFileError",
    "check_log_file",
    "resolve_device",
    "default_eval_fn",
    "LAST_CHECKPOINT",
    "BEST_CHECKPOINT",
    "LOG_FILE",
]

logger = logging.getLogger(__name__)

#: File name of the latest checkpoint under ``out_dir``.
LAST_CHECKPOINT = "last.pt"
#: File name of the best (lowest validation loss) checkpoint under ``out_dir``.
BEST_CHECKPOINT = "best.pt"
#: File name of the JSON-lines training log under ``out_dir``.
LOG_FILE = "log.jsonl"

Batches = Union[Iterable, Callable[[int], Iterable]]


#: ``loss.last_terms`` entries the trainer handles itself; any other numeric entry is logged,
#: per frame, or (``_WEIGHT_KEYS``) as its mean over the epoch.
_TERM_KEYS = ("log_likelihood", "kl", "beta")
_WEIGHT_KEYS = ("aux_weight", "dis_update", "dec_update")


class NonFiniteLossError(RuntimeError):
    """Raised when too many consecutive SVI steps had a non-finite loss or gradient."""


class TrainingInterrupted(Exception):
    """
    Raised by :meth:`Trainer.fit` when a stop was asked for with :meth:`Trainer.request_stop`
    (e.g. by a SIGINT handler): the trainer stopped at a step boundary and wrote ``last.pt``
    there (or, where a run cannot resume mid-epoch, kept the one of the last completed epoch).
    The message says where it stopped and what ``last.pt`` holds.

    :ivar int signum: the signal that asked for the stop (``None``: none).
    :ivar int exit_status: the conventional exit status, ``128 + signum`` (130 for SIGINT, 143
        for SIGTERM), else 1.
    """

    def __init__(self, message: str, signum: Optional[int] = None):
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + int(signum) if signum else 1


class RunOutputError(RuntimeError):
    """
    A file of the run folder (a checkpoint, ``log.jsonl``) could not be written (a full disk, a
    read-only file system, ...). The message names the file, the operating system's reason and
    what was kept (``last.pt`` of an earlier epoch is intact: checkpoints are replaced
    atomically).

    :ivar str path: the file that could not be written.
    """

    def __init__(self, message: str, path: Optional[str] = None):
        super().__init__(message)
        self.path = path


class LogFileError(ValueError):
    """``log.jsonl`` of a run to resume holds lines that are not JSON records (other than a last
    line cut short by an interruption, which is dropped)."""


def _log_lines(path: Path) -> Tuple[List[str], Optional[str]]:
    """
    The complete lines of a ``log.jsonl`` and the text of a last line cut short (no newline: a
    write interrupted by a kill or a full disk), or ``None``.
    """
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    tail = tail.strip("\x00 \t\r")  # a crash can leave zeros at the end of a file
    return lines, (tail or None)


def check_log_file(path: Union[str, os.PathLike]) -> None:
    """
    Refuse a run's ``log.jsonl`` (to resume) whose complete lines are not all JSON records. A last
    line cut short by an interruption is fine: the resumed trainer drops it. A missing file is fine.

    :raises LogFileError: naming the file and the first bad line.
    """
    path = Path(path)
    if not path.exists():
        return
    lines, _ = _log_lines(path)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            shown = line.strip()
            shown = shown[:40] + "..." if len(shown) > 40 else shown
            raise LogFileError(
                f"{path} line {number} is not a JSON record ({shown!r}); this log was not written by "
                f"pyro-seq or was edited: repair or remove that line (or move the file away) and resume again"
            )


def signal_name(signum: Optional[int]) -> str:
    """``"SIGINT"`` for ``signal.SIGINT`` (``"signal N"`` for one without a name)."""
    import signal as _signal

    try:
        return _signal.Signals(signum).name
    except (ValueError, TypeError):
        return f"signal {signum}"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _unpack(batch) -> Tuple[tuple, float]:
    """
    The loss arguments of a batch and the number of frames its loss is a sum over:
    ``((x, mask), mask.sum())`` for a :class:`SequenceBatch` or an ``(x, mask, ...)`` tuple;
    ``(batch.args, batch.frames)`` for any other batch that has ``args`` (e.g.
    :class:`~pyro_seq.data.SemiSupervisedBatch`, whose loss is already per image).
    """
    if hasattr(batch, "args"):
        return tuple(batch.args), float(getattr(batch, "frames", 1.0))
    if hasattr(batch, "x") and hasattr(batch, "mask"):
        return (batch.x, batch.mask), float(batch.mask.sum())
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return (batch[0], batch[1]), float(batch[1].sum())
    raise TypeError(
        f"expected a SequenceBatch, an (x, mask, ...) tuple or a batch with .args, got {type(batch).__name__}"
    )


def _batches_for(source: Optional[Batches], epoch: int) -> Optional[Iterable]:
    if source is None:
        return None
    return source(epoch) if callable(source) else source


def _to_float(value) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_NON_FINITE_MESSAGE = re.compile(r"invalid values|\bnan\b|\binf\b|non-finite|not finite", re.IGNORECASE)


def _is_invalid_value_error(error: ValueError) -> bool:
    # torch.distributions argument validation (enabled by default in Pyro) reports NaN/inf
    # parameters or observations with "... but found invalid values"; input checks of the
    # models report "x contains NaN or inf values".
    return bool(_NON_FINITE_MESSAGE.search(str(error)))


def _constraint_name(constraint) -> Optional[str]:
    """Name of a singleton constraint in :mod:`torch.distributions.constraints`, else ``None``."""
    for name in dir(constraints):
        if getattr(constraints, name) is constraint:
            return name
    if type(constraint) is type(constraints.real):
        return "real"
    return None


def _ddp_serves(loss) -> bool:
    """Whether DDP can carry ``loss``'s gradients: a Pyro ELBO whose ``differentiable_loss`` is one
    step's whole loss (one ``forward``, one ``backward``)."""
    return isinstance(loss, ELBO) and callable(getattr(loss, "differentiable_loss", None))


def default_eval_fn(num_samples: int = 1) -> Callable:
    """
    The default validation bound: the negative ELBO of :func:`pyro_seq.bounds.evaluate` in nats
    per frame, total nats / total frames.

    :param int num_samples: samples per sequence for the bound.
    :returns: a callable ``(model, guide, batches) -> float`` (lower is better), called under
        :func:`torch.no_grad`.
    """

    def eval_fn(model, guide, batches) -> float:
        return evaluate(model, guide, batches, num_samples=num_samples)["elbo"]["total"]

    return eval_fn


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


class Trainer:
    """
    Generic SVI trainer.

    Example::

        trainer = Trainer(model, guide, WarmupTrace_ELBO(...),
                          train_batches=lambda epoch: make_batches(train, 16, shuffle=True, seed=0, epoch=epoch),
                          valid_batches=lambda epoch: make_batches(valid, 16, shuffle=False),
                          lr=1e-3, out_dir="runs/srnn", seed=0, patience=10)
        summary = trainer.fit(num_epochs=100)

    The trainer clears Pyro's global parameter store on construction and whenever it loads a
    checkpoint, so the store re-syncs from the modules' own parameters (which stay the same
    tensor objects throughout).

    :param model: a :class:`~pyro.nn.PyroModule` called as ``model(x, mask)``.
    :param guide: a :class:`~pyro.nn.PyroModule` called as ``guide(x, mask)``; may hold the
        model without registering it.
    :param loss: a Pyro ELBO instance (e.g. ``WarmupTrace_ELBO``). If it has a ``step`` attribute
        it is set to the global step before each SVI step; ``loss.last_terms`` (dict with
        ``log_likelihood``, ``kl``, ``beta``) and ``loss.beta`` are logged when present.
    :param train_batches: a callable ``epoch -> iterable of batches`` (epochs count from 0), or a
        re-iterable collection of batches used every epoch.
    :param valid_batches: same for the validation set, or ``None`` (the train loss is then the
        monitored quantity).
    :param optim: a :class:`~pyro.optim.PyroOptim`; default
        ``pyro.optim.ClippedAdam({"lr": lr, "betas": betas, "clip_norm": clip_norm, "lrd": lrd})``.
    :param float lr: learning rate of the default optimiser.
    :param float clip_norm: gradient clipping of the default optimiser.
    :param float lrd: per-step learning-rate decay factor of the default optimiser.
    :param tuple betas: Adam betas of the default optimiser.
    :param float weight_decay: L2 weight decay of the default optimiser.
    :param device: device the modules and batches are moved to.
    :param out_dir: directory for ``log.jsonl``, ``last.pt`` and ``best.pt``; ``None`` writes
        nothing.
    :param int seed: seeds Python, NumPy and torch via :func:`pyro.set_rng_seed` (skipped when
        ``None``; superseded by the checkpoint's RNG states on resume).
    :param int patience: stop after this many epochs without improvement of the validation bound;
        ``None`` disables early stopping.
    :param str kind: model kind stored in checkpoints (a key of :data:`pyro_seq.recipes.RECIPES`).
    :param dict config: JSON-able config stored in checkpoints (what the model is rebuilt from).
    :param bool progress: show a tqdm progress bar; ``None`` shows it only when stderr is a tty.
    :param int log_every: also log a JSON line every this many steps (0: only per epoch).
    :param int max_bad_steps: consecutive non-finite steps tolerated before stopping.
    :param eval_fn: callable ``(model, guide, batches) -> nats per frame``; default
        :func:`default_eval_fn`.
    :param int valid_samples: samples per sequence for the default validation bound.
    :param bool resume: continue from ``out_dir/last.pt`` if it exists (a fresh run otherwise).
    :param units: how the epoch log line shows the training loss and the validation figure:
        ``(unit of the loss, format of the validation figure)``.
    :param float max_seconds: stop after the first epoch that brings the run's training time
        (over all sessions) to this many seconds; ``None``: no budget.
    :param distributed: a :class:`~pyro_seq.training.distributed.DistributedContext` to train
        data-parallel over its ranks (default: one process). Rank 0's parameters are broadcast
        to every rank at the start; each epoch's batches are sharded with
        :func:`~pyro_seq.training.distributed.shard_batches`; an ELBO's gradients go through
        :class:`~torch.nn.parallel.DistributedDataParallel` over ``loss(model, guide)`` (unless
        ``distributed.ddp`` is False), any other loss's through one flat all-reduce.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        guide: torch.nn.Module,
        loss,
        train_batches: Batches,
        valid_batches: Optional[Batches] = None,
        *,
        optim: Optional[pyro.optim.PyroOptim] = None,
        lr: float = 1e-3,
        clip_norm: float = 10.0,
        lrd: float = 1.0,
        betas: Tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        device: Union[str, torch.device] = "cpu",
        out_dir: Optional[Union[str, os.PathLike]] = None,
        seed: Optional[int] = 0,
        patience: Optional[int] = None,
        kind: str = "custom",
        config: Optional[Dict[str, Any]] = None,
        progress: Optional[bool] = None,
        log_every: int = 0,
        max_bad_steps: int = 10,
        eval_fn: Optional[Callable] = None,
        valid_samples: int = 1,
        resume: bool = False,
        units: Tuple[str, str] = ("nats/frame", "{:.4f} nats/frame"),
        distributed: Optional[DistributedContext] = None,
        max_seconds: Optional[float] = None,
    ):
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {patience}")
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.guide = guide.to(self.device)
        self.loss = loss
        self.train_batches = train_batches
        self.valid_batches = valid_batches
        self.initial_lr = float(lr)
        if optim is None:
            optim = pyro.optim.ClippedAdam(
                {
                    "lr": float(lr),
                    "betas": tuple(betas),
                    "clip_norm": float(clip_norm),
                    "lrd": float(lrd),
                    "weight_decay": float(weight_decay),
                }
            )
        self.optim = optim
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.seed = seed
        self.patience = patience
        self.kind = kind
        self.config = dict(config or {})
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.log_every = int(log_every)
        self.max_bad_steps = int(max_bad_steps)
        self.eval_fn = eval_fn if eval_fn is not None else default_eval_fn(valid_samples)
        self.units = tuple(units)
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
        self.max_seconds = max_seconds
        self.out_of_time = False
        self.dist = distributed if distributed is not None else DistributedContext()
        self._reduce_list: Optional[List[torch.Tensor]] = None
        self._ddp: Optional[DistributedDataParallel] = None  # built at the first distributed step
        self._ddp_key: Tuple[int, ...] = ()  # the parameters it holds

        # counters (all restored on resume)
        self.epoch = 0  # completed epochs
        self.global_step = 0  # applied optimiser steps
        self.best_valid: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.bad_epochs = 0  # epochs since the last improvement
        self.stopped_early = False
        self.elapsed = 0.0  # seconds of training over all sessions
        self.history: List[Dict[str, Any]] = []
        self._bad_steps = 0  # consecutive skipped steps
        self._progress: Optional[Dict[str, Any]] = None  # how far into epoch + 1 a resumed checkpoint was
        self._stop_signal: Optional[int] = None  # set by request_stop
        self.stopping = False  # on the way out after a stop request (writing its checkpoint)
        self.saved_position: Optional[Tuple[int, int]] = None  # (completed epochs, batches into the next) of last.pt
        self._epoch_start = time.perf_counter()
        self._epoch_seconds = 0.0

        pyro.clear_param_store()
        if seed is not None:
            pyro.set_rng_seed(rank_seed(seed, self.dist.rank))
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.resumed = False
        if resume:
            if self.out_dir is None:
                raise ValueError("resume=True needs out_dir")
            if self.dist.is_main:
                for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):  # half-written files of a killed run
                    for tmp in remove_stale_temporaries(self.out_dir / name):
                        logger.info("removed %s, a checkpoint left half-written by an interrupted run", tmp)
            self.dist.barrier()
            last = self.out_dir / LAST_CHECKPOINT
            if last.exists():
                if self.dist.is_main:
                    self._check_log()  # before anything is loaded or changed
                self.load(last)
                self.resumed = True
                self.saved_position = (self.epoch, 0 if self._progress is None else int(self._progress["batch"]))
                if self.dist.is_main:
                    self._trim_log()
                logger.info(
                    "resumed from %s at epoch %d%s, step %d (best valid %s)",
                    last,
                    self.epoch,
                    "" if self._progress is None else f" and {self._progress['batch']} batches of epoch {self.epoch + 1}",
                    self.global_step,
                    self.best_valid,
                )
            else:
                logger.warning("resume requested but %s does not exist: starting a fresh run", last)
                if self.dist.is_main:
                    self._check_log()
                    self._trim_log()  # what a run killed before its first checkpoint logged is redone
        self.dist.broadcast_modules([self.model, self.guide])

    # ----------------------------------------------------------------------------------------
    # checkpoint state
    # ----------------------------------------------------------------------------------------

    def _module_param_ids(self) -> set:
        return {id(p) for m in (self.model, self.guide) for p in m.parameters()}

    def _extra_params(self) -> Dict[str, Any]:
        """Param-store entries that are not parameters of the model or guide modules."""
        store = pyro.get_param_store()
        module_ids = self._module_param_ids()
        extra = {}
        for name in list(store.keys()):
            unconstrained = store._params[name]
            if id(unconstrained) in module_ids:
                continue
            constraint = store._constraints.get(name, constraints.real)
            cname = _constraint_name(constraint)
            if cname is None:
                logger.warning("param %r has constraint %r that cannot be saved; it is left out", name, constraint)
                continue
            extra[name] = {"unconstrained": unconstrained.detach(), "constraint": cname}
        return extra

    def _optim_state(self) -> Dict[str, Any]:
        # State set by set_state() but not yet consumed (no step since a load) must not be lost.
        state = dict(getattr(self.optim, "_state_waiting_to_be_consumed", {}))
        state.update(self.optim.get_state())
        return state

    def _module_param_keys(self) -> Dict[str, str]:
        """
        Param-store name -> module-relative key (``"model:<name>"``, ``"guide:<name>"``) of every
        module parameter. The optimiser state is keyed by param-store names, which hold the
        module's Pyro name (``srnn``, ``srnn_1``, ... one per instance); the relative keys let a
        checkpoint's optimiser state reach a rebuilt model whatever its Pyro name.
        """
        keys = {}
        for role, module in (("model", self.model), ("guide", self.guide)):
            if not isinstance(module, pyro.nn.PyroModule):
                continue  # a plain module (e.g. the empty guide of a classifier) has no Pyro names
            claim_pyro_name(module)
            for (name, _), (relative, _) in zip(pyro_param_names(module), pyro_param_names(module, "")):
                keys[name] = f"{role}:{relative}"
        return keys

    def state_dict(self) -> Dict[str, Any]:
        """
        Everything needed to continue the run, as a ``weights_only``-loadable dict.

        :rtype: dict
        """
        return {
            "kind": self.kind,
            "config": self.config,
            "model": self.model.state_dict(),
            "guide": self.guide.state_dict(),
            "param_store_extra": self._extra_params(),
            "optim": self._optim_state(),
            "optim_param_keys": self._module_param_keys(),
            "rng": get_rng_state(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_valid": self.best_valid,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "elapsed": self.elapsed,
            "history": self.history,
            "seed": self.seed,
            "versions": {"torch": str(torch.__version__), "pyro": str(pyro.__version__)},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """
        Restore a state from :meth:`state_dict` (or a loaded checkpoint): module state dicts are
        copied into the existing parameters, the param store is cleared (it re-syncs from the
        modules at the next call) and extra params are put back, the optimiser state is queued
        with ``set_state``, and RNG states and counters are restored.
        """
        self.model.load_state_dict(state["model"])
        self.guide.load_state_dict(state["guide"])
        pyro.clear_param_store()
        extra = state.get("param_store_extra", {})
        if extra:
            pyro.get_param_store().set_state(
                {
                    "params": {n: v["unconstrained"].to(self.device).requires_grad_(True) for n, v in extra.items()},
                    "constraints": {n: getattr(constraints, v["constraint"]) for n, v in extra.items()},
                }
            )
        # Drop per-parameter optimisers created in this process: they would ignore set_state.
        for attr in ("optim_objs", "grad_clip", "_state_waiting_to_be_consumed"):
            if isinstance(getattr(self.optim, attr, None), dict):
                getattr(self.optim, attr).clear()
        self.optim.set_state(self._renamed_optim_state(state))
        set_rng_state(state["rng"])
        self._restore_rank_rng(state)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_valid = state.get("best_valid")
        self.best_epoch = state.get("best_epoch")
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.stopped_early = bool(state.get("stopped_early", False))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.history = list(state.get("history", []))
        self._bad_steps = 0
        progress = state.get("epoch_progress")
        self._progress = dict(progress) if isinstance(progress, dict) and progress.get("epoch") == self.epoch + 1 else None
        if self._progress is not None:
            self._bad_steps = int(self._progress.get("bad_steps", 0))

    def _renamed_optim_state(self, state: Dict[str, Any]) -> Dict[str, Any]:
        """
        The checkpoint's optimiser state keyed by this run's param-store names. A checkpoint
        written before ``optim_param_keys`` existed is keyed by the names of its time: kept as
        they are, except a name relative to its module (the Ladder VAE's parameters had no
        prefix), which goes to the one parameter of that relative name.
        """
        keys = self._module_param_keys()
        current = {key: name for name, key in keys.items()}
        saved_keys = state.get("optim_param_keys")
        if saved_keys is None:
            by_relative: Dict[str, List[str]] = {}
            for name, key in keys.items():
                by_relative.setdefault(key.split(":", 1)[1], []).append(name)
            old = {rel: names[0] for rel, names in by_relative.items() if len(names) == 1}
            return {name if name in keys else old.get(name, name): value for name, value in state["optim"].items()}
        return {current.get(saved_keys.get(name), name): value for name, value in state["optim"].items()}

    def _restore_rank_rng(self, state: Dict[str, Any]) -> None:
        # state["rng"] is rank 0's stream. Another rank takes its own saved stream when the
        # checkpoint was written by as many ranks as there are now, else restarts from rank_seed.
        if self.dist.rank == 0:
            return
        streams = state.get("rng_per_rank") or []
        if len(streams) == self.dist.world_size:
            set_rng_state(streams[self.dist.rank])
        else:
            pyro.set_rng_seed(rank_seed(self.seed or 0, self.dist.rank, int(state["global_step"])))

    def _checkpoint_state(self) -> Dict[str, Any]:
        """:meth:`state_dict` plus every rank's random state (a collective call when distributed)."""
        state = self.state_dict()
        if self.dist.active:
            state["rng_per_rank"] = self.dist.gather_objects(state["rng"])
            state["world_size"] = self.dist.world_size
        return state

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Atomically write :meth:`state_dict` to ``path``."""
        return save_checkpoint(path, self.state_dict())

    def kept(self) -> str:
        """What the run folder holds of this run: ``"the previous last.pt (epoch 3) is intact"``."""
        if self.out_dir is None:
            return "nothing is written"
        if self.saved_position is None:
            return "no checkpoint of this run was written yet"
        epoch, batch = self.saved_position
        where = f"epoch {epoch}" if not batch else f"epoch {epoch} and {batch} batches of epoch {epoch + 1}"
        return f"the previous {LAST_CHECKPOINT} ({where}) is intact"

    def _write_failed(self, error: OSError, path: Path) -> RunOutputError:
        where = error.filename or path
        reason = (error.strerror or str(error)).rstrip(".")
        reason = reason[:1].lower() + reason[1:]
        return RunOutputError(f"{reason} writing {where}; {self.kept()}", str(where))

    def _save_checkpoints(self, state: Dict[str, Any], best: bool, position: Tuple[int, int]) -> None:
        """
        Write ``best.pt`` (if ``best``) and ``last.pt`` and record ``position`` as what ``last.pt``
        holds, with SIGINT and SIGTERM held back until that is done; a failed write is a
        :class:`RunOutputError`.
        """
        with hold_signals():
            for name in ((BEST_CHECKPOINT,) if best else ()) + (LAST_CHECKPOINT,):
                path = self.out_dir / name
                try:
                    save_checkpoint(path, state)
                except OSError as e:
                    raise self._write_failed(e, path) from None
            self.saved_position = position

    def load(self, path: Union[str, os.PathLike]) -> None:
        """
        Load a checkpoint written by :meth:`save` (``weights_only=True``).

        :raises CheckpointError: for a missing/corrupt file, another model kind, or a config that
            differs from this trainer's.
        """
        state = load_checkpoint(path, map_location=self.device, kind=self.kind)
        if self.config and state.get("config") and _model_config(state["config"]) != _model_config(self.config):
            raise CheckpointError(
                f"checkpoint {path} was written for another model configuration:\n"
                f"  checkpoint: {_model_config(state['config'])}\n  this run:   {_model_config(self.config)}"
            )
        self.load_state_dict(state)

    # ----------------------------------------------------------------------------------------
    # logging
    # ----------------------------------------------------------------------------------------

    def _log_path(self) -> Optional[Path]:
        return None if self.out_dir is None else self.out_dir / LOG_FILE

    def _write_log(self, record: Dict[str, Any]) -> None:
        path = self._log_path()
        if path is None or not self.dist.is_main:
            return
        try:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise self._write_failed(e, path) from None

    def _log_lines(self) -> Tuple[List[str], Optional[str]]:
        return _log_lines(self._log_path())

    def _check_log(self) -> None:
        if self._log_path() is not None:
            check_log_file(self._log_path())

    def _trim_log(self) -> None:
        """
        After a resume, drop log lines written after the checkpoint (they will be redone), and a
        last line cut short by the interruption. Lines of the interrupted epoch up to a mid-epoch
        checkpoint's step stay.
        """
        path = self._log_path()
        if path is None or not path.exists():
            return
        lines, tail = self._log_lines()
        if tail is not None:
            logger.info("dropped the last line of %s, cut short when the run was interrupted", path)
        kept = []
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)  # _check_log made sure
            epoch = record.get("epoch", 0)
            if epoch > self.epoch:
                # written during the epoch that was interrupted: kept up to a mid-epoch checkpoint
                if not (self._progress is not None and epoch == self.epoch + 1 and record.get("step", 0) <= self.global_step):
                    continue
            kept.append(line)
        tmp = path.with_suffix(".jsonl.tmp")
        try:
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise self._write_failed(e, path) from None

    def current_lr(self) -> float:
        """Learning rate of the (first) per-parameter optimiser, or the initial one before any step."""
        for opt in getattr(self.optim, "optim_objs", {}).values():
            opt = getattr(opt, "optimizer", opt)
            return float(opt.param_groups[0]["lr"])
        return self.initial_lr

    def _beta(self, terms) -> Optional[float]:
        if terms and "beta" in terms:
            return _to_float(terms["beta"])
        return _to_float(getattr(self.loss, "beta", None))

    # ----------------------------------------------------------------------------------------
    # training
    # ----------------------------------------------------------------------------------------

    def _all_params(self) -> List[torch.Tensor]:
        params = list(self.model.parameters()) + list(self.guide.parameters())
        params += [pyro.get_param_store()._params[n] for n in pyro.get_param_store().keys()]
        return params

    def step(self, *args, frames: Optional[float] = None) -> Dict[str, Any]:
        """
        One SVI step on a batch: loss and gradients via ``loss.loss_and_grads(model, guide,
        *args)``, then an optimiser step only if the loss and every gradient are finite.

        :param args: the loss arguments, usually ``x [batch, time, x_dim]`` and
            ``mask [batch, time]`` (bool).
        :param float frames: what the loss is a sum over (default: ``mask.sum()``, ``args[1]``).
        :returns: ``{"loss": float, "frames": float, "ok": bool, "terms": dict or None,
            "reason": str or None}``.
        """
        if hasattr(self.loss, "step"):
            self.loss.step = self.global_step
        if frames is None:
            frames = float(args[1].sum())
        ddp = self._data_parallel()
        if ddp is not None:
            loss, frames, reason, params = self._ddp_step(ddp, args, frames)
        else:
            loss, frames, reason, params = self._loss_and_grads(args, frames)
        if reason is None:
            self.optim(params)
            zero_grads(params)
            self.global_step += 1
            self._bad_steps = 0
            terms = getattr(self.loss, "last_terms", None)
            return {"loss": loss, "frames": frames, "ok": True, "terms": terms, "reason": None}
        # skipped: discard whatever gradients were accumulated, touch nothing else
        zero_grads(params | set(self._all_params()))
        self._bad_steps += 1
        return {"loss": loss, "frames": frames, "ok": False, "terms": None, "reason": reason}

    def _loss_and_grads(self, args, frames):
        """``loss.loss_and_grads`` on this rank, then (distributed) the hand-written all-reduce."""
        reason = None
        params = set()
        loss = float("nan")
        try:
            with poutine.trace(param_only=True) as param_capture:
                loss = self.loss.loss_and_grads(self.model, self.guide, *args)
            params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
            loss = _to_float(loss)
            if loss is None or not math.isfinite(loss):
                reason = f"non-finite loss {loss}"
            elif not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params):
                reason = "non-finite gradient"
        except ValueError as e:
            if not _is_invalid_value_error(e):
                raise
            reason = f"non-finite values: {str(e).splitlines()[0]}"
        if self.dist.active:
            loss, frames, reason, params = self._reduce_over_ranks(loss, frames, reason, params)
        return loss, frames, reason, params

    def _data_parallel(self) -> Optional[DistributedDataParallel]:
        """
        The :class:`~torch.nn.parallel.DistributedDataParallel` over the loss's ``ELBOModule``
        that this step's gradients ride on, or ``None`` for the hand-written path (one process, a
        loss that is not an ELBO with ``differentiable_loss``, ``DistributedContext(ddp=False)``,
        or modules without parameters yet). Rebuilt when the modules' parameters change (an
        autoguide creates its own at its first call; until then they are reduced by hand).
        """
        if not (self.dist.active and self.dist.ddp and _ddp_serves(self.loss)):
            return None
        params, seen = [], set()
        for module in (self.model, self.guide):
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        if not params:
            return None
        key = tuple(id(p) for p in params)
        if self._ddp is None or key != self._ddp_key:
            if self._ddp is not None:
                logger.debug("module parameters changed (%d -> %d): rebuilding DDP", len(self._ddp_key), len(key))
            step_module = ELBOStep(self.loss(self.model, self.guide), _is_invalid_value_error)
            self._ddp, self._ddp_key = self.dist.data_parallel(step_module, self.device), key
        return self._ddp

    def _ddp_step(self, ddp, args, frames):
        """
        One step's gradients through DDP (module parameters, all-reduced during ``backward``),
        then one small all-reduce of the parameters DDP does not hold, the loss, the frames and
        the failure flag (see :mod:`pyro_seq.training.distributed`).
        """
        reason = None
        loss = float("nan")
        with poutine.trace(param_only=True) as param_capture:
            value = ddp(*args)
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        value.backward()  # every rank, even one whose step failed: DDP's all-reduce needs them all
        error = ddp.module.error
        if error is not None:
            reason = f"non-finite values: {str(error).splitlines()[0]}"
        else:
            loss = _to_float(value)
            if loss is None or not math.isfinite(loss):
                reason = f"non-finite loss {loss}"
        reduce_list = self._reduce_params()
        for p in reduce_list:  # a missing gradient counts as zeros, as on the hand path
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        held = set(self._ddp_key)
        by_hand = [p for p in reduce_list if id(p) not in held]
        failed = reason is not None
        scalars = [0.0 if failed else loss, frames, 1.0 if failed else 0.0]
        if by_hand:
            total_loss, total_frames, n_failed = self.dist.reduce_step(by_hand, scalars)
        else:
            total_loss, total_frames, n_failed = self.dist.reduce_step([], scalars, scalars_only=True)
        return self._after_reduce(total_loss, total_frames, n_failed, reason, params, reduce_list)

    def _reduce_params(self) -> List[torch.Tensor]:
        """Every trainable leaf, in the same order on every rank (the all-reduce layout)."""
        seen, params = set(), []
        for module in (self.model, self.guide):
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        store = pyro.get_param_store()
        for name in sorted(store.keys()):
            p = store._params[name]
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        return params

    def _reduce_over_ranks(self, loss, frames, reason, params):
        """
        One all-reduce of the step's gradients, loss, frames and failure flag over the ranks (then
        a second, tiny one of ``loss.last_terms``): every rank ends with the same gradients and
        the same verdict, so they skip or apply the step together.
        """
        reduce_list = self._reduce_params()
        if self._reduce_list is not None and len(reduce_list) != len(self._reduce_list):
            logger.debug("parameter set changed: %d -> %d leaves", len(self._reduce_list), len(reduce_list))
        self._reduce_list = reduce_list
        failed = reason is not None or loss is None or not math.isfinite(loss)
        total_loss, total_frames, n_failed = self.dist.reduce_step(
            reduce_list, [0.0 if failed else loss, frames, 1.0 if failed else 0.0]
        )
        return self._after_reduce(total_loss, total_frames, n_failed, reason, params, reduce_list)

    def _after_reduce(self, total_loss, total_frames, n_failed, reason, params, reduce_list):
        """The step's verdict once its gradients are reduced, the same on every rank; then ``loss.last_terms`` reduced."""
        if self.dist.reduction == "mean":
            total_loss, total_frames = total_loss / self.dist.world_size, total_frames / self.dist.world_size
        if n_failed > 0:
            reason = reason or f"a step failed on {int(round(n_failed))} of {self.dist.world_size} ranks"
            return total_loss, total_frames, reason, params | set(reduce_list)
        if not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in reduce_list):
            return total_loss, total_frames, "non-finite gradient (after the all-reduce)", params | set(reduce_list)
        terms = getattr(self.loss, "last_terms", None)
        if terms:
            keys = sorted(k for k, v in terms.items() if _to_float(v) is not None)
            values = self.dist.reduce_step([], [_to_float(terms[k]) for k in keys], scalars_only=True)
            reduced = dict(terms)
            for key, value in zip(keys, values):
                weight = key in _WEIGHT_KEYS or key == "beta"
                reduced[key] = value / self.dist.world_size if weight or self.dist.reduction == "mean" else value
            self.loss.last_terms = reduced
        return total_loss, total_frames, None, params

    @torch.no_grad()
    def validate(self, epoch: Optional[int] = None) -> Optional[float]:
        """
        Validation bound: negative ELBO in nats per frame (total nats / total frames) through
        ``eval_fn``, with the modules in eval mode.

        :returns: the bound, or ``None`` without validation batches. When distributed, rank 0
            evaluates and every rank gets its figure.
        """
        value = self._validate_here(epoch) if self.dist.is_main else None
        return self.dist.broadcast_float(value)

    def _validate_here(self, epoch: Optional[int]) -> Optional[float]:
        batches = _batches_for(self.valid_batches, self.epoch if epoch is None else epoch)
        if batches is None:
            return None
        was_training = (self.model.training, self.guide.training)
        self.model.eval()
        self.guide.eval()
        try:
            moved = (to_device(b, self.device) for b in batches)
            return float(self.eval_fn(self.model, self.guide, moved))
        finally:
            self.model.train(was_training[0])
            self.guide.train(was_training[1])

    def request_stop(self, signum: Optional[int] = None) -> None:
        """
        Ask :meth:`fit` to stop at the next step boundary (safe to call from a signal handler):
        it writes ``last.pt`` there, with the position in the epoch, and raises
        :class:`TrainingInterrupted`. A run resumed from that checkpoint skips the batches already
        done in the epoch (the same batches: their order is fixed by the seed and the epoch) and
        ends as the uninterrupted run would (on CPU). Where the batches carry state from one step to
        the next (streamed chunks), the trainer stops without writing, and ``last.pt`` of the last
        completed epoch is what a resume starts from. Not for distributed runs: every rank would
        have to stop at the same step.

        :param int signum: the signal that asks for the stop, for the message and exit status.
        """
        if self._stop_signal is None:
            self._stop_signal = -1 if signum is None else int(signum)

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop_signal is not None

    def _stopped_by(self) -> str:
        return "a stop request" if self._stop_signal in (None, -1) else signal_name(self._stop_signal)

    def _interrupt(self, epoch: int, batch: int, total: Optional[int], progress: Optional[Dict[str, Any]]) -> None:
        """
        Stop before batch ``batch`` of epoch ``epoch + 1`` (0-based ``epoch``): write ``last.pt``
        with ``progress`` (``None``: the epoch cannot be resumed mid-way; nothing is written) and
        raise :class:`TrainingInterrupted`.
        """
        signum = None if self._stop_signal in (None, -1) else self._stop_signal
        of = f" of {total}" if total is not None else ""
        where = f"epoch {epoch + 1}, step {self.global_step} ({batch}{of} batches done)"
        if self.out_dir is None:
            raise TrainingInterrupted(f"stopped by {self._stopped_by()} at {where}; no out_dir, nothing saved", signum)
        self.stopping = True
        if progress is not None and self.dist.is_main:
            state = self._checkpoint_state()
            state["epoch_progress"] = progress
            self._save_checkpoints(state, best=False, position=(epoch, batch))
            try:
                self._write_log({"event": "interrupted", "epoch": epoch + 1, "step": self.global_step, "batch": batch, "signal": self._stopped_by()})
            except RunOutputError:
                pass  # the checkpoint is what a resume needs
            message = f"stopped by {self._stopped_by()} at {where}; saved {self.out_dir / LAST_CHECKPOINT} there"
        else:
            why = "streamed batches carry state from step to step"
            message = (
                f"stopped by {self._stopped_by()} at {where}; {self.kept()} ({why}, so a resume starts at an epoch boundary "
                f"and repeats epoch {epoch + 1})"
            )
            if self.saved_position is None:
                message = f"stopped by {self._stopped_by()} at {where}; no checkpoint of this run was written yet ({why}: a resume starts at an epoch boundary)"
        raise TrainingInterrupted(message, signum)

    def train_epoch(self) -> Dict[str, Any]:
        """
        Run one epoch of SVI steps; returns the epoch's training statistics. After a resume from a
        mid-epoch checkpoint, the batches already done are skipped and the epoch's running sums
        continue.

        :raises TrainingInterrupted: when :meth:`request_stop` was called, at the next step
            boundary.
        """
        epoch = self.epoch
        batches = _batches_for(self.train_batches, epoch)
        try:
            total = len(batches)  # type: ignore[arg-type]
        except TypeError:
            total = None
        if self.dist.active:
            batches = shard_batches(batches, self.dist.rank, self.dist.world_size)
            total = None if total is None else -(-total // self.dist.world_size)
        sums = {"loss": 0.0, "frames": 0.0, "ll": 0.0, "kl": 0.0, "ll_frames": 0.0, "term_frames": 0.0}
        extra: Dict[str, float] = {}  # other entries of loss.last_terms (e.g. Z-Forcing's aux_log_prob)
        extra_counts: Dict[str, int] = {}
        skipped = 0
        beta = None
        start_batch = 0
        progress, self._progress = self._progress, None
        if progress is not None and progress.get("epoch") == epoch + 1:  # resumed mid-epoch
            start_batch = int(progress["batch"])
            sums.update(progress["sums"])
            extra.update(progress.get("extra", {}))
            extra_counts.update(progress.get("extra_counts", {}))
            skipped, beta = int(progress.get("skipped", 0)), progress.get("beta")
            self._epoch_seconds = float(progress.get("seconds", 0.0))
        # mid-epoch checkpoints need batches that do not carry state from step to step, one process
        resumable = not self.dist.active
        self.model.train()
        self.guide.train()
        bar = tqdm(batches, total=total, desc=f"epoch {epoch + 1}", disable=not (self.progress and self.dist.is_main), leave=False, dynamic_ncols=True)
        for i, batch in enumerate(bar):
            if i < start_batch:
                continue  # done before the interruption (the same batch: the order is seeded)
            if getattr(batch, "carry", None) is not None:
                resumable = False
            if self._stop_signal is not None:
                bar.close()
                progress = None
                if resumable:
                    progress = {
                        "epoch": epoch + 1,
                        "batch": i,
                        "sums": dict(sums),
                        "extra": dict(extra),
                        "extra_counts": dict(extra_counts),
                        "skipped": skipped,
                        "beta": beta,
                        "bad_steps": self._bad_steps,
                        "seconds": self._epoch_seconds + time.perf_counter() - self._epoch_start,
                    }
                self._interrupt(epoch, i, total, progress)
            _, frames = _unpack(batch)  # counted on the host: no device sync for it
            args, _ = _unpack(to_device(batch, self.device))
            result = self.step(*args, frames=frames)
            if not result["ok"]:
                skipped += 1
                logger.warning("epoch %d batch %d: step skipped (%s)", epoch + 1, i, result["reason"])
                self._write_log({"event": "skipped_step", "epoch": epoch + 1, "step": self.global_step, "batch": i, "reason": result["reason"]})
                if self._bad_steps >= self.max_bad_steps:
                    bar.close()
                    raise NonFiniteLossError(
                        f"{self._bad_steps} consecutive SVI steps had a non-finite loss or gradient "
                        f"(last: {result['reason']}) at epoch {epoch + 1}, step {self.global_step}; "
                        "stopping. Try a lower --lr, a smaller --clip-norm, or check the data."
                    )
                continue
            frames = max(result["frames"], 1.0)
            sums["loss"] += result["loss"]
            sums["frames"] += result["frames"]
            terms = result["terms"]
            if terms and "log_likelihood" in terms and "kl" in terms:
                sums["ll"] += _to_float(terms["log_likelihood"]) or 0.0
                sums["kl"] += _to_float(terms["kl"]) or 0.0
                sums["ll_frames"] += result["frames"]
            if terms:
                sums["term_frames"] += result["frames"]
                for key, value in terms.items():
                    if key not in _TERM_KEYS and _to_float(value) is not None:
                        extra[key] = extra.get(key, 0.0) + _to_float(value)
                        if key in _WEIGHT_KEYS:
                            extra_counts[key] = extra_counts.get(key, 0) + 1
            beta = self._beta(terms)
            postfix = {"loss/frame": f"{result['loss'] / frames:.4f}"}
            if beta is not None:
                postfix["beta"] = f"{beta:.3f}"
            bar.set_postfix(postfix)
            if self.log_every and self.global_step % self.log_every == 0:
                record = {
                    "event": "step",
                    "epoch": epoch + 1,
                    "step": self.global_step,
                    "train_loss_per_frame": result["loss"] / frames,
                    "beta": beta,
                    "lr": self.current_lr(),
                }
                for key, value in (terms or {}).items():
                    if key not in ("beta",) + _WEIGHT_KEYS and _to_float(value) is not None:
                        record[f"{key}_per_frame"] = _to_float(value) / frames
                self._write_log(record)
        bar.close()
        if sums["frames"] == 0:
            raise NonFiniteLossError(f"epoch {epoch + 1}: no SVI step succeeded ({skipped} skipped)")
        stats = {
            "train_loss_per_frame": sums["loss"] / sums["frames"],
            "log_likelihood_per_frame": sums["ll"] / sums["ll_frames"] if sums["ll_frames"] else None,
            "kl_per_frame": sums["kl"] / sums["ll_frames"] if sums["ll_frames"] else None,
            "beta": beta,
            "skipped_steps": skipped,
        }
        for key, total in extra.items():
            if key in _WEIGHT_KEYS:  # a weight: its mean over the epoch's steps
                stats[key] = total / extra_counts[key]
            elif sums["term_frames"]:  # a log density: per frame
                stats[f"{key}_per_frame"] = total / sums["term_frames"]
        return stats

    def fit(self, num_epochs: int) -> Dict[str, Any]:
        """
        Train until ``num_epochs`` epochs in total are complete (counting epochs done before a
        resume), or until early stopping.

        :param int num_epochs: total number of epochs of the run.
        :returns: summary dict: ``epochs``, ``global_step``, ``best_valid``, ``best_epoch``,
            ``stopped_early``, ``history`` and checkpoint paths.
        :raises TrainingInterrupted: after :meth:`request_stop`, at the next step boundary (a
            stop asked for during the last epoch's validation lets the run finish).
        :raises RunOutputError: a checkpoint or log line could not be written (the message says
            what was kept).
        """
        while self.epoch < num_epochs and not self.stopped_early:
            start = self._epoch_start = time.perf_counter()
            self._epoch_seconds = 0.0  # seconds of this epoch before a mid-epoch resume
            stats = self.train_epoch()
            valid = self.validate(self.epoch)
            seconds = time.perf_counter() - start + self._epoch_seconds
            self.epoch += 1
            self.elapsed += seconds
            monitored = valid if valid is not None else stats["train_loss_per_frame"]
            improved = self.best_valid is None or monitored < self.best_valid
            if improved:
                self.best_valid, self.best_epoch, self.bad_epochs = monitored, self.epoch, 0
            else:
                self.bad_epochs += 1
            if self.patience is not None and self.bad_epochs >= self.patience:
                self.stopped_early = True
            # every rank decides on rank 0's clock
            elapsed = self.dist.broadcast_float(self.elapsed) if self.max_seconds is not None else self.elapsed
            self.out_of_time = self.max_seconds is not None and elapsed >= self.max_seconds
            record = {
                "event": "epoch",
                "epoch": self.epoch,
                "step": self.global_step,
                **stats,
                "valid_bound": valid,
                "best_valid": self.best_valid,
                "is_best": improved,
                "lr": self.current_lr(),
                "seconds": seconds,
                "elapsed": self.elapsed,
            }
            self.history.append(record)
            self._write_log(record)
            (logger.info if self.dist.is_main else logger.debug)(
                "epoch %d step %d: train %.4f %s%s, valid %s, beta %s, lr %.3g, %.1fs%s",
                self.epoch,
                self.global_step,
                stats["train_loss_per_frame"],
                self.units[0],
                ("" if stats["kl_per_frame"] is None else f" (kl {stats['kl_per_frame']:.4f}")
                + ("" if "aux_log_prob_per_frame" not in stats else f", aux log p {stats['aux_log_prob_per_frame']:.3f}")
                + ("" if stats["kl_per_frame"] is None else ")"),
                "n/a" if valid is None else self.units[1].format(valid),
                "n/a" if stats["beta"] is None else f"{stats['beta']:.3f}",
                self.current_lr(),
                seconds,
                " *" if improved else "",
            )
            if self.out_dir is not None:
                state = self._checkpoint_state()  # collective when distributed
                if self.dist.is_main:
                    self._save_checkpoints(state, best=improved, position=(self.epoch, 0))
                self.dist.barrier()  # no rank reads a checkpoint before it is complete
            finished = self.epoch >= num_epochs or self.stopped_early or self.out_of_time
            if self._stop_signal is not None and not finished:
                self.stopping = True
                signum = None if self._stop_signal == -1 else self._stop_signal
                saved = "nothing saved" if self.out_dir is None else f"saved {self.out_dir / LAST_CHECKPOINT} there"
                raise TrainingInterrupted(f"stopped by {self._stopped_by()} at the end of epoch {self.epoch}, step {self.global_step}; {saved}", signum)
            if self.out_of_time and not self.stopped_early:
                if self.dist.is_main:
                    logger.info(
                        "time budget reached after epoch %d: %.1f of %.1f s of training", self.epoch, self.elapsed, self.max_seconds
                    )
                    self._write_log({"event": "time_budget", "epoch": self.epoch, "elapsed": self.elapsed, "max_seconds": self.max_seconds})
                break
            if self.stopped_early and self.dist.is_main:
                logger.info(
                    "early stopping after epoch %d: no improvement for %d epochs (best %.4f at epoch %d)",
                    self.epoch,
                    self.bad_epochs,
                    self.best_valid,
                    self.best_epoch,
                )
        return {
            "epochs": self.epoch,
            "global_step": self.global_step,
            "best_valid": self.best_valid,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "out_of_time": self.out_of_time,
            "history": self.history,
            "best_checkpoint": None if self.out_dir is None else str(self.out_dir / BEST_CHECKPOINT),
            "last_checkpoint": None if self.out_dir is None else str(self.out_dir / LAST_CHECKPOINT),
        }


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return device


def _model_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """The part of a run config that fixes the parameters' shapes (``model``/``guide`` entries)."""
    if any(k in config for k in ("model", "guide")):
        return {k: config.get(k) for k in ("model", "guide")}
    return config
