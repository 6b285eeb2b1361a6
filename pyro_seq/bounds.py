"""
Per-sequence bounds on :math:`\\log p(x)` for any pyro_seq model and guide.

For a guide sample :math:`z^{(k)} \\sim q(z \\mid x)` the log importance weight
of sequence :math:`b` is

.. math::

    \\log w_b^{(k)} = \\log p(x_b, z_b^{(k)}) - \\log q(z_b^{(k)} \\mid x_b),

read from the per-sequence log densities of a replayed Pyro trace (every
model's batch plate is the rightmost dim). From :math:`K` weights:

- ELBO: :math:`\\frac{1}{K} \\sum_k \\log w^{(k)}` (an unbiased estimate of the ELBO);
- importance-sampled bound: :math:`\\log \\frac{1}{K} \\sum_k w^{(k)}`
  (Burda et al. 2016, arXiv:1509.00519), tighter as :math:`K` grows.

Both are reported as negative log-likelihoods in nats per frame, under the two
normalisations in use in the literature:

- ``total``: total nats over the split / total frames (Pyro's DMM example);
- ``seq_mean``: mean over sequences of each sequence's nats per frame
  (the SRNN paper's code).
"""

import math

import pyro.poutine as poutine
import torch


def _per_sequence_log_prob(trace, batch):
    total = 0.0
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        log_p = site["log_prob"]
        if log_p.dim() == 0:
            log_p = log_p.expand(batch) / batch
        elif log_p.shape != (batch,):
            raise ValueError(
                f"site {name!r} has log_prob shape {tuple(log_p.shape)}; "
                f"expected [batch] = [{batch}] (one value per sequence in the plate)"
            )
        total = total + log_p
    return total


@torch.no_grad()
def log_importance_weights(model, guide, x, mask=None, num_samples=1, chunk_size=None):
    """
    Log importance weights of ``num_samples`` guide samples per sequence.

    Samples are drawn in parallel by repeating the batch ``chunk_size`` times
    (default: as many as keep one pass under 2**16 frames).

    :param torch.Tensor x: ``[batch, time, x_dim]``
    :param torch.Tensor mask: ``[batch, time]``
    :returns: ``[num_samples, batch]`` tensor of :math:`\\log w`.
    """
    batch, time = x.shape[:2]
    if mask is None:
        mask = torch.ones(batch, time, dtype=torch.bool, device=x.device)
    if chunk_size is None:
        chunk_size = max(1, min(num_samples, (1 << 16) // (batch * time)))
    out = []
    done = 0
    while done < num_samples:
        k = min(chunk_size, num_samples - done)
        xk = x.repeat(k, 1, 1)  # [k * batch, time, x_dim]
        mk = mask.repeat(k, 1)  # [k * batch, time]
        guide_trace = poutine.trace(guide).get_trace(xk, mk)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(xk, mk)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
        log_w = _per_sequence_log_prob(model_trace, k * batch) - _per_sequence_log_prob(
            guide_trace, k * batch
        )
        out.append(log_w.reshape(k, batch))
        done += k
    return torch.cat(out, dim=0)


def normalise(log_likelihoods, lengths):
    """
    Negative log-likelihood in nats per frame under both conventions.

    :param torch.Tensor log_likelihoods: ``[num_sequences]`` per-sequence bounds (nats).
    :param torch.Tensor lengths: ``[num_sequences]`` frames per sequence.
    :returns: dict with ``total`` (total nats / total frames) and ``seq_mean``
        (mean of per-sequence nats per frame).
    """
    ll = log_likelihoods.double()
    lengths = lengths.double()
    return {
        "total": float(-ll.sum() / lengths.sum()),
        "seq_mean": float((-ll / lengths).mean()),
    }


def evaluate(model, guide, batches, num_samples=1, chunk_size=None):
    """
    ELBO and importance-sampled bounds over a data split.

    :param batches: iterable of :class:`~pyro_seq.data.SequenceBatch` (``x``, ``mask``).
    :param int num_samples: :math:`K` guide samples per sequence.
    :returns: dict ``{"elbo": {...}, "iwae": {...}, "num_samples", "num_sequences",
        "num_frames"}``; each bound holds negative log-likelihoods in nats per
        frame, ``total`` and ``seq_mean`` (see :func:`normalise`).
    """
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    elbos, iwaes, lengths = [], [], []
    try:
        for batch in batches:
            x, mask = batch[0], batch[1]
            log_w = log_importance_weights(model, guide, x, mask, num_samples, chunk_size)
            elbos.append(log_w.mean(0).cpu())
            iwaes.append((torch.logsumexp(log_w, 0) - math.log(num_samples)).cpu())
            lengths.append(mask.sum(-1).cpu())
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    if not lengths:
        raise ValueError("evaluate() got no batches")
    elbo, iwae, lengths = torch.cat(elbos), torch.cat(iwaes), torch.cat(lengths)
    return {
        "elbo": normalise(elbo, lengths),
        "iwae": normalise(iwae, lengths),
        "num_samples": num_samples,
        "num_sequences": int(lengths.numel()),
        "num_frames": int(lengths.sum()),
    }
