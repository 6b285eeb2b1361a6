"""
Semi-supervised classification with M2, ADGM and SDGM: evaluation and the family's
:class:`~pyro_seq.recipes.Recipe` (``pyro-seq train|evaluate|sample m2|adgm|sdgm``).

Training goes through the one recipe :func:`pyro_seq.recipes.train` (checkpoints, resume, logs,
skipped non-finite steps); only the batches (:class:`~pyro_seq.data.SemiSupervisedBatch`) and the
validation figure (classification error, %) differ from the other models.
"""

import json
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch

from pyro_seq.data import SEMI_SUPERVISED_DATASETS
from pyro_seq.diagnostics.calibration import expected_calibration_error
from pyro_seq.recipes.base import Recipe, RunData, evaluation_path, resolved_path
from pyro_seq.recipes.options import nonnegative_float, positive_int, seed_int
from pyro_seq.training.trainer import BEST_CHECKPOINT, LAST_CHECKPOINT

__all__ = [
    "SEMI_SUPERVISED_MODELS",
    "SemiSupervisedRecipe",
    "build_semi_supervised",
    "classification_eval_fn",
    "classification_metrics",
]

logger = logging.getLogger("pyro_seq.recipes")

#: Command-line kinds and their model classes (names in :mod:`pyro_seq.models`).
SEMI_SUPERVISED_MODELS = {"m2": "M2", "adgm": "ADGM", "sdgm": "SDGM"}


@torch.no_grad()
def classification_metrics(guide, batches, num_samples=100, num_bins=15):
    """
    Classification figures of :meth:`~pyro_seq.guides.SemiSupervisedGuide.predict` (probabilities
    averaged over ``num_samples`` draws of ``a``) on labelled batches, with the modules in
    eval mode.

    :param batches: iterable of :class:`~pyro_seq.data.LabelledBatch`.
    :returns: dict: ``error`` (%), ``nll`` (mean :math:`-\\log p(y \\mid x)`, nats), ``entropy``
        (mean predictive entropy), ``ece`` (expected calibration error over ``num_bins``
        equal-width confidence bins, %; see
        :func:`~pyro_seq.diagnostics.calibration.expected_calibration_error`), ``mean_std`` (mean spread
        of the class probabilities over the samples of ``a``) and ``num_items``.
    """
    was_training = guide.training
    guide.eval()
    try:
        probs, labels, stds = [], [], []
        for batch in batches:
            pred = guide.predict(batch.x, num_samples=num_samples)
            probs.append(pred.probs.cpu())
            stds.append(pred.std.cpu())
            labels.append(batch.y.cpu())
    finally:
        guide.train(was_training)
    if not probs:
        raise ValueError("no labelled batches to evaluate")
    probs, labels, stds = torch.cat(probs), torch.cat(labels), torch.cat(stds)  # [N, K], [N], [N, K]
    _, predicted = probs.max(-1)
    correct = (predicted == labels).double()
    ece = expected_calibration_error(probs, labels, num_bins=num_bins)
    picked = probs.gather(-1, labels[:, None]).squeeze(-1).clamp_min(1e-30)
    return {
        "error": 100.0 * (1.0 - float(correct.mean())),
        "nll": float(-picked.log().double().mean()),
        "entropy": float(-(probs * probs.clamp_min(1e-30).log()).sum(-1).double().mean()),
        "ece": 100.0 * ece,
        "mean_std": float(stds.gather(-1, predicted[:, None]).double().mean()),
        "num_items": int(labels.numel()),
    }


def classification_eval_fn(num_samples=10):
    """The trainer's validation figure for semi-supervised models: error in % (lower is better)."""

    def eval_fn(model, guide, batches):
        return classification_metrics(guide, batches, num_samples=num_samples)["error"]

    return eval_fn


def build_semi_supervised(kind: str, config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """
    Build M2, ADGM or SDGM, the :class:`~pyro_seq.guides.SemiSupervisedGuide` and the
    :class:`~pyro_seq.losses.SemiSupervised_ELBO` from a run config::

        {"model": model kwargs, "guide": guide kwargs,
         "loss": {"alpha": 50.0, "warmup_start": 1.0, "warmup_steps": 0, "num_particles": 1}}
    """
    from pyro_seq import guides, losses, models

    model = getattr(models, SEMI_SUPERVISED_MODELS[kind])(**config["model"])
    guide = guides.SemiSupervisedGuide(model, **config.get("guide", {}))
    loss_config = config.get("loss", {})
    start, steps = float(loss_config.get("warmup_start", 1.0)), int(loss_config.get("warmup_steps", 0))
    schedule = losses.LinearSchedule(start, 1.0, steps) if steps > 0 else 1.0
    loss = losses.SemiSupervised_ELBO(
        alpha=float(loss_config["alpha"]), schedule=schedule, num_particles=int(loss_config.get("num_particles", 1))
    )
    return model, guide, loss


#: What a checkpoint's run config of M2, ADGM and SDGM holds (see :meth:`Recipe.config_schema`).
CONFIG_SCHEMA = {
    "model.x_dim": "int", "model.y_dim": "int", "model.z_dim": "int", "model.a_dim": "?int", "model.hidden_dims": "ints",
    "model.min_scale": "?real", "model.image_shape": "?ints", "guide.hidden_dims": "?ints|None",
    "loss.alpha": "real", "loss.warmup_start": "?real", "loss.warmup_steps": "?int", "loss.num_particles": "?int",
    "data.name": "str", "data.labels_per_class": "int", "data.label_seed": "int", "data.data_root": "?str|None",
    "data.limit": "?int|None", "data.batch_size": "?int", "data.labelled_batch_size": "?int",
}  # fmt: skip


def _test_batches(state, split, data_root):
    from pyro_seq.data import labelled_batches, load_semi_supervised

    data = state["config"]["data"]
    splits = load_semi_supervised(
        data["name"], data["labels_per_class"], data["label_seed"], data_root=data_root or data.get("data_root"), limit=data.get("limit")
    )
    if split == "train":  # the labelled training images, binarized once
        x = splits.train.x[torch.as_tensor(splits.train.labelled)]
        x = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < x).float()
        return labelled_batches(x.numpy(), splits.train.y_labelled.numpy())
    return labelled_batches(*getattr(splits, split))


def _load(args):
    from pyro_seq.data import load_semi_supervised

    return load_semi_supervised(args.data, args.labels_per_class, args.label_seed, data_root=args.data_root, seed=0, limit=args.limit)


class SemiSupervisedRecipe(Recipe):
    """
    M2, ADGM and SDGM: labelled and unlabelled images per step
    (:class:`~pyro_seq.data.SemiSupervisedBatches`), the
    :class:`~pyro_seq.losses.SemiSupervised_ELBO`, validated and tested by classification error.
    """

    evaluate_options = ("split",)
    kinds = {
        "m2": "M2 (semi-supervised classification)",
        "adgm": "ADGM, the auxiliary deep generative model (semi-supervised classification)",
        "sdgm": "SDGM, the skip deep generative model (semi-supervised classification)",
    }
    options = (
        "data_root", "batch_size", "lrd", "weight_decay", "num_particles", "warmup_start", "warmup_steps",
        "patience", "eval_samples", "distributed", "data", "z_dim", "hidden_dims",
    )
    defaults = {"lr": 3e-4, "clip_norm": 5.0, "batch_size": 100, "warmup_start": 1.0, "warmup_steps": 0, "epochs": 100, "data": "digits", "z_dim": 100, "hidden_dims": [500, 500]}
    data_names = SEMI_SUPERVISED_DATASETS
    units = ("nats/image", "error {:.2f}%")
    # the loss is a mean over the batch's images: the union's gradient is the mean of the ranks'
    distributed_reduction = "mean"

    def add_arguments(self, parser, kind):
        g = parser.add_argument_group("data")
        g.add_argument("--labels-per-class", type=positive_int, default=10, help="labelled training images per class")
        g.add_argument("--label-seed", type=seed_int, default=0, help="seed of the choice of labelled images")
        g.add_argument("--limit", type=positive_int, default=None, help="use only the first N images of each split (smoke tests; the binarized MNIST test split is sorted by class)")
        g.add_argument("--labelled-batch-size", type=positive_int, default=100, help="labelled images per step (--batch-size: unlabelled images per step)")
        g = parser.add_argument_group("model")
        g.add_argument("--a-dim", type=positive_int, default=100, help="auxiliary variable size (ignored by m2)")
        g = parser.add_argument_group("objective")
        g.add_argument("--alpha", type=nonnegative_float, default=None, help="classification weight (default: 0.1 * N / N_labelled)")
        g.add_argument("--valid-samples", type=positive_int, default=10, help="samples of a per image for the validation error")

    def load_data(self, kind, args):
        from pyro_seq.data import labelled_batches

        data = _load(args)
        train = data.train
        logger.info(
            "data %s: %d training images, %d labelled (%d per class, label seed %d), %d valid, %d test",
            args.data, train.num_data, train.num_labelled, args.labels_per_class, args.label_seed,
            len(data.valid[0]), len(data.test[0]),
        )
        config = {
            "name": args.data,
            "data_root": resolved_path(args.data_root),
            "labels_per_class": args.labels_per_class, "label_seed": args.label_seed, "limit": args.limit,
            "batch_size": args.batch_size, "labelled_batch_size": args.labelled_batch_size,
            "labelled_indices": train.labelled.tolist(),
        }
        info = {
            "x_dim": int(train.x.shape[-1]), "y_dim": train.num_classes, "image_shape": list(data.image_shape),
            "num_data": train.num_data, "num_labelled": train.num_labelled,
        }
        return RunData(
            lambda epoch: train.batches(epoch, args.batch_size, args.labelled_batch_size, args.seed),
            labelled_batches(*data.valid),
            config,
            info,
        )

    def config(self, kind, args, data):
        from pyro_seq.losses import default_alpha

        info = data.info
        alpha = default_alpha(info["num_data"], info["num_labelled"]) if args.alpha is None else args.alpha
        logger.info("%s: alpha %.4g (valid figure: error %%)", kind, alpha)
        return {
            "model": {
                "x_dim": info["x_dim"], "y_dim": info["y_dim"], "z_dim": args.z_dim, "a_dim": args.a_dim,
                "hidden_dims": list(args.hidden_dims), "image_shape": info["image_shape"],
            },
            "guide": {},
            "loss": {
                "alpha": alpha, "warmup_start": args.warmup_start, "warmup_steps": args.warmup_steps,
                "num_particles": args.num_particles,
            },
        }

    def build(self, kind, config):
        return build_semi_supervised(kind, config)

    def config_schema(self, kind):
        return {**super().config_schema(kind), **CONFIG_SCHEMA}

    def eval_fn(self, kind, args, out):
        return classification_eval_fn(args.valid_samples)

    def test(self, kind, args, out, device, trainer):
        """The test error, NLL and ECE of the last and the best-valid checkpoints."""
        import pyro

        from pyro_seq.data import labelled_batches

        if args.eval_samples <= 0:
            return None
        pyro.set_rng_seed(args.seed)
        test = labelled_batches(*_load(args).test)
        out = Path(out)
        record = {"split": "test", "eval_samples": args.eval_samples, "train_seconds": trainer.elapsed}
        for name, path in (("last", out / LAST_CHECKPOINT), ("best_valid", out / BEST_CHECKPOINT)):
            _, guide, _, state = self.load_model(path, device=device, kind=kind)
            metrics = classification_metrics(guide, [b.to(device) for b in test], num_samples=args.eval_samples)
            record[name] = {"checkpoint": str(path), "epoch": state["epoch"], **metrics}
            logger.info(
                "test (%s checkpoint, epoch %d): error %.2f%%, NLL %.4f, ECE %.2f%% over %d images, %d samples of a",
                name, state["epoch"], metrics["error"], metrics["nll"], metrics["ece"], metrics["num_items"], args.eval_samples,
            )
        print(f"test error of {kind} on {args.data}: {record['last']['error']:.2f}% (last checkpoint, epoch "
              f"{record['last']['epoch']}), {record['best_valid']['error']:.2f}% (best valid, epoch {record['best_valid']['epoch']})")
        return record

    def evaluate(self, args, model, guide, state, device):
        """``pyro-seq evaluate`` for M2/ADGM/SDGM checkpoints: classification error, NLL and ECE."""
        import pyro

        pyro.set_rng_seed(args.seed)
        batches = [b.to(device) for b in _test_batches(state, args.split, args.data_root)]
        metrics = classification_metrics(guide, batches, num_samples=args.num_samples)
        record = {"checkpoint": str(args.checkpoint), "kind": state["kind"], "epoch": state.get("epoch"),
                  "data": state["config"]["data"]["name"], "split": args.split, "seed": args.seed,
                  "samples_of_a": args.num_samples, **metrics}
        output = evaluation_path(args, args.split)
        output.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{record['data']} {args.split} ({args.split == 'train' and 'labelled images' or 'all images'}): error "
              f"{metrics['error']:.2f}%, NLL {metrics['nll']:.4f} nats, ECE {metrics['ece']:.2f}% over {metrics['num_items']} "
              f"images ({args.num_samples} samples of a)\n  written to {output}")
        return 0

    def sample(self, args, model, guide, state, device):
        """
        ``pyro-seq sample`` for M2/ADGM/SDGM checkpoints: ``samples.png`` (one row per class, ``--num``
        prior samples each) and, with an auxiliary variable, ``a_pca.png``: the first two principal
        components of the means of :math:`q(a \\mid x)` on the test images, coloured by class.
        """
        import pyro

        from pyro_seq.plotting import image_grid_png, pyplot, save_figure

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        pyro.set_rng_seed(args.seed)
        shape = tuple(model.image_shape)
        y = torch.arange(model.y_dim, device=device).repeat_interleave(args.num)  # [K * num]
        x = model.generate(y).reshape(-1, *shape).cpu()  # [K * num, H, W]
        paths = [image_grid_png(x, out / "samples.png", title=f"{state['kind']} samples, one row per class (epoch {state.get('epoch')})", columns=args.num)]
        np.save(out / "samples.npy", x.numpy())
        if model.a_dim:
            batches = _test_batches(state, "test", args.data_root)
            with torch.no_grad():
                loc = torch.cat([guide.auxiliary(b.x.to(device))[0].cpu() for b in batches])  # [N, a_dim]
            labels = torch.cat([b.y for b in batches])
            centred = loc - loc.mean(0)
            _, _, v = torch.linalg.svd(centred, full_matrices=False)
            pcs = (centred @ v[:2].T).numpy()  # [N, 2]
            plt = pyplot()
            fig, ax = plt.subplots(figsize=(6, 5))
            for c in range(model.y_dim):
                keep = (labels == c).numpy()
                ax.scatter(pcs[keep, 0], pcs[keep, 1], s=3, label=str(c), color=plt.cm.tab10(c % 10))
            ax.set_xlabel("PC 1 of E[a | x]")
            ax.set_ylabel("PC 2")
            ax.set_title(f"{state['kind']}: q(a | x) means of the test images by class")
            ax.legend(markerscale=4, fontsize=7, loc="best", ncol=2)
            paths.append(save_figure(fig, out / "a_pca.png"))
        logger.info("wrote %s", ", ".join(map(str, paths)))
        print(f"wrote {', '.join(map(str, paths))}")
        return 0
