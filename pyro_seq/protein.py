"""
Protein sequence models: the evaluation protocol, calibrated uncertainty and the ``pyro-seq train
localizer|secondary-structure`` commands.

Training goes through the common :class:`~pyro_seq.trainer.Trainer` with
:class:`~pyro.infer.Trace_ELBO`: for the deterministic networks the guide is empty and the loss
is the cross-entropy; with ``--bayesian-last-layer`` the guide is
:class:`~pyro_seq.guides.LastLayerGuide` and the loss the ELBO of the output layer's weights.

**Protocol.** The full training sets (the DeepLoc training split, CullPDB) are not shipped, so
every figure says what it was trained and tested on:

* localisation, ``--protocol deeploc``: train on the DeepLoc *validation* file (1,655
  single-location proteins, drawn by the Light-Attention authors from the DeepLoc training set)
  minus a tenth held out for checkpoint selection, test on the DeepLoc 1.0 test split (2,768) and
  on setHARD (490);
* localisation, ``--protocol cv``: ``--num-folds`` folds over the union of the validation and test
  files (4,423 proteins), test on fold ``--fold``, select on the next fold, train on the rest;
* secondary structure: ``--num-folds`` folds over CB513 (511 chains), the same roles.

Folds come from :func:`~pyro_seq.data.protein.sequence_folds`: identical sequences always share a
fold (CB513 holds 432 distinct chains among its 511); homologues are *not* separated, so the CV
figures are optimistic against a homology-reduced split.
"""

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from pyro_seq.guides.point import PointEstimateGuide

__all__ = [
    "PROTEIN_MODELS",
    "build_protein",
    "gorodkin_correlation",
    "localization_metrics",
    "localization_splits",
    "structure_metrics",
    "structure_splits",
]

logger = logging.getLogger("pyro_seq.cli")

#: Command-line kinds and their model classes (names in :mod:`pyro_seq.models`).
PROTEIN_MODELS = {"localizer": "ProteinLocalizer", "secondary-structure": "SecondaryStructureBLSTM"}
#: Localisation protocols.
PROTOCOLS = ("deeploc", "cv")


def gorodkin_correlation(confusion):
    r"""
    Gorodkin's multi-class Matthews correlation :math:`R_K` of a confusion matrix ``[K, K]``
    (rows: true class, columns: predicted):

    .. math::

        R_K = \frac{c\, s - \sum_k p_k t_k}{\sqrt{s^2 - \sum_k p_k^2}\,\sqrt{s^2 - \sum_k t_k^2}},

    with :math:`c` the correct predictions, :math:`s` all predictions, :math:`t_k` and :math:`p_k`
    the true and predicted counts of class :math:`k`. 0 when a denominator vanishes.

    **References**

    [1] Jan Gorodkin, "Comparing two K-category assignments by a K-category correlation
        coefficient", Computational Biology and Chemistry 28, 2004.
    """
    c = np.asarray(confusion, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion must be a square [K, K] matrix, got shape {c.shape}")
    s, correct = c.sum(), np.trace(c)
    t, p = c.sum(1), c.sum(0)
    denominator = np.sqrt(s**2 - (p**2).sum()) * np.sqrt(s**2 - (t**2).sum())
    return 0.0 if denominator == 0 else float((correct * s - (p * t).sum()) / denominator)


def _confusion(labels, predicted, num_classes):
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def build_protein(kind: str, config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """
    Build a protein model, its guide and the loss from a run config ``{"model": kwargs,
    "guide": kwargs}``: :class:`~pyro_seq.guides.LastLayerGuide` when the model has a Bayesian
    output layer, else the empty :class:`PointEstimateGuide`; :class:`~pyro.infer.Trace_ELBO`.
    """
    from pyro.infer import Trace_ELBO

    from pyro_seq import models
    from pyro_seq.guides import LastLayerGuide

    model = getattr(models, PROTEIN_MODELS[kind])(**config["model"])
    guide = LastLayerGuide(model, **config.get("guide", {})) if model.bayesian_last_layer else PointEstimateGuide()
    return model, guide, Trace_ELBO(max_plate_nesting=1)


def _split_by_folds(records, num_folds, fold, seed):
    from pyro_seq.data.protein import sequence_folds

    if not 0 <= fold < num_folds:
        raise ValueError(f"--fold must be in 0..{num_folds - 1}, got {fold}")
    folds = np.asarray(sequence_folds([r.sequence for r in records], num_folds=num_folds, seed=seed))
    valid_fold = (fold + 1) % num_folds
    pick = lambda keep: [r for r, f in zip(records, folds) if keep(f)]  # noqa: E731
    return pick(lambda f: f not in (fold, valid_fold)), pick(lambda f: f == valid_fold), pick(lambda f: f == fold)


def localization_splits(protocol="deeploc", fold=0, num_folds=5, data_root=None, seed=0):
    """
    ``(train, valid, {test name: records})`` of :class:`~pyro_seq.data.protein.ProteinRecord` under a
    localisation protocol (see the module docstring).
    """
    from pyro_seq.data.protein import load_deeploc

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "deeploc":
        train, valid, rest = _split_by_folds(load_deeploc("valid", data_root=data_root), 10, 9, seed)
        train = train + rest  # nine of ten folds train, one selects the checkpoint
        return train, valid, {"deeploc_test": load_deeploc("test", data_root=data_root), "setHARD": load_deeploc("hard", data_root=data_root)}
    pool = load_deeploc("valid", data_root=data_root) + load_deeploc("test", data_root=data_root)
    train, valid, test = _split_by_folds(pool, num_folds, fold, seed)
    return train, valid, {f"cv_fold{fold}": test}


def structure_splits(fold=0, num_folds=5, data_root=None, seed=0):
    """``(train, valid, {test name: records})`` of CB513 chains for cross-validation fold ``fold``."""
    from pyro_seq.data.protein import load_cb513

    train, valid, test = _split_by_folds(load_cb513(data_root=data_root), num_folds, fold, seed)
    return train, valid, {f"cb513_fold{fold}": test}


def _predict(model, guide, batch, variant, num_samples):
    """Class probabilities of one batch under a variant: ``deterministic``, ``mc_dropout`` or ``bayesian``."""
    if variant == "deterministic":
        return model.predict(batch.tokens, batch.mask)
    if variant == "mc_dropout":
        return model.predict(batch.tokens, batch.mask, num_samples=num_samples, mc_dropout=True)
    return model.predict(batch.tokens, batch.mask, num_samples=num_samples, guide=guide)


def _summary(probs, labels, num_bins=15):
    from pyro_seq.calibration import expected_calibration_error, reliability_bins

    predicted = probs.argmax(-1)
    picked = probs.gather(-1, labels[:, None]).squeeze(-1).clamp_min(1e-12)
    return {
        "accuracy": float((predicted == labels).double().mean()),
        "nll": float(-picked.log().double().mean()),
        "ece": expected_calibration_error(probs, labels, num_bins),
        "num_items": int(labels.numel()),
    }, reliability_bins(probs, labels, num_bins)


@torch.no_grad()
def localization_metrics(model, guide, batches, variant="deterministic", num_samples=20):
    """
    Accuracy, Gorodkin correlation, NLL and ECE (in [0, 1]) of the location predictions on
    proteins with a single location, with the reliability bins.

    :returns: ``(metrics dict, reliability bins)``.
    """
    probs, labels = [], []
    for batch in batches:
        keep = batch.y >= 0
        probs.append(_predict(model, guide, batch, variant, num_samples)[keep].double().cpu())
        labels.append(batch.y[keep].cpu())
    probs, labels = torch.cat(probs), torch.cat(labels)  # [N, K], [N]
    metrics, bins = _summary(probs, labels)
    confusion = _confusion(labels.numpy(), probs.argmax(-1).numpy(), probs.size(-1))
    metrics.update(gorodkin=gorodkin_correlation(confusion), confusion=confusion.tolist())
    return metrics, bins


@torch.no_grad()
def structure_metrics(model, guide, batches, variant="deterministic", num_samples=20):
    """
    Q8 and Q3 accuracy, NLL and ECE (per residue, in [0, 1]) on the residues of the evaluation
    mask (CB513's ``cb513_mask`` and a label), with the Q8 reliability bins.

    :returns: ``(metrics dict, reliability bins)``.
    """
    from pyro_seq.data.protein import q8_to_q3
    from pyro_seq.models.protein import q8_probs_to_q3

    probs, labels, q3_hits = [], [], []
    for batch in batches:
        keep = batch.mask & (batch.y >= 0)
        if batch.eval_mask is not None:
            keep = keep & batch.eval_mask
        p = _predict(model, guide, batch, variant, num_samples)  # [B, L, 8]
        probs.append(p[keep].double().cpu())
        labels.append(batch.y[keep].cpu())
        q3_true = torch.as_tensor(q8_to_q3(batch.y.cpu().numpy()))[keep.cpu()]
        q3_hits.append(q8_probs_to_q3(p)[keep].argmax(-1).cpu() == q3_true)
    probs, labels = torch.cat(probs), torch.cat(labels)
    metrics, bins = _summary(probs, labels)
    metrics["q8"] = metrics.pop("accuracy")
    metrics["q3"] = float(torch.cat(q3_hits).double().mean())
    return metrics, bins


def _eval_fn(kind, num_samples=1):
    """The trainer's validation figure: error in % (lower is better)."""
    metrics_fn = localization_metrics if kind == "localizer" else structure_metrics
    key = "accuracy" if kind == "localizer" else "q8"

    def eval_fn(model, guide, batches):
        variant = "bayesian" if model.bayesian_last_layer else "deterministic"
        return 100.0 * (1.0 - metrics_fn(model, guide, list(batches), variant, num_samples)[0][key])

    return eval_fn


def add_arguments(parser, positive_int, int_list) -> None:
    """Command-line options of ``pyro-seq train localizer|secondary-structure``."""
    from pyro_seq.trainer import add_run_arguments

    g = parser.add_argument_group("data and protocol")
    g.add_argument("--data-root", default=None, help="data root (default: $PYRO_SEQ_DATA, else ~/.cache/pyro_seq)")
    g.add_argument("--protocol", choices=PROTOCOLS, default="deeploc", help="localizer: deeploc (train on the DeepLoc validation file, test on its test split and setHARD) or cv (folds over both files); secondary-structure always folds CB513")
    g.add_argument("--num-folds", type=positive_int, default=5)
    g.add_argument("--fold", type=int, default=0, help="the test fold (the next one selects the checkpoint)")
    g.add_argument("--max-length", type=positive_int, default=1000, help="keep the first and last max_length/2 residues of longer proteins (DeepLoc's policy)")
    g.add_argument("--batch-size", type=positive_int, default=32)
    g = parser.add_argument_group("model")
    g.add_argument("--encoding", choices=("onehot", "blosum62"), default="onehot")
    g.add_argument("--filters", type=positive_int, default=20, help="convolution filters per width")
    g.add_argument("--hidden", type=positive_int, default=64, help="LSTM units per direction")
    g.add_argument("--dense", type=positive_int, default=64)
    g.add_argument("--dropout", type=float, default=0.25)
    g.add_argument("--bayesian-last-layer", action="store_true", help="Gaussian prior and a mean-field guide over the output layer's weights (SVI)")
    g.add_argument("--prior-scale", type=float, default=1.0)
    g = parser.add_argument_group("optimisation")
    g.add_argument("--out", required=True)
    g.add_argument("--epochs", type=positive_int, default=30)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--clip-norm", type=float, default=5.0)
    g.add_argument("--weight-decay", type=float, default=0.0)
    add_run_arguments(g, positive_int)
    g.add_argument("--mc-samples", type=positive_int, default=20, help="MC-dropout passes / weight samples of the test evaluation")


def cmd_train(args, resolve_device, load_model) -> int:
    """Train a protein model, then evaluate its best checkpoint on the protocol's test sets."""
    import pyro

    from pyro_seq.checkpoint import check_resume_data
    from pyro_seq.data.protein import protein_batches
    from pyro_seq.trainer import BEST_CHECKPOINT, LOG_FILE, Trainer

    kind = args.model
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "localizer":
        train, valid, tests = localization_splits(args.protocol, args.fold, args.num_folds, args.data_root, args.seed)
    else:
        train, valid, tests = structure_splits(args.fold, args.num_folds, args.data_root, args.seed)
    logger.info("%s: %d training, %d selection proteins; test sets %s", kind, len(train), len(valid), {k: len(v) for k, v in tests.items()})
    model_config = {"encoding": args.encoding, "filters": args.filters, "hidden": args.hidden, "dense": args.dense,
                    "dropout": args.dropout, "bayesian_last_layer": args.bayesian_last_layer, "prior_scale": args.prior_scale,
                    "num_data": len(train) if args.bayesian_last_layer else None}
    if kind == "localizer":
        model_config["membrane_head"] = True
    config = {
        "model": model_config, "guide": {},
        "data": {"protocol": args.protocol if kind == "localizer" else "cv", "fold": args.fold, "num_folds": args.num_folds,
                 "max_length": args.max_length, "batch_size": args.batch_size, "seed": args.seed,
                 "data_root": None if args.data_root is None else str(Path(args.data_root).resolve())},
        "train": {"lr": args.lr, "clip_norm": args.clip_norm, "weight_decay": args.weight_decay, "epochs": args.epochs, "seed": args.seed},
    }
    if args.resume:
        check_resume_data(out / "last.pt", kind, config["data"], ("protocol", "fold", "num_folds", "max_length", "batch_size", "seed"))
    pyro.set_rng_seed(args.seed)
    model, guide, loss = build_protein(kind, config)
    (out / "config.json").write_text(json.dumps({"kind": kind, **config}, indent=2) + "\n")
    trainer = Trainer(
        model, guide, loss,
        lambda epoch: protein_batches(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch, max_length=args.max_length),
        protein_batches(valid, 64, max_length=args.max_length),
        lr=args.lr, clip_norm=args.clip_norm, weight_decay=args.weight_decay, device=device, out_dir=out,
        seed=args.seed, patience=args.patience, kind=kind, config=config,
        progress=False if args.no_progress else None, log_every=args.log_every, max_bad_steps=args.max_bad_steps,
        eval_fn=_eval_fn(kind), resume=args.resume, units=("nats/protein", "error {:.2f}%"),
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
    )
    n_params = sum(p.numel() for m in (model, guide) for p in m.parameters())
    logger.info("%s: %d parameters on %s; output in %s (valid figure: error %%)", kind, n_params, device, out)
    start = time.perf_counter()
    summary = trainer.fit(args.epochs)
    logger.info("training done: %d epochs, best valid error %.2f%% at epoch %s (%.1fs)", summary["epochs"], summary["best_valid"], summary["best_epoch"], time.perf_counter() - start)
    model, guide, _, state = load_model(out / BEST_CHECKPOINT, device=device, kind=kind)
    record, _ = evaluate_protein(model, guide, state, tests, out, args.mc_samples, args.seed, device)
    record["train_seconds"] = trainer.elapsed
    tests_without_confusion = {
        name: {variant: {k: v for k, v in m.items() if k != "confusion"} for variant, m in variants.items()}
        for name, variants in record["tests"].items()
    }
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps({"event": "test", **record, "tests": tests_without_confusion}) + "\n")
    (out / "test.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


def variants_of(model):
    """The prediction variants a checkpoint supports: deterministic, MC dropout (dropout > 0), Bayesian last layer."""
    if model.bayesian_last_layer:
        return ["bayesian"]
    return ["deterministic"] + (["mc_dropout"] if model.dropout_p > 0 else [])


def evaluate_protein(model, guide, state, tests, out, num_samples=20, seed=0, device="cpu"):
    """
    Test figures of a protein checkpoint on each named test set for every variant of
    :func:`variants_of`, and a reliability diagram per test set (``out/reliability_<name>.png``;
    none when ``out`` is ``None``).

    :returns: ``(record, bins)``: ``record = {"kind", "epoch", ..., "tests": {name: {variant:
        metrics}}}`` and the reliability bins ``{name: {variant: bins}}``.
    """
    import pyro

    from pyro_seq.calibration import reliability_diagram
    from pyro_seq.data.protein import protein_batches

    kind = state["kind"]
    data = state["config"]["data"]
    metrics_fn = localization_metrics if kind == "localizer" else structure_metrics
    record = {"kind": kind, "epoch": state.get("epoch"), "protocol": data.get("protocol"), "fold": data.get("fold"),
              "max_length": data.get("max_length"), "num_samples": num_samples, "tests": {}}
    all_bins = {}
    for name, records in tests.items():
        batches = [b.to(device) for b in protein_batches(records, 64, max_length=data.get("max_length"))]
        record["tests"][name] = {}
        bins = all_bins[name] = {}
        for variant in variants_of(model):
            pyro.set_rng_seed(seed)
            metrics, bins[variant] = metrics_fn(model, guide, batches, variant, num_samples)
            record["tests"][name][variant] = metrics
            figure = metrics.get("accuracy", metrics.get("q8"))
            extra = f", Gorodkin {metrics['gorodkin']:.3f}" if "gorodkin" in metrics else f", Q3 {metrics['q3']:.3f}"
            line = f"{kind} {name} ({variant}): accuracy {figure:.3f}{extra}, NLL {metrics['nll']:.3f}, ECE {100 * metrics['ece']:.2f}% over {metrics['num_items']} {'proteins' if kind == 'localizer' else 'residues'}"
            print(line)
        if out is not None:
            reliability_diagram(bins, Path(out) / f"reliability_{name}.png", title=f"{kind} on {name} (epoch {state.get('epoch')})")
    return record, all_bins


def test_sets_of(state, data_root=None):
    """The test sets of a checkpoint's protocol (rebuilt from its config)."""
    kind, data = state["kind"], state["config"]["data"]
    root = data_root or data.get("data_root")
    if kind == "localizer":
        return localization_splits(data["protocol"], data["fold"], data["num_folds"], root, data["seed"])[2]
    return structure_splits(data["fold"], data["num_folds"], root, data["seed"])[2]


def cmd_evaluate(args, model, guide, state, device) -> int:
    """``pyro-seq evaluate`` for protein checkpoints: the protocol's test sets, every variant."""
    out = Path(args.output).parent if args.output else Path(args.checkpoint).parent
    record, _ = evaluate_protein(model, guide, state, test_sets_of(state, args.data_root), out, args.num_samples, args.seed, device)
    output = Path(args.output) if args.output else Path(args.checkpoint).with_name(f"{Path(args.checkpoint).stem}_test_eval.json")
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"  written to {output}")
    return 0
