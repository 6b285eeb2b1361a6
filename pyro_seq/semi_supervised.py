"""
Semi-supervised classification with M2, ADGM and SDGM: evaluation and the ``pyro-seq train
m2|adgm|sdgm`` command.

Training goes through the common :class:`~pyro_seq.trainer.Trainer` (checkpoints, resume,
logs, skipped non-finite steps); only the batches (:class:`~pyro_seq.data.SemiSupervisedBatch`)
and the validation figure (classification error, %) differ from the other models.
"""

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch

from pyro_seq.calibration import expected_calibration_error

__all__ = [
    "SEMI_SUPERVISED_MODELS",
    "build_semi_supervised",
    "classification_eval_fn",
    "classification_metrics",
]

logger = logging.getLogger("pyro_seq.cli")

#: Command-line kinds and their model classes (names in :mod:`pyro_seq.models`).
SEMI_SUPERVISED_MODELS = {"m2": "M2", "adgm": "ADGM", "sdgm": "SDGM"}


@torch.no_grad()
def classification_metrics(guide, batches, num_samples=100, num_bins=15):
    """
    Classification figures of :meth:`~pyro_seq.guides.AuxiliaryGuide.predict` (probabilities
    averaged over ``num_samples`` draws of ``a``) on labelled batches, with the modules in
    eval mode.

    :param batches: iterable of :class:`~pyro_seq.data.LabelledBatch`.
    :returns: dict: ``error`` (%), ``nll`` (mean :math:`-\\log p(y \\mid x)`, nats), ``entropy``
        (mean predictive entropy), ``ece`` (expected calibration error over ``num_bins``
        equal-width confidence bins, %; see
        :func:`~pyro_seq.calibration.expected_calibration_error`), ``mean_std`` (mean spread
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
    Build M2, ADGM or SDGM, the :class:`~pyro_seq.guides.AuxiliaryGuide` and the
    :class:`~pyro_seq.losses.SemiSupervisedELBO` from a run config::

        {"model": model kwargs, "guide": guide kwargs,
         "loss": {"alpha": 50.0, "warmup_start": 1.0, "warmup_steps": 0, "num_particles": 1}}
    """
    from pyro_seq import guides, losses, models

    model = getattr(models, SEMI_SUPERVISED_MODELS[kind])(**config["model"])
    guide = guides.AuxiliaryGuide(model, **config.get("guide", {}))
    loss_config = config.get("loss", {})
    start, steps = float(loss_config.get("warmup_start", 1.0)), int(loss_config.get("warmup_steps", 0))
    schedule = losses.LinearSchedule(start, 1.0, steps) if steps > 0 else 1.0
    loss = losses.SemiSupervisedELBO(
        alpha=float(loss_config["alpha"]), schedule=schedule, num_particles=int(loss_config.get("num_particles", 1))
    )
    return model, guide, loss


def add_arguments(parser, positive_int, int_list) -> None:
    """Command-line options of ``pyro-seq train m2|adgm|sdgm``."""
    from pyro_seq.data import SEMI_SUPERVISED_DATASETS
    from pyro_seq.trainer import add_run_arguments

    g = parser.add_argument_group("data")
    g.add_argument("--data", choices=SEMI_SUPERVISED_DATASETS, default="digits", help="digits (scikit-learn's 8x8 digits, offline) or dynamic_mnist (MNIST from the data root, binarized per step)")
    g.add_argument("--data-root", default=None, help="data root (default: $PYRO_SEQ_DATA, else ~/.cache/pyro_seq)")
    g.add_argument("--labels-per-class", type=positive_int, default=10, help="labelled training images per class")
    g.add_argument("--label-seed", type=int, default=0, help="seed of the choice of labelled images")
    g.add_argument("--limit", type=positive_int, default=None, help="use only the first N images of each split (smoke tests; the binarized MNIST test split is sorted by class)")
    g.add_argument("--batch-size", type=positive_int, default=100, help="unlabelled images per step")
    g.add_argument("--labelled-batch-size", type=positive_int, default=100, help="labelled images per step")
    g = parser.add_argument_group("model")
    g.add_argument("--z-dim", type=positive_int, default=100)
    g.add_argument("--a-dim", type=positive_int, default=100, help="auxiliary variable size (ignored by m2)")
    g.add_argument("--hidden-dims", type=int_list, default=[500, 500], help="hidden widths of every network")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--out", required=True, help="output directory (checkpoints, log.jsonl, test.json)")
    g.add_argument("--epochs", type=positive_int, default=100, help="total epochs (passes over the unlabelled images)")
    g.add_argument("--lr", type=float, default=3e-4)
    g.add_argument("--lrd", type=float, default=1.0, help="learning-rate decay factor per step")
    g.add_argument("--clip-norm", type=float, default=5.0, help="ClippedAdam gradient clipping")
    g.add_argument("--weight-decay", type=float, default=0.0, help="ClippedAdam L2 weight decay")
    g.add_argument("--alpha", type=float, default=None, help="classification weight (default: 0.1 * N / N_labelled)")
    g.add_argument("--num-particles", type=positive_int, default=1)
    g.add_argument("--warmup-start", type=float, default=1.0, help="β at step 0")
    g.add_argument("--warmup-steps", type=int, default=0, help="steps of linear β warm-up to 1 (0: none)")
    g.add_argument("--valid-samples", type=positive_int, default=10, help="samples of a per image for the validation error")
    g.add_argument("--eval-samples", type=int, default=100, help="samples of a per image for the test error at the end (0: skip)")
    add_run_arguments(g, positive_int, seed_help="seed of initialisation, batches and binarization")
    g.add_argument("--distributed", action="store_true", help="data-parallel over the processes torchrun starts (gradients averaged over ranks: each step sees WORLD_SIZE x the labelled and unlabelled batches); rank 0 logs, validates, checkpoints and tests")


def cmd_train(args, resolve_device, load_model) -> int:
    """``pyro-seq train m2|adgm|sdgm``: train, then the test error of the last and best checkpoints."""
    if not args.distributed:
        return _train(args, resolve_device(args.device), None, load_model)
    import torch.distributed

    from pyro_seq.distributed import init_distributed

    # the loss is a mean over the batch's images: the union's gradient is the mean of the ranks'
    context, device = init_distributed(args.device, reduction="mean")
    if not context.is_main:
        logging.getLogger("pyro_seq").setLevel(logging.WARNING)
    try:
        return _train(args, device, context, load_model)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(args, device, context, load_model) -> int:
    import pyro

    from pyro_seq.checkpoint import check_resume_data
    from pyro_seq.data import labelled_batches, load_semi_supervised
    from pyro_seq.losses import default_alpha
    from pyro_seq.trainer import BEST_CHECKPOINT, LAST_CHECKPOINT, LOG_FILE, Trainer

    main_rank = context is None or context.is_main
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_semi_supervised(
        args.data, args.labels_per_class, args.label_seed, data_root=args.data_root, seed=0, limit=args.limit
    )
    train = data.train
    x_dim = int(train.x.shape[-1])
    logger.info(
        "data %s: %d training images, %d labelled (%d per class, label seed %d), %d valid, %d test",
        args.data, train.num_data, train.num_labelled, args.labels_per_class, args.label_seed,
        len(data.valid[0]), len(data.test[0]),
    )
    alpha = default_alpha(train.num_data, train.num_labelled) if args.alpha is None else args.alpha
    config = {
        "model": {
            "x_dim": x_dim, "y_dim": train.num_classes, "z_dim": args.z_dim, "a_dim": args.a_dim,
            "hidden_dims": list(args.hidden_dims), "image_shape": list(data.image_shape),
        },
        "guide": {},
        "loss": {
            "alpha": alpha, "warmup_start": args.warmup_start, "warmup_steps": args.warmup_steps,
            "num_particles": args.num_particles,
        },
        "data": {
            "name": args.data,
            "data_root": None if args.data_root is None else str(Path(args.data_root).resolve()),
            "labels_per_class": args.labels_per_class, "label_seed": args.label_seed, "limit": args.limit,
            "batch_size": args.batch_size, "labelled_batch_size": args.labelled_batch_size,
            "labelled_indices": train.labelled.tolist(),
        },
        "train": {
            "lr": args.lr, "lrd": args.lrd, "clip_norm": args.clip_norm, "weight_decay": args.weight_decay,
            "seed": args.seed, "patience": args.patience, "epochs": args.epochs,
            "world_size": 1 if context is None else context.world_size,
        },
    }
    if args.resume:
        keys = ("name", "labels_per_class", "label_seed", "limit", "batch_size", "labelled_batch_size")
        check_resume_data(out / LAST_CHECKPOINT, args.model, config["data"], keys)

    pyro.set_rng_seed(args.seed)
    model, guide, loss = build_semi_supervised(args.model, config)
    if main_rank:
        (out / "config.json").write_text(json.dumps({"kind": args.model, **config}, indent=2) + "\n")
    valid = labelled_batches(*data.valid)
    trainer = Trainer(
        model, guide, loss,
        lambda epoch: train.batches(epoch, args.batch_size, args.labelled_batch_size, args.seed),
        valid,
        lr=args.lr, clip_norm=args.clip_norm, lrd=args.lrd, weight_decay=args.weight_decay,
        device=device, out_dir=out, seed=args.seed, patience=args.patience, kind=args.model,
        config=config, progress=False if args.no_progress else None, log_every=args.log_every,
        max_bad_steps=args.max_bad_steps, eval_fn=classification_eval_fn(args.valid_samples),
        resume=args.resume, units=("nats/image", "error {:.2f}%"), distributed=context,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
    )
    n_params = sum(p.numel() for m in (model, guide) for p in m.parameters())
    logger.info("%s: %d parameters on %s, alpha %.4g; output in %s (valid figure: error %%)", args.model, n_params, device, alpha, out)
    start = time.perf_counter()
    summary = trainer.fit(args.epochs)
    logger.info(
        "training done: %d epochs, %d steps, best valid error %.2f%% at epoch %s (%.1fs this session, %.1fs in all)",
        summary["epochs"], summary["global_step"], summary["best_valid"], summary["best_epoch"],
        time.perf_counter() - start, trainer.elapsed,
    )
    if args.eval_samples <= 0 or not main_rank:
        return 0
    pyro.set_rng_seed(args.seed)
    test = labelled_batches(*data.test)
    record = {"event": "test", "split": "test", "eval_samples": args.eval_samples, "train_seconds": trainer.elapsed}
    for name, path in (("last", out / LAST_CHECKPOINT), ("best_valid", out / BEST_CHECKPOINT)):
        _, guide, _, state = load_model(path, device=device, kind=args.model)
        metrics = classification_metrics(guide, [b.to(device) for b in test], num_samples=args.eval_samples)
        record[name] = {"checkpoint": str(path), "epoch": state["epoch"], **metrics}
        logger.info(
            "test (%s checkpoint, epoch %d): error %.2f%%, NLL %.4f, ECE %.2f%% over %d images, %d samples of a",
            name, state["epoch"], metrics["error"], metrics["nll"], metrics["ece"], metrics["num_items"], args.eval_samples,
        )
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    (out / "test.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"test error of {args.model} on {args.data}: {record['last']['error']:.2f}% (last checkpoint, epoch "
          f"{record['last']['epoch']}), {record['best_valid']['error']:.2f}% (best valid, epoch {record['best_valid']['epoch']})")
    return 0


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


def cmd_evaluate(args, model, guide, state, device) -> int:
    """``pyro-seq evaluate`` for M2/ADGM/SDGM checkpoints: classification error, NLL and ECE."""
    import pyro

    pyro.set_rng_seed(args.seed)
    batches = [b.to(device) for b in _test_batches(state, args.split, args.data_root)]
    metrics = classification_metrics(guide, batches, num_samples=args.num_samples)
    record = {"checkpoint": str(args.checkpoint), "kind": state["kind"], "epoch": state.get("epoch"),
              "data": state["config"]["data"]["name"], "split": args.split, "seed": args.seed,
              "samples_of_a": args.num_samples, **metrics}
    output = Path(args.output) if args.output else Path(args.checkpoint).with_name(f"{Path(args.checkpoint).stem}_{args.split}_eval.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{record['data']} {args.split} ({args.split == 'train' and 'labelled images' or 'all images'}): error "
          f"{metrics['error']:.2f}%, NLL {metrics['nll']:.4f} nats, ECE {metrics['ece']:.2f}% over {metrics['num_items']} "
          f"images ({args.num_samples} samples of a)\n  written to {output}")
    return 0


def cmd_sample(args, model, guide, state, device) -> int:
    """
    ``pyro-seq sample`` for M2/ADGM/SDGM checkpoints: ``samples.png`` (one row per class, ``--num``
    prior samples each) and, with an auxiliary variable, ``a_pca.png``: the first two principal
    components of the means of :math:`q(a \\mid x)` on the test images, coloured by class.
    """
    import pyro

    from pyro_seq.plotting import _pyplot, _save, image_grid_png

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
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6, 5))
        for c in range(model.y_dim):
            keep = (labels == c).numpy()
            ax.scatter(pcs[keep, 0], pcs[keep, 1], s=3, label=str(c), color=plt.cm.tab10(c % 10))
        ax.set_xlabel("PC 1 of E[a | x]")
        ax.set_ylabel("PC 2")
        ax.set_title(f"{state['kind']}: q(a | x) means of the test images by class")
        ax.legend(markerscale=4, fontsize=7, loc="best", ncol=2)
        paths.append(_save(fig, out / "a_pca.png"))
    logger.info("wrote %s", ", ".join(map(str, paths)))
    print(f"wrote {', '.join(map(str, paths))}")
    return 0
