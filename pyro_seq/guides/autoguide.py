r"""
Structured amortised autoguides for any sequential Pyro model.

Pyro's autoguides (:mod:`pyro.infer.autoguide`) are mean-field and not
amortised: one free mean and scale per latent value, nothing shared between
sequences. The structured guides of :mod:`pyro_seq.guides` are amortised but
each reads the internals of one built-in model. The guides here sit between
the two: constructed from any Pyro model written with per-step latent sites
(``z_1 .. z_T`` in a ``pyro.markov`` loop, inside a plate over sequences),
they build a deep Markov posterior

.. math::

    q_\phi(z_{1:T} \mid x_{1:T}) = \prod_{t=1}^{T} \mathcal{N}\big(z_t \mid
        \mu_\phi(z_{t-1}, c_t),\, \operatorname{diag} \sigma_\phi^2(z_{t-1}, c_t)\big)^{m_t},
    \qquad c_t = [h_t, x_t],

with a GRU summary :math:`h_t` of the frames (backward for the smoother,
forward for the filter) and the model's own mask :math:`m_t`. The guide runs
the model itself, interleaved (as :class:`~pyro.infer.autoguide.AutoNormalMessenger`
does), so that at each latent site it sees the model's prior conditioned on
the guide's own :math:`z_{t-1}`; only the latent sites leave the guide, so its
trace is an ordinary guide trace (one log density per sequence) that every
Pyro ELBO and :mod:`pyro_seq.bounds` replay into the model.
"""

import re
from collections import OrderedDict

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn as nn
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.guides import prototype_hide_fn
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, MultivariateNormal, Normal, constraints

from pyro_seq.nn import MIN_SCALE, GaussianTransition, TimeSlices, reverse_padded
from pyro_seq.util import check_sequences

GUIDE_KINDS = ("smoother", "filter")

#: A per-step site name: a stem and a trailing time index (``z_1``, ``obs_z12``).
TIME_INDEX = re.compile(r"^(?P<stem>.*?)(?P<index>\d+)$")

_NAME_COUNTS = {}


def _unique_name(base):
    """``base`` for the first instance of a class, then ``base_1``, ``base_2``, ..."""
    count = _NAME_COUNTS.get(base, 0)
    _NAME_COUNTS[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def default_data(*args, **kwargs):
    """
    The default ``data`` of :class:`AutoSequenceGuide`: the observed frames are the
    model's first positional argument (or keyword ``x``); the mask is its second
    positional argument if that is a bool tensor (or keyword ``mask``), else none.

    :returns: ``(x, mask)``
    """
    x = kwargs["x"] if "x" in kwargs else (args[0] if args else None)
    if "mask" in kwargs:
        mask = kwargs["mask"]
    elif len(args) > 1 and torch.is_tensor(args[1]) and args[1].dtype == torch.bool:
        mask = args[1]
    else:
        mask = None
    return x, mask


def unwrap(fn):
    """
    Split a site's distribution into its wrappers (outermost first) and its base:
    ``Normal(...).to_event(1).mask(m)`` gives ``([("mask", m), ("event", 1)], Normal)``.
    Expansions are dropped (the guide expands its posterior to the prior's batch shape).
    """
    layers = []
    while True:
        if isinstance(fn, MaskedDistribution):
            layers.append(("mask", fn._mask))
        elif isinstance(fn, Independent):
            layers.append(("event", fn.reinterpreted_batch_ndims))
        elif isinstance(fn, ExpandedDistribution):
            pass
        else:
            return layers, fn
        fn = fn.base_dist


def _is_real(support):
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


class _Stream(nn.Module):
    r"""
    The posterior transition of one latent stream (``z_1 .. z_T``) and its learned
    :math:`z_0`: a two-layer MLP of :math:`[z_{t-1}, c_t]`
    (:class:`~pyro_seq.nn.GaussianTransition`) whose mean has a linear skip
    connection, :math:`\mu = \mathrm{MLP}_\mu(z_{t-1}, c_t) + W_z z_{t-1} + W_c c_t`,
    so that a posterior mean linear in :math:`z_{t-1}` and the frames (the Kalman
    smoother's) is in reach without the MLP having to emulate a linear map.
    """

    def __init__(self, z_dim, input_dim, context_dim, hidden_dim, min_scale, residual):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.transition = GaussianTransition(
            z_dim, context_dim, hidden_dim, min_scale, input_dim=input_dim
        )
        self.skip_z = nn.Linear(input_dim, z_dim, bias=False)
        self.skip_c = nn.Linear(context_dim, z_dim, bias=False)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))  # [z_dim]
        with torch.no_grad():
            self.skip_z.weight.zero_()
            self.skip_c.weight.zero_()
            if residual:  # a zero residual at initialisation: the guide's mean is the prior mean
                self.transition.loc_scale.weight[:z_dim].zero_()
                self.transition.loc_scale.bias[:z_dim].zero_()

    def project_context(self, c):
        """``c [batch, time, context_dim] -> [batch, time, hidden_dim + z_dim]``, all steps at once."""
        return torch.cat([self.transition.project_context(c), self.skip_c(c)], dim=-1)

    def step(self, inputs, context_t):
        """
        :param torch.Tensor inputs: ``[..., input_dim]``, the latest value of every stream.
        :param torch.Tensor context_t: ``[batch, hidden_dim + z_dim]`` (:meth:`project_context`).
        :returns: ``(loc, scale)``, each ``[..., z_dim]``.
        """
        context, skip = context_t.split([self.hidden_dim, self.skip_c.out_features], dim=-1)
        loc, scale = self.transition.step(inputs, context)  # [..., z_dim] each
        return loc + self.skip_z(inputs) + skip, scale


class _StreamInfo:
    """What the prototype trace says about one stream: its sites' stem, index offset and shape."""

    def __init__(self, stem, offset, event_shape):
        self.stem, self.offset, self.event_shape = stem, offset, event_shape
        self.z_dim = event_shape[0] if len(event_shape) else 1

    @property
    def label(self):
        return self.stem.rstrip("_") or self.stem

    def to_vector(self, value):
        """A site value ``[..., *event_shape]`` as ``[..., z_dim]``."""
        return value if len(self.event_shape) else value.unsqueeze(-1)

    def to_site(self, vector):
        """``[..., z_dim]`` as a site value ``[..., *event_shape]``."""
        return vector if len(self.event_shape) else vector.squeeze(-1)


class AutoSequenceGuide(AutoGuide):
    r"""
    A structured, amortised Gaussian guide for any sequential Pyro model with
    per-step latent sites: the base of :class:`AutoSequenceSmoother` and
    :class:`AutoSequenceFilter` (``kind`` chooses between them).

    For each latent *stream* (sites ``z_1 .. z_T``, or ``z_0 .. z_{T-1}``: a stem
    and a time index; several streams ``z_t, w_t`` per step are allowed)

    .. math::

        q_\phi(z_{1:T} \mid x_{1:T}) &= \prod_{t=1}^{T} \mathcal{N}\big(z_t \mid
            \mu_t,\, \operatorname{diag} \sigma_t^2\big)^{m_t}, \qquad
            (\mu_t, \sigma_t) = \mathrm{MLP}_\phi(z_{t-1}, [h_t, x_t]), \\
        h_t &= \overleftarrow{\mathrm{GRU}}(h_{t+1}, x_t) \;\; (\texttt{smoother}:\;
            q(z_t \mid z_{t-1}, x_{t:T})), \qquad
        h_t = \overrightarrow{\mathrm{GRU}}(h_{t-1}, x_t) \;\; (\texttt{filter}:\;
            q(z_t \mid z_{t-1}, x_{1:t})),

    with :math:`z_0` learned; the MLP's mean has a linear skip connection from
    its inputs (a linear-Gaussian posterior, as the Kalman smoother's, is then
    in easy reach). The backward GRU starts at each sequence's own
    last frame (padding is zeroed and reversed within lengths), so nothing
    beyond a sequence's length changes its posterior. :math:`m_t` is the
    model's own mask at the site (``.mask(...)`` on its distribution, or
    ``poutine.mask``): padded steps count in neither the model nor the guide.
    With several streams the MLP of each reads the latest value of every
    stream (this step's for the streams sampled before it, in model order).

    With ``residual=True`` the mean is a residual on the model's prior mean
    at the same :math:`z_{t-1}` (Res\ :sub:`q` of Fraccaro et al.):
    :math:`\mu_t = \mu^p_t(z_{t-1}) + \Delta\mu_\phi(z_{t-1}, [h_t, x_t])`, with
    :math:`\Delta\mu_\phi = 0` at initialisation.

    The guide is set up lazily on its first call from a prototype trace of the
    model (as Pyro's autoguides are): that fixes the streams, their latent
    sizes and the frame size, not the number of steps. On every call it runs
    the model interleaved (like :class:`~pyro.poutine.guide.GuideMessenger`):
    each latent site's prior, conditioned on the guide's earlier samples,
    is replaced by the posterior; every other site of the model (observations,
    its parameters, deterministic sites) is hidden, so the guide trace holds
    only the latent sites and the guide's own parameters, and the model must be
    replayed on it as usual (:class:`~pyro.infer.Trace_ELBO`,
    :class:`~pyro.infer.TraceMeanField_ELBO`,
    :class:`~pyro_seq.losses.WarmupTrace_ELBO`, :func:`pyro_seq.bounds.evaluate`).
    One guide call therefore costs one extra model pass.

    Requirements on the model (checked on the first call, with a
    :class:`ValueError` naming the site):

    - every latent sample site has a time index at the end of its name, and
      each stream has one site per frame of ``x``;
    - each is real-valued with ``event_dim <= 1`` (a ``Normal(...).to_event(1)``,
      ``MultivariateNormal``, ``Normal`` of a scalar, or any other real-valued
      reparameterisable prior; ``residual=True`` needs a ``Normal`` or
      ``MultivariateNormal``);
    - each is inside the batch plate: batch shape ``[batch]``, the rightmost
      plate over the ``batch`` sequences of ``x``.

    Example, a deep Markov model written by hand (binary frames, e.g. the 88 keys of a
    piano roll)::

        trans = nn.Linear(z_dim, 2 * z_dim)  # p(z_t | z_{t-1}): loc and raw scale
        emit = nn.Linear(z_dim, x_dim)  # p(x_t | z_t): logits of the keys

        def model(x, mask):  # x [batch, T, x_dim], mask [batch, T] bool
            pyro.module("trans", trans)
            pyro.module("emit", emit)
            with pyro.plate("sequences", x.shape[0]):
                z = x.new_zeros(x.shape[0], z_dim)  # [batch, z_dim]
                for t in pyro.markov(range(x.shape[1])):
                    loc, raw_scale = trans(z).chunk(2, dim=-1)
                    p_z = dist.Normal(loc, F.softplus(raw_scale)).to_event(1)
                    z = pyro.sample(f"z_{t + 1}", p_z.mask(mask[:, t]))
                    p_x = dist.Bernoulli(logits=emit(z)).to_event(1)
                    pyro.sample(f"x_{t + 1}", p_x.mask(mask[:, t]), obs=x[:, t])

        guide = AutoSequenceSmoother(model, residual=True)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        loss = svi.step(x, mask)  # the guide is set up on its first call

    :param callable model: a Pyro model (held, not registered as a submodule).
    :param str kind: ``"smoother"`` or ``"filter"``.
    :param int rnn_dim: size of :math:`h_t`.
    :param int hidden_dim: width of the posterior MLP.
    :param bool residual: residual parameterisation of the mean on the prior mean.
    :param callable data: ``data(*args, **kwargs) -> (x, mask)`` (or ``x``), the
        observed frames ``x [batch, T, x_dim]`` and an optional bool prefix mask
        ``[batch, T]`` from the model's arguments; default :func:`default_data`
        (``x`` first, ``mask`` second if it is a bool tensor, or keywords ``x``, ``mask``).
    :param float min_scale: floor of the posterior standard deviations.
    :param str name: Pyro name of the guide's parameters (default: the class
        name, suffixed ``_1``, ``_2``, ... for later instances, so that two
        guides never share parameters).

    **References**

    [1] Rahul G. Krishnan, Uri Shalit, David Sontag, "Structured Inference
        Networks for Nonlinear State Space Models", AAAI 2017, arXiv:1609.09869.
    [2] Marco Fraccaro, Søren Kaae Sønderby, Ulrich Paquet, Ole Winther,
        "Sequential Neural Models with Stochastic Layers", NIPS 2016, arXiv:1605.07571.
    [3] Luca Ambrogioni, Kate Lin, Emily Fertig, Sharad Vikram, Max Hinne, Dave Moore,
        Marcel van Gerven, "Automatic structured variational inference",
        AISTATS 2021, arXiv:2002.00643.
    """

    #: The guide serves any batch (its networks read x): particle objectives may repeat the batch.
    amortised = True

    def __init__(
        self,
        model,
        *,
        kind="smoother",
        rnn_dim=64,
        hidden_dim=64,
        residual=False,
        data=None,
        min_scale=MIN_SCALE,
        name=None,
    ):
        if kind not in GUIDE_KINDS:
            raise ValueError(f"kind must be one of {GUIDE_KINDS}, got {kind!r}")
        for arg, value in (("rnn_dim", rnn_dim), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if not min_scale > 0:
            raise ValueError(f"min_scale must be > 0, got {min_scale!r}")
        if data is not None and not callable(data):
            raise ValueError(
                f"data must be a callable (*args, **kwargs) -> (x, mask), got {data!r}"
            )
        super().__init__(model)
        self._pyro_name = _unique_name(type(self).__name__) if name is None else name
        self.config = dict(
            kind=kind,
            rnn_dim=rnn_dim,
            hidden_dim=hidden_dim,
            residual=bool(residual),
            min_scale=min_scale,
        )
        self.kind, self.residual = kind, bool(residual)
        self.rnn_dim, self.hidden_dim, self.min_scale = rnn_dim, hidden_dim, min_scale
        self.data = default_data if data is None else data
        self.streams_info = None  # OrderedDict stem -> _StreamInfo, set up on the first call

    # ----------------------------------------------------------------- set-up
    def _data(self, args, kwargs):
        """``(x, mask, lengths)`` from the model's arguments, checked."""
        out = self.data(*args, **kwargs)
        x, mask = out if isinstance(out, tuple) else (out, None)
        if not torch.is_tensor(x) or x.dim() != 3 or not x.is_floating_point():
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__} found no observed sequences x [batch, time, x_dim] in the "
                f"model's arguments (got {got}): pass x first (and a bool mask second), or "
                "data=lambda *args, **kwargs: (x, mask)"
            )
        x_dim = None if self.streams_info is None else self.x_dim
        return check_sequences(x, mask, x_dim=x_dim)

    def _setup_prototype(self, *args, **kwargs):
        """Trace the model once (from its prior) and build the guide's networks."""
        x, mask, lengths = self._data(args, kwargs)
        batch, time, x_dim = x.shape
        model = poutine.block(self.model, prototype_hide_fn)
        prototype_trace = poutine.block(poutine.trace(model).get_trace)(*args, **kwargs)
        cls = type(self).__name__
        streams, sites = OrderedDict(), OrderedDict()
        for name, site in prototype_trace.iter_stochastic_nodes():
            match = TIME_INDEX.match(name)
            if match is None:
                raise ValueError(
                    f"{cls} serves per-step latent sites named with a time index (z_1 .. z_T in "
                    f"pyro.markov); latent site {name!r} has none"
                )
            fn = site["fn"]
            _, base = unwrap(fn)
            if not (_is_real(fn.support) and fn.has_rsample):
                raise ValueError(
                    f"{cls} serves real-valued reparameterisable (Gaussian) latents; latent site "
                    f"{name!r} has a {type(base).__name__} prior with support {fn.support}"
                )
            if len(fn.event_shape) > 1:
                raise ValueError(
                    f"{cls} serves latent vectors (event_dim <= 1); latent site {name!r} has "
                    f"event shape {tuple(fn.event_shape)}"
                )
            if self.residual and not isinstance(base, (Normal, MultivariateNormal)):
                raise ValueError(
                    f"residual=True needs the model's Normal prior mean at each latent site; site "
                    f"{name!r} has a {type(base).__name__} prior"
                )
            in_plate = any(
                f.vectorized and f.dim == -1 and f.size == batch for f in site["cond_indep_stack"]
            )
            if not in_plate or tuple(fn.batch_shape) != (batch,):
                raise ValueError(
                    f"latent site {name!r} must be inside the batch plate (a pyro.plate over the "
                    f"{batch} sequences of x at dim -1) with batch shape [{batch}]; it has batch "
                    f"shape {list(fn.batch_shape)} in plates {[f.name for f in site['cond_indep_stack']]}"
                )
            stem, index = match.group("stem"), int(match.group("index"))
            sites.setdefault(stem, []).append(index)
            if stem not in streams:
                streams[stem] = _StreamInfo(stem, index, tuple(fn.event_shape))
            elif tuple(fn.event_shape) != streams[stem].event_shape:
                raise ValueError(
                    f"latent site {name!r} has event shape {tuple(fn.event_shape)} but "
                    f"{stem}{streams[stem].offset!r} has {streams[stem].event_shape}"
                )
        if not streams:
            raise ValueError(f"the model has no latent sample site for {cls} to guide")
        for stem, indices in sites.items():
            info = streams[stem]
            if indices != list(range(info.offset, info.offset + time)):
                raise ValueError(
                    f"latent stream {info.label!r} must have one site per frame of x ({time}: "
                    f"{stem}{info.offset} .. {stem}{info.offset + time - 1} in order); the model "
                    f"samples {[f'{stem}{i}' for i in indices[:6]]}{' ...' if len(indices) > 6 else ''}"
                )
        self.prototype_trace, self.streams_info, self.x_dim = prototype_trace, streams, x_dim
        input_dim = sum(info.z_dim for info in streams.values())  # [z_{t-1}] of every stream
        context_dim = self.rnn_dim + x_dim  # c_t = [h_t, x_t]
        self.rnn = nn.GRU(x_dim, self.rnn_dim, batch_first=True).to(x.device, x.dtype)
        self.streams = nn.ModuleList(
            _Stream(info.z_dim, input_dim, context_dim, self.hidden_dim, self.min_scale, self.residual)
            for info in streams.values()
        ).to(x.device, x.dtype)

    # ------------------------------------------------------------------ guide
    def summaries(self, x, mask, lengths, rnn):
        """
        :math:`c_{1:T} = [h_{1:T}, x_{1:T}]`: the backward (smoother) or forward
        (filter) GRU states over the frames, and the frames, padding zeroed.

        :param torch.Tensor x: ``[batch, time, x_dim]``
        :param torch.Tensor mask: ``[batch, time]`` bool prefix mask.
        :param torch.Tensor lengths: ``[batch]``
        :param rnn: the guide's GRU (``self.rnn``, read once per call).
        :returns: ``[batch, time, rnn_dim + x_dim]``
        """
        x = x * mask.unsqueeze(-1).to(x.dtype)  # [batch, time, x_dim]: nothing beyond L_b counts
        if self.kind == "filter":
            h = rnn(x)[0]  # [batch, time, rnn_dim]
        else:
            h_rev, _ = rnn(reverse_padded(x, lengths))  # [batch, time, rnn_dim], from each x_{L_b}
            h = reverse_padded(h_rev, lengths)  # [batch, time, rnn_dim]
        return torch.cat([h, x], dim=-1)  # [batch, time, rnn_dim + x_dim]

    def _run(self, args, kwargs, median=False):
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        x, mask, lengths = self._data(args, kwargs)
        # each module is read once here, where its pyro.module statement reaches the
        # caller's trace; inside the model run only the local references are used
        rnn, streams = self.rnn, self.streams
        c = self.summaries(x, mask, lengths, rnn)  # [batch, time, rnn_dim + x_dim]
        interleave = _Interleave(self, streams, c, median)
        with interleave:
            self.model(*args, **kwargs)
        return interleave.values

    def forward(self, *args, **kwargs):
        """
        Sample the latent path: run the model with its latent sites drawn from the
        guide (only those sites reach the caller's handlers).

        :param args: the model's arguments.
        :returns: dict site name -> sampled value.
        """
        return self._run(args, kwargs)

    @torch.no_grad()
    def median(self, *args, **kwargs):
        """
        The posterior means along the path of means (no sampling, nothing recorded).

        :returns: dict site name -> value.
        """
        with poutine.block():
            return self._run(args, kwargs, median=True)

    def _posterior(self, name, prior, info, module, latest, context_t):
        """
        The guide's distribution at one site, wrapped as the model's ``prior`` is
        (the same ``to_event`` and ``mask``), its batch shape broadcast to the prior's.

        :param str name: site name (for errors).
        :param prior: the model's distribution at the site, given the guide's earlier samples.
        :param _StreamInfo info: the site's stream.
        :param _Stream module: the stream's networks.
        :param list latest: the latest value of each stream, each ``[..., z_dim]``.
        :param torch.Tensor context_t: the projected :math:`c_t`, ``[batch, hidden_dim + z_dim]``.
        :returns: ``(posterior, loc)``, ``loc`` the posterior mean as a site value.
        """
        layers, base = unwrap(prior)
        lead = torch.broadcast_shapes(*(v.shape[:-1] for v in latest))
        inputs = torch.cat([v.expand(lead + v.shape[-1:]) for v in latest], dim=-1)  # [..., sum z]
        loc, scale = module.step(inputs, context_t)  # [..., z_dim] each
        if self.residual:
            if not isinstance(base, (Normal, MultivariateNormal)):
                raise ValueError(
                    f"residual=True needs the model's Normal prior mean; site {name!r} has a "
                    f"{type(base).__name__} prior"
                )
            prior_loc = base.mean.expand(prior.batch_shape + prior.event_shape)  # [batch, *event]
            loc = loc + info.to_vector(prior_loc)  # [..., z_dim]
        loc = info.to_site(loc)  # [..., *event_shape]
        posterior = dist.Normal(loc, info.to_site(scale)).to_event(len(base.event_shape))
        for kind, arg in reversed(layers):
            posterior = posterior.to_event(arg) if kind == "event" else posterior.mask(arg)
        if posterior.event_shape != prior.event_shape:
            raise ValueError(
                f"latent site {name!r}: the guide's event shape {tuple(posterior.event_shape)} "
                f"does not match the model's {tuple(prior.event_shape)}"
            )
        if posterior.batch_shape != prior.batch_shape:
            shape = torch.broadcast_shapes(posterior.batch_shape, prior.batch_shape)
            posterior = posterior.expand(shape)
        return posterior, loc


class _Interleave(Messenger):
    """
    Runs inside :meth:`AutoSequenceGuide.forward` around the model: replaces the
    distribution of each latent site by the guide's and hides every other
    message of the model from the handlers outside the guide.
    """

    def __init__(self, guide, stream_modules, c, median=False):
        super().__init__()
        self.guide, self.median = guide, median
        self.infos = list(guide.streams_info.values())
        self.index = {info.stem: i for i, info in enumerate(self.infos)}
        self.modules = stream_modules
        self.contexts = [TimeSlices(s.project_context(c)) for s in stream_modules]  # [batch, time, .]
        batch, self.num_steps = c.shape[:2]
        self.latest = [s.z_0.expand(batch, -1) for s in stream_modules]  # [batch, z_dim] each
        self.values = OrderedDict()
        self._pending = {}

    def _process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg) or msg["done"]:
            msg["stop"] = True  # the model's observations, parameters, plates: not the guide's
            return
        name = msg["name"]
        match = TIME_INDEX.match(name)
        stream = None if match is None else self.index.get(match.group("stem"))
        if stream is None:
            raise ValueError(
                f"latent site {name!r} was not in the model's prototype trace: "
                f"{type(self.guide).__name__} guides the streams "
                f"{[i.label for i in self.infos]} only"
            )
        t = int(match.group("index")) - self.infos[stream].offset
        if not 0 <= t < self.num_steps:
            raise ValueError(
                f"latent site {name!r} is step {t + 1} of x's {self.num_steps} frames: each stream "
                "needs one site per frame"
            )
        info, module, context_t = self.infos[stream], self.modules[stream], self.contexts[stream][t]
        posterior, loc = self.guide._posterior(name, msg["fn"], info, module, self.latest, context_t)
        msg["fn"] = posterior
        if self.median:
            msg["value"] = loc.expand(posterior.batch_shape + posterior.event_shape)
            msg["done"] = True
        self._pending[name] = stream

    def _postprocess_message(self, msg):
        stream = self._pending.pop(msg["name"], None) if msg["type"] == "sample" else None
        if stream is not None:
            self.values[msg["name"]] = msg["value"]
            self.latest[stream] = self.infos[stream].to_vector(msg["value"])


class AutoSequenceSmoother(AutoSequenceGuide):
    r"""
    :class:`AutoSequenceGuide` with ``kind="smoother"``:
    :math:`q(z_t \mid z_{t-1}, x_{t:T})`, a backward GRU over the frames (the
    dependencies of the true posterior of a Markov model).
    """

    def __init__(self, model, **kwargs):
        if "kind" in kwargs:
            raise TypeError("AutoSequenceSmoother has kind='smoother'; use AutoSequenceGuide(kind=...)")
        super().__init__(model, kind="smoother", **kwargs)


class AutoSequenceFilter(AutoSequenceGuide):
    r"""
    :class:`AutoSequenceGuide` with ``kind="filter"``:
    :math:`q(z_t \mid z_{t-1}, x_{1:t})`, a forward GRU over the frames (the
    proposal of a particle filter; the future frames are ignored).
    """

    def __init__(self, model, **kwargs):
        if "kind" in kwargs:
            raise TypeError("AutoSequenceFilter has kind='filter'; use AutoSequenceGuide(kind=...)")
        super().__init__(model, kind="filter", **kwargs)


__all__ = [
    "AutoSequenceFilter",
    "AutoSequenceGuide",
    "AutoSequenceSmoother",
    "GUIDE_KINDS",
    "default_data",
]
