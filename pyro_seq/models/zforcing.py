"""Z-Forcing (Goyal et al. 2017): a stochastic LSTM whose latents feed the recurrence."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn as nn
from pyro.nn import PyroModule, pyro_method
from torch.nn.utils.rnn import pack_padded_sequence

from pyro_seq.distributions import (
    RecurrentGaussianChain,
    frame_distribution,
    frame_log_prob,
    frame_mean,
    mask_frames,
)
from pyro_seq.models.srnn import LIKELIHOODS, check_emission
from pyro_seq.nn import (
    MADE,
    MLP,
    GaussianHead,
    TimeSlices,
    gaussian_log_prob,
    lstm_cell,
    recurrent_path,
    shift_right,
)
from pyro_seq.util import (
    GuideModelCache,
    PyroNamed,
    check_call_shape,
    check_int,
    check_probability,
    check_real,
    check_sequences,
    module_tensor,
    prior_call_shape,
)


class ZForcing(PyroNamed, PyroModule):
    r"""
    The Z-Forcing generative model of Goyal et al. (2017): a forward LSTM whose
    input at step :math:`t` is the previous frame and the current latent, so
    that :math:`z` enters the recurrence (unlike :class:`~pyro_seq.models.SRNN`,
    whose latents sit beside a deterministic layer):

    .. math::

        h_t &= \mathrm{LSTM}\big(h_{t-1}, [E x_{t-1}, F z_t]\big),
            \qquad x_0 = 0,\; h_0 = 0, \\
        p_\theta(x_{1:T}, z_{1:T}) &= \prod_{t=1}^{T}
            \mathcal{N}\big(z_t \mid \mu^p(h_{t-1}),
                            \operatorname{diag} \sigma^p(h_{t-1})^2\big)\;
            p_\theta(x_t \mid h_t).

    (In the paper's indexing the input at step :math:`t` is :math:`x_t` and
    the emission predicts :math:`x_{t+1}`; here the frames are shifted by one
    so that step :math:`t` scores :math:`x_t`.) The emission is Bernoulli
    (binary frames) or a diagonal Gaussian with a variance floor (real frames);
    padded steps (``mask`` False) are masked out of every term. With
    ``emission="made"`` the Bernoulli emission is autoregressive over the keys of a
    frame (:class:`~pyro_seq.distributions.MADEBernoulli`): a
    :class:`~pyro_seq.nn.MADE` (one hidden layer of ``hidden_dim``) conditioned on the
    emission MLP's hidden layer of :math:`h_t`, instead of independent keys. Prior means are
    soft-clamped to ±10 and scales to ``[min_scale, 10]``
    (:class:`~pyro_seq.nn.GaussianHead`), so long runs stay finite.

    Two equivalent forms of the latent path, as for SRNN:

    - ``fast=False``: per-step sites ``z_{t}`` and ``x_{t}`` inside ``pyro.markov``;
    - ``fast=True`` (default): one site ``"z"``
      (:class:`~pyro_seq.distributions.RecurrentGaussianChain`, sampled step by
      step, scored with one fused LSTM pass) and one emission site ``"x"``.

    Pyro habits, as for :class:`~pyro_seq.models.SRNN`: both forms broadcast over dims
    left of the ``"sequences"`` plate (vectorised particles,
    ``Predictive(parallel=True)``); ``model(None, num_steps=T, batch_size=B)`` samples
    new sequences step by step (sites ``z_{t}``, ``x_{t}``, and the deterministic
    whole paths ``"z"``, ``"x"``), which :meth:`generate` runs too; ``predict=True``
    samples the emission site given the observed past instead of scoring ``x``; under
    ``JitTrace_ELBO`` pass ``num_steps`` and ``batch_size``.

    The forward recurrence is used by :class:`~pyro_seq.guides.ZForcingGuide`
    too (:meth:`input_gates`, :meth:`advance`), never duplicated.

    Long sequences can be trained in chunks with carried state
    (:mod:`pyro_seq.data.streaming`): given a ``carry``, the chunk starts from the
    previous chunk's last frame and LSTM state (carried ``"x"``, ``"h"``,
    ``"c"``) instead of :math:`x_0 = 0,\; (h_0, c_0) = 0`.

    :param int x_dim: frame size.
    :param int emb_dim: size of the frame embedding :math:`E x` and the latent
        projection :math:`F z`.
    :param int h_dim: LSTM state size.
    :param int z_dim: latent size.
    :param int hidden_dim: hidden width of the prior and emission MLPs.
    :param str likelihood: ``"bernoulli"`` or ``"gaussian"``.
    :param bool fast: one sequence-level latent site (see above).
    :param float min_scale: variance floor (standard deviation).
    :param float dropout: dropout on the frame embedding and in the emission MLP.
    :param str emission: ``"bernoulli"`` (default: independent keys) or ``"made"``
        (autoregressive keys; ``likelihood="bernoulli"`` only). Stored in
        ``config["emission"]`` and as :attr:`emission_kind`.
    :param str name: Pyro name (default ``"zforcing"``, or with a suffix ``_1``, … when
        another model holds it; see :class:`~pyro_seq.util.PyroNamed`).

    **References**

    [1] Anirudh Goyal, Alessandro Sordoni, Marc-Alexandre Côté, Nan Rosemary Ke,
        Yoshua Bengio, "Z-Forcing: Training Stochastic Recurrent Networks",
        NIPS 2017, arXiv:1711.05411.
    [2] Mathieu Germain, Karol Gregor, Iain Murray, Hugo Larochelle,
        "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015,
        arXiv:1502.03509.
    """

    default_pyro_name = "zforcing"

    def __init__(
        self,
        x_dim=88,
        emb_dim=128,
        h_dim=256,
        z_dim=32,
        hidden_dim=256,
        likelihood="bernoulli",
        fast=True,
        min_scale=1e-3,
        dropout=0.0,
        emission="bernoulli",
        name=None,
    ):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        check_emission(emission, likelihood)
        x_dim, emb_dim, h_dim, z_dim, hidden_dim = (
            check_int(k, v, 1) for k, v in (("x_dim", x_dim), ("emb_dim", emb_dim), ("h_dim", h_dim), ("z_dim", z_dim), ("hidden_dim", hidden_dim))
        )
        min_scale = check_real("min_scale", min_scale, 0.0)
        dropout = check_probability("dropout", dropout, high_open=True)
        super().__init__(self.default_pyro_name if name is None else name)
        self._init_pyro_name(name)
        self.config = dict(
            x_dim=x_dim,
            emb_dim=emb_dim,
            h_dim=h_dim,
            z_dim=z_dim,
            hidden_dim=hidden_dim,
            likelihood=likelihood,
            fast=fast,
            min_scale=min_scale,
            dropout=dropout,
            emission=emission,
        )
        self.x_dim, self.emb_dim, self.h_dim, self.z_dim = x_dim, emb_dim, h_dim, z_dim
        self.likelihood = likelihood
        self.emission_kind = emission
        self.fast = fast
        self.min_scale = min_scale
        self.x_embed = nn.Linear(x_dim, emb_dim)
        self.z_embed = nn.Linear(z_dim, emb_dim)
        self.embed_dropout = nn.Dropout(dropout)
        self.rnn = nn.LSTM(2 * emb_dim, h_dim, batch_first=True)
        self.prior = GaussianHead(h_dim, z_dim, hidden_dim, min_scale)
        out_dim = x_dim if likelihood == "bernoulli" else 2 * x_dim
        if emission == "made":
            # the emission MLP up to its hidden layer: the MADE's context
            self.emitter = MLP(h_dim, [hidden_dim], None, dropout=dropout)
            self.made = MADE(x_dim, hidden_dim, [hidden_dim])
        else:
            self.emitter = MLP(h_dim, [hidden_dim], out_dim, dropout=dropout)
            self.made = None
        self.register_buffer("x_0", torch.zeros(x_dim))
        self.register_buffer("z_0", torch.zeros(z_dim))
        self._shared = GuideModelCache()

    # ------------------------------------------------------------------ helpers
    def check(self, x, mask=None):
        """Validate inputs; returns ``(x, mask, lengths)`` (see :func:`~pyro_seq.util.check_sequences`)."""
        return check_sequences(
            x,
            mask,
            x_dim=self.x_dim,
            binary=self.likelihood == "bernoulli",
            like=module_tensor(self),
        )

    def check_carry(self, carry, batch):
        """Refuse a carry that is not a :class:`~pyro_seq.data.streaming.StreamCarry` for ``batch`` rows
        (:func:`~pyro_seq.data.streaming.check_carry`)."""
        if carry is None:
            return
        from pyro_seq.data.streaming import check_carry  # not at import time: it loads pyro_seq.data

        check_carry(carry, batch)

    def frame_inputs(self, x, carry=None):
        """
        The frame half of the LSTM input, :math:`E x_{t-1}`, for all steps.

        :param torch.Tensor x: ``[batch, time, x_dim]``
        :param carry: a :class:`~pyro_seq.data.streaming.StreamCarry` whose ``"x"`` (the
            previous chunk's last frame) replaces :math:`x_0 = 0`, or ``None``.
        :returns: ``[batch, time, emb_dim]``
        """
        first = self.x_0 if carry is None else carry.get("x", self.x_0)  # [x_dim] or [batch, x_dim]
        return self.embed_dropout(self.x_embed(shift_right(x, first)))  # [batch, time, emb]

    def input_gates(self, e_x):
        """
        The LSTM gate pre-activations that do not depend on :math:`z`:
        :math:`W_{ih}^{(x)} E x_{t-1} + b_{ih} + b_{hh}`, vectorised over time.

        :param torch.Tensor e_x: ``[batch, time, emb_dim]`` from :meth:`frame_inputs`.
        :returns: ``[batch, time, 4 * h_dim]``
        """
        rnn = self.rnn
        w_x = rnn.weight_ih_l0[:, : self.emb_dim]  # [4h, emb]
        return e_x @ w_x.t() + rnn.bias_ih_l0 + rnn.bias_hh_l0  # [batch, time, 4h]

    def initial_state(self, batch, like, carry=None):
        """
        ``(h_0, c_0)``, each ``[batch, h_dim]``: zeros, or the previous chunk's
        LSTM state (``"h"``, ``"c"``) from ``carry`` on rows that continue a sequence.
        """
        h0 = like.new_zeros(batch, self.h_dim)  # [batch, h_dim]
        if carry is None:
            return h0, h0
        return carry.get("h", h0), carry.get("c", h0)  # each [batch, h_dim]

    def advance(self, gates_x_t, z_t, state):
        r"""
        One step of the forward recurrence, :math:`h_t = \mathrm{LSTM}(h_{t-1}, [E x_{t-1}, F z_t])`.

        :param torch.Tensor gates_x_t: ``[batch, 4 * h_dim]``, a time slice of :meth:`input_gates`.
        :param torch.Tensor z_t: ``[batch, z_dim]``.
        :param tuple state: ``(h_{t-1}, c_{t-1})``.
        :returns: ``(h_t, c_t)``.
        """
        rnn = self.rnn
        w_z = rnn.weight_ih_l0[:, self.emb_dim :]  # [4h, emb]
        gates = gates_x_t + self.z_embed(z_t) @ w_z.t()  # [batch, 4h]
        return lstm_cell(gates, state, rnn.weight_hh_l0)

    @property
    def _recurrence(self):
        return [self.x_embed, self.z_embed, self.rnn]

    def share_path(self, x, e_x, z, h):
        r"""
        Keep the guide's :math:`E x_{t-1}` and :math:`h_{1:T}` (computed while it sampled
        ``z``) for the next model call on the same ``x`` tensor that receives the same
        ``z`` tensor (replay): the model then skips its own LSTM pass, and both sides
        use one dropout mask. Any other call recomputes them.
        """
        self._shared.put(x, (z, e_x, h), self._recurrence)

    def hidden_path(self, e_x, z, state=None):
        """
        :math:`h_{1:T}` along a known latent path, in one fused LSTM pass.

        :param torch.Tensor e_x: ``[batch, time, emb_dim]``
        :param torch.Tensor z: ``[..., batch, time, z_dim]`` (leading particle dims allowed)
        :param tuple state: ``(h_0, c_0)``, each ``[batch, h_dim]`` (default zeros).
        :returns: ``[..., batch, time, h_dim]``
        """
        z_e = self.z_embed(z)  # [..., batch, time, emb]
        if z_e.dim() > 3:
            inputs = torch.cat([e_x.expand(z_e.shape[:-1] + e_x.shape[-1:]), z_e], dim=-1)
            return recurrent_path(self.rnn, inputs, state)[0]  # [..., batch, time, h_dim]
        inputs = torch.cat([e_x, z_e], dim=-1)  # [batch, time, 2 * emb]
        if state is None:
            h, _ = self.rnn(inputs)  # [batch, time, h_dim]
            return h
        h, _ = self.rnn(inputs, tuple(s.unsqueeze(0).contiguous() for s in state))  # [batch, time, h_dim]
        return h

    @torch.no_grad()
    def end_state(self, e_x, z, lengths, state=None):
        """
        The LSTM state :math:`(h_T, c_T)` at each row's own last frame (not the padded
        end of the batch), without gradient: what a streamed chunk hands to the next one.

        :param torch.Tensor e_x: ``[batch, time, emb_dim]``
        :param torch.Tensor z: ``[batch, time, z_dim]``
        :param torch.Tensor lengths: ``[batch]`` valid frames per row (each >= 1).
        :param tuple state: ``(h_0, c_0)``, each ``[batch, h_dim]`` (default zeros).
        :returns: ``(h_T, c_T)``, each ``[batch, h_dim]``.
        """
        inputs = torch.cat([e_x, self.z_embed(z)], dim=-1)  # [batch, time, 2 * emb]
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hx = None if state is None else tuple(s.unsqueeze(0).contiguous() for s in state)
        _, (h_n, c_n) = self.rnn(packed, hx)  # each [1, batch, h_dim], in the rows' order
        return h_n[0], c_n[0]

    def emission(self, h):
        """
        The distribution of :math:`x_t` given :math:`h_t [..., h_dim]`: batch shape ``[..., x_dim]``,
        or with ``emission="made"`` a :class:`~pyro_seq.distributions.MADEBernoulli` of batch
        shape ``[...]`` and event shape ``[x_dim]``.
        """
        out = self.emitter(h)  # [..., out_dim] (made: the context [..., hidden_dim])
        return frame_distribution(out, self.likelihood, self.min_scale, made=self.made)

    def chain(self, e_x, step_params, path_params, mask=None, memo=None, state=None):
        r"""
        A :class:`~pyro_seq.distributions.RecurrentGaussianChain` over :math:`z_{1:T}`
        whose step ``t`` parameters are ``step_params(h_{t-1}, t)`` (sampling: the
        recurrence advances with each sampled :math:`z`) or
        ``path_params(h_{0:T-1})`` (scoring a known path, one LSTM pass). Used
        for the prior here and for the posterior in the guide.

        :param dict memo: if given, the hidden path computed while sampling or
            scoring is stored there as ``memo["z"], memo["h"]`` (``h_{1:T}``), and
            reused when the same ``z`` tensor is scored again.
        :param tuple state: ``(h_0, c_0)``, each ``[batch, h_dim]`` (default zeros;
            a streamed chunk's carried state, see :meth:`initial_state`).
        """
        batch, time = e_x.shape[:2]
        gates_x = self.input_gates(e_x)  # [batch, time, 4h]
        gates_steps = TimeSlices(gates_x)
        memo = {} if memo is None else memo
        loop = {}

        def step_fn(z_prev, t):
            if t == 0:
                loop["state"] = self.initial_state(batch, e_x) if state is None else state
                loop["hs"] = []
            else:
                loop["state"] = self.advance(gates_steps[t - 1], z_prev, loop["state"])
                loop["hs"].append(loop["state"][0])
            return step_params(loop["state"][0], t)

        def path_fn(z):
            h = memo["h"] if memo.get("z") is z else self.hidden_path(e_x, z, state)  # [batch, time, h]
            memo["z"], memo["h"] = z, h
            h_0 = h.new_zeros(self.h_dim) if state is None else state[0]  # [h] or [batch, h]
            h_prev = shift_right(h, h_0)  # [batch, time, h]: h_{t-1}
            return path_params(h_prev)

        def on_sample(z):
            # complete h_{1:T} with the last step and keep it (the emission needs it)
            h_last, _ = self.advance(gates_steps[time - 1], z[..., -1, :], loop["state"])
            hs = loop["hs"] + [h_last]
            lead = h_last.shape[:-1]
            hs = [h if h.shape[:-1] == lead else h.expand(lead + h.shape[-1:]) for h in hs]
            memo["z"], memo["h"] = z, torch.stack(hs, dim=-2)  # [..., batch, time, h]

        z_init = self.z_0.expand(batch, self.z_dim)  # [batch, z_dim]
        return RecurrentGaussianChain(z_init, step_fn, path_fn, time, mask, on_sample=on_sample)

    def prior_chain(self, e_x, mask=None, memo=None, state=None):
        r"""The prior :math:`p(z_{1:T} \mid x)` as one distribution (see :meth:`chain`)."""
        prior = self.prior
        return self.chain(e_x, lambda h_prev, t: prior(h_prev), lambda h_prev: prior(h_prev), mask, memo, state)

    # -------------------------------------------------------------------- model
    def forward(self, x=None, mask=None, carry=None, *, num_steps=None, batch_size=None, predict=False):
        """
        :param torch.Tensor x: ``[batch, time, x_dim]`` observed frames (zero-padded), or
            ``None`` to sample new sequences (:meth:`sample_prior`).
        :param torch.Tensor mask: ``[batch, time]`` bool prefix mask (default: all True).
        :param carry: a :class:`~pyro_seq.data.streaming.StreamCarry` when ``x`` is a
            chunk of longer sequences (its rows continue from the previous chunk's
            last frame and LSTM state).
        :param int num_steps: ``time``: required without ``x`` and ``mask``, and under
            ``JitTrace_ELBO``; else checked against ``x``.
        :param int batch_size: ``batch``: as ``num_steps``.
        :param bool predict: sample the emission site given the observed past instead of
            scoring ``x`` (posterior-predictive draws).
        :returns: the latent path ``z [batch, time, z_dim]`` (with leading particle or
            sample dims under vectorised plates).
        """
        self.sync_pyro_params()
        if x is None:
            if carry is not None:
                raise ValueError("carry continues observed sequences; sampling new ones (x=None) takes none")
            return self.sample_prior(mask, num_steps, batch_size)
        x, mask, _ = self.check(x, mask)
        batch, time, _ = x.shape
        check_call_shape(batch, time, num_steps, batch_size)
        self.check_carry(carry, batch)
        obs = None if predict else x
        shared = self._shared.take(x, self._recurrence)  # (z, e_x, h) from the guide, or None
        e_x = self.frame_inputs(x, carry) if shared is None else shared[1]  # [batch, time, emb]
        state = None if carry is None else self.initial_state(batch, x, carry)  # (h_0, c_0) or None
        with pyro.plate("sequences", batch, dim=-1):
            if self.fast:
                memo = {} if shared is None else {"z": shared[0], "h": shared[2]}
                z = pyro.sample("z", self.prior_chain(e_x, mask, memo, state))  # [..., batch, time, z_dim]
                if memo.get("z") is not z:  # scored or replayed: one fused pass
                    memo["z"], memo["h"] = z, self.hidden_path(e_x, z, state)
                h = memo["h"]  # [..., batch, time, h_dim]
                pyro.sample("x", mask_frames(self.emission(h), mask), obs=obs)  # event [time, x_dim]
                return z
            gates_x = self.input_gates(e_x)  # [batch, time, 4h]
            state = self.initial_state(batch, x) if state is None else state
            zs = []
            for t in pyro.markov(range(time)):
                loc, scale = self.prior(state[0])  # [..., batch, z_dim]
                z_t = pyro.sample(f"z_{t + 1}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t]))
                state = self.advance(gates_x[:, t], z_t, state)
                pyro.sample(
                    f"x_{t + 1}",
                    mask_frames(self.emission(state[0]), mask[:, t]),
                    obs=None if obs is None else obs[:, t],
                )
                zs.append(z_t)
            return torch.stack(zs, dim=-2)  # [..., batch, time, z_dim]

    def sample_prior(self, mask=None, num_steps=None, batch_size=None, means=None):
        r"""
        The model without data (``forward(None, ...)``): new sequences, step by step
        (:math:`z_t` from the prior, :math:`h_t` from the previous *sampled* frame and
        :math:`z_t`, :math:`x_t` from the emission), at sites ``z_{t}``, ``x_{t}`` in
        ``pyro.markov`` and the deterministic sites ``"z"`` and ``"x"`` (whole paths,
        padded frames zero).

        :param torch.Tensor mask: ``[batch, time]`` prefix mask of the steps that count
            (all True if ``None``; padded steps are sampled but score nothing).
        :param list means: if given, receives the mean frame of each step
            (:func:`~pyro_seq.distributions.frame_mean`, ``[..., batch, x_dim]``).
        :returns: ``z [..., batch, time, z_dim]``.
        """
        batch, time = prior_call_shape(mask, num_steps, batch_size)
        like = module_tensor(self)
        _, mask, _ = self.check(like.new_zeros(batch, time, self.x_dim), mask)
        x_prev = self.x_0.expand(batch, self.x_dim)
        state = self.initial_state(batch, self.x_0)
        zs, xs = [], []
        with pyro.plate("sequences", batch, dim=-1):
            for t in pyro.markov(range(time)):
                loc, scale = self.prior(state[0])  # [..., batch, z_dim]
                z_t = pyro.sample(f"z_{t + 1}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t]))
                gates_x = self.input_gates(self.embed_dropout(self.x_embed(x_prev)))  # [..., batch, 4h]
                state = self.advance(gates_x, z_t, state)
                emission = self.emission(state[0])
                x_prev = pyro.sample(f"x_{t + 1}", mask_frames(emission, mask[:, t]))  # [..., batch, x_dim]
                if means is not None:
                    means.append(frame_mean(emission, x_prev))
                zs.append(z_t)
                xs.append(x_prev)
            z = torch.stack(zs, dim=-2)  # [..., batch, time, z_dim]
            x = torch.stack(xs, dim=-2) * mask.unsqueeze(-1)  # [..., batch, time, x_dim]
            pyro.deterministic("z", z, event_dim=2)
            pyro.deterministic("x", x, event_dim=2)
        return z

    # ------------------------------------------------ sequential step protocol
    @pyro_method
    def filter_context(self, x, mask=None):
        """
        Step protocol (``DESIGN.md``, used by :mod:`pyro_seq.fivo`): the frames and
        the LSTM gate pre-activations of :math:`x_{t-1}`.

        :returns: dict ``x [batch, time, x_dim]``, ``mask [batch, time]``,
            ``gates_x [batch, time, 4 * h_dim]``.
        """
        self.sync_pyro_params()
        x, mask, _ = self.check(x, mask)
        gates_x = self.input_gates(self.frame_inputs(x))  # [batch, time, 4h]
        return {"x": x, "mask": mask, "gates_x": gates_x}

    def filter_init(self, ctx):
        """Step protocol: ``{"h": h_0, "c": c_0}``, each ``[batch, h_dim]``."""
        h, c = self.initial_state(ctx["x"].shape[0], ctx["x"])
        return {"h": h, "c": c}

    @pyro_method
    def filter_step(self, ctx, state, t, z_t):
        """
        Step protocol: :math:`\\log p(z_t \\mid h_{t-1}) + \\log p(x_t \\mid h_t)`,
        ``[batch]`` (unmasked), and the next state :math:`(h_t, c_t)`.
        """
        loc, scale = self.prior(state["h"])  # [batch, z_dim]
        log_p = gaussian_log_prob(z_t, loc, scale).sum(-1)  # [batch]
        h, c = self.advance(ctx["gates_x"][:, t], z_t, (state["h"], state["c"]))
        log_p = log_p + frame_log_prob(self.emission(h), ctx["x"][:, t])  # [batch]
        return log_p, {"h": h, "c": c}

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, num_sequences, num_steps, mean_frames=False):
        """
        Sample sequences free-running: :math:`z_t` from the prior, :math:`h_t`
        from the sampled previous frame and :math:`z_t`, :math:`x_t` from the
        emission.

        :returns: ``x [num_sequences, num_steps, x_dim]`` (and the means if asked).

        It runs :meth:`sample_prior` in evaluation mode without gradients: the same code
        and random numbers as ``model(None, num_steps=num_steps, batch_size=num_sequences)``.
        """
        if num_sequences < 1 or num_steps < 1:
            raise ValueError("num_sequences and num_steps must be >= 1")
        self.sync_pyro_params()  # values loaded into Pyro's param store reach the module
        was_training = self.training
        self.eval()
        means = [] if mean_frames else None
        try:
            # the model without data (its sample sites just sample), recorded to read "x"
            with poutine.trace() as tape:
                self.sample_prior(num_steps=num_steps, batch_size=num_sequences, means=means)
        finally:
            self.train(was_training)
        x = tape.trace.nodes["x"]["value"]  # [n, T, x_dim]
        return (x, torch.stack(means, dim=1)) if mean_frames else x
