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
import warnings

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.traceenum_elbo import _compute_dice_elbo
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

    def __init__(self, beta, exclude=()):
        super().__init__()
        self.beta = beta
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


# ------------------------------------------------------------ semi-supervised

#: Guide site of :math:`\log q(y \mid a, x)` for labelled images (see :class:`~pyro_seq.guides.AuxiliaryGuide`).
CLASSIFIER_SITE = "log_qy"


def default_alpha(num_data, num_labelled, factor=0.1):
    """The released ADGM code's classification weight :math:`\\alpha = 0.1 N / N_l`."""
    if num_data is None or num_labelled is None:
        raise ValueError("alpha=None needs num_data and num_labelled (alpha = 0.1 * num_data / num_labelled)")
    if num_labelled < 1 or num_data < num_labelled:
        raise ValueError(f"need 1 <= num_labelled <= num_data, got num_labelled={num_labelled}, num_data={num_data}")
    return factor * num_data / num_labelled


class _EnumBound(TraceEnum_ELBO):
    """:class:`~pyro.infer.TraceEnum_ELBO` that also returns the guide's recorded classifier term."""

    def bound_and_classifier(self, model, guide, *args):
        bound, log_qy = 0.0, 0.0
        with warnings.catch_warnings():  # labelled images: nothing to enumerate, by design
            warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites configured for enumeration")
            traces = list(self._get_traces(model, guide, args, {}))
        for model_trace, guide_trace in traces:
            if any(site["type"] == "sample" and site["infer"].get("enumerate") for site in guide_trace.nodes.values()):
                bound = bound + _compute_dice_elbo(model_trace, guide_trace)
            else:  # nothing enumerated, every latent reparameterised: log p - log q
                bound = bound + model_trace.log_prob_sum() - guide_trace.log_prob_sum()
            site = guide_trace.nodes.get(CLASSIFIER_SITE)
            if site is not None:
                log_qy = log_qy + site["value"].sum()
        return bound / self.num_particles, log_qy / self.num_particles


class SemiSupervisedELBO(WarmupELBOMixin, ELBO):
    r"""
    The semi-supervised objective of Kingma et al. (2014) and Maaløe et al. (2016) for a
    model called as ``model(x, y)`` and a guide that enumerates ``y`` when it is ``None``
    (:class:`~pyro_seq.models.SemiSupervisedVAE`, :class:`~pyro_seq.guides.AuxiliaryGuide`).
    One step takes a labelled and an unlabelled mini-batch; the loss (minimised) is

    .. math::

        -rac{1}{n_l} \sum_{i \in 	ext{labelled}} \Big[\mathcal{L}(x_i, y_i)
            + lpha \log q(y_i \mid a_i, x_i)\Big]
        - rac{1}{n_u} \sum_{j \in 	ext{unlabelled}} \mathcal{U}(x_j),
        \qquad \mathcal{U}(x) = \mathbb{E}_{q(a \mid x)}\Big[\sum_y q(y \mid a, x)
            ig(\mathcal{L}(x, y \mid a) - \log q(y \mid a, x)ig)\Big],

    a mean over each mini-batch, as in the released ADGM code. The sum over :math:`y` in
    :math:`\mathcal{U}` is done by Pyro's enumeration (:class:`~pyro.infer.TraceEnum_ELBO`,
    ``max_plate_nesting=1``), not by a loop over classes; :math:`a` and :math:`z` are
    reparameterised. :math:`lpha = 0.1\, N / N_l` by default (``N`` training images,
    ``N_l`` labelled). ``schedule`` gives a warm-up :math:`eta` on the latent terms of
    :math:`a` and :math:`z` (not on the class term), as in :class:`WarmupTrace_ELBO`.

    Several particles: each draws its own :math:`a, z` and sums over :math:`y`
    exactly; the terms are averaged over particles.

    Called as ``loss.loss_and_grads(model, guide, x_labelled, y_labelled, x_unlabelled)``
    (either batch may be ``None``). After each evaluation ``last_terms`` holds
    ``labelled_bound`` and ``unlabelled_bound`` (per image, unscaled by :math:`\alpha`),
    ``classifier_log_prob`` (mean :math:`\log q(y \mid a, x)` of the labelled images) and ``beta``.

    :param float alpha: classification weight; ``None`` for :math:`0.1\, N / N_l`.
    :param int num_data: :math:`N`, training images (labelled and unlabelled).
    :param int num_labelled: :math:`N_l`.
    :param schedule: warm-up, a callable ``step -> beta`` or a number (default 1: none).
    :param int num_particles: particles per mini-batch.
    :param bool vectorize_particles: draw the particles in one vectorised pass.

    **References**

    [1] Lars Maaløe, Casper Kaae Sønderby, Søren Kaae Sønderby, Ole Winther,
        "Auxiliary Deep Generative Models", ICML 2016, arXiv:1602.05473.
    [2] Diederik P. Kingma, Danilo J. Rezende, Shakir Mohamed, Max Welling,
        "Semi-Supervised Learning with Deep Generative Models", NIPS 2014, arXiv:1406.5298.
    """

    def __init__(self, alpha=None, num_data=None, num_labelled=None, schedule=1.0, num_particles=1, vectorize_particles=False):
        super().__init__(schedule=schedule, num_particles=num_particles, max_plate_nesting=1, vectorize_particles=vectorize_particles)
        self.alpha = float(default_alpha(num_data, num_labelled) if alpha is None else alpha)
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        self._bound = _EnumBound(num_particles=num_particles, max_plate_nesting=1, vectorize_particles=vectorize_particles)

    @staticmethod
    def _size(x, name):
        if x is None:
            return 0
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(x).__name__}")
        return x.size(0) if x.dim() else 0

    def differentiable_loss(self, model, guide, x_labelled=None, y_labelled=None, x_unlabelled=None):
        n_l, n_u = self._size(x_labelled, "x_labelled"), self._size(x_unlabelled, "x_unlabelled")
        if n_l and y_labelled is None:
            raise ValueError("x_labelled needs y_labelled (pass x_labelled=None for an unlabelled-only step)")
        if not n_l and y_labelled is not None:
            raise ValueError("y_labelled was given without x_labelled")
        if not (n_l or n_u):
            raise ValueError("the step has no images: x_labelled and x_unlabelled are both empty or None")
        beta = self.beta
        if beta != 1.0:
            model, guide = scale_latents(model, beta, ("y",)), scale_latents(guide, beta, ("y",))
        loss = 0.0
        terms = {"beta": beta}
        if n_l:
            bound, log_qy = self._bound.bound_and_classifier(model, guide, x_labelled, y_labelled)
            loss = loss - (bound + self.alpha * log_qy) / n_l
            terms["labelled_bound"] = (bound / n_l).detach()
            terms["classifier_log_prob"] = torch.as_tensor(log_qy / n_l).detach()
        if n_u:
            bound, _ = self._bound.bound_and_classifier(model, guide, x_unlabelled, None)
            loss = loss - bound / n_u
            terms["unlabelled_bound"] = (bound / n_u).detach()
        self.last_terms = terms
        return loss

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if torch.is_tensor(loss) and loss.requires_grad:
            loss.backward()
        return float(loss.detach()) if torch.is_tensor(loss) else float(loss)
