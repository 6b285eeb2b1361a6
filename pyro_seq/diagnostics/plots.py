"""
Pictures of the diagnostics (matplotlib; ArviZ's plots through
:mod:`~pyro_seq.diagnostics.arviz_adapter`).

Every function draws on ``ax`` (a new figure if None), saves the figure as a
PNG when ``path`` is given (closing it if it made it) and returns the Axes.
Pick a non-interactive backend (``MPLBACKEND=Agg``) on machines without a display.
"""

from pathlib import Path

import numpy as np

from pyro_seq.diagnostics import arviz_adapter

__all__ = [
    "plot_compare",
    "plot_kl_heatmap",
    "plot_kl_per_unit",
    "plot_khat",
    "plot_layer_kl",
    "plot_music_ppc",
]


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax, False
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax, True


def _finish(fig, path, created):
    import matplotlib.pyplot as plt

    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        if created:
            plt.close(fig)


def plot_kl_heatmap(health, ax=None, path=None, max_sequences=None):
    """
    Heat map of the KL per sequence (rows) and time step (columns) of a
    :class:`~pyro_seq.diagnostics.latents.LatentHealth`; padding is left blank.

    :param int max_sequences: draw only the first rows.
    """
    import matplotlib

    kl = np.asarray(health.kl_per_step)[:max_sequences]  # [N, T_max]
    size = (max(4.0, min(14.0, kl.shape[1] / 10)), max(2.5, min(8.0, kl.shape[0] / 6)))
    fig, ax, created = _axes(ax, size)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = ax.imshow(
        np.ma.masked_invalid(kl), aspect="auto", origin="upper", cmap=cmap, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label="KL (nats)")
    ax.set_xlabel("time step")
    ax.set_ylabel("sequence")
    ax.set_title(f"KL per step ({health.kl_per_frame:.3f} nats per frame)")
    _finish(fig, path, created)
    return ax


def plot_kl_per_unit(health, ax=None, path=None):
    """
    Bars of the KL per latent unit (nats per frame): informative units (KL > 0.01) in blue,
    units active only by the posterior-mean criterion in orange, the rest in grey.
    """
    kl = np.asarray(health.kl_per_unit)  # [z_dim]
    fig, ax, created = _axes(ax, (max(4.0, min(14.0, kl.size / 6)), 3.0))
    # informative (carries KL): blue; active by the posterior-mean criterion only: orange; else grey
    colors = np.where(health.informative, "C0", np.where(health.active, "C1", "0.6"))
    ax.bar(np.arange(kl.size), kl, color=colors)
    ax.set_xlabel("latent unit")
    ax.set_ylabel("KL (nats per frame)")
    ax.set_title(
        f"{health.active_units} of {kl.size} units active "
        f"(Var of posterior mean > {health.threshold:g})"
    )
    _finish(fig, path, created)
    return ax


def plot_layer_kl(healths, path=None):
    """
    One :func:`plot_kl_per_unit` panel per stochastic layer (the result of
    :func:`~pyro_seq.diagnostics.layer_health`), KL in nats per data point.

    :returns: the figure.
    """
    import matplotlib.pyplot as plt

    names = list(healths)
    fig, axes = plt.subplots(len(names), 1, figsize=(8.0, 2.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        health = healths[name]
        plot_kl_per_unit(health, ax=ax)
        ax.set_ylabel("KL (nats)")
        ax.set_title(
            f"{name}: KL {health.kl_per_frame:.2f} nats; of {health.kl_per_unit.size} units "
            f"{health.informative_units} informative (blue), {health.active_units} active", fontsize=9
        )
    fig.tight_layout()
    _finish(fig, path, True)
    return fig


def plot_khat(khat, ax=None, path=None, threshold=arviz_adapter.KHAT_THRESHOLD):
    """
    Pareto :math:`\\hat k` per sequence (``arviz.plot_khat``); ``khat`` is an array,
    an ``ELPDData`` or an InferenceData from
    :func:`~pyro_seq.diagnostics.arviz_adapter.to_inference_data`.
    """
    if hasattr(khat, "groups") and "importance" in khat.groups():
        khat = khat.importance["pareto_k"].values
    fig, ax, created = _axes(ax, (6.0, 3.0))
    arviz_adapter.plot_khat(khat, ax=ax, threshold=threshold)
    ax.set_xlabel("sequence")
    ax.set_title("PSIS Pareto k-hat of the importance weights")
    _finish(fig, path, created)
    return ax


def plot_compare(table, ax=None, path=None):
    """``arviz.plot_compare`` of a :func:`~pyro_seq.diagnostics.compare_guides` table."""
    fig, ax, created = _axes(ax, (6.0, 1.0 + 0.5 * len(table)))
    arviz_adapter.plot_compare(table, ax=ax)
    _finish(fig, path, created)
    return ax


def plot_music_ppc(idata, path=None, num_pp_samples=None):
    """
    ``arviz.plot_ppc`` of the music statistics of
    :func:`~pyro_seq.diagnostics.arviz_adapter.music_ppc` (notes per frame and note
    durations, drawn as histograms since they are counts), one panel per statistic.

    :returns: the array of Axes.
    """
    import matplotlib.pyplot as plt

    names = list(idata.observed_data.data_vars)
    fig, axes = plt.subplots(1, len(names), figsize=(5.0 * len(names), 3.5), squeeze=False)
    axes = axes[0]
    arviz_adapter.plot_ppc(idata, var_names=names, num_pp_samples=num_pp_samples, ax=axes)
    for ax, name in zip(axes, names):
        ax.set_xlabel(name.replace("_", " "))
    source = idata.observed_data.attrs.get("source", "")
    fig.suptitle(f"posterior predictive check ({source} draws)")
    _finish(fig, path, True)
    return axes
