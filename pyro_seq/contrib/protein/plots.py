r"""
Pictures of what the protein models (:mod:`pyro_seq.contrib.protein.models`) look at and predict.

* :func:`attention_profile`: a :class:`~pyro_seq.contrib.protein.ProteinLocalizer`'s mean attention
  as a function of the distance from the N- and from the C-terminus, one line per location
  (signal peptides and transit peptides show at the N-terminus, PTS1 at the C-terminus);
  the numbers behind it come from :func:`attention_position_profile`.
* :func:`attention_track`: one protein's attention per residue above its Kyte-Doolittle
  hydropathy (:func:`kyte_doolittle`), with optional shaded regions.
* :func:`filter_logos`: sequence logos of the windows that most activate the localizer's
  convolution filters of one width (:func:`top_filter_windows`, :func:`pfm_from_windows`,
  :func:`information_content`).
* :func:`structure_strip`: one chain's true and predicted secondary structure (Q8 and Q3)
  and the predicted Q8 probabilities of a
  :class:`~pyro_seq.contrib.protein.SecondaryStructureBLSTM`.

Residue positions in figures and in ``regions`` are **1-based** (residue 1 is the
N-terminal residue), as in UniProt and SignalP. Every model is run in eval mode (dropout
off) without gradients; the model is left in the mode it was in. Figures are written with
matplotlib's Agg backend (:func:`pyro_seq.plotting.save_figure`), and each function returns the
path written::

    model = ProteinLocalizer(...)  # trained
    batches = protein_batches(load_deeploc("test"), 32, max_length=1000)
    attention_profile(model, batches, "out/attention_profile.png")
    filter_logos(model, batches, "out/logos_w9.png", width=9)
    attention_track(model, record.sequence, "out/track.png", regions=[(1, 22, "signal peptide")])
"""

import math

import numpy as np
import torch

from pyro_seq.contrib.protein.data import AMINO_ACIDS, LOCATIONS, PAD, SS3, SS8, ProteinBatch, q8_to_q3, tokenize
from pyro_seq.plotting import pyplot, save_figure

__all__ = [
    "AA_COLORS",
    "KYTE_DOOLITTLE",
    "SS8_COLORS",
    "attention_position_profile",
    "attention_profile",
    "attention_track",
    "filter_logos",
    "information_content",
    "kyte_doolittle",
    "pfm_from_windows",
    "structure_strip",
    "top_filter_windows",
]

#: Kyte & Doolittle (J. Mol. Biol. 157, 1982) hydropathy index of the 20 amino acids.
KYTE_DOOLITTLE = {
    "A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5,
    "Q": -3.5, "E": -3.5, "G": -0.4, "H": -3.2, "I": 4.5,
    "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8, "P": -1.6,
    "S": -0.8, "T": -0.7, "W": -0.9, "Y": -1.3, "V": 4.2,
}  # fmt: skip

_KD_BY_TOKEN = np.array([KYTE_DOOLITTLE[a] for a in AMINO_ACIDS] + [np.nan, np.nan])  # [22], NaN: UNKNOWN, PAD

#: Letter colours of the sequence logos (WebLogo's "chemistry" scheme): hydrophobic black,
#: polar green, acidic red, basic blue.
AA_COLORS = {
    **{a: "#000000" for a in "AVLIPWFM"},  # hydrophobic
    **{a: "#109648" for a in "GSTYCQN"},  # polar
    **{a: "#d62728" for a in "DE"},  # acidic
    **{a: "#1f4fd6" for a in "KRH"},  # basic
}

#: Cell colours of the DSSP states in :data:`~pyro_seq.contrib.protein.data.SS8` order (helices
#: red, strands yellow, bends and turns green, coil light grey); Q3 uses the colours of
#: ``H``, ``E`` and ``C``.
SS8_COLORS = {
    "G": "#f4a3a8",  # 3-10 helix
    "H": "#d62728",  # alpha helix
    "I": "#8c1c50",  # pi helix
    "B": "#ffbb78",  # bridge
    "E": "#f2c200",  # strand
    "S": "#98df8a",  # bend
    "T": "#17a589",  # turn
    "C": "#ececec",  # coil
}
_UNLABELLED_COLOR = "#8c8c8c"

_LOG2_20 = math.log2(20)


# ---------------------------------------------------------------------------
# checks


def _check_model(model, kind, what):
    from pyro_seq.contrib.protein.models import ProteinLocalizer, SecondaryStructureBLSTM

    cls = {"localizer": ProteinLocalizer, "structure": SecondaryStructureBLSTM}[kind]
    if not isinstance(model, cls):
        raise ValueError(f"{what} needs a {cls.__name__}, got {type(model).__name__}")
    return model


def _device(model):
    from pyro_seq.util import module_tensor

    t = module_tensor(model)
    return torch.device("cpu") if t is None else t.device


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _iter_batches(batches, what):
    """Yield the :class:`ProteinBatch` es of ``batches`` (one batch is accepted as such)."""
    if isinstance(batches, ProteinBatch):
        batches = [batches]
    try:
        items = iter(batches)
    except TypeError:
        raise ValueError(
            f"{what}: batches must be an iterable of ProteinBatch (e.g. protein_batches(...)), "
            f"got {type(batches).__name__}"
        ) from None
    for i, batch in enumerate(items):
        if not isinstance(batch, ProteinBatch):
            raise ValueError(f"{what}: batch {i} is a {type(batch).__name__}, not a ProteinBatch")
        yield batch


def _to_numpy(x):
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _check_sequence(sequence, what="sequence"):
    """``(sequence, tokens [L])`` of a non-empty upper-case protein sequence."""
    if not isinstance(sequence, str):
        raise ValueError(f"{what} must be a str of amino-acid letters, got {type(sequence).__name__}")
    if not sequence:
        raise ValueError(f"{what} is empty")
    return sequence, tokenize(sequence, what)  # ValueError on characters other than A-Z


# ---------------------------------------------------------------------------
# 1. attention as a function of the distance from the termini


def attention_position_profile(model, batches, window=100):
    r"""
    Mean length-normalised attention by position from the N- and from the C-terminus, per
    location class: the numbers behind :func:`attention_profile`.

    Protein :math:`b` of length :math:`L_b` with attention weights :math:`\alpha_{b,t}`
    (:meth:`~pyro_seq.contrib.protein.ProteinLocalizer.attention`, summing to 1) contributes
    :math:`L_b\,\alpha_{b,t}` at residue :math:`t`: 1 everywhere for uniform attention, so
    that short and long proteins are on one scale (raw weights of a protein of length
    :math:`L` are of order :math:`1/L`). At N-terminal position :math:`i` (residue
    :math:`i + 1`) and at C-terminal position :math:`j` (residue :math:`L_b - j`), the
    profile of class :math:`k` is the mean of these values over the proteins of true class
    :math:`k` that have that residue: a protein shorter than ``window`` counts only at its
    own positions, and one shorter than ``2 * window`` has residues that count in both
    profiles. Proteins with ``y == -1`` (no single location) are skipped. With batches
    capped by ``protein_batches(..., max_length=...)`` (first and last residues kept) both
    termini are still the protein's own.

    :param model: a :class:`~pyro_seq.contrib.protein.ProteinLocalizer`.
    :param batches: :class:`~pyro_seq.contrib.protein.data.ProteinBatch` es with per-protein labels
        ``y [B]`` (an iterable, or one batch).
    :param int window: number of positions from each terminus.
    :returns: dict with ``"n_term"`` and ``"c_term"`` (float64 ``[num_classes, window]``,
        NaN where no protein of the class has the position; ``c_term[:, 0]`` is the last
        residue), ``"counts_n"``, ``"counts_c"`` (int64 ``[num_classes, window]``: proteins
        averaged) and ``"proteins"`` (int64 ``[num_classes]``).
    :raises ValueError: not a localizer, bad ``window``, a batch with per-residue labels, or
        no labelled protein in ``batches``.
    """
    _check_model(model, "localizer", "attention_position_profile")
    window = _check_int("window", window, 1)
    device = _device(model)
    K = model.num_classes
    sum_n = np.zeros((K, window))  # [K, W]
    sum_c = np.zeros((K, window))  # [K, W]
    cnt_n = np.zeros((K, window), dtype=np.int64)  # [K, W]
    cnt_c = np.zeros((K, window), dtype=np.int64)  # [K, W]
    proteins = np.zeros(K, dtype=np.int64)  # [K]
    for batch in _iter_batches(batches, "attention_position_profile"):
        if batch.y is None or batch.y.dim() != 1:
            raise ValueError(
                "attention_position_profile needs per-protein location labels y [B]; got "
                f"y of shape {None if batch.y is None else tuple(batch.y.shape)} (secondary-structure batches?)"
            )
        alpha = _to_numpy(model.attention(batch.tokens.to(device), batch.mask.to(device))).astype(np.float64)  # [B, L]
        lengths = _to_numpy(batch.mask.sum(-1))  # [B]
        y = _to_numpy(batch.y)  # [B]
        if (y >= K).any():
            raise ValueError(f"labels y must be < num_classes = {K}, got {int(y.max())}")
        for b in np.flatnonzero(y >= 0):
            n, k = int(lengths[b]), int(y[b])
            w = alpha[b, :n] * n  # [n], mean 1
            m = min(n, window)
            sum_n[k, :m] += w[:m]
            sum_c[k, :m] += w[::-1][:m]  # [m], position 0 = last residue
            cnt_n[k, :m] += 1
            cnt_c[k, :m] += 1
            proteins[k] += 1
    if proteins.sum() == 0:
        raise ValueError(
            "attention_position_profile: batches hold no protein with a location label (y >= 0): "
            "empty batches, or only y == -1"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        n_term = np.where(cnt_n > 0, sum_n / cnt_n, np.nan)  # [K, W]
        c_term = np.where(cnt_c > 0, sum_c / cnt_c, np.nan)  # [K, W]
    return dict(n_term=n_term, c_term=c_term, counts_n=cnt_n, counts_c=cnt_c, proteins=proteins)


def _class_names(num_classes):
    if num_classes == len(LOCATIONS):
        return list(LOCATIONS)
    return [f"class {k}" for k in range(num_classes)]


def attention_profile(model, batches, path, window=100, title=None):
    """
    Save the mean attention of a localizer against the position from the N-terminus (left
    panel, residues ``1 .. window``) and from the C-terminus (right panel, ``-window .. -1``,
    -1 the last residue), one line per location class (:data:`~pyro_seq.contrib.protein.data.LOCATIONS`,
    by the true label; ``y == -1`` skipped), with the proteins per class in the legend.

    Each protein's weights are multiplied by its length (see
    :func:`attention_position_profile`), so 1 (the dashed line) is uniform attention and a
    value of 5 means five times the weight of a uniform residue, whatever the protein's
    length.

    :param model: a :class:`~pyro_seq.contrib.protein.ProteinLocalizer` (eval mode is used).
    :param batches: :class:`~pyro_seq.contrib.protein.data.ProteinBatch` es with ``y [B]``.
    :param path: output ``.png`` (parent directories are created).
    :param int window: residues shown from each terminus.
    :param str title: figure title.
    :returns: the path written.
    :raises ValueError: as :func:`attention_position_profile`.
    """
    prof = attention_position_profile(model, batches, window)
    plt = pyplot()
    fig, (ax_n, ax_c) = plt.subplots(1, 2, figsize=(11, 4), sharey=True, gridspec_kw={"wspace": 0.12})
    x_n = np.arange(1, window + 1)  # [W] residue numbers
    x_c = -np.arange(1, window + 1)  # [W] -1 = last residue
    for k, name in enumerate(_class_names(model.num_classes)):
        if prof["proteins"][k] == 0:
            continue
        color = plt.cm.tab10(k % 10)
        label = f"{name} (n={prof['proteins'][k]})"
        ax_n.plot(x_n, prof["n_term"][k], color=color, linewidth=1.2, label=label)
        ax_c.plot(x_c, prof["c_term"][k], color=color, linewidth=1.2)
    for ax in (ax_n, ax_c):
        ax.axhline(1.0, color="0.5", linestyle="--", linewidth=0.8)
        ax.grid(alpha=0.3)
    ax_n.set_xlim(1, max(window, 2))
    ax_c.set_xlim(-max(window, 2), -1)
    ax_n.set_xlabel("residue from the N-terminus")
    ax_c.set_xlabel("residue from the C-terminus (-1 = last)")
    ax_n.set_ylabel("attention x length (1 = uniform)")
    ax_n.set_title("N-terminus", fontsize=9)
    ax_c.set_title("C-terminus", fontsize=9)
    ax_c.yaxis.set_tick_params(labelleft=False)
    handles, labels = ax_n.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------
# 2. one protein: attention and hydropathy


def kyte_doolittle(sequence, window=9):
    """
    Kyte-Doolittle hydropathy profile: the mean :data:`KYTE_DOOLITTLE` value over a sliding
    window centred on each residue (positive = hydrophobic; a stretch above about 1.6 with
    ``window`` 19 suggests a transmembrane helix, a shorter hydrophobic N-terminal stretch
    the h-region of a signal peptide).

    Residue ``i`` gets the mean over residues ``i - window // 2 .. i + window // 2``; the
    ``window // 2`` residues at either end, where the window does not fit, are NaN (so the
    profile stays aligned with the residues). Residues other than the 20 standard amino
    acids (``X``, ``B``, ``Z``, ...) are left out of the mean (NaN if a window has no
    standard residue).

    Example: ``kyte_doolittle("AIK", 3)`` is ``[nan, 0.8, nan]`` (``(1.8 + 4.5 - 3.9) / 3``).

    :param str sequence: upper-case amino-acid letters.
    :param int window: odd window length >= 1.
    :returns: float64 ``[len(sequence)]``.
    :rtype: numpy.ndarray
    :raises ValueError: an empty sequence, a character other than A-Z, or an even or
        non-positive window.
    """
    _, tokens = _check_sequence(sequence)
    window = _check_int("window", window, 1)
    if window % 2 == 0:
        raise ValueError(f"window must be odd (centred on a residue), got {window}")
    values = _KD_BY_TOKEN[tokens]  # [L], NaN at non-standard residues
    known = ~np.isnan(values)  # [L]
    n, half = len(values), window // 2
    out = np.full(n, np.nan)  # [L]
    if n < window:
        return out
    kernel = np.ones(window)
    sums = np.convolve(np.where(known, values, 0.0), kernel, mode="valid")  # [L - window + 1]
    counts = np.convolve(known.astype(np.float64), kernel, mode="valid")  # [L - window + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[half : n - half] = np.where(counts > 0, sums / counts, np.nan)
    return out


def _check_regions(regions, length):
    if regions is None:
        return []
    out = []
    for i, region in enumerate(regions):
        if not isinstance(region, (tuple, list)) or len(region) not in (2, 3):
            raise ValueError(f"regions[{i}] must be a (start, end, label) tuple, got {region!r}")
        start, end = region[0], region[1]
        label = str(region[2]) if len(region) == 3 and region[2] is not None else None
        for name, v in (("start", start), ("end", end)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"regions[{i}]: {name} must be an integer residue number, got {v!r}")
        if not 1 <= start <= end <= length:
            raise ValueError(
                f"regions[{i}] = {region!r}: need 1 <= start <= end <= {length} "
                "(1-based residue numbers, end included)"
            )
        out.append((int(start), int(end), label))
    return out


def attention_track(model, sequence, path, title=None, regions=None, top=5, kd_window=9):
    """
    Save one protein's attention weight per residue (bars, with the uniform weight ``1/L``
    dashed) above its Kyte-Doolittle hydropathy (:func:`kyte_doolittle`, window
    ``kd_window``), on a shared axis of 1-based residue numbers. The ``top`` residues with
    the largest attention are labelled with their letter and number. A signal peptide's
    h-region shows as a hydrophobic N-terminal stretch in the lower panel.

    :param model: a :class:`~pyro_seq.contrib.protein.ProteinLocalizer` (eval mode is used).
    :param str sequence: the protein, upper-case amino-acid letters.
    :param path: output ``.png`` (parent directories are created).
    :param str title: figure title (default: the length).
    :param regions: ``[(start, end, label), ...]`` spans to shade in both panels,
        1-based with ``end`` included, e.g. ``[(1, 22, "signal peptide")]`` or, for a
        peroxisomal PTS1, ``[(L - 2, L, "PTS1")]``; ``label`` may be ``None``.
    :param int top: number of residues to label (5).
    :param int kd_window: odd hydropathy window (9).
    :returns: the path written.
    :raises ValueError: not a localizer, a bad sequence, or a region outside the protein.
    """
    _check_model(model, "localizer", "attention_track")
    sequence, tokens = _check_sequence(sequence)
    top = _check_int("top", top, 0)
    n = len(sequence)
    spans = _check_regions(regions, n)
    kd = kyte_doolittle(sequence, kd_window)  # [L]
    device = _device(model)
    t = torch.as_tensor(tokens, dtype=torch.long, device=device).unsqueeze(0)  # [1, L]
    alpha = _to_numpy(model.attention(t, torch.ones_like(t, dtype=torch.bool)))[0].astype(np.float64)  # [L]

    plt = pyplot()
    fig, (ax_a, ax_h) = plt.subplots(
        2, 1, figsize=(min(max(6.0, 0.02 * n + 4), 16), 4.6), sharex=True,
        gridspec_kw={"height_ratios": [3, 2], "hspace": 0.08},
    )  # fmt: skip
    x = np.arange(1, n + 1)  # [L]
    ax_a.bar(x, alpha, width=1.0, color="#4c72b0", linewidth=0)
    ax_a.axhline(1.0 / n, color="0.5", linestyle="--", linewidth=0.8, label="uniform (1/L)")
    best = np.argsort(-alpha, kind="stable")[: min(top, n)]  # [top] 0-based positions
    for rank, i in enumerate(best):  # staggered by rank, so that neighbouring labels do not overlap
        ax_a.annotate(
            f"{sequence[i]}{i + 1}", (i + 1, alpha[i]), xytext=(0, 4 + 8 * rank), textcoords="offset points",
            ha="center", va="bottom", fontsize=7, color="#b03030",
            arrowprops=dict(arrowstyle="-", color="#b03030", linewidth=0.4, shrinkA=0, shrinkB=0),
        )  # fmt: skip
    ax_a.plot(best + 1, alpha[best], linestyle="none", marker="v", markersize=3, color="#b03030")
    ax_a.set_ylim(0, alpha.max() * (1.12 + 0.06 * len(best)))
    ax_a.set_ylabel("attention weight")
    ax_h.plot(x, kd, color="#333333", linewidth=1.0)
    ax_h.fill_between(x, 0, kd, where=np.nan_to_num(kd) > 0, color="#e6a23c", alpha=0.6, linewidth=0)
    ax_h.fill_between(x, 0, kd, where=np.nan_to_num(kd) < 0, color="#6aa6d8", alpha=0.6, linewidth=0)
    ax_h.axhline(0.0, color="0.5", linewidth=0.6)
    ax_h.set_ylim(-4.6, 4.6)
    ax_h.set_ylabel(f"hydropathy (KD, w={kd_window})", fontsize=8)
    ax_h.set_xlabel("residue")
    ax_h.set_xlim(0.5, n + 0.5)
    shades = plt.cm.Set2.colors
    for r, (start, end, label) in enumerate(spans):
        color = shades[r % len(shades)]
        for ax in (ax_a, ax_h):
            ax.axvspan(start - 0.5, end + 0.5, color=color, alpha=0.35, linewidth=0, zorder=0)
        if label:
            ax_h.text(
                (start + end) / 2, 0.03, label, transform=ax_h.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=7, color="0.2", clip_on=False,
            )  # fmt: skip
    ax_a.legend(fontsize=7, loc="upper left")
    for ax in (ax_a, ax_h):
        ax.grid(alpha=0.25, axis="y")
    ax_a.set_title(title if title else f"attention and hydropathy, {n} residues", fontsize=9)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------
# 3. convolution filters as sequence logos


def pfm_from_windows(windows, pseudocount=0.0):
    """
    Position frequency matrix of equal-length windows over the 20 amino acids.

    :param windows: ``[N, width]`` integer token ids (:data:`~pyro_seq.contrib.protein.data.AMINO_ACIDS`
        order; ids of ``UNKNOWN`` and ``PAD`` are not counted) or a list of ``N`` strings of
        equal length.
    :param float pseudocount: added to every count before normalising (0: plain frequencies).
    :returns: float64 ``[width, 20]``, each row summing to 1 (columns in ``AMINO_ACIDS`` order).
    :rtype: numpy.ndarray
    :raises ValueError: no windows, unequal lengths, bad ids, a negative pseudocount, or a
        position with no standard amino acid (and no pseudocount).
    """
    if isinstance(windows, (list, tuple)) and windows and all(isinstance(w, str) for w in windows):
        if len({len(w) for w in windows}) != 1:
            raise ValueError("windows: the strings must all have the same length")
        windows = np.stack([tokenize(w, f"windows[{i}]") for i, w in enumerate(windows)])
    w = _to_numpy(windows)
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"windows must be a non-empty [N, width] array of token ids, got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"windows must hold integer token ids, got dtype {w.dtype}")
    if (w < 0).any() or (w > PAD).any():
        raise ValueError(f"windows must hold token ids in 0..{PAD}")
    if not (isinstance(pseudocount, (int, float)) and pseudocount >= 0):
        raise ValueError(f"pseudocount must be a number >= 0, got {pseudocount!r}")
    width = w.shape[1]
    counts = np.zeros((width, 20))  # [width, 20]
    for j in range(width):
        col = w[:, j]
        counts[j] = np.bincount(col[col < 20], minlength=20)[:20]
    counts += pseudocount
    totals = counts.sum(-1, keepdims=True)  # [width, 1]
    if (totals == 0).any():
        raise ValueError("a window position holds no standard amino acid: its frequencies are undefined")
    return counts / totals


def information_content(pfm):
    r"""
    Information content per position of a position frequency matrix, in bits:
    :math:`\log_2 20 - H_j`, :math:`H_j = -\sum_a p_{ja} \log_2 p_{ja}` (``0 log 0 = 0``);
    ``log2(20) ≈ 4.32`` for a conserved position, 0 for a uniform one. No small-sample
    correction is applied.

    :param pfm: ``[width, 20]`` rows of frequencies summing to 1 (:func:`pfm_from_windows`).
    :returns: float64 ``[width]``.
    :raises ValueError: wrong shape, negative entries, or rows not summing to 1.
    """
    p = np.asarray(_to_numpy(pfm), dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 20 or p.shape[0] == 0:
        raise ValueError(f"pfm must have shape [width, 20], got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(-1), 1.0, atol=1e-6):
        raise ValueError("pfm rows must be non-negative frequencies summing to 1")
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log2(p), 0.0)  # [width, 20]
    return np.clip(_LOG2_20 + plogp.sum(-1), 0.0, _LOG2_20)


def top_filter_windows(model, batches, width=9, num_filters=6, top=200, select="first"):
    """
    The windows of residues that most activate a localizer's convolution filters of one
    kernel width.

    The activation of filter ``f`` on a window is the convolution's output at the window
    centre before the ReLU (``model.conv.convs[i]`` applied to ``model.encode``); as the
    ReLU is monotone, the top windows are those of the post-ReLU feature too, except that
    pre-activations also rank windows the ReLU would tie at 0. Only windows lying wholly
    inside a protein are candidates (none that overlap the ends, where the convolution
    reads zero padding) and none holding a non-standard residue (``X``, ...).

    :param model: a :class:`~pyro_seq.contrib.protein.ProteinLocalizer`.
    :param batches: :class:`~pyro_seq.contrib.protein.data.ProteinBatch` es (an iterable, or one batch).
    :param int width: one of ``model.widths``.
    :param int num_filters: how many filters (at most ``model.filters``).
    :param int top: windows kept per filter (fewer if the proteins have fewer).
    :param str select: ``"first"``: filters ``0 .. num_filters - 1``; ``"max"``: the
        ``num_filters`` filters with the highest maximum activation, highest first.
    :returns: list of dicts, one per filter: ``"filter"`` (index within the width),
        ``"activations"`` (float64 ``[n]``, descending) and ``"windows"`` (int64
        ``[n, width]`` token ids).
    :raises ValueError: not a localizer, a width the model lacks, bad counts, empty
        batches, or no protein as long as ``width``.
    """
    _check_model(model, "localizer", "top_filter_windows")
    width = _check_int("width", width, 1)
    if width not in model.widths:
        raise ValueError(f"width must be one of the model's kernel widths {tuple(model.widths)}, got {width}")
    num_filters = min(_check_int("num_filters", num_filters, 1), model.filters)
    top = _check_int("top", top, 1)
    if select not in ("first", "max"):
        raise ValueError(f"select must be 'first' or 'max', got {select!r}")
    conv = model.conv.convs[list(model.widths).index(width)]  # Conv1d(F, filters, width, padding="same")
    left = (width - 1) // 2  # "same" padding: output t reads inputs t - left .. t - left + width - 1
    device = _device(model)
    filters = model.filters
    best_v = torch.empty(filters, 0, dtype=torch.float64)  # [filters, n]
    best_w = torch.empty(filters, 0, width, dtype=torch.long)  # [filters, n, width]
    seen_batch = False
    with torch.no_grad():
        for batch in _iter_batches(batches, "top_filter_windows"):
            seen_batch = True
            tokens, mask, lengths = model.check(batch.tokens.to(device), batch.mask.to(device))  # [B, L] x 2, [B]
            B, L = tokens.shape
            if L < width:
                continue
            x = model.encode(tokens, mask)  # [B, L, F]
            pre = conv(x.transpose(1, 2)).double().cpu()  # [B, filters, L], before the ReLU
            starts = torch.arange(L - width + 1)  # [S] window starts
            wins = tokens.cpu().unfold(1, width, 1)  # [B, S, width]
            ok = (starts + width <= lengths.cpu().unsqueeze(-1)) & (wins < 20).all(-1)  # [B, S]
            if not bool(ok.any()):
                continue
            act = pre[:, :, starts + left]  # [B, filters, S], output at each window's centre
            act = act.permute(1, 0, 2)[:, ok]  # [filters, N]
            cand = wins[ok]  # [N, width]
            v, idx = act.topk(min(top, act.size(1)), dim=1)  # [filters, k], this batch's best first
            vals = torch.cat([best_v, v], 1)  # [filters, n + k]
            pool = torch.cat([best_w, cand[idx]], 1)  # [filters, n + k, width]
            v, idx = vals.topk(min(top, vals.size(1)), dim=1)  # [filters, n']
            best_v, best_w = v, torch.gather(pool, 1, idx.unsqueeze(-1).expand(-1, -1, width))
    if not seen_batch:
        raise ValueError("top_filter_windows: batches is empty (no ProteinBatch)")
    if best_v.size(1) == 0:
        raise ValueError(
            f"top_filter_windows: no window of {width} standard residues lies inside a protein "
            "(proteins shorter than the width?)"
        )
    if select == "first":
        chosen = list(range(num_filters))
    else:
        chosen = torch.argsort(best_v[:, 0], descending=True, stable=True)[:num_filters].tolist()
    return [
        dict(filter=int(f), activations=best_v[f].numpy(), windows=best_w[f].numpy().astype(np.int64))
        for f in chosen
    ]


_GLYPHS = {}


def _glyph(letter):
    """``(path, xmin, ymin, width, height)`` of a bold letter outline (cached)."""
    if letter not in _GLYPHS:
        from matplotlib.font_manager import FontProperties
        from matplotlib.textpath import TextPath

        path = TextPath((0, 0), letter, size=1, prop=FontProperties(family="DejaVu Sans", weight="bold"))
        ext = path.get_extents()
        _GLYPHS[letter] = (path, ext.x0, ext.y0, max(ext.width, 1e-6), max(ext.height, 1e-6))
    return _GLYPHS[letter]


def _draw_letter(ax, letter, x, y, width, height, color):
    """Draw ``letter`` filling the box ``[x, x + width] x [y, y + height]`` in data coordinates."""
    from matplotlib.patches import PathPatch
    from matplotlib.transforms import Affine2D

    path, x0, y0, w, h = _glyph(letter)
    transform = Affine2D().translate(-x0, -y0).scale(width / w, height / h).translate(x, y)
    ax.add_patch(PathPatch(transform.transform_path(path), facecolor=color, edgecolor="none"))


def _draw_logo(ax, pfm, min_height=1e-3):
    """Stack the letters of ``pfm [width, 20]`` per column, heights = frequency x information content."""
    ic = information_content(pfm)  # [width]
    heights = pfm * ic[:, None]  # [width, 20]
    for j in range(pfm.shape[0]):
        y = 0.0
        for a in np.argsort(heights[j], kind="stable"):  # smallest at the bottom
            h = heights[j, a]
            if h < min_height:
                continue
            _draw_letter(ax, AMINO_ACIDS[a], j + 0.05, y, 0.9, h, AA_COLORS[AMINO_ACIDS[a]])
            y += h
    ax.set_xlim(0, pfm.shape[0])
    ax.set_ylim(0, _LOG2_20)


def filter_logos(model, batches, path, width=9, num_filters=6, top=200, select="first", title=None):
    """
    Save sequence logos of a localizer's convolution filters of one kernel width: for each
    filter, the position frequency matrix (:func:`pfm_from_windows`) of its ``top``
    highest-activating windows (:func:`top_filter_windows`: pre-ReLU activation at the window
    centre, windows wholly inside a protein), drawn as stacked letters whose heights are
    frequency x information content in bits (:func:`information_content`; y axis
    ``0 .. log2(20)``), the most frequent letter on top, coloured by :data:`AA_COLORS`
    (hydrophobic black, polar green, acidic red, basic blue). The x axis is the position
    relative to the window centre.

    :param model: a :class:`~pyro_seq.contrib.protein.ProteinLocalizer`.
    :param batches: :class:`~pyro_seq.contrib.protein.data.ProteinBatch` es.
    :param path: output ``.png`` (parent directories are created).
    :param int width: one of ``model.widths`` (9).
    :param int num_filters: filters drawn (at most ``model.filters``).
    :param int top: windows per filter.
    :param str select: ``"first"`` or ``"max"`` (see :func:`top_filter_windows`).
    :param str title: figure title.
    :returns: the path written.
    :raises ValueError: as :func:`top_filter_windows`.
    """
    found = top_filter_windows(model, batches, width, num_filters, top, select)
    plt = pyplot()
    cols = min(3, len(found))
    rows = (len(found) + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(2.6, 0.42 * width + 1.0) * cols, 2.0 * rows + (0.4 if title else 0)), squeeze=False
    )
    left = (width - 1) // 2
    for ax in axes.flat[len(found) :]:
        ax.axis("off")
    for ax, item in zip(axes.flat, found):
        _draw_logo(ax, pfm_from_windows(item["windows"]))
        ax.set_xticks(np.arange(width) + 0.5)
        ax.set_xticklabels([str(j - left) for j in range(width)], fontsize=7)
        ax.set_yticks([0, 1, 2, 3, 4])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("bits", fontsize=7)
        acts = item["activations"]
        ax.set_title(
            f"filter {item['filter']} (w={width}): {len(acts)} windows, max {acts[0]:.2f}", fontsize=8
        )
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------
# 4. secondary structure of one chain


def _class_image(ids, colors, line):
    """RGBA ``[1, line, 4]`` of class ids ``[n]`` (``-1`` grey, beyond ``n`` transparent)."""
    from matplotlib.colors import to_rgba

    table = np.array([to_rgba(c) for c in colors] + [to_rgba(_UNLABELLED_COLOR)])  # [C + 1, 4]
    img = np.zeros((1, line, 4))  # [1, line, 4]
    img[0, : len(ids)] = table[np.where(ids >= 0, ids, len(colors))]
    return img


def structure_strip(
    model, tokens, mask, y, path, index=0, title=None, max_residues=None, line_length=200, guide=None, num_samples=1
):
    """
    Save one chain's secondary structure as aligned rows over its residues: the true Q8
    states (cells coloured by :data:`SS8_COLORS`; unlabelled ``-1`` grey), the predicted Q8
    states (argmax of :meth:`~pyro_seq.contrib.protein.SecondaryStructureBLSTM.predict`), the
    predicted probabilities as a heat map ``[8, L]`` (one row per
    :data:`~pyro_seq.contrib.protein.data.SS8` state), and thin rows with the true and predicted Q3
    states (:func:`~pyro_seq.contrib.protein.data.q8_to_q3` of the labels; the predicted Q3 state is
    the argmax of the merged probabilities). Chains longer than ``line_length`` are wrapped
    into several lines of ``line_length`` residues.

    :param model: a :class:`~pyro_seq.contrib.protein.SecondaryStructureBLSTM` (eval mode is used).
    :param torch.Tensor tokens: ``[B, L]`` token ids (e.g. ``batch.tokens``).
    :param torch.Tensor mask: ``[B, L]`` prefix mask, or ``None`` (``tokens != PAD``).
    :param torch.Tensor y: ``[B, L]`` Q8 ids (:data:`~pyro_seq.contrib.protein.data.SS8` order,
        -1 unlabelled), or ``None`` to draw predictions only.
    :param path: output ``.png`` (parent directories are created).
    :param int index: the chain (row of ``tokens``) to draw.
    :param str title: figure title (default: the chain and its length).
    :param int max_residues: draw only the first ``max_residues`` residues.
    :param int line_length: residues per line.
    :param guide: the :class:`~pyro_seq.contrib.protein.LastLayerGuide` of a model with
        ``bayesian_last_layer=True`` (passed to ``predict``).
    :param int num_samples: weight samples averaged by ``predict`` (with ``guide``).
    :returns: the path written.
    :raises ValueError: not a secondary-structure model, bad tokens, labels or ``index``.
    """
    from pyro_seq.contrib.protein.models import q8_probs_to_q3

    _check_model(model, "structure", "structure_strip")
    if model.num_classes != len(SS8):
        raise ValueError(f"structure_strip needs a model with {len(SS8)} (Q8) classes, got {model.num_classes}")
    line = _check_int("line_length", line_length, 1)
    if max_residues is not None:
        max_residues = _check_int("max_residues", max_residues, 1)
    device = _device(model)
    if not torch.is_tensor(tokens):
        raise ValueError(f"tokens must be a torch.Tensor [B, L] of token ids, got {type(tokens).__name__}")
    tokens = tokens.to(device)
    mask = None if mask is None else mask.to(device) if torch.is_tensor(mask) else mask
    tokens, mask, lengths = model.check(tokens, mask)  # [B, L] x 2, [B]
    if y is not None:
        y = model.check_labels(y.to(device) if torch.is_tensor(y) else y, tokens.shape)  # [B, L]
    B = tokens.size(0)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < B:
        raise ValueError(f"index must be an integer in 0..{B - 1}, got {index!r}")
    n = int(lengths[index])
    chain = (tokens[index : index + 1, :n], mask[index : index + 1, :n])  # [1, n] x 2 (padding changes nothing)
    probs = model.predict(*chain, num_samples=num_samples, guide=guide)[0]  # [n, 8]
    q3_probs = q8_probs_to_q3(probs)  # [n, 3]
    probs, q3_probs = _to_numpy(probs).astype(np.float64), _to_numpy(q3_probs)  # [n, 8], [n, 3]
    pred8 = probs.argmax(-1)  # [n]
    pred3 = q3_probs.argmax(-1)  # [n]
    true8 = None if y is None else _to_numpy(y[index, :n]).astype(np.int64)  # [n]
    true3 = None if true8 is None else q8_to_q3(true8)  # [n]
    shown = n if max_residues is None else min(n, max_residues)
    colors8 = [SS8_COLORS[s] for s in SS8]
    colors3 = [SS8_COLORS[s] for s in SS3]
    # rows of one line: (label, kind, height)
    rows = []
    if true8 is not None:
        rows.append(("true Q8", "true8", 0.9))
    rows += [("pred Q8", "pred8", 0.9), ("p(Q8)", "probs", 3.2)]
    if true3 is not None:
        rows.append(("true Q3", "true3", 0.5))
    rows.append(("pred Q3", "pred3", 0.5))
    num_lines = (shown + line - 1) // line
    heights = []
    for i in range(num_lines):
        heights += [h for _, _, h in rows] + ([0.8] if i < num_lines - 1 else [])  # spacer between lines

    plt = pyplot()
    from matplotlib.patches import Patch

    fig_w = min(max(4.0, 0.055 * min(line, shown) + 1.6), 14.0)
    fig_h = 0.28 * sum(heights) + 1.2  # inches: rows, then title and legend above, axis label below
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(fig_w, fig_h), squeeze=False,
        gridspec_kw={"height_ratios": heights, "hspace": 0.12, "top": 1 - 0.75 / fig_h, "bottom": 0.45 / fig_h},
    )  # fmt: skip
    axes = list(axes[:, 0])
    k = 0
    for i in range(num_lines):
        lo, hi = i * line, min((i + 1) * line, shown)
        for label, kind, _ in rows:
            ax = axes[k]
            k += 1
            if kind == "probs":
                img = np.full((len(SS8), line), np.nan)  # [8, line]
                img[:, : hi - lo] = probs[lo:hi].T
                ax.imshow(img, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1,
                          extent=(lo + 0.5, lo + line + 0.5, len(SS8) - 0.5, -0.5))  # fmt: skip
                ax.set_yticks(range(len(SS8)))
                ax.set_yticklabels(list(SS8), fontsize=6)
            else:
                ids = {"true8": true8, "pred8": pred8, "true3": true3, "pred3": pred3}[kind][lo:hi]
                img = _class_image(ids, colors3 if kind.endswith("3") else colors8, line)  # [1, line, 4]
                ax.imshow(img, aspect="auto", interpolation="nearest", extent=(lo + 0.5, lo + line + 0.5, 1, 0))
                ax.set_yticks([])
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            ax.set_xlim(lo + 0.5, lo + line + 0.5)
            last_row = kind == rows[-1][1]
            ax.tick_params(axis="x", labelsize=6, labelbottom=last_row, length=2 if last_row else 0)
        if i < num_lines - 1:
            axes[k].axis("off")
            k += 1
    axes[-1].set_xlabel("residue", fontsize=7)
    handles = [Patch(facecolor=SS8_COLORS[s], edgecolor="0.4", linewidth=0.4, label=s) for s in SS8]
    if true8 is not None and (true8 < 0).any():
        handles.append(Patch(facecolor=_UNLABELLED_COLOR, edgecolor="0.4", linewidth=0.4, label="unlabelled"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.3 / fig_h), handlelength=1.2, columnspacing=0.8)  # fmt: skip
    if title is None:
        title = f"chain {index}, {n} residues" + (f" (first {shown} shown)" if shown < n else "")
        if true8 is not None:
            known = true8 >= 0
            if known.any():
                q8 = float((pred8[known] == true8[known]).mean())
                q3 = float((pred3[known] == true3[known]).mean())
                title += f": Q8 {100 * q8:.1f}%, Q3 {100 * q3:.1f}%"
    fig.suptitle(title, fontsize=9, y=1 - 0.08 / fig_h, va="top")
    return save_figure(fig, path)

