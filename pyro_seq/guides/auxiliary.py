r"""
Auxiliary variables for any Pyro model with Gaussian latents (Maaløe et al. 2016, section 2).

A model :math:`p(x, z)` gains :math:`p(a \mid x, z)`, which leaves its marginal :math:`p(x, z)`
unchanged, and its guide :math:`q(z \mid x)` becomes :math:`q(a \mid x)\, q(z \mid a, x)` without
any change to the guide's code: :math:`a` is sampled first, then the guide runs under a handler
that shifts and rescales each chosen Gaussian latent by a network of :math:`a` and of the guide's
own parameters for that site. Two forms, both built by :func:`add_auxiliary`:

- **whole item** (:class:`AuxiliaryModel`, :class:`AuxiliaryLatentGuide`): named latents
  (``{"z_1": 32}``) and one :math:`a` per item, conditioned on the flattened item ``x [batch, ...]``;
- **per step** (:class:`SequenceAuxiliaryModel`, :class:`SequenceAuxiliaryGuide`): per-step latent
  sites picked by a pattern (``"z_{t}"``) or a callable, and one :math:`a_t` per step of
  ``x [batch, time, x_dim]`` with any ``time``, masked on padded steps.

Each wrapped pair gets its own Pyro name prefix (``"aux0"``, ``"aux1"``, ... or ``name=``), so two
pairs in one process never share entries of Pyro's parameter store.

**References**

[1] Lars Maaløe, Casper Kaae Sønderby, Søren Kaae Sønderby, Ole Winther,
    "Auxiliary Deep Generative Models", ICML 2016, arXiv:1602.05473.
"""

import itertools
import operator
import re

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn as nn
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.nn import PyroModule
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_seq.nn import MIN_SCALE, MultiInputMLP, bounded_loc_scale

__all__ = [
    "AUXILIARY_PLATE",
    "AUXILIARY_SITE",
    "AuxiliaryLatentGuide",
    "AuxiliaryModel",
    "SequenceAuxiliaryGuide",
    "SequenceAuxiliaryModel",
    "StepSites",
    "add_auxiliary",
]

#: Name of the auxiliary sample site in the model and the guide, and of its batch plate (a plate
#: of its own: the wrapped model's plate closes before ``a`` is sampled, and a second plate of the
#: same name would repeat its subsample site).
AUXILIARY_SITE, AUXILIARY_PLATE = "aux_a", "aux_data"

#: Numbers the default Pyro name prefixes of wrapped pairs (``"aux0"``, ``"aux1"``, ...).
_PAIR_NUMBERS = itertools.count()


def _first_arg(*args, **kwargs):
    return args[0]


def _mask_arg(*args, **kwargs):
    """The sequence mask: the second positional argument or ``mask=``, else ``None``."""
    return args[1] if len(args) > 1 else kwargs.get("mask")


def _pair_name(name):
    """The Pyro name prefix of a wrapped pair: ``name``, or a fresh ``"aux<n>"``."""
    if name is None:
        return f"aux{next(_PAIR_NUMBERS)}"
    if not isinstance(name, str) or "$$$" in name:
        raise ValueError(f"name must be a string without '$$$' (a Pyro name prefix), got {name!r}")
    return name


def _flat_x(x):
    """``x [batch, ...]`` (e.g. ``[batch, 1, 784]`` one-frame images) as ``[batch, features]``."""
    return x.reshape(x.size(0), -1)


def _check_item_x(x, x_dim):
    """``x [batch, x_dim]`` (flattened) of the width the networks were built for, else an error."""
    if x.size(-1) != x_dim:
        raise ValueError(
            f"x has {x.size(-1)} values per item but the auxiliary networks were built for x_dim={x_dim}; "
            "for sequences of any length pick per-step latents with a site pattern such as 'z_{t}'"
        )


def _zero_last_layer(net):
    """Zero the output layer of a :class:`~pyro_seq.nn.MultiInputMLP` (its output starts at 0)."""
    last = net.rest[1].net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def _normal_parts(fn, name):
    """
    ``(loc, scale, event_dims, rebuild)`` of a ``Normal`` under any nesting of ``Independent``
    and masks (``.to_event``, ``.mask``); ``rebuild(normal)`` wraps a new ``Normal`` the same way,
    so the site keeps its event dims and its mask. Anything else is an error naming the site.
    """
    wrappers, base, event_dims = [], fn, 0
    while True:
        if isinstance(base, torch.distributions.Independent):
            wrappers.append(("event", base.reinterpreted_batch_ndims))
            event_dims += base.reinterpreted_batch_ndims
        elif isinstance(base, MaskedDistribution):
            wrappers.append(("mask", base._mask))
        else:
            break
        base = base.base_dist
    if not isinstance(base, torch.distributions.Normal):
        raise TypeError(
            f"latent site {name!r} is a {type(base).__name__}; auxiliary guides modulate (diagonal) Normal "
            "latents, possibly masked or wrapped in Independent"
        )

    def rebuild(normal):
        for kind, value in reversed(wrappers):
            normal = normal.to_event(value) if kind == "event" else normal.mask(value)
        return normal

    return base.loc, base.scale, event_dims, rebuild


def _modulate(net, a, loc, scale, event_dims):
    r"""
    :math:`\big(\mu + \sigma \delta_\mu,\; \sigma e^{\delta_\sigma}\big)` with
    :math:`(\delta_\mu, \delta_\sigma) = \mathrm{net}(a, [\mu, \log \sigma])`.

    :param torch.Tensor a: ``[*batch, a_dim]``.
    :param torch.Tensor loc: ``[*batch, *event]`` (``event_dims`` event dims), as ``scale``.
    """
    flat = loc.shape[: loc.dim() - event_dims] + (-1,)
    features = torch.cat([loc.reshape(flat), scale.log().reshape(flat)], -1)  # [*batch, 2 z_dim]
    d_loc, d_log_scale = net(a, features).chunk(2, -1)  # [*batch', z_dim] each (a may add particle dims)
    shape = d_loc.shape[:-1] + loc.shape[loc.dim() - event_dims :]  # [*batch', *event]
    new_loc = loc + scale * d_loc.reshape(shape)
    new_scale = scale * d_log_scale.reshape(shape).clamp(max=10.0).exp()
    return new_loc, new_scale


class _Modulate(Messenger):
    """
    Replace each chosen ``Normal(loc, scale)`` latent site of a guide (possibly masked or
    ``Independent``) by ``Normal(loc + s * dloc, s * exp(dlog))``, wrapped as the original was.

    :param pick: ``name -> key`` of a chosen site, or ``None`` to leave the site alone.
    :param shift: ``(name, key, loc, scale, event_dims) -> (new_loc, new_scale)``.
    """

    def __init__(self, pick, shift):
        super().__init__()
        self.pick, self.shift = pick, shift
        self.seen = []

    def _process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg):
            return
        name = msg["name"]
        key = self.pick(name)
        if key is None:
            return
        loc, scale, event_dims, rebuild = _normal_parts(msg["fn"], name)
        new_loc, new_scale = self.shift(name, key, loc, scale, event_dims)
        msg["fn"] = rebuild(dist.Normal(new_loc, new_scale))
        self.seen.append(name)


def _latent_sites(trace):
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]


# --------------------------------------------------------------------------- whole item


class AuxiliaryModel(PyroModule):
    r"""
    A model with an auxiliary variable: the wrapped model's sites, then

    .. math::

        p_\theta(a \mid x, z) = \mathcal{N}\big(\mu_\theta(x, z), \operatorname{diag}\sigma_\theta(x, z)^2\big),

    a site ``"aux_a"`` in a batch plate ``"aux_data"`` (``dim=-1``). Since
    :math:`\int p(a \mid x, z)\, da = 1`, the marginal :math:`p(x, z)` and hence
    :math:`p(x)` are those of the wrapped model: any bound with :math:`a` (ELBO or
    importance-weighted) is a bound on the same :math:`\log p(x)`. For per-step latents of
    sequences of any length see :class:`SequenceAuxiliaryModel`.

    :param model: a Pyro model (a callable) whose first argument is the data ``x [batch, ...]``.
    :param dict latents: latent site names and their sizes (flattened per item), e.g. ``{"z_1": 32}``.
    :param int x_dim: flattened size of one item of ``x``.
    :param int a_dim: size of :math:`a`.
    :param hidden_dims: hidden widths of :math:`p(a \mid x, z)`.
    :param get_x: ``(*args, **kwargs) -> x`` (default: the first argument).
    :param str name: Pyro name prefix of the pair (default: a fresh ``"aux<n>"``); the wrapped
        model's parameters are then named ``"<name>.base_model.…"``.

    **References**

    [1] Lars Maaløe, Casper Kaae Sønderby, Søren Kaae Sønderby, Ole Winther,
        "Auxiliary Deep Generative Models", ICML 2016, arXiv:1602.05473.
    """

    def __init__(self, model, latents, x_dim, a_dim=16, hidden_dims=(64,), get_x=_first_arg, min_scale=MIN_SCALE, name=None):
        super().__init__(_pair_name(name))
        self.base_model = model
        self.latents = dict(latents)
        self.x_dim = int(x_dim)
        self.a_dim, self.get_x, self.min_scale = int(a_dim), get_x, min_scale
        self.p_a_net = MultiInputMLP((x_dim,) + tuple(self.latents.values()), hidden_dims, 2 * self.a_dim)  # p(a | x, z)
        _zero_last_layer(self.p_a_net)  # p(a | x, z) starts equal to q(a | x): the bound starts at the wrapped model's

    def forward(self, *args, **kwargs):
        with poutine.trace() as tape:
            out = self.base_model(*args, **kwargs)
        nodes = tape.trace.nodes
        missing = [name for name in self.latents if name not in nodes]
        if missing:
            raise ValueError(f"the model has no latent sites {missing}; its sample sites are {[n for n, s in nodes.items() if s['type'] == 'sample']}")
        x = _flat_x(self.get_x(*args, **kwargs))  # [batch, x_dim]
        _check_item_x(x, self.x_dim)
        z = [nodes[name]["value"].reshape(x.size(0), -1) for name in self.latents]  # [batch, z_dim] each
        loc, scale = bounded_loc_scale(self.p_a_net(x, *z), self.min_scale)  # [batch, a_dim]
        with pyro.plate(AUXILIARY_PLATE, x.size(0), dim=-1):
            pyro.sample(AUXILIARY_SITE, dist.Normal(loc, scale).to_event(1))
        return out


class AuxiliaryLatentGuide(PyroModule):
    r"""
    The guide :math:`q_\phi(a \mid x)\, q_\phi(z \mid a, x)` for an :class:`AuxiliaryModel`,
    built from any guide :math:`q(z \mid x)` whose chosen latents are ``Normal`` sites (possibly
    ``Independent`` or masked; the mask is kept):

    .. math::

        q(z \mid a, x) = \mathcal{N}\big(\mu(x) + \sigma(x)\, \delta_\mu(a, \mu, \sigma),\;
            \operatorname{diag}\big(\sigma(x)\, e^{\delta_\sigma(a, \mu, \sigma)}\big)^2\big),

    where :math:`(\mu, \sigma)(x)` are what the wrapped guide proposes and
    :math:`\delta` is a network. The output layers of :math:`\delta`, of :math:`q(a \mid x)` and
    of the model's :math:`p(a \mid x, z)` start at zero, so at initialisation
    :math:`q(z \mid a, x)` is the wrapped guide and :math:`p(a \mid x, z) = q(a \mid x)`: the
    bound starts exactly at the wrapped model's. Marginally over :math:`a`, :math:`q(z \mid x)`
    becomes a continuous mixture of Gaussians: a richer family, whose bound can only be as tight
    or tighter at the optimum.

    :param guide: the guide to wrap (called with the same arguments as the model).
    :param model: the :class:`AuxiliaryModel` (for ``latents``, ``a_dim``, ``get_x``).
    :param int x_dim: flattened size of one item of ``x``.
    :param hidden_dims: hidden widths of :math:`q(a \mid x)` and of each :math:`\delta`.
    :param str name: Pyro name prefix (default: the model's, so the pair shares one prefix).

    **References**

    [1] Lars Maaløe, Casper Kaae Sønderby, Søren Kaae Sønderby, Ole Winther,
        "Auxiliary Deep Generative Models", ICML 2016, arXiv:1602.05473.
    """

    def __init__(self, guide, model, x_dim, hidden_dims=(64,), name=None):
        super().__init__(model._pyro_name if name is None else _pair_name(name))
        self.base_guide = guide
        self.latents, self.a_dim, self.get_x = model.latents, model.a_dim, model.get_x
        self.x_dim, self.min_scale = int(x_dim), model.min_scale
        self.q_a_net = MultiInputMLP((x_dim,), hidden_dims, 2 * self.a_dim)  # q(a | x)
        # names distinct from the model's: both are top-level PyroModules with one name prefix
        self.modulators = nn.ModuleDict(
            {name: MultiInputMLP((self.a_dim, 2 * size), hidden_dims, 2 * size) for name, size in self.latents.items()}
        )
        for net in (self.q_a_net, *self.modulators.values()):
            _zero_last_layer(net)

    def forward(self, *args, **kwargs):
        x = _flat_x(self.get_x(*args, **kwargs))  # [batch, x_dim]
        _check_item_x(x, self.x_dim)
        loc, scale = bounded_loc_scale(self.q_a_net(x), self.min_scale)  # [batch, a_dim]
        with pyro.plate(AUXILIARY_PLATE, x.size(0), dim=-1):
            a = pyro.sample(AUXILIARY_SITE, dist.Normal(loc, scale).to_event(1))  # [batch, a_dim]
        modulators = self.modulators

        def shift(name, key, loc, scale, event_dims):
            return _modulate(modulators[name], a, loc, scale, event_dims)

        with _Modulate(lambda name: name if name in self.latents else None, shift):
            return self.base_guide(*args, **kwargs)


# --------------------------------------------------------------------------- per step


class StepSites:
    r"""
    Picks the per-step latent sites of a sequence model and gives each its step.

    :param latents: a site pattern with one ``{t}``, the step counted from 1 as in
        ``z_1 … z_T`` (``"z_{t}"`` picks ``z_1``, the latent of ``x[:, 0]``); or a callable
        ``name -> t`` giving the step counted from 0 (the index of ``x[:, t]``), or ``None``
        for a site that is not a per-step latent.
    """

    def __init__(self, latents):
        if isinstance(latents, str):
            if latents.count("{t}") != 1:
                raise ValueError(f"latents: a site pattern needs exactly one '{{t}}' (e.g. 'z_{{t}}'), got {latents!r}")
            head, tail = latents.split("{t}")
            regex = re.compile(re.escape(head) + r"([0-9]+)" + re.escape(tail))
            self.description = repr(latents)

            def step(name):
                match = regex.fullmatch(name)
                return None if match is None else int(match.group(1)) - 1

            self._step = step
        elif callable(latents):
            self.description = f"the callable {getattr(latents, '__qualname__', repr(latents))}"
            self._step = latents
        else:
            raise TypeError(
                f"latents must be a site pattern such as 'z_{{t}}' or a callable name -> step, got {type(latents).__name__}"
            )

    def __call__(self, name):
        step = self._step(name)
        if step is None:
            return None
        try:
            if isinstance(step, bool):
                raise TypeError
            return operator.index(step)
        except TypeError:
            raise TypeError(
                f"latents: {self.description} gave {step!r} for site {name!r}; expected an int step or None"
            ) from None


def _sequence_inputs(get_x, get_mask, x_dim, args, kwargs):
    """
    ``(x, mask)`` of a call: ``x [batch, time, x_dim]`` with padded frames zeroed (so nothing
    beyond a sequence's length reaches the auxiliary networks) and ``mask [batch, time]`` bool or
    ``None`` (no padding).
    """
    x = get_x(*args, **kwargs)
    if not torch.is_tensor(x) or x.dim() != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x: per-step auxiliaries need x of shape [batch, time, x_dim], got {shape}")
    if x.size(-1) != x_dim:
        raise ValueError(f"x has frames of {x.size(-1)} values but the auxiliary networks were built for x_dim={x_dim}")
    mask = get_mask(*args, **kwargs)
    if mask is None:
        return x, None
    if not torch.is_tensor(mask) or tuple(mask.shape) != tuple(x.shape[:2]):
        shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise ValueError(f"mask must have shape [batch, time] = {tuple(x.shape[:2])} to match x, got {shape}")
    mask = mask.bool()  # [batch, time]
    return torch.where(mask.unsqueeze(-1), x, x.new_zeros(())), mask  # [batch, time, x_dim]


def _per_step_normal(loc, scale, mask):
    r"""
    :math:`\prod_t \mathcal{N}(a_t \mid \mu_t, \operatorname{diag}\sigma_t^2)^{m_t}` over
    ``loc, scale [*batch, time, a_dim]`` and ``mask [batch, time]`` (or ``None``): batch shape
    ``[*batch]``, event shape ``[time, a_dim]``; padded steps add nothing.
    """
    steps = dist.Normal(loc, scale).to_event(1)  # batch [*batch, time]
    if mask is not None:
        steps = steps.mask(mask)
    return steps.to_event(1)  # batch [*batch], event [time, a_dim]


class SequenceAuxiliaryModel(PyroModule):
    r"""
    A sequence model with one auxiliary variable per step: the wrapped model's sites, then

    .. math::

        p_\theta(a_{1:T} \mid x_{1:T}, z_{1:T}) = \prod_{t=1}^{T} p_\theta(a_t \mid x_t, z_t)^{m_t},
        \qquad
        p_\theta(a_t \mid x_t, z_t) = \mathcal{N}\big(\mu_\theta(x_t, z_t),
            \operatorname{diag}\sigma_\theta(x_t, z_t)^2\big),

    one site ``"aux_a"`` of shape ``[batch, T, a_dim]`` in a batch plate ``"aux_data"``
    (``dim=-1``), where :math:`m_t` is the sequence mask: padded steps add nothing. Each
    :math:`p(a_t \mid x_t, z_t)` integrates to 1, so the marginal :math:`p(x, z)` is the wrapped
    model's and any bound with :math:`a` is a bound on the same :math:`\log p(x)`. ``T`` is read
    from ``x`` at each call; one network serves every step.

    :param model: a Pyro model ``model(x, mask, ...)`` with per-step latent sites (e.g.
        ``z_1 … z_T`` under ``pyro.markov``), one per step of ``x``, each ``[batch, z_dim]``.
    :param latents: the per-step latent sites: a pattern such as ``"z_{t}"`` (``{t}`` counts
        from 1) or a callable ``name -> step`` (counting from 0, ``None`` for other sites); see
        :class:`StepSites`.
    :param int x_dim: size of one frame :math:`x_t` (``x [batch, T, x_dim]``).
    :param int z_dim: size of one latent :math:`z_t` (flattened).
    :param int a_dim: size of :math:`a_t`.
    :param hidden_dims: hidden widths of :math:`p(a_t \mid x_t, z_t)`.
    :param get_x: ``(*args, **kwargs) -> x [batch, T, x_dim]`` (default: the first argument).
    :param get_mask: ``(*args, **kwargs) -> mask [batch, T]`` or ``None`` (default: the second
        argument or ``mask=``).
    :param str name: Pyro name prefix of the pair (default: a fresh ``"aux<n>"``).

    **References**

    [1] Lars Maaløe, Casper Kaae Sønderby, Søren Kaae Sønderby, Ole Winther,
        "Auxiliary Deep Generative Models", ICML 2016, arXiv:1602.05473.
    """

    def __init__(self, model, latents, x_dim, z_dim, a_dim=16, hidden_dims=(64,), get_x=_first_arg, get_mask=_mask_arg,
                 min_scale=MIN_SCALE, name=None):
        super().__init__(_pair_name(name))
        self.base_model = model
        self.steps = latents if isinstance(latents, StepSites) else StepSites(latents)
        self.x_dim, self.z_dim, self.a_dim = int(x_dim), int(z_dim), int(a_dim)
        self.get_x, self.get_mask, self.min_scale = get_x, get_mask, min_scale
        self.p_a_net = MultiInputMLP((self.x_dim, self.z_dim), hidden_dims, 2 * self.a_dim)  # p(a_t | x_t, z_t)
        _zero_last_layer(self.p_a_net)  # p(a_t | x_t, z_t) starts equal to q(a_t | x_t, x̄), as does the bound

    def _latent_path(self, trace, num_steps):
        """The per-step latents of a model trace in step order, ``[*batch, T, z_dim]``."""
        by_step = {}
        for name in _latent_sites(trace):
            step = self.steps(name)
            if step is None:
                continue
            if step in by_step:
                raise ValueError(
                    f"latents: model sites {by_step[step]!r} and {name!r} both have step {step + 1} "
                    f"under {self.steps.description}"
                )
            by_step[step] = name
        if not by_step:
            raise ValueError(
                f"no latent sample site of the model matches {self.steps.description}; "
                f"its latent sites are {_latent_sites(trace)}"
            )
        if sorted(by_step) != list(range(num_steps)):
            found = [by_step[k] for k in sorted(by_step)]
            raise ValueError(
                f"latents: the model sites matching {self.steps.description} are {found}, but x has {num_steps} steps: "
                f"expected one site per step 1..{num_steps}"
            )
        path = []
        for step in range(num_steps):
            site = trace.nodes[by_step[step]]
            value = site["value"]
            z = value.reshape(value.shape[: value.dim() - site["fn"].event_dim] + (-1,))  # [*batch, z_dim]
            if z.size(-1) != self.z_dim:
                raise ValueError(f"latent site {by_step[step]!r} has {z.size(-1)} values per sequence but z_dim={self.z_dim}")
            path.append(z)
        return torch.stack(torch.broadcast_tensors(*path), -2)  # [*batch, T, z_dim]

    def forward(self, *args, **kwargs):
        x, mask = _sequence_inputs(self.get_x, self.get_mask, self.x_dim, args, kwargs)  # [B, T, x_dim], [B, T]
        with poutine.trace() as tape:
            out = self.base_model(*args, **kwargs)
        z = self._latent_path(tape.trace, x.size(1))  # [*batch, B, T, z_dim]
        loc, scale = bounded_loc_scale(self.p_a_net(x, z), self.min_scale)  # [*batch, B, T, a_dim]
        with pyro.plate(AUXILIARY_PLATE, x.size(0), dim=-1):
            pyro.sample(AUXILIARY_SITE, _per_step_normal(loc, scale, mask))  # [*batch, B, T, a_dim]
        return out


def _masked_mean(x, mask):
    """The mean frame of each sequence over its real steps: ``[batch, T, x_dim] -> [batch, x_dim]``."""
    if mask is None:
        return x.mean(-2)
    lengths = mask.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)  # [batch, 1]
    return x.sum(-2) / lengths  # [batch, x_dim] (padded frames are zero)


class SequenceAuxiliaryGuide(PyroModule):
    r"""
    The guide :math:`q_\phi(a \mid x)\, q_\phi(z \mid a, x)` for a :class:`SequenceAuxiliaryModel`,
    built from any guide :math:`q(z_{1:T} \mid x)` whose per-step latents are ``Normal`` sites
    (possibly masked or ``Independent``; the mask is kept):

    .. math::

        q_\phi(a_{1:T} \mid x) = \prod_{t=1}^{T} \mathcal{N}\big(a_t \mid \mu_\phi(x_t, \bar x),
            \operatorname{diag}\sigma_\phi(x_t, \bar x)^2\big)^{m_t},
        \qquad \bar x = \frac{\sum_t m_t x_t}{\sum_t m_t},

    .. math::

        q(z_t \mid a_t, \cdot) = \mathcal{N}\big(\mu_t + \sigma_t\, \delta_\mu(a_t, \mu_t, \sigma_t),\;
            \operatorname{diag}\big(\sigma_t\, e^{\delta_\sigma(a_t, \mu_t, \sigma_t)}\big)^2\big),

    where :math:`(\mu_t, \sigma_t)` are what the wrapped guide proposes for :math:`z_t` (from its
    own context: the past latents, an RNN over :math:`x`, ...) and :math:`\delta` is one network
    shared by all steps. :math:`q(a_t)` sees its frame and the sequence's mean frame
    :math:`\bar x` over its real steps: a summary that needs no recurrence and does not depend
    on padding or on ``T``; the rest of the context reaches :math:`z_t` through
    :math:`(\mu_t, \sigma_t)`. The output layers of :math:`\delta`, :math:`q(a_t)` and the model's
    :math:`p(a_t \mid x_t, z_t)` start at zero, so the bound starts exactly at the wrapped pair's.

    :param guide: the guide to wrap (called with the same arguments as the model).
    :param SequenceAuxiliaryModel model: the wrapped model (for the sites, sizes and accessors).
    :param hidden_dims: hidden widths of :math:`q(a_t \mid x_t, \bar x)` and of :math:`\delta`.
    :param str name: Pyro name prefix (default: the model's, so the pair shares one prefix).

    **References**

    [1] Lars Maaløe, Casper Kaae Sønderby, Søren Kaae Sønderby, Ole Winther,
        "Auxiliary Deep Generative Models", ICML 2016, arXiv:1602.05473.
    """

    def __init__(self, guide, model, hidden_dims=(64,), name=None):
        super().__init__(model._pyro_name if name is None else _pair_name(name))
        self.base_guide = guide
        self.steps, self.x_dim, self.z_dim, self.a_dim = model.steps, model.x_dim, model.z_dim, model.a_dim
        self.get_x, self.get_mask, self.min_scale = model.get_x, model.get_mask, model.min_scale
        self.q_a_net = MultiInputMLP((self.x_dim, self.x_dim), hidden_dims, 2 * self.a_dim)  # q(a_t | x_t, x̄)
        self.modulator = MultiInputMLP((self.a_dim, 2 * self.z_dim), hidden_dims, 2 * self.z_dim)  # δ(a_t, μ_t, log σ_t)
        for net in (self.q_a_net, self.modulator):
            _zero_last_layer(net)

    def forward(self, *args, **kwargs):
        x, mask = _sequence_inputs(self.get_x, self.get_mask, self.x_dim, args, kwargs)  # [B, T, x_dim], [B, T]
        summary = _masked_mean(x, mask).unsqueeze(-2)  # [B, 1, x_dim]
        loc, scale = bounded_loc_scale(self.q_a_net(x, summary), self.min_scale)  # [B, T, a_dim]
        with pyro.plate(AUXILIARY_PLATE, x.size(0), dim=-1):
            a = pyro.sample(AUXILIARY_SITE, _per_step_normal(loc, scale, mask))  # [*batch, B, T, a_dim]
        num_steps, modulator = x.size(1), self.modulator

        def shift(name, step, loc, scale, event_dims):
            if not 0 <= step < num_steps:
                raise ValueError(
                    f"latents: guide site {name!r} has step {step + 1} under {self.steps.description}, "
                    f"but x has {num_steps} steps"
                )
            size = loc.shape[loc.dim() - event_dims:].numel()
            if size != self.z_dim:
                raise ValueError(f"latent site {name!r} has {size} values per sequence but z_dim={self.z_dim}")
            return _modulate(modulator, a[..., step, :], loc, scale, event_dims)  # [*batch, B, z_dim] each

        handler = _Modulate(self.steps, shift)
        with handler:
            out = self.base_guide(*args, **kwargs)
        if not handler.seen:
            raise ValueError(f"no latent sample site of the guide matches {self.steps.description}")
        return out


def add_auxiliary(model, guide, latents, x_dim, a_dim=16, hidden_dims=(64,), get_x=_first_arg, *, z_dim=None,
                  get_mask=_mask_arg, name=None):
    """
    An auxiliary variable for ``model`` and ``guide``: ``(AuxiliaryModel, AuxiliaryLatentGuide)``
    for named latents of a whole item, ``(SequenceAuxiliaryModel, SequenceAuxiliaryGuide)`` for
    per-step latents of sequences. Train them with any trace ELBO (e.g.
    :class:`~pyro.infer.Trace_ELBO`) or score them with :func:`pyro_seq.bounds.evaluate`::

        # one a per image, conditioned on the flattened image
        model, guide = add_auxiliary(LadderVAE(z_dims=[32], hidden_dims=[256]), guide, {"z_1": 32}, 784)
        # one a_t per step of x [batch, T, 88], any T, padded steps masked
        model, guide = add_auxiliary(dmm, dmm_guide, "z_{t}", 88, z_dim=16)

    :param latents: a dict ``{site: size}`` (whole item), or the per-step latent sites: a pattern
        with one ``{t}`` counted from 1 (``"z_{t}"``) or a callable ``name -> step`` counted
        from 0 (see :class:`StepSites`).
    :param int x_dim: flattened size of one item of ``x`` (whole item) or of one frame (per step).
    :param int z_dim: size of each per-step latent (per step only).
    :param get_mask: ``(*args, **kwargs) -> mask [batch, T]`` or ``None`` (per step only; default
        the second argument or ``mask=``).
    :param str name: Pyro name prefix of the pair (default: a fresh ``"aux<n>"``, so two pairs in
        one process have separate parameters).
    """
    if isinstance(latents, dict):
        if z_dim is not None:
            raise ValueError("z_dim: latents given as a dict {site: size} carry their own sizes")
        aux_model = AuxiliaryModel(model, latents, x_dim, a_dim, hidden_dims, get_x, name=name)
        return aux_model, AuxiliaryLatentGuide(guide, aux_model, x_dim, hidden_dims)
    if z_dim is None:
        raise ValueError("z_dim: per-step latents need their size (add_auxiliary(..., 'z_{t}', x_dim, z_dim=...))")
    aux_model = SequenceAuxiliaryModel(model, latents, x_dim, z_dim, a_dim, hidden_dims, get_x, get_mask, name=name)
    return aux_model, SequenceAuxiliaryGuide(guide, aux_model, hidden_dims)
