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
from pyro.distributions import Bernoulli, Normal, TorchDistribution, constraints
from torch.distributions import register_kl
from torch.distributions.utils import _standard_normal

from pyro_seq.nn import gaussian_kl, gaussian_log_prob, softplus_scale


def frame_distribution(out, likelihood, min_scale):
    """
    The distribution of frames from a network output ``out``: ``Bernoulli(logits=out)``
    (``out [..., x_dim]``) or a diagonal ``Normal`` whose mean and raw scale are the two
    halves of ``out [..., 2 * x_dim]`` (standard deviation ``>= min_scale``). Batch shape
    ``[..., x_dim]``; shared by the models' emissions and Z-Forcing's backward prediction.
    """
    if likelihood == "bernoulli":
        return Bernoulli(logits=out)
    loc, raw_scale = out.chunk(2, dim=-1)
    return Normal(loc, softplus_scale(raw_scale, min_scale))


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
    :param callable step_fn: ``step_fn(z_prev [batch, z_dim], t) -> (loc, scale)``,
        used when sampling.
    :param callable path_fn: ``path_fn(z_prev [batch, T, z_dim]) -> (loc, scale)``
        of shape ``[batch, T, z_dim]``, used when scoring a known path.
    :param int num_steps: ``T``.
    :param torch.Tensor mask: optional ``[batch, T]`` bool mask of real steps.

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
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        raise NotImplementedError(
            "MarkovGaussianChain cannot be expanded from batch shape "
            f"{tuple(self.batch_shape)} to {tuple(batch_shape)}; build it with the "
            "full batch (one chain per sequence in the plate)."
        )

    def rsample(self, sample_shape=torch.Size()):
        if len(sample_shape):
            raise NotImplementedError(
                "MarkovGaussianChain draws one path per batch element; "
                "use a plate (or vectorize_particles) for more samples"
            )
        z_prev = self.z_init  # [batch, z_dim]
        zs, locs, scales = [], [], []
        for t in range(self.num_steps):
            loc, scale = self.step_fn(z_prev, t)  # [batch, z_dim] each
            eps = _standard_normal(loc.shape, dtype=loc.dtype, device=loc.device)
            z_prev = loc + scale * eps  # [batch, z_dim]
            zs.append(z_prev)
            locs.append(loc)
            scales.append(scale)
        value = torch.stack(zs, dim=-2)  # [batch, T, z_dim]
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

        :returns: ``[batch, T, z_dim]``
        """
        z_prev, zs = self.z_init, []  # [batch, z_dim]
        for t in pyro.markov(range(self.num_steps)):
            step = self.step_distribution(*self.step_fn(z_prev, t))
            if self.mask is not None:
                step = step.mask(self.mask[:, t])
            z_prev = pyro.sample(f"{name}_{t + 1}", step)  # [batch, z_dim]
            zs.append(z_prev)
        return torch.stack(zs, dim=-2)  # [batch, T, z_dim]

    def previous(self, value):
        """``z_{0:T-1}`` for a path ``z_{1:T}``: ``[batch, T, z_dim]``."""
        return torch.cat([self.z_init.unsqueeze(-2), value[..., :-1, :]], dim=-2)

    def params(self, value):
        """Per-step ``(loc, scale)``, each ``[batch, T, z_dim]``, along a path."""
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
    :param callable path_fn: ``path_fn(z [batch, T, z_dim]) -> (loc, scale)``,
        each ``[batch, T, z_dim]``.
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
