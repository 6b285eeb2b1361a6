"""
One training recipe for every model family.

A family is one :class:`Recipe`: its command-line options, how a run config becomes
``(model, guide, loss)``, its data, its validation figure, and what it evaluates and draws after
training. :func:`train` is the recipe every family runs (run folder, resume check, seeding,
``config.json``, the :class:`~pyro_seq.training.Trainer`, the test record), and
:func:`restore` rebuilds a checkpoint with its family's builder
(:func:`pyro_seq.recipes.load_model` finds the family of any checkpoint). ``pyro-seq train|evaluate|sample KIND`` call
these for all kinds.
"""

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

import torch

from pyro_seq.recipes.options import RUN_OPTIONS, OptionError
from pyro_seq.training.checkpoint import CheckpointError, check_config, load_checkpoint
from pyro_seq.training.run_folder import (
    RunFolderError,
    RunFolderLock,
    claim_run_folder,
    config_changes,
    describe_changes,
    make_run_folder,
    resume_command,
    write_text_atomic,
)
from pyro_seq.training.trainer import (
    LAST_CHECKPOINT,
    LOG_FILE,
    RunOutputError,
    Trainer,
    TrainingInterrupted,
    check_log_file,
    resolve_device,
    signal_name,
)

__all__ = ["Recipe", "RunData", "append_jsonl", "evaluation_path", "resolved_path", "restore", "train"]

logger = logging.getLogger("pyro_seq.recipes")


class RunData(NamedTuple):
    """
    What a family's :meth:`Recipe.load_data` hands to :func:`train`.

    :param train_batches: ``epoch -> iterable of batches`` (or a re-iterable collection).
    :param valid_batches: the validation batches (callable or collection), or ``None``.
    :param dict config: the run config's ``"data"`` entry (JSON-able; what evaluation reloads).
    :param dict info: facts the model config needs (e.g. ``x_dim``).
    """

    train_batches: Any
    valid_batches: Any
    config: Dict[str, Any]
    info: Dict[str, Any] = {}


def resolved_path(path) -> Optional[str]:
    """``path`` as an absolute string for a run config, ``None`` kept."""
    return None if path is None else str(Path(path).resolve())


def evaluation_path(args, split: str = "test") -> Path:
    """Where ``pyro-seq evaluate`` writes its record: ``--output``, else ``<checkpoint stem>_<split>_eval.json`` beside the checkpoint (folders made)."""
    checkpoint = Path(args.checkpoint)
    path = Path(args.output) if args.output else checkpoint.with_name(f"{checkpoint.stem}_{split}_eval.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def append_jsonl(path: Union[str, Path], record: Dict[str, Any]) -> None:
    """Append one JSON line to ``path``."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


class Recipe:
    """
    A model family as the command line and the trainer see it. Subclasses set the class attributes
    and override the hooks; :func:`train` calls them in this order: :meth:`check`,
    :meth:`load_data`, :meth:`config`, :meth:`build`, :meth:`prepare`, :meth:`optim`,
    :meth:`eval_fn`, then after training :meth:`test`.

    :cvar dict kinds: ``kind -> one-line help`` of the ``pyro-seq train`` kinds this family serves.
    :cvar tuple options: shared options it takes beyond
        :data:`~pyro_seq.recipes.options.RUN_OPTIONS` (see
        :data:`~pyro_seq.recipes.options.SHARED_OPTIONS`).
    :cvar dict defaults: the family's defaults of shared options.
    :cvar tuple units: how the epoch log shows the training loss and the validation figure.
    :cvar tuple data_names: the choices of ``--data`` (none: the family takes no ``--data``).
    :cvar str distributed_reduction: how ``--distributed`` combines the ranks' gradients
        (``"sum"`` for losses summed over examples, ``"mean"`` for means).
    """

    kinds: Dict[str, str] = {}
    options: Tuple[str, ...] = ()
    defaults: Dict[str, Any] = {}
    units: Tuple[str, str] = ("nats/frame", "{:.4f} nats/frame")
    distributed_reduction: str = "sum"
    data_names: Tuple[str, ...] = ()

    @property
    def all_options(self) -> Tuple[str, ...]:
        """Every shared option of this family: the run options and :attr:`options`."""
        return tuple(dict.fromkeys(RUN_OPTIONS + tuple(self.options)))

    # ------------------------------------------------------------------ command line

    def options_for(self, kind: str) -> Tuple[str, ...]:
        """The shared options of ``train KIND`` (default: :attr:`all_options` for every kind)."""
        return self.all_options

    def defaults_for(self, kind: str) -> Dict[str, Any]:
        """The family's defaults of shared options for ``kind`` (default: :attr:`defaults`)."""
        return self.defaults

    def add_arguments(self, parser, kind: str) -> None:
        """Add the family's own options (not the shared ones) to the ``train KIND`` parser."""

    def check(self, kind: str, args, context) -> None:
        """Refuse option combinations the family does not serve (``ValueError``), before any data is read."""

    # ------------------------------------------------------------------ building

    def load_data(self, kind: str, args) -> RunData:
        """The training and validation batches and the data config."""
        raise NotImplementedError

    def config(self, kind: str, args, data: RunData) -> Dict[str, Any]:
        """The ``model``, ``guide`` and ``loss`` entries of the run config (JSON-able)."""
        raise NotImplementedError

    def train_config(self, kind: str, args) -> Dict[str, Any]:
        """Family entries of the run config's ``"train"`` part beyond the shared ones."""
        return {}

    def build(self, kind: str, config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
        """``(model, guide, loss)`` from a run config: what a checkpoint is rebuilt from."""
        raise NotImplementedError

    #: the family-specific ``pyro-seq evaluate`` options its :meth:`evaluate` reads (``cli.FAMILY_EVALUATE_OPTIONS``);
    #: any other one given is refused, not silently ignored
    evaluate_options: Tuple[str, ...] = ()

    def config_schema(self, kind: str) -> Dict[str, str]:
        """
        The keys a checkpoint's run config of ``kind`` must hold and their value kinds (see
        :func:`~pyro_seq.training.checkpoint.check_config`), checked before :meth:`build` on
        ``evaluate``, ``sample`` and ``--resume``. The default asks for the sections only; a family
        adds the keys its builder reads.
        """
        return dict(CONFIG_SECTIONS)

    def prepare(self, kind: str, args, model, guide, config: Dict[str, Any], out: Path) -> None:
        """Before training (after :meth:`build`): e.g. start from another checkpoint."""

    def optim(self, kind: str, args, config: Dict[str, Any]):
        """The Pyro optimiser, or ``None`` for the trainer's ``ClippedAdam``."""
        return None

    def eval_fn(self, kind: str, args, out: Path) -> Optional[Callable]:
        """The validation figure ``(model, guide, batches) -> float`` (lower is better), or ``None`` for the bound."""
        return None

    # ------------------------------------------------------------------ after training

    def test(self, kind: str, args, out: Path, device, trainer: Trainer) -> Optional[Dict[str, Any]]:
        """Evaluate the trained run on its test split; the record goes to ``test.json`` and the log. ``None``: no test."""
        return None

    def evaluate(self, args, model, guide, state: Dict[str, Any], device) -> int:
        """``pyro-seq evaluate`` of a checkpoint of this family."""
        raise ValueError(f"pyro-seq evaluate does not serve {state.get('kind')!r} checkpoints")

    def sample(self, args, model, guide, state: Dict[str, Any], device) -> int:
        """``pyro-seq sample`` of a checkpoint of this family."""
        raise ValueError(f"pyro-seq sample does not serve {state.get('kind')!r} checkpoints")

    def load_model(self, path, device="cpu", kind: Optional[str] = None):
        """A checkpoint of this family rebuilt with :meth:`build`: ``(model, guide, loss, checkpoint)`` (see :func:`restore`)."""
        return restore({k: self.build for k in self.kinds}, path, device, kind, {k: self.config_schema(k) for k in self.kinds})


#: The sections of every run config (see :meth:`Recipe.config_schema`).
CONFIG_SECTIONS = {"model": "dict", "guide": "?dict", "loss": "?dict", "data": "?dict", "train": "?dict"}


def _one_line(error: BaseException, limit: int = 300) -> str:
    """A (possibly multi-line) error message as one line of at most about ``limit`` characters."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip()).replace(":;", ":") or type(error).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


def restore(builders: Dict[str, Callable], path, device="cpu", kind: Optional[str] = None, schemas: Optional[Dict[str, Dict[str, str]]] = None):
    """
    Load a checkpoint, rebuild its model, guide and loss with ``builders[kind](kind, config)`` and
    load the weights (evaluation mode). Pyro's parameter store is cleared so it re-syncs from the
    modules.

    :param dict builders: ``kind -> build(kind, config)`` of the kinds that may be loaded.
    :param dict schemas: ``kind -> config schema`` (:meth:`Recipe.config_schema`) the checkpoint's
        config is checked against first (default: the sections of :data:`CONFIG_SECTIONS`).

    :returns: ``(model, guide, loss, checkpoint)``.
    :raises ~pyro_seq.training.checkpoint.CheckpointError: bad file, wrong kind, a config key
        missing or of the wrong type, a config the builder refuses, NaN or infinite weights, or
        weights that do not fit the rebuilt model.
    """
    import pyro

    device = torch.device(device)
    state = load_checkpoint(path, map_location=device, kind=kind)
    if state.get("kind") not in builders:
        raise CheckpointError(f"checkpoint {path} holds a model of kind {state.get('kind')!r}; known kinds: {sorted(builders)}")
    check_config(state.get("config"), (schemas or {}).get(state["kind"], CONFIG_SECTIONS), path)
    for section in ("model", "guide"):
        if not isinstance(state.get(section), dict):
            raise CheckpointError(f"checkpoint {path}: its {section!r} entry should be a state dict, got {type(state.get(section)).__name__}")
    try:
        model, guide, loss = builders[state["kind"]](state["kind"], state["config"])
    except (KeyError, TypeError, ValueError) as e:
        what = f"config key {e.args[0]!r} is missing" if isinstance(e, KeyError) and e.args else _one_line(e)
        raise CheckpointError(f"checkpoint {path}: its config does not rebuild a {state['kind']} model: {what}") from e
    model.to(device)
    guide.to(device)
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not match the model rebuilt from its config: {_one_line(e)}") from e
    model.eval()
    guide.eval()
    pyro.clear_param_store()
    return model, guide, loss, state


class _StopNow(BaseException):
    """A stop that cannot wait for a step boundary (before or after training, or a second signal);
    a ``BaseException``, like :class:`KeyboardInterrupt`, so that no ``except Exception`` holds it."""

    def __init__(self, signum: int, again: bool = False):
        super().__init__(signum)
        self.signum, self.again = signum, again


class _Run:
    """
    What :func:`train` knows of its run while it goes (the trainer, the phase), and its SIGINT /
    SIGTERM handler: during training the first signal asks the trainer to stop at the next step
    boundary (:meth:`~pyro_seq.training.Trainer.request_stop`); before or after training, or at a
    second signal before the trainer's last checkpoint is being written, the run stops at once
    (a checkpoint being written is finished first: :func:`~pyro_seq.training.checkpoint.hold_signals`).
    """

    def __init__(self, out: Path):
        self.out = out
        self.trainer: Optional[Trainer] = None
        self.phase = "setup"  # setup -> fit -> test
        self.signum: Optional[int] = None

    def handle(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if self.phase == "fit" and self.trainer is not None:
            if self.trainer.stopping:
                return  # its checkpoint is being written; it stops right after
            if first:
                self.trainer.request_stop(signum)
                logger.info("%s: stopping after the current step, then saving %s (send it again to stop at once)", signal_name(signum), LAST_CHECKPOINT)
                return
        raise _StopNow(signum, again=not first)

    def kept(self) -> str:
        if self.trainer is not None:
            return self.trainer.kept()
        if (self.out / LAST_CHECKPOINT).exists():
            return f"the run's {LAST_CHECKPOINT} is as it was"
        return "no checkpoint was written"

    def stopped_now(self, stop: _StopNow) -> TrainingInterrupted:
        name = signal_name(stop.signum)
        if self.phase == "setup":
            text = f"stopped by {name} before training started; {self.kept()}"
        elif self.phase == "test":
            text = f"stopped by {name} after training, before the test finished; the run's checkpoints are complete ({self.kept()})"
        else:
            t = self.trainer
            text = f"stopped at once by a second {name} at epoch {t.epoch + 1}, step {t.global_step}; {self.kept()}"
        return TrainingInterrupted(text, stop.signum)


def _argv(args) -> list:
    """The command line of ``args`` (set by the ``pyro-seq`` command), else ``sys.argv``."""
    argv = getattr(args, "argv", None)
    return list(sys.argv[1:] if argv is None else argv)


def train(recipe: Recipe, kind: str, args) -> int:
    """
    Train one run of ``kind`` from parsed options ``args`` (the shared options of
    :data:`~pyro_seq.recipes.options.SHARED_OPTIONS` and the family's own), then test it.

    In one process (not ``--distributed``) and the main thread, SIGINT and SIGTERM stop the run
    cleanly: during training at the next step boundary, with ``last.pt`` written there (see
    :meth:`~pyro_seq.training.Trainer.request_stop`); a second signal, or one before or after
    training, stops it at once. Either way the run folder's lock is released and
    :class:`~pyro_seq.training.TrainingInterrupted` says what was kept and how to resume.

    :returns: the exit status (0).
    :raises ~pyro_seq.training.TrainingInterrupted: stopped by a signal (exit status 128 +
        the signal's number); the message ends with the command that resumes the run.
    :raises ~pyro_seq.training.run_folder.RunFolderError: the run folder cannot be made or
        written (a full disk, a read-only file system, ...): the message names the file and what
        was kept.
    """
    context = None
    if getattr(args, "distributed", False):
        from pyro_seq.training.distributed import init_distributed

        context, device = init_distributed(args.device, reduction=recipe.distributed_reduction)
        if not context.is_main:  # rank 0 speaks for the run
            logging.getLogger("pyro_seq").setLevel(logging.WARNING)
    else:
        device = resolve_device(args.device)
    run = _Run(Path(args.out))
    handlers = {}
    if context is None and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, run.handle)
    again = f"resume with: {resume_command(_argv(args), args.out)}"
    try:
        try:
            return _train(recipe, kind, args, device, context, run)
        except _StopNow as stop:
            raise TrainingInterrupted(f"{run.stopped_now(stop)}; {again}", stop.signum) from None
        except TrainingInterrupted as e:
            raise TrainingInterrupted(f"{e}; {again}", e.signum) from None
        except RunOutputError as e:
            raise RunFolderError(f"{e}; when that is fixed, {again}") from None
        except OSError as e:
            if e.filename is None or not _inside(e.filename, run.out):
                raise
            raise RunFolderError(f"{_reason(e)} writing {e.filename}; {run.kept()}; when that is fixed, {again}") from None
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if context is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _inside(path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def _reason(error: OSError) -> str:
    """``"no space left on device"`` from an OSError."""
    text = (error.strerror or str(error)).rstrip(".")
    return text[:1].lower() + text[1:]


#: Run-config entries (or prefixes ending in ".") a ``--resume`` may change: they are applied from
#: the resumed step on and recorded; everything else shapes the run (the modules, the data, the
#: optimiser whose state the checkpoint restores) and must match.
RESUME_MAY_CHANGE = ("loss.", "data.data_root", "data.stream_length", "train.epochs", "train.patience", "train.world_size")


def _may_change_on_resume(key: str) -> bool:
    return any(key.startswith(k) if k.endswith(".") else key == k for k in RESUME_MAY_CHANGE)


def _train(recipe: Recipe, kind: str, args, device, context, run: _Run) -> int:
    main_rank = context is None or context.is_main
    try:  # a usage error: refused before the run folder is made
        recipe.check(kind, args, context)
    except OptionError:
        raise
    except ValueError as e:
        raise OptionError(str(e)) from e
    out = make_run_folder(args.out)
    if not main_rank:  # rank 0 holds the folder for the run
        return _train_in_folder(recipe, kind, args, device, context, out, run)
    with RunFolderLock(out):  # the folder is writable: checked before any data is read
        claim_run_folder(out, resume=args.resume, overwrite=getattr(args, "overwrite", False))
        return _train_in_folder(recipe, kind, args, device, context, out, run)


def _train_in_folder(recipe: Recipe, kind: str, args, device, context, out: Path, run: _Run) -> int:
    import pyro

    main_rank = context is None or context.is_main
    data = recipe.load_data(kind, args)
    config = recipe.config(kind, args, data)
    config["data"] = data.config
    config["train"] = {
        "lr": args.lr,
        "lrd": getattr(args, "lrd", 1.0),
        "clip_norm": args.clip_norm,
        "weight_decay": getattr(args, "weight_decay", 0.0),
        "seed": args.seed,
        "patience": getattr(args, "patience", None),
        "epochs": args.epochs,
        "world_size": 1 if context is None else context.world_size,
        **recipe.train_config(kind, args),
    }
    resumed_changes = []
    if args.resume and (out / LAST_CHECKPOINT).exists():
        saved = load_checkpoint(out / LAST_CHECKPOINT, map_location="cpu", kind=kind)["config"]
        check_config(saved, recipe.config_schema(kind), out / LAST_CHECKPOINT)
        resumed_changes = config_changes(saved, config, ("model", "guide", "loss", "data", "train"))
        fixed = [c for c in resumed_changes if not _may_change_on_resume(c[0])]
        if fixed:
            raise RunFolderError(
                f"--resume: {out} was trained with other options ({describe_changes(fixed)}); a resumed run "
                "keeps what shapes it and may change only the objective (e.g. --elbo, --num-particles, the warm-up), "
                "--epochs, --patience, --max-minutes, --stream-length, --data-root, --device and the test options: "
                "start a new run (another --out, or --overwrite)"
            )

    if args.resume and main_rank:
        check_log_file(out / LOG_FILE)  # before anything in the folder changes
    pyro.set_rng_seed(args.seed)
    model, guide, loss = recipe.build(kind, config)
    recipe.prepare(kind, args, model, guide, config, out)
    if main_rank:
        write_text_atomic(out / "config.json", json.dumps({"kind": kind, **config}, indent=2) + "\n")
    trainer = Trainer(
        model,
        guide,
        loss,
        data.train_batches,
        data.valid_batches,
        optim=recipe.optim(kind, args, config),
        lr=args.lr,
        clip_norm=args.clip_norm,
        lrd=getattr(args, "lrd", 1.0),
        weight_decay=getattr(args, "weight_decay", 0.0),
        device=device,
        out_dir=out,
        seed=args.seed,
        patience=getattr(args, "patience", None),
        kind=kind,
        config=config,
        progress=False if args.no_progress else None,
        log_every=args.log_every,
        max_bad_steps=args.max_bad_steps,
        eval_fn=recipe.eval_fn(kind, args, out),
        resume=args.resume,
        units=recipe.units,
        distributed=context,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
    )
    if resumed_changes and main_rank:
        logger.info("resumed with %s", describe_changes(resumed_changes, limit=None))
        append_jsonl(out / LOG_FILE, {"event": "resume_options", "epoch": trainer.epoch, "changes": [list(c) for c in resumed_changes]})
    n_params = sum(p.numel() for m in (model, guide) for p in m.parameters())
    logger.info("%s: %d parameters on %s; output in %s", kind, n_params, device, out)
    if context is not None:
        logger.info(
            "distributed: %d ranks, %s, %d examples per step in all (%d per rank)",
            context.world_size,
            torch.distributed.get_backend(),
            context.world_size * args.batch_size,
            args.batch_size,
        )
    start = time.perf_counter()
    run.trainer, run.phase = trainer, "fit"
    summary = trainer.fit(args.epochs)
    run.phase = "test"
    if trainer.stop_requested:  # asked during the last epoch's validation: training ended anyway
        raise _StopNow(run.signum or signal.SIGINT)
    best = summary["best_valid"]
    logger.info(
        "training done: %d epochs, %d steps, best valid %s at epoch %s (%.1fs this session, %.1fs in all)",
        summary["epochs"],
        summary["global_step"],
        "n/a" if best is None else recipe.units[1].format(best),
        summary["best_epoch"],
        time.perf_counter() - start,
        trainer.elapsed,
    )
    if not main_rank:
        return 0
    record = recipe.test(kind, args, out, device, trainer)
    if record is not None:
        append_jsonl(out / LOG_FILE, {"event": "test", **record})
        write_text_atomic(out / "test.json", json.dumps({"event": "test", **record}, indent=2) + "\n")
    return 0

