"""
The ``pyro-seq`` command: ``train``, ``evaluate`` and ``sample``, for every registered model family.

Examples::

    pyro-seq train srnn --data jsb --out runs/srnn_jsb --epochs 300
    pyro-seq train srnn --data jsb --out runs/srnn_jsb --epochs 400 --resume   # continue
    pyro-seq evaluate runs/srnn_jsb/best.pt --split test --num-samples 100
    pyro-seq sample runs/srnn_jsb/best.pt --num 4 --steps 128 --out runs/srnn_jsb/samples
    pyro-seq train adgm --data dynamic_mnist --labels-per-class 10 --out runs/adgm_mnist100

Every kind runs the same code: the shared options of
:data:`~pyro_seq.recipes.options.SHARED_OPTIONS` and the family's own, then
:func:`pyro_seq.recipes.train` with the family's :class:`~pyro_seq.recipes.Recipe` (from
:data:`~pyro_seq.recipes.registry.RECIPES`); ``evaluate`` and ``sample`` rebuild the checkpoint
with :func:`~pyro_seq.recipes.load_model` and hand it to the same recipe.
"""

import argparse
import logging
import sys
from typing import Optional, Sequence

from pyro_seq.recipes import load_model, sequence, train
from pyro_seq.recipes.options import OptionError, add_shared_options, number, positive_float, positive_int
from pyro_seq.recipes.registry import FAMILIES, RECIPES
from pyro_seq.training.trainer import resolve_device

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "UsageError", "build_parser", "main"]

#: Exit status of an expected failure at run time (bad checkpoint, missing data, diverged training).
EXIT_FAILURE = 1
#: Exit status of a usage error (argparse's convention): an unknown command, model, data set or
#: option, a value of the wrong type or out of its range, or options that do not go together.
EXIT_USAGE = 2

logger = logging.getLogger("pyro_seq.cli")


class UsageError(Exception):
    """A bad command line (unknown command, model, data set or option, bad value): :func:`main`
    reports it as one ``pyro-seq: error:`` line and returns :data:`EXIT_USAGE` (2)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (it may be swapped)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(level: str) -> None:
    log = logging.getLogger("pyro_seq")
    log.setLevel(getattr(logging, level.upper()))
    if not any(getattr(h, "_pyro_seq_cli", False) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._pyro_seq_cli = True
        log.addHandler(handler)
        log.propagate = False



def cmd_train(args: argparse.Namespace) -> int:
    return train(RECIPES[args.model], args.model, args)


#: ``pyro-seq evaluate`` options a family reads only if it names them in ``Recipe.evaluate_options`` (with their defaults)
FAMILY_EVALUATE_OPTIONS = {
    "split": "test", "data": None, "max_sequences": None, "every": 1, "stream_length": None, "fivo_particles": None,
    "latent_health": False, "batch_size": None, "classifier": None,
}  # fmt: skip

#: the most steps ``pyro-seq sample`` draws per sequence (about seven hours of music at 0.25 s a step)
MAX_SAMPLE_STEPS = 100_000


def _check_writable_path(option: str, path: str, folder: bool) -> None:
    """One line (exit status 1) when ``path`` cannot be the output folder / file it is meant to be."""
    from pathlib import Path

    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise ValueError(f"{option} {path}: it is a file, not a folder; choose another {option}")
    if not folder and p.is_dir():
        raise ValueError(f"{option} {path}: it is a folder; give the path of a JSON file")
    for parent in (p if folder else p.parent, *(p if folder else p.parent).parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, so nothing can be written under it")
            break


def cmd_evaluate(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.output:
        _check_writable_path("--output", args.output, folder=False)
    model, guide, _, state = load_model(args.checkpoint, device=device)
    recipe = RECIPES[state["kind"]]
    for name, default in FAMILY_EVALUATE_OPTIONS.items():
        if getattr(args, name) != default and name not in recipe.evaluate_options:
            served = ", ".join("--" + o.replace("_", "-") for o in recipe.evaluate_options)
            raise OptionError(
                f"--{name.replace('_', '-')} does not apply to pyro-seq evaluate of a {state['kind']} checkpoint"
                + (f" (of the family options it reads {served})" if served else " (it reads none of the family options)")
            )
    return recipe.evaluate(args, model, guide, state, device)


def cmd_sample(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    _check_writable_path("--out", args.out, folder=True)
    model, guide, _, state = load_model(args.checkpoint, device=device)
    return RECIPES[state["kind"]].sample(args, model, guide, state, device)


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-seq`` argument parser: one ``train KIND`` parser per registered kind."""
    parser = _Parser(prog="pyro-seq", description="Train, evaluate and sample pyro_seq models.")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    commands = parser.add_subparsers(dest="command", required=True)

    # train <kind>
    train_parser = commands.add_parser("train", help="train a model")
    kinds = train_parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    for recipe in FAMILIES:
        for kind, help_text in recipe.kinds.items():
            p = kinds.add_parser(kind, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
            add_shared_options(p, recipe.options_for(kind), recipe.defaults_for(kind), {"data": recipe.data_names})
            recipe.add_arguments(p, kind)
            p.set_defaults(func=cmd_train)

    # evaluate
    p = commands.add_parser("evaluate", help="test bounds of a checkpoint", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=("train", "valid", "test"), default="test")
    p.add_argument("--num-samples", type=positive_int, default=100, help="K for the importance-sampled bound (vaegan, vae: prior samples for the sample-quality figures; ~2000 for a stable Frechet distance)")
    p.add_argument("--classifier", default=None, help="vaegan, vae on mnist: the classifier checkpoint of the sample-quality figures (default: the cache dir's mnist_classifier.pt, trained if missing)")
    p.add_argument("--fivo-particles", type=positive_int, default=None, help="also the FIVO bound with this many particles (ESS resampling at 0.5)")
    p.add_argument("--data", choices=sequence.DATA_NAMES, default=None, help="default: the checkpoint's data set")
    p.add_argument("--max-sequences", type=positive_int, default=None, help="only the first N sequences")
    p.add_argument("--every", type=positive_int, default=1, help="only every N-th sequence (after --max-sequences)")
    p.add_argument("--stream-length", type=positive_int, default=None, help="srnn, zforcing: the ELBO of whole sequences in chunks of L frames with carried state (memory flat in the length; the smoother sees one chunk)")
    p.add_argument("--output", default=None, help="JSON output (default: next to the checkpoint)")
    p.add_argument("--latent-health", action="store_true", help="also KL and active units per stochastic layer (Ladder VAE), with a PNG next to the JSON")
    add_shared_options(p, ("data_root", "batch_size", "seed", "device"), {"batch_size": None})
    p.set_defaults(func=cmd_evaluate)

    # sample
    p = commands.add_parser("sample", help="generate piano rolls (PNG + MIDI), or image grids (samples, reconstructions)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--num", type=positive_int, default=4)
    p.add_argument("--steps", type=number(int, 1, MAX_SAMPLE_STEPS), default=128)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds-per-step", type=positive_float, default=0.25)
    add_shared_options(p, ("data_root", "seed", "device"), {})
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    Entry point of ``pyro-seq`` (``python -m pyro_seq``).

    :param argv: arguments (default ``sys.argv[1:]``).
    :returns: exit status: 0 on success, 2 for a usage error (unknown command, model, data set or
        option, a value of the wrong type or out of range, a bad ``--device``, options that do not
        go together), 1 for an expected failure at run time (bad checkpoint, missing data, diverged
        training), 128 + the signal's number for a run stopped by SIGINT (130) or SIGTERM (143);
        each is reported as one ``pyro-seq:`` line.
    """
    from pyro_seq.data import DataError
    from pyro_seq.training.checkpoint import CheckpointError
    from pyro_seq.training.trainer import NonFiniteLossError, TrainingInterrupted

    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"pyro-seq: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the resume command of a stopped run
    _setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as e:  # SIGINT / SIGTERM: what was kept and how to resume
        print(f"pyro-seq: {e}", file=sys.stderr)
        return e.exit_status
    except OptionError as e:
        print(f"pyro-seq: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (CheckpointError, DataError, NonFiniteLossError, ValueError) as e:
        print(f"pyro-seq: error: {_without_trace_shapes(e)}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as e:  # a file system failure no check above foresaw: one line naming the path
        print(f"pyro-seq: error: {e.strerror or e}: {e.filename}" if e.filename else f"pyro-seq: error: {e}", file=sys.stderr)
        return EXIT_FAILURE


def _without_trace_shapes(error: BaseException) -> str:
    """The message of ``error`` less the table of trace shapes Pyro appends to an error raised inside a model or guide."""
    message = str(error)
    head, sep, _ = message.partition("\nTrace Shapes:")
    return head.rstrip() if sep else message
