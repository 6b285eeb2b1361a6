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
* :mod:`~pyro_seq.losses.particle` -- the particle objectives :class:`IWAE_ELBO` and
  :class:`FIVO_ELBO` (``IWAELoss`` and ``FIVOLoss`` are their deprecated names), and the base
  classes of Pyro's sequential Monte Carlo protocol, :class:`SequentialModel` and
  :class:`SequentialGuide`, that FIVO takes besides the built-in models' step protocol.
"""

from pyro_seq.losses.particle import (
    FIVO_ELBO,
    IWAE_ELBO,
    FIVOLoss,
    IWAELoss,
    ParticleELBO,
    ParticleLoss,
    SequentialGuide,
    SequentialModel,
    SMCStep,
    iwae_objective,
)
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
    "FIVO_ELBO",
    "GENERATOR_LOSSES",
    "IWAELoss",
    "IWAE_ELBO",
    "LatentScaleMessenger",
    "LinearSchedule",
    "ParticleELBO",
    "ParticleLoss",
    "SMCStep",
    "Schedule",
    "SemiSupervised_ELBO",
    "SequentialGuide",
    "SequentialModel",
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
