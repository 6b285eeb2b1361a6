"""Structured guides for :class:`~pyro_seq.models.SRNN`: the backward-RNN smoother and the filter."""

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.nn import PyroModule

from pyro_seq.distributions import MarkovGaussianChain
from pyro_seq.guides.zforcing import AUX_SITE, check_auxiliary, masked
from pyro_seq.nn import AuxiliaryGaussian, GaussianTransition, TimeSlices, broadcast_cat, reverse_padded
from pyro_seq.util import PyroNamed, check_call_shape, check_int, claim_pyro_name, record

#: Kinds of :class:`SRNNGuide`: ``"smoother"`` (a backward GRU over the future, :math:`q(z_t \mid z_{t-1}, d_{t:T}, x_{t:T})`)
#: or ``"filter"`` (:math:`q(z_t \mid z_{t-1}, d_t, x_t)`).
GUIDE_KINDS = ("smoother", "filter")


class SRNNGuide(PyroNamed, PyroModule):
    r"""
    Structured guide for :class:`~pyro_seq.models.SRNN` (Fraccaro et al. 2016).

    The posterior keeps the Markov structure of the prior:

    .. math::

        q_\phi(z_{1:T} \mid x_{1:T}) = \prod_{t=1}^{T}
            \mathcal{N}\big(z_t \mid \mu^q_t, \operatorname{diag} (\sigma^q_t)^2\big),
        \qquad (\mu^q_t, \sigma^q_t) = \mathrm{MLP}_\phi(z_{t-1}, a_t),

    where :math:`a_t` summarises what :math:`z_t` may depend on:

    - ``kind="smoother"``: :math:`a_t = \overleftarrow{\mathrm{GRU}}(a_{t+1}, [d_t, x_t])`,
      a backward GRU over the present and future (the true posterior's
      dependencies);
    - ``kind="filter"``: :math:`a_t = \tanh(W [d_t, x_t] + b)`, no backward pass.

    With ``res_q=True`` the mean is parameterised as a residual on the prior
    mean at the same :math:`z_{t-1}`:
    :math:`\mu^q_t = \mu^p(z_{t-1}, d_t) + \Delta\mu_\phi(z_{t-1}, a_t)`.

    The form of the latent site (one ``"z"`` site or per-step ``"z_{t}"``
    sites in ``pyro.markov``) follows ``model.fast``.

    :param model: the :class:`~pyro_seq.models.SRNN` this guide serves.
    :param str kind: ``"smoother"`` or ``"filter"``.
    :param bool res_q: residual parameterisation of the posterior mean.
    :param int a_dim: size of :math:`a_t` (default: ``model.d_dim``).
    :param int hidden_dim: width of the posterior MLP (default: the model's).
    :param str auxiliary: ``None``, ``"z"`` or ``"hz"``: record the Z-Forcing
        auxiliary term :math:`\log p_\xi(\operatorname{sg}(a_t) \mid z_t)` (or of
        :math:`[d_t, z_t]`) as site ``"aux_log_prob"`` (smoother only; see
        :class:`~pyro_seq.guides.ZForcingGuide` and
        :class:`~pyro_seq.losses.ZForcingTrace_ELBO`).
    :param str name: Pyro name (default: the model's Pyro name + ``"_guide"``, fixed
        on the first run; see :class:`~pyro_seq.util.PyroNamed`).

    **References**

    [1] Marco Fraccaro, Søren Kaae Sønderby, Ulrich Paquet, Ole Winther,
        "Sequential Neural Models with Stochastic Layers", NIPS 2016,
        arXiv:1605.07571.
    """

    def __init__(
        self, model, kind="smoother", res_q=True, a_dim=None, hidden_dim=None, auxiliary=None, name=None
    ):
        if kind not in GUIDE_KINDS:
            raise ValueError(f"kind must be one of {GUIDE_KINDS}, got {kind!r}")
        if check_auxiliary(auxiliary) is not None and kind != "smoother":
            raise ValueError(
                "auxiliary needs the backward states a_t of kind='smoother'; the filter guide has no backward RNN"
            )
        super().__init__("srnn_guide" if name is None else name)
        self._init_pyro_name(name)
        # hold the model without registering it as a submodule
        object.__setattr__(self, "_model", model)
        a_dim = model.d_dim if a_dim is None else check_int("a_dim", a_dim, 1)
        hidden_dim = model.config["hidden_dim"] if hidden_dim is None else check_int("hidden_dim", hidden_dim, 1)
        self.config = dict(kind=kind, res_q=res_q, a_dim=a_dim, hidden_dim=hidden_dim, auxiliary=auxiliary)
        self.kind, self.res_q = kind, res_q
        self.auxiliary = auxiliary
        self.backward_prediction = False
        if auxiliary is not None:
            in_dim = model.z_dim + (model.d_dim if auxiliary == "hz" else 0)
            self.aux_net = AuxiliaryGaussian(in_dim, a_dim, hidden_dim)
        in_dim = model.d_dim + model.x_dim
        if kind == "smoother":
            self.a_rnn = nn.GRU(in_dim, a_dim, batch_first=True)
        else:
            self.a_net = nn.Sequential(nn.Linear(in_dim, a_dim), nn.Tanh())
        self.posterior = GaussianTransition(
            model.z_dim, a_dim, hidden_dim, model.min_scale
        )

    @property
    def model(self):
        return self._model

    def _pyro_base_name(self):
        return claim_pyro_name(self.model) + "_guide"

    def summaries(self, x, d, lengths):
        """
        :math:`a_{1:T}` from ``x [batch, time, x_dim]`` and ``d [batch, time, d_dim]``.

        :returns: ``[batch, time, a_dim]``
        """
        xd = torch.cat([d, x], dim=-1)  # [batch, time, d_dim + x_dim]
        if self.kind == "filter":
            return self.a_net(xd)
        a_rev, _ = self.a_rnn(reverse_padded(xd, lengths))  # [batch, time, a_dim]
        return reverse_padded(a_rev, lengths)  # [batch, time, a_dim]

    def transition_fns(self, x, lengths, out=None, carry=None):
        """
        The posterior transition, as ``(step_fn, path_fn)`` for
        :class:`~pyro_seq.distributions.MarkovGaussianChain`.

        :param dict out: if given, receives ``d`` and ``a`` (each ``[batch, time, .]``).
        :param carry: a :class:`~pyro_seq.data.streaming.StreamCarry` or ``None``.
        """
        model = self.model
        d = model.share_deterministic(x, carry)  # [batch, time, d_dim]
        a = self.summaries(x, d, lengths)  # [batch, time, a_dim]
        if out is not None:
            out["d"], out["a"] = d, a
        posterior = self.posterior
        context = posterior.project_context(a)  # [batch, time, hidden]
        steps = TimeSlices(context)  # the sampler's per-step views
        if not self.res_q:
            return (
                lambda z_prev, t: posterior.step(z_prev, steps[t]),
                lambda z_prev: posterior(z_prev, context),
            )
        prior = model.prior
        prior_context = prior.project_context(d)  # [batch, time, hidden]
        prior_steps = TimeSlices(prior_context)

        def step_fn(z_prev, t):
            loc, scale = posterior.step(z_prev, steps[t])
            return loc + prior.step(z_prev, prior_steps[t])[0], scale

        def path_fn(z_prev):
            loc, scale = posterior(z_prev, context)
            return loc + prior(z_prev, prior_context)[0], scale

        return step_fn, path_fn

    def posterior_chain(self, x, mask, lengths, out=None, carry=None):
        """
        The posterior :math:`q(z_{1:T} \\mid x_{1:T})` as one distribution
        (the twin of :meth:`~pyro_seq.models.SRNN.prior_chain`).

        :param torch.Tensor x: ``[batch, time, x_dim]``, checked.
        :param torch.Tensor mask: ``[batch, time]`` bool.
        :param torch.Tensor lengths: ``[batch]``.
        :param dict out: if given, receives ``d`` and ``a`` (see :meth:`transition_fns`).
        :param carry: a :class:`~pyro_seq.data.streaming.StreamCarry` or ``None``.
        """
        model = self.model
        step_fn, path_fn = self.transition_fns(x, lengths, out, carry)
        z_init = model.initial_z(x.shape[0], carry)  # [batch, z_dim]
        return MarkovGaussianChain(z_init, step_fn, path_fn, x.shape[1], mask)

    def forward(self, x, mask=None, carry=None, *, num_steps=None, batch_size=None, predict=False):
        """
        :param torch.Tensor x: ``[batch, time, x_dim]``
        :param torch.Tensor mask: ``[batch, time]`` bool prefix mask.
        :param carry: a :class:`~pyro_seq.data.streaming.StreamCarry` when ``x`` is a
            chunk of longer sequences; the guide records in it the state at each
            row's last frame (``d``, the frame, the sampled ``z``) for the next chunk.
            Within a chunk the smoother's backward GRU sees only the chunk.
        :param int num_steps: checked against ``x`` (required under ``JitTrace_ELBO``).
        :param int batch_size: checked against ``x`` (required under ``JitTrace_ELBO``).
        :param bool predict: the model's flag, ignored (Pyro calls the guide with the
            model's arguments).
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
        model.check_carry(carry, batch)
        summaries = {}
        with pyro.plate("sequences", batch, dim=-1):
            chain = self.posterior_chain(x, mask, lengths, summaries, carry)
            if model.fast:
                z = pyro.sample("z", chain)  # [batch, time, z_dim]
            else:
                z = chain.sample_steps("z")  # [batch, time, z_dim]
            self._record_auxiliary(mask, summaries, z)
        if carry is not None:
            if z.dim() != 3:
                raise ValueError("a streaming carry holds one path per sequence: it takes no vectorised particles")
            rows = torch.arange(batch, device=x.device)
            last = (lengths - 1).to(x.device)  # [batch]
            carry.put("z", z[rows, last])  # [batch, z_dim]
            carry.put("h", summaries["d"][rows, last])  # [batch, d_dim]: the GRU state after x_{T-1}
            carry.put("x", x[rows, last])  # [batch, x_dim]: the next chunk's x_0
        return z

    def _record_auxiliary(self, mask, summaries, z):
        if self.auxiliary is None:
            return
        inputs = z if self.auxiliary == "z" else broadcast_cat([summaries["d"], z])
        lp = self.aux_net.log_prob(summaries["a"].detach(), inputs)  # [batch, time]
        record(AUX_SITE, masked(lp, mask))

    # ------------------------------------------------ sequential step protocol
    @pyro.nn.pyro_method
    def filter_context(self, x, mask, ctx):
        """
        Step protocol (``DESIGN.md``, used by :mod:`pyro_seq.fivo`): the posterior
        transition's projected summaries :math:`a_{1:T}`, reusing the model's
        ``ctx`` (:meth:`~pyro_seq.models.SRNN.filter_context`) for :math:`d_{1:T}`.
        The auxiliary cost, not part of any bound, is left out.
        """
        self.sync_pyro_params()
        x, mask, lengths = self.model.check(x, mask)
        a = self.summaries(x, ctx["d"], lengths)  # [batch, time, a_dim]
        gctx = {"context": self.posterior.project_context(a)}  # [batch, time, hidden]
        if self.res_q:
            gctx["prior_context"] = ctx["prior_context"]  # [batch, time, hidden]
        return gctx

    def filter_init(self, gctx):
        """Step protocol: ``{"z": z_0}``, ``[batch, z_dim]``."""
        model = self.model
        return {"z": model.z_0.expand(gctx["context"].shape[0], model.z_dim)}

    @pyro.nn.pyro_method
    def filter_step(self, gctx, gstate, t, model_state=None, value=None):
        """
        Step protocol: draw :math:`z_t \\sim q(z_t \\mid z_{t-1}, a_t)` (reparameterised,
        the same arithmetic and random numbers as the fast form's chain), or score
        ``value`` if given.

        :returns: ``(z_t [batch, z_dim], log_q [batch], next state)``.
        """
        z_prev = gstate["z"]  # [batch, z_dim]
        loc, scale = self.posterior.step(z_prev, gctx["context"][:, t])  # [batch, z_dim]
        if self.res_q:
            loc = loc + self.model.prior.step(z_prev, gctx["prior_context"][:, t])[0]
        q = dist.Normal(loc, scale, validate_args=False)
        if value is None:
            value = q.rsample()  # [batch, z_dim]
        return value, q.log_prob(value).sum(-1), {"z": value}
