"""The stochastic recurrent neural network (SRNN) of Fraccaro et al. (2016)."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn as nn
from pyro.nn import PyroModule, pyro_method

from pyro_seq.distributions import (
    MarkovGaussianChain,
    frame_distribution,
    frame_log_prob,
    frame_mean,
    mask_frames,
)
from pyro_seq.nn import (
    MADE,
    MLP,
    GaussianTransition,
    TimeSlices,
    broadcast_cat,
    gaussian_log_prob,
    recurrent_step,
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

#: Frame likelihoods: ``"bernoulli"`` for binary frames (piano rolls, binarized images) or
#: ``"gaussian"`` (a diagonal Normal, e.g. audio frames).
LIKELIHOODS = ("bernoulli", "gaussian")
#: Frame emissions of the binary-frame models: keys independent given the state, or autoregressive.
EMISSIONS = ("bernoulli", "made")


def check_emission(emission, likelihood):
    """Refuse an unknown ``emission``, or ``"made"`` (binary frames) with a non-Bernoulli likelihood."""
    if emission not in EMISSIONS:
        raise ValueError(f"emission must be one of {EMISSIONS}, got {emission!r}")
    if emission == "made" and likelihood != "bernoulli":
        raise ValueError(
            f"emission='made' is a distribution over binary frames: it needs likelihood='bernoulli', "
            f"got likelihood={likelihood!r}"
        )


class SRNN(PyroNamed, PyroModule):
    r"""
    Stochastic recurrent neural network (SRNN) of Fraccaro et al. (2016): a
    deterministic GRU layer :math:`d_t` over the past frames, a nonlinear
    Gaussian state-space layer :math:`z_t` stacked on it, and an emission
    from both:

    .. math::

        d_t &= \mathrm{GRU}(d_{t-1}, x_{t-1}), \qquad x_0 = 0, \\
        p_\theta(x_{1:T}, z_{1:T} \mid d_{1:T}) &= \prod_{t=1}^{T}
            \mathcal{N}\big(z_t \mid \mu^p(z_{t-1}, d_t),
                            \operatorname{diag} \sigma^p(z_{t-1}, d_t)^2\big)\;
            p_\theta(x_t \mid z_t, d_t),

    with :math:`z_0 = 0`, a Bernoulli emission (binary frames such as piano
    rolls) or a diagonal Gaussian emission with a variance floor (real frames).
    Padded steps (``mask`` False) are masked out of every term.

    The Bernoulli emission has independent keys given :math:`(z_t, d_t)`
    (``emission="bernoulli"``), or, with ``emission="made"``, is autoregressive over
    the keys of a frame (:class:`~pyro_seq.distributions.MADEBernoulli`, as the
    RNN-NADE of Boulanger-Lewandowski et al. 2012): a :class:`~pyro_seq.nn.MADE`
    (one hidden layer of ``hidden_dim``) conditioned on the emission MLP's last hidden
    layer, the features that give the logits of the independent emission:

    .. math::

        p_\theta(x_t \mid z_t, d_t) = \prod_{k=1}^{D}
            \mathrm{Bernoulli}\big(x_{t,k} \mid \sigma(\ell_k(x_{t,<k}, f(z_t, d_t)))\big).

    Long sequences can be trained in chunks with carried state
    (:mod:`pyro_seq.data.streaming`): given a ``carry``, the chunk starts from the
    previous chunk's :math:`d`, last frame and last :math:`z` instead of
    :math:`d_0 = 0, x_0 = 0, z_0 = 0`.

    Since :math:`d_{1:T}` depends on :math:`x` only, it is computed once per
    sequence for all steps, and shared with :class:`~pyro_seq.guides.SRNNGuide`
    within one ELBO evaluation (the guide computes it, the model reuses it).

    Two equivalent forms of the latent chain:

    - ``fast=False``: the readable reference, one sample site ``z_{t}`` and one
      emission site ``x_{t}`` per step inside ``pyro.markov``.
    - ``fast=True`` (default): one sample site ``"z"`` holding the whole path
      (:class:`~pyro_seq.distributions.MarkovGaussianChain`, which runs the
      recurrence when sampling and scores a path vectorised over time), and one
      emission site ``"x"`` over all steps. Same bound, same gradients, same
      random numbers; much less Pyro bookkeeping per SVI step.

    Both forms broadcast over batch dimensions left of the ``"sequences"`` plate, so
    ``Trace_ELBO(num_particles=K, vectorize_particles=True)`` and
    ``Predictive(..., parallel=True)`` run the ``K`` particles in one pass.

    Without data, ``model(None, num_steps=T, batch_size=B)`` (or
    ``model(None, mask)``) samples new sequences, the Pyro ``obs=None`` idiom:
    the frames feed :math:`d_t`, so in both forms it samples step by step, at sites
    ``z_{t}`` and ``x_{t}`` inside ``pyro.markov``, and records the whole paths at
    the deterministic sites ``"z"`` and ``"x"`` (``[batch, T, ·]``, padded frames
    zero). ``Predictive(model, num_samples=S)(None, num_steps=T, batch_size=B)["x"]``
    are prior-predictive draws ``[S, B, T, x_dim]``; :meth:`generate` runs the same
    code. With data and ``predict=True`` the emission site is sampled instead of
    scored (one-step-ahead draws :math:`\tilde x_t \sim p(x_t \mid z_t, d_t)` given
    the *observed* past; padded steps are drawn too), so ``Predictive(model,
    guide=guide, num_samples=S)(x, mask, predict=True)["x"]`` are posterior-predictive
    draws; guides accept and ignore ``predict``. Under ``JitTrace_ELBO`` pass ``num_steps`` and ``batch_size`` (see
    :func:`~pyro_seq.util.check_call_shape`).

    :param int x_dim: frame size (88 for piano rolls).
    :param int d_dim: deterministic GRU state size.
    :param int z_dim: latent size.
    :param int hidden_dim: hidden width of the transition and emission MLPs.
    :param str likelihood: ``"bernoulli"`` or ``"gaussian"``.
    :param bool fast: sequence-level latent site (see above).
    :param float min_scale: variance floor (standard deviation) of every
        Gaussian.
    :param float dropout: dropout on the GRU input :math:`x_{t-1}` and after
        each hidden layer of the emission MLP (training mode only).
    :param str emission: ``"bernoulli"`` (default: independent keys) or ``"made"``
        (autoregressive keys; ``likelihood="bernoulli"`` only). Stored in
        ``config["emission"]`` and as :attr:`emission_kind`.
    :param str name: Pyro name, the prefix of the parameters' names in Pyro's param
        store (default: ``"srnn"``, or ``"srnn_1"``, ``"srnn_2"``, … when another model
        holds it; see :class:`~pyro_seq.util.PyroNamed`).

    **References**

    [1] Marco Fraccaro, Søren Kaae Sønderby, Ulrich Paquet, Ole Winther,
        "Sequential Neural Models with Stochastic Layers", NIPS 2016,
        arXiv:1605.07571.
    [2] Nicolas Boulanger-Lewandowski, Yoshua Bengio, Pascal Vincent, "Modeling
        Temporal Dependencies in High-Dimensional Sequences: Application to
        Polyphonic Music Generation and Transcription", ICML 2012, arXiv:1206.6392.
    [3] Mathieu Germain, Karol Gregor, Iain Murray, Hugo Larochelle,
        "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015,
        arXiv:1502.03509.
    """

    default_pyro_name = "srnn"

    def __init__(
        self,
        x_dim=88,
        d_dim=300,
        z_dim=100,
        hidden_dim=500,
        likelihood="bernoulli",
        fast=True,
        min_scale=1e-3,
        dropout=0.0,
        emission="bernoulli",
        name=None,
    ):
        if likelihood not in LIKELIHOODS:
            raise ValueError(
                f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}"
            )
        check_emission(emission, likelihood)
        x_dim, d_dim, z_dim, hidden_dim = (check_int(k, v, 1) for k, v in (("x_dim", x_dim), ("d_dim", d_dim), ("z_dim", z_dim), ("hidden_dim", hidden_dim)))
        min_scale = check_real("min_scale", min_scale, 0.0)
        dropout = check_probability("dropout", dropout, high_open=True)
        super().__init__(self.default_pyro_name if name is None else name)
        self._init_pyro_name(name)
        self.config = dict(
            x_dim=x_dim,
            d_dim=d_dim,
            z_dim=z_dim,
            hidden_dim=hidden_dim,
            likelihood=likelihood,
            fast=fast,
            min_scale=min_scale,
            dropout=dropout,
            emission=emission,
        )
        self.x_dim, self.d_dim, self.z_dim = x_dim, d_dim, z_dim
        self.likelihood = likelihood
        self.emission_kind = emission
        self.fast = fast
        self.min_scale = min_scale
        self.d_rnn = nn.GRU(x_dim, d_dim, batch_first=True)
        self.prior = GaussianTransition(z_dim, d_dim, hidden_dim, min_scale)
        out_dim = x_dim if likelihood == "bernoulli" else 2 * x_dim
        self.input_dropout = nn.Dropout(dropout)
        if emission == "made":
            # the emission MLP up to its last hidden layer: the MADE's context
            self.emitter = MLP(z_dim + d_dim, [hidden_dim, hidden_dim], None, dropout=dropout)
            self.made = MADE(x_dim, hidden_dim, [hidden_dim])
        else:
            self.emitter = MLP(z_dim + d_dim, [hidden_dim, hidden_dim], out_dim, dropout=dropout)
            self.made = None
        self.register_buffer("x_0", torch.zeros(x_dim))
        self.register_buffer("z_0", torch.zeros(z_dim))
        self._d_cache = GuideModelCache()

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

    def deterministic(self, x, carry=None):
        r"""
        The deterministic layer :math:`d_{1:T}` over :math:`x_{<t}`.

        Reuses the value the guide computed for the same ``x`` tensor in the
        same ELBO evaluation (same parameters, same grad mode), else computes it.

        :param torch.Tensor x: ``[batch, time, x_dim]``
        :param carry: a :class:`~pyro_seq.data.streaming.StreamCarry` (``"x"``, ``"h"``:
            the previous chunk's last frame and GRU state), or ``None``.
        :returns: ``d [batch, time, d_dim]``
        """
        d_rnn = self.d_rnn  # registers its parameters with Pyro when running as a model
        d = self._d_cache.take(x, [d_rnn])
        if d is not None:
            return d
        if carry is None:
            u = self.input_dropout(shift_right(x, self.x_0))  # [batch, time, x_dim]: x_{t-1}
            d, _ = d_rnn(u)  # [batch, time, d_dim]
            return d
        first = carry.get("x", self.x_0)  # [batch, x_dim]
        h_0 = carry.get("h", self.x_0.new_zeros(self.d_dim))  # [batch, d_dim]
        u = self.input_dropout(shift_right(x, first))  # [batch, time, x_dim]
        d, _ = d_rnn(u, h_0.unsqueeze(0).contiguous())  # [batch, time, d_dim]
        return d

    def share_deterministic(self, x, carry=None):
        """Compute :math:`d_{1:T}` and keep it for the next model call on ``x``."""
        d = self.deterministic(x, carry)
        self._d_cache.put(x, d, [self.d_rnn])
        return d

    def initial_z(self, batch, carry=None):
        """:math:`z_0`: zeros, or the previous chunk's last sample from ``carry``; ``[batch, z_dim]``."""
        if carry is None:
            return self.z_0.expand(batch, self.z_dim)
        return carry.get("z", self.z_0)

    def check_carry(self, carry, batch):
        """Refuse a carry that is not a :class:`~pyro_seq.data.streaming.StreamCarry` for ``batch`` rows
        (:func:`~pyro_seq.data.streaming.check_carry`)."""
        if carry is None:
            return
        from pyro_seq.data.streaming import check_carry  # not at import time: it loads pyro_seq.data

        check_carry(carry, batch)

    def emission(self, z, d):
        """
        The emission distribution, batched over any leading dims.

        :param torch.Tensor z: ``[..., z_dim]``
        :param torch.Tensor d: ``[..., d_dim]``
        :returns: a :func:`~pyro_seq.distributions.frame_distribution`: batch shape
            ``[..., x_dim]``, or with ``emission="made"`` a
            :class:`~pyro_seq.distributions.MADEBernoulli` of batch shape ``[...]``
            and event shape ``[x_dim]`` (see :func:`~pyro_seq.distributions.mask_frames`).
        """
        out = self.emitter(broadcast_cat([z, d]))  # [..., out_dim] (made: the context [..., hidden_dim])
        return frame_distribution(out, self.likelihood, self.min_scale, made=self.made)

    def prior_chain(self, d, mask=None, z_init=None):
        """The latent path prior :math:`p(z_{1:T} \\mid d_{1:T})` as one distribution."""
        prior = self.prior
        context = prior.project_context(d)  # [batch, time, hidden]
        steps = TimeSlices(context)
        return MarkovGaussianChain(
            self.z_0.expand(d.shape[0], self.z_dim) if z_init is None else z_init,
            step_fn=lambda z_prev, t: prior.step(z_prev, steps[t]),
            path_fn=lambda z_prev: prior(z_prev, context),
            num_steps=d.shape[1],
            mask=mask,
        )

    # -------------------------------------------------------------------- model
    def forward(self, x=None, mask=None, carry=None, *, num_steps=None, batch_size=None, predict=False):
        """
        :param torch.Tensor x: ``[batch, time, x_dim]`` observed frames (zero-padded), or
            ``None`` to sample new sequences (see the class notes).
        :param torch.Tensor mask: ``[batch, time]`` bool prefix mask (default: all True).
        :param carry: a :class:`~pyro_seq.data.streaming.StreamCarry` when ``x`` is a
            chunk of longer sequences (its rows continue from the previous chunk).
        :param int num_steps: ``time``: required without ``x`` and ``mask``, and under
            ``JitTrace_ELBO``; else checked against ``x``.
        :param int batch_size: ``batch``: as ``num_steps``.
        :param bool predict: sample the emission site ``"x"`` (or ``x_{t}``) given the
            observed past instead of scoring ``x`` (posterior-predictive draws).
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
        d = self.deterministic(x, carry)  # [batch, time, d_dim]
        z_init = self.initial_z(batch, carry)  # [batch, z_dim]
        with pyro.plate("sequences", batch, dim=-1):
            if self.fast:
                z = pyro.sample("z", self.prior_chain(d, mask, z_init))  # [..., batch, time, z_dim]
                pyro.sample("x", mask_frames(self.emission(z, d), mask), obs=obs)  # event [time, x_dim]
                return z
            prior = self.prior
            context = prior.project_context(d)  # [batch, time, hidden]
            z_prev = z_init  # [batch, z_dim]
            zs = []
            for t in pyro.markov(range(time)):
                loc, scale = prior.step(z_prev, context[:, t])  # [..., batch, z_dim]
                z_prev = pyro.sample(
                    f"z_{t + 1}",
                    dist.Normal(loc, scale).to_event(1).mask(mask[:, t]),
                )
                pyro.sample(
                    f"x_{t + 1}",
                    mask_frames(self.emission(z_prev, d[:, t]), mask[:, t]),  # event [x_dim]
                    obs=None if obs is None else obs[:, t],
                )
                zs.append(z_prev)
            return torch.stack(zs, dim=-2)  # [..., batch, time, z_dim]

    def sample_prior(self, mask=None, num_steps=None, batch_size=None, means=None):
        r"""
        The model without data (``forward(None, ...)``): new sequences, step by step
        (:math:`d_t` from the previous *sampled* frame, :math:`z_t` from the prior,
        :math:`x_t` from the emission), at sites ``z_{t}``, ``x_{t}`` in ``pyro.markov``
        and the deterministic sites ``"z"`` and ``"x"`` (whole paths, padded frames zero).

        :param torch.Tensor mask: ``[batch, time]`` prefix mask of the steps that count
            (all True if ``None``; padded steps are sampled but score nothing).
        :param list means: if given, receives the mean frame of each step
            (:func:`~pyro_seq.distributions.frame_mean`, ``[..., batch, x_dim]``).
        :returns: ``z [..., batch, time, z_dim]``.
        """
        batch, time = prior_call_shape(mask, num_steps, batch_size)
        like = module_tensor(self)
        _, mask, _ = self.check(like.new_zeros(batch, time, self.x_dim), mask)
        prior = self.prior
        x_prev, h = self.x_0.expand(batch, self.x_dim), None  # GRU state: none before the first step
        z_prev = self.z_0.expand(batch, self.z_dim)
        zs, xs = [], []
        with pyro.plate("sequences", batch, dim=-1):
            for t in pyro.markov(range(time)):
                d_t, h = recurrent_step(self.d_rnn, self.input_dropout(x_prev), h)  # [..., batch, d_dim]
                loc, scale = prior.step(z_prev, prior.project_context(d_t))  # [..., batch, z_dim]
                z_prev = pyro.sample(f"z_{t + 1}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t]))
                emission = self.emission(z_prev, d_t)
                x_prev = pyro.sample(f"x_{t + 1}", mask_frames(emission, mask[:, t]))  # [..., batch, x_dim]
                if means is not None:
                    means.append(frame_mean(emission, x_prev))
                zs.append(z_prev)
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
        Step protocol (``DESIGN.md``, used by :mod:`pyro_seq.fivo`): the frames,
        :math:`d_{1:T}` and its projection into the prior transition.

        :returns: dict ``x [batch, time, x_dim]``, ``mask [batch, time]``,
            ``d [batch, time, d_dim]``, ``prior_context [batch, time, hidden]``.
        """
        self.sync_pyro_params()
        x, mask, _ = self.check(x, mask)
        d = self.deterministic(x)  # [batch, time, d_dim]
        prior_context = self.prior.project_context(d)  # [batch, time, hidden]
        return {"x": x, "mask": mask, "d": d, "prior_context": prior_context}

    def filter_init(self, ctx):
        """Step protocol: ``{"z": z_0}``, ``[batch, z_dim]``."""
        return {"z": self.z_0.expand(ctx["x"].shape[0], self.z_dim)}

    @pyro_method
    def filter_step(self, ctx, state, t, z_t):
        """
        Step protocol: :math:`\\log p(z_t \\mid z_{t-1}, d_t) + \\log p(x_t \\mid z_t, d_t)`,
        ``[batch]`` (unmasked), and the next state ``{"z": z_t}``.
        """
        loc, scale = self.prior.step(state["z"], ctx["prior_context"][:, t])  # [batch, z_dim]
        log_p = gaussian_log_prob(z_t, loc, scale).sum(-1)  # [batch]
        emission = self.emission(z_t, ctx["d"][:, t])  # frames of batch shape [batch]
        log_p = log_p + frame_log_prob(emission, ctx["x"][:, t])  # [batch]
        return log_p, {"z": z_t}

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, num_sequences, num_steps, mean_frames=False):
        """
        Sample new sequences free-running from the model:
        :math:`d_t` from the previous sampled frame, :math:`z_t` from the prior,
        :math:`x_t` from the emission.

        :param int num_sequences: how many sequences.
        :param int num_steps: their length.
        :param bool mean_frames: also return the emission means of the frames
            (the recurrence is always fed samples); with ``emission="made"``, whose
            mean has no closed form, the conditional key probabilities along each
            drawn frame (:func:`~pyro_seq.distributions.frame_mean`).
        :returns: ``x [num_sequences, num_steps, x_dim]`` (and the means if asked).

        It runs :meth:`sample_prior` in evaluation mode without gradients: the same code
        and random numbers as ``model(None, num_steps=num_steps, batch_size=num_sequences)``.
        """
        if num_sequences < 1 or num_steps < 1:
            raise ValueError("num_sequences and num_steps must be >= 1")
        self.sync_pyro_params()  # values loaded into Pyro's param store reach the module
        was_training = self.training
        self.eval()
        try:
            return self._generate(num_sequences, num_steps, mean_frames)
        finally:
            self.train(was_training)

    def _generate(self, num_sequences, num_steps, mean_frames):
        # the model without data (its sample sites just sample), recorded to read "x"
        means = [] if mean_frames else None
        with poutine.trace() as tape:
            self.sample_prior(num_steps=num_steps, batch_size=num_sequences, means=means)
        x = tape.trace.nodes["x"]["value"]  # [n, T, x_dim]
        if mean_frames:
            return x, torch.stack(means, dim=1)
        return x
