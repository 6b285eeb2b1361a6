"""The auxiliary-variable guide of M2, ADGM and SDGM, and its classifier."""

from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from pyro_seq.nn import MultiInputMLP, bounded_loc_scale
from pyro_seq.util import check_sizes, record

#: Guide site of :math:`\log q(y \mid a, x)` for labelled images, read by
#: :class:`~pyro_seq.losses.SemiSupervised_ELBO`.
CLASSIFIER_SITE = "log_qy"


class Prediction(NamedTuple):
    """Class probabilities of :meth:`SemiSupervisedGuide.predict`."""

    #: ``[batch, K]`` :math:`\frac1S \sum_s q(y \mid a_s, x)`.
    probs: torch.Tensor
    #: ``[batch, K]`` standard deviation of :math:`q(y \mid a_s, x)` over the samples of ``a``
    #: (zeros for M2, which has no ``a``).
    std: torch.Tensor
    #: ``[batch]`` entropy of ``probs`` in nats.
    entropy: torch.Tensor


class SemiSupervisedGuide(PyroModule):
    r"""
    The inference model of Maaløe et al. (2016) for :class:`~pyro_seq.models.ADGM` and
    :class:`~pyro_seq.models.SDGM` (and of Kingma et al.'s M2 when the model has no ``a``):

    .. math::

        q_\phi(a, y, z \mid x) = q_\phi(a \mid x)\, q_\phi(y \mid a, x)\, q_\phi(z \mid a, x, y),

    with Gaussian :math:`q(a \mid x)` and :math:`q(z \mid a, x, y)` and a categorical
    classifier :math:`q(y \mid a, x)`. When labels are given ``y`` is not sampled (the model
    observes it) and :math:`\log q(y \mid a, x)` is recorded at site ``"log_qy"`` for the
    classification term of :class:`~pyro_seq.losses.SemiSupervised_ELBO`. Without labels ``y``
    is sampled with ``infer={"enumerate": "parallel"}``, so
    :class:`~pyro.infer.TraceEnum_ELBO` sums over the :math:`K` classes exactly:
    :math:`a` is drawn once per image and :math:`z` once per image *and class*
    (``[K, batch, z_dim]``).

    Particles: each of ``num_particles`` draws its own :math:`a` and :math:`z` and sums
    over :math:`y` exactly; the bound is the mean over particles (not an importance-weighted
    bound). With ``vectorize_particles=True`` the particle dimension sits left of the
    ``"data"`` plate and the enumeration dimension left of that; the ELBO needs
    ``max_plate_nesting=1`` either way.

    :param model: the :class:`~pyro_seq.models.SemiSupervisedVAE` (M2, ADGM or SDGM); not
        registered as a submodule.
    :param hidden_dims: widths of the guide's networks (default: the model's).

    **References**

    [1] Lars Maaløe, Casper Kaae Sønderby, Søren Kaae Sønderby, Ole Winther,
        "Auxiliary Deep Generative Models", ICML 2016, arXiv:1602.05473.
    """

    def __init__(self, model, hidden_dims=None):
        super().__init__()
        self._model = (model,)
        self.hidden_dims = tuple(model.hidden_dims) if hidden_dims is None else check_sizes("hidden_dims", hidden_dims)
        x_dim, y_dim, z_dim, a_dim = model.x_dim, model.y_dim, model.z_dim, model.a_dim
        if a_dim:
            self.a_net = MultiInputMLP((x_dim,), self.hidden_dims, 2 * a_dim)  # q(a | x)
            self.y_net = MultiInputMLP((x_dim, a_dim), self.hidden_dims, y_dim)  # q(y | a, x)
            self.z_net = MultiInputMLP((x_dim, y_dim, a_dim), self.hidden_dims, 2 * z_dim)  # q(z | a, x, y)
        else:
            self.y_net = MultiInputMLP((x_dim,), self.hidden_dims, y_dim)  # q(y | x)
            self.z_net = MultiInputMLP((x_dim, y_dim), self.hidden_dims, 2 * z_dim)  # q(z | x, y)

    @property
    def model(self):
        return self._model[0]

    @property
    def config(self):
        return dict(hidden_dims=list(self.hidden_dims))

    def auxiliary(self, x):
        r""":math:`q(a \mid x)` as ``(loc, scale)``, each ``[batch, a_dim]``."""
        return bounded_loc_scale(self.a_net(x), self.model.min_scale)

    def classifier_logits(self, x, a=None):
        r"""Logits of :math:`q(y \mid a, x)`, ``[..., batch, K]``."""
        return self.y_net(x) if a is None else self.y_net(x, a)

    def forward(self, x, y=None):
        model = self.model
        x, y = model.check(x, y)  # [batch, x_dim], [batch] or None
        batch = x.size(0)
        with pyro.plate("data", batch, dim=-1):
            a = None
            if model.a_dim:
                loc, scale = self.auxiliary(x)  # [batch, a_dim]
                a = pyro.sample("a", dist.Normal(loc, scale).to_event(1))
            logits = self.classifier_logits(x, a)  # [batch, K]
            if y is None:
                y = pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})  # [K, 1]
            else:
                record(CLASSIFIER_SITE, dist.Categorical(logits=logits).log_prob(y), event_dim=0)  # [batch]
            y1 = model.one_hot(y, x)  # [batch, K] or [K, 1, K]
            inputs = (x, y1) if a is None else (x, y1, a)
            loc, scale = bounded_loc_scale(self.z_net(*inputs), model.min_scale)  # [..., batch, z_dim]
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def predict(self, x, num_samples=100):
        r"""
        Class probabilities :math:`\frac1S \sum_{s=1}^S q(y \mid a_s, x)`,
        :math:`a_s \sim q(a \mid x)`, and their spread over the samples of :math:`a`.
        Run it with the guide in eval mode (as the trainer's validation does).

        :param torch.Tensor x: ``[batch, x_dim]`` or ``[batch, 1, x_dim]`` binary images.
        :param int num_samples: samples :math:`S` of ``a`` (ignored for M2).
        :rtype: Prediction
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        x, _ = self.model.check(x)  # [batch, x_dim]
        if self.model.a_dim:
            loc, scale = self.auxiliary(x)  # [batch, a_dim]
            a = loc + scale * torch.randn((num_samples,) + loc.shape, dtype=loc.dtype, device=loc.device)
            probs = self.classifier_logits(x, a).softmax(-1)  # [S, batch, K]
            mean, std = probs.mean(0), probs.std(0, unbiased=False)
        else:
            mean = self.classifier_logits(x).softmax(-1)  # [batch, K]
            std = torch.zeros_like(mean)
        entropy = -(mean * mean.clamp_min(1e-30).log()).sum(-1)  # [batch]
        return Prediction(mean, std, entropy)
