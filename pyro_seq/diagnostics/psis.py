r"""
Importance weights per data point: the importance-weighted log-likelihood
estimate and the effective sample size.

For sequence :math:`n` and :math:`K` guide samples with log weights
:math:`\log w_n^{(k)} = \log p(x_n, z^{(k)}) - \log q(z^{(k)} \mid x_n)`
(:func:`pyro_seq.bounds.log_importance_weights`):

.. math::

    \log \hat p_K(x_n) &= \log \frac{1}{K} \sum_{k=1}^K w_n^{(k)}, \\
    \mathrm{ESS}_n &= \frac{1}{\sum_k \bar w_n^{(k)2}}, \qquad
    \bar w_n^{(k)} = \frac{w_n^{(k)}}{\sum_j w_n^{(j)}},

with :math:`1 \le \mathrm{ESS}_n \le K`. The Pareto :math:`\hat k` of the same
weights (Yao et al. 2018, arXiv:1802.02538) needs ArviZ and lives in
:func:`pyro_seq.diagnostics.arviz_adapter.pareto_khat`.

Nothing here imports ArviZ.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from pyro_seq.bounds import log_importance_weights
from pyro_seq.diagnostics._common import batch_tensors, eval_mode

__all__ = [
    "ImportanceWeights",
    "importance_ess",
    "importance_weights",
    "iw_log_likelihood",
]


def _as_tensor(log_weights):
    if not torch.is_tensor(log_weights):
        log_weights = torch.as_tensor(np.asarray(log_weights))
    lw = log_weights.detach().cpu()
    if lw.dim() < 1 or lw.shape[0] < 1:
        raise ValueError(f"log weights must be [K, ...] with K >= 1, got shape {tuple(lw.shape)}")
    return lw.double()


def iw_log_likelihood(log_weights):
    """
    :math:`\\log \\frac{1}{K} \\sum_k w^{(k)}` per data point.

    :param log_weights: ``[K, N]`` tensor or array.
    :returns: ``[N]`` float64 numpy array.
    """
    lw = _as_tensor(log_weights)  # [K, N]
    return (torch.logsumexp(lw, 0) - math.log(lw.shape[0])).numpy()  # [N]


def importance_ess(log_weights):
    """
    Importance-sampling effective sample size :math:`1 / \\sum_k \\bar w_k^2` per data
    point, computed in log space:
    :math:`\\exp(2 \\,\\mathrm{LSE}(\\log w) - \\mathrm{LSE}(2 \\log w))`.

    :param log_weights: ``[K, N]`` tensor or array.
    :returns: ``[N]`` float64 numpy array in ``[1, K]``.
    """
    lw = _as_tensor(log_weights)  # [K, N]
    log_ess = 2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)  # [N]
    return log_ess.exp().clamp(1.0, lw.shape[0]).numpy()


@dataclass
class ImportanceWeights:
    """
    Log importance weights over a data split (numpy ``float64``).

    :ivar log_weights: ``[K, N]``.
    :ivar lengths: ``[N]`` frames per sequence.
    :ivar log_likelihood: ``[N]`` importance-weighted estimates :math:`\\log \\hat p_K(x_n)`.
    :ivar elbo: ``[N]`` per-sequence ELBO estimates (mean log weight).
    :ivar ess: ``[N]`` effective sample sizes.
    """

    log_weights: np.ndarray
    lengths: np.ndarray

    @property
    def num_samples(self):
        return self.log_weights.shape[0]

    @property
    def log_likelihood(self):
        return iw_log_likelihood(self.log_weights)

    @property
    def elbo(self):
        return self.log_weights.mean(0)

    @property
    def ess(self):
        return importance_ess(self.log_weights)


def importance_weights(model, guide, batches, num_samples=100, chunk_size=None):
    """
    Log importance weights of every sequence of a split (model and guide in eval
    mode), via :func:`pyro_seq.bounds.log_importance_weights`.

    Sequence ``n`` is the ``n``-th in the iteration order of ``batches``.

    :param batches: iterable of :class:`~pyro_seq.data.SequenceBatch` (or ``(x, mask)``).
    :param int num_samples: :math:`K` guide samples per sequence.
    :param int chunk_size: samples drawn in parallel (see ``log_importance_weights``).
    :rtype: ImportanceWeights
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    log_w, lengths = [], []
    with eval_mode(model, guide):
        for batch in batches:
            x, mask = batch_tensors(batch)
            lw = log_importance_weights(model, guide, x, mask, num_samples, chunk_size)
            # lw: [K, batch]
            log_w.append(lw.double().cpu())
            lengths.append(mask.sum(-1).cpu())
    if not log_w:
        raise ValueError("importance_weights() got no batches")
    return ImportanceWeights(
        log_weights=torch.cat(log_w, dim=1).numpy(),  # [K, N]
        lengths=torch.cat(lengths).numpy(),  # [N]
    )
