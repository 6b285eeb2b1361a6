"""
Objectives of :mod:`pyro_seq`, each an :class:`~pyro.infer.ELBO` subclass or a loss with the same
interface (``loss``, ``differentiable_loss``, ``loss_and_grads``):

* :mod:`~pyro_seq.losses.schedules` -- :class:`Schedule`, :func:`LinearSchedule`, ... of a weight
  over SVI steps.
* :mod:`~pyro_seq.losses.warmup` -- KL warm-up: :class:`WarmupTrace_ELBO`,
  :class:`WarmupTraceMeanField_ELBO` (latent terms × :math:`\\beta`; :math:`\\beta = 1` is the
  base ELBO exactly).
* :mod:`~pyro_seq.losses.zforcing` -- :class:`ZForcingTrace_ELBO`,
  :class:`ZForcingTraceMeanField_ELBO`: warm-up plus the Z-Forcing auxiliary cost.
* :mod:`~pyro_seq.losses.semisupervised` -- :class:`SemiSupervised_ELBO` of M2/ADGM/SDGM.
* :mod:`~pyro_seq.losses.vaegan` -- :class:`VAEGANLoss`, three routed losses (not an ELBO).
* :mod:`~pyro_seq.losses.particle` -- the particle objectives :class:`IWAELoss` and
  :class:`FIVOLoss`.
"""

from pyro_seq.losses.particle import FIVOLoss, IWAELoss, ParticleLoss, iwae_objective
from pyro_seq.losses.schedules import (
    ConstantSchedule,
    LinearSchedule,
    Schedule,
    cosine_schedule,
    linear_schedule,
)
from pyro_seq.losses.semisupervised import SemiSupervised_ELBO, default_alpha
from pyro_seq.losses.vaegan import (
    GENERATOR_LOSSES,
    VAEGAN_NETWORKS,
    VAEGANLoss,
    gan_balance,
    vaegan_backward,
    vaegan_optim,
    vaegan_parameters,
)
from pyro_seq.losses.warmup import (
    LatentScaleMessenger,
    WarmupELBOMixin,
    WarmupTrace_ELBO,
    WarmupTraceMeanField_ELBO,
    elbo_terms,
    scale_latents,
)
from pyro_seq.losses.zforcing import ZForcingCostMixin, ZForcingTrace_ELBO, ZForcingTraceMeanField_ELBO

__all__ = [
    "ConstantSchedule",
    "FIVOLoss",
    "GENERATOR_LOSSES",
    "IWAELoss",
    "LatentScaleMessenger",
    "LinearSchedule",
    "ParticleLoss",
    "Schedule",
    "SemiSupervised_ELBO",
    "VAEGANLoss",
    "VAEGAN_NETWORKS",
    "WarmupELBOMixin",
    "WarmupTrace_ELBO",
    "WarmupTraceMeanField_ELBO",
    "ZForcingCostMixin",
    "ZForcingTrace_ELBO",
    "ZForcingTraceMeanField_ELBO",
    "cosine_schedule",
    "default_alpha",
    "elbo_terms",
    "gan_balance",
    "iwae_objective",
    "linear_schedule",
    "scale_latents",
    "vaegan_backward",
    "vaegan_optim",
    "vaegan_parameters",
]
