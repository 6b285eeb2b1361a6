"""
Training: :class:`Trainer` (SVI with validation, early stopping, time budgets, atomic checkpoints
and ``resume``), the checkpoint format (:mod:`~pyro_seq.training.checkpoint`: no pickles, atomic
writes, RNG states) and data parallelism over ``torchrun`` processes
(:mod:`~pyro_seq.training.distributed`). Nothing here parses command lines.
"""

from pyro_seq.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_seq.training.trainer import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    LOG_FILE,
    LogFileError,
    NonFiniteLossError,
    RunOutputError,
    Trainer,
    TrainingInterrupted,
    default_eval_fn,
    resolve_device,
)

__all__ = [
    "BEST_CHECKPOINT",
    "CheckpointError",
    "LAST_CHECKPOINT",
    "LOG_FILE",
    "LogFileError",
    "NonFiniteLossError",
    "RunOutputError",
    "Trainer",
    "TrainingInterrupted",
    "default_eval_fn",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
]
