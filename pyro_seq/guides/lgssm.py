"""Structured guides for :class:`~pyro_seq.models.LinearGaussianSSM`: linear smoother and filter."""

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.nn import PyroModule, pyro_method
from torch.distributions import register_kl
from torch.distributions.utils import _standard_normal

from pyro_seq.distributions import MarkovGaussianChain
from pyro_seq.nn import reverse_padded, softplus_scale
from pyro_seq.util import PyroNamed, check_call_shape, check_int, claim_pyro_name

GUIDE_KINDS = ("smoother", "filter")


# ------------------------------------------------------------------- maths


def lower_cholesky(raw, min_scale):
    """A lower-triangular matrix with a diagonal ``>= min_scale`` from any square ``raw``."""
    diag = softplus_scale(raw.diagonal(dim1=-2, dim2=-1), min_scale)  # [..., z_dim]
    return raw.tril(-1) + torch.diag_embed(diag)  # [..., z_dim, z_dim]


def tril_gaussian_log_prob(value, loc, scale_tril):
    r"""
    :math:`\log \mathcal{N}(v \mid \mu, L L^\top)`, summed over the last dim.

    :param torch.Tensor value: ``[..., d]``
    :param torch.Tensor loc: ``[..., d]``
    :param torch.Tensor scale_tril: ``[..., d, d]`` (broadcastable)
    :returns: ``[...]``
    """
    diff = (value - loc).unsqueeze(-1)  # [..., d, 1]
    y = torch.linalg.solve_triangular(scale_tril, diff, upper=False).squeeze(-1)  # [..., d]
    half_log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # [...]
    return -0.5 * (y * y).sum(-1) - half_log_det - 0.5 * value.shape[-1] * math.log(2 * math.pi)


def tril_diag_gaussian_kl(loc_q, scale_tril_q, loc_p, scale_p):
    r"""
    :math:`\mathrm{KL}\big(\mathcal{N}(\mu_q, L_q L_q^\top) \,\|\,
    \mathcal{N}(\mu_p, \operatorname{diag} \sigma_p^2)\big)`:

    .. math::

        \tfrac12 \Big[\big\|\operatorname{diag}(\sigma_p)^{-1} L_q\big\|_F^2
            + \big\|(\mu_p - \mu_q) / \sigma_p\big\|^2 - d
            + 2 \textstyle\sum_i \log \sigma_{p,i} - 2 \sum_i \log L_{q,ii}\Big].

    :returns: ``[...]`` for ``loc_* [..., d]``, ``scale_tril_q [..., d, d]``, ``scale_p [..., d]``.
    """
    trace = ((scale_tril_q / scale_p.unsqueeze(-1)) ** 2).sum((-2, -1))  # [...]
    mahalanobis = (((loc_p - loc_q) / scale_p) ** 2).sum(-1)  # [...]
    log_det_q = 2 * scale_tril_q.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # [...]
    log_det_p = 2 * scale_p.log().sum(-1)  # [...]
    return 0.5 * (trace + mahalanobis - loc_q.shape[-1] + log_det_p - log_det_q)


def linear_scan(inputs, weight):
    r"""
    The linear recursion :math:`h_s = W_s h_{s-1} + u_s`, :math:`h_0 = 0`.

    :param torch.Tensor inputs: ``u [batch, time, dim]``
    :param torch.Tensor weight: ``W [dim, dim]``, or one per step ``[time, dim, dim]``.
    :returns: ``h [batch, time, dim]``
    """
    h = torch.zeros_like(inputs[:, 0])  # [batch, dim]
    hs = []
    for s in range(inputs.shape[1]):
        w = weight if weight.dim() == 2 else weight[s]  # [dim, dim]
        h = h @ w.T + inputs[:, s]  # [batch, dim]
        hs.append(h)
    return torch.stack(hs, dim=1)  # [batch, time, dim]


def steps_to_go(lengths, num_steps, horizon):
    r"""
    :math:`\min(L_b - t, H)` for each step ``t = 1..T`` of each sequence (0 on padding),
    ``[batch, time]`` long: which of the guide's per-horizon transitions applies.
    """
    t = torch.arange(num_steps, device=lengths.device)  # [time]
    return (lengths.unsqueeze(-1) - 1 - t).clamp(0, horizon)  # [batch, time]


# ------------------------------------------------------------ distribution


class MarkovTrilGaussianChain(MarkovGaussianChain):
    r"""
    A :class:`~pyro_seq.distributions.MarkovGaussianChain` whose steps have full
    covariances:

    .. math::

        q(z_{1:T}) = \prod_{t=1}^{T} \mathcal{N}\big(z_t \mid \mu(z_{t-1}, t),
            L(z_{t-1}, t) L(z_{t-1}, t)^\top\big)^{m_t}.

    ``step_fn`` and ``path_fn`` return ``(loc, scale_tril)`` with ``scale_tril``
    of shape ``[..., z_dim, z_dim]`` (broadcastable). Sampling draws the same
    standard normals as :class:`~pyro.distributions.MultivariateNormal`
    (``z = loc + L eps``), so the per-step (``pyro.markov``) form with
    ``MultivariateNormal`` sites reproduces the same path for a fixed seed.
    """

    def rsample(self, sample_shape=torch.Size()):
        z_prev, lead = self._initial_state(sample_shape)  # [..., batch, z_dim]
        zs, locs, trils = [], [], []
        for t in range(self.num_steps):
            loc, scale_tril = self.step_fn(z_prev, t)  # [..., batch, z_dim], [..., z_dim, z_dim]
            if loc.shape[:-1] != lead:  # one path per sample and batch element
                loc = loc.expand(lead + loc.shape[-1:])
            eps = _standard_normal(loc.shape, dtype=loc.dtype, device=loc.device)
            z_prev = loc + (scale_tril @ eps.unsqueeze(-1)).squeeze(-1)  # [..., batch, z_dim]
            zs.append(z_prev)
            locs.append(loc)
            trils.append(scale_tril.expand(loc.shape + loc.shape[-1:]))
        value = torch.stack(zs, dim=-2)  # [..., batch, T, z_dim]
        self._cache = (value, torch.stack(locs, -2), torch.stack(trils, -3))
        return value

    def step_distribution(self, loc, scale_tril):
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        loc, scale_tril = self.params(value)  # [batch, T, z_dim], [batch, T, z_dim, z_dim]
        return self._mask_and_sum(tril_gaussian_log_prob(value, loc, scale_tril))


@register_kl(MarkovTrilGaussianChain, MarkovGaussianChain)
def _kl_tril_chain_chain(q, p):
    r"""
    Semi-analytic :math:`\mathrm{KL}(q \| p)` for :class:`~pyro.infer.TraceMeanField_ELBO`:
    the masked sum over steps of :func:`tril_diag_gaussian_kl` along the path
    last sampled from ``q`` (as :func:`pyro_seq.distributions.kl_per_step`).
    """
    if q._cache is None or type(p) is not MarkovGaussianChain:
        raise NotImplementedError
    value, loc_q, scale_tril_q = q._cache
    loc_p, scale_p = p.params(value)  # [batch, T, z_dim]
    return q._mask_and_sum(tril_diag_gaussian_kl(loc_q, scale_tril_q, loc_p, scale_p))


# ------------------------------------------------------------------- guide


class LinearGaussianSSMGuide(PyroNamed, PyroModule):
    r"""
    Structured guide for :class:`~pyro_seq.models.LinearGaussianSSM`: a
    Gauss-Markov posterior with a mean linear in :math:`z_{t-1}` and in a
    summary :math:`a_t` of the frames, and a full covariance,

    .. math::

        q_\phi(z_{1:T} \mid x_{1:T}) = \prod_{t=1}^{T}
            \mathcal{N}\big(z_t \mid F_{\tau} z_{t-1} + G_{\tau} a_t,\;
            L_{\tau} L_{\tau}^\top\big), \qquad \tau = \min(T - t, H),

    whose matrices depend on the steps to go :math:`\tau` up to a horizon
    :math:`H` (and :math:`G, L` also on whether :math:`t = 1`):

    - ``kind="smoother"``: :math:`a_t = W_{\tau} a_{t+1} + U x_t + b`,
      :math:`a_{T+1} = 0`, a *linear* backward recursion over the present and
      future frames;
    - ``kind="filter"``: :math:`a_t = U x_t + b`, the present frame only
      (default :math:`H = 0`: one stationary transition).

    The smoother family contains the exact posterior up to the horizon. By
    backward information filtering, with :math:`\beta_t(z) = p(x_{t+1:T} \mid z_t = z)
    \propto \exp(-\tfrac12 z^\top J_t z + h_t^\top z)`,

    .. math::

        p(z_t \mid z_{t-1}, x_{t:T}) &= \mathcal{N}\big(\Lambda_t^{-1}(Q^{-1} A z_{t-1} + a_t),\,
            \Lambda_t^{-1}\big), \qquad \Lambda_t = Q^{-1} + C^\top R^{-1} C + J_t, \\
        a_t &= C^\top R^{-1} x_t + A^\top Q^{-1} \Lambda_{t+1}^{-1} a_{t+1},

    with :math:`J_T = 0` and :math:`J_t` a function of :math:`T - t` only that
    converges geometrically to a fixed point: a stationary guide (``horizon=0``)
    is exact in the bulk but not near the end of each sequence (and
    :math:`Q` is :math:`P_0` at :math:`t = 1`). The filter family does not
    contain it: the future frames are ignored.

    The form of the latent site (one ``"z"`` site or per-step ``"z_{t}"``
    sites in ``pyro.markov``) follows ``model.fast``.

    :param model: the :class:`~pyro_seq.models.LinearGaussianSSM` this guide serves.
    :param str kind: ``"smoother"`` or ``"filter"``.
    :param int a_dim: size of :math:`a_t` (default ``model.z_dim``, enough for
        the exact smoother).
    :param int horizon: :math:`H`, the number of final steps with their own
        transition (default 8 for the smoother, 0 for the filter).
    :param str name: Pyro name (default: the model's Pyro name + ``"_guide"``, fixed
        on the first run; see :class:`~pyro_seq.util.PyroNamed`).

    **References**

    [1] H. E. Rauch, F. Tung, C. T. Striebel, "Maximum likelihood estimates of
        linear dynamic systems", AIAA Journal 3(8), 1965.
    [2] Rahul G. Krishnan, Uri Shalit, David Sontag, "Structured Inference
        Networks for Nonlinear State Space Models", AAAI 2017, arXiv:1609.09869.
    """

    def __init__(self, model, kind="smoother", a_dim=None, horizon=None, name=None):
        if kind not in GUIDE_KINDS:
            raise ValueError(f"kind must be one of {GUIDE_KINDS}, got {kind!r}")
        a_dim = model.z_dim if a_dim is None else check_int("a_dim", a_dim, 1)
        horizon = (8 if kind == "smoother" else 0) if horizon is None else check_int("horizon", horizon, 0)
        super().__init__("lgssm_guide" if name is None else name)
        self._init_pyro_name(name)
        object.__setattr__(self, "_model", model)  # not a submodule
        self.config = dict(kind=kind, a_dim=a_dim, horizon=horizon)
        self.kind, self.horizon = kind, horizon
        z_dim, n = model.z_dim, horizon + 1
        self.input_proj = nn.Linear(model.x_dim, a_dim)  # U, b
        if kind == "smoother":
            self.back_matrix = nn.Parameter(torch.zeros(n, a_dim, a_dim))  # W_tau
        self.loc_z = nn.Parameter(torch.zeros(n, z_dim, z_dim))  # F_tau
        bound = 1 / math.sqrt(a_dim)  # nn.Linear's initialisation, the same for every tau
        loc_a = torch.empty(z_dim, a_dim).uniform_(-bound, bound)
        self.loc_a = nn.Parameter(loc_a.expand(2, n, z_dim, a_dim).clone())  # G_tau, first / later
        self.scale_tril_raw = nn.Parameter(torch.zeros(2, n, z_dim, z_dim))  # L_tau, first / later

    @property
    def model(self):
        return self._model

    def _pyro_base_name(self):
        return claim_pyro_name(self.model) + "_guide"

    def transitions(self, x, lengths):
        """
        The posterior transition of every step, vectorised over time.

        :returns: dict ``loc_z [batch, time, z_dim, z_dim]`` (:math:`F`), ``a_loc
            [batch, time, z_dim]`` (:math:`G a_t`), ``scale_tril [batch, time, z_dim, z_dim]``.
        """
        batch, time, _ = x.shape
        tau = steps_to_go(lengths, time, self.horizon)  # [batch, time]
        later = (torch.arange(time, device=x.device) > 0).long()  # [time]: 0 at t = 1
        later = later.expand(batch, time)  # [batch, time]
        u = self.input_proj(x)  # [batch, time, a_dim]
        if self.kind == "smoother":
            # reversed in its own length, step s of a sequence has s steps to go
            s = torch.arange(time, device=x.device).clamp(max=self.horizon)  # [time]
            a_rev = linear_scan(reverse_padded(u, lengths), self.back_matrix[s])
            u = reverse_padded(a_rev, lengths)  # [batch, time, a_dim]
        loc_a = self.loc_a[later, tau]  # [batch, time, z_dim, a_dim]
        return {
            "loc_z": self.loc_z[tau],  # [batch, time, z_dim, z_dim]
            "a_loc": (loc_a @ u.unsqueeze(-1)).squeeze(-1),  # [batch, time, z_dim]
            "scale_tril": lower_cholesky(self.scale_tril_raw[later, tau], self.model.min_scale),
        }

    @staticmethod
    def transition(z_prev, params, t):
        """``(loc, scale_tril)`` of :math:`q(z_{t+1} \\mid z_t, a_{t+1})` (:meth:`transitions`)."""
        loc = (params["loc_z"][:, t] @ z_prev.unsqueeze(-1)).squeeze(-1)  # [batch, z_dim]
        return loc + params["a_loc"][:, t], params["scale_tril"][:, t]

    def posterior_chain(self, x, mask, lengths):
        """The posterior :math:`q(z_{1:T} \\mid x_{1:T})` as one distribution."""
        model = self.model
        params = self.transitions(x, lengths)

        def path_fn(z_prev):  # [batch, T, z_dim]
            loc = (params["loc_z"] @ z_prev.unsqueeze(-1)).squeeze(-1)  # [batch, T, z_dim]
            return loc + params["a_loc"], params["scale_tril"]

        z_init = model.z_0.expand(x.shape[0], model.z_dim)  # [batch, z_dim]
        return MarkovTrilGaussianChain(
            z_init,
            lambda z_prev, t: self.transition(z_prev, params, t),
            path_fn,
            x.shape[1],
            mask,
        )

    def forward(self, x, mask=None, *, num_steps=None, batch_size=None, predict=False):
        """
        :param torch.Tensor x: ``[batch, time, x_dim]``
        :param torch.Tensor mask: ``[batch, time]`` bool prefix mask.
        :param int num_steps: checked against ``x`` (required under ``JitTrace_ELBO``).
        :param int batch_size: checked against ``x`` (required under ``JitTrace_ELBO``).
        :param bool predict: the model's flag, ignored.
        :returns: the sampled latent path ``z [batch, time, z_dim]`` (with leading
            particle or sample dims under vectorised plates).
        """
        self.sync_pyro_params()
        model = self.model
        if x is None:
            raise ValueError("the guide needs data: q(z | x) with x=None is undefined")
        x, mask, lengths = model.check(x, mask)
        batch, time, _ = x.shape
        check_call_shape(batch, time, num_steps, batch_size)
        with pyro.plate("sequences", batch, dim=-1):
            if model.fast:
                return pyro.sample("z", self.posterior_chain(x, mask, lengths))
            return self.posterior_chain(x, mask, lengths).sample_steps("z")  # [batch, time, z_dim]

    # ------------------------------------------------ sequential step protocol
    @pyro_method
    def filter_context(self, x, mask, ctx=None):
        """Step protocol (``DESIGN.md``): the transitions of :meth:`transitions`."""
        self.sync_pyro_params()
        x, mask, lengths = self.model.check(x, mask)
        return self.transitions(x, lengths)

    def filter_init(self, gctx):
        """Step protocol: ``{"z": z_0}``, ``[batch, z_dim]``."""
        model = self.model
        return {"z": model.z_0.expand(gctx["a_loc"].shape[0], model.z_dim)}

    def filter_step(self, gctx, gstate, t, model_state=None, value=None):
        """
        Step protocol: draw :math:`z_t \\sim q(z_t \\mid z_{t-1}, a_t)` (reparameterised;
        or score ``value`` if given).

        :returns: ``(z_t [batch, z_dim], log_q [batch], next state)``.
        """
        loc, scale_tril = self.transition(gstate["z"], gctx, t)  # [batch, z_dim], [batch, z, z]
        if value is None:
            eps = _standard_normal(loc.shape, dtype=loc.dtype, device=loc.device)
            value = loc + (scale_tril @ eps.unsqueeze(-1)).squeeze(-1)  # [batch, z_dim]
        log_q = tril_gaussian_log_prob(value, loc, scale_tril)  # [batch]
        return value, log_q, {"z": value}
