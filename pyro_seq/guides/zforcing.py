"""The Z-Forcing guide: a backward LSTM over the future and a posterior that follows the forward recurrence."""

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.nn import PyroModule, pyro_method

from pyro_seq.distributions import frame_distribution
from pyro_seq.nn import AuxiliaryGaussian, GaussianTransition, TimeSlices, reverse_padded, shift_right
from pyro_seq.util import PyroNamed, check_call_shape, check_int, claim_pyro_name, record

#: Guide sites holding the Z-Forcing auxiliary terms, read by :class:`~pyro_seq.losses.ZForcingTrace_ELBO`.
AUX_SITE, BACKWARD_SITE = "aux_log_prob", "backward_log_prob"

#: Inputs of the auxiliary predictor p_xi(b_t | .): z_t alone or [h_{t-1}, z_t].
AUXILIARY_KINDS = (None, "z", "hz")


def check_auxiliary(auxiliary):
    """Validate an ``auxiliary`` option (``None``, ``"z"`` or ``"hz"``)."""
    if auxiliary not in AUXILIARY_KINDS:
        raise ValueError(f"auxiliary must be one of {AUXILIARY_KINDS}, got {auxiliary!r}")
    return auxiliary


def masked(values, mask):
    """``values [batch, time]`` with padded steps set to 0."""
    return values.masked_fill(~mask, 0.0)


class ZForcingGuide(PyroNamed, PyroModule):
    r"""
    Guide for :class:`~pyro_seq.models.ZForcing` (Goyal et al. 2017). A backward
    LSTM reads the frames from the end, :math:`b_t = \overleftarrow{\mathrm{LSTM}}(b_{t+1}, x_t)`
    (so :math:`b_t` summarises :math:`x_{t:T}`, the future of step :math:`t`),
    and the posterior conditions on it and on the model's forward state:

    .. math::

        q_\phi(z_{1:T} \mid x_{1:T}) = \prod_{t=1}^{T}
            \mathcal{N}\big(z_t \mid \mu^q(h_{t-1}, b_t),
                            \operatorname{diag} \sigma^q(h_{t-1}, b_t)^2\big),

    sampled step by step: :math:`h_t` is advanced with the sampled :math:`z_t`
    through the model's own LSTM (:meth:`~pyro_seq.models.ZForcing.advance`).

    With ``auxiliary`` set, the guide also records the Z-Forcing auxiliary
    terms in its trace (site ``"aux_log_prob"``, ``[batch, time]``):

    .. math::

        \log p_\xi\big(\operatorname{sg}(b_t) \mid z_t\big) \quad\text{or}\quad
        \log p_\xi\big(\operatorname{sg}(b_t) \mid h_{t-1}, z_t\big),

    a diagonal Gaussian whose mean and log-variance come from an MLP
    (:class:`~pyro_seq.nn.AuxiliaryGaussian`); :math:`\operatorname{sg}` stops
    the gradient, so the target :math:`b_t` is not moved towards what :math:`z_t`
    predicts. With ``backward_prediction=True`` it records
    ``"backward_log_prob"``: :math:`\log p(x_{t-1} \mid b_t)` from a linear head,
    the loss that trains the backward LSTM to predict the sequence in the
    original design. Neither term is part of any bound; the losses
    :class:`~pyro_seq.losses.ZForcingTrace_ELBO` and
    :class:`~pyro_seq.losses.ZForcingTraceMeanField_ELBO` add them to the
    training objective.

    Given a :class:`~pyro_seq.data.streaming.StreamCarry` (streamed chunks of long
    sequences, :mod:`pyro_seq.data.streaming`), the forward recurrence starts from
    the carried last frame and LSTM state :math:`(h_0, c_0)` (also the
    :math:`h_0` of the ``"hz"`` auxiliary input), and the guide records in the
    carry each row's last frame and LSTM state at its last valid frame
    (``"x"``, ``"h"``, ``"c"``) for the next chunk. The backward LSTM
    :math:`b_t` sees only the chunk (it restarts at every chunk end), so
    :math:`q` does not see the future beyond the chunk; the bound stays valid.

    :param model: the :class:`~pyro_seq.models.ZForcing` this guide serves.
    :param int b_dim: backward LSTM size (default ``model.h_dim``).
    :param int hidden_dim: posterior and auxiliary MLP width (default the model's).
    :param str auxiliary: ``None``, ``"z"`` or ``"hz"`` (inputs of :math:`p_\xi`).
    :param bool backward_prediction: record the backward prediction term.
    :param str name: Pyro name (default: the model's Pyro name + ``"_guide"``, fixed
        on the first run; see :class:`~pyro_seq.util.PyroNamed`).

    **References**

    [1] Anirudh Goyal, Alessandro Sordoni, Marc-Alexandre Côté, Nan Rosemary Ke,
        Yoshua Bengio, "Z-Forcing: Training Stochastic Recurrent Networks",
        NIPS 2017, arXiv:1711.05411.
    """

    def __init__(
        self, model, b_dim=None, hidden_dim=None, auxiliary="z", backward_prediction=True, name=None
    ):
        super().__init__("zforcing_guide" if name is None else name)
        self._init_pyro_name(name)
        object.__setattr__(self, "_model", model)  # not a submodule: one Pyro name per parameter
        b_dim = model.h_dim if b_dim is None else check_int("b_dim", b_dim, 1)
        hidden_dim = model.config["hidden_dim"] if hidden_dim is None else check_int("hidden_dim", hidden_dim, 1)
        self.auxiliary = check_auxiliary(auxiliary)
        self.backward_prediction = bool(backward_prediction)
        self.config = dict(
            b_dim=b_dim, hidden_dim=hidden_dim, auxiliary=auxiliary, backward_prediction=self.backward_prediction
        )
        self.b_rnn = nn.LSTM(model.x_dim, b_dim, batch_first=True)
        self.posterior = GaussianTransition(model.z_dim, b_dim, hidden_dim, model.min_scale, input_dim=model.h_dim)
        if auxiliary is not None:
            in_dim = model.z_dim + (model.h_dim if auxiliary == "hz" else 0)
            self.aux_net = AuxiliaryGaussian(in_dim, b_dim, hidden_dim)
        if self.backward_prediction:
            out_dim = model.x_dim if model.likelihood == "bernoulli" else 2 * model.x_dim
            self.backward_head = nn.Linear(b_dim, out_dim)

    @property
    def model(self):
        return self._model

    def _pyro_base_name(self):
        return claim_pyro_name(self.model) + "_guide"

    def backward_states(self, x, lengths):
        """:math:`b_{1:T}` over each sequence's own future: ``[batch, time, b_dim]``."""
        b_rev, _ = self.b_rnn(reverse_padded(x, lengths))  # [batch, time, b_dim]
        return reverse_padded(b_rev, lengths)

    def posterior_chain(self, x, mask, lengths, memo=None, carry=None):
        r"""
        The posterior :math:`q(z_{1:T} \mid x_{1:T})` as one distribution, and :math:`b_{1:T}`.

        :param carry: a :class:`~pyro_seq.data.streaming.StreamCarry` (the forward
            recurrence starts from its ``"x"``, ``"h"``, ``"c"``) or ``None``.
        :returns: ``(chain, e_x, b)``.
        """
        model = self.model
        b = self.backward_states(x, lengths)  # [batch, time, b_dim]
        context = self.posterior.project_context(b)  # [batch, time, hidden]
        steps = TimeSlices(context)  # the sampler's per-step views
        e_x = model.frame_inputs(x, carry)  # [batch, time, emb]
        state = None if carry is None else model.initial_state(x.shape[0], x, carry)  # (h_0, c_0) or None
        posterior = self.posterior
        chain = model.chain(
            e_x,
            lambda h_prev, t: posterior.step(h_prev, steps[t]),
            lambda h_prev: posterior(h_prev, context),
            mask,
            memo,
            state,
        )
        return chain, e_x, b

    def auxiliary_terms(self, x, mask, b, z, h_prev):
        """
        The auxiliary log densities (each ``[batch, time]``, 0 on padded steps).

        :param torch.Tensor b: ``[batch, time, b_dim]`` backward states (not yet detached).
        :param torch.Tensor z: ``[..., batch, time, z_dim]`` latent path.
        :param torch.Tensor h_prev: ``[..., batch, time, h_dim]`` forward states :math:`h_{t-1}`.
        :returns: dict with ``aux_log_prob`` (``[..., batch, time]``) and/or
            ``backward_log_prob`` (``[batch, time]``: it does not depend on ``z``).
        """
        terms = {}
        if self.auxiliary is not None:
            inputs = z if self.auxiliary == "z" else torch.cat([h_prev, z], dim=-1)
            terms[AUX_SITE] = masked(self.aux_net.log_prob(b.detach(), inputs), mask)  # [batch, time]
        if self.backward_prediction:
            model = self.model
            out = self.backward_head(b[:, 1:])  # [batch, time - 1, out]: predicts x_{t-1}
            lp = frame_distribution(out, model.likelihood, model.min_scale).log_prob(x[:, :-1]).sum(-1)
            lp = F.pad(lp, (1, 0))  # [batch, time]: nothing to predict before x_1
            terms[BACKWARD_SITE] = masked(lp, mask)
        return terms

    # ------------------------------------------------ sequential step protocol
    @pyro_method
    def filter_context(self, x, mask, ctx):
        """
        Step protocol (``DESIGN.md``, used by :mod:`pyro_seq.fivo`): the projected
        backward states. The auxiliary terms, not part of any bound, are left out.
        """
        self.sync_pyro_params()
        x, mask, lengths = self.model.check(x, mask)
        b = self.backward_states(x, lengths)  # [batch, time, b_dim]
        return {"context": self.posterior.project_context(b)}  # [batch, time, hidden]

    def filter_init(self, gctx):
        """Step protocol: no state of its own (the posterior reads the model's :math:`h_{t-1}`)."""
        return {}

    @pyro_method
    def filter_step(self, gctx, gstate, t, model_state=None, value=None):
        """
        Step protocol: draw :math:`z_t \\sim q(z_t \\mid h_{t-1}, b_t)` with
        :math:`h_{t-1}` from ``model_state`` (reparameterised), or score ``value``.

        :returns: ``(z_t [batch, z_dim], log_q [batch], gstate)``.
        """
        loc, scale = self.posterior.step(model_state["h"], gctx["context"][:, t])  # [batch, z_dim]
        q = dist.Normal(loc, scale, validate_args=False)
        if value is None:
            value = q.rsample()  # [batch, z_dim]
        return value, q.log_prob(value).sum(-1), gstate

    def forward(self, x, mask=None, carry=None, *, num_steps=None, batch_size=None, predict=False):
        """
        :param torch.Tensor x: ``[batch, time, x_dim]``
        :param torch.Tensor mask: ``[batch, time]`` bool prefix mask.
        :param carry: a :class:`~pyro_seq.data.streaming.StreamCarry` when ``x`` is a
            chunk of longer sequences; the guide records in it each row's last
            frame and LSTM state at its last valid frame (``"x"``, ``"h"``, ``"c"``)
            for the next chunk. The backward LSTM sees only the chunk.
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
        state = None if carry is None else model.initial_state(batch, x, carry)  # (h_0, c_0) or None
        with pyro.plate("sequences", batch, dim=-1):
            memo = {}
            chain, e_x, b = self.posterior_chain(x, mask, lengths, memo, carry)
            if model.fast:
                z = pyro.sample("z", chain)  # [batch, time, z_dim]
                if memo.get("z") is not z:  # replayed: recompute the forward path
                    memo["z"], memo["h"] = z, model.hidden_path(e_x, z, state)
                h = memo["h"]  # [batch, time, h_dim]
                model.share_path(x, e_x, z, h)
            else:
                z = chain.sample_steps("z")  # [batch, time, z_dim]
                h = model.hidden_path(e_x, z, state)  # [batch, time, h_dim]
            if self.auxiliary is not None or self.backward_prediction:
                h_0 = h.new_zeros(model.h_dim) if state is None else state[0]  # [h] or [batch, h]
                h_prev = shift_right(h, h_0)  # [..., batch, time, h]: h_{t-1}
                for name, value in self.auxiliary_terms(x, mask, b, z, h_prev).items():
                    record(name, value)
        if carry is not None:
            if z.dim() != 3:
                raise ValueError("a streaming carry holds one path per sequence: it takes no vectorised particles")
            rows = torch.arange(batch, device=x.device)
            last = (lengths - 1).to(x.device)  # [batch]
            h_end, c_end = model.end_state(e_x, z, lengths, state)  # each [batch, h_dim], at each row's last frame
            carry.put("x", x[rows, last])  # [batch, x_dim]: the next chunk's x_0
            carry.put("h", h_end)  # [batch, h_dim]
            carry.put("c", c_end)  # [batch, h_dim]
        return z
