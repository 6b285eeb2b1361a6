r"""
Particle objectives: the importance-weighted bound (:class:`IWAE_ELBO`) and the filtering
variational objective (:class:`FIVO_ELBO`) as :class:`pyro.infer.ELBO` subclasses, usable as
``SVI(model, guide, optim, loss=IWAE_ELBO(num_particles=5))``, and the machinery both evaluation
modules use (:mod:`pyro_seq.bounds`, :mod:`pyro_seq.fivo`): per-sequence log importance weights of
a Pyro trace, and particle filters over the two sequential protocols (the built-in models'
``filter_context``/``filter_init``/``filter_step``, and Pyro's :class:`~pyro.infer.SMCFilter`
protocol ``init(state, ...)``/``step(state, ...)`` of :class:`SequentialModel` and
:class:`SequentialGuide`).

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

As a training objective (:class:`FIVO_ELBO`) the gradient flows through the
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

import inspect
import math
import warnings
import weakref
from contextlib import contextmanager
from typing import NamedTuple, Optional

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.elbo import ELBO
from pyro.infer.smcfilter import SMCState
from pyro.poutine.util import site_is_subsample

from pyro_seq.util import check_batch, check_int, check_probability

#: Resampling rules of the particle filters: ``"ess"`` (when the effective sample size falls below
#: ``threshold`` times the particle count), ``"always"`` or ``"never"`` (the latter is the IWAE bound).
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


def _check_filter_args(resample, num_particles, threshold=0.5):
    """The resampling rule (``None`` means ``"never"``), checked with the particle count and the
    relative ESS threshold (in ``[0, 1]``)."""
    resample = "never" if resample is None else resample
    if resample not in RESAMPLE_KINDS:
        raise ValueError(f"resample must be one of {RESAMPLE_KINDS}, got {resample!r}")
    check_int("num_particles", num_particles, 1)
    check_probability("threshold", threshold)
    return resample


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
    resample = _check_filter_args(resample, num_particles, threshold)
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


def _sequence_log_prob(name, site, batch):
    """One site's log density per sequence, ``[batch]``: a scalar (a site outside the batch plate) is
    spread evenly over the sequences."""
    log_p = site["log_prob"]
    if log_p.dim() == 0:
        return log_p.expand(batch) / batch
    if log_p.shape != (batch,):
        raise ValueError(
            f"site {name!r} has log_prob shape {tuple(log_p.shape)}; "
            f"expected [batch] = [{batch}] (one value per sequence in the plate)"
        )
    return log_p


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
        total = total + _sequence_log_prob(name, site, batch)
    return total


def _check_reparameterised(guide_trace):
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


def _replayed_traces(model, guide, args, kwargs):
    """A guide trace and the model replayed on it, both called with ``(*args, **kwargs)``."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return guide_trace, model_trace


def _rows_log_weights(model_trace, guide_trace, rows, like):
    """``(log_w, log_likelihood)``, each ``[rows]``, of a replayed pair whose sites have one log
    density per row (or a scalar); ``like`` gives the dtype and device of the zeros."""
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_likelihood = _per_sequence_log_prob(model_trace, rows, observed=True)  # [rows]
    log_prior = _per_sequence_log_prob(model_trace, rows, observed=False)  # [rows]
    log_q = _per_sequence_log_prob(guide_trace, rows)  # [rows]
    _check_reparameterised(guide_trace)
    zero = like.new_zeros(rows)  # [rows]: a trace without observed or latent sites
    log_w = zero + log_likelihood + log_prior - log_q  # [rows]
    return log_w, zero + log_likelihood


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
    guide_trace, model_trace = _replayed_traces(model, guide, (x, mask) + args, {})
    return _rows_log_weights(model_trace, guide_trace, x.shape[0], x)


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


# ------------------------------------------- log weights of general (user) models


def _site_rows(site, lead):
    """
    A site's log density per row of its rightmost plate: ``[*lead, n]``, where the ``lead``
    leading dims are particles and ``n`` is the size of the rightmost batch dim (1 for a site
    outside every plate); the dims between are summed.
    """
    log_p = site["log_prob"]
    if log_p.dim() <= lead:
        return log_p.unsqueeze(-1)  # [*lead, 1]
    shape = log_p.shape
    return log_p.reshape(*shape[:lead], -1, shape[-1]).sum(lead)  # [*lead, n]


def _sum_rows(entries, lead_shape, batch, like):
    """
    Sum ``(name, rows)`` entries of shape ``[*lead, n]`` into ``[*lead, batch]``: ``n`` is the
    batch size, or 1 for a site outside the batch plate (spread evenly over the sequences).
    """
    total = like.new_zeros(tuple(lead_shape) + (batch,))  # [*lead, batch]
    for name, rows in entries:
        n = rows.shape[-1]
        if n == batch:
            total = total + rows
        elif n == 1:
            total = total + rows / batch
        else:
            raise ValueError(
                f"site {name!r} has {n} rows in its rightmost batch dim, but the batch has {batch}; "
                "put every site inside the batch plate (the rightmost dim) or outside every plate"
            )
    return total


def _general_log_weights(model_trace, guide_trace, lead):
    """
    ``(log_w, log_likelihood)``, each ``[*lead, batch]`` (``lead`` = 0 or 1 leading particle
    dims), of a replayed pair: all model sites minus all guide sites, per row of the rightmost
    batch dim (the batch size is the largest such dim over the sites; 1 without a batch plate).
    """
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    _check_reparameterised(guide_trace)
    model_rows, guide_rows = [], []
    for trace, out in ((model_trace, model_rows), (guide_trace, guide_rows)):
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and not site_is_subsample(site):
                out.append((name, bool(site["is_observed"]), _site_rows(site, lead)))
    every = model_rows + guide_rows
    if not every:
        raise ValueError("the model and guide have no sample sites: there is nothing to weight")
    like = every[0][2]
    lead_shape = like.shape[:lead]
    batch = max(rows.shape[-1] for _, _, rows in every)
    log_p = _sum_rows([(n, r) for n, _, r in model_rows], lead_shape, batch, like)  # [*lead, batch]
    log_likelihood = _sum_rows([(n, r) for n, o, r in model_rows if o], lead_shape, batch, like)
    log_q = _sum_rows([(n, r) for n, _, r in guide_rows], lead_shape, batch, like)  # [*lead, batch]
    return log_p - log_q, log_likelihood


def _checks_sequences(model):
    """Whether ``model`` has the pyro_seq sequence-model check, ``check(x, mask=None)``."""
    check = getattr(model, "check", None)
    if not callable(check):
        return False
    try:
        names = list(inspect.signature(check).parameters)
    except (TypeError, ValueError):
        return False
    return names[:2] == ["x", "mask"]


def _sequence_arguments(model, args, kwargs):
    """
    For a model with the pyro_seq ``check(x, mask)`` convention (the sequence models): validate
    ``(x, mask)`` with :func:`check_inputs` (so errors name the caller's shapes rather than the
    repeated batch's) and fill in an all-True mask; other models' arguments pass unchanged.
    """
    if not args or not _checks_sequences(model):
        return args, kwargs
    x, rest, kwargs = args[0], args[2:], dict(kwargs)
    mask = args[1] if len(args) > 1 else kwargs.pop("mask", None)
    _, _, mask = check_inputs(model, x, mask)
    return (x, mask) + tuple(rest), kwargs


def _is_non_amortised(guide):
    """Whether ``guide`` is one of Pyro's autoguides, whose site shapes are fixed by the batch they
    were first called on (an autoguide that declares ``amortised = True``, such as
    :class:`~pyro_seq.guides.AutoSequenceSmoother`, serves any batch)."""
    from pyro.infer.autoguide import AutoGuide

    return isinstance(guide, AutoGuide) and not getattr(guide, "amortised", False)


# --------------------------------------------- the step protocol against the trace


class StepProtocolError(ValueError):
    """The sequential step protocol of a model or guide scores a path differently from its Pyro
    trace (see :func:`check_step_protocol`)."""


@contextmanager
def _side_effect_free(*modules):
    """
    Eval mode (no dropout, no batch-norm update), no gradients, no sites seen by outer handlers,
    and the caller's torch random state restored afterwards.
    """
    flags = [(m, m.training) for module in modules if isinstance(module, torch.nn.Module) for m in module.modules()]
    devices = sorted(
        {p.device.index or 0 for module in modules if isinstance(module, torch.nn.Module) for p in module.parameters() if p.is_cuda}
    )
    with torch.random.fork_rng(devices=devices), torch.no_grad(), poutine.block():
        for m, _ in flags:
            m.training = False
        try:
            yield
        finally:
            for m, training in flags:
                m.training = training


def _protocol_terms(model, guide, x, mask, z):
    """The step protocol's ``(log_p, log_q)`` of a given path, each ``[time, batch]`` (0 on padded steps)."""
    ctx = model.filter_context(x, mask)
    gctx = guide.filter_context(x, mask, ctx)
    state, gstate = model.filter_init(ctx), guide.filter_init(gctx)
    log_ps, log_qs = [], []
    for t in range(x.shape[1]):
        z_t, log_q, gstate = guide.filter_step(gctx, gstate, t, model_state=state, value=z[:, t])
        log_p, state = model.filter_step(ctx, state, t, z_t)
        log_ps.append(log_p.masked_fill(~mask[:, t], 0.0))  # [batch]
        log_qs.append(log_q.masked_fill(~mask[:, t], 0.0))  # [batch]
    return torch.stack(log_ps), torch.stack(log_qs)  # [time, batch]


def _sites_per_sequence(trace, batch):
    """``{name: [batch]}``: each sample site's log density per sequence (traces with log probs)."""
    return {
        name: _sequence_log_prob(name, site, batch)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }


def _tolerance(reference):
    """What counts as agreement with ``reference`` (per element): a relative :math:`10\\sqrt{\\epsilon}`."""
    rtol = 10 * math.sqrt(torch.finfo(reference.dtype).eps)
    return rtol * (1 + reference.abs())


def _name_the_site(delta, contributions, tol, part):
    """Which site explains a difference ``delta`` (trace minus protocol) at one step of one sequence."""
    for name, value in contributions.items():
        if abs(value) > tol and abs(delta - value) <= tol:
            return f"{part} leaves out site {name!r} ({value:.6g} nats)"
        if abs(value) > tol and abs(delta + value) <= tol:
            return f"{part} counts site {name!r} twice ({value:.6g} nats)"
    names = ", ".join(repr(n) for n in contributions) or "none"
    return f"{part} differs by {delta:.6g} nats from the trace's sites ({names})"


def _first_model_mismatch(model, guide_trace, x, mask, log_p, batch):
    """
    The first step ``t`` whose running log p differs from the model's trace on the steps up to
    ``t`` (the model is causal: masking the later steps scores the prefix of the same path), with
    the sequence and the sites' contributions at that step.
    """
    time = x.shape[1]
    steps = torch.arange(time, device=mask.device)
    running = log_p.cumsum(0)  # [time, batch]
    memo = {}

    def prefix(t):  # {site: [batch]} of the model trace on the steps <= t
        if t < 0:
            return {}
        if t not in memo:
            m = mask & (steps <= t)  # [batch, time]
            xt = x * m.reshape(*m.shape, *([1] * (x.dim() - 2))).to(x.dtype)  # later frames zeroed
            trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(xt, m)
            trace.compute_log_prob()
            memo[t] = _sites_per_sequence(trace, batch)
        return memo[t]

    def disagreeing(t):  # [batch] bool
        total = sum(prefix(t).values(), x.new_zeros(batch))
        return (total - running[t]).abs() > _tolerance(total)

    lo, hi = 0, time - 1  # the whole sequence disagrees
    while lo < hi:
        mid = (lo + hi) // 2
        if bool(disagreeing(mid).any()):
            hi = mid
        else:
            lo = mid + 1
    t = lo
    b = int(disagreeing(t).nonzero()[0, 0])
    now, before = prefix(t), prefix(t - 1)
    contributions = {name: float(now[name][b] - before.get(name, now[name].new_zeros(batch))[b]) for name in now}
    trace_step = sum(contributions.values())
    protocol_step = float(log_p[t, b])
    return t, b, trace_step - protocol_step, contributions, float(_tolerance(torch.tensor(abs(trace_step), dtype=x.dtype)))


def check_step_protocol(model, guide, x, mask=None):
    """
    Check a model and guide's sequential step protocol (``filter_context``, ``filter_init``,
    ``filter_step``) against their Pyro ``forward`` on one batch: the guide draws a path (its
    return value, ``[batch, time, z_dim]``), the model is replayed on it, and the protocol scores
    the same path (:func:`protocol_log_weight`); the model's and the guide's parts must agree
    with the trace's (:func:`trace_log_weights`) to a relative :math:`10\\sqrt{\\epsilon}`.

    The check has no side effects: it runs in eval mode without gradients, hides its sites from
    outer handlers and restores the random state, so the caller's next draws are unchanged.
    :class:`FIVO_ELBO` runs it on the first batch of each model and guide pair.

    :param torch.Tensor x: ``[batch, time, x_dim]``
    :param torch.Tensor mask: ``[batch, time]`` bool prefix mask.
    :returns: the largest difference (nats) between the protocol's and the trace's log weights.
    :raises StepProtocolError: naming the first step ``t`` whose ``log p`` differs from the model's
        trace and the site that explains it (e.g. a ``filter_step`` that leaves out the emission
        site ``"x"``), or the guide sites whose ``log q`` differs.
    """
    with _side_effect_free(model, guide):
        x, mask, _ = model.check(x, mask)
        batch = x.shape[0]
        guide_trace, model_trace = _replayed_traces(model, guide, (x, mask), {})
        z = guide_trace.nodes["_RETURN"]["value"]
        if not (torch.is_tensor(z) and z.dim() >= 2 and tuple(z.shape[:2]) == tuple(x.shape[:2])):
            raise StepProtocolError(
                f"the step-protocol check needs {type(guide).__name__}.forward to return the latent path "
                f"[batch, time, ...] = [{batch}, {x.shape[1]}, ...], got "
                f"{tuple(z.shape) if torch.is_tensor(z) else type(z).__name__} (pass check_protocol=False to skip it)"
            )
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
        model_sites = _sites_per_sequence(model_trace, batch)
        guide_sites = _sites_per_sequence(guide_trace, batch)
        log_p, log_q = _protocol_terms(model, guide, x, mask, z)  # [time, batch]
        trace_p = sum(model_sites.values(), x.new_zeros(batch))  # [batch]
        trace_q = sum(guide_sites.values(), x.new_zeros(batch))  # [batch]
        diff_p, diff_q = trace_p - log_p.sum(0), trace_q - log_q.sum(0)  # [batch]
        if bool((diff_p.abs() > _tolerance(trace_p)).any()):
            t, b, delta, contributions, tol = _first_model_mismatch(model, guide_trace, x, mask, log_p, batch)
            what = _name_the_site(delta, contributions, tol, f"{type(model).__name__}.filter_step's log p")
            raise StepProtocolError(
                f"the step protocol disagrees with the Pyro trace at step t={t} of sequence {b}: {what}"
            )
        bad_q = diff_q.abs() > _tolerance(trace_q)
        if bool(bad_q.any()):
            b = int(bad_q.nonzero()[0, 0])
            contributions = {name: float(value[b]) for name, value in guide_sites.items()}
            what = _name_the_site(
                float(diff_q[b]), contributions, float(_tolerance(trace_q[b])), f"{type(guide).__name__}.filter_step's log q"
            )
            raise StepProtocolError(
                f"the step protocol disagrees with the Pyro trace of sequence {b} over the whole sequence "
                f"(a guide's steps cannot be scored apart: it may see the whole sequence): {what}"
            )
        return float(torch.maximum(diff_p.abs(), diff_q.abs()).max())


# ------------------------------------------------------- Pyro's SMC protocol


class SMCStep(NamedTuple):
    """One time step of a batch, as :meth:`SequentialModel.steps` yields it."""

    #: positional arguments of ``model.step(state, *args)`` and ``guide.step(state, *args)``.
    args: tuple
    #: keyword arguments of both.
    kwargs: dict
    #: ``[batch]`` bool, the sequences that have this step (``None``: all of them).
    mask: Optional[torch.Tensor] = None


def sequence_steps(x, mask=None):
    """
    The default cut of a batch into time steps (:meth:`SequentialModel.steps`): step ``t`` gets
    ``(x[:, t], mask[:, t])``.

    :param torch.Tensor x: ``[batch, time, ...]``
    :param torch.Tensor mask: ``[batch, time]`` bool prefix mask, or ``None``.
    """
    for t in range(x.shape[1]):
        m = None if mask is None else mask[:, t]  # [batch]
        yield SMCStep((x[:, t], m), {}, m)


class SequentialModel:
    r"""
    Base of a model in Pyro's sequential Monte Carlo protocol, the one
    :class:`pyro.infer.SMCFilter` runs, for :class:`FIVO_ELBO`:

    - ``init(state, *args, **kwargs)``: called once with the batch's arguments; may draw initial
      latents with ``pyro.sample`` and writes ``state``;
    - ``step(state, *args, **kwargs)``: called once per time step with that step's arguments
      (see :meth:`steps`); draws :math:`z_t` with ``pyro.sample`` (the guide's site of the same
      name is replayed), observes :math:`x_t` (``obs=``, masked on padded steps) and writes
      ``state``;
    - ``steps(*args, **kwargs)``: cuts the batch's arguments into the steps' arguments
      (:class:`SMCStep`); the default :func:`sequence_steps` gives step ``t`` the arguments
      ``(x[:, t], mask[:, t])`` of a batch ``(x, mask)``.

    Every call runs inside a ``pyro.plate("particles", K, dim=-1 - max_plate_nesting)``: a batch
    of sequences sits in the model's own plate at dim -1, and every ``state`` value has shape
    ``[K, batch, ...]`` (``[K, ...]`` without a batch), so that resampling can pick each
    sequence's ancestors among its own particles. The incremental weight of a step is, as in
    :class:`~pyro.infer.SMCFilter`, the model's log density of the guide's sites minus the
    guide's, plus the model's observed sites, per sequence.

    Subclasses keep the time index themselves if they need it (as Pyro's SMC examples do), or
    pass it through :meth:`steps`. The built-in models implement the faster functional protocol
    (``filter_context``, ``filter_init``, ``filter_step``, scored without Pyro traces);
    :class:`FIVO_ELBO` takes either.
    """

    def init(self, state, *args, **kwargs):
        """Initial draws and state (nothing by default)."""

    def step(self, state, *args, **kwargs):
        """One time step: ``pyro.sample`` the latent and observe the frame; write ``state``."""
        raise NotImplementedError(f"{type(self).__name__} must implement step(state, *args, **kwargs)")

    def steps(self, *args, **kwargs):
        """The per-step arguments of a batch: an iterable of :class:`SMCStep`."""
        return sequence_steps(*args, **kwargs)


class SequentialGuide:
    """
    Base of a guide (the proposal) in Pyro's sequential Monte Carlo protocol (see
    :class:`SequentialModel`): ``init(state, *args, **kwargs)`` and ``step(state, *args,
    **kwargs)`` draw reparameterised ``pyro.sample`` sites named as the model's latents, reading
    ``state`` but never writing it (the model writes it). A guide that smooths (looks at the
    future) computes its summaries in :meth:`init`, from the whole batch.
    """

    def init(self, state, *args, **kwargs):
        """Initial draws (nothing by default)."""

    def step(self, state, *args, **kwargs):
        """Draw this step's latents."""
        raise NotImplementedError(f"{type(self).__name__} must implement step(state, *args, **kwargs)")


class ParticleState(SMCState):
    """The ``state`` of :func:`smc_particle_filter`: Pyro's :class:`~pyro.infer.smcfilter.SMCState`
    (guides may only read it; every value has ``num_particles`` rows)."""

    @property
    def num_particles(self):
        return self._num_particles


def _has_filter_protocol(obj):
    return all(callable(getattr(obj, n, None)) for n in ("filter_context", "filter_init", "filter_step"))


def _has_smc_protocol(obj):
    return all(callable(getattr(obj, n, None)) for n in ("init", "step"))


def _smc_increment(model_fn, guide_fn, state, plate, args, kwargs, where):
    """One step's incremental log weight, ``[K, batch or 1]``, as :class:`~pyro.infer.SMCFilter`
    weighs it: the model's minus the guide's log density of the guide's sites, plus the model's
    observed sites."""
    with poutine.block(hide_types=["sample"]), plate:
        with state._lock():
            guide_trace = poutine.trace(guide_fn).get_trace(state, *args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(state, *args, **kwargs)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    _check_reparameterised(guide_trace)
    entries = []
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        if name not in model_trace.nodes:
            raise ValueError(f"guide site {name!r} of {where} has no model site of that name")
        entries.append((name, _site_rows(model_trace.nodes[name], 1) - _site_rows(site, 1)))
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and site["is_observed"] and not site_is_subsample(site):
            entries.append((name, _site_rows(site, 1)))
    if not entries:
        return None
    k = plate.size
    batch = max(rows.shape[-1] for _, rows in entries)
    return _sum_rows(entries, (k,), batch, entries[0][1])  # [K, batch]


def _gather_particles(state, index, num_particles, batch):
    """Resample every state value by the flat particle-major ancestor rows ``index`` ``[K * batch]``."""
    for key, value in list(state.items()):
        if value.dim() >= 2 and value.shape[1] == batch:
            flat = value.reshape(num_particles * batch, *value.shape[2:])  # [K * batch, ...]
            dict.__setitem__(state, key, flat.index_select(0, index).reshape(value.shape))
        elif batch == 1:
            dict.__setitem__(state, key, value.index_select(0, index))  # [K, ...]
        else:
            raise ValueError(
                f"state[{key!r}] has shape {tuple(value.shape)}; with a batch of {batch} sequences every state "
                f"value must have shape [num_particles, batch, ...] = [{num_particles}, {batch}, ...]"
            )


def smc_particle_filter(
    model, guide, *args, num_particles=1, resample="ess", threshold=0.5, max_plate_nesting=1, **kwargs
):
    """
    The FIVO particle filter (see the module docstring) over Pyro's sequential Monte Carlo
    protocol (:class:`SequentialModel`, :class:`SequentialGuide`, or any objects with
    ``init``/``step`` as :class:`~pyro.infer.SMCFilter` uses them), differentiable, with each
    sequence of a batch resampled within its own particles.

    ``model.init`` and ``guide.init`` get ``(*args, **kwargs)``; then, for each
    :class:`SMCStep` of ``model.steps(*args, **kwargs)``, ``guide.step`` and ``model.step`` get
    the step's arguments. A step's weight is 0 for the sequences it masks out; resampling happens
    after a step, never after a sequence's last one (nor after ``init``).

    :param int num_particles: :math:`K`.
    :param str resample: ``"ess"``, ``"always"`` or ``"never"`` (``None`` means ``"never"``).
    :param float threshold: resample when :math:`\\mathrm{ESS} / K` is below it (``"ess"``).
    :param int max_plate_nesting: the model's own plates (1 for a batch of sequences); the
        particle plate goes at dim ``-1 - max_plate_nesting``.
    :rtype: ParticleFilterResult
    """
    resample = _check_filter_args(resample, num_particles, threshold)
    k = int(num_particles)
    cut = getattr(model, "steps", None)
    steps = list(cut(*args, **kwargs) if callable(cut) else sequence_steps(*args, **kwargs))
    if not steps:
        raise ValueError(f"{type(model).__name__}.steps gave no time steps for this batch")
    state = ParticleState(k)
    with poutine.block(hide_types=["sample"]):
        plate = pyro.plate("particles", k, dim=-1 - int(max_plate_nesting))
    log_w = _smc_increment(model.init, guide.init, state, plate, args, kwargs, "init")  # [K, batch] or None
    log_z = num_resampled = None
    for t, step in enumerate(steps):
        increment = _smc_increment(model.step, guide.step, state, plate, step.args, step.kwargs, f"step t={t}")
        if increment is None:
            raise ValueError(f"{type(model).__name__}.step has no sample site at step t={t}: there is nothing to weight")
        if step.mask is not None:
            increment = increment.masked_fill(~step.mask, 0.0)  # [K, batch]
        log_w = increment if log_w is None else log_w + increment  # [K, batch]
        if log_z is None:
            log_z = log_w.new_zeros(log_w.shape[-1])  # [batch]
            num_resampled = torch.zeros(log_w.shape[-1], dtype=torch.long, device=log_w.device)
        if resample == "never" or t + 1 == len(steps):
            continue
        following = steps[t + 1].mask
        do = torch.ones_like(log_z, dtype=torch.bool) if following is None else following.clone()  # [batch]
        if resample == "ess":
            do = do & (effective_sample_size(log_w.detach()) < threshold * k)
        if not bool(do.any()):
            continue
        log_z = log_z + log_mean_exp(log_w).masked_fill(~do, 0.0)
        index = ancestor_indices(log_w.detach(), do)  # [K * batch]
        _gather_particles(state, index, k, log_w.shape[-1])
        log_w = log_w.masked_fill(do, 0.0)
        num_resampled = num_resampled + do.long()
    return ParticleFilterResult(log_z + log_mean_exp(log_w), num_resampled)


# ------------------------------------------------------------ training losses


def iwae_objective(log_w):
    """
    Per-sequence importance-weighted bound from particle-major log weights.

    :param torch.Tensor log_w: ``[K, batch]``
    :returns: ``[batch]``, :math:`\\log \\frac1K \\sum_k w^{(k)}`.
    """
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


class ParticleELBO(ELBO):
    """
    Base of the particle objectives :class:`IWAE_ELBO` and :class:`FIVO_ELBO`: a
    :class:`pyro.infer.ELBO` whose subclass gives ``differentiable_loss(model, guide, *args,
    **kwargs)``; ``loss`` and ``loss_and_grads`` follow from it as in Pyro, so it goes into
    :class:`~pyro.infer.SVI`, :class:`~pyro_seq.training.Trainer` and (through
    ``elbo(model, guide)``, an :class:`~pyro.infer.elbo.ELBOModule`) plain PyTorch loops and
    :class:`~torch.nn.parallel.DistributedDataParallel`. ``step`` is set by the trainer (unused),
    ``beta`` is always 1, and ``last_terms`` holds detached sums over the batch of the last call.

    :param int num_particles: :math:`K`.
    :param int max_plate_nesting: the model's own plates (the particle plate, where there is one,
        goes outside them); guessed by running the pair once where needed and not given.
    :param vectorize_particles: how the particles run (see the subclass).
    :param bool retain_graph: passed to ``backward`` in :meth:`loss_and_grads`.
    """

    beta = 1.0

    def __init__(self, num_particles=2, max_plate_nesting=float("inf"), vectorize_particles=True, retain_graph=None):
        num_particles = check_int("num_particles", num_particles, 1)
        # the particles are vectorised here, not by ELBO (which would add a plate to max_plate_nesting)
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=False,
            retain_graph=retain_graph,
        )
        self.vectorize_particles = vectorize_particles
        self.step = 0
        self.last_terms = {}

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} is not a sum over single traces")

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The loss as a differentiable scalar tensor."""
        raise NotImplementedError

    def loss(self, model, guide, *args, **kwargs):
        """The loss as a float, without gradients."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The loss as a float; accumulates its gradients into the parameters."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return float(loss.detach())


#: How :class:`IWAE_ELBO` runs its particles.
IWAE_VECTORIZE = (True, "repeat", "plate", False)


class IWAE_ELBO(ParticleELBO):
    r"""
    The importance-weighted bound (IWAE) as a training objective:

    .. math::

        \mathcal{L}_K(x) = \sum_b \mathbb{E}_{z^{(1:K)}_b \sim q}\Big[
            \log \frac{1}{K} \sum_{k=1}^{K}
            \frac{p(x_b, z^{(k)}_b)}{q(z^{(k)}_b \mid x_b)}\Big],

    a log-mean-exp over the :math:`K` particles *of each sequence* :math:`b` (the rows of the
    model's rightmost batch plate), then a sum over sequences. Pyro's
    :class:`~pyro.infer.RenyiELBO` with :math:`\alpha = 0` instead takes the log-mean-exp of the
    weights of the whole batch, a looser bound on :math:`\sum_b \log p(x_b)`. With
    ``num_particles=1`` this is the ELBO exactly (same value and gradients as
    :class:`~pyro.infer.Trace_ELBO` for the same random numbers). Gradients use the
    reparameterised guide samples (every latent guide site must have ``rsample``). A site
    outside the batch plate has its log density spread evenly over the sequences, which makes
    the per-sequence log-mean-exp a heuristic, not a bound, for models with global latents.

    Use it as any Pyro ELBO: ``SVI(model, guide, optim, loss=IWAE_ELBO(num_particles=5))``;
    ``loss``, ``differentiable_loss`` and ``loss_and_grads(model, guide, *args, **kwargs)`` pass
    every argument to the model and guide. ``last_terms`` holds detached sums over the batch of
    the particle-averaged ``log_likelihood`` and ``kl`` (their difference is the ELBO), the
    ``iwae`` bound itself and ``beta`` (always 1).

    The particles run in one of three forms:

    - ``vectorize_particles=True`` (or ``"repeat"``, the default): the batch is repeated
      :math:`K` times, particle-major (row ``k * batch + b``): every tensor argument with a
      leading dim is repeated along it, other arguments pass unchanged. One pass through the
      model and guide draws all particles, and models need no extra dim (the built-in models'
      ``MarkovGaussianChain`` sites take any batch size but no particle dim). The guide must be
      amortised: a guide whose site shapes are fixed by the batch (Pyro's autoguides) is refused.
    - ``vectorize_particles="plate"``: Pyro's vectorisation, an outer
      ``pyro.plate("num_particles", K, dim=-1 - max_plate_nesting)`` around the model and guide
      (``max_plate_nesting`` is guessed by running the pair once if not given); the log-mean-exp
      runs over that dim, per row of the rightmost batch dim. For non-amortised guides such as
      :class:`~pyro.infer.autoguide.AutoNormal`, on models whose sites broadcast over a leading
      particle dim.
    - ``vectorize_particles=False``: one trace per particle, :math:`K` passes; any model and guide.

    :param int num_particles: :math:`K`.
    :param int max_plate_nesting: the model's own plates (``"plate"`` form only).
    :param vectorize_particles: ``True``/``"repeat"``, ``"plate"`` or ``False``.
    :param bool retain_graph: passed to ``backward``.

    **References**

    [1] Yuri Burda, Roger Grosse, Ruslan Salakhutdinov, "Importance Weighted
        Autoencoders", ICLR 2016, arXiv:1509.00519.
    """

    def __init__(self, num_particles=2, max_plate_nesting=float("inf"), vectorize_particles=True, retain_graph=None):
        if not any(vectorize_particles is v or (isinstance(v, str) and vectorize_particles == v) for v in IWAE_VECTORIZE):
            raise ValueError(f"vectorize_particles must be one of {IWAE_VECTORIZE}, got {vectorize_particles!r}")
        super().__init__(num_particles, max_plate_nesting, vectorize_particles, retain_graph)

    @property
    def particle_form(self):
        """``"repeat"``, ``"plate"`` or ``"loop"`` (one particle is always one plain trace in the
        ``"plate"`` form, as in Pyro)."""
        if self.vectorize_particles is False or (self.vectorize_particles == "plate" and self.num_particles == 1):
            return "loop"
        return "plate" if self.vectorize_particles == "plate" else "repeat"

    def _plate_nesting(self, model, guide, args, kwargs):
        """The model's own plates: ``max_plate_nesting``, or guessed from one run of the pair (as
        Pyro's ELBO does)."""
        if self.max_plate_nesting == float("inf"):
            with poutine.block():
                guide_trace, model_trace = _replayed_traces(model, guide, args, kwargs)
            dims = [
                frame.dim
                for trace in (model_trace, guide_trace)
                for site in trace.nodes.values()
                if site["type"] == "sample"
                for frame in site["cond_indep_stack"]
                if frame.vectorized
            ]
            self.max_plate_nesting = -min(dims) if dims else 0
        return int(self.max_plate_nesting)

    def _repeated(self, guide, args, kwargs):
        """The arguments with every tensor repeated ``K`` times along its leading dim, and the batch size."""
        k = self.num_particles
        if k > 1 and _is_non_amortised(guide):
            raise ValueError(
                f"IWAE_ELBO(vectorize_particles=True) repeats the batch {k} times, which the non-amortised "
                f"guide {type(guide).__name__} cannot follow (its site shapes are fixed by the batch it was "
                "built on); use vectorize_particles='plate' (an outer pyro.plate over the particles) or False "
                "(one trace per particle)"
            )
        named = [(f"argument {i}", a) for i, a in enumerate(args)] + [(f"argument {n!r}", a) for n, a in kwargs.items()]
        batched = [(name, a) for name, a in named if torch.is_tensor(a) and a.dim() >= 1]
        if not batched:
            raise ValueError(
                "IWAE_ELBO(vectorize_particles=True) repeats the tensor arguments along their leading (batch) dim, "
                "but the model takes none; use vectorize_particles='plate' or False"
            )
        batch = batched[0][1].shape[0]
        for name, a in batched:
            if a.shape[0] != batch:
                raise ValueError(
                    f"IWAE_ELBO(vectorize_particles=True) repeats every tensor argument along its leading dim, but "
                    f"{name} has leading size {a.shape[0]} and the first has {batch}; use vectorize_particles='plate' or False"
                )

        floating = [a for _, a in batched if a.is_floating_point()]
        like = floating[0] if floating else torch.zeros((), device=batched[0][1].device)  # dtype of the weights

        def rep(a):
            return repeat_batch(a, k) if torch.is_tensor(a) and a.dim() >= 1 else a

        return tuple(rep(a) for a in args), {n: rep(a) for n, a in kwargs.items()}, batch, like

    def _traces(self, model, guide, args, kwargs):
        """``(guide_trace, model_trace)`` of one draw of the particles (all of them, but in the
        ``"loop"`` form), with the model's arguments as given."""
        form = self.particle_form
        if form == "repeat":
            args, kwargs, _, _ = self._repeated(guide, args, kwargs)
        elif form == "plate":
            nesting = self._plate_nesting(model, guide, args, kwargs)
            guide = pyro.plate("num_particles", self.num_particles, dim=-1 - nesting)(guide)
            model = pyro.plate("num_particles", self.num_particles, dim=-1 - nesting)(model)
        return _replayed_traces(model, guide, args, kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        guide_trace, model_trace = self._traces(model, guide, args, kwargs)
        return model_trace, guide_trace

    def log_weights(self, model, guide, *args, **kwargs):
        """
        The particles' log importance weights and their observed parts.

        :returns: ``(log_w, log_likelihood)``, each ``[K, batch]`` (differentiable).
        """
        args, kwargs = _sequence_arguments(model, args, kwargs)
        k = self.num_particles
        form = self.particle_form
        if form == "repeat":
            rargs, rkwargs, batch, like = self._repeated(guide, args, kwargs)
            guide_trace, model_trace = _replayed_traces(model, guide, rargs, rkwargs)
            log_w, log_likelihood = _rows_log_weights(model_trace, guide_trace, k * batch, like)  # [k * batch]
            return log_w.reshape(k, batch), log_likelihood.reshape(k, batch)
        if form == "plate":
            guide_trace, model_trace = self._traces(model, guide, args, kwargs)
            return _general_log_weights(model_trace, guide_trace, lead=1)  # [k, batch]
        log_ws, log_likelihoods = [], []
        for _ in range(k):
            guide_trace, model_trace = _replayed_traces(model, guide, args, kwargs)
            log_w, log_likelihood = _general_log_weights(model_trace, guide_trace, lead=0)  # [batch]
            log_ws.append(log_w)
            log_likelihoods.append(log_likelihood)
        return torch.stack(log_ws), torch.stack(log_likelihoods)  # [k, batch]

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """:math:`-\\mathcal{L}_K`, summed over the batch, differentiable."""
        log_w, log_likelihood = self.log_weights(model, guide, *args, **kwargs)  # [k, batch]
        bound = iwae_objective(log_w)  # [batch]
        log_likelihood = log_likelihood.detach().mean(0).sum()
        elbo = log_w.detach().mean(0).sum()
        self.last_terms = {
            "log_likelihood": log_likelihood,
            "kl": log_likelihood - elbo,
            "iwae": bound.detach().sum(),
            "beta": 1.0,
        }
        return -bound.sum()


def _filter_arguments(args, kwargs):
    """``(x, mask)`` of a call over the functional step protocol, which takes nothing else."""
    kwargs = dict(kwargs)
    if args:
        x, rest = args[0], list(args[1:])
    elif "x" in kwargs:
        x, rest = kwargs.pop("x"), []
    else:
        raise TypeError("FIVO_ELBO over the filter_* step protocol needs the frames x")
    mask = rest.pop(0) if rest else kwargs.pop("mask", None)
    if rest or kwargs:
        extra = [f"argument {i + 2}" for i in range(len(rest))] + [repr(n) for n in kwargs]
        raise TypeError(
            f"FIVO_ELBO over the filter_* step protocol takes (x, mask) only; got {', '.join(extra)} besides"
        )
    return x, mask


class FIVO_ELBO(ParticleELBO):
    r"""
    The filtering variational objective as a training loss:

    .. math::

        \mathcal{L}^{\mathrm{FIVO}}_K(x) = \sum_b \mathbb{E}\big[\log \hat p_K(x_b)\big],
        \qquad
        \log \hat p_K(x_b) = \sum_{e} \log \frac{1}{K} \sum_{k=1}^{K} \prod_{t \in e} \alpha_{b,t}^{(k)},

    from a particle filter with the guide as proposal and :math:`K` particles per sequence (see
    the module docstring), on any model and guide in one of two sequential protocols:

    - the built-in models' functional protocol (``filter_context``, ``filter_init``,
      ``filter_step``; ``DESIGN.md``), run by :func:`particle_filter` on the batch ``(x, mask)``
      repeated :math:`K` times. On first use of each model and guide pair, the protocol's log
      weight is checked against the Pyro trace of the same path (:func:`check_step_protocol`,
      without side effects); a mismatch raises :class:`StepProtocolError` naming the step and
      the site.
    - Pyro's sequential Monte Carlo protocol (``init(state, ...)``, ``step(state, ...)`` as
      :class:`~pyro.infer.SMCFilter` uses it; :class:`SequentialModel`,
      :class:`SequentialGuide`), run by :func:`smc_particle_filter` in a particle plate outside
      the model's ``max_plate_nesting`` plates (required here, as for ``SMCFilter``), with any
      arguments.

    Gradients flow through the reparameterised proposals and the weights, none through the
    resampling indices (Maddison et al. 2017). The parameters are registered with Pyro by the
    protocol methods (``pyro_method``, or the sites' modules), so the trainer's and SVI's
    parameter capture sees them. ``last_terms`` holds detached sums over the batch: ``fivo``
    (the bound) and ``resampling_steps``; ``step`` is set by the trainer (unused) and ``beta``
    is always 1. The particles always run together (``vectorize_particles=True``).

    :param int num_particles: :math:`K`.
    :param str resample: ``"ess"``, ``"always"`` or ``"never"``.
    :param float threshold: relative ESS below which to resample.
    :param int max_plate_nesting: the model's own plates (the SMC protocol).
    :param bool check_protocol: check the functional protocol on the first batch of each pair.
    :param bool retain_graph: passed to ``backward``.

    **References**

    [1] Chris J. Maddison et al., "Filtering Variational Objectives",
        NIPS 2017, arXiv:1705.09279.

    [2] Tuan Anh Le et al., "Auto-Encoding Sequential Monte Carlo", ICLR 2018, arXiv:1705.10306.

    [3] Christian A. Naesseth et al., "Variational Sequential Monte Carlo", AISTATS 2018,
        arXiv:1705.11140.
    """

    def __init__(
        self,
        num_particles=4,
        resample="ess",
        threshold=0.5,
        max_plate_nesting=float("inf"),
        vectorize_particles=True,
        check_protocol=True,
        retain_graph=None,
    ):
        if vectorize_particles is not True:
            raise ValueError(
                f"FIVO_ELBO runs its particles together (resampling mixes them): vectorize_particles must be True, "
                f"got {vectorize_particles!r}"
            )
        super().__init__(num_particles, max_plate_nesting, vectorize_particles, retain_graph)
        if resample is not None and resample not in RESAMPLE_KINDS:
            raise ValueError(f"resample must be one of {RESAMPLE_KINDS}, got {resample!r}")
        self.resample, self.threshold = resample, check_probability("threshold", threshold)
        self.check_protocol = bool(check_protocol)
        self._checked = weakref.WeakKeyDictionary()  # model -> the guides checked with it

    def _check_once(self, model, guide, x, mask):
        guides = self._checked.get(model)
        if guides is not None and guide in guides:
            return
        check_step_protocol(model, guide, x, mask)
        self._checked.setdefault(model, weakref.WeakSet()).add(guide)

    def particle_filter(self, model, guide, *args, **kwargs):
        """
        Run the particle filter over whichever protocol ``model`` and ``guide`` implement.

        :rtype: ParticleFilterResult
        """
        if _has_filter_protocol(model) and _has_filter_protocol(guide):
            x, mask = _filter_arguments(args, kwargs)
            if self.check_protocol:
                self._check_once(model, guide, x, mask)
            return particle_filter(model, guide, x, mask, self.num_particles, self.resample, self.threshold)
        if _has_smc_protocol(model) and _has_smc_protocol(guide):
            if self.max_plate_nesting == float("inf"):
                raise ValueError(
                    "FIVO_ELBO over an init/step model needs max_plate_nesting (the model's own plates, "
                    "e.g. 1 for a batch of sequences), as pyro.infer.SMCFilter does"
                )
            return smc_particle_filter(
                model,
                guide,
                *args,
                num_particles=self.num_particles,
                resample=self.resample,
                threshold=self.threshold,
                max_plate_nesting=int(self.max_plate_nesting),
                **kwargs,
            )
        raise TypeError(
            f"FIVO_ELBO needs a model and guide in a sequential protocol, filter_context/filter_init/filter_step "
            f"(the built-in models) or init/step (pyro.infer.SMCFilter's, see SequentialModel); "
            f"{type(model).__name__} and {type(guide).__name__} do not both implement either"
        )

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """:math:`-\\sum_b \\log \\hat p(x_b)`, differentiable."""
        result = self.particle_filter(model, guide, *args, **kwargs)
        self.last_terms = {
            "fivo": result.log_likelihood.detach().sum(),
            "resampling_steps": result.num_resampled.sum().to(result.log_likelihood.dtype),
        }
        return -result.log_likelihood.sum()


# ---------------------------------------------------------- deprecated names


def _deprecated(old, new):
    warnings.warn(
        f"{old} is deprecated; use {new} (the same objective as a pyro.infer.ELBO, with the same numbers)",
        DeprecationWarning,
        stacklevel=3,
    )


class ParticleLoss(ParticleELBO):
    """Deprecated: :class:`ParticleELBO`."""

    def __init__(self, *args, **kwargs):
        _deprecated("ParticleLoss", "ParticleELBO")
        super().__init__(*args, **kwargs)


class IWAELoss(IWAE_ELBO):
    """Deprecated: :class:`IWAE_ELBO` (same arguments, same numbers)."""

    def __init__(self, *args, **kwargs):
        _deprecated("IWAELoss", "IWAE_ELBO")
        super().__init__(*args, **kwargs)


class FIVOLoss(FIVO_ELBO):
    """Deprecated: :class:`FIVO_ELBO` (same arguments, same numbers)."""

    def __init__(self, *args, **kwargs):
        _deprecated("FIVOLoss", "FIVO_ELBO")
        super().__init__(*args, **kwargs)
