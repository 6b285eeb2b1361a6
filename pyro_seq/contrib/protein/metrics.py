"""
The protein evaluation protocol and its metrics: the localisation and secondary-structure splits
(:func:`localization_splits`, :func:`structure_splits`, :func:`test_sets_of`), Gorodkin's
correlation, accuracy / Q8 / Q3, NLL and calibration of each prediction variant
(:func:`localization_metrics`, :func:`structure_metrics`), and the test record of a checkpoint
(:func:`evaluate_protein`). ``pyro-seq train|evaluate localizer|secondary-structure``
(:mod:`pyro_seq.contrib.protein.recipe`) and ``benchmarks/protein_figures.py`` use them.

**Protocol.** The full training sets (the DeepLoc training split, CullPDB) are not shipped, so
every figure says what it was trained and tested on:

* localisation, ``protocol="deeploc"``: train on the DeepLoc *validation* file (1,655
  single-location proteins, drawn by the Light-Attention authors from the DeepLoc training set)
  minus a tenth held out for checkpoint selection, test on the DeepLoc 1.0 test split (2,768) and
  on setHARD (490);
* localisation, ``protocol="cv"``: ``num_folds`` folds over the union of the validation and test
  files (4,423 proteins), test on fold ``fold``, select on the next fold, train on the rest;
* secondary structure: ``num_folds`` folds over CB513 (511 chains), the same roles.

Folds come from :func:`~pyro_seq.contrib.protein.data.sequence_folds`: identical sequences always share a
fold (CB513 holds 432 distinct chains among its 511); homologues are *not* separated, so the CV
figures are optimistic against a homology-reduced split.
"""

from pathlib import Path

import numpy as np
import torch

__all__ = [
    "PROTOCOLS",
    "evaluate_protein",
    "gorodkin_correlation",
    "localization_metrics",
    "localization_splits",
    "structure_metrics",
    "structure_splits",
    "test_sets_of",
    "variants_of",
]

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


def _split_by_folds(records, num_folds, fold, seed):
    from pyro_seq.contrib.protein.data import sequence_folds

    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}")
    folds = np.asarray(sequence_folds([r.sequence for r in records], num_folds=num_folds, seed=seed))
    valid_fold = (fold + 1) % num_folds
    pick = lambda keep: [r for r, f in zip(records, folds) if keep(f)]  # noqa: E731
    return pick(lambda f: f not in (fold, valid_fold)), pick(lambda f: f == valid_fold), pick(lambda f: f == fold)


def localization_splits(protocol="deeploc", fold=0, num_folds=5, data_root=None, seed=0):
    """
    ``(train, valid, {test name: records})`` of :class:`~pyro_seq.contrib.protein.data.ProteinRecord` under a
    localisation protocol (see the module docstring).
    """
    from pyro_seq.contrib.protein.data import load_deeploc

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
    from pyro_seq.contrib.protein.data import load_cb513

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
    from pyro_seq.diagnostics.calibration import expected_calibration_error, reliability_bins

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
    from pyro_seq.contrib.protein.data import q8_to_q3
    from pyro_seq.contrib.protein.models import q8_probs_to_q3

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

    from pyro_seq.diagnostics.calibration import reliability_diagram
    from pyro_seq.contrib.protein.data import protein_batches

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
