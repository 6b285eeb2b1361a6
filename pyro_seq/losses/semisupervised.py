"""
The semi-supervised objective of M2, ADGM and SDGM (Kingma et al. 2014, arXiv:1406.5298;
Maaløe et al. 2016, arXiv:1602.05473).
"""

import warnings

import torch
from pyro.infer import ELBO, TraceEnum_ELBO
from pyro.infer.traceenum_elbo import _compute_dice_elbo

from pyro_seq.guides.semisupervised import CLASSIFIER_SITE
from pyro_seq.losses.warmup import WarmupELBOMixin, scale_latents
from pyro_seq.util import check_int, check_real


def default_alpha(num_data, num_labelled, factor=0.1):
    """The released ADGM code's classification weight :math:`\\alpha = 0.1 N / N_l`."""
    if num_data is None or num_labelled is None:
        raise ValueError("alpha=None needs num_data and num_labelled (alpha = 0.1 * num_data / num_labelled)")
    num_data, num_labelled = check_int("num_data", num_data, 1), check_int("num_labelled", num_labelled, 1)
    if num_data < num_labelled:
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


class SemiSupervised_ELBO(WarmupELBOMixin, ELBO):
    r"""
    The semi-supervised objective of Kingma et al. (2014) and Maaløe et al. (2016) for a
    model called as ``model(x, y)`` and a guide that enumerates ``y`` when it is ``None``
    (:class:`~pyro_seq.models.SemiSupervisedVAE`, :class:`~pyro_seq.guides.SemiSupervisedGuide`).
    One step takes a labelled and an unlabelled mini-batch; the loss (minimised) is

    .. math::

        -\frac{1}{n_l} \sum_{i \in \text{labelled}} \Big[\mathcal{L}(x_i, y_i)
            + \alpha \log q(y_i \mid a_i, x_i)\Big]
        - \frac{1}{n_u} \sum_{j \in \text{unlabelled}} \mathcal{U}(x_j),
        \qquad \mathcal{U}(x) = \mathbb{E}_{q(a \mid x)}\Big[\sum_y q(y \mid a, x)
            \big(\mathcal{L}(x, y \mid a) - \log q(y \mid a, x)\big)\Big],

    a mean over each mini-batch, as in the released ADGM code. The sum over :math:`y` in
    :math:`\mathcal{U}` is done by Pyro's enumeration (:class:`~pyro.infer.TraceEnum_ELBO`,
    ``max_plate_nesting=1``), not by a loop over classes; :math:`a` and :math:`z` are
    reparameterised. :math:`\alpha = 0.1\, N / N_l` by default (``N`` training images,
    ``N_l`` labelled). ``schedule`` gives a warm-up :math:`\beta` on the latent terms of
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
        num_particles = check_int("num_particles", num_particles, 1)
        super().__init__(schedule=schedule, num_particles=num_particles, max_plate_nesting=1, vectorize_particles=vectorize_particles)
        self.alpha = default_alpha(num_data, num_labelled) if alpha is None else check_real("alpha", alpha, 0.0)
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
