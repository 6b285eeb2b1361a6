r"""
Comparing guides (and models) by the importance-weighted log-likelihood of
held-out sequences, in the form of ArviZ's model comparison table.

**What the elpd is here.** ArviZ's elpd is the expected log pointwise
predictive density of new data, :math:`\sum_n \log p(\tilde x_n \mid \text{training data})`.
For a model :math:`p_\theta` fitted on a training split and sequences
:math:`x_n` of a *held-out* split, it is estimated directly by
:math:`\sum_n \log p_\theta(x_n)`: the :math:`x_n` played no part in the fit,
so no leave-one-out correction is needed. Each term is estimated with
:math:`K` guide samples,

.. math::

    e_n = \log \hat p_K(x_n) = \log \frac{1}{K} \sum_{k=1}^K
        \frac{p_\theta(x_n, z^{(k)})}{q_\phi(z^{(k)} \mid x_n)},

a stochastic lower bound, :math:`\mathbb E[e_n] \le \log p_\theta(x_n)`, whose
gap shrinks as :math:`K` grows or as :math:`q_\phi` approaches the posterior
(Burda et al. 2016). So :math:`e_n` *is* the elpd contribution of point
:math:`n`, and :math:`\widehat{\mathrm{elpd}} = \sum_n e_n`. Running PSIS-LOO
(``arviz.compare(..., ic="loo")``) on these values would be wrong: LOO reweights
*parameter* draws by :math:`1 / p(x_n \mid \theta^{(s)})`, while the :math:`K`
samples here are latent paths of one sequence, already averaged inside
:math:`e_n`. The table is therefore built by ``arviz.compare`` on precomputed
pointwise values (:func:`~pyro_seq.diagnostics.arviz_adapter.elpd_data`), from
the ``log_likelihood`` group of each :class:`~arviz.InferenceData`.

Columns, best first (ArviZ's layout, with ArviZ's ``elpd_loo`` / ``p_loo`` named
``elpd`` / ``p``):

- ``rank``; ``elpd`` :math:`= \sum_n e_n`; ``p``: NaN (no effective number of parameters);
- ``elpd_diff``: elpd of the best minus this one (0 for the best);
- ``weight``: stacking weights (Yao et al. 2018, arXiv:1704.02030) by default;
- ``se`` :math:`= \sqrt{N \operatorname{Var}_n(e_n)}`; ``dse``: the same for the
  paired differences :math:`e^{\mathrm{best}}_n - e_n`;
- ``warning``: some point has :math:`\hat k >` ``khat_threshold``; ``scale``: ``"log"``;
- ``khat_share``: share of points with :math:`\hat k >` ``khat_threshold``
  (default 0.7, Yao et al. 2018, arXiv:1802.02538);
- ``nats_per_frame``: :math:`-\mathrm{elpd}` / total frames (the ``total``
  normalisation of :func:`pyro_seq.bounds.evaluate`).

The standard errors are over data points; they leave out the Monte Carlo error
of each :math:`e_n` (small next to the spread between sequences once :math:`K`
is in the hundreds, and shared by nothing). Comparing two *models* compares two
lower bounds, each as tight as its guide allows.

**References**

[1] Yuri Burda, Roger Grosse, Ruslan Salakhutdinov, "Importance Weighted
    Autoencoders", ICLR 2016, arXiv:1509.00519.

[2] Aki Vehtari, Andrew Gelman, Jonah Gabry, "Practical Bayesian model
    evaluation using leave-one-out cross-validation and WAIC", Statistics and
    Computing 2017, arXiv:1507.04544.
"""

import numpy as np

from pyro_seq.diagnostics import arviz_adapter
from pyro_seq.diagnostics.psis import importance_weights

__all__ = ["TABLE_COLUMNS", "compare_guides", "compare_inference_data"]

#: Columns of a comparison table, in order.
TABLE_COLUMNS = (
    "rank",
    "elpd",
    "p",
    "elpd_diff",
    "weight",
    "se",
    "dse",
    "warning",
    "scale",
    "khat_share",
    "nats_per_frame",
)


def _frames(idata):
    if "constant_data" in idata.groups() and "length" in idata.constant_data:
        return np.asarray(idata.constant_data["length"].values)
    return None


def compare_inference_data(
    idatas,
    var_name="x",
    method="stacking",
    khat_threshold=arviz_adapter.KHAT_THRESHOLD,
    seed=None,
):
    """
    The comparison table (see the module docstring) of InferenceData objects
    built by :func:`~pyro_seq.diagnostics.arviz_adapter.to_inference_data` on the
    same data split.

    :param dict idatas: ``{name: InferenceData}``, at least two.
    :param str var_name: the ``log_likelihood`` variable (the observation site).
    :param str method: weights, ``"stacking"``, ``"BB-pseudo-BMA"`` or ``"pseudo-BMA"``.
    :param float khat_threshold: :math:`\\hat k` above which a point is flagged.
    :param seed: seed of the Bayesian bootstrap (``"BB-pseudo-BMA"`` only).
    :rtype: pandas.DataFrame
    """
    if len(idatas) < 2:
        raise ValueError(f"compare needs at least two entries, got {list(idatas)}")
    frames = {name: _frames(idata) for name, idata in idatas.items()}
    known = [f for f in frames.values() if f is not None]
    if any(f.shape != known[0].shape or not np.array_equal(f, known[0]) for f in known):
        raise ValueError(
            "the InferenceData objects hold different data (sequence lengths differ): "
            "score every guide on the same batches, in the same order"
        )
    elpds = {
        name: arviz_adapter.elpd_from_inference_data(idata, var_name, khat_threshold)
        for name, idata in idatas.items()
    }
    table = arviz_adapter.compare_elpd(elpds, method=method, seed=seed)
    table = table.rename(columns={"elpd_loo": "elpd", "p_loo": "p"})
    table["khat_share"] = [
        float(np.mean(elpds[name]["pareto_k"].values > khat_threshold))
        if np.isfinite(elpds[name]["pareto_k"].values).any()
        else np.nan
        for name in table.index
    ]
    table["nats_per_frame"] = [
        -table.loc[name, "elpd"] / frames[name].sum() if frames[name] is not None else np.nan
        for name in table.index
    ]
    return table[list(TABLE_COLUMNS)]


def compare_guides(
    pairs,
    batches,
    num_samples=100,
    chunk_size=None,
    method="stacking",
    khat_threshold=arviz_adapter.KHAT_THRESHOLD,
    seed=None,
    obs_site="x",
):
    """
    Score each ``(model, guide)`` pair on the same held-out batches with
    :math:`K` importance samples per sequence and tabulate them as
    ``arviz.compare`` does (see the module docstring).

    :param dict pairs: ``{name: (model, guide)}``, at least two.
    :param batches: iterable of :class:`~pyro_seq.data.SequenceBatch` (or ``(x, mask)``);
        read once into a list, so every pair sees the same batches.
    :param int num_samples: :math:`K` (>= 21 for :math:`\\hat k`).
    :returns: the table, and nothing is cached: call
        :func:`~pyro_seq.diagnostics.arviz_adapter.to_inference_data` to keep the weights.
    :rtype: pandas.DataFrame
    """
    batches = list(batches)
    idatas = {}
    for name, pair in pairs.items():
        try:
            model, guide = pair
        except (TypeError, ValueError):
            raise TypeError(f"pairs[{name!r}] must be a (model, guide) tuple") from None
        weights = importance_weights(model, guide, batches, num_samples, chunk_size)
        idatas[name] = arviz_adapter.inference_data_from_weights(weights, obs_site=obs_site)
    return compare_inference_data(idatas, obs_site, method, khat_threshold, seed)
