"""
Objectives: warm-up (KL annealing) ELBOs and their schedules.

The warm-up ELBOs are ordinary Pyro ELBOs (:class:`~pyro.infer.Trace_ELBO`,
:class:`~pyro.infer.TraceMeanField_ELBO`) whose latent terms are multiplied by
:math:`\\beta`:

.. math::

    \\mathcal{L}_\\beta = \\mathbb{E}_q\\big[\\log p(x \\mid z)\\big]
        + \\beta\\, \\mathbb{E}_q\\big[\\log p(z) - \\log q(z \\mid x)\\big],

so :math:`\\beta = 1` is the base ELBO exactly and :math:`\\beta = 0` keeps
only the reconstruction term. :math:`\\beta` follows a schedule of the SVI
step; the trainer sets ``loss.step`` before each step.

**References**

[1] Casper Kaae Sønderby, Tapani Raiko, Lars Maaløe, Søren Kaae Sønderby,
    Ole Winther, "Ladder Variational Autoencoders", NIPS 2016, arXiv:1602.02282.
[2] Samuel R. Bowman et al., "Generating Sentences from a Continuous Space",
    CoNLL 2016, arXiv:1511.06349.
"""

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from pyro_seq.losses.schedules import LinearSchedule
from pyro_seq.util import check_real, check_weight


class LatentScaleMessenger(Messenger):
    """Multiply the log density of every *latent* (non-observed) sample site by ``beta``."""

    def __init__(self, beta, exclude=()):
        super().__init__()
        self.beta = beta if torch.is_tensor(beta) else check_real("beta", beta)
        self.exclude = frozenset(exclude)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and msg["name"] not in self.exclude:
            msg["scale"] = self.beta * msg["scale"]


def scale_latents(fn, beta, exclude=()):
    """``fn`` with its latent sites' log densities scaled by ``beta``, except the sites named in ``exclude``."""
    return LatentScaleMessenger(beta, exclude)(fn)


def _site_sum(site):
    """Unscaled (but masked) log density of a site, summed."""
    log_p = site["unscaled_log_prob"]
    if site["mask"] is not None:
        log_p = log_p * site["mask"]
    return log_p.sum()


def elbo_sums(model_trace, guide_trace):
    """
    ``(log_likelihood, kl)`` of one particle with their graphs: the observed sites' log density
    and the Monte Carlo :math:`\\log q - \\log p` over the latent sites (traces with log probs).
    """
    log_likelihood, kl = 0.0, 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            if site["is_observed"]:
                log_likelihood = log_likelihood + _site_sum(site)
            else:
                kl = kl - _site_sum(site)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            kl = kl + _site_sum(site)
    return torch.as_tensor(log_likelihood), torch.as_tensor(kl)


def elbo_terms(model_trace, guide_trace):
    """
    Log-likelihood and latent terms of one particle, unscaled by any warm-up.

    :returns: dict of detached scalars ``log_likelihood`` (observed sites) and
        ``kl`` (Monte Carlo :math:`\\log q - \\log p` over latent sites).
    """
    log_likelihood, kl = elbo_sums(model_trace, guide_trace)
    return {"log_likelihood": log_likelihood.detach(), "kl": kl.detach()}


class WarmupELBOMixin:
    """
    Adds a :math:`\\beta` schedule on the latent terms to a trace-based Pyro
    ELBO. See :class:`WarmupTrace_ELBO`.

    :param schedule: a callable ``step -> beta`` (e.g. :class:`Schedule`) or a number.
    """

    def __init__(self, schedule=None, **kwargs):
        super().__init__(**kwargs)
        self.schedule = LinearSchedule() if schedule is None else check_weight("schedule", schedule)
        self.step = 0
        self.last_terms = {}

    @property
    def beta(self):
        """:math:`\\beta` at the current ``step``."""
        if callable(self.schedule):
            return check_real("schedule(step) (beta)", self.schedule(self.step))
        return float(self.schedule)

    def _get_trace(self, model, guide, args, kwargs):
        beta = self.beta
        if beta != 1.0:
            model, guide = scale_latents(model, beta), scale_latents(guide, beta)
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        terms = {k: self.per_particle(v) for k, v in elbo_terms(model_trace, guide_trace).items()}
        self.last_terms = dict(terms, beta=beta)
        return model_trace, guide_trace

    def per_particle(self, value):
        """A sum over one trace as the mean of one particle: divided by ``num_particles`` when
        the particles are vectorised (one trace then holds them all)."""
        if getattr(self, "vectorize_particles", False) and self.num_particles > 1:
            return value / self.num_particles
        return value


class WarmupTrace_ELBO(WarmupELBOMixin, Trace_ELBO):
    """
    :class:`~pyro.infer.Trace_ELBO` with warm-up: the latent terms
    :math:`\\log p(z) - \\log q(z)` are multiplied by ``beta = schedule(step)``.

    After each evaluation ``last_terms`` holds the (unscaled) log-likelihood
    and KL estimates and ``beta``, for logging.

    :param schedule: callable ``step -> beta`` or a number; default linear
        from 0 to 1 over 1000 steps.
    :param kwargs: passed to :class:`~pyro.infer.Trace_ELBO`.
    """


class WarmupTraceMeanField_ELBO(WarmupELBOMixin, TraceMeanField_ELBO):
    """
    :class:`~pyro.infer.TraceMeanField_ELBO` with warm-up: the analytic KL
    terms are multiplied by ``beta = schedule(step)``. For the sequence-level
    chain site of the fast models the KL is the semi-analytic one, summed along
    the sampled path (see :mod:`pyro_seq.distributions`).
    """
