r"""
The one module of pyro_seq that calls ArviZ.

Written against the ArviZ 0.x API (tested with 0.23, the line pip installs on
Python 3.11). ArviZ 1.x (Python >= 3.12) changed the calls used here:
``from_dict`` takes nested groups, ``psislw`` moved to ``arviz-stats`` and
negates its input, ``compare`` takes ELPD objects. :func:`arviz` refuses 1.x
with a clear error rather than computing something else silently; porting
means changing this module only.

**What goes where in the** :class:`~arviz.InferenceData` **of**
:func:`to_inference_data` (sequence ``n`` is the ``n``-th sequence in the
iteration order of the batches; dim ``sequence`` carries that index in every
group):

- ``posterior``: ``z``, guide samples of the first ``num_shown`` sequences,
  dims (chain=1, draw, sequence, time, z_dim);
- ``posterior_predictive``: ``x``, one emission draw along each ``z`` draw,
  (chain=1, draw, sequence, time, x_dim);
- ``observed_data``: ``x``, the shown sequences, (sequence, time, x_dim);
- ``log_likelihood``: ``x``, :math:`\log \hat p_K(x_n)` of every sequence,
  (chain=1, draw=1, sequence);
- ``sample_stats``: ``log_weight``, the :math:`K` log weights, (chain=1, draw=K, sequence);
- ``constant_data``: ``length``, frames per sequence, (sequence);
- ``importance`` (a custom group): ``pareto_k``, ``ess``, ``elbo`` per sequence, (sequence).

Padded steps are NaN. The ``log_likelihood`` group holds one *estimate* per
data point, not per-draw log-likelihoods: do not call ``az.loo`` / ``az.waic``
on it (see :mod:`pyro_seq.diagnostics.compare` for what its sum means).

**Pareto** :math:`\hat k` (Yao et al. 2018, arXiv:1802.02538; Vehtari et al.
2024, arXiv:1507.02646): ``arviz.psislw`` fits a generalized Pareto
distribution to the largest :math:`\lceil \min(K/5, 3\sqrt{K}) \rceil` of the
:math:`K` weights of each sequence; it needs more than 4 of them, i.e.
:math:`K \ge 21` (below that :func:`pareto_khat` returns NaN).
:math:`\hat k < 0.5`: the importance-sampled estimate converges fast;
:math:`0.5 \le \hat k \le 0.7`: slower but usable;
:math:`\hat k > 0.7`: the guide's tails are too light for this data point and
:math:`\log \hat p_K` is unreliable.
"""

import warnings
from contextlib import contextmanager

import numpy as np

from pyro_seq.diagnostics._common import batch_tensors, eval_mode, pad_rows
from pyro_seq.diagnostics.ppc import music_statistics, posterior_draws
from pyro_seq.diagnostics.psis import importance_weights

__all__ = [
    "ArvizVersionError",
    "KHAT_THRESHOLD",
    "MIN_KHAT_SAMPLES",
    "arviz",
    "check_arviz_version",
    "compare_elpd",
    "elpd_data",
    "elpd_from_inference_data",
    "inference_data_from_weights",
    "music_ppc",
    "music_ppc_data",
    "pareto_khat",
    "plot_compare",
    "plot_khat",
    "plot_ppc",
    "to_inference_data",
]

#: :math:`\hat k` above which an importance-sampled estimate is flagged unreliable.
KHAT_THRESHOLD = 0.7
#: Fewest importance samples for which ``arviz.psislw`` can fit the tail (> 4 tail points).
MIN_KHAT_SAMPLES = 21
#: The ArviZ versions this module is written for.
SUPPORTED_ARVIZ = "arviz>=0.17,<1"

_ARVIZ = None


class ArvizVersionError(ImportError):
    """The installed ArviZ has an API this module does not speak."""


def check_arviz_version(version):
    """
    Raise :class:`ArvizVersionError` unless ``version`` is an ArviZ 0.x release.

    :param str version: e.g. ``arviz.__version__``.
    """
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise ArvizVersionError(f"cannot parse the ArviZ version {version!r}") from None
    if major >= 1:
        raise ArvizVersionError(
            f"pyro_seq.diagnostics is written against the ArviZ 0.x API (tested with 0.23); "
            f"ArviZ {version} changed it (from_dict nests groups, psislw moved to arviz-stats "
            f"and negates its input, compare takes ELPD objects). Install {SUPPORTED_ARVIZ!r} "
            "(pip install 'arviz<1') or port pyro_seq/diagnostics/arviz_adapter.py."
        )


def arviz():
    """The ``arviz`` module, imported once and checked with :func:`check_arviz_version`."""
    global _ARVIZ
    if _ARVIZ is None:
        try:
            with warnings.catch_warnings():
                # 0.23 announces its 1.x refactor on import
                warnings.simplefilter("ignore", FutureWarning)
                import arviz as az
        except ImportError as e:
            raise ImportError(
                f"pyro_seq.diagnostics needs ArviZ ({SUPPORTED_ARVIZ}): pip install 'arviz<1'"
            ) from e
        check_arviz_version(az.__version__)
        _ARVIZ = az
    return _ARVIZ


@contextmanager
def _quiet():
    """Silence ArviZ 0.23's own deprecation chatter (pandas inplace, matplotlib kwargs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*inplace keyword.*")
        warnings.filterwarnings("ignore", message=".*alias_mapping.*")
        yield


# ----------------------------------------------------------------------- PSIS


def pareto_khat(log_weights):
    """
    PSIS Pareto :math:`\\hat k` of the importance weights of each data point
    (``arviz.psislw``, ``reff=1``: independent guide samples).

    :param log_weights: ``[K, N]`` array or tensor of log weights.
    :returns: ``[N]`` float64 numpy array; NaN when ``K < 21`` (with a warning),
        ``inf`` where ArviZ cannot fit the tail (e.g. tied weights).
    """
    lw = np.asarray(log_weights.detach().cpu() if hasattr(log_weights, "detach") else log_weights)
    if lw.ndim != 2:
        raise ValueError(f"log weights must be [K, N], got shape {lw.shape}")
    num_samples, n = lw.shape
    if num_samples < MIN_KHAT_SAMPLES:
        warnings.warn(
            f"Pareto k-hat needs at least {MIN_KHAT_SAMPLES} importance samples per data point "
            f"(got K={num_samples}); returning NaN"
        )
        return np.full(n, np.nan)
    if not np.all(np.isfinite(lw)):
        raise ValueError("log weights contain NaN or inf values")
    _, khat = arviz().psislw(np.ascontiguousarray(lw.T, dtype=np.float64), reff=1.0)  # [N]
    return np.asarray(khat, dtype=np.float64).reshape(n)


# ------------------------------------------------------------ ELPD / compare


def elpd_data(pointwise, pareto_k=None, num_samples=1, khat_threshold=KHAT_THRESHOLD):
    r"""
    An ArviZ ``ELPDData`` of precomputed pointwise ELPD contributions, in the
    layout of ``arviz.loo(..., pointwise=True)`` (ArviZ only knows the labels
    ``loo`` and ``waic``; the values here are whatever ``pointwise`` holds):

    - ``elpd_loo`` :math:`= \sum_n e_n`, ``se`` :math:`= \sqrt{N \operatorname{Var}(e_n)}`
      (ArviZ's formula), ``p_loo`` NaN (no effective number of parameters);
    - ``loo_i``, ``pareto_k`` per point; ``warning`` if any :math:`\hat k >` ``khat_threshold``.

    :param pointwise: ``[N]`` per-point log predictive densities :math:`e_n`.
    :param pareto_k: ``[N]`` or None.
    :param int num_samples: importance samples behind each :math:`e_n`.
    """
    import xarray as xr

    az = arviz()
    e = np.asarray(pointwise, dtype=np.float64).reshape(-1)  # [N]
    n = e.size
    if n == 0 or not np.all(np.isfinite(e)):
        raise ValueError("pointwise ELPD values must be a non-empty array of finite numbers")
    k = np.full(n, np.nan) if pareto_k is None else np.asarray(pareto_k, np.float64).reshape(n)
    seq = np.arange(n)
    return az.ELPDData(
        data=[
            e.sum(),
            float(np.sqrt(n * np.var(e))),
            np.nan,
            int(num_samples),
            n,
            bool(np.any(k > khat_threshold)),
            xr.DataArray(e, dims=["sequence"], coords={"sequence": seq}, name="loo_i"),
            xr.DataArray(k, dims=["sequence"], coords={"sequence": seq}, name="pareto_k"),
            "log",
            float(khat_threshold),
        ],
        index=[
            "elpd_loo",
            "se",
            "p_loo",
            "n_samples",
            "n_data_points",
            "warning",
            "loo_i",
            "pareto_k",
            "scale",
            "good_k",
        ],
    )


def compare_elpd(elpds, method="stacking", seed=None):
    r"""
    ``arviz.compare`` on precomputed :func:`elpd_data` (ArviZ 0.23 accepts ``ELPDData``
    values and then computes no LOO/WAIC itself).

    Stacking weights are computed on the pointwise values shifted by the per-point
    maximum over models: the weights are invariant to such a shift, and without it
    :math:`\exp(e_n)` underflows to 0 for whole sequences (hundreds of nats), which
    makes ArviZ's optimiser return equal weights.

    :param dict elpds: ``{name: ELPDData}`` from :func:`elpd_data`.
    :param str method: ``"stacking"``, ``"BB-pseudo-BMA"`` or ``"pseudo-BMA"``.
    :returns: ArviZ's table (columns ``rank, elpd_loo, p_loo, elpd_diff, weight, se,
        dse, warning, scale``), best first.
    """
    az = arviz()
    if len(elpds) < 2:
        raise ValueError(f"compare needs at least two models, got {list(elpds)}")
    sizes = {name: int(e["n_data_points"]) for name, e in elpds.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all models must be scored on the same data points, got {sizes}")
    stacking = method.lower() == "stacking"
    with _quiet():
        # the table's other columns do not depend on the weighting method (both use
        # ArviZ's se); pseudo-BMA weights exp(elpd - max elpd) cannot underflow to NaN
        table = az.compare(dict(elpds), method="pseudo-BMA" if stacking else method, seed=seed)
        if stacking:
            values = {name: e["loo_i"].values for name, e in elpds.items()}
            top = np.max(np.stack(list(values.values())), axis=0)  # [N]
            shifted = {
                name: elpd_data(v - top, elpds[name]["pareto_k"].values, elpds[name]["n_samples"])
                for name, v in values.items()
            }
            weights = az.compare(shifted, method="stacking")["weight"]
            table["weight"] = weights.reindex(table.index).values
    return table


def elpd_from_inference_data(idata, var_name="x", khat_threshold=KHAT_THRESHOLD):
    """
    :func:`elpd_data` from an :func:`to_inference_data` result: the pointwise values
    of ``idata.log_likelihood[var_name]`` (one estimate per sequence), the
    :math:`\\hat k` of its ``importance`` group and :math:`K` from its ``sample_stats``.
    """
    if "log_likelihood" not in idata.groups():
        raise ValueError("the InferenceData has no log_likelihood group")
    ll = idata.log_likelihood[var_name]
    if ll.sizes.get("chain", 1) != 1 or ll.sizes.get("draw", 1) != 1:
        raise ValueError(
            f"log_likelihood[{var_name!r}] must hold one estimate per data point "
            f"(chain=1, draw=1), got sizes {dict(ll.sizes)}; per-draw log-likelihoods "
            "are arviz.loo's business"
        )
    khat = idata.importance["pareto_k"].values if "importance" in idata.groups() else None
    num_samples = (
        idata.sample_stats.sizes["draw"] if "sample_stats" in idata.groups() else 1
    )
    return elpd_data(ll.values.reshape(-1), khat, num_samples, khat_threshold)


# ------------------------------------------------------------- InferenceData


def inference_data_from_weights(weights, khat=None, obs_site="x", shown=None):
    """
    Build the :class:`~arviz.InferenceData` described in the module docstring from
    precomputed pieces (no model calls).

    :param ImportanceWeights weights: log weights ``[K, N]`` and lengths ``[N]``.
    :param khat: ``[N]`` Pareto :math:`\\hat k` (default: computed with :func:`pareto_khat`).
    :param str obs_site: the observation site name (variable name of ``x``).
    :param dict shown: optional ``{"index": [S], "z": [D, S, T, z_dim],
        "x_draws": [D, S, T, x_dim], "x": [S, T, x_dim]}`` numpy arrays (NaN padded)
        for the posterior, posterior_predictive and observed_data groups.
    """
    az = arviz()
    lw = np.asarray(weights.log_weights, dtype=np.float64)  # [K, N]
    n = lw.shape[1]
    if khat is None:
        khat = pareto_khat(lw)
    seq = np.arange(n)
    attrs = {
        "log_likelihood_estimator": "importance weighted: log mean_k w_k",
        "num_importance_samples": int(lw.shape[0]),
    }
    idata = az.from_dict(
        log_likelihood={obs_site: weights.log_likelihood[None, None]},  # [1, 1, N]
        sample_stats={"log_weight": lw[None]},  # [1, K, N]
        constant_data={"length": np.asarray(weights.lengths, dtype=np.int64)},  # [N]
        coords={"sequence": seq},
        dims={obs_site: ["sequence"], "log_weight": ["sequence"], "length": ["sequence"]},
        attrs=attrs,
    )
    import xarray as xr

    importance = xr.Dataset(
        {
            "pareto_k": ("sequence", np.asarray(khat, dtype=np.float64)),
            "ess": ("sequence", weights.ess),
            "elbo": ("sequence", weights.elbo),
        },
        coords={"sequence": seq},
        attrs=attrs,
    )
    idata.add_groups({"importance": importance})
    if shown is not None:
        index = np.asarray(shown["index"])
        z_dim, x_dim = shown["z"].shape[-1], shown["x"].shape[-1]
        coords = {
            "sequence": index,
            "time": np.arange(shown["x"].shape[1]),
            "z_dim": np.arange(z_dim),
            "x_dim": np.arange(x_dim),
        }
        idata.extend(
            az.from_dict(
                posterior={"z": shown["z"][None]},  # [1, D, S, T, z_dim]
                posterior_predictive={obs_site: shown["x_draws"][None]},  # [1, D, S, T, x_dim]
                observed_data={obs_site: shown["x"]},  # [S, T, x_dim]
                coords=coords,
                dims={"z": ["sequence", "time", "z_dim"], obs_site: ["sequence", "time", "x_dim"]},
                attrs=attrs,
            )
        )
    return idata


def _shown_draws(model, guide, batches, num_shown, num_draws, latent_site, obs_site, chunk_size):
    """Posterior and predictive draws of the first ``num_shown`` sequences (numpy, NaN padded)."""
    zs, xds, xs, lengths = [], [], [], []
    for batch in batches:
        if len(lengths) >= num_shown:
            break
        x, mask = batch_tensors(batch)
        take = min(num_shown - len(lengths), x.shape[0])
        length = mask[:take].sum(-1)  # [take]
        t_max = int(length.max())
        x_s, m_s = x[:take, :t_max], mask[:take, :t_max]  # [take, T', x_dim], [take, T']
        z, x_draws = posterior_draws(
            model, guide, x_s, m_s, num_draws, latent_site, obs_site, chunk_size
        )  # [D, take, T', z_dim], [D, take, T', x_dim]
        for b in range(take):
            n_b = int(length[b])
            zs.append(z[:, b, :n_b].transpose(0, 1).cpu())  # [T_b, D, z_dim]
            xds.append(x_draws[:, b, :n_b].transpose(0, 1).cpu())  # [T_b, D, x_dim]
            xs.append(x_s[b, :n_b].cpu())  # [T_b, x_dim]
            lengths.append(n_b)
    if not lengths:
        return None
    width = max(lengths)
    return {
        "index": np.arange(len(lengths)),
        "z": pad_rows(zs, width).permute(2, 0, 1, 3).numpy(),  # [D, S, T, z_dim]
        "x_draws": pad_rows(xds, width).permute(2, 0, 1, 3).numpy(),  # [D, S, T, x_dim]
        "x": pad_rows(xs, width).numpy(),  # [S, T, x_dim]
    }


def to_inference_data(
    model,
    guide,
    batches,
    num_samples=100,
    num_shown=4,
    num_draws=None,
    chunk_size=None,
    latent_site="z",
    obs_site="x",
):
    """
    An :class:`~arviz.InferenceData` of a trained model and guide on a data split
    (layout in the module docstring; model and guide in eval mode).

    Posterior predictive draws: the guide is run on the shown sequences, the model
    is replayed on each guide sample and its emission site is *sampled* (draw ``k``
    of ``x`` goes with draw ``k`` of ``z``); see :mod:`pyro_seq.diagnostics.ppc`.

    :param batches: iterable of :class:`~pyro_seq.data.SequenceBatch` (or ``(x, mask)``),
        read once into a list; ``make_batches(..., shuffle=False)`` keeps the data order.
    :param int num_samples: :math:`K` importance samples per sequence (>= 21 for
        :math:`\\hat k`; 100 or more recommended).
    :param int num_shown: sequences (the first ones) whose posterior and predictive
        draws are stored; 0 stores neither (nor ``observed_data``).
    :param int num_draws: posterior draws per shown sequence (default ``num_samples``).
    :param int chunk_size: samples drawn in parallel.
    :param str latent_site: latent site name (``"z"`` or stem of ``"z_1" ..``).
    :param str obs_site: observation site name (``"x"`` or stem of ``"x_1" ..``).
    """
    arviz()  # fail before any sampling on an unsupported ArviZ
    batches = list(batches)  # iterated twice
    weights = importance_weights(model, guide, batches, num_samples, chunk_size)
    shown = None
    if num_shown > 0:
        with eval_mode(model, guide):
            shown = _shown_draws(
                model,
                guide,
                batches,
                num_shown,
                num_samples if num_draws is None else num_draws,
                latent_site,
                obs_site,
                chunk_size,
            )
    return inference_data_from_weights(weights, obs_site=obs_site, shown=shown)


def music_ppc_data(stats):
    """
    An :class:`~arviz.InferenceData` with ``observed_data`` and
    ``posterior_predictive`` groups holding :class:`~pyro_seq.diagnostics.ppc.MusicStatistics`
    (``notes_per_frame`` over dim ``frame``, ``note_duration`` over dim ``note``),
    ready for ``arviz.plot_ppc``.
    """
    az = arviz()
    return az.from_dict(
        posterior_predictive={k: v[None] for k, v in stats.predicted.items()},  # [1, D, ...]
        observed_data=dict(stats.observed),
        dims={"notes_per_frame": ["frame"], "note_duration": ["note"]},
        attrs={"source": stats.source},
    )


def music_ppc(model, guide, batches, num_draws=20, source="posterior", site="x"):
    """
    :func:`~pyro_seq.diagnostics.ppc.music_statistics` as an InferenceData
    (:func:`music_ppc_data`).
    """
    arviz()
    return music_ppc_data(music_statistics(model, guide, batches, num_draws, source, site))


# ---------------------------------------------------------------------- plots


def plot_khat(khat, ax=None, threshold=KHAT_THRESHOLD):
    """
    ``arviz.plot_khat`` of per-point :math:`\\hat k` (array or ``ELPDData``), with
    horizontal lines at 0, 0.5, ``threshold`` and 1.

    :returns: the matplotlib Axes.
    """
    import xarray as xr

    az = arviz()
    if not isinstance(khat, az.ELPDData):
        k = np.asarray(khat, dtype=np.float64).reshape(-1)
        khat = az.ELPDData(
            data=[xr.DataArray(k, dims=["sequence"], name="pareto_k"), float(threshold)],
            index=["pareto_k", "good_k"],
        )
    with _quiet():
        return az.plot_khat(khat, ax=ax, show_hlines=True, threshold=threshold, show=False)


def plot_compare(table, ax=None):
    """
    ``arviz.plot_compare`` of a :func:`pyro_seq.diagnostics.compare_guides` table
    (columns ``elpd`` / ``p`` are given ArviZ's ``elpd_loo`` / ``p_loo`` names for
    the call only).

    :returns: the matplotlib Axes.
    """
    az = arviz()
    df = table.rename(columns={"elpd": "elpd_loo", "p": "p_loo"})
    with _quiet():
        ax = az.plot_compare(df, ax=ax, insample_dev=False, show=False)
    ax.set_xlabel(f"elpd, importance weighted ({df['scale'].iloc[0]})")
    return ax


def plot_ppc(idata, var_names=None, num_pp_samples=None, ax=None, kind="kde"):
    """
    ``arviz.plot_ppc`` (discrete statistics are drawn as histograms by ArviZ).

    :returns: an Axes or an array of Axes, one per variable.
    """
    az = arviz()
    with _quiet():
        return az.plot_ppc(
            idata,
            var_names=var_names,
            num_pp_samples=num_pp_samples,
            ax=ax,
            kind=kind,
            show=False,
            random_seed=0,
        )
