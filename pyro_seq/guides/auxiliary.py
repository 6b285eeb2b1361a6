"""
Auxiliary variables for any Pyro model with continuous latents (Maaløe et al. 2016, section 2).

:class:`AuxiliaryModel` adds :math:`p(a \\mid x, z)` to a model, which leaves its marginal
:math:`p(x, z)` unchanged; :class:`AuxiliaryLatentGuide` turns a guide :math:`q(z \\mid x)`
into :math:`q(a \\mid x)\\, q(z \\mid a, x)` without touching the guide's code: it samples
:math:`a` first, then runs the guide under a handler that shifts and rescales each chosen
Gaussian latent by a network of :math:`a` and the guide's own parameters for that site.
:func:`add_auxiliary` builds both.
"""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn as nn
from pyro.nn import PyroModule
from pyro.poutine.messenger import Messenger

from pyro_seq.nn import MIN_SCALE, MultiInputMLP, bounded_loc_scale

__all__ = ["AUXILIARY_PLATE", "AUXILIARY_SITE", "AuxiliaryLatentGuide", "AuxiliaryModel", "add_auxiliary"]

#: Name of the auxiliary sample site in the model and the guide, and of its batch plate (a plate
#: of its own: the wrapped model's plate closes before ``a`` is sampled, and a second plate of the
#: same name would repeat its subsample site).
AUXILIARY_SITE, AUXILIARY_PLATE = "aux_a", "aux_data"


def _first_arg(*args, **kwargs):
    return args[0]


def _flat_x(x):
    """``x [batch, ...]`` (e.g. ``[batch, 1, 784]`` one-frame images) as ``[batch, features]``."""
    return x.reshape(x.size(0), -1)


def _zero_last_layer(net):
    """Zero the output layer of a :class:`~pyro_seq.nn.MultiInputMLP` (its output starts at 0)."""
    last = net.rest[1].net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def _normal_parts(fn):
    """``(loc, scale, event_dims)`` of a (possibly ``Independent``) ``Normal``, else an error."""
    event_dims = 0
    while isinstance(fn, dist.Independent):
        event_dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    if not isinstance(fn, dist.Normal):
        raise TypeError(f"auxiliary guides modulate Normal latents; got {type(fn).__name__}")
    return fn.loc, fn.scale, event_dims


class AuxiliaryModel(PyroModule):
    r"""
    A model with an auxiliary variable: the wrapped model's sites, then

    .. math::

        p_\theta(a \mid x, z) = \mathcal{N}\big(\mu_\theta(x, z), \operatorname{diag}\sigma_\theta(x, z)^2\big),

    a site ``"aux_a"`` in a batch plate ``"aux_data"`` (``dim=-1``). Since
    :math:`\int p(a \mid x, z)\, da = 1`, the marginal :math:`p(x, z)` and hence
    :math:`p(x)` are those of the wrapped model: any bound with :math:`a` (ELBO or
    importance-weighted) is a bound on the same :math:`\log p(x)`.

    :param model: a Pyro model (a callable) whose first argument is the data ``x [batch, ...]``.
    :param dict latents: latent site names and their sizes (flattened per item), e.g. ``{"z_1": 32}``.
    :param int x_dim: flattened size of one item of ``x``.
    :param int a_dim: size of :math:`a`.
    :param hidden_dims: hidden widths of :math:`p(a \mid x, z)`.
    :param get_x: ``(*args, **kwargs) -> x`` (default: the first argument).
    """

    def __init__(self, model, latents, x_dim, a_dim=16, hidden_dims=(64,), get_x=_first_arg, min_scale=MIN_SCALE):
        super().__init__()
        self.base_model = model
        self.latents = dict(latents)
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
        z = [nodes[name]["value"].reshape(x.size(0), -1) for name in self.latents]  # [batch, z_dim] each
        loc, scale = bounded_loc_scale(self.p_a_net(x, *z), self.min_scale)  # [batch, a_dim]
        with pyro.plate(AUXILIARY_PLATE, x.size(0), dim=-1):
            pyro.sample(AUXILIARY_SITE, dist.Normal(loc, scale).to_event(1))
        return out


class _Modulate(Messenger):
    """Replace each chosen ``Normal(loc, scale)`` guide site by ``Normal(loc + s * dloc, s * exp(dlog))``."""

    def __init__(self, guide, a):
        super().__init__()
        self.guide, self.a = guide, a

    def _process_message(self, msg):
        name = msg["name"]
        if msg["type"] != "sample" or msg["is_observed"] or name not in self.guide.latents:
            return
        loc, scale, event_dims = _normal_parts(msg["fn"])
        flat = loc.shape[: loc.dim() - event_dims] + (-1,)
        features = torch.cat([loc.reshape(flat), scale.log().reshape(flat)], -1)  # [batch, 2 z_dim]
        d_loc, d_log_scale = self.guide.modulators[name](self.a, features).chunk(2, -1)  # [batch, z_dim]
        new_loc = loc + scale * d_loc.reshape(loc.shape)
        new_scale = scale * d_log_scale.reshape(scale.shape).clamp(max=10.0).exp()
        msg["fn"] = dist.Normal(new_loc, new_scale).to_event(event_dims)


class AuxiliaryLatentGuide(PyroModule):
    r"""
    The guide :math:`q_\phi(a \mid x)\, q_\phi(z \mid a, x)` for an :class:`AuxiliaryModel`,
    built from any guide :math:`q(z \mid x)` whose chosen latents are (``Independent``)
    ``Normal`` sites:

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

    **References**

    [1] Lars Maaløe, Casper Kaae Sønderby, Søren Kaae Sønderby, Ole Winther,
        "Auxiliary Deep Generative Models", ICML 2016, arXiv:1602.05473.
    """

    def __init__(self, guide, model, x_dim, hidden_dims=(64,)):
        super().__init__()
        self.base_guide = guide
        self.latents, self.a_dim, self.get_x = model.latents, model.a_dim, model.get_x
        self.min_scale = model.min_scale
        self.q_a_net = MultiInputMLP((x_dim,), hidden_dims, 2 * self.a_dim)  # q(a | x)
        # names distinct from the model's: both are top-level PyroModules sharing Pyro's param store
        self.modulators = nn.ModuleDict(
            {name: MultiInputMLP((self.a_dim, 2 * size), hidden_dims, 2 * size) for name, size in self.latents.items()}
        )
        for net in (self.q_a_net, *self.modulators.values()):
            _zero_last_layer(net)

    def forward(self, *args, **kwargs):
        x = _flat_x(self.get_x(*args, **kwargs))  # [batch, x_dim]
        loc, scale = bounded_loc_scale(self.q_a_net(x), self.min_scale)  # [batch, a_dim]
        with pyro.plate(AUXILIARY_PLATE, x.size(0), dim=-1):
            a = pyro.sample(AUXILIARY_SITE, dist.Normal(loc, scale).to_event(1))
        with _Modulate(self, a):
            return self.base_guide(*args, **kwargs)


def add_auxiliary(model, guide, latents, x_dim, a_dim=16, hidden_dims=(64,), get_x=_first_arg):
    """
    ``(AuxiliaryModel, AuxiliaryLatentGuide)`` for ``model`` and ``guide``; train them with any
    trace ELBO (e.g. :class:`~pyro.infer.Trace_ELBO`)::

        model, guide = add_auxiliary(LadderVAE(z_dims=[32], hidden_dims=[256]), guide, {"z_1": 32}, 784)
    """
    aux_model = AuxiliaryModel(model, latents, x_dim, a_dim, hidden_dims, get_x)
    return aux_model, AuxiliaryLatentGuide(guide, aux_model, x_dim, hidden_dims)
