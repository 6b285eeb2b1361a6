r"""
Calibration of classifiers: the expected calibration error, reliability bins and reliability
diagrams.

A classifier's *confidence* on item :math:`n` is its largest class probability
:math:`c_n = \max_k p_{nk}`, its prediction :math:`\hat y_n = \arg\max_k p_{nk}`. The unit
interval is cut into :math:`M` equal-width bins :math:`B_m = (\frac{m-1}{M}, \frac{m}{M}]`
(the first bin also holds :math:`c = 0`), and in each bin the mean confidence is compared
with the accuracy:

.. math::

    \operatorname{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{N}
        \Bigl|\operatorname{acc}(B_m) - \operatorname{conf}(B_m)\Bigr|,
    \qquad
    \operatorname{acc}(B_m) = \frac{1}{|B_m|} \sum_{n \in B_m} [\hat y_n = y_n],
    \quad
    \operatorname{conf}(B_m) = \frac{1}{|B_m|} \sum_{n \in B_m} c_n .

It lies in :math:`[0, 1]` (0: the accuracy of every bin equals its mean confidence); empty
bins contribute nothing. The value depends on :math:`M` (15 by default, as in [1]) and is a
biased estimate of the calibration error of the underlying classifier: with few items per
bin even a perfectly calibrated classifier shows a positive ECE of order
:math:`\sqrt{M / N}`.

**References**

[1] Chuan Guo, Geoff Pleiss, Yu Sun, Kilian Q. Weinberger, "On Calibration of Modern Neural
    Networks", ICML 2017, arXiv:1706.04599.
[2] Mahdi Pakdaman Naeini, Gregory F. Cooper, Milos Hauskrecht, "Obtaining Well Calibrated
    Probabilities Using Bayesian Binning", AAAI 2015.
"""

import math

import numpy as np
import torch

__all__ = ["expected_calibration_error", "reliability_bins", "reliability_diagram"]

#: Keys of a :func:`reliability_bins` dict.
BIN_KEYS = ("edges", "count", "confidence", "accuracy", "ece", "num_items")


def _check_num_bins(num_bins):
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    return int(num_bins)


def _check_probs_labels(probs, labels):
    """``probs [N, K]`` floating point in [0, 1] and ``labels [N]`` integers in ``0 .. K - 1`` (CPU tensors)."""
    probs = torch.as_tensor(probs).detach().cpu()
    labels = torch.as_tensor(labels).detach().cpu()
    if probs.dim() != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must have shape [N, K] with N, K >= 1, got shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a floating point tensor of class probabilities, got dtype {probs.dtype}")
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("probs contains NaN or inf values")
    if bool(((probs < 0) | (probs > 1)).any()):
        raise ValueError(
            f"probs must hold probabilities in [0, 1] (softmax the logits first); found values in "
            f"[{probs.min().item():g}, {probs.max().item():g}]"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if tuple(labels.shape) != (probs.shape[0],):
        raise ValueError(
            f"labels must have shape ({probs.shape[0]},) (one label per row of probs), got shape {tuple(labels.shape)}"
        )
    bad = (labels < 0) | (labels >= probs.shape[1])
    if bool(bad.any()):
        raise ValueError(
            f"labels must be class indices in 0..{probs.shape[1] - 1}; found {labels[bad][:10].tolist()}"
        )
    return probs, labels.long()


def _bin_statistics(probs, labels, num_bins):
    """Per-bin ``(edges [M + 1], count [M], confidence sum [M], correct sum [M])``, sums in float64."""
    num_bins = _check_num_bins(num_bins)
    probs, labels = _check_probs_labels(probs, labels)
    confidence, predicted = probs.max(-1)  # [N], [N]
    correct = (predicted == labels).double()  # [N]
    # edges in the dtype of probs, so that a confidence exactly on an edge falls in the bin below
    edges = torch.linspace(0, 1, num_bins + 1, dtype=probs.dtype)  # [M + 1]
    # bin m (0-based) holds edges[m] < c <= edges[m + 1]; c = 0 goes to the first bin
    index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, num_bins - 1)  # [N]
    count = torch.bincount(index, minlength=num_bins)  # [M]
    conf_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, index, confidence.double())
    correct_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, index, correct)
    return edges.double(), count, conf_sum, correct_sum


def _ece(count, conf_sum, correct_sum):
    n = float(count.sum())
    nonempty = count > 0
    gap = (correct_sum[nonempty] - conf_sum[nonempty]).abs()  # |B_m| * |acc - conf|
    return float(gap.sum()) / n


def expected_calibration_error(probs, labels, num_bins=15):
    r"""
    The expected calibration error of class probabilities over ``num_bins`` equal-width
    confidence bins (see the module docstring).

    :param probs: ``[N, K]`` class probabilities (tensor or array), e.g. a softmax or an
        average of softmaxes over posterior or MC-dropout samples.
    :param labels: ``[N]`` true class indices.
    :param int num_bins: number :math:`M` of bins of :math:`[0, 1]`.
    :returns: the ECE as a float in :math:`[0, 1]` (multiply by 100 for %).
    :raises ValueError: wrong shapes, probabilities outside :math:`[0, 1]`, NaN, labels out of
        range or a non-positive ``num_bins``.
    """
    _, count, conf_sum, correct_sum = _bin_statistics(probs, labels, num_bins)
    return _ece(count, conf_sum, correct_sum)


def reliability_bins(probs, labels, num_bins=15):
    """
    The statistics of a reliability diagram: per equal-width confidence bin, the number of
    items, their mean confidence and their accuracy.

    :param probs: ``[N, K]`` class probabilities.
    :param labels: ``[N]`` true class indices.
    :param int num_bins: number :math:`M` of bins.
    :returns: dict of NumPy arrays and floats: ``edges [M + 1]`` (bin edges, bin ``m`` is
        ``(edges[m], edges[m + 1]]``), ``count [M]`` (int64, sums to ``N``),
        ``confidence [M]`` and ``accuracy [M]`` (float64, NaN in empty bins), ``ece``
        (:func:`expected_calibration_error`, in :math:`[0, 1]`) and ``num_items`` (``N``).
    """
    edges, count, conf_sum, correct_sum = _bin_statistics(probs, labels, num_bins)
    denominator = count.double().clamp_min(1)
    empty = count == 0
    confidence = (conf_sum / denominator).masked_fill(empty, math.nan)
    accuracy = (correct_sum / denominator).masked_fill(empty, math.nan)
    return {
        "edges": edges.numpy(),
        "count": count.numpy().astype(np.int64),
        "confidence": confidence.numpy(),
        "accuracy": accuracy.numpy(),
        "ece": _ece(count, conf_sum, correct_sum),
        "num_items": int(count.sum()),
    }


def _is_bins(obj):
    return isinstance(obj, dict) and all(k in obj for k in ("edges", "count", "confidence", "accuracy"))


def reliability_diagram(bins, path, title=None):
    """
    Save a reliability diagram: accuracy against mean confidence per bin (one line per
    variant, with the diagonal of perfect calibration) above a histogram of the fraction of
    items per bin.

    :param bins: a :func:`reliability_bins` dict, or a dict ``{name: reliability_bins dict}``
        of several variants (e.g. point estimate, MC dropout, Bayesian last layer) drawn on
        the same axes; the variants may use different bins.
    :param path: output ``.png`` (parent directories are created).
    :param str title: figure title.
    :returns: the path written.
    """
    from pyro_seq.plotting import pyplot, save_figure

    variants = {None: bins} if _is_bins(bins) else bins
    if not isinstance(variants, dict) or not variants or not all(_is_bins(b) for b in variants.values()):
        raise ValueError(
            "bins must be a reliability_bins dict or a non-empty dict {name: reliability_bins dict}"
        )
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08}
    )
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    width_share = 0.8 / len(variants)
    for i, (name, b) in enumerate(variants.items()):
        edges = np.asarray(b["edges"], dtype=np.float64)
        count = np.asarray(b["count"], dtype=np.float64)
        conf = np.asarray(b["confidence"], dtype=np.float64)
        acc = np.asarray(b["accuracy"], dtype=np.float64)
        keep = count > 0
        color = plt.cm.tab10(i % 10)
        ece = b.get("ece")
        label = ("model" if name is None else str(name)) + ("" if ece is None else f" (ECE {100 * ece:.2f}%)")
        ax.plot(conf[keep], acc[keep], marker="o", markersize=4, linewidth=1.2, color=color, label=label)
        widths = np.diff(edges)
        left = edges[:-1] + widths * (0.1 + i * width_share)
        hist.bar(left, count / max(count.sum(), 1), width=widths * width_share, align="edge", color=color)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    hist.set_xlabel("confidence (largest class probability)")
    hist.set_ylabel("fraction")
    hist.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
