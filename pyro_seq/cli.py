"""
The ``pyro-seq`` command: ``train``, ``evaluate`` and ``sample``.

Examples::

    pyro-seq train srnn --data jsb --out runs/srnn_jsb --epochs 300
    pyro-seq train srnn --data jsb --out runs/srnn_jsb --epochs 400 --resume   # continue
    pyro-seq evaluate runs/srnn_jsb/best.pt --split test --num-samples 100
    pyro-seq sample runs/srnn_jsb/best.pt --num 4 --steps 128 --out runs/srnn_jsb/samples
    pyro-seq train adgm --data dynamic_mnist --labels-per-class 10 --out runs/adgm_mnist100

Models are rebuilt from checkpoints through the registry :data:`MODELS`: a *builder* turns the
JSON-able config stored in a checkpoint into ``(model, guide, loss)``. A new model adds one entry
to :data:`MODELS` and one to :data:`TRAIN_OPTIONS` (its command-line arguments and how they map to
its config).
"""

import argparse
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed

from pyro_seq import protein, semi_supervised, spatial, vaegan
from pyro_seq.semi_supervised import SEMI_SUPERVISED_MODELS, build_semi_supervised
from pyro_seq.trainer import add_run_arguments

__all__ = ["MODELS", "TRAIN_OPTIONS", "UsageError", "DATA_NAMES", "build_lvae", "build_srnn", "build_zforcing", "load_model", "main", "resolve_device"]

logger = logging.getLogger("pyro_seq.cli")

#: Data set names accepted by ``--data`` (see :func:`pyro_seq.data.load_sequences`): music
#: piano rolls, ``mnist`` (row-wise binarized MNIST, x_dim 28) and ``wav`` (the WAV files in the
#: folder given by ``--data-root``, frames of 200 samples, x_dim 200), and image sets for the
#: Ladder VAE as one-frame sequences of 784 pixels: ``binarized_mnist`` (the fixed binarization),
#: ``dynamic_mnist`` and ``omniglot`` (grey levels, binarized afresh in every training batch).
DATA_NAMES = (
    "chorales", "jsb", "nottingham", "musedata", "piano", "mnist", "wav",
    "binarized_mnist", "dynamic_mnist", "omniglot",
)


# --------------------------------------------------------------------------------------------
# Model registry
# --------------------------------------------------------------------------------------------


def make_warmup_loss(config: Dict[str, Any]):
    """
    The training objective described by ``config`` (the ``"loss"`` entry of a run config)::

        {"elbo": "meanfield" | "trace", "warmup_start": 0.2, "warmup_steps": 1000,
         "num_particles": 1, "aux_weight": 0.0, "aux_start": None, "aux_steps": 0,
         "backward_weight": 0.0}

    A warm-up ELBO; with ``"elbo": "iwae"`` the importance-weighted bound with ``num_particles``
    samples per sequence (:class:`~pyro_seq.bounds.IWAELoss`, no warm-up: β = 1); with a non-zero
    ``aux_weight`` or ``backward_weight`` the Z-Forcing ELBO
    (its auxiliary weight ramps linearly from ``aux_start``, default ``aux_weight``, to
    ``aux_weight`` over ``aux_steps`` steps).
    """
    from pyro_seq import losses

    kind = config.get("elbo", "meanfield")
    if kind not in ("trace", "meanfield", "iwae"):
        raise ValueError(f"loss elbo must be one of ['meanfield', 'trace', 'iwae'], got {kind!r}")
    if kind == "iwae":
        # the importance-weighted bound with num_particles samples per sequence; no warm-up
        from pyro_seq.bounds import IWAELoss

        if float(config.get("aux_weight", 0.0)) or float(config.get("backward_weight", 0.0)):
            raise ValueError("--elbo iwae has no auxiliary cost; drop --aux-weight/--backward-weight")
        return IWAELoss(num_particles=int(config.get("num_particles", 1)))
    schedule = losses.LinearSchedule(
        start=float(config.get("warmup_start", 0.2)), end=1.0, steps=int(config.get("warmup_steps", 1000))
    )
    kwargs = dict(schedule=schedule, num_particles=int(config.get("num_particles", 1)))
    aux_weight = float(config.get("aux_weight", 0.0))
    backward_weight = float(config.get("backward_weight", 0.0))
    if aux_weight == 0.0 and backward_weight == 0.0:
        cls = losses.WarmupTrace_ELBO if kind == "trace" else losses.WarmupTraceMeanField_ELBO
        return cls(**kwargs)
    aux_start = config.get("aux_start")
    aux_schedule = losses.LinearSchedule(
        start=aux_weight if aux_start is None else float(aux_start), end=aux_weight, steps=int(config.get("aux_steps", 0))
    )
    cls = losses.ZForcingTrace_ELBO if kind == "trace" else losses.ZForcingTraceMeanField_ELBO
    return cls(aux_schedule=aux_schedule, backward_weight=backward_weight, **kwargs)


def build_srnn(config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """
    Build an SRNN, its guide and its loss from a run config::

        {"model": SRNN kwargs, "guide": SRNNGuide kwargs, "loss": see make_warmup_loss}

    :returns: ``(model, guide, loss)``.
    """
    from pyro_seq.guides import SRNNGuide
    from pyro_seq.models import SRNN

    model = SRNN(**config["model"])
    guide = SRNNGuide(model, **config.get("guide", {}))
    loss = make_warmup_loss(config.get("loss", {}))
    return model, guide, loss


def build_zforcing(config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """
    Build a Z-Forcing model, its guide and its loss from a run config::

        {"model": ZForcing kwargs, "guide": ZForcingGuide kwargs, "loss": see make_warmup_loss}
    """
    from pyro_seq.guides import ZForcingGuide
    from pyro_seq.models import ZForcing

    model = ZForcing(**config["model"])
    guide = ZForcingGuide(model, **config.get("guide", {}))
    loss = make_warmup_loss(config.get("loss", {}))
    return model, guide, loss


def build_lvae(config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """
    Build a Ladder VAE, its guide and its loss from a run config::

        {"model": LadderVAE kwargs, "guide": {"kind": "ladder" | "bottom-up", ...guide kwargs},
         "loss": see make_warmup_loss}
    """
    from pyro_seq.guides import BottomUpGuide, LadderGuide
    from pyro_seq.models import LadderVAE

    model = LadderVAE(**config["model"])
    guide_config = dict(config.get("guide", {}))
    kind = guide_config.pop("kind", "ladder")
    if kind not in LVAE_GUIDES:
        raise ValueError(f"lvae guide kind must be one of {list(LVAE_GUIDES)}, got {kind!r}")
    loss_config = config.get("loss", {})
    if kind == "bottom-up" and loss_config.get("elbo", "meanfield") == "meanfield":
        raise ValueError(
            "the bottom-up guide samples z_i before z_{i+1}, so the per-layer analytic KL of the "
            "meanfield ELBO is not valid for it; use --elbo trace"
        )
    guide = (LadderGuide if kind == "ladder" else BottomUpGuide)(model, **guide_config)
    return model, guide, make_warmup_loss(loss_config)


#: Guides of the Ladder VAE on the command line.
LVAE_GUIDES = ("ladder", "bottom-up")

#: Model registry: kind -> builder ``config -> (model, guide, loss)``.
MODELS: Dict[str, Callable[[Dict[str, Any]], Tuple[Any, Any, Any]]] = {
    "srnn": build_srnn,
    "zforcing": build_zforcing,
    "lvae": build_lvae,
}
for _kind in SEMI_SUPERVISED_MODELS:  # m2, adgm, sdgm: see pyro_seq.semi_supervised
    MODELS[_kind] = functools.partial(build_semi_supervised, _kind)
for _kind in vaegan.IMAGE_MODELS:  # vaegan, vae: see pyro_seq.vaegan
    MODELS[_kind] = functools.partial(vaegan.build_vaegan, _kind)
for _kind in protein.PROTEIN_MODELS:  # localizer, secondary-structure: see pyro_seq.protein
    MODELS[_kind] = functools.partial(protein.build_protein, _kind)
for _kind in spatial.SPN_MODELS:  # rnn-spn, ffn-spn, cnn: see pyro_seq.spatial
    MODELS[_kind] = functools.partial(spatial.build_spn, _kind)


def _add_srnn_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SRNN")
    group.add_argument("--d-dim", type=int, default=300, help="deterministic GRU state size (default 300)")
    group.add_argument("--z-dim", type=int, default=100, help="latent size (default 100)")
    group.add_argument("--a-dim", type=int, default=300, help="guide summary size a_t (default 300)")
    group.add_argument("--hidden-dim", type=int, default=500, help="MLP width (default 500)")
    group.add_argument("--guide", choices=("smoother", "filter"), default="smoother", help="guide kind (default smoother)")
    group.add_argument("--res-q", dest="res_q", action=argparse.BooleanOptionalAction, default=True, help="residual posterior mean (default on)")
    group.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli", help="emission (default bernoulli)")
    group.add_argument("--dropout", type=float, default=0.0, help="dropout on the GRU input and the emission MLP (default 0)")
    _add_auxiliary_arguments(group)


def _auxiliary_kind(args: argparse.Namespace) -> Optional[str]:
    # --auxiliary default: record p_xi(b | z) only when its weight is used
    if args.auxiliary is None:
        return "z" if args.aux_weight > 0 else None
    return None if args.auxiliary == "none" else args.auxiliary


def _add_auxiliary_arguments(group) -> None:
    group.add_argument("--auxiliary", choices=("z", "hz", "none"), default=None, help="inputs of the Z-Forcing auxiliary predictor p_xi(b_t | .) (default: z when --aux-weight > 0, else none)")


def _srnn_config(args: argparse.Namespace, x_dim: int) -> Dict[str, Any]:
    if args.backward_weight > 0:
        raise ValueError("--backward-weight: the SRNN guide has no backward prediction head (Z-Forcing only)")
    return {
        "model": {
            "x_dim": x_dim,
            "d_dim": args.d_dim,
            "z_dim": args.z_dim,
            "hidden_dim": args.hidden_dim,
            "likelihood": args.likelihood,
            "dropout": args.dropout,
        },
        "guide": {
            "kind": args.guide,
            "res_q": args.res_q,
            "a_dim": args.a_dim,
            "hidden_dim": args.hidden_dim,
            "auxiliary": _auxiliary_kind(args),
        },
    }


def _add_zforcing_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Z-Forcing")
    group.add_argument("--emb-dim", type=int, default=128, help="frame embedding / latent projection size (default 128)")
    group.add_argument("--h-dim", type=int, default=256, help="forward LSTM size (default 256)")
    group.add_argument("--b-dim", type=int, default=None, help="backward LSTM size (default: --h-dim)")
    group.add_argument("--z-dim", type=int, default=32, help="latent size (default 32)")
    group.add_argument("--hidden-dim", type=int, default=256, help="MLP width (default 256)")
    group.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli", help="emission (default bernoulli)")
    group.add_argument("--dropout", type=float, default=0.0, help="dropout on the frame embedding and the emission MLP (default 0)")
    _add_auxiliary_arguments(group)


def _zforcing_config(args: argparse.Namespace, x_dim: int) -> Dict[str, Any]:
    return {
        "model": {
            "x_dim": x_dim,
            "emb_dim": args.emb_dim,
            "h_dim": args.h_dim,
            "z_dim": args.z_dim,
            "hidden_dim": args.hidden_dim,
            "likelihood": args.likelihood,
            "dropout": args.dropout,
        },
        "guide": {
            "b_dim": args.b_dim,
            "hidden_dim": args.hidden_dim,
            "auxiliary": _auxiliary_kind(args),
            "backward_prediction": args.backward_weight > 0,
        },
    }


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive comma-separated integers, got {text!r}")
    return values


def _add_lvae_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ladder VAE")
    group.add_argument("--z-dims", type=_int_list, default=[64, 32, 16, 8, 4], help="latent sizes, bottom to top (default: the paper's 5 layers 64,32,16,8,4)")
    group.add_argument("--hidden-dims", type=_int_list, default=[512, 256, 128, 64, 32], help="deterministic block widths per layer, bottom to top")
    group.add_argument("--num-layers", type=_positive_int, default=2, help="dense layers per deterministic block")
    group.add_argument("--guide", choices=LVAE_GUIDES, default="ladder", help="ladder (LVAE) or bottom-up (the paper's VAE baseline; needs --elbo trace)")
    group.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True, help="batch normalisation in the deterministic blocks")
    group.add_argument("--share-top-down", action=argparse.BooleanOptionalAction, default=True, help="the ladder guide uses the model's top-down blocks (as in the paper)")


def _lvae_config(args: argparse.Namespace, x_dim: int) -> Dict[str, Any]:
    if len(args.z_dims) != len(args.hidden_dims):
        raise ValueError(f"--z-dims and --hidden-dims need one entry per layer, got {args.z_dims} and {args.hidden_dims}")
    if args.aux_weight > 0 or args.backward_weight > 0:
        raise ValueError("--aux-weight/--backward-weight are Z-Forcing options; the Ladder VAE has no auxiliary cost")
    guide = {"kind": args.guide}
    if args.guide == "ladder":
        guide["share_top_down"] = args.share_top_down
    return {
        "model": {
            "x_dim": x_dim,
            "z_dims": args.z_dims,
            "hidden_dims": args.hidden_dims,
            "num_layers": args.num_layers,
            "batch_norm": args.batch_norm,
        },
        "guide": guide,
    }


#: Training command-line options per kind: ``(add_arguments(parser), config_from_args(args, x_dim))``.
#: ``config_from_args`` returns the ``"model"``/``"guide"`` part of the run config.
TRAIN_OPTIONS: Dict[str, Tuple[Callable, Callable]] = {
    "srnn": (_add_srnn_arguments, _srnn_config),
    "zforcing": (_add_zforcing_arguments, _zforcing_config),
    "lvae": (_add_lvae_arguments, _lvae_config),
}


def load_model(path, device="cpu", kind: Optional[str] = None):
    """
    Rebuild a model, guide and loss from a checkpoint through :data:`MODELS` and load the weights.
    Pyro's parameter store is cleared so it re-syncs from the loaded modules.

    :param path: checkpoint file.
    :param device: where to put the modules.
    :param str kind: expected model kind (any registered kind if ``None``).
    :returns: ``(model, guide, loss, checkpoint)``.
    :raises ~pyro_seq.checkpoint.CheckpointError: bad file or unknown kind.
    """
    import pyro

    from pyro_seq.checkpoint import CheckpointError, load_checkpoint

    device = torch.device(device)
    state = load_checkpoint(path, map_location=device, kind=kind)
    if state.get("kind") not in MODELS:
        raise CheckpointError(f"checkpoint {path} holds a model of kind {state.get('kind')!r}; known kinds: {sorted(MODELS)}")
    model, guide, loss = MODELS[state["kind"]](state["config"])
    model.to(device)
    guide.to(device)
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not match the model rebuilt from its config: {e}") from e
    model.eval()
    guide.eval()
    pyro.clear_param_store()
    return model, guide, loss, state


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return device


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


def _chunk(sequences: Sequence, max_length: Optional[int]) -> List:
    """Cut each sequence into consecutive pieces of at most ``max_length`` frames."""
    if not max_length:
        return list(sequences)
    return [seq[i : i + max_length] for seq in sequences for i in range(0, len(seq), max_length)]


def _data_root(args_root: Optional[str], config: Dict[str, Any]) -> Optional[str]:
    # --data-root, else $PYRO_SEQ_DATA, else the root the run was trained with (if it still
    # exists), else the library default.
    if args_root is not None or os.environ.get("PYRO_SEQ_DATA"):
        return args_root
    root = config.get("data", {}).get("data_root")
    return root if root and Path(root).is_dir() else None


def _load_split(name: str, split: str, data_root: Optional[str], limit: Optional[int] = None) -> List:
    from pyro_seq.data import load_sequences

    return list(load_sequences(name, split, data_root=data_root, limit=limit))


def _evaluate(
    model, guide, sequences, batch_size: int, num_samples: int, device, fivo_particles: Optional[int] = None
) -> Dict[str, Any]:
    from pyro_seq.bounds import evaluate
    from pyro_seq.data import make_batches

    if fivo_particles and not hasattr(model, "filter_step"):
        raise ValueError(f"--fivo-particles: {type(model).__name__} does not implement the sequential step protocol")
    batches = (b.to(device) for b in make_batches(sequences, batch_size, shuffle=False))
    with torch.no_grad():
        return evaluate(model, guide, batches, num_samples=num_samples, fivo_particles=fivo_particles)


def _bound_summary(result: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for bound in ("elbo", "iwae", "fivo"):
        if bound in result:
            out[bound] = {
                "nats_per_frame_total": result[bound]["total"],
                "nats_per_frame_seq_mean": result[bound]["seq_mean"],
            }
            if "per_sequence" in result[bound]:
                out[bound]["nats_per_sequence"] = result[bound]["per_sequence"]
    for key in ("num_samples", "fivo_particles", "num_sequences", "num_frames"):
        if key in result:
            out[key] = result[key]
    return out


def _print_bounds(summary: Dict[str, Any], header: str) -> None:
    k = summary.get("num_samples", "?")
    print(header)
    print(f"  {'bound':<14} {'total nats/frames':>18} {'mean over sequences':>20} {'nats per sequence':>18}")
    names = {"elbo": "-ELBO", "iwae": f"-IWAE (K={k})", "fivo": f"-FIVO (K={summary.get('fivo_particles')})"}
    for bound in ("elbo", "iwae", "fivo"):
        if bound in summary:
            v = summary[bound]
            per_seq = v.get("nats_per_sequence")
            per_seq = "" if per_seq is None else f"{per_seq:.4f}"
            print(f"  {names[bound]:<14} {v['nats_per_frame_total']:>18.4f} {v['nats_per_frame_seq_mean']:>20.4f} {per_seq:>18}")
    print(f"  ({summary.get('num_sequences', '?')} sequences, {summary.get('num_frames', '?')} frames; nats per frame or per sequence, lower is better)")


def _append_jsonl(path: Path, record: Dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    context = None
    if args.distributed:
        from pyro_seq.distributed import init_distributed

        context, device = init_distributed(args.device)
        if not context.is_main:  # rank 0 speaks for the run
            logging.getLogger("pyro_seq").setLevel(logging.WARNING)
    else:
        device = resolve_device(args.device)
    try:
        return _train(args, device, context)
    finally:
        if context is not None:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def _train(args: argparse.Namespace, device, context) -> int:
    import pyro

    from pyro_seq.data import make_batches
    from pyro_seq.trainer import BEST_CHECKPOINT, LAST_CHECKPOINT, LOG_FILE, Trainer

    main_rank = context is None or context.is_main
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from pyro_seq.data import load_sequences

    if args.stream_length:
        _check_streaming(args, context)
    train_data = load_sequences(args.data, "train", data_root=args.data_root, limit=args.max_train_sequences)
    dynamic = bool(getattr(train_data, "dynamic_binarization", False))
    if args.stream_length and dynamic:
        raise ValueError("--stream-length: data binarized afresh per batch is not streamed")
    train = _chunk(list(train_data), args.max_length)
    valid = _load_split(args.data, "valid", args.data_root, args.max_eval_sequences)[:: args.eval_every]
    x_dim = int(train[0].shape[-1])
    logger.info(
        "data %s: %d train pieces (%d frames), %d valid sequences (%d frames)",
        args.data,
        len(train),
        sum(len(s) for s in train),
        len(valid),
        sum(len(s) for s in valid),
    )

    add_arguments, config_from_args = TRAIN_OPTIONS[args.model]
    config = config_from_args(args, x_dim)
    config["loss"] = {
        "elbo": args.elbo,
        "warmup_start": args.warmup_start,
        "warmup_steps": args.warmup_steps,
        "num_particles": args.num_particles,
        "aux_weight": args.aux_weight,
        "aux_start": args.aux_start,
        "aux_steps": args.aux_steps,
        "backward_weight": args.backward_weight,
    }
    config["data"] = {
        "name": args.data,
        "data_root": None if args.data_root is None else str(Path(args.data_root).resolve()),
        "max_train_sequences": args.max_train_sequences,
        "max_eval_sequences": args.max_eval_sequences,
        "eval_every": args.eval_every,
        "max_length": args.max_length,
        "stream_length": args.stream_length,
        "batch_size": args.batch_size,
    }
    config["train"] = {
        "lr": args.lr,
        "lrd": args.lrd,
        "clip_norm": args.clip_norm,
        "seed": args.seed,
        "patience": args.patience,
        "epochs": args.epochs,
        "world_size": 1 if context is None else context.world_size,
    }

    if args.resume:
        from pyro_seq.checkpoint import check_resume_data

        check_resume_data(out / LAST_CHECKPOINT, args.model, config["data"], ("name", "max_train_sequences", "max_length", "batch_size"))
        # stream_length may change on resume: it changes the truncation, not the model

    pyro.set_rng_seed(args.seed)
    model, guide, loss = MODELS[args.model](config)
    if main_rank:
        (out / "config.json").write_text(json.dumps({"kind": args.model, **config}, indent=2) + "\n")

    def train_batches(epoch: int):
        if args.stream_length:  # chunks of long pieces with carried state (truncated backprop)
            from pyro_seq.streaming import stream_batches

            return stream_batches(train, args.batch_size, args.stream_length, seed=args.seed, epoch=epoch)
        batches = make_batches(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch)
        if dynamic:  # grey levels: a fresh binarization per batch, deterministic in (seed, epoch)
            from pyro_seq.data import binarize_batches

            return binarize_batches(batches, args.seed, epoch)
        return batches

    def valid_batches(epoch: int):
        return make_batches(valid, args.batch_size, shuffle=False)

    trainer = Trainer(
        model,
        guide,
        loss,
        train_batches,
        valid_batches,
        lr=args.lr,
        clip_norm=args.clip_norm,
        lrd=args.lrd,
        weight_decay=args.weight_decay,
        device=device,
        out_dir=out,
        seed=args.seed,
        patience=args.patience,
        kind=args.model,
        config=config,
        progress=False if args.no_progress else None,
        log_every=args.log_every,
        max_bad_steps=args.max_bad_steps,
        resume=args.resume,
        distributed=context,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
    )
    n_params = sum(p.numel() for m in (model, guide) for p in m.parameters())
    logger.info("%s: %d parameters on %s; output in %s", args.model, n_params, device, out)
    if context is not None:
        logger.info(
            "distributed: %d ranks, %s, %d sequences per step in all (%d per rank)",
            context.world_size,
            torch.distributed.get_backend(),
            context.world_size * args.batch_size,
            args.batch_size,
        )
    start = time.perf_counter()
    summary = trainer.fit(args.epochs)
    logger.info(
        "training done: %d epochs, %d steps, best valid %.4f nats/frame at epoch %s (%.1fs this session)",
        summary["epochs"],
        summary["global_step"],
        summary["best_valid"] if summary["best_valid"] is not None else float("nan"),
        summary["best_epoch"],
        time.perf_counter() - start,
    )

    best = out / BEST_CHECKPOINT
    if args.eval_samples <= 0 or not main_rank:
        return 0
    model, guide, _, state = load_model(best, device=device, kind=args.model)
    test = _load_split(args.data, "test", args.data_root, args.max_eval_sequences)[:: args.eval_every]
    result = _bound_summary(_evaluate(model, guide, test, args.batch_size, args.eval_samples, device))
    record = {"event": "test", "checkpoint": str(best), "epoch": state["epoch"], "split": "test", **result}
    _append_jsonl(out / LOG_FILE, record)
    (out / "test.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info(
        "test bound (best checkpoint, epoch %d): -ELBO %.4f, -IWAE(K=%d) %.4f nats/frame (total nats / total frames)",
        state["epoch"],
        result["elbo"]["nats_per_frame_total"],
        args.eval_samples,
        result["iwae"]["nats_per_frame_total"],
    )
    _print_bounds(result, f"test bound of {best} (epoch {state['epoch']}):")
    return 0


#: Model kinds whose model and guide take a :class:`~pyro_seq.streaming.StreamCarry`.
STREAMING_MODELS = ("srnn", "zforcing")


def _check_streaming(args: argparse.Namespace, context) -> None:
    """The combinations --stream-length does not serve, refused with the reason."""
    if args.model not in STREAMING_MODELS:
        raise ValueError(f"--stream-length: only {' and '.join(STREAMING_MODELS)} carry their state across chunks, not {args.model}")
    if args.max_length:
        raise ValueError("--stream-length and --max-length are alternatives: carried chunks or independent pieces")
    if context is not None:
        raise ValueError("--stream-length with --distributed is not supported yet (streams are not sharded)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import pyro

    device = resolve_device(args.device)
    model, guide, _, state = load_model(args.checkpoint, device=device)
    if state["kind"] in SEMI_SUPERVISED_MODELS:  # classification figures instead of bounds
        return semi_supervised.cmd_evaluate(args, model, guide, state, device)
    if state["kind"] in vaegan.IMAGE_MODELS:  # reconstruction and sample-quality figures
        return vaegan.cmd_evaluate(args, model, guide, state, device)
    if state["kind"] in protein.PROTEIN_MODELS:  # accuracy and calibration on the protocol's test sets
        return protein.cmd_evaluate(args, model, guide, state, device)
    if state["kind"] in spatial.SPN_MODELS:  # digit and sequence error on the variant's test split
        return spatial.cmd_evaluate(args, model, guide, state, device)
    config = state["config"]
    data = config.get("data", {})
    name = args.data or data.get("name")
    if name is None:
        raise ValueError("the checkpoint does not name its data set; pass --data")
    pyro.set_rng_seed(args.seed)
    seqs = _load_split(name, args.split, _data_root(args.data_root, config), args.max_sequences)[:: args.every]
    batch_size = args.batch_size or data.get("batch_size", 16)
    start = time.perf_counter()
    if args.stream_length:
        result = _streaming_evaluate(args, state, model, guide, seqs, batch_size, device)
    else:
        result = _bound_summary(_evaluate(model, guide, seqs, batch_size, args.num_samples, device, args.fivo_particles))
    record = {
        "checkpoint": str(args.checkpoint),
        "kind": state["kind"],
        "epoch": state.get("epoch"),
        "data": name,
        "split": args.split,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
        **result,
    }
    output = Path(args.output) if args.output else Path(args.checkpoint).with_name(f"{Path(args.checkpoint).stem}_{args.split}_eval.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    if args.latent_health:
        record["layers"] = _layer_health(model, guide, seqs, batch_size, device, output.with_suffix(".layers.png"))
    output.write_text(json.dumps(record, indent=2) + "\n")
    _print_bounds(result, f"{name} {args.split} bound of {args.checkpoint} (epoch {state.get('epoch')}):")
    print(f"  written to {output}")
    return 0


def _streaming_evaluate(args, state, model, guide, seqs, batch_size, device) -> Dict[str, Any]:
    from pyro_seq.streaming import streaming_elbo

    if state["kind"] not in STREAMING_MODELS:
        raise ValueError(f"--stream-length: only {' and '.join(STREAMING_MODELS)} checkpoints evaluate in chunks, not {state['kind']}")
    if args.fivo_particles:
        raise ValueError("--stream-length gives the chunked ELBO only; drop --fivo-particles")
    result = streaming_elbo(model, guide, seqs, batch_size, args.stream_length, device=device)
    summary = {
        "elbo": {
            "nats_per_frame_total": result["elbo"]["total"],
            "nats_per_frame_seq_mean": result["elbo"]["seq_mean"],
            "nats_per_sequence": result["elbo"]["per_sequence"],
        },
        "num_samples": 1,
        "stream_length": args.stream_length,
        "num_sequences": result["num_sequences"],
        "num_frames": result["num_frames"],
    }
    return summary


def _sample_images(args: argparse.Namespace, model, guide, state: Dict[str, Any], device) -> int:
    """Prior samples and test-set reconstructions of an image model, as PNG grids and .npy."""
    import pyro
    import pyro.poutine as poutine

    from pyro_seq.plotting import image_grid_png

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(model.image_shape)
    epoch = state.get("epoch")
    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        x = model.generate(args.num).reshape(-1, *shape).cpu()  # [num, H, W] Bernoulli means
    paths = [image_grid_png(x, out / "samples.png", title=f"{state['kind']} prior samples (epoch {epoch})")]
    np.save(out / "samples.npy", x.numpy())
    config = state["config"]
    name = config.get("data", {}).get("name")
    if name:
        test = _load_split(name, "test", _data_root(args.data_root, config))
        step = max(1, len(test) // args.num)  # spread over the split (the MNIST test split is sorted by class)
        images = torch.stack([torch.as_tensor(test[i]) for i in range(0, step * args.num, step)]).to(device)  # [num, 1, x_dim]
        with torch.no_grad():
            guide_trace = poutine.trace(guide).get_trace(images)
            recon = poutine.replay(model, trace=guide_trace)(images).reshape(-1, *shape).cpu()  # [num, H, W]
        pairs = torch.stack([images.reshape(-1, *shape).cpu(), recon], 1).reshape(-1, *shape)  # data, reconstruction, ...
        paths.append(image_grid_png(pairs, out / "reconstructions.png", title=f"{name}: each test image followed by its reconstruction (Bernoulli means)"))
    logger.info("wrote %s", ", ".join(map(str, paths)))
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def _layer_health(model, guide, sequences, batch_size: int, device, png: Path) -> Dict[str, Any]:
    """Per-layer KL and active units (hierarchical models) as a JSON-able dict, and their plot."""
    from pyro_seq.data import make_batches
    from pyro_seq.diagnostics import layer_health, plot_layer_kl

    if not hasattr(model, "z_dims"):
        raise ValueError(f"--latent-health reports stochastic layers; {type(model).__name__} has none (use pyro_seq.diagnostics.latent_health)")
    batches = (b.to(device) for b in make_batches(sequences, batch_size, shuffle=False))
    healths = layer_health(model, guide, batches)
    plot_layer_kl(healths, path=png)
    for name, h in healths.items():
        print(
            f"  {name}: KL {h.kl_per_frame:.3f} nats per data point, {h.active_units} of {h.kl_per_unit.size} units "
            f"active (posterior-mean variance > {h.threshold:g}), {h.informative_units} informative (KL > 0.01 nats)"
        )
    print(f"  per-layer KL plot: {png}")
    return {
        name: {
            "kl_nats": h.kl_per_frame,
            "active_units": h.active_units,
            "informative_units": h.informative_units,
            "units": int(h.kl_per_unit.size),
            "kl_per_unit": h.kl_per_unit.tolist(),
            "posterior_mean_variance": h.posterior_mean_variance.tolist(),
        }
        for name, h in healths.items()
    }


def cmd_sample(args: argparse.Namespace) -> int:
    import pyro

    from pyro_seq.midi import piano_roll_png, write_midi

    device = resolve_device(args.device)
    model, guide, _, state = load_model(args.checkpoint, device=device)
    if state["kind"] in SEMI_SUPERVISED_MODELS:  # one row of samples per class
        return semi_supervised.cmd_sample(args, model, guide, state, device)
    if state["kind"] in vaegan.IMAGE_MODELS:  # reconstruction and sample grids
        return vaegan.cmd_sample(args, model, guide, state, device)
    if hasattr(model, "image_shape"):
        return _sample_images(args, model, guide, state, device)
    if not hasattr(model, "generate"):
        raise ValueError(f"model kind {state['kind']!r} has no generate() method")
    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        x = model.generate(args.num, args.steps)  # [num, steps, x_dim]
    x = x.detach().cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = state["config"].get("data", {}).get("name")
    if data == "mnist" or x.size(-1) != 88:
        # not piano rolls: images drawn row by row (sequential MNIST) or real-valued frames (audio)
        from pyro_seq.plotting import image_grid_png, signal_png

        title = f"{state['kind']} samples (epoch {state.get('epoch')})"
        if data == "mnist":
            paths = [image_grid_png(x, out / "samples.png", title=title)]
        else:
            paths = [signal_png(x[i], out / f"sample_{i:03d}.png", title=f"{title}, {i}") for i in range(x.size(0))]
        np.save(out / "samples.npy", x.numpy())
        logger.info("wrote %s and %s", ", ".join(map(str, paths)), out / "samples.npy")
        print(f"wrote {x.size(0)} samples ({args.steps} steps) to {out}")
        return 0
    for i in range(x.size(0)):
        roll = x[i]  # [steps, x_dim]
        png = piano_roll_png(roll, out / f"sample_{i:03d}.png", title=f"{state['kind']} sample {i} (epoch {state.get('epoch')})")
        mid = write_midi(roll, out / f"sample_{i:03d}.mid", seconds_per_step=args.seconds_per_step)
        logger.info("wrote %s and %s", png, mid)
    print(f"wrote {x.size(0)} samples ({args.steps} steps) to {out}")
    return 0


# --------------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------------


class UsageError(Exception):
    """A bad command line (unknown command, model, data set or option, bad value): :func:`main`
    reports it as one ``pyro-seq: error:`` line and returns 1."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-seq`` argument parser."""
    parser = _Parser(prog="pyro-seq", description="Train, evaluate and sample pyro_seq models.")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    commands = parser.add_subparsers(dest="command", required=True)

    # train <kind>
    train = commands.add_parser("train", help="train a model with SVI")
    kinds = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    for kind, (add_arguments, _) in TRAIN_OPTIONS.items():
        p = kinds.add_parser(kind, help=f"train {kind}", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        g = p.add_argument_group("data")
        g.add_argument("--data", choices=DATA_NAMES, default="jsb", help="music piano rolls (x_dim 88), mnist (row-wise binarized MNIST, x_dim 28) or wav (frames of 200 samples of the WAV files under --data-root, x_dim 200; use --likelihood gaussian)")
        g.add_argument("--data-root", default=None, help="data root (default: $PYRO_SEQ_DATA, else ~/.cache/pyro_seq); for --data wav, the folder of WAV files (required)")
        g.add_argument("--max-train-sequences", type=_positive_int, default=None, help="use only the first N training sequences (smoke tests)")
        g.add_argument("--max-eval-sequences", type=_positive_int, default=None, help="use only the first N valid/test sequences (smoke tests)")
        g.add_argument("--eval-every", type=_positive_int, default=1, help="validate and test on every N-th sequence only (a fixed subset spread over the split; e.g. 10 for MNIST, whose test split is sorted by class)")
        g.add_argument("--max-length", type=_positive_int, default=None, help="cut training sequences into pieces of at most L frames (valid/test stay whole)")
        g.add_argument("--stream-length", type=_positive_int, default=None, help="srnn, zforcing: train on chunks of L frames with the state carried from chunk to chunk of the same piece (truncated backpropagation; --batch-size streams); valid/test stay whole")
        g.add_argument("--batch-size", type=_positive_int, default=16)
        g = p.add_argument_group("optimisation")
        g.add_argument("--out", required=True, help="output directory (checkpoints, log.jsonl)")
        g.add_argument("--epochs", type=_positive_int, default=100, help="total epochs of the run (counting epochs before a --resume)")
        g.add_argument("--lr", type=float, default=1e-3)
        g.add_argument("--lrd", type=float, default=1.0, help="learning-rate decay factor per step")
        g.add_argument("--clip-norm", type=float, default=10.0, help="ClippedAdam gradient clipping")
        g.add_argument("--weight-decay", type=float, default=0.0, help="ClippedAdam L2 weight decay")
        g.add_argument("--elbo", choices=("meanfield", "trace", "iwae"), default="meanfield", help="analytic-KL (meanfield) or Monte Carlo (trace) warm-up ELBO, or the importance-weighted bound with --num-particles samples (iwae; no warm-up)")
        g.add_argument("--num-particles", type=_positive_int, default=1)
        g.add_argument("--warmup-start", type=float, default=0.2, help="β at step 0")
        g.add_argument("--warmup-steps", type=int, default=1000, help="steps of linear β warm-up to 1")
        g.add_argument("--aux-weight", type=float, default=0.0, help="Z-Forcing auxiliary cost weight w (0: off)")
        g.add_argument("--aux-start", type=float, default=None, help="w at step 0, ramped linearly to --aux-weight (default: --aux-weight)")
        g.add_argument("--aux-steps", type=int, default=0, help="steps of the linear ramp of w")
        g.add_argument("--backward-weight", type=float, default=0.0, help="weight of the backward RNN's prediction loss (Z-Forcing only; 0: off)")
        g.add_argument("--distributed", action="store_true", help="data-parallel over the processes torchrun starts (Gloo on CPU, NCCL on GPUs; gradients summed over ranks, so each step sees WORLD_SIZE x --batch-size sequences); rank 0 logs, validates, checkpoints and tests")
        g.add_argument("--eval-samples", type=int, default=100, help="K for the test IWAE bound at the end (0: skip the test evaluation)")
        add_run_arguments(g, _positive_int)
        add_arguments(p)
        p.set_defaults(func=cmd_train)
    for kind in SEMI_SUPERVISED_MODELS:
        p = kinds.add_parser(kind, help=f"train {kind} (semi-supervised classification)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        semi_supervised.add_arguments(p, _positive_int, _int_list)
        p.set_defaults(func=functools.partial(semi_supervised.cmd_train, resolve_device=resolve_device, load_model=load_model))
    for kind, help_text in (("vaegan", "VAE/GAN: feature-space likelihood, three routed losses"), ("vae", "the plain VAE with the VAE/GAN encoder and decoder")):
        p = kinds.add_parser(kind, help=f"train {help_text} (images)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        vaegan.add_arguments(p, _positive_int)
        p.set_defaults(func=functools.partial(vaegan.cmd_train, resolve_device=resolve_device, load_model=load_model))
    for kind, help_text in (("localizer", "the conv-BLSTM-attention subcellular localiser (DeepLoc)"), ("secondary-structure", "the BLSTM 8-class secondary-structure model (CB513)")):
        p = kinds.add_parser(kind, help=f"train {help_text}", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        protein.add_arguments(p, _positive_int, _int_list)
        p.set_defaults(func=functools.partial(protein.cmd_train, resolve_device=resolve_device, load_model=load_model))
    for kind, help_text in (("rnn-spn", "the recurrent spatial transformer (one glimpse per digit)"), ("ffn-spn", "the feed-forward spatial transformer (one glimpse, a head per digit)"), ("cnn", "the CNN baseline (the down-sampled whole image, a head per digit)")):
        p = kinds.add_parser(kind, help=f"train {help_text} on cluttered MNIST sequences", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        spatial.add_arguments(p, _positive_int)
        p.set_defaults(func=functools.partial(spatial.cmd_train, resolve_device=resolve_device, load_model=load_model))

    # evaluate
    p = commands.add_parser("evaluate", help="test bounds of a checkpoint", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=("train", "valid", "test"), default="test")
    p.add_argument("--num-samples", type=_positive_int, default=100, help="K for the importance-sampled bound (vaegan, vae: prior samples for the sample-quality figures; ~2000 for a stable Frechet distance)")
    p.add_argument("--classifier", default=None, help="vaegan, vae on mnist: the classifier checkpoint of the sample-quality figures (default: the cache dir's mnist_classifier.pt, trained if missing)")
    p.add_argument("--fivo-particles", type=_positive_int, default=None, help="also the FIVO bound with this many particles (ESS resampling at 0.5)")
    p.add_argument("--data", choices=DATA_NAMES, default=None, help="default: the checkpoint's data set")
    p.add_argument("--data-root", default=None, help="data root (default: $PYRO_SEQ_DATA, else the --data-root the run was trained with, else ~/.cache/pyro_seq); for --data wav, the folder of WAV files")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--max-sequences", type=_positive_int, default=None, help="only the first N sequences")
    p.add_argument("--every", type=_positive_int, default=1, help="only every N-th sequence (after --max-sequences)")
    p.add_argument("--stream-length", type=_positive_int, default=None, help="srnn, zforcing: the ELBO of whole sequences in chunks of L frames with carried state (memory flat in the length; the smoother sees one chunk)")
    p.add_argument("--output", default=None, help="JSON output (default: next to the checkpoint)")
    p.add_argument("--latent-health", action="store_true", help="also KL and active units per stochastic layer (Ladder VAE), with a PNG next to the JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    # sample
    p = commands.add_parser("sample", help="generate piano rolls (PNG + MIDI), or image grids (samples, reconstructions)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--num", type=_positive_int, default=4)
    p.add_argument("--steps", type=_positive_int, default=128)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds-per-step", type=float, default=0.25)
    p.add_argument("--data-root", default=None, help="data root for the test images an image model reconstructs (default: as evaluate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    Entry point of ``pyro-seq`` (``python -m pyro_seq``).

    :param argv: arguments (default ``sys.argv[1:]``).
    :returns: exit status: 0 on success, 1 for an expected failure (bad checkpoint, missing data,
        diverged training, bad command line: unknown command, model, data set or option, or a bad
        value), reported as one ``pyro-seq: error:`` line.
    """
    from pyro_seq.checkpoint import CheckpointError
    from pyro_seq.trainer import NonFiniteLossError

    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"pyro-seq: error: {e}", file=sys.stderr)
        return 1
    _setup_logging(args.log_level)
    try:
        from pyro_seq.data import DataError
    except ImportError:  # pragma: no cover
        DataError = CheckpointError
    try:
        return int(args.func(args) or 0)
    except (CheckpointError, DataError, NonFiniteLossError, ValueError) as e:
        logger.error("%s", e)
        print(f"pyro-seq: error: {e}", file=sys.stderr)
        return 1
