"""
The command-line options every model family shares, declared once with one meaning each, and the
argument types of the family options.

A :class:`~pyro_seq.recipes.Recipe` names the shared options it takes (``Recipe.options``) and may
change their defaults (``Recipe.defaults``), never their meaning. :func:`add_shared_options` adds
them to a family's ``pyro-seq train KIND`` parser.
"""

import argparse
import math
from typing import Any, Dict, Iterable, List, Optional

__all__ = [
    "OWN_MEANINGS", "OptionError", "RUN_OPTIONS", "SHARED_OPTIONS", "add_shared_options", "device_name", "finite_float", "int_list",
    "nonnegative_float", "nonnegative_int", "number", "positive_float", "positive_int", "probability_below_one",
    "seed_int", "unit_interval",
]


class OptionError(ValueError):
    """A combination of command-line options a family does not serve (raised by
    :meth:`~pyro_seq.recipes.Recipe.check`, before anything runs): a usage error, which
    ``pyro-seq`` reports as one line with exit status 2 like the parser's own errors."""


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def number(kind=float, low=None, high=None, low_open=False, high_open=False, name=None):
    """
    An argparse type: a finite number of ``kind`` in a range, e.g. ``number(float, 0, low_open=True)``
    for a positive float. A value out of range is refused with the range in the message.
    """
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    wanted = (name or ("a number" if kind is float else "an integer")) + (" " + " and ".join(bounds) if bounds else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = wanted
    parse.bounds = (kind, low, high, low_open, high_open)  # for tests and help
    return parse


positive_float = number(float, 0, low_open=True)
nonnegative_float = number(float, 0)
nonnegative_int = number(int, 0)
unit_interval = number(float, 0, 1)
probability_below_one = number(float, 0, 1, high_open=True)
finite_float = number(float)
seed_int = number(int, 0, 2**32 - 1, name="a seed")


def device_name(text: str) -> str:
    """An argparse type: ``auto`` or a torch device string (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    if text == "auto":
        return text
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N (a torch device), got {text!r}")
    return text


def int_list(text: str) -> List[int]:
    """An argparse type: comma-separated positive integers, e.g. ``500,500``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive comma-separated integers, got {text!r}")
    return values


#: Shared options: destination -> (group, flags, argparse keywords). The group is the help section
#: ("data", "optimisation" or "run"); ``default`` is the value a family gets unless its
#: ``Recipe.defaults`` says otherwise.
SHARED_OPTIONS: Dict[str, tuple] = {
    "data": ("data", ("--data",), dict(default=None, help="data set (the family's choices are listed)")),
    "data_root": ("data", ("--data-root",), dict(default=None, help="data root (default: $PYRO_SEQ_DATA; evaluate and sample: else the root the run was trained with; else ~/.cache/pyro_seq); for --data wav, the folder of WAV files")),
    "batch_size": ("data", ("--batch-size",), dict(type=positive_int, default=16, help="examples per step (evaluate: default the run's)")),
    "z_dim": ("model", ("--z-dim",), dict(type=positive_int, default=None, help="size of the latent variable (per step in sequence models)")),
    "hidden_dims": ("model", ("--hidden-dims",), dict(type=int_list, default=None, help="widths of the hidden layers, comma-separated (the Ladder VAE: one deterministic block per stochastic layer, bottom to top)")),
    "hidden": ("model", ("--hidden",), dict(type=positive_int, default=None, help="units of the recurrent layer (per direction when bidirectional)")),
    "dense": ("model", ("--dense",), dict(type=positive_int, default=None, help="width of the dense layer before the output")),
    "dropout": ("model", ("--dropout",), dict(type=probability_below_one, default=0.0, help="dropout rate of the family's hidden layers (0: none)")),
    "prior_scale": ("model", ("--prior-scale",), dict(type=positive_float, default=1.0, help="scale of the Gaussian prior on the latent weights or parameters")),
    "out": ("run", ("--out",), dict(required=True, help="run folder (config.json, log.jsonl, last.pt, best.pt, test.json)")),
    "epochs": ("optimisation", ("--epochs",), dict(type=positive_int, default=100, help="total epochs of the run (counting epochs before a --resume)")),
    "lr": ("optimisation", ("--lr",), dict(type=positive_float, default=1e-3, help="Adam learning rate")),
    "lrd": ("optimisation", ("--lrd",), dict(type=number(float, 0, 1, low_open=True), default=1.0, help="learning-rate decay factor per step")),
    "clip_norm": ("optimisation", ("--clip-norm",), dict(type=positive_float, default=10.0, help="ClippedAdam gradient-norm clipping")),
    "weight_decay": ("optimisation", ("--weight-decay",), dict(type=nonnegative_float, default=0.0, help="ClippedAdam L2 weight decay")),
    "num_particles": ("optimisation", ("--num-particles",), dict(type=positive_int, default=1, help="samples of the latents per example in each training step")),
    "warmup_start": ("optimisation", ("--warmup-start",), dict(type=unit_interval, default=0.2, help="KL warm-up: the weight beta of the latent terms at step 0")),
    "warmup_steps": ("optimisation", ("--warmup-steps",), dict(type=nonnegative_int, default=1000, help="KL warm-up: steps over which beta rises linearly from --warmup-start to 1 (0: no warm-up)")),
    "patience": ("run", ("--patience",), dict(type=positive_int, default=None, help="early stopping patience in epochs (default: off)")),
    "mc_samples": ("run", ("--mc-samples",), dict(type=positive_int, default=8, help="Monte Carlo draws per test example (dropout masks, weights or glimpses) in the evaluation at the end")),
    "eval_samples": ("run", ("--eval-samples",), dict(type=nonnegative_int, default=100, help="samples per test example of the evaluation at the end (0: skip the test evaluation)")),
    "max_minutes": ("run", ("--max-minutes",), dict(type=positive_float, default=None, help="training-time budget: stop after the epoch that reaches it (counts time before a --resume; the log says where it stopped)")),
    "seed": ("run", ("--seed",), dict(type=seed_int, default=0, help="seed of initialisation, batch order and sampling")),
    "device": ("run", ("--device",), dict(type=device_name, default="auto", help="auto | cpu | cuda[:N]")),
    "resume": ("run", ("--resume",), dict(action="store_true", help="continue the run in OUT from its last.pt (the options that shape the run must be the same)")),
    "overwrite": ("run", ("--overwrite",), dict(action="store_true", help="replace the run already in OUT (its config, log and checkpoints) instead of refusing to start")),
    "distributed": ("run", ("--distributed",), dict(action="store_true", help="data-parallel over the processes torchrun starts (Gloo on CPU, NCCL on GPUs; each step sees WORLD_SIZE x --batch-size examples); rank 0 logs, validates, checkpoints and tests")),
    "log_every": ("run", ("--log-every",), dict(type=nonnegative_int, default=0, help="also log every N steps")),
    "max_bad_steps": ("run", ("--max-bad-steps",), dict(type=positive_int, default=10, help="stop after N consecutive non-finite steps")),
    "no_progress": ("run", ("--no-progress",), dict(action="store_true", help="no progress bar")),
}

#: Family options that share a name but not a meaning (each family's help says which it is); every
#: other option that several families take is a shared one.
OWN_MEANINGS = {
    "--a-dim": "SRNN: size of the guide's summary a_t; ADGM/SDGM: size of the auxiliary variable a",
    "--max-length": "sequence models: cut training sequences into pieces; protein models: cap each protein's length",
    "--limit": "semi-supervised: the first N images of every split; VAE/GAN: the first N training images",
}

#: Shared options every family takes (the run itself).
RUN_OPTIONS = ("out", "epochs", "lr", "clip_norm", "seed", "device", "resume", "overwrite", "max_minutes", "log_every", "max_bad_steps", "no_progress")


def add_shared_options(parser: argparse.ArgumentParser, names: Iterable[str], defaults: Dict[str, Any], choices: Optional[Dict[str, Iterable]] = None) -> None:
    """
    Add the shared options ``names`` (keys of :data:`SHARED_OPTIONS`) to ``parser``, in help
    groups, with the family's ``defaults`` in place of the table's and its ``choices`` (e.g. of
    ``data``: the data sets it serves).

    :raises KeyError: an unknown name.
    """
    names = list(dict.fromkeys(names))
    unknown = [n for n in list(names) + list(defaults) if n not in SHARED_OPTIONS]
    if unknown:
        raise KeyError(f"not shared options: {unknown}")
    groups = {g.title: g for g in parser._action_groups}
    for name in names:
        group, flags, kwargs = SHARED_OPTIONS[name]
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        kwargs = dict(kwargs)
        if name in defaults:
            kwargs["default"] = defaults[name]
        if choices and name in choices:
            kwargs["choices"] = tuple(choices[name])
        groups[group].add_argument(*flags, dest=name, **kwargs)
