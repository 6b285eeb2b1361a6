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
  (Burda et al. 2016), tighter as :math:`K` grows and consistent as
  :math:`K \\to \\infty`. :func:`importance_bounds` computes both per sequence
  for any :math:`K` (thousands) in chunks of at most ``max_frames`` frames,
  with a running log-sum-exp, so memory does not grow with :math:`K`.

Both are reported as negative log-likelihoods under three normalisations:

- ``total``: total nats over the split / total frames (Pyro's DMM example);
- ``seq_mean``: mean over sequences of each sequence's nats per frame
  (the SRNN paper's code);
- ``per_sequence``: total nats / number of sequences (nats per data point,
  e.g. per image for sequential MNIST).

:class:`~pyro_seq.losses.IWAE_ELBO` is the importance-weighted bound as a training objective
for :class:`~pyro_seq.training.trainer.Trainer` (or :class:`~pyro.infer.SVI`).

**References**

[1] Yuri Burda, Roger Grosse, Ruslan Salakhutdinov, "Importance Weighted
    Autoencoders", ICLR 2016, arXiv:1509.00519.
"""

import math
from typing import Dict, Sequence

import torch

from pyro_seq.data import streaming
from pyro_seq.losses.particle import check_inputs, repeat_batch, trace_log_weights  # noqa: F401 (public here too)
from pyro_seq.util import check_int, module_tensor

#: Default bound on ``particles * batch * time`` per pass of :func:`log_importance_weights`.
DEFAULT_MAX_FRAMES = 1 << 16

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "check_inputs",
    "evaluate",
    "fivo_bounds",
    "importance_bounds",
    "iwae_log_likelihood",
    "log_importance_weights",
    "normalise",
    "particles_per_chunk",
    "repeat_batch",
    "streaming_elbo",
    "trace_log_weights",
]


def particles_per_chunk(num_samples, batch, time, chunk_size=None, max_frames=None):
    """
    How many samples of a ``[batch, time]`` batch one pass draws: ``chunk_size``
    if given, else as many as keep ``samples * batch * time <= max_frames``
    (at least one).
    """
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1)
        return min(chunk_size, num_samples)
    max_frames = DEFAULT_MAX_FRAMES if max_frames is None else check_int("max_frames", max_frames, 1)
    return max(1, min(num_samples, max_frames // (batch * time)))


def _check_num(name, value):
    return check_int(name, value, 1)


def _chunks(model, guide, x, mask, num_samples, chunk_size, max_frames):
    """Yield ``[k, batch]`` log weights, ``k`` samples per pass, ``num_samples`` in all."""
    _check_num("num_samples", num_samples)
    batch, time, mask = check_inputs(model, x, mask)
    per_chunk = particles_per_chunk(num_samples, batch, time, chunk_size, max_frames)
    done = 0
    while done < num_samples:
        k = min(per_chunk, num_samples - done)
        xk = repeat_batch(x, k)  # [k * batch, time, x_dim]: row k' * batch + b
        mk = repeat_batch(mask, k)  # [k * batch, time]
        log_w, _ = trace_log_weights(model, guide, xk, mk)  # [k * batch]
        yield log_w.reshape(k, batch)  # [k, batch]
        done += k


@torch.no_grad()
def log_importance_weights(
    model, guide, x, mask=None, num_samples=1, chunk_size=None, max_frames=None
):
    """
    Log importance weights of ``num_samples`` guide samples per sequence.

    Samples are drawn in parallel by repeating the batch ``chunk_size`` times
    (default: as many as keep one pass under ``max_frames`` frames,
    :data:`DEFAULT_MAX_FRAMES` by default).

    :param torch.Tensor x: ``[batch, time, x_dim]``
    :param torch.Tensor mask: ``[batch, time]``
    :returns: ``[num_samples, batch]`` tensor of :math:`\\log w`.
    """
    chunks = _chunks(model, guide, x, mask, num_samples, chunk_size, max_frames)
    return torch.cat(list(chunks), dim=0)


@torch.no_grad()
def importance_bounds(
    model, guide, x, mask=None, num_samples=1, chunk_size=None, max_frames=None
):
    """
    Per-sequence ELBO and importance-weighted bound from ``num_samples`` guide
    samples, in chunks (see :func:`log_importance_weights`) with a running
    mean and log-sum-exp, so that memory is bounded by the chunk, not by
    ``num_samples`` (thousands of samples per sequence are fine).

    .. math::

        \\mathrm{ELBO}_b = \\frac{1}{K} \\sum_{k=1}^{K} \\log w_b^{(k)}, \\qquad
        \\mathrm{IWAE}_b = \\log \\frac{1}{K} \\sum_{k=1}^{K} w_b^{(k)}.

    :returns: dict ``{"elbo": [batch], "iwae": [batch]}`` in nats (log-likelihood
        bounds, higher is better).
    """
    total, running = 0.0, None
    for log_w in _chunks(model, guide, x, mask, num_samples, chunk_size, max_frames):
        total = total + log_w.sum(0)  # [batch]
        lse = torch.logsumexp(log_w, 0)  # [batch]
        running = lse if running is None else torch.logaddexp(running, lse)
    return {"elbo": total / num_samples, "iwae": running - math.log(num_samples)}


def iwae_log_likelihood(
    model, guide, x, mask=None, num_samples=1, chunk_size=None, max_frames=None
):
    """The importance-weighted bound of :func:`importance_bounds` alone, ``[batch]``."""
    return importance_bounds(model, guide, x, mask, num_samples, chunk_size, max_frames)["iwae"]


def normalise(log_likelihoods, lengths):
    """
    Negative log-likelihood under the three conventions.

    :param torch.Tensor log_likelihoods: ``[num_sequences]`` per-sequence bounds (nats).
    :param torch.Tensor lengths: ``[num_sequences]`` frames per sequence.
    :returns: dict with ``total`` (total nats / total frames), ``seq_mean``
        (mean of per-sequence nats per frame) and ``per_sequence`` (total nats /
        number of sequences).
    """
    ll = log_likelihoods.double()
    lengths = lengths.double()
    return {
        "total": float(-ll.sum() / lengths.sum()),
        "seq_mean": float((-ll / lengths).mean()),
        "per_sequence": float(-ll.mean()),
    }


def fivo_bounds(model, guide, x, mask, num_particles, max_frames=None, resample="ess", threshold=0.5):
    """
    FIVO estimates :math:`\\log \\hat p(x_b)` of a batch, ``[batch]``, without
    gradients. The particles of one sequence stay together (resampling couples
    them), so memory is bounded by running groups of sequences:
    ``num_particles * group * time <= max_frames`` (at least one sequence).

    :param model: a model implementing the step protocol (``DESIGN.md``).
    :param int num_particles: :math:`K`.
    """
    from pyro_seq.fivo import fivo_log_likelihood

    _check_num("num_particles", num_particles)
    batch, time, mask = check_inputs(model, x, mask)
    max_frames = DEFAULT_MAX_FRAMES if max_frames is None else check_int("max_frames", max_frames, 1)
    group = max(1, max_frames // (num_particles * time))
    out = []
    with torch.no_grad():
        for i in range(0, batch, group):
            out.append(
                fivo_log_likelihood(
                    model, guide, x[i : i + group], mask[i : i + group], num_particles, resample, threshold
                )
            )
    return torch.cat(out)  # [batch]


def evaluate(model, guide, batches, num_samples=1, chunk_size=None, max_frames=None, fivo_particles=None):
    """
    ELBO and importance-sampled bounds (and optionally FIVO) over a data split.

    :param batches: iterable of :class:`~pyro_seq.data.SequenceBatch` (``x``, ``mask``).
    :param int num_samples: :math:`K` guide samples per sequence.
    :param int max_frames: bound on frames per pass (see :func:`importance_bounds`).
    :param int fivo_particles: if given, also the FIVO bound with this many particles
        (:func:`fivo_bounds`; the model and guide must implement the step protocol).
    :returns: dict ``{"elbo": {...}, "iwae": {...}, ["fivo": {...},] "num_samples",
        ["fivo_particles",] "num_sequences", "num_frames"}``; each bound holds negative
        log-likelihoods, ``total`` and ``seq_mean`` in nats per frame and
        ``per_sequence`` in nats per sequence (see :func:`normalise`).
    """
    check_int("num_samples", num_samples, 1)
    if fivo_particles is not None:
        check_int("fivo_particles", fivo_particles, 1)
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    elbos, iwaes, fivos, lengths = [], [], [], []
    try:
        for batch in batches:
            x, mask = batch[0], batch[1]
            bounds = importance_bounds(model, guide, x, mask, num_samples, chunk_size, max_frames)
            elbos.append(bounds["elbo"].cpu())
            iwaes.append(bounds["iwae"].cpu())
            if fivo_particles:
                fivos.append(fivo_bounds(model, guide, x, mask, fivo_particles, max_frames).cpu())
            if mask is not None:
                lengths.append(mask.reshape(mask.shape[0], -1).sum(-1).cpu())
            else:  # 2-D images [batch, x_dim] are one frame each
                lengths.append(torch.full((x.shape[0],), x.shape[1] if x.dim() == 3 else 1))
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    if not lengths:
        raise ValueError("evaluate() got no batches")
    elbo, iwae, lengths = torch.cat(elbos), torch.cat(iwaes), torch.cat(lengths)
    result = {
        "elbo": normalise(elbo, lengths),
        "iwae": normalise(iwae, lengths),
        "num_samples": num_samples,
        "num_sequences": int(lengths.numel()),
        "num_frames": int(lengths.sum()),
    }
    if fivo_particles:
        result["fivo"] = normalise(torch.cat(fivos), lengths)
        result["fivo_particles"] = int(fivo_particles)
    return result


@torch.no_grad()
def streaming_elbo(model, guide, sequences: Sequence, batch_size: int, chunk_length: int, device=None) -> Dict[str, object]:
    """
    Per-sequence ELBO of whole sequences evaluated chunk by chunk with carried state (one guide
    sample per sequence), in memory that does not grow with sequence length.

    :returns: dict with ``elbo`` (:func:`~pyro_seq.bounds.normalise` of the negative bound:
        ``total``, ``seq_mean``, ``per_sequence``), ``log_likelihoods [num_sequences]`` (nats,
        in the order of ``sequences``), ``num_sequences`` and ``num_frames``.
    """
    like = module_tensor(model)
    dtype = torch.float32 if like is None else like.dtype
    batches = streaming.StreamBatches(sequences, batch_size, chunk_length, shuffle=False, dtype=dtype)
    totals = torch.zeros(len(batches.sequences), dtype=torch.float64)
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    try:
        for batch in batches:
            if device is not None:
                batch = batch.to(device)
            log_w, _ = trace_log_weights(model, guide, batch.x, batch.mask, batch.carry)  # [batch]
            totals.index_add_(0, batch.sequence_index, log_w.double().cpu())
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    lengths = torch.tensor([len(s) for s in batches.sequences])
    return {
        "elbo": normalise(totals, lengths),
        "log_likelihoods": totals,
        "num_sequences": len(batches.sequences),
        "num_frames": int(lengths.sum()),
    }
