"""
VAE/GAN and the plain VAE on images: evaluation, pictures and the family's
:class:`~pyro_seq.recipes.Recipe` (``pyro-seq train|evaluate|sample vaegan|vae``).

Training goes through the one recipe :func:`pyro_seq.recipes.train` (checkpoints, resume, logs,
skipped non-finite steps): VAE/GAN with :class:`~pyro_seq.losses.VAEGANLoss` and the three
per-network optimisers of :func:`~pyro_seq.losses.vaegan_optim`, the plain VAE with
:class:`~pyro.infer.Trace_ELBO`. The validation figure is the pixel-space reconstruction error
of held-out images; each validation also checks the GAN's health (the spread of prior samples
against the data's, the discriminator's outputs) and logs a warning when the run looks collapsed.
The images and their batches are :func:`pyro_seq.data.load_image_split` and
:func:`pyro_seq.data.image_batches`.
"""

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from pyro_seq.data.image_batches import IMAGE_DATA, image_batches, load_image_split
from pyro_seq.recipes.base import Recipe, RunData, evaluation_path, resolved_path
from pyro_seq.recipes.options import finite_float, nonnegative_float, nonnegative_int, number, positive_float, positive_int, probability_below_one
from pyro_seq.training.trainer import LAST_CHECKPOINT, LOG_FILE

__all__ = [
    "COLLAPSE_SPREAD",
    "IMAGE_DATA",
    "IMAGE_MODELS",
    "ImageVAERecipe",
    "build_vaegan",
    "default_classifier_path",
    "evaluate_images",
    "gan_health",
    "reconstruction_metrics",
    "sample_spread",
    "write_grids",
]

logger = logging.getLogger("pyro_seq.recipes")

#: Command-line kinds: VAE/GAN (feature-space likelihood) and the plain VAE (pixel likelihood).
IMAGE_MODELS = {"vaegan": "features", "vae": "pixels"}
#: A run counts as collapsed when its prior samples spread less than this fraction of the data's.
COLLAPSE_SPREAD = 0.25


def build_vaegan(kind: str, config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """
    Build VAE/GAN or the plain VAE, the :class:`~pyro_seq.guides.VAEGANGuide` and the loss from a
    run config ``{"model": VAEGAN kwargs, "guide": {...}, "loss": {"gamma", "equilibrium",
    "margin", "generator_loss"}}``.
    """
    from pyro.infer import Trace_ELBO

    from pyro_seq.guides import VAEGANGuide
    from pyro_seq.losses import VAEGANLoss
    from pyro_seq.models import VAEGAN

    model = VAEGAN(**config["model"])
    guide = VAEGANGuide(model, **config.get("guide", {}))
    if model.likelihood == "pixels":
        return model, guide, Trace_ELBO()
    return model, guide, VAEGANLoss(**config.get("loss", {}))


#: What a checkpoint's run config of VAE/GAN and the VAE holds (see :meth:`Recipe.config_schema`).
CONFIG_SCHEMA = {
    "model.image_size": "int", "model.channels": "?int", "model.z_dim": "int", "model.width": "?real",
    "model.likelihood": "?str", "model.scale": "?real", "guide.width": "?real|None", "guide.min_scale": "?real",
    "loss.gamma": "?real", "loss.equilibrium": "?real", "loss.margin": "?real|None", "loss.generator_loss": "?str",
    "loss.beta": "?real", "data.name": "str", "data.data_root": "?str|None", "data.limit": "?int|None",
    "data.valid_limit": "?int|None", "data.batch_size": "?int",
}  # fmt: skip


def sample_spread(images):
    """Mean over pixels of the standard deviation across images ``[N, C, H, W]`` (how varied a set is)."""
    return float(images.flatten(1).std(0).mean())


@torch.no_grad()
def reconstruction_metrics(model, guide, images, classifier=None, batch_size=200):
    """
    Reconstruction errors of held-out images (decoded posterior means, evaluation mode):
    ``pixel_mse`` (mean squared error per pixel, pixels in [0, 1]) and, with a
    :class:`~pyro_seq.diagnostics.image_metrics.MnistClassifier`, ``classifier_feature_mse`` (mean squared
    error per feature in its penultimate layer: a feature space shared by every model). For
    VAE/GAN also ``discriminator_feature_mse`` in its own :math:`\\mathrm{Dis}_l`.
    """
    sums = {"pixel_mse": 0.0, "classifier_feature_mse": 0.0, "discriminator_feature_mse": 0.0}
    n = 0
    was_training = model.training
    model.eval()
    try:
        for batch in image_batches(images, batch_size):
            x = batch.x
            recon = guide.reconstruct(x)  # [b, C, H, W]
            sums["pixel_mse"] += float(((recon - x) ** 2).flatten(1).mean(1).sum())
            if classifier is not None:
                sums["classifier_feature_mse"] += float(((classifier.features(recon) - classifier.features(x)) ** 2).mean(1).sum())
            if model.likelihood == "features":
                real, fake, _ = model.discriminate(2 * x - 1, 2 * recon - 1)
                sums["discriminator_feature_mse"] += float(((real - fake) ** 2).mean(1).sum())
            n += x.size(0)
    finally:
        model.train(was_training)
    out = {"pixel_mse": sums["pixel_mse"] / n, "num_images": n}
    if classifier is not None:
        out["classifier_feature_mse"] = sums["classifier_feature_mse"] / n
    if model.likelihood == "features":
        out["discriminator_feature_mse"] = sums["discriminator_feature_mse"] / n
    return out


@torch.no_grad()
def gan_health(model, images, num_samples=256):
    """
    Collapse indicators: ``spread_ratio`` (:func:`sample_spread` of prior samples over that of
    ``images``) and, for VAE/GAN, the discriminator's mean output on real images and on prior
    samples (evaluation mode). ``collapsed`` is ``spread_ratio < COLLAPSE_SPREAD``.
    """
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(12345)  # the same latents at every check, without touching the run's stream
        samples = model.generate(num_samples)  # [n, C, H, W]
    ratio = sample_spread(samples) / max(sample_spread(images), 1e-12)
    out = {"spread_ratio": ratio, "collapsed": bool(ratio < COLLAPSE_SPREAD)}
    if model.likelihood == "features":
        was_training = model.training
        model.eval()
        try:
            x = images[:num_samples].to(samples)
            _, _, logits = model.discriminate(2 * x - 1, 2 * samples[: len(x)] - 1)  # [n, 2]
        finally:
            model.train(was_training)
        d = torch.sigmoid(logits).mean(0)
        out.update(d_real=float(d[0]), d_prior=float(d[1]))
    return out


def _eval_fn(log_path: Optional[Path]):
    """The trainer's validation figure (pixel MSE of reconstructions, lower is better) with a health check."""

    def eval_fn(model, guide, batches):
        x = torch.cat([b.x for b in batches])
        metrics = reconstruction_metrics(model, guide, x)
        health = gan_health(model, x)
        message = "valid: pixel MSE %.5f, prior-sample spread %.2f of the data's%s"
        extra = "" if "d_real" not in health else f", D(real) {health['d_real']:.2f}, D(prior sample) {health['d_prior']:.2f}"
        logger.info(message, metrics["pixel_mse"], health["spread_ratio"], extra)
        if health["collapsed"]:
            logger.warning(
                "possible mode collapse: prior samples spread only %.2f of the data's (threshold %.2f)",
                health["spread_ratio"], COLLAPSE_SPREAD,
            )
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps({"event": "gan_health", **metrics, **health}) + "\n")
        return metrics["pixel_mse"]

    return eval_fn


def default_classifier_path():
    """Where the MNIST classifier of the test metrics is kept: ``<cache dir>/mnist_classifier.pt``."""
    from pyro_seq.data.download import default_cache_dir

    return Path(default_cache_dir()) / "mnist_classifier.pt"


def _print_record(kind, record):
    parts = [f"pixel MSE {record['pixel_mse']:.5f}"]
    for key, label in (("classifier_feature_mse", "classifier-feature MSE"), ("mean_confidence", "sample confidence"),
                       ("num_classes_seen", "classes seen"), ("frechet_distance", "Frechet distance")):
        if key in record:
            parts.append(f"{label} {record[key]:.4g}")
    parts.append(f"prior-sample spread {record['spread_ratio']:.2f} of the data's{' (COLLAPSED)' if record['collapsed'] else ''}")
    print(f"{kind} on {record['data']} test ({record['num_images']} images, epoch {record['epoch']}): " + ", ".join(parts))


def evaluate_images(model, guide, state, data_root, num_samples, classifier_path, seed, device):
    """
    Test figures of a VAE/GAN or VAE checkpoint: :func:`reconstruction_metrics` on the test split,
    :func:`gan_health`, and on MNIST the classifier-based sample quality of ``num_samples`` prior
    samples against the test images (:func:`~pyro_seq.diagnostics.image_metrics.sample_quality`).
    """
    import pyro

    data = state["config"]["data"]
    data_root = data_root or data.get("data_root")
    test, _ = load_image_split(data["name"], "test", data_root)
    test = test.to(device)
    classifier = None
    if data["name"] == "mnist":
        from pyro_seq.diagnostics.image_metrics import load_or_train_classifier

        path = Path(classifier_path) if classifier_path else default_classifier_path()
        classifier, _ = load_or_train_classifier(path, data_root=data_root)
        classifier.to(device)
    pyro.set_rng_seed(seed)
    record = {"kind": state["kind"], "data": data["name"], "epoch": state.get("epoch"), "seed": seed, **reconstruction_metrics(model, guide, test, classifier)}
    record.update(gan_health(model, test))
    if classifier is not None and num_samples > 0:
        from pyro_seq.diagnostics.image_metrics import sample_quality

        pyro.set_rng_seed(seed)
        samples = model.generate(num_samples)
        quality = sample_quality(classifier, samples, reference=test)
        record.update({k: v for k, v in quality.items()})
        record["num_samples"] = num_samples
    return record


@torch.no_grad()
def write_grids(model, guide, state, out, data_root=None, seed=0, num=8):
    """
    ``reconstructions.png`` (test images in odd rows, their reconstructions below) and
    ``samples.png`` (prior samples) for an image checkpoint.
    """
    import pyro

    from pyro_seq.plotting import image_grid_png

    data = state["config"]["data"]
    test, _ = load_image_split(data["name"], "test", data_root or data.get("data_root"))
    device = next(model.parameters()).device
    x = test[torch.linspace(0, len(test) - 1, 4 * num).long()].to(device)  # spread over the split
    recon = guide.reconstruct(x)
    rows = torch.stack([x.view(4, num, *x.shape[1:]), recon.view(4, num, *x.shape[1:])], 1).reshape(-1, *x.shape[2:])
    title = f"{state['kind']} on {data['name']}, epoch {state.get('epoch')}"
    shown = (lambda t: 1 - t) if data["name"] == "faces" else (lambda t: t)  # the grid draws 1 as black: ink, not light
    paths = [image_grid_png(shown(rows.cpu()), Path(out) / "reconstructions.png", title=f"{title}: test images (rows 1, 3, ...) and reconstructions", columns=num)]
    pyro.set_rng_seed(seed)
    samples = model.generate(4 * num)[:, 0]
    paths.append(image_grid_png(shown(samples.cpu()), Path(out) / "samples.png", title=f"{title}: prior samples", columns=num))
    logger.info("wrote %s", ", ".join(map(str, paths)))
    return paths


class ImageVAERecipe(Recipe):
    """
    VAE/GAN (feature-space likelihood, three routed losses and optimisers) and the plain VAE with
    the same encoder and decoder, on images; validated by the pixel MSE of reconstructions.
    """

    evaluate_options = ("classifier",)
    kinds = {
        "vaegan": "VAE/GAN: feature-space likelihood, three routed losses (images)",
        "vae": "the plain VAE with the VAE/GAN encoder and decoder (images)",
    }
    options = ("data_root", "batch_size", "data", "z_dim")
    data_names = tuple(sorted(IMAGE_DATA))
    defaults = {"lr": 3e-4, "epochs": 20, "batch_size": 64, "clip_norm": 10.0, "data": "mnist", "z_dim": None}  # z_dim None: 128 for faces (the paper), 32 for mnist
    units = ("nats/image", "pixel MSE {:.5f}")

    def add_arguments(self, parser, kind):
        g = parser.add_argument_group("data")
        g.add_argument("--limit", type=positive_int, default=None, help="use only the first N training images")
        g.add_argument("--valid-limit", type=positive_int, default=1000, help="validate on the first N validation images")
        g = parser.add_argument_group("model")
        g.add_argument("--width", type=positive_float, default=1.0, help="multiplier of every hidden width (1: the paper's networks; e.g. 0.25 on a CPU)")
        g.add_argument("--scale", type=positive_float, default=1.0, help="sigma of the Gaussian likelihood (features for vaegan, pixels in [-1, 1] for vae)")
        g = parser.add_argument_group("VAE/GAN loss")
        g.add_argument("--gamma", type=nonnegative_float, default=1e-2, help="weight of the feature reconstruction against the GAN term in the decoder's objective")
        g.add_argument("--equilibrium", type=number(float, 0, 1, low_open=True, high_open=True), default=0.68, help="balanced discriminator error of the skip rule")
        g.add_argument("--margin", type=finite_float, default=0.35, help="skip a player's update while an error is further than this from --equilibrium (negative: never skip)")
        g.add_argument("--generator-loss", choices=("non_saturating", "minimax"), default="non_saturating")
        g = parser.add_argument_group("optimisation")
        g.add_argument("--dis-lr", type=positive_float, default=None, help="the discriminator's learning rate (default: --lr)")
        g.add_argument("--betas", type=probability_below_one, nargs=2, default=(0.5, 0.999), help="Adam betas")
        g = parser.add_argument_group("test")
        g.add_argument("--classifier", default=None, help="MNIST classifier checkpoint for the test metrics (trained and saved there if missing; default: $XDG_CACHE_HOME/pyro_seq or ~/.cache/pyro_seq, mnist_classifier.pt)")
        g.add_argument("--test-samples", type=nonnegative_int, default=2000, help="prior samples for the test sample-quality metrics (0: skip the test evaluation)")

    def load_data(self, kind, args):
        train, _ = load_image_split(args.data, "train", args.data_root, args.limit)
        valid, _ = load_image_split(args.data, "valid", args.data_root, args.valid_limit)
        logger.info("data %s: %d training images %s, %d validation images", args.data, len(train), tuple(train.shape[1:]), len(valid))
        config = {
            "name": args.data, "data_root": resolved_path(args.data_root),
            "limit": args.limit, "valid_limit": args.valid_limit, "batch_size": args.batch_size,
        }
        return RunData(
            lambda epoch: image_batches(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch),
            image_batches(valid, 200),
            config,
        )

    def config(self, kind, args, data):
        z_dim = args.z_dim or (128 if args.data == "faces" else 32)
        return {
            "model": {
                "image_size": IMAGE_DATA[args.data], "channels": 1, "z_dim": z_dim, "width": args.width,
                "likelihood": IMAGE_MODELS[kind], "scale": args.scale,
            },
            "guide": {},
            "loss": {
                "gamma": args.gamma, "equilibrium": args.equilibrium,
                "margin": None if args.margin < 0 else args.margin, "generator_loss": args.generator_loss,
            },
        }

    def train_config(self, kind, args):
        return {"dis_lr": args.dis_lr, "betas": list(args.betas)}

    def build(self, kind, config):
        return build_vaegan(kind, config)

    def config_schema(self, kind):
        return {**super().config_schema(kind), **CONFIG_SCHEMA}

    def optim(self, kind, args, config):
        from pyro_seq.losses import vaegan_optim

        return vaegan_optim(
            lr=args.lr, betas=tuple(args.betas), clip_norm=args.clip_norm,
            network_lr=None if args.dis_lr is None else {"discriminator": args.dis_lr},
        )

    def eval_fn(self, kind, args, out):
        return _eval_fn(Path(out) / LOG_FILE)

    def test(self, kind, args, out, device, trainer):
        """The test figures of the last checkpoint (:func:`evaluate_images`) and its grids (:func:`write_grids`)."""
        if args.test_samples <= 0:
            return None
        model, guide, _, state = self.load_model(Path(out) / LAST_CHECKPOINT, device=device, kind=kind)
        record = evaluate_images(model, guide, state, args.data_root, args.test_samples, args.classifier, args.seed, device)
        record["train_seconds"] = trainer.elapsed
        write_grids(model, guide, state, out, args.data_root, args.seed)
        _print_record(kind, record)
        return record

    def evaluate(self, args, model, guide, state, device):
        """``pyro-seq evaluate`` for VAE/GAN and VAE checkpoints: test reconstruction and sample-quality figures."""
        record = evaluate_images(model, guide, state, args.data_root, args.num_samples, getattr(args, "classifier", None), args.seed, device)
        record["checkpoint"] = str(args.checkpoint)
        output = evaluation_path(args)
        output.write_text(json.dumps(record, indent=2) + "\n")
        _print_record(state["kind"], record)
        print(f"  written to {output}")
        return 0

    def sample(self, args, model, guide, state, device):
        """``pyro-seq sample`` for VAE/GAN and VAE checkpoints: the reconstruction and sample grids."""
        paths = write_grids(model, guide, state, args.out, args.data_root, args.seed, num=max(args.num, 2))
        print(f"wrote {', '.join(map(str, paths))}")
        return 0
