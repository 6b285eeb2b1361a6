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

import math

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

# ----------------------------------------------------------------- schedules


def linear_schedule(step, start=0.0, end=1.0, steps=1000):
    """Linear from ``start`` at step 0 to ``end`` at ``steps``, then constant."""
    if steps <= 0:
        return float(end)
    frac = min(max(step, 0) / steps, 1.0)
    return float(start + (end - start) * frac)


def cosine_schedule(step, start=0.0, end=1.0, steps=1000):
    """Half-cosine from ``start`` to ``end`` over ``steps``, then constant."""
    if steps <= 0:
        return float(end)
    frac = min(max(step, 0) / steps, 1.0)
    return float(end + (start - end) * 0.5 * (1 + math.cos(math.pi * frac)))


class Schedule:
    """
    A schedule ``step -> value``; callable, JSON-describable (``config``).

    :param str kind: ``"linear"``, ``"cosine"`` or ``"constant"``.
    :param float start: value at step 0.
    :param float end: value after ``steps``.
    :param int steps: length of the ramp in SVI steps.
    """

    KINDS = {"linear": linear_schedule, "cosine": cosine_schedule}

    def __init__(self, kind="linear", start=0.0, end=1.0, steps=1000):
        if kind != "constant" and kind not in self.KINDS:
            raise ValueError(
                f"schedule kind must be one of {sorted(self.KINDS) + ['constant']}, got {kind!r}"
            )
        if steps < 0:
            raise ValueError(f"schedule steps must be >= 0, got {steps}")
        self.kind, self.start, self.end, self.steps = kind, start, end, steps

    @property
    def config(self):
        return dict(kind=self.kind, start=self.start, end=self.end, steps=self.steps)

    def __call__(self, step):
        if self.kind == "constant":
            return float(self.end)
        return self.KINDS[self.kind](step, self.start, self.end, self.steps)

    def __repr__(self):
        return f"Schedule({self.kind!r}, start={self.start}, end={self.end}, steps={self.steps})"


def LinearSchedule(start=0.0, end=1.0, steps=1000):
    """A linear warm-up :class:`Schedule`."""
    return Schedule("linear", start, end, steps)


def ConstantSchedule(value=1.0):
    """A constant :class:`Schedule`."""
    return Schedule("constant", value, value, 0)


# ------------------------------------------------------------------ warm-up


class LatentScaleMessenger(Messenger):
    """Multiply the log density of every *latent* (non-observed) sample site by ``beta``."""

    def __init__(self, beta):
        super().__init__()
        self.beta = beta

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.beta * msg["scale"]


def scale_latents(fn, beta):
    """``fn`` with its latent sites' log densities scaled by ``beta``."""
    return LatentScaleMessenger(beta)(fn)


def _site_sum(site):
    """Unscaled (but masked) log density of a site, summed."""
    log_p = site["unscaled_log_prob"]
    if site["mask"] is not None:
        log_p = log_p * site["mask"]
    return log_p.sum()


def elbo_terms(model_trace, guide_trace):
    """
    Log-likelihood and latent terms of one particle, unscaled by any warm-up.

    :returns: dict of detached scalars ``log_likelihood`` (observed sites) and
        ``kl`` (Monte Carlo :math:`\\log q - \\log p` over latent sites).
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
    return {
        "log_likelihood": torch.as_tensor(log_likelihood).detach(),
        "kl": torch.as_tensor(kl).detach(),
    }


class WarmupELBOMixin:
    """
    Adds a :math:`\\beta` schedule on the latent terms to a trace-based Pyro
    ELBO. See :class:`WarmupTrace_ELBO`.

    :param schedule: a callable ``step -> beta`` (e.g. :class:`Schedule`) or a number.
    """

    def __init__(self, schedule=None, **kwargs):
        super().__init__(**kwargs)
        self.schedule = LinearSchedule() if schedule is None else schedule
        self.step = 0
        self.last_terms = {}

    @property
    def beta(self):
        """:math:`\\beta` at the current ``step``."""
        if callable(self.schedule):
            return float(self.schedule(self.step))
        return float(self.schedule)

    def _get_trace(self, model, guide, args, kwargs):
        beta = self.beta
        if beta != 1.0:
            model, guide = scale_latents(model, beta), scale_latents(guide, beta)
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        self.last_terms = dict(elbo_terms(model_trace, guide_trace), beta=beta)
        return model_trace, guide_trace


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


# ----------------------------------------------------------------- Z-Forcing

#: Guide sites holding the Z-Forcing auxiliary terms (see :class:`~pyro_seq.guides.ZForcingGuide`).
AUX_SITE, BACKWARD_SITE = "aux_log_prob", "backward_log_prob"


def _recorded_sum(guide_trace, name):
    site = guide_trace.nodes.get(name)
    return None if site is None else site["value"].sum()


class AuxiliaryCostMixin(WarmupELBOMixin):
    r"""
    Adds the Z-Forcing auxiliary cost to a warm-up ELBO (Goyal et al. 2017):
    the training objective (minimised) becomes

    .. math::

        -\mathcal{L}_\beta
        - w \sum_t \log p_\xi\big(\operatorname{sg}(b_t) \mid z_t\big)
        - w_b \sum_t \log p(x_{t-1} \mid b_t),

    with :math:`w` following its own schedule (independent of the KL warm-up
    :math:`\beta`). The terms are read from the guide trace (sites
    ``"aux_log_prob"`` and ``"backward_log_prob"``, recorded by guides built
    with ``auxiliary`` / ``backward_prediction``). Only the *surrogate* loss
    (what is differentiated) includes them: the returned loss is the warm-up
    ELBO, so a reported bound never contains the auxiliary term.
    ``last_terms`` gains ``aux_log_prob``, ``backward_log_prob`` and ``aux_weight``.

    :param aux_schedule: callable ``step -> w`` or a number (default 1).
    :param float backward_weight: :math:`w_b` (default 1).
    """

    def __init__(self, schedule=None, aux_schedule=1.0, backward_weight=1.0, **kwargs):
        super().__init__(schedule=schedule, **kwargs)
        self.aux_schedule = aux_schedule
        self.backward_weight = float(backward_weight)

    @property
    def aux_weight(self):
        """:math:`w` at the current ``step``."""
        if callable(self.aux_schedule):
            return float(self.aux_schedule(self.step))
        return float(self.aux_schedule)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        weight = self.aux_weight
        aux = _recorded_sum(guide_trace, AUX_SITE)
        backward = _recorded_sum(guide_trace, BACKWARD_SITE)
        if aux is not None:
            if weight != 0.0:
                surrogate = surrogate - weight * aux
            self.last_terms["aux_log_prob"] = aux.detach()
        elif weight != 0.0:
            raise ValueError(
                f"aux weight is {weight} but the guide records no {AUX_SITE!r} site; "
                "build the guide with auxiliary='z' (or 'hz')"
            )
        if backward is not None:
            if self.backward_weight != 0.0:
                surrogate = surrogate - self.backward_weight * backward
            self.last_terms["backward_log_prob"] = backward.detach()
        self.last_terms["aux_weight"] = weight
        return loss, surrogate


class ZForcingTrace_ELBO(AuxiliaryCostMixin, Trace_ELBO):
    """
    :class:`WarmupTrace_ELBO` plus the Z-Forcing auxiliary cost
    (see :class:`AuxiliaryCostMixin`).

    :param schedule: KL warm-up, callable ``step -> beta`` or a number.
    :param aux_schedule: auxiliary weight, callable ``step -> w`` or a number.
    :param float backward_weight: weight of the backward-prediction loss.

    **References**

    [1] Anirudh Goyal, Alessandro Sordoni, Marc-Alexandre Côté, Nan Rosemary Ke,
        Yoshua Bengio, "Z-Forcing: Training Stochastic Recurrent Networks",
        NIPS 2017, arXiv:1711.05411.
    """


class ZForcingTraceMeanField_ELBO(AuxiliaryCostMixin, TraceMeanField_ELBO):
    """
    :class:`WarmupTraceMeanField_ELBO` (analytic / semi-analytic KL) plus the
    Z-Forcing auxiliary cost (see :class:`AuxiliaryCostMixin`).
    """
