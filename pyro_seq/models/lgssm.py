"""A linear Gaussian state-space model with an exact (Kalman) log-likelihood."""

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.nn import PyroModule, pyro_method

from pyro_seq.distributions import MarkovGaussianChain
from pyro_seq.nn import gaussian_log_prob, softplus_scale
from pyro_seq.util import PyroNamed, check_call_shape, check_int, check_real, check_sequences, module_tensor, prior_call_shape


def inverse_softplus_scale(scale, min_scale):
    """The inverse of :func:`~pyro_seq.nn.softplus_scale`: a raw value for a given scale."""
    scale = torch.as_tensor(scale, dtype=torch.get_default_dtype())
    if (scale <= min_scale).any():
        raise ValueError(f"every scale must be > min_scale={min_scale}, got {scale.tolist()}")
    y = scale - min_scale
    return y + torch.log(-torch.expm1(-y))  # log(exp(y) - 1), stable for large y


class LinearGaussianSSM(PyroNamed, PyroModule):
    r"""
    A linear Gaussian state-space model (Kalman's model) with diagonal noise:

    .. math::

        z_1 &\sim \mathcal{N}(0, \operatorname{diag} \sigma_0^2), \\
        z_t &= A z_{t-1} + \epsilon_t, \qquad
            \epsilon_t \sim \mathcal{N}(0, \operatorname{diag} \sigma_z^2), \quad t \ge 2, \\
        x_t &= C z_t + \eta_t, \qquad \eta_t \sim \mathcal{N}(0, \operatorname{diag} \sigma_x^2).

    Its marginal likelihood :math:`p(x_{1:T})` is Gaussian and computed exactly
    by :meth:`exact_log_likelihood` (Pyro's :class:`~pyro.distributions.GaussianHMM`,
    a parallel-scan Kalman filter), which makes it the test bed of the
    variational and particle bounds of :mod:`pyro_seq.bounds` and
    :mod:`pyro_seq.fivo`: every bound can be compared with the truth.

    The Pyro model has the same call signature and the same two forms as
    :class:`~pyro_seq.models.SRNN`: ``fast=True`` samples the whole path at one
    site ``"z"`` (a :class:`~pyro_seq.distributions.MarkovGaussianChain`) and
    scores all frames at one site ``"x"``; ``fast=False`` has sites ``z_{t}``
    and ``x_{t}`` per step inside ``pyro.markov``. Padded steps (``mask``
    False) are masked out of every term. It also implements the sequential step
    protocol of ``DESIGN.md`` (:meth:`filter_context`, :meth:`filter_init`,
    :meth:`filter_step`) used by :mod:`pyro_seq.fivo`.

    Pyro habits: both forms broadcast over dims left of the ``"sequences"`` plate
    (vectorised particles, ``Predictive(parallel=True)``). The frames do not feed the
    latent chain, so without data, ``model(None, num_steps=T, batch_size=B)``, the
    same sites sample (``Predictive(model, num_samples=S)(None, num_steps=T,
    batch_size=B)["x"]`` are prior-predictive draws), and ``predict=True`` samples
    ``"x"`` given the guide's path instead of scoring the data (posterior-predictive
    draws). Under ``JitTrace_ELBO`` pass ``num_steps`` and ``batch_size``.

    :param int x_dim: frame size.
    :param int z_dim: latent size.
    :param bool fast: sequence-level latent site (see above).
    :param float min_scale: floor of every standard deviation.
    :param str name: Pyro name (default ``"lgssm"``, or with a suffix ``_1``, … when
        another model holds it; see :class:`~pyro_seq.util.PyroNamed`).

    **References**

    [1] R. E. Kalman, "A New Approach to Linear Filtering and Prediction
        Problems", J. Basic Engineering 82(1), 1960.
    [2] Simo Särkkä, Ángel F. García-Fernández, "Temporal Parallelization of
        Bayesian Smoothers", IEEE TAC 2021, arXiv:1905.13002.
    """

    default_pyro_name = "lgssm"

    def __init__(self, x_dim=3, z_dim=2, fast=True, min_scale=1e-3, name=None):
        x_dim, z_dim = check_int("x_dim", x_dim, 1), check_int("z_dim", z_dim, 1)
        min_scale = check_real("min_scale", min_scale, 0.0)
        super().__init__(self.default_pyro_name if name is None else name)
        self._init_pyro_name(name)
        self.config = dict(x_dim=x_dim, z_dim=z_dim, fast=fast, min_scale=min_scale)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.fast = fast
        self.min_scale = min_scale
        self.trans_matrix = nn.Parameter(0.9 * torch.eye(z_dim))  # A [z_dim, z_dim]
        self.emit_matrix = nn.Parameter(torch.randn(x_dim, z_dim) / math.sqrt(z_dim))  # C
        one = inverse_softplus_scale(1.0, min_scale)
        self.init_scale_raw = nn.Parameter(one.expand(z_dim).clone())
        self.trans_scale_raw = nn.Parameter(one.expand(z_dim).clone())
        self.emit_scale_raw = nn.Parameter(one.expand(x_dim).clone())
        self.register_buffer("z_0", torch.zeros(z_dim))

    # ------------------------------------------------------------ parameters
    @property
    def init_scale(self):
        r""":math:`\sigma_0`, ``[z_dim]``."""
        return softplus_scale(self.init_scale_raw, self.min_scale)

    @property
    def trans_scale(self):
        r""":math:`\sigma_z`, ``[z_dim]``."""
        return softplus_scale(self.trans_scale_raw, self.min_scale)

    @property
    def emit_scale(self):
        r""":math:`\sigma_x`, ``[x_dim]``."""
        return softplus_scale(self.emit_scale_raw, self.min_scale)

    @torch.no_grad()
    def set_parameters(
        self,
        trans_matrix=None,
        emit_matrix=None,
        init_scale=None,
        trans_scale=None,
        emit_scale=None,
    ):
        """Overwrite any of :math:`A, C, \\sigma_0, \\sigma_z, \\sigma_x` (constrained values)."""
        for name, value in (("trans_matrix", trans_matrix), ("emit_matrix", emit_matrix)):
            if value is not None:
                getattr(self, name).copy_(torch.as_tensor(value))
        for name, value in (
            ("init_scale_raw", init_scale),
            ("trans_scale_raw", trans_scale),
            ("emit_scale_raw", emit_scale),
        ):
            if value is not None:
                param = getattr(self, name)
                param.copy_(inverse_softplus_scale(value, self.min_scale).expand_as(param))
        return self

    # --------------------------------------------------------------- helpers
    def check(self, x, mask=None):
        """Validate inputs: ``(x, mask, lengths)`` (:func:`~pyro_seq.util.check_sequences`)."""
        return check_sequences(x, mask, x_dim=self.x_dim, like=module_tensor(self))

    def step_scales(self, num_steps):
        r"""Per-step transition scales :math:`(\sigma_0, \sigma_z, \dots)`, ``[T, z_dim]``."""
        rest = self.trans_scale.expand(num_steps - 1, self.z_dim)  # [T - 1, z_dim]
        return torch.cat([self.init_scale.unsqueeze(0), rest], dim=0)  # [T, z_dim]

    def transition(self, z_prev, t):
        """
        ``(loc, scale)`` of :math:`p(z_{t+1} \\mid z_t)` (``t`` counts from 0, ``z_prev``
        is :math:`z_0 = 0` at ``t = 0``), each ``[batch, z_dim]``.
        """
        loc = z_prev @ self.trans_matrix.T  # [batch, z_dim]
        scale = self.init_scale if t == 0 else self.trans_scale  # [z_dim]
        return loc, scale.expand_as(loc)

    def emission(self, z):
        """:math:`p(x_t \\mid z_t)` with batch shape ``[..., x_dim]`` for ``z [..., z_dim]``."""
        loc = z @ self.emit_matrix.T  # [..., x_dim]
        return dist.Normal(loc, self.emit_scale.expand_as(loc))

    def prior_chain(self, batch, num_steps, mask=None):
        """The latent path prior :math:`p(z_{1:T})` as one distribution."""
        trans_matrix = self.trans_matrix
        scales = self.step_scales(num_steps)  # [T, z_dim]

        def path_fn(z_prev):  # z_prev: [batch, T, z_dim], z_prev[:, 0] = z_0 = 0
            loc = z_prev @ trans_matrix.T  # [batch, T, z_dim]
            return loc, scales.expand_as(loc)

        return MarkovGaussianChain(
            self.z_0.expand(batch, self.z_dim), self.transition, path_fn, num_steps, mask
        )

    # ----------------------------------------------------------------- model
    def forward(self, x=None, mask=None, *, num_steps=None, batch_size=None, predict=False):
        """
        :param torch.Tensor x: ``[batch, time, x_dim]`` observed frames (zero-padded), or
            ``None`` to sample new sequences at the same sites.
        :param torch.Tensor mask: ``[batch, time]`` bool prefix mask (default: all True).
        :param int num_steps: ``time``: required without ``x`` and ``mask``, and under
            ``JitTrace_ELBO``; else checked against ``x``.
        :param int batch_size: ``batch``: as ``num_steps``.
        :param bool predict: sample the frames instead of scoring ``x``.
        :returns: the latent path ``z [batch, time, z_dim]`` (with leading particle or
            sample dims under vectorised plates).
        """
        self.sync_pyro_params()
        if x is None:
            batch, time = prior_call_shape(mask, num_steps, batch_size)
            _, mask, _ = self.check(module_tensor(self).new_zeros(batch, time, self.x_dim), mask)
            obs = None
        else:
            x, mask, _ = self.check(x, mask)
            batch, time, _ = x.shape
            check_call_shape(batch, time, num_steps, batch_size)
            obs = None if predict else x
        with pyro.plate("sequences", batch, dim=-1):
            if self.fast:
                z = pyro.sample("z", self.prior_chain(batch, time, mask))  # [..., batch, time, z_dim]
                pyro.sample(
                    "x", self.emission(z).mask(mask.unsqueeze(-1)).to_event(2), obs=obs
                )
                return z
            z_prev, zs = self.z_0.expand(batch, self.z_dim), []  # [batch, z_dim]
            for t in pyro.markov(range(time)):
                loc, scale = self.transition(z_prev, t)  # [batch, z_dim]
                z_prev = pyro.sample(
                    f"z_{t + 1}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t])
                )
                pyro.sample(
                    f"x_{t + 1}",
                    self.emission(z_prev).to_event(1).mask(mask[:, t]),
                    obs=None if obs is None else obs[:, t],
                )
                zs.append(z_prev)
            return torch.stack(zs, dim=-2)  # [..., batch, time, z_dim]

    # -------------------------------------------------------- exact marginal
    def gaussian_hmm(self, num_steps):
        """
        The marginal :math:`p(x_{1:T})` as a :class:`~pyro.distributions.GaussianHMM`
        of ``num_steps`` frames.

        Pyro's HMM starts from a hidden :math:`z_0`; its first transition matrix is
        zero with noise :math:`\\sigma_0`, so that :math:`z_1 \\sim \\mathcal{N}(0, \\sigma_0^2)`.
        """
        z_dim = self.z_dim
        trans_matrix = self.trans_matrix.T.expand(num_steps - 1, z_dim, z_dim)  # (old, new)
        trans_matrix = torch.cat(
            [trans_matrix.new_zeros(1, z_dim, z_dim), trans_matrix], dim=0
        )  # [T, z_dim, z_dim]
        scales = self.step_scales(num_steps)  # [T, z_dim]
        emit_scale = self.emit_scale  # [x_dim]
        return dist.GaussianHMM(
            dist.Normal(self.z_0, torch.ones_like(self.z_0)).to_event(1),
            trans_matrix,
            dist.Normal(torch.zeros_like(scales), scales).to_event(1),
            self.emit_matrix.T,  # [z_dim, x_dim]
            dist.Normal(torch.zeros_like(emit_scale), emit_scale).to_event(1),
            duration=num_steps,
        )

    @pyro_method
    def exact_log_likelihood(self, x, mask=None):
        """
        Exact :math:`\\log p(x_{1:L_b})` of each sequence (its real prefix), by
        Kalman filtering; differentiable in the parameters.

        Sequences are grouped by length, one :class:`~pyro.distributions.GaussianHMM`
        per distinct length.

        :param torch.Tensor x: ``[batch, time, x_dim]``
        :param torch.Tensor mask: ``[batch, time]`` bool prefix mask.
        :returns: ``[batch]``
        """
        self.sync_pyro_params()
        x, mask, lengths = self.check(x, mask)
        out = x.new_zeros(x.shape[0])  # [batch]
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(-1)  # [n]
            log_p = self.gaussian_hmm(length).log_prob(x[rows, :length])  # [n]
            out = out.index_put((rows,), log_p)
        return out

    # ------------------------------------------------ sequential step protocol
    def filter_context(self, x, mask):
        """Step protocol (``DESIGN.md``): the frames and mask, checked."""
        self.sync_pyro_params()
        x, mask, _ = self.check(x, mask)
        return {"x": x, "mask": mask}

    def filter_init(self, ctx):
        """Step protocol: ``{"z": z_0}``, ``[batch, z_dim]``."""
        return {"z": self.z_0.expand(ctx["x"].shape[0], self.z_dim)}

    @pyro_method
    def filter_step(self, ctx, state, t, z_t):
        """
        Step protocol: :math:`\\log p(z_t \\mid z_{t-1}) + \\log p(x_t \\mid z_t)`, ``[batch]``
        (unmasked), and the next state.
        """
        loc, scale = self.transition(state["z"], t)  # [batch, z_dim]
        log_p = gaussian_log_prob(z_t, loc, scale).sum(-1)  # [batch]
        emission = self.emission(z_t)  # batch shape [batch, x_dim]
        log_p = log_p + gaussian_log_prob(ctx["x"][:, t], emission.loc, emission.scale).sum(-1)
        return log_p, {"z": z_t}

    # -------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, num_sequences, num_steps, return_latents=False):
        """
        Sample sequences from the model: the same random numbers as the model without data,
        ``model(None, num_steps=num_steps, batch_size=num_sequences)``.

        :returns: ``x [num_sequences, num_steps, x_dim]`` (and ``z [.., z_dim]`` if asked).
        """
        if num_sequences < 1 or num_steps < 1:
            raise ValueError("num_sequences and num_steps must be >= 1")
        self.sync_pyro_params()  # values loaded into Pyro's param store reach the module
        z = self.prior_chain(num_sequences, num_steps).sample()  # [n, T, z_dim]
        x = self.emission(z).sample()  # [n, T, x_dim]
        return (x, z) if return_latents else x


__all__ = ["LinearGaussianSSM", "inverse_softplus_scale"]
