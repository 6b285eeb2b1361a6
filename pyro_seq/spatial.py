"""
Digit-sequence classification with spatial transformers on cluttered MNIST: building, metrics,
glimpse pictures and the ``pyro-seq train rnn-spn|ffn-spn|cnn`` commands.

Training goes through the common :class:`~pyro_seq.trainer.Trainer` with
:class:`~pyro.infer.Trace_ELBO`: for the deterministic networks the guide is the empty
:class:`~pyro_seq.guides.PointEstimateGuide` and the loss is the summed cross-entropy of the
digits; with ``--stochastic-attention`` the guide is
:class:`~pyro_seq.guides.SpatialAttentionGuide` and the loss the negative ELBO of the glimpse
parameters. The validation figure is the per-digit error (%) on the first ``--valid-images``
validation images; the best checkpoint is then tested on the whole test split.

Errors: *per digit* counts every wrong digit, *per sequence* every image with at least one wrong
digit, both in %.
"""

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch

from pyro_seq.guides.point import PointEstimateGuide

__all__ = ["SPN_MODELS", "affine_corners", "build_spn", "digit_metrics", "glimpse_figure", "spn_optim"]

logger = logging.getLogger("pyro_seq.cli")

#: Command-line kinds and their model classes (names in :mod:`pyro_seq.models`).
SPN_MODELS = {"rnn-spn": "RecurrentSpatialTransformer", "ffn-spn": "FeedForwardSpatialTransformer", "cnn": "ConvDigitClassifier"}
#: Default classifier filters per kind (the reference code's: 32 for the RNN-SPN's per-glimpse
#: classifier, 96 for the one-glimpse models).
DEFAULT_CHANNELS = {"rnn-spn": 32, "ffn-spn": 96, "cnn": 96}
_STEP_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple")


def build_spn(kind: str, config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """
    Build a digit-sequence classifier, its guide and the loss from a run config
    ``{"model": kwargs, "guide": kwargs}``: :class:`~pyro_seq.guides.SpatialAttentionGuide`
    for stochastic attention, else the empty guide; :class:`~pyro.infer.Trace_ELBO`, or with
    ``config["loss"]["warmup_steps"] > 0`` (stochastic attention) the KL of the glimpse parameters
    warmed up from 0 to ``config["loss"]["kl_weight"]`` (default 1) over that many steps
    (:class:`~pyro_seq.losses.WarmupTraceMeanField_ELBO`, analytic KL); a ``kl_weight`` below 1
    trains a β-weighted objective, not the ELBO.
    """
    from pyro.infer import Trace_ELBO

    from pyro_seq import models
    from pyro_seq.guides import SpatialAttentionGuide

    model = getattr(models, SPN_MODELS[kind])(**config["model"])
    if not model.stochastic_attention:
        return model, PointEstimateGuide(), Trace_ELBO(max_plate_nesting=1)
    guide = SpatialAttentionGuide(model, **config.get("guide", {}))
    warmup_steps = int(config.get("loss", {}).get("warmup_steps", 0))
    kl_weight = float(config.get("loss", {}).get("kl_weight", 1.0))
    if warmup_steps == 0 and kl_weight == 1.0:
        return model, guide, Trace_ELBO(max_plate_nesting=1)
    from pyro_seq.losses import LinearSchedule, WarmupTraceMeanField_ELBO

    schedule = LinearSchedule(0.0, kl_weight, warmup_steps) if warmup_steps else kl_weight
    return model, guide, WarmupTraceMeanField_ELBO(schedule=schedule, max_plate_nesting=1)


#: Parameter-name prefixes of the attention networks (the RNN-SPN's and its guide's ``attention``,
#: the FFN-SPN's ``localisation``, ``loc_dense`` and ``affine``); their learning rate is scaled.
ATTENTION_PREFIXES = ("attention.", "localisation.", "loc_dense.", "affine.")
#: The stochastic-attention guide's scale head: it learns at the full rate (it does not move the glimpses).
SCALE_HEAD = "attention.heads.1."


def spn_optim(lr=1e-3, clip_norm=5.0, attention_lr_scale=0.1):
    """
    ``ClippedAdam`` with the learning rate of the attention networks scaled by
    ``attention_lr_scale``. From a zero-weight affine head Adam's normalised steps otherwise move
    every glimpse by about ``lr`` per hidden unit and step whatever the gradient's size, a random
    walk that keeps the classifier from learning (the spatial-transformer paper likewise trains
    its localisation networks at a lower rate). The guide's scale head (:data:`SCALE_HEAD`) keeps
    the full rate.
    """
    from pyro.optim import ClippedAdam

    def optim_args(name):
        scale = attention_lr_scale if name.startswith(ATTENTION_PREFIXES) and not name.startswith(SCALE_HEAD) else 1.0
        return {"lr": lr * scale, "clip_norm": clip_norm}

    return ClippedAdam(optim_args)


def _attention(model, guide, x):
    """``(loc, scale)`` of each step's glimpse parameters ``[batch, D, 6]`` (scale ``None`` if deterministic), or ``None`` for the CNN."""
    if model.stochastic_attention:
        return guide.attention_params(x)
    theta = model.logits(x)[1]
    return None if theta is None else (theta, None)


@torch.no_grad()
def digit_metrics(model, guide, batches, num_samples=1, num_bins=15):
    """
    Test figures of a digit-sequence classifier: per-digit and per-sequence error (%), the
    per-digit error at each position, NLL per digit, ECE (%, over digits) and, for stochastic
    attention, the mean posterior scale of each glimpse parameter.

    :param int num_samples: glimpse draws from the guide per image (stochastic attention).
    :returns: ``(metrics dict, reliability bins)``.
    """
    from pyro_seq.calibration import expected_calibration_error, reliability_bins

    model.eval()
    probs, labels, scales = [], [], []
    for batch in batches:
        p = model.predict(batch.x, guide=guide, num_samples=num_samples)  # [B, D, 10]
        probs.append(p.double().cpu())
        labels.append(batch.y.cpu())
        if model.stochastic_attention:
            scales.append(guide.attention_params(batch.x)[1].double().cpu())  # [B, D, 6]
    probs, labels = torch.cat(probs), torch.cat(labels)  # [N, D, 10], [N, D]
    wrong = probs.argmax(-1) != labels  # [N, D]
    flat_probs, flat_labels = probs.reshape(-1, probs.size(-1)), labels.reshape(-1)
    metrics = {
        "digit_error": 100.0 * float(wrong.double().mean()),
        "sequence_error": 100.0 * float(wrong.any(-1).double().mean()),
        "position_error": [100.0 * float(e) for e in wrong.double().mean(0)],
        "nll": float(-flat_probs.gather(-1, flat_labels[:, None]).clamp_min(1e-12).log().mean()),
        "ece": 100.0 * expected_calibration_error(flat_probs, flat_labels, num_bins),
        "num_images": int(labels.size(0)),
        "num_digits": int(labels.numel()),
    }
    if scales:
        metrics["posterior_scale"] = torch.cat(scales).mean((0, 1)).tolist()  # [6]: per affine entry
    return metrics, reliability_bins(flat_probs, flat_labels, num_bins)


def _eval_fn(num_samples=1):
    """The trainer's validation figure: per-digit error in % (lower is better)."""

    def eval_fn(model, guide, batches):
        return digit_metrics(model, guide, list(batches), num_samples)[0]["digit_error"]

    return eval_fn


def affine_corners(theta, height, width):
    """
    The input-pixel coordinates of a glimpse's four corners (the outer edges of its corner
    pixels under ``align_corners=False``): ``theta [..., 6]`` -> ``[..., 4, 2]`` as (column, row),
    in the order top-left, top-right, bottom-right, bottom-left.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64).reshape(*np.shape(theta)[:-1], 2, 3)
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]], dtype=torch.float64)
    xy = torch.einsum("...ij,kj->...ki", theta, corners)  # normalised (x, y) in [-1, 1]
    return torch.stack([(xy[..., 0] + 1) * width / 2, (xy[..., 1] + 1) * height / 2], -1)


@torch.no_grad()
def glimpse_figure(model, guide, x, y, path, title=None, num_draws=8):
    """
    Images with each step's glimpse drawn as a box (one colour per step; for stochastic
    attention also ``num_draws`` thin boxes drawn from the guide), each followed by its
    glimpses and the predicted digits.

    :param x: ``[n, 1, S, S]`` images; :param y: ``[n, D]`` labels.
    :returns: the path written.
    """
    from pyro_seq.models.spatial import IDENTITY_AFFINE
    from pyro_seq.plotting import _pyplot, _save

    model.eval()
    plt = _pyplot()
    n, d, s = x.size(0), model.num_digits, model.canvas
    attention = _attention(model, guide, x)
    loc = attention[0] if attention is not None else x.new_tensor(IDENTITY_AFFINE).expand(n, d, 6)
    scale = attention[1] if attention is not None else None
    predicted = model.predict(x, guide=guide, num_samples=0 if model.stochastic_attention else 1).argmax(-1)  # [n, D]
    g = model.num_glimpses
    glimpses = model.glimpses(x, loc[:, :g]) if g else None  # [n, G, 1, side, side]
    cols = 1 + g
    fig, axes = plt.subplots(n, cols, figsize=(2.2 + 1.2 * (cols - 1), 2.2 * n + (0.4 if title else 0)), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2] + [1.2] * (cols - 1)}, layout="constrained")
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(x[i, 0].cpu().numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        for t in range(g):  # the CNN reads the whole image: no boxes
            colour = _STEP_COLOURS[t % len(_STEP_COLOURS)]
            if scale is not None:
                for _ in range(num_draws):
                    draw = loc[i, t] + scale[i, t] * torch.randn_like(scale[i, t])
                    c = affine_corners(draw.cpu(), s, s).numpy()
                    ax.fill(c[:, 0] - 0.5, c[:, 1] - 0.5, fill=False, edgecolor=colour, linewidth=0.4, alpha=0.6)
            c = affine_corners(loc[i, t].cpu(), s, s).numpy()
            ax.fill(c[:, 0] - 0.5, c[:, 1] - 0.5, fill=False, edgecolor=colour, linewidth=1.5)
        ax.set_xlim(-0.5, s - 0.5)
        ax.set_ylim(s - 0.5, -0.5)
        ax.set_title("true " + "".join(map(str, y[i].tolist())) + "  pred " + "".join(map(str, predicted[i].tolist())), fontsize=8)
        ax.axis("off")
        for t in range(cols - 1):
            ax = axes[i, 1 + t]
            ax.imshow(glimpses[i, t, 0].cpu().numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            colour = _STEP_COLOURS[t % len(_STEP_COLOURS)]
            read = f"step {t + 1}: {int(predicted[i, t])}" if g == d else "glimpse: " + "".join(map(str, predicted[i].tolist()))
            ax.set_title(read, fontsize=8, color=colour)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def add_arguments(parser, positive_int) -> None:
    """Command-line options of ``pyro-seq train rnn-spn|ffn-spn|cnn``."""
    from pyro_seq.data.cluttered import CLUTTERED_VARIANTS
    from pyro_seq.trainer import add_run_arguments

    g = parser.add_argument_group("data")
    g.add_argument("--variant", choices=sorted(CLUTTERED_VARIANTS), default="sequence3", help="three digits on 100x100 (the paper's task) or one digit on 40x40")
    g.add_argument("--data-root", default=None, help="MNIST data root (default: $PYRO_SEQ_DATA, else ~/.cache/pyro_seq)")
    g.add_argument("--cache-dir", default=None, help="cache of the generated images (default: ~/.cache/pyro_seq/cluttered_mnist)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the image generator")
    g.add_argument("--num-train", type=positive_int, default=60000)
    g.add_argument("--valid-images", type=positive_int, default=2000, help="validation images that select the checkpoint (the first of the split's 10,000)")
    g.add_argument("--num-test", type=positive_int, default=10000)
    g.add_argument("--batch-size", type=positive_int, default=50)
    g = parser.add_argument_group("model")
    g.add_argument("--downsample", type=float, default=3.0, help="input pixels per glimpse pixel along a side (3: a 33x33 glimpse of 100x100)")
    g.add_argument("--hidden", type=positive_int, default=256, help="rnn-spn: GRU units")
    g.add_argument("--channels", type=positive_int, default=None, help="classifier filters (default 32 for rnn-spn, 96 for ffn-spn and cnn)")
    g.add_argument("--dense", type=positive_int, default=400)
    g.add_argument("--dropout", type=float, default=0.0)
    g.add_argument("--stochastic-attention", action="store_true", help="rnn-spn: latent glimpse parameters with a Gaussian prior at the identity and an amortised guide (SVI)")
    g.add_argument("--prior-scale", type=float, default=0.5, help="prior scale of each glimpse parameter (--stochastic-attention)")
    g.add_argument("--kl-weight", type=float, default=1.0, help="--stochastic-attention: weight β of the glimpse KL (below 1 the objective is not the ELBO)")
    g.add_argument("--init-from", default=None, help="start from this rnn-spn checkpoint (a deterministic one for --stochastic-attention: its classifier, and its attention as the guide's location head)")
    g.add_argument("--warmup-steps", type=int, default=0, help="--stochastic-attention: steps of linear KL warm-up from 0 to 1 (0: the plain ELBO throughout)")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--out", required=True)
    g.add_argument("--epochs", type=positive_int, default=20)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--clip-norm", type=float, default=5.0)
    g.add_argument("--attention-lr-scale", type=float, default=0.1, help="learning rate of the attention (localisation) networks, relative to --lr")
    add_run_arguments(g, positive_int)
    g.add_argument("--mc-samples", type=positive_int, default=8, help="glimpse draws per image at test time (--stochastic-attention)")


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


def _load_split(data, split, num_images, data_root=None):
    from pyro_seq.data.cluttered import load_cluttered_mnist

    return load_cluttered_mnist(split, data["variant"], num_images, data["data_seed"], data_root or data.get("data_root"), data.get("cache_dir"))


def cmd_train(args, resolve_device, load_model) -> int:
    """Train a digit-sequence classifier, then test its best checkpoint and draw its glimpses."""
    import pyro

    from pyro_seq.checkpoint import check_resume_data
    from pyro_seq.data.cluttered import CLUTTERED_VARIANTS, ClutteredBatches
    from pyro_seq.trainer import BEST_CHECKPOINT, LOG_FILE, Trainer

    kind = args.model
    if args.stochastic_attention and kind != "rnn-spn":
        raise ValueError(f"--stochastic-attention is an rnn-spn option, not {kind}")
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variant = CLUTTERED_VARIANTS[args.variant]
    model_config = {"canvas": variant.canvas, "num_digits": variant.num_digits, "downsample": args.downsample,
                    "channels": args.channels or DEFAULT_CHANNELS[kind], "dense": args.dense, "dropout": args.dropout}
    if kind == "rnn-spn":
        model_config.update(hidden=args.hidden, stochastic_attention=args.stochastic_attention, prior_scale=args.prior_scale)
    data = {"variant": args.variant, "data_seed": args.data_seed, "num_train": args.num_train, "valid_images": args.valid_images,
            "num_test": args.num_test, "batch_size": args.batch_size,
            "data_root": None if args.data_root is None else str(Path(args.data_root).resolve()),
            "cache_dir": None if args.cache_dir is None else str(Path(args.cache_dir).resolve())}
    if (args.warmup_steps or args.kl_weight != 1.0) and not args.stochastic_attention:
        raise ValueError("--warmup-steps and --kl-weight weigh the KL of stochastic attention; add --stochastic-attention")
    if not args.kl_weight > 0:
        raise ValueError(f"--kl-weight must be > 0, got {args.kl_weight}")
    config = {"model": model_config, "guide": {}, "loss": {"warmup_steps": args.warmup_steps, "kl_weight": args.kl_weight}, "data": data,
              "train": {"lr": args.lr, "clip_norm": args.clip_norm, "attention_lr_scale": args.attention_lr_scale, "epochs": args.epochs, "seed": args.seed}}
    if args.resume:
        check_resume_data(out / "last.pt", kind, data, ("variant", "data_seed", "num_train", "valid_images", "batch_size"))
    train = _load_split(data, "train", args.num_train)
    valid = _load_split(data, "valid", args.valid_images)  # the first images of the 10,000 (the generator's prefix property)
    logger.info("%s: %d training images, %d validation images select the checkpoint", args.variant, len(train.images), len(valid.images))
    pyro.set_rng_seed(args.seed)
    model, guide, loss = build_spn(kind, config)
    if args.init_from and not (args.resume and (out / "last.pt").exists()):
        source, source_guide, _, source_state = load_model(args.init_from, device="cpu", kind=kind)
        init_from(model, guide, source, source_guide)
        logger.info("initialised from %s (epoch %s)", args.init_from, source_state.get("epoch"))
        config["init_from"] = str(Path(args.init_from).resolve())
    (out / "config.json").write_text(json.dumps({"kind": kind, **config}, indent=2) + "\n")
    trainer = Trainer(
        model, guide, loss,
        lambda epoch: ClutteredBatches(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch),
        ClutteredBatches(valid, 200),
        optim=spn_optim(args.lr, args.clip_norm, args.attention_lr_scale), lr=args.lr, device=device, out_dir=out, seed=args.seed, patience=args.patience,
        kind=kind, config=config, progress=False if args.no_progress else None, log_every=args.log_every,
        max_bad_steps=args.max_bad_steps, eval_fn=_eval_fn(), resume=args.resume, units=("nats/digit", "digit error {:.2f}%"),
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
    )
    n_params = sum(p.numel() for m in (model, guide) for p in m.parameters())
    logger.info("%s: %d parameters on %s, %d×%d glimpses; output in %s", kind, n_params, device, model.side, model.side, out)
    start = time.perf_counter()
    summary = trainer.fit(args.epochs)
    logger.info("training done: %d epochs, best valid digit error %.2f%% at epoch %s (%.1fs)", summary["epochs"], summary["best_valid"], summary["best_epoch"], time.perf_counter() - start)
    model, guide, _, state = load_model(out / BEST_CHECKPOINT, device=device, kind=kind)
    record = evaluate_spn(model, guide, state, out, args.mc_samples, args.seed, device)
    record["train_seconds"] = trainer.elapsed
    record["steps"] = trainer.global_step
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps({"event": "test", **record}) + "\n")
    return 0


def evaluate_spn(model, guide, state, out, num_samples=8, seed=0, device="cpu", data_root=None):
    """
    Test figures of a checkpoint on its variant's test split (``state["config"]["data"]``),
    written to ``out/test.json`` with a reliability diagram and a glimpse picture
    (``out/glimpses.png``); the figures are printed.

    :returns: the record.
    """
    import pyro

    from pyro_seq.calibration import reliability_diagram
    from pyro_seq.data.cluttered import ClutteredBatches

    data = state["config"]["data"]
    test = _load_split(data, "test", data["num_test"], data_root)
    batches = [b.to(device) for b in ClutteredBatches(test, 200)]
    pyro.set_rng_seed(seed)
    metrics, bins = digit_metrics(model, guide, batches, num_samples)
    record = {"kind": state["kind"], "epoch": state.get("epoch"), "variant": data["variant"], "downsample": model.downsample,
              "stochastic_attention": model.stochastic_attention, "num_samples": num_samples if model.stochastic_attention else None,
              "test": metrics}
    name = state["kind"] + (" (stochastic attention)" if model.stochastic_attention else "")
    print(f"{name} on {data['variant']} test ({metrics['num_images']} images, epoch {state.get('epoch')}): "
          f"digit error {metrics['digit_error']:.2f}%, sequence error {metrics['sequence_error']:.2f}%, "
          f"NLL {metrics['nll']:.4f}/digit, ECE {metrics['ece']:.2f}%")
    if out is not None:
        out = Path(out)
        (out / "test.json").write_text(json.dumps(record, indent=2) + "\n")
        reliability_diagram(bins, out / "reliability_test.png", title=f"{name}, {data['variant']} test")
        x, y = batches[0].x[:6], batches[0].y[:6]
        glimpse_figure(model, guide, x, y, out / "glimpses.png", title=f"{name}, epoch {state.get('epoch')}: glimpse per step")
    return record


def cmd_evaluate(args, model, guide, state, device) -> int:
    """``pyro-seq evaluate`` for digit-sequence checkpoints: the test split of the run's variant."""
    out = Path(args.output).parent if args.output else Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    record = evaluate_spn(model, guide, state, None, min(args.num_samples, 32), args.seed, device, args.data_root)
    output = Path(args.output) if args.output else Path(args.checkpoint).with_name(f"{Path(args.checkpoint).stem}_test_eval.json")
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"  written to {output}")
    return 0
