r"""
Particle objectives: the importance-weighted bound (IWAE) and the filtering variational objective
(FIVO) as training losses, and the machinery both evaluation modules use (:mod:`pyro_seq.bounds`,
:mod:`pyro_seq.fivo`): per-sequence log importance weights of a Pyro trace, and a particle filter
over the sequential step protocol.

IWAE (Burda et al. 2016) with :math:`K` guide samples per sequence:

.. math::

    \mathcal{L}_K(x) = \mathbb{E}_{z^{(1:K)} \sim q}\Big[\log \frac{1}{K} \sum_{k=1}^{K}
        \frac{p(x, z^{(k)})}{q(z^{(k)} \mid x)}\Big].
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

[4] Yuri Burda, Roger Grosse, Ruslan Salakhutdinov, "Importance Weighted
    Autoencoders", ICLR 2016, arXiv:1509.00519.
"""

import math
from typing import NamedTuple

import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from pyro_seq.util import check_batch

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


def _per_sequence_log_prob(trace, batch, observed=None):
    """
    Sum over the sample sites of a trace (with ``log_prob`` computed) of each
    sequence's log density, ``[batch]``; ``observed`` keeps only the observed
    (True) or latent (False) sites.
    """
    total = 0.0
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        if observed is not None and bool(site["is_observed"]) != observed:
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


def trace_log_weights(model, guide, x, mask, *args):
    """
    One guide sample per row and its log importance weight (differentiable).

    :param torch.Tensor x: ``[rows, time, x_dim]``
    :param torch.Tensor mask: ``[rows, time]``
    :param args: further arguments of the model and guide (e.g. a
        :class:`~pyro_seq.data.streaming.StreamCarry`).
    :returns: ``(log_w, log_likelihood)``, each ``[rows]``:
        :math:`\\log p(x, z) - \\log q(z \\mid x)` and its observed part
        :math:`\\log p(x \\mid z)`.
    """
    rows = x.shape[0]
    guide_trace = poutine.trace(guide).get_trace(x, mask, *args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, mask, *args)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_likelihood = _per_sequence_log_prob(model_trace, rows, observed=True)  # [rows]
    log_prior = _per_sequence_log_prob(model_trace, rows, observed=False)  # [rows]
    log_q = _per_sequence_log_prob(guide_trace, rows)  # [rows]
    for name, site in guide_trace.nodes.items():
        if (
            site["type"] == "sample"
            and not site["is_observed"]
            and not site_is_subsample(site)
            and not site["fn"].has_rsample
        ):
            raise NotImplementedError(
                f"guide site {name!r} is not reparameterisable; importance-weighted "
                "gradients need reparameterised guide samples"
            )
    zero = x.new_zeros(rows)  # [rows]: a trace without observed or latent sites
    log_w = zero + log_likelihood + log_prior - log_q  # [rows]
    return log_w, zero + log_likelihood


def check_inputs(model, x, mask=None):
    """
    Validate a batch before it is repeated for several samples or particles:
    :func:`~pyro_seq.util.check_batch` (type, rank, emptiness, ``mask`` shape),
    then the model's own ``check(x, mask)`` where it has one, so that errors name
    the caller's shapes rather than those of the repeated batch.

    :returns: ``(batch, time, mask)`` with ``mask`` all True ``[batch, time]`` if it was
        ``None`` (``time = 1`` for 2-D images ``[batch, x_dim]``).
    :raises TypeError, ValueError: see :func:`~pyro_seq.util.check_batch` and the model.
    """
    batch, time = check_batch(x, mask)
    check = getattr(model, "check", None)
    if callable(check):
        check(x, mask)
    if mask is None:
        mask = torch.ones(batch, time, dtype=torch.bool, device=x.device)
    return batch, time, mask


def repeat_batch(t, k):
    """``t`` stacked ``k`` times along the batch dim (row ``k' * batch + b``), any rank."""
    return t.repeat(k, *([1] * (t.dim() - 1)))


# ------------------------------------------------------------ training losses


def iwae_objective(log_w):
    """
    Per-sequence importance-weighted bound from particle-major log weights.

    :param torch.Tensor log_w: ``[K, batch]``
    :returns: ``[batch]``, :math:`\\log \\frac1K \\sum_k w^{(k)}`.
    """
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


class ParticleLoss:
    """
    Base of the particle objectives (:class:`IWAELoss`, :class:`~pyro_seq.losses.FIVOLoss`):
    the interface :class:`~pyro_seq.training.trainer.Trainer` and :class:`~pyro.infer.SVI` use,
    ``loss``, ``differentiable_loss`` and ``loss_and_grads(model, guide, x, mask)``, around a
    subclass's ``differentiable_loss``. ``step`` is set by the trainer (unused); ``beta`` is 1.

    :param int num_particles: :math:`K`.
    """

    beta = 1.0

    def __init__(self, num_particles):
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        self.num_particles = int(num_particles)
        self.step = 0
        self.last_terms = {}

    def differentiable_loss(self, model, guide, x, mask=None):
        raise NotImplementedError

    def loss(self, model, guide, x, mask=None):
        """The loss as a float, without gradients."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, x, mask))

    def loss_and_grads(self, model, guide, x, mask=None):
        """The loss as a float; accumulates its gradients into the parameters."""
        loss = self.differentiable_loss(model, guide, x, mask)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())


class IWAELoss(ParticleLoss):
    r"""
    The importance-weighted bound (IWAE) as a training objective:

    .. math::

        \mathcal{L}_K(x) = \sum_b \mathbb{E}_{z^{(1:K)}_b \sim q}\Big[
            \log \frac{1}{K} \sum_{k=1}^{K}
            \frac{p(x_b, z^{(k)}_b)}{q(z^{(k)}_b \mid x_b)}\Big],

    a log-mean-exp over the :math:`K` particles *of each sequence* (the batch
    is repeated :math:`K` times, particle-major), then a sum over sequences.
    Pyro's :class:`~pyro.infer.RenyiELBO` with :math:`\alpha = 0` instead takes
    the log-mean-exp of the weights of the whole batch, a looser bound on
    :math:`\sum_b \log p(x_b)`. With ``num_particles=1`` this is the ELBO
    exactly (same value and gradients as :class:`~pyro.infer.Trace_ELBO` for the
    same random numbers). Gradients use the reparameterised guide samples
    (every latent guide site must have ``rsample``).

    The interface is what :class:`~pyro_seq.training.trainer.Trainer` and
    :class:`~pyro.infer.SVI` use: ``loss``, ``differentiable_loss`` and
    ``loss_and_grads(model, guide, x, mask)``; ``step`` is set by the trainer
    (unused), and ``last_terms`` holds detached sums over the batch of the
    particle-averaged ``log_likelihood`` and ``kl`` (their difference is the
    ELBO), the ``iwae`` bound itself and ``beta`` (always 1).

    :param int num_particles: :math:`K`.

    **References**

    [1] Yuri Burda, Roger Grosse, Ruslan Salakhutdinov, "Importance Weighted
        Autoencoders", ICLR 2016, arXiv:1509.00519.
    """

    def __init__(self, num_particles=2):
        super().__init__(num_particles)

    def differentiable_loss(self, model, guide, x, mask=None):
        """:math:`-\\mathcal{L}_K`, summed over the batch, differentiable."""
        batch, _, mask = check_inputs(model, x, mask)
        k = self.num_particles
        xk = repeat_batch(x, k)  # [k * batch, time, x_dim]
        mk = repeat_batch(mask, k)  # [k * batch, time]
        log_w, log_likelihood = trace_log_weights(model, guide, xk, mk)  # [k * batch]
        bound = iwae_objective(log_w.reshape(k, batch))  # [batch]
        log_likelihood = log_likelihood.detach().reshape(k, batch).mean(0).sum()
        elbo = log_w.detach().reshape(k, batch).mean(0).sum()
        self.last_terms = {
            "log_likelihood": log_likelihood,
            "kl": log_likelihood - elbo,
            "iwae": bound.detach().sum(),
            "beta": 1.0,
        }
        return -bound.sum()


class FIVOLoss(ParticleLoss):
    r"""
    The filtering variational objective as a training loss:
    :math:`-\sum_b \log \hat p_K(x_b)` from :func:`particle_filter`, for
    :class:`~pyro_seq.training.trainer.Trainer` (or :class:`~pyro.infer.SVI`), on any
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
