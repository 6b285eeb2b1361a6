"""
The spatial-transformer family (``pyro-seq train rnn-spn|ffn-spn|cnn``) on cluttered MNIST: its
options, the run config -> ``(model, guide, loss)`` builder, the optimiser with a slower attention
network, and the :class:`SpatialRecipe` that :func:`pyro_seq.recipes.train` runs.

Training is :class:`~pyro.infer.Trace_ELBO`: for the deterministic networks the guide is the empty
:class:`~pyro_seq.guides.PointEstimateGuide` and the loss is the summed cross-entropy of the
digits; with ``--stochastic-attention`` the guide is
:class:`~pyro_seq.contrib.spatial.SpatialAttentionGuide` and the loss the negative ELBO of the
glimpse parameters (with ``--kl-weight`` and the KL warm-up of ``--warmup-start`` /
``--warmup-steps``, a weighted one). The validation figure is the per-digit error (%) on the first
``--valid-images`` validation images; the best checkpoint is then tested on the whole test split
(:func:`~pyro_seq.contrib.spatial.metrics.evaluate_spn`).
"""

import json
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

from pyro_seq.contrib.spatial.metrics import digit_metrics, evaluate_spn, load_split
from pyro_seq.guides import PointEstimateGuide
from pyro_seq.recipes.base import Recipe, RunData, evaluation_path, resolved_path
from pyro_seq.recipes.options import number, positive_float, positive_int, seed_int
from pyro_seq.training.trainer import BEST_CHECKPOINT, LAST_CHECKPOINT

__all__ = ["ATTENTION_PREFIXES", "DEFAULT_CHANNELS", "SCALE_HEAD", "SPN_MODELS", "SpatialRecipe", "build_spn", "init_from", "spn_optim"]

logger = logging.getLogger("pyro_seq.recipes")

#: Command-line kinds and their model classes (names in :mod:`pyro_seq.contrib.spatial.models`).
SPN_MODELS = {"rnn-spn": "RecurrentSpatialTransformer", "ffn-spn": "FeedForwardSpatialTransformer", "cnn": "ConvDigitClassifier"}
#: Default classifier filters per kind (the reference code's: 32 for the RNN-SPN's per-glimpse
#: classifier, 96 for the one-glimpse models).
DEFAULT_CHANNELS = {"rnn-spn": 32, "ffn-spn": 96, "cnn": 96}


def build_spn(kind: str, config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """
    Build a digit-sequence classifier, its guide and the loss from a run config
    ``{"model": kwargs, "guide": kwargs, "loss": {"kl_weight": 1.0, "warmup_start": 0.0,
    "warmup_steps": 0}}``: :class:`~pyro_seq.contrib.spatial.SpatialAttentionGuide` for stochastic
    attention, else the empty guide; :class:`~pyro.infer.Trace_ELBO`, or (stochastic attention)
    the KL of the glimpse parameters weighted by β ``kl_weight`` (default 1), with
    ``warmup_steps > 0`` warmed up linearly from ``warmup_start * kl_weight`` to ``kl_weight`` over
    that many steps (:class:`~pyro_seq.losses.WarmupTraceMeanField_ELBO`, analytic KL); a
    ``kl_weight`` below 1 trains a β-weighted objective, not the ELBO.
    """
    from pyro.infer import Trace_ELBO

    from pyro_seq.contrib.spatial import models
    from pyro_seq.contrib.spatial.guides import SpatialAttentionGuide

    model = getattr(models, SPN_MODELS[kind])(**config["model"])
    if not model.stochastic_attention:
        return model, PointEstimateGuide(), Trace_ELBO(max_plate_nesting=1)
    guide = SpatialAttentionGuide(model, **config.get("guide", {}))
    loss = config.get("loss", {})
    warmup_steps = int(loss.get("warmup_steps", 0))
    kl_weight = float(loss.get("kl_weight", 1.0))
    if warmup_steps == 0 and kl_weight == 1.0:
        return model, guide, Trace_ELBO(max_plate_nesting=1)
    from pyro_seq.losses import LinearSchedule, WarmupTraceMeanField_ELBO

    warmup_start = float(loss.get("warmup_start", 0.0))
    schedule = LinearSchedule(warmup_start * kl_weight, kl_weight, warmup_steps) if warmup_steps else kl_weight
    return model, guide, WarmupTraceMeanField_ELBO(schedule=schedule, max_plate_nesting=1)


#: Parameter-name prefixes of the attention networks (the RNN-SPN's and its guide's ``attention``,
#: the FFN-SPN's ``localisation``, ``loc_dense`` and ``affine``); their learning rate is scaled.
ATTENTION_PREFIXES = ("attention.", "localisation.", "loc_dense.", "affine.")
#: The stochastic-attention guide's scale head: it learns at the full rate (it does not move the glimpses).
SCALE_HEAD = "attention.heads.1."


def spn_optim(lr=1e-3, clip_norm=5.0, attention_lr_scale=0.1, weight_decay=0.0):
    """
    ``ClippedAdam`` with the learning rate of the attention networks scaled by
    ``attention_lr_scale``. From a zero-weight affine head Adam's normalised steps otherwise move
    every glimpse by about ``lr`` per hidden unit and step whatever the gradient's size, a random
    walk that keeps the classifier from learning (the spatial-transformer paper likewise trains
    its localisation networks at a lower rate). The guide's scale head (:data:`SCALE_HEAD`) keeps
    the full rate. ``weight_decay`` is ClippedAdam's L2 weight decay of every parameter.
    """
    from pyro.optim import ClippedAdam

    def optim_args(name):
        scale = attention_lr_scale if name.startswith(ATTENTION_PREFIXES) and not name.startswith(SCALE_HEAD) else 1.0
        return {"lr": lr * scale, "clip_norm": clip_norm, "weight_decay": weight_decay}

    return ClippedAdam(optim_args)


def init_from(model, guide, source_model, source_guide):
    """
    Start a stochastic-attention RNN-SPN from a trained deterministic one (``source_model``): its
    classifier, and its attention network as the guide's location head, localisation CNN and GRU;
    the guide's scale head keeps its initialisation. For two models of the same kind every
    parameter is copied.

    :raises ValueError: the models differ in kind or size.
    """
    try:
        if getattr(model, "stochastic_attention", False) and not getattr(source_model, "stochastic_attention", False):
            model.classifier.load_state_dict(source_model.classifier.state_dict())
            result = guide.attention.load_state_dict(source_model.attention.state_dict(), strict=False)
            if result.unexpected_keys or any(not k.startswith("heads.1.") for k in result.missing_keys):
                raise RuntimeError(f"unexpected keys {result.unexpected_keys}, missing keys {result.missing_keys}")
        else:
            model.load_state_dict(source_model.state_dict())
            guide.load_state_dict(source_guide.state_dict())
    except (RuntimeError, AttributeError) as e:
        raise ValueError(f"--init-from: the checkpoint's network does not fit this one ({e})") from e


def _validation_error(num_samples: int = 1):
    """The trainer's validation figure: per-digit error in % (lower is better)."""

    def eval_fn(model, guide, batches):
        return digit_metrics(model, guide, list(batches), num_samples)[0]["digit_error"]

    return eval_fn


#: What a checkpoint's run config of this family holds (see :meth:`Recipe.config_schema`).
CONFIG_SCHEMA = {
    "model.canvas": "?int", "model.num_digits": "?int", "model.downsample": "?real", "model.hidden": "?int",
    "model.loc_channels": "?int", "model.loc_dense": "?int", "model.channels": "?int", "model.dense": "?int",
    "model.dropout": "?real", "model.stochastic_attention": "?bool", "model.prior_scale": "?real",
    "guide.init_raw_scale": "?real", "loss.kl_weight": "?real", "loss.warmup_start": "?real", "loss.warmup_steps": "?int",
}  # fmt: skip


class SpatialRecipe(Recipe):
    """Digit-sequence classifiers on cluttered MNIST: the RNN-SPN (optionally with stochastic attention), the FFN-SPN and the CNN baseline."""

    kinds = {
        "rnn-spn": "the recurrent spatial transformer (one glimpse per digit) on cluttered MNIST sequences",
        "ffn-spn": "the feed-forward spatial transformer (one glimpse, a head per digit) on cluttered MNIST sequences",
        "cnn": "the CNN baseline (the down-sampled whole image, a head per digit) on cluttered MNIST sequences",
    }
    options = ("data_root", "batch_size", "weight_decay", "warmup_start", "warmup_steps", "patience", "hidden", "dense", "dropout", "prior_scale", "mc_samples")
    defaults = {"epochs": 20, "batch_size": 50, "clip_norm": 5.0, "warmup_start": 0.0, "warmup_steps": 0, "hidden": 256, "dense": 400, "dropout": 0.0, "prior_scale": 0.5, "mc_samples": 8}
    units = ("nats/digit", "digit error {:.2f}%")

    def add_arguments(self, parser, kind):
        from pyro_seq.contrib.spatial.data import CLUTTERED_VARIANTS

        g = parser.add_argument_group("cluttered MNIST")
        g.add_argument("--variant", choices=sorted(CLUTTERED_VARIANTS), default="sequence3", help="three digits on 100x100 (the paper's task) or one digit on 40x40")
        g.add_argument("--cache-dir", default=None, help="cache of the generated images (default: ~/.cache/pyro_seq/cluttered_mnist)")
        g.add_argument("--data-seed", type=seed_int, default=0, help="seed of the image generator")
        g.add_argument("--num-train", type=positive_int, default=60000)
        g.add_argument("--valid-images", type=positive_int, default=2000, help="validation images that select the checkpoint (the first of the split's 10,000)")
        g.add_argument("--num-test", type=positive_int, default=10000)
        g = parser.add_argument_group("model")
        g.add_argument("--downsample", type=number(float, 1), default=3.0, help="input pixels per glimpse pixel along a side (3: a 33x33 glimpse of 100x100)")
        g.add_argument("--channels", type=positive_int, default=None, help="classifier filters (default 32 for rnn-spn, 96 for ffn-spn and cnn)")
        g.add_argument("--stochastic-attention", action="store_true", help="rnn-spn: latent glimpse parameters with a Gaussian prior at the identity and an amortised guide (SVI)")
        g.add_argument("--kl-weight", type=positive_float, default=1.0, help="--stochastic-attention: weight β of the glimpse KL (below 1 the objective is not the ELBO); the KL warm-up (--warmup-start, --warmup-steps) multiplies it")
        g.add_argument("--init-from", default=None, help="start from this rnn-spn checkpoint (a deterministic one for --stochastic-attention: its classifier, and its attention as the guide's location head)")
        g = parser.add_argument_group("optimisation and test")
        g.add_argument("--attention-lr-scale", type=positive_float, default=0.1, help="learning rate of the attention (localisation) networks, relative to --lr")

    def check(self, kind, args, context):
        if args.stochastic_attention and kind != "rnn-spn":
            raise ValueError(f"--stochastic-attention is an rnn-spn option, not {kind}")
        if (args.warmup_steps or args.kl_weight != 1.0) and not args.stochastic_attention:
            raise ValueError("--warmup-steps and --kl-weight weigh the KL of stochastic attention; add --stochastic-attention")
        if not args.kl_weight > 0:
            raise ValueError(f"--kl-weight must be > 0, got {args.kl_weight}")

    def load_data(self, kind, args):
        from pyro_seq.contrib.spatial.data import ClutteredBatches

        config = {
            "variant": args.variant,
            "data_seed": args.data_seed,
            "num_train": args.num_train,
            "valid_images": args.valid_images,
            "num_test": args.num_test,
            "batch_size": args.batch_size,
            "data_root": resolved_path(args.data_root),
            "cache_dir": resolved_path(args.cache_dir),
        }
        train = load_split(config, "train", args.num_train)
        valid = load_split(config, "valid", args.valid_images)  # the first images of the 10,000 (the generator's prefix property)
        logger.info("%s: %d training images, %d validation images select the checkpoint", args.variant, len(train.images), len(valid.images))

        def train_batches(epoch):
            return ClutteredBatches(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch)

        return RunData(train_batches, ClutteredBatches(valid, 200), config)

    def config(self, kind, args, data):
        from pyro_seq.contrib.spatial.data import CLUTTERED_VARIANTS

        variant = CLUTTERED_VARIANTS[args.variant]
        model = {"canvas": variant.canvas, "num_digits": variant.num_digits, "downsample": args.downsample,
                 "channels": args.channels or DEFAULT_CHANNELS[kind], "dense": args.dense, "dropout": args.dropout}
        if kind == "rnn-spn":
            model.update(hidden=args.hidden, stochastic_attention=args.stochastic_attention, prior_scale=args.prior_scale)
        loss = {"warmup_steps": args.warmup_steps, "kl_weight": args.kl_weight}
        if args.warmup_start:  # recorded only off its default 0, so that configs without it read as before
            loss["warmup_start"] = args.warmup_start
        return {"model": model, "guide": {}, "loss": loss}

    def train_config(self, kind, args):
        return {"attention_lr_scale": args.attention_lr_scale}

    def build(self, kind, config):
        return build_spn(kind, config)

    def config_schema(self, kind):
        return {**super().config_schema(kind), **CONFIG_SCHEMA}

    def prepare(self, kind, args, model, guide, config, out):
        if args.init_from and not (args.resume and (Path(out) / LAST_CHECKPOINT).exists()):
            source, source_guide, _, source_state = self.load_model(args.init_from, device="cpu", kind=kind)
            init_from(model, guide, source, source_guide)
            logger.info("initialised from %s (epoch %s)", args.init_from, source_state.get("epoch"))
            config["init_from"] = resolved_path(args.init_from)

    def optim(self, kind, args, config):
        return spn_optim(args.lr, args.clip_norm, args.attention_lr_scale, args.weight_decay)

    def eval_fn(self, kind, args, out):
        return _validation_error()

    def test(self, kind, args, out, device, trainer):
        model, guide, _, state = self.load_model(Path(out) / BEST_CHECKPOINT, device=device, kind=kind)
        record = evaluate_spn(model, guide, state, out, args.mc_samples, args.seed, device)
        record["train_seconds"] = trainer.elapsed
        record["steps"] = trainer.global_step
        return record

    def evaluate(self, args, model, guide, state, device):
        """The test split of the run's variant."""
        record = evaluate_spn(model, guide, state, None, min(args.num_samples, 32), args.seed, device, args.data_root)
        output = evaluation_path(args)
        output.write_text(json.dumps(record, indent=2) + "\n")
        print(f"  written to {output}")
        return 0

    def sample(self, args, model, guide, state, device):
        raise ValueError(f"{state.get('kind')} classifies given images: pyro-seq sample has nothing to draw (use pyro-seq evaluate)")
