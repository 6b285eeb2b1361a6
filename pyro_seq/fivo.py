r"""
Filtering variational objectives (FIVO): a particle filter over the
sequential step protocol of ``DESIGN.md``, with the guide as proposal.

With :math:`K` particles per sequence, proposals
:math:`z_t^{(k)} \sim q(z_t \mid z_{t-1}^{(k)}, x)` and incremental weights

.. math::

    \alpha_t^{(k)} = \frac{p(z_t^{(k)} \mid z_{t-1}^{(k)}, x_{<t})\,
                           p(x_t \mid z_t^{(k)}, x_{<t})}
                          {q(z_t^{(k)} \mid z_{t-1}^{(k)}, x)},

the particle filter's estimate of the marginal likelihood is unbiased,
:math:`\mathbb{E}[\hat p(x)] = p(x)`, so :math:`\log \hat p(x)` is a lower
bound on :math:`\log p(x)` in expectation (Jensen):

.. math::

    \log \hat p(x_{1:T}) = \sum_{e} \log \frac{1}{K} \sum_{k=1}^{K}
        \prod_{t \in e} \alpha_t^{(k)},

the sum over the epochs :math:`e` between two resampling steps. Without
resampling it is the importance-weighted bound of :mod:`pyro_seq.bounds`
(one epoch); with it, the variance grows linearly rather than exponentially
with :math:`T`. Resampling is multinomial, per sequence within its own
:math:`K` particles, after step :math:`t` when the effective sample size
:math:`\mathrm{ESS} = (\sum_k w_k)^2 / \sum_k w_k^2` falls below
``threshold * K`` (``resample="ess"``), always (``"always"``) or never
(``"never"``). Padded steps (``mask`` False) add nothing and never resample,
nor does the last real step of a sequence (it would not change the estimate).

As a training objective (:class:`FIVOLoss`) the gradient flows through the
reparameterised proposals and the weights, not through the resampling
indices (the score-function term of resampling is dropped, as in [1]).

**References**

[1] Chris J. Maddison, Dieterich Lawson, George Tucker, Nicolas Heess,
    Mohammad Norouzi, Andriy Mnih, Arnaud Doucet, Yee Whye Teh,
    "Filtering Variational Objectives", NIPS 2017, arXiv:1705.09279.
[2] Tuan Anh Le, Maximilian Igl, Tom Rainforth, Tom Jin, Frank Wood,
    "Auto-Encoding Sequential Monte Carlo", ICLR 2018, arXiv:1705.10306.
[3] Christian A. Naesseth, Scott W. Linderman, Rajesh Ranganath, David M. Blei,
    "Variational Sequential Monte Carlo", AISTATS 2018, arXiv:1705.11140.
"""

import math
from typing import NamedTuple

import torch

from pyro_seq.bounds import ParticleLoss

RESAMPLE_KINDS = ("ess", "always", "never")


# ------------------------------------------------------------------- maths


def log_mean_exp(log_w):
    """:math:`\\log \\frac1K \\sum_k e^{\\log w_k}` over dim 0: ``[K, batch] -> [batch]``."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def effective_sample_size(log_w):
    r"""
    :math:`\mathrm{ESS} = \big(\sum_k w_k\big)^2 / \sum_k w_k^2` over dim 0.

    :param torch.Tensor log_w: ``[K, batch]``
    :returns: ``[batch]``, between 1 and ``K``.
    """
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


def ancestor_indices(log_w, resample):
    """
    Multinomial ancestors for the sequences that resample, the identity for the others.

    :param torch.Tensor log_w: ``[K, batch]`` (detached) log weights.
    :param torch.Tensor resample: ``[batch]`` bool.
    :returns: ``[K * batch]`` row indices into the particle-major repeated batch
        (row ``k * batch + b``), each within its own sequence ``b``.
    """
    num_particles, batch = log_w.shape
    probs = torch.softmax(log_w, 0).T  # [batch, K]
    drawn = torch.multinomial(probs, num_particles, replacement=True).T  # [K, batch]
    same = torch.arange(num_particles, device=log_w.device).unsqueeze(-1)  # [K, 1]
    parents = torch.where(resample, drawn, same)  # [K, batch]
    return (parents * batch + torch.arange(batch, device=log_w.device)).reshape(-1)  # [K * batch]


def gather_state(state, index):
    """Select rows ``index`` of every tensor of a state dict (the resampling step)."""
    return {name: value.index_select(0, index) for name, value in state.items()}


# ---------------------------------------------------------- particle filter


class ParticleFilterResult(NamedTuple):
    """What :func:`particle_filter` returns (all ``[batch]``)."""

    #: :math:`\log \hat p(x)` per sequence (differentiable).
    log_likelihood: torch.Tensor
    #: number of resampling steps per sequence.
    num_resampled: torch.Tensor


def particle_filter(model, guide, x, mask=None, num_particles=1, resample="ess", threshold=0.5):
    """
    Run the particle filter (see the module docstring) and return its estimate.

    :param model: implements ``filter_context``, ``filter_init``, ``filter_step``.
    :param guide: implements ``filter_context``, ``filter_init``, ``filter_step``.
    :param torch.Tensor x: ``[batch, time, x_dim]``
    :param torch.Tensor mask: ``[batch, time]`` bool prefix mask.
    :param int num_particles: :math:`K`.
    :param str resample: ``"ess"``, ``"always"`` or ``"never"`` (``None`` means ``"never"``).
    :param float threshold: resample when :math:`\\mathrm{ESS} / K` is below it (``"ess"``).
    :rtype: ParticleFilterResult
    """
    resample = "never" if resample is None else resample
    if resample not in RESAMPLE_KINDS:
        raise ValueError(f"resample must be one of {RESAMPLE_KINDS}, got {resample!r}")
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    x, mask, _ = model.check(x, mask)
    k = num_particles
    batch, time = mask.shape
    xk = x.repeat(k, 1, 1)  # [k * batch, time, x_dim]: row k' * batch + b
    mk = mask.repeat(k, 1)  # [k * batch, time]
    ctx = model.filter_context(xk, mk)
    gctx = guide.filter_context(xk, mk, ctx)
    state, gstate = model.filter_init(ctx), guide.filter_init(gctx)
    log_w = x.new_zeros(k, batch)  # log weights since the last resampling
    log_z = x.new_zeros(batch)  # log p-hat of the finished epochs
    num_resampled = torch.zeros(batch, dtype=torch.long, device=x.device)
    for t in range(time):
        z_t, log_q, gstate = guide.filter_step(gctx, gstate, t, model_state=state)
        log_p, state = model.filter_step(ctx, state, t, z_t)
        increment = (log_p - log_q).reshape(k, batch)  # [k, batch]
        log_w = log_w + increment.masked_fill(~mask[:, t], 0.0)
        if resample == "never" or t + 1 == time:
            continue
        do = mask[:, t + 1]  # [batch]: a real step follows
        if resample == "ess":
            do = do & (effective_sample_size(log_w.detach()) < threshold * k)
        if not bool(do.any()):
            continue
        log_z = log_z + log_mean_exp(log_w).masked_fill(~do, 0.0)
        index = ancestor_indices(log_w.detach(), do)  # [k * batch]
        state, gstate = gather_state(state, index), gather_state(gstate, index)
        log_w = log_w.masked_fill(do, 0.0)
        num_resampled = num_resampled + do.long()
    return ParticleFilterResult(log_z + log_mean_exp(log_w), num_resampled)


def protocol_log_weight(model, guide, x, mask, z):
    """
    :math:`\\log p(x, z) - \\log q(z \\mid x)` of a given path through the step
    protocol (the guide scores ``z`` instead of sampling), ``[batch]``; equal
    to the log weight of a Pyro trace with the same path (the tests check it).

    :param torch.Tensor z: ``[batch, time, z_dim]``
    """
    x, mask, _ = model.check(x, mask)
    ctx = model.filter_context(x, mask)
    gctx = guide.filter_context(x, mask, ctx)
    state, gstate = model.filter_init(ctx), guide.filter_init(gctx)
    total = x.new_zeros(x.shape[0])  # [batch]
    for t in range(x.shape[1]):
        z_t, log_q, gstate = guide.filter_step(gctx, gstate, t, model_state=state, value=z[:, t])
        log_p, state = model.filter_step(ctx, state, t, z_t)
        total = total + (log_p - log_q).masked_fill(~mask[:, t], 0.0)
    return total


def fivo_log_likelihood(model, guide, x, mask=None, num_particles=1, resample="ess", threshold=0.5):
    """
    The FIVO estimate :math:`\\log \\hat p(x)` of each sequence, ``[batch]``
    (differentiable; wrap in :func:`torch.no_grad` to evaluate). See
    :func:`particle_filter` for the arguments.
    """
    return particle_filter(model, guide, x, mask, num_particles, resample, threshold).log_likelihood


class FIVOLoss(ParticleLoss):
    r"""
    The filtering variational objective as a training loss:
    :math:`-\sum_b \log \hat p_K(x_b)` from :func:`particle_filter`, for
    :class:`~pyro_seq.trainer.Trainer` (or :class:`~pyro.infer.SVI`), on any
    model and guide implementing the sequential step protocol.

    Gradients flow through the reparameterised proposals and the weights, none
    through the resampling indices (Maddison et al. 2017). The parameters are
    registered with Pyro by the protocol methods (``pyro_method``), so the
    trainer's parameter capture sees them. ``last_terms`` holds detached sums
    over the batch: ``fivo`` (the bound) and ``resampling_steps``; ``step`` is
    set by the trainer (unused) and ``beta`` is always 1.

    :param int num_particles: :math:`K`.
    :param str resample: ``"ess"``, ``"always"`` or ``"never"``.
    :param float threshold: relative ESS below which to resample.

    **References**

    [1] Chris J. Maddison et al., "Filtering Variational Objectives",
        NIPS 2017, arXiv:1705.09279.
    """

    def __init__(self, num_particles=4, resample="ess", threshold=0.5):
        super().__init__(num_particles)
        if resample is not None and resample not in RESAMPLE_KINDS:
            raise ValueError(f"resample must be one of {RESAMPLE_KINDS}, got {resample!r}")
        self.resample, self.threshold = resample, threshold

    def differentiable_loss(self, model, guide, x, mask=None):
        """:math:`-\\sum_b \\log \\hat p(x_b)`, differentiable."""
        result = particle_filter(
            model, guide, x, mask, self.num_particles, self.resample, self.threshold
        )
        self.last_terms = {
            "fivo": result.log_likelihood.detach().sum(),
            "resampling_steps": result.num_resampled.sum().to(x.dtype),
        }
        return -result.log_likelihood.sum()
