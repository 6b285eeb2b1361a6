r"""
The filtering variational objective (FIVO) as an evaluation bound: :func:`fivo_log_likelihood`
runs a particle filter over the sequential step protocol (``DESIGN.md``) with the guide as
proposal and returns :math:`\log \hat p(x)` per sequence, an estimate whose expectation is a lower
bound on :math:`\log p(x)`. The filter, its resampling rule and the maths are in
:mod:`pyro_seq.losses.particle`, beside the training objective :class:`~pyro_seq.losses.FIVOLoss`.

**References**

[1] Chris J. Maddison, Dieterich Lawson, George Tucker, Nicolas Heess, Mohammad Norouzi,
    Andriy Mnih, Arnaud Doucet, Yee Whye Teh, "Filtering Variational Objectives", NIPS 2017,
    arXiv:1705.09279.
"""

from pyro_seq.losses.particle import (  # noqa: F401 (the estimator, public here too)
    RESAMPLE_KINDS,
    ParticleFilterResult,
    ancestor_indices,
    effective_sample_size,
    log_mean_exp,
    particle_filter,
    protocol_log_weight,
)

__all__ = ["RESAMPLE_KINDS", "ParticleFilterResult", "ancestor_indices", "effective_sample_size", "fivo_log_likelihood", "log_mean_exp", "particle_filter", "protocol_log_weight"]


def fivo_log_likelihood(model, guide, x, mask=None, num_particles=1, resample="ess", threshold=0.5):
    """
    The FIVO estimate :math:`\\log \\hat p(x)` of each sequence, ``[batch]``
    (differentiable; wrap in :func:`torch.no_grad` to evaluate). See
    :func:`particle_filter` for the arguments.
    """
    return particle_filter(model, guide, x, mask, num_particles, resample, threshold).log_likelihood
