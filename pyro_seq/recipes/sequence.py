"""
The sequence family: SRNN, Z-Forcing and the Ladder VAE (``pyro-seq train srnn|zforcing|lvae``)
on music piano rolls, sequential MNIST, audio frames and image sets, trained with the warm-up
(and Z-Forcing, or IWAE) objectives and tested with per-sequence bounds
(:func:`~pyro_seq.bounds.evaluate`).
"""

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pyro_seq.recipes.base import Recipe, RunData, evaluation_path, resolved_path
from pyro_seq.recipes.options import int_list, nonnegative_float, nonnegative_int, positive_int
from pyro_seq.training.trainer import BEST_CHECKPOINT

__all__ = ["DATA_NAMES", "LVAE_GUIDES", "STREAMING_MODELS", "SequenceRecipe", "build_lvae", "build_srnn", "build_zforcing", "make_warmup_loss"]

logger = logging.getLogger("pyro_seq.recipes")

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
    samples per sequence (:class:`~pyro_seq.losses.IWAE_ELBO`, no warm-up: β = 1); with a non-zero
    ``aux_weight`` or ``backward_weight`` the Z-Forcing ELBO
    (its auxiliary weight ramps linearly from ``aux_start``, default ``aux_weight``, to
    ``aux_weight`` over ``aux_steps`` steps).
    """
    from pyro_seq import losses
    from pyro_seq.util import check_int, check_real

    kind = config.get("elbo", "meanfield")
    if kind not in ("trace", "meanfield", "iwae"):
        raise ValueError(f"loss elbo must be one of ['meanfield', 'trace', 'iwae'], got {kind!r}")
    # each value checked under its config key, so that a bad one is named as the run config names it
    num_particles = check_int("loss.num_particles", config.get("num_particles", 1), 1)
    aux_weight = check_real("loss.aux_weight", config.get("aux_weight", 0.0), 0.0)
    backward_weight = check_real("loss.backward_weight", config.get("backward_weight", 0.0), 0.0)
    if kind == "iwae":
        # the importance-weighted bound with num_particles samples per sequence; no warm-up
        if aux_weight or backward_weight:
            raise ValueError("--elbo iwae has no auxiliary cost; drop --aux-weight/--backward-weight")
        return losses.IWAE_ELBO(num_particles=num_particles)
    schedule = losses.LinearSchedule(
        start=check_real("loss.warmup_start", config.get("warmup_start", 0.2), 0.0, 1.0),
        end=1.0,
        steps=check_int("loss.warmup_steps", config.get("warmup_steps", 1000), 0),
    )
    kwargs = dict(schedule=schedule, num_particles=num_particles)
    if aux_weight == 0.0 and backward_weight == 0.0:
        cls = losses.WarmupTrace_ELBO if kind == "trace" else losses.WarmupTraceMeanField_ELBO
        return cls(**kwargs)
    aux_start = config.get("aux_start")
    aux_schedule = losses.LinearSchedule(
        start=aux_weight if aux_start is None else check_real("loss.aux_start", aux_start, 0.0),
        end=aux_weight,
        steps=check_int("loss.aux_steps", config.get("aux_steps", 0), 0),
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


def _add_srnn_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SRNN")
    group.add_argument("--d-dim", type=positive_int, default=300, help="deterministic GRU state size (default 300)")
    group.add_argument("--a-dim", type=positive_int, default=300, help="guide summary size a_t (default 300)")
    group.add_argument("--hidden-dim", type=positive_int, default=500, help="MLP width (default 500)")
    group.add_argument("--guide", choices=("smoother", "filter"), default="smoother", help="guide kind (default smoother)")
    group.add_argument("--res-q", dest="res_q", action=argparse.BooleanOptionalAction, default=True, help="residual posterior mean (default on)")
    group.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli", help="frame likelihood (default bernoulli)")
    group.add_argument("--emission", choices=("bernoulli", "made"), default="bernoulli", help="binary frames: independent keys (bernoulli) or autoregressive over the keys (made, MADEBernoulli)")
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
            **({"emission": args.emission} if args.emission != "bernoulli" else {}),
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
    group.add_argument("--emb-dim", type=positive_int, default=128, help="frame embedding / latent projection size (default 128)")
    group.add_argument("--h-dim", type=positive_int, default=256, help="forward LSTM size (default 256)")
    group.add_argument("--b-dim", type=positive_int, default=None, help="backward LSTM size (default: --h-dim)")
    group.add_argument("--hidden-dim", type=positive_int, default=256, help="MLP width (default 256)")
    group.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli", help="frame likelihood (default bernoulli)")
    group.add_argument("--emission", choices=("bernoulli", "made"), default="bernoulli", help="binary frames: independent keys (bernoulli) or autoregressive over the keys (made, MADEBernoulli)")
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
            **({"emission": args.emission} if args.emission != "bernoulli" else {}),
        },
        "guide": {
            "b_dim": args.b_dim,
            "hidden_dim": args.hidden_dim,
            "auxiliary": _auxiliary_kind(args),
            "backward_prediction": args.backward_weight > 0,
        },
    }


def _add_lvae_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ladder VAE")
    group.add_argument("--z-dims", type=int_list, default=[64, 32, 16, 8, 4], help="latent sizes, bottom to top (default: the paper's 5 layers 64,32,16,8,4)")
    group.add_argument("--num-layers", type=positive_int, default=2, help="dense layers per deterministic block")
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



#: Model kinds whose model and guide take a :class:`~pyro_seq.data.streaming.StreamCarry`.
STREAMING_MODELS = ("srnn", "zforcing")


def _check_streaming(args: argparse.Namespace, context) -> None:
    """The combinations --stream-length does not serve, refused with the reason."""
    if args.model not in STREAMING_MODELS:
        raise ValueError(f"--stream-length: only {' and '.join(STREAMING_MODELS)} carry their state across chunks, not {args.model}")
    if args.max_length:
        raise ValueError("--stream-length and --max-length are alternatives: carried chunks or independent pieces")
    if context is not None:
        raise ValueError("--stream-length with --distributed is not supported yet (streams are not sharded)")



def _streaming_evaluate(args, state, model, guide, seqs, batch_size, device) -> Dict[str, Any]:
    from pyro_seq.bounds import streaming_elbo

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




#: Per-kind options and config: ``kind -> (add_arguments(parser), config_from_args(args, x_dim))``;
#: ``config_from_args`` returns the ``"model"``/``"guide"`` part of the run config.
KIND_OPTIONS = {
    "srnn": (_add_srnn_arguments, _srnn_config),
    "zforcing": (_add_zforcing_arguments, _zforcing_config),
    "lvae": (_add_lvae_arguments, _lvae_config),
}
_BUILDERS = {"srnn": build_srnn, "zforcing": build_zforcing, "lvae": build_lvae}

#: What a checkpoint's run config of each kind holds (see :meth:`SequenceRecipe.config_schema`).
_LOSS_SCHEMA = {
    "loss.elbo": "?str", "loss.warmup_start": "?real", "loss.warmup_steps": "?int", "loss.num_particles": "?int",
    "loss.aux_weight": "?real", "loss.aux_start": "?real|None", "loss.aux_steps": "?int", "loss.backward_weight": "?real",
    "data.name": "?str", "data.data_root": "?str|None", "data.batch_size": "?int",
}
_FRAME_MODEL_SCHEMA = {"model.likelihood": "?str", "model.dropout": "?real", "model.emission": "?str", "model.min_scale": "?real"}
_CONFIG_SCHEMAS = {
    "srnn": {
        "model.x_dim": "int", "model.d_dim": "int", "model.z_dim": "int", "model.hidden_dim": "int", **_FRAME_MODEL_SCHEMA,
        "guide.kind": "?str", "guide.res_q": "?bool", "guide.a_dim": "?int|None", "guide.hidden_dim": "?int|None",
        "guide.auxiliary": "?str|None",
    },
    "zforcing": {
        "model.x_dim": "int", "model.emb_dim": "int", "model.h_dim": "int", "model.z_dim": "int", "model.hidden_dim": "int",
        **_FRAME_MODEL_SCHEMA,
        "guide.b_dim": "?int|None", "guide.hidden_dim": "?int|None", "guide.auxiliary": "?str|None", "guide.backward_prediction": "?bool",
    },
    "lvae": {
        "model.x_dim": "int", "model.z_dims": "ints", "model.hidden_dims": "ints", "model.num_layers": "?int",
        "model.batch_norm": "?bool", "guide.kind": "?str", "guide.share_top_down": "?bool",
    },
}


class _WithoutSingleBatches:
    """Re-iterable ``batches`` less the one batch of a single sequence (for batch normalisation in training mode)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return (b for b in self.batches if b.x.size(0) > 1)

    def __len__(self):
        return len(self.batches) - 1


class SequenceRecipe(Recipe):
    """SRNN, Z-Forcing and the Ladder VAE: sequences (or one-frame images) with warm-up ELBOs, tested with per-sequence bounds."""

    evaluate_options = ("split", "data", "max_sequences", "every", "stream_length", "fivo_particles", "latent_health", "batch_size")
    kinds = {
        "srnn": "SRNN (stochastic RNN) on sequences",
        "zforcing": "Z-Forcing on sequences",
        "lvae": "Ladder VAE on images (one-frame sequences)",
    }
    options = (
        "data_root", "batch_size", "lrd", "weight_decay", "num_particles", "warmup_start", "warmup_steps",
        "patience", "eval_samples", "distributed",
    )
    defaults = {"data": "jsb"}
    data_names = DATA_NAMES
    #: shared model options and their defaults per kind
    KIND_DEFAULTS = {
        "srnn": {"z_dim": 100, "dropout": 0.0},
        "zforcing": {"z_dim": 32, "dropout": 0.0},
        "lvae": {"hidden_dims": [512, 256, 128, 64, 32]},
    }

    def options_for(self, kind):
        return self.all_options + ("data",) + tuple(self.KIND_DEFAULTS[kind])

    def defaults_for(self, kind):
        return {**self.defaults, **self.KIND_DEFAULTS[kind]}

    def add_arguments(self, parser, kind):
        g = parser.add_argument_group("data")
        g.add_argument("--max-train-sequences", type=positive_int, default=None, help="use only the first N training sequences (smoke tests)")
        g.add_argument("--max-eval-sequences", type=positive_int, default=None, help="use only the first N valid/test sequences (smoke tests)")
        g.add_argument("--eval-every", type=positive_int, default=1, help="validate and test on every N-th sequence only (a fixed subset spread over the split; e.g. 10 for MNIST, whose test split is sorted by class)")
        g.add_argument("--max-length", type=positive_int, default=None, help="cut training sequences into pieces of at most L frames (valid/test stay whole)")
        g.add_argument("--stream-length", type=positive_int, default=None, help="srnn, zforcing: train on chunks of L frames with the state carried from chunk to chunk of the same piece (truncated backpropagation; --batch-size streams); valid/test stay whole")
        g = parser.add_argument_group("objective")
        g.add_argument("--elbo", choices=("meanfield", "trace", "iwae"), default="meanfield", help="analytic-KL (meanfield) or Monte Carlo (trace) warm-up ELBO, or the importance-weighted bound with --num-particles samples (iwae; no warm-up)")
        g.add_argument("--aux-weight", type=nonnegative_float, default=0.0, help="Z-Forcing auxiliary cost weight w (0: off)")
        g.add_argument("--aux-start", type=nonnegative_float, default=None, help="w at step 0, ramped linearly to --aux-weight (default: --aux-weight)")
        g.add_argument("--aux-steps", type=nonnegative_int, default=0, help="steps of the linear ramp of w")
        g.add_argument("--backward-weight", type=nonnegative_float, default=0.0, help="weight of the backward RNN's prediction loss (Z-Forcing only; 0: off)")
        KIND_OPTIONS[kind][0](parser)

    def check(self, kind, args, context):
        if args.stream_length:
            _check_streaming(args, context)
        # option combinations refused before anything runs (the config builders refuse them too)
        if kind == "srnn" and args.backward_weight > 0:
            raise ValueError("--backward-weight: the SRNN guide has no backward prediction head (Z-Forcing only)")
        if kind == "lvae":
            if args.hidden_dims is not None and len(args.z_dims) != len(args.hidden_dims):
                raise ValueError(f"--z-dims and --hidden-dims need one entry per layer, got {args.z_dims} and {args.hidden_dims}")
            if args.aux_weight > 0 or args.backward_weight > 0:
                raise ValueError("--aux-weight/--backward-weight are Z-Forcing options; the Ladder VAE has no auxiliary cost")
            if args.guide == "bottom-up" and args.elbo == "meanfield":
                raise ValueError(
                    "--guide bottom-up: the bottom-up guide samples z_i before z_{i+1}, so the per-layer analytic KL of "
                    "the meanfield ELBO is not valid for it; use --elbo trace"
                )

    def load_data(self, kind, args):
        from pyro_seq.data import load_sequences, make_batches

        train_data = load_sequences(args.data, "train", data_root=args.data_root, limit=args.max_train_sequences)
        dynamic = bool(getattr(train_data, "dynamic_binarization", False))
        if args.stream_length and dynamic:
            raise ValueError("--stream-length: data binarized afresh per batch is not streamed")
        train = _chunk(list(train_data), args.max_length)
        # batch normalisation in training mode needs two images per batch: a lone image at the end of
        # an epoch's shuffled order (len(train) % batch size == 1) sits out that epoch
        single_out = kind == "lvae" and getattr(args, "batch_norm", False) and not args.stream_length
        if single_out and len(train) < 2:
            raise ValueError(
                f"the Ladder VAE with batch normalisation needs at least 2 training images, got {len(train)}: "
                "raise --max-train-sequences or use --no-batch-norm"
            )
        single_out = single_out and args.batch_size > 1 and len(train) % args.batch_size == 1
        if single_out:
            logger.warning(
                "%d training images in batches of %d leave one image alone; batch normalisation needs two, so "
                "a different image sits out each epoch", len(train), args.batch_size,
            )
        valid = _load_split(args.data, "valid", args.data_root, args.max_eval_sequences)[:: args.eval_every]
        logger.info(
            "data %s: %d train pieces (%d frames), %d valid sequences (%d frames)",
            args.data, len(train), sum(len(s) for s in train), len(valid), sum(len(s) for s in valid),
        )

        def train_batches(epoch: int):
            if args.stream_length:  # chunks of long pieces with carried state (truncated backprop)
                from pyro_seq.data.streaming import stream_batches

                return stream_batches(train, args.batch_size, args.stream_length, seed=args.seed, epoch=epoch)
            batches = make_batches(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch)
            if single_out:
                batches = _WithoutSingleBatches(batches)
            if dynamic:  # grey levels: a fresh binarization per batch, deterministic in (seed, epoch)
                from pyro_seq.data import binarize_batches

                return binarize_batches(batches, args.seed, epoch)
            return batches

        def valid_batches(epoch: int):
            return make_batches(valid, args.batch_size, shuffle=False)

        config = {
            "name": args.data,
            "data_root": resolved_path(args.data_root),
            "max_train_sequences": args.max_train_sequences,
            "max_eval_sequences": args.max_eval_sequences,
            "eval_every": args.eval_every,
            "max_length": args.max_length,
            "stream_length": args.stream_length,
            "batch_size": args.batch_size,
        }
        return RunData(train_batches, valid_batches, config, {"x_dim": int(train[0].shape[-1])})

    def config(self, kind, args, data):
        config = KIND_OPTIONS[kind][1](args, data.info["x_dim"])
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
        return config

    def build(self, kind, config):
        return _BUILDERS[kind](config)

    def config_schema(self, kind):
        return {**super().config_schema(kind), **_CONFIG_SCHEMAS[kind], **_LOSS_SCHEMA}

    def test(self, kind, args, out, device, trainer):
        if args.eval_samples <= 0:
            return None
        best = Path(out) / BEST_CHECKPOINT
        model, guide, _, state = self.load_model(best, device=device, kind=kind)
        test = _load_split(args.data, "test", args.data_root, args.max_eval_sequences)[:: args.eval_every]
        result = _bound_summary(_evaluate(model, guide, test, args.batch_size, args.eval_samples, device))
        logger.info(
            "test bound (best checkpoint, epoch %d): -ELBO %.4f, -IWAE(K=%d) %.4f nats/frame (total nats / total frames)",
            state["epoch"], result["elbo"]["nats_per_frame_total"], args.eval_samples, result["iwae"]["nats_per_frame_total"],
        )
        _print_bounds(result, f"test bound of {best} (epoch {state['epoch']}):")
        return {"checkpoint": str(best), "epoch": state["epoch"], "split": "test", **result}

    def evaluate(self, args, model, guide, state, device):
        import json

        import pyro

        config = state["config"]
        data = config.get("data", {})
        name = args.data or data.get("name")
        if name is None:
            raise ValueError("the checkpoint does not name its data set; pass --data")
        pyro.set_rng_seed(args.seed)
        seqs = _load_split(name, args.split, _data_root(args.data_root, config), args.max_sequences)[:: args.every]
        if args.split == "train" and name in ("dynamic_mnist", "omniglot"):
            # the training split holds grey levels (binarized afresh per batch in training): binarize it once
            g = torch.Generator().manual_seed(args.seed)
            seqs = [torch.as_tensor(x) for x in seqs]
            seqs = [(torch.rand(tuple(x.shape), generator=g) < x.float()).to(x.dtype) for x in seqs]
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
        output = evaluation_path(args, args.split)
        if args.latent_health:
            record["layers"] = _layer_health(model, guide, seqs, batch_size, device, output.with_suffix(".layers.png"))
        output.write_text(json.dumps(record, indent=2) + "\n")
        _print_bounds(result, f"{name} {args.split} bound of {args.checkpoint} (epoch {state.get('epoch')}):")
        print(f"  written to {output}")
        return 0

    def sample(self, args, model, guide, state, device):
        import pyro

        from pyro_seq.midi import piano_roll_png, write_midi

        if hasattr(model, "image_shape"):
            return _sample_images(args, model, guide, state, device)
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
