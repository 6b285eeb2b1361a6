"""
Sequence-level distributions used by the fast forms of pyro_seq models.

A :class:`MarkovGaussianChain` is one Pyro sample site for a whole latent path
:math:`z_{1:T}`: sampling runs the (truly sequential) recurrence step by step,
scoring a known path is vectorised over time. This keeps the per-step Python to
the part of the model that is sequential, and replaces ``T`` Pyro sample sites
(each costing tens of microseconds of bookkeeping) by one.
"""

import pyro
import torch
import torch.nn.functional as F
from pyro.distributions import Bernoulli, Normal, TorchDistribution, constraints
from torch.distributions import register_kl
from torch.distributions.utils import _standard_normal

from pyro_seq.nn import gaussian_kl, gaussian_log_prob, softplus_scale

__all__ = [
    "MADEBernoulli",
    "MarkovGaussianChain",
    "RecurrentGaussianChain",
    "frame_distribution",
    "frame_log_prob",
    "frame_mean",
    "kl_per_step",
    "mask_frames",
]


def frame_distribution(out, likelihood, min_scale, made=None):
    """
    The distribution of frames from a network output ``out``: ``Bernoulli(logits=out)``
    (``out [..., x_dim]``) or a diagonal ``Normal`` whose mean and raw scale are the two
    halves of ``out [..., 2 * x_dim]`` (standard deviation ``>= min_scale``), each with
    batch shape ``[..., x_dim]``; or, given a :class:`~pyro_seq.nn.MADE` network ``made``,
    the autoregressive :class:`MADEBernoulli` conditioned on ``out [..., C]`` (batch shape
    ``[...]``, event shape ``[x_dim]``). Shared by the models' emissions and Z-Forcing's
    backward prediction; :func:`mask_frames`, :func:`frame_log_prob` and :func:`frame_mean`
    treat both kinds alike.
    """
    if made is not None:
        return MADEBernoulli(made, out)
    if likelihood == "bernoulli":
        return Bernoulli(logits=out)
    loc, raw_scale = out.chunk(2, dim=-1)
    return Normal(loc, softplus_scale(raw_scale, min_scale))


def mask_frames(emission, mask):
    """
    A :func:`frame_distribution` as the distribution of one Pyro site over whole frames,
    masked: one step (``mask [batch]``: event ``[x_dim]``) or all steps
    (``mask [batch, time]``: event ``[time, x_dim]``). Per-key emissions (batch shape
    ``[..., x_dim]``) and joint ones (:class:`MADEBernoulli`, event ``[x_dim]``) give the
    same site shapes; padded steps (``mask`` False) contribute nothing.
    """
    time_dims = mask.dim() - 1
    if emission.event_shape:  # a joint distribution over the keys of a frame
        return emission.mask(mask).to_event(time_dims)
    if time_dims:
        return emission.mask(mask.unsqueeze(-1)).to_event(time_dims + 1)
    return emission.to_event(1).mask(mask)


def frame_log_prob(emission, value):
    """
    :math:`\\log p(x)` of whole frames ``value [..., x_dim]`` under a
    :func:`frame_distribution`: ``[...]``.
    """
    log_prob = emission.log_prob(value)
    return log_prob if emission.event_shape else log_prob.sum(-1)


def frame_mean(emission, value):
    """
    The mean frame of a per-key :func:`frame_distribution`, ``[..., x_dim]``; for a
    :class:`MADEBernoulli` (whose mean has no closed form) the conditional key
    probabilities along the drawn frame ``value`` (:meth:`MADEBernoulli.conditional_probs`),
    an unbiased one-draw estimate of it.
    """
    if isinstance(emission, MADEBernoulli):
        return emission.conditional_probs(value)
    return emission.mean


class MADEBernoulli(TorchDistribution):
    r"""
    An autoregressive distribution over binary frames of ``D`` keys, each key a
    Bernoulli given the keys before it (natural order) and a conditioning context
    :math:`c` (e.g. a sequence model's per-step emission features):

    .. math::

        p(x \mid c) = \prod_{d=1}^{D} \mathrm{Bernoulli}\big(x_d \mid
            \sigma(\ell_d(x_{<d}, c))\big),

    the logits :math:`\ell_d` coming from a :class:`~pyro_seq.nn.MADE` network, so
    that :meth:`log_prob` is exact and takes one masked pass over a known frame,
    while :meth:`sample` draws the keys one after the other (``D`` passes). Unlike a
    factorised Bernoulli, the keys of a frame may be dependent (notes that form a
    chord), as in the RNN-NADE of Boulanger-Lewandowski et al. (2012), with a MADE in
    place of the NADE.

    ``batch_shape == context.shape[:-1]`` and ``event_shape == (D,)``; ``expand``,
    ``.mask(...)``, ``.to_event(...)`` and plates work as for any Pyro distribution.
    Not reparameterisable (``has_rsample = False``); its mean has no closed form
    (see :meth:`conditional_probs`).

    :param made: a :class:`~pyro_seq.nn.MADE` ``(x [..., D], context [..., C]) -> logits``
        (its parameters are registered with Pyro by the caller: ``pyro.module``, or a
        :class:`~pyro.nn.PyroModule` that holds it, as the models do).
    :param torch.Tensor context: ``[..., C]`` the conditioning context.

    **References**

    [1] Mathieu Germain, Karol Gregor, Iain Murray, Hugo Larochelle,
        "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015,
        arXiv:1502.03509.
    [2] Hugo Larochelle, Iain Murray, "The Neural Autoregressive Distribution
        Estimator", AISTATS 2011.
    [3] Nicolas Boulanger-Lewandowski, Yoshua Bengio, Pascal Vincent, "Modeling
        Temporal Dependencies in High-Dimensional Sequences: Application to
        Polyphonic Music Generation and Transcription", ICML 2012, arXiv:1206.6392.
    """

    arg_constraints = {"context": constraints.independent(constraints.real, 1)}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False

    def __init__(self, made, context, validate_args=None):
        if not torch.is_tensor(context) or context.dim() < 1 or context.shape[-1] != made.context_dim:
            shape = list(context.shape) if torch.is_tensor(context) else type(context).__name__
            raise ValueError(
                f"context must have shape [..., {made.context_dim}] (the MADE's context_dim), got {shape}"
            )
        self.made = made
        self.context = context
        self._terms = None  # the projected context, computed on first use
        super().__init__(context.shape[:-1], torch.Size((made.input_dim,)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MADEBernoulli, _instance)
        batch_shape = torch.Size(batch_shape)
        new.made = self.made
        new.context = self.context.expand(batch_shape + self.context.shape[-1:])
        new._terms = None
        if self._terms is not None:
            new._terms = tuple(
                None if t is None else t.expand(batch_shape + t.shape[-1:]) for t in self._terms
            )
        super(MADEBernoulli, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _context_terms(self):
        if self._terms is None:
            self._terms = self.made.project_context(self.context)
        return self._terms

    def conditional_logits(self, value):
        r"""
        :math:`\ell_d(x_{<d}, c)` for every key of ``value [..., D]`` in one masked pass:
        ``[..., D]`` (``value``'s leading dims broadcast with the batch shape).
        """
        return self.made.logits(value, self._context_terms())

    def conditional_probs(self, value):
        r""":math:`p(x_d = 1 \mid x_{<d}, c)` along ``value [..., D]``: ``[..., D]``."""
        return torch.sigmoid(self.conditional_logits(value))

    @property
    def mean(self):
        raise NotImplementedError(
            "MADEBernoulli has no closed-form mean (the marginal key probabilities); "
            "conditional_probs(sample) is an unbiased one-draw estimate"
        )

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits = self.conditional_logits(value)  # [..., D]
        logits, value = torch.broadcast_tensors(logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)  # [...]

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)  # sample_shape + batch_shape + [D]
        with torch.no_grad():
            # the cached projection if any; a projection computed here is not kept (no graph)
            terms = self._terms if self._terms is not None else self.made.project_context(self.context)
            x = self.context.new_zeros(shape)  # [..., D]
            for d in range(self.made.input_dim):
                logit = self.made.logits(x, terms)[..., d]  # [...]: depends on x[..., :d] only
                x[..., d] = torch.bernoulli(torch.sigmoid(logit))
        return x


class MarkovGaussianChain(TorchDistribution):
    r"""
    A Gaussian Markov chain with nonlinear transitions, as one distribution over
    the whole path:

    .. math::

        p(z_{1:T}) = \prod_{t=1}^{T} \mathcal{N}\big(z_t \mid \mu(z_{t-1}, t),
        \operatorname{diag} \sigma^2(z_{t-1}, t)\big)^{m_t}

    with a fixed start ``z_0`` and an optional mask :math:`m_t` for padded steps
    (masked steps are still sampled, but contribute nothing to the density).

    ``batch_shape == z_init.shape[:-1]`` and ``event_shape == (T, z_dim)``.

    :param torch.Tensor z_init: ``[batch, z_dim]`` the state before the first step.
    :param callable step_fn: ``step_fn(z_prev [..., batch, z_dim], t) -> (loc, scale)``,
        used when sampling.
    :param callable path_fn: ``path_fn(z_prev [..., batch, T, z_dim]) -> (loc, scale)``
        of shape ``[..., batch, T, z_dim]``, used when scoring a known path.
    :param int num_steps: ``T``.
    :param torch.Tensor mask: optional ``[batch, T]`` bool mask of real steps.

    Both functions must broadcast over dims left of ``batch`` (they usually do: the
    networks act on the last dim, and per-sequence inputs broadcast). Then
    :meth:`expand` (a plate left of the batch, as Pyro's vectorised particles and
    ``Predictive(parallel=True)`` add) and ``sample(sample_shape)`` draw independent
    paths, ``[*sample_shape, *batch_shape, T, z_dim]``; the step parameters are
    broadcast to that shape, so a ``step_fn`` that ignores ``z_prev`` at the first step
    still gives every path its own noise.

    The last sample drawn by :meth:`rsample` is cached together with its
    parameters, so scoring that same tensor (as Pyro's ELBOs do for a guide
    site) costs no second pass through the transition network.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(
        self, z_init, step_fn, path_fn, num_steps, mask=None, validate_args=None
    ):
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.z_init = z_init
        self.step_fn = step_fn
        self.path_fn = path_fn
        self.num_steps = num_steps
        self.mask = mask
        self._cache = None
        batch_shape = z_init.shape[:-1]
        event_shape = torch.Size((num_steps, z_init.shape[-1]))
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        new = self._get_checked_instance(type(self), _instance)
        new.__dict__.update(self.__dict__)  # the same step and path functions, mask, ...
        new.z_init = self.z_init.expand(batch_shape + self.z_init.shape[-1:])  # [*batch_shape, z_dim]
        new._cache = None
        super(MarkovGaussianChain, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _initial_state(self, sample_shape):
        """``z_0`` broadcast to ``sample_shape + batch_shape``, and that shape."""
        lead = torch.Size(sample_shape) + self.batch_shape
        z_init = self.z_init
        if z_init.shape[:-1] != lead:
            z_init = z_init.expand(lead + z_init.shape[-1:])  # [*lead, z_dim]
        return z_init, lead

    def rsample(self, sample_shape=torch.Size()):
        z_prev, lead = self._initial_state(sample_shape)  # [..., batch, z_dim]
        zs, locs, scales = [], [], []
        for t in range(self.num_steps):
            loc, scale = self.step_fn(z_prev, t)  # [..., batch, z_dim] each
            if loc.shape[:-1] != lead:  # one path per sample and batch element
                loc = loc.expand(lead + loc.shape[-1:])
            if scale.shape[:-1] != lead:
                scale = scale.expand(lead + scale.shape[-1:])
            eps = _standard_normal(loc.shape, dtype=loc.dtype, device=loc.device)
            z_prev = loc + scale * eps  # [..., batch, z_dim]
            zs.append(z_prev)
            locs.append(loc)
            scales.append(scale)
        value = torch.stack(zs, dim=-2)  # [..., batch, T, z_dim]
        self._cache = (value, torch.stack(locs, -2), torch.stack(scales, -2))
        return value

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def step_distribution(self, loc, scale):
        """The distribution of one step ``z_t`` (batch shape ``[batch]``, event ``[z_dim]``)."""
        return Normal(loc, scale).to_event(1)

    def sample_steps(self, name="z"):
        r"""
        Sample the path as per-step Pyro sites ``{name}_1 .. {name}_T`` inside
        ``pyro.markov``, masked like the chain: the readable (``fast=False``) form of
        one ``pyro.sample(name, chain)``, drawing the same random numbers.

        :returns: ``[..., batch, T, z_dim]`` (leading dims from enclosing plates)
        """
        z_prev, zs = self.z_init, []  # [batch, z_dim]
        for t in pyro.markov(range(self.num_steps)):
            step = self.step_distribution(*self.step_fn(z_prev, t))
            if self.mask is not None:
                step = step.mask(self.mask[..., t])
            z_prev = pyro.sample(f"{name}_{t + 1}", step)  # [..., batch, z_dim]
            zs.append(z_prev)
        return torch.stack(zs, dim=-2)  # [..., batch, T, z_dim]

    def previous(self, value):
        """``z_{0:T-1}`` for a path ``z_{1:T}``: ``[..., batch, T, z_dim]``."""
        z_init = self.z_init
        lead = torch.broadcast_shapes(z_init.shape[:-1], value.shape[:-2])
        if z_init.shape[:-1] != lead:
            z_init = z_init.expand(lead + z_init.shape[-1:])
        if value.shape[:-2] != lead:
            value = value.expand(lead + value.shape[-2:])
        return torch.cat([z_init.unsqueeze(-2), value[..., :-1, :]], dim=-2)

    def params(self, value):
        """Per-step ``(loc, scale)``, each ``[..., batch, T, z_dim]``, along a path."""
        cache = self._cache
        if cache is not None and value is cache[0]:
            return cache[1], cache[2]
        return self.path_fn(self.previous(value))

    def _mask_and_sum(self, per_step):
        # per_step: [batch, T]
        if self.mask is not None:
            per_step = per_step.masked_fill(~self.mask, 0.0)
        return per_step.sum(-1)  # [batch]

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        loc, scale = self.params(value)  # [batch, T, z_dim]
        return self._mask_and_sum(gaussian_log_prob(value, loc, scale).sum(-1))


class RecurrentGaussianChain(MarkovGaussianChain):
    r"""
    A Gaussian chain whose step parameters depend on the whole past
    :math:`z_{<t}` through a recurrent state (Z-Forcing's
    :math:`p(z_t \mid h_{t-1})` with :math:`h_t = \mathrm{LSTM}(h_{t-1}, [x_{t-1}, z_t])`):

    .. math::

        p(z_{1:T}) = \prod_{t=1}^{T} \mathcal{N}\big(z_t \mid \mu(h_{t-1}),
        \operatorname{diag} \sigma^2(h_{t-1})\big)^{m_t}.

    Same interface as :class:`MarkovGaussianChain`, except that ``path_fn``
    receives the whole path ``z_{1:T}`` (it runs the recurrence over it):

    :param callable step_fn: ``step_fn(z_prev [batch, z_dim], t) -> (loc, scale)``;
        called for ``t = 0, 1, ...`` in order, so it may advance a recurrent
        state with ``z_prev`` (``z_init`` at ``t = 0``).
    :param callable path_fn: ``path_fn(z [..., batch, T, z_dim]) -> (loc, scale)``,
        each ``[..., batch, T, z_dim]``.
    :param callable on_sample: optional ``on_sample(z)`` called after each
        :meth:`rsample` with the sampled path (e.g. to keep the recurrent states
        the sampling loop computed).
    """

    def __init__(self, z_init, step_fn, path_fn, num_steps, mask=None, on_sample=None, validate_args=None):
        super().__init__(z_init, step_fn, path_fn, num_steps, mask, validate_args=validate_args)
        self.on_sample = on_sample

    def rsample(self, sample_shape=torch.Size()):
        value = super().rsample(sample_shape)
        if self.on_sample is not None:
            self.on_sample(value)
        return value

    def params(self, value):
        cache = self._cache
        if cache is not None and value is cache[0]:
            return cache[1], cache[2]
        return self.path_fn(value)


def kl_per_step(q, p):
    r"""
    :math:`\mathrm{KL}\big(q(z_t \mid z_{t-1}) \,\|\, p(z_t \mid z_{t-1})\big)` for each
    step along the path last sampled from ``q`` (unmasked).

    :returns: ``[batch, T]``
    """
    if q._cache is None:
        raise NotImplementedError("KL needs a path sampled from q first")
    value, loc_q, scale_q = q._cache
    loc_p, scale_p = p.params(value)
    return gaussian_kl(loc_q, scale_q, loc_p, scale_p).sum(-1)


@register_kl(MarkovGaussianChain, MarkovGaussianChain)
def _kl_chain_chain(q, p):
    r"""
    Semi-analytic KL used by :class:`~pyro.infer.TraceMeanField_ELBO`: the masked
    sum over steps of :func:`kl_per_step`, an unbiased one-sample estimate of
    :math:`\mathrm{KL}(q \| p)` with lower variance than :math:`\log q - \log p`
    (the estimator of Fraccaro et al. 2016).
    """
    return q._mask_and_sum(kl_per_step(q, p))
