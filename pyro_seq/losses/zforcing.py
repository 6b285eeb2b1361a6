"""
The Z-Forcing objective: a warm-up ELBO plus the auxiliary cost that makes the latents predict the
backward RNN's summary of the future (Goyal et al. 2017, arXiv:1711.05411).
"""

from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_seq.guides.zforcing import AUX_SITE, BACKWARD_SITE
from pyro_seq.losses.warmup import WarmupELBOMixin
from pyro_seq.util import check_real, check_weight


def _recorded_sum(guide_trace, name):
    site = guide_trace.nodes.get(name)
    if site is None:
        return None
    # over every particle of vectorised particles, also for a term that does not depend on
    # them (the backward prediction's value is [batch, time], its site [particles, batch])
    value, shape = site["value"], site["fn"].batch_shape + site["fn"].event_shape
    return (value if value.shape == shape else value.expand(shape)).sum()


class ZForcingCostMixin(WarmupELBOMixin):
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
        self.aux_schedule = check_weight("aux_schedule", aux_schedule)
        self.backward_weight = check_real("backward_weight", backward_weight, 0.0)

    @property
    def aux_weight(self):
        """:math:`w` at the current ``step``."""
        if callable(self.aux_schedule):
            return check_real("aux_schedule(step) (aux weight)", self.aux_schedule(self.step))
        return float(self.aux_schedule)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        weight = self.aux_weight
        aux = _recorded_sum(guide_trace, AUX_SITE)
        backward = _recorded_sum(guide_trace, BACKWARD_SITE)
        if aux is not None:
            if weight != 0.0:
                surrogate = surrogate - weight * aux
            self.last_terms["aux_log_prob"] = self.per_particle(aux.detach())
        elif weight != 0.0:
            raise ValueError(
                f"aux weight is {weight} but the guide records no {AUX_SITE!r} site; "
                "build the guide with auxiliary='z' (or 'hz')"
            )
        if backward is not None:
            if self.backward_weight != 0.0:
                surrogate = surrogate - self.backward_weight * backward
            self.last_terms["backward_log_prob"] = self.per_particle(backward.detach())
        self.last_terms["aux_weight"] = weight
        return loss, surrogate


class ZForcingTrace_ELBO(ZForcingCostMixin, Trace_ELBO):
    """
    :class:`WarmupTrace_ELBO` plus the Z-Forcing auxiliary cost
    (see :class:`ZForcingCostMixin`).

    :param schedule: KL warm-up, callable ``step -> beta`` or a number.
    :param aux_schedule: auxiliary weight, callable ``step -> w`` or a number.
    :param float backward_weight: weight of the backward-prediction loss.

    **References**

    [1] Anirudh Goyal, Alessandro Sordoni, Marc-Alexandre Côté, Nan Rosemary Ke,
        Yoshua Bengio, "Z-Forcing: Training Stochastic Recurrent Networks",
        NIPS 2017, arXiv:1711.05411.
    """


class ZForcingTraceMeanField_ELBO(ZForcingCostMixin, TraceMeanField_ELBO):
    """
    :class:`WarmupTraceMeanField_ELBO` (analytic / semi-analytic KL) plus the
    Z-Forcing auxiliary cost (see :class:`ZForcingCostMixin`).
    """
