r"""
The filtering variational objective (FIVO) as an evaluation bound: :func:`fivo_log_likelihood`
runs a particle filter with the guide as proposal and returns :math:`\log \hat p(x)` per
sequence, an estimate whose expectation is a lower bound on :math:`\log p(x)`.

A model and guide take part in one of two sequential protocols:

- Pyro's sequential Monte Carlo protocol, ``init(state, *args)`` and ``step(state, *args)`` as
  :class:`pyro.infer.SMCFilter` uses them: subclass :class:`SequentialModel` and
  :class:`SequentialGuide` (run by :func:`smc_particle_filter`);
- the built-in models' functional protocol, ``filter_context``, ``filter_init`` and
  ``filter_step`` (``DESIGN.md``; run by :func:`particle_filter`), whose hand-written densities
  :func:`check_step_protocol` compares with the Pyro trace of the same path
  (:func:`protocol_log_weight` against :func:`~pyro_seq.losses.particle.trace_log_weights`).

The filters, their resampling rule and the maths are in :mod:`pyro_seq.losses.particle`, beside
the training objective :class:`~pyro_seq.losses.FIVO_ELBO`.

**References**

[1] Chris J. Maddison, Dieterich Lawson, George Tucker, Nicolas Heess, Mohammad Norouzi,
    Andriy Mnih, Arnaud Doucet, Yee Whye Teh, "Filtering Variational Objectives", NIPS 2017,
    arXiv:1705.09279.
"""

from pyro_seq.losses.particle import (  # noqa: F401 (the estimator, public here too)
    RESAMPLE_KINDS,
    ParticleFilterResult,
    ParticleState,
    SequentialGuide,
    SequentialModel,
    SMCStep,
    StepProtocolError,
    ancestor_indices,
    check_step_protocol,
    effective_sample_size,
    log_mean_exp,
    particle_filter,
    protocol_log_weight,
    sequence_steps,
    smc_particle_filter,
)

__all__ = [
    "RESAMPLE_KINDS",
    "ParticleFilterResult",
    "ParticleState",
    "SMCStep",
    "SequentialGuide",
    "SequentialModel",
    "StepProtocolError",
    "ancestor_indices",
    "check_step_protocol",
    "effective_sample_size",
    "fivo_log_likelihood",
    "log_mean_exp",
    "particle_filter",
    "protocol_log_weight",
    "sequence_steps",
    "smc_particle_filter",
]


def fivo_log_likelihood(
    model, guide, x, mask=None, num_particles=1, resample="ess", threshold=0.5, max_plate_nesting=1
):
    """
    The FIVO estimate :math:`\\log \\hat p(x)` of each sequence, ``[batch]``
    (differentiable; wrap in :func:`torch.no_grad` to evaluate): :func:`particle_filter` for a
    pair in the functional step protocol, else :func:`smc_particle_filter` (called with
    ``(x, mask)``, the particle plate outside ``max_plate_nesting`` plates).
    """
    if all(callable(getattr(obj, "filter_step", None)) for obj in (model, guide)):
        return particle_filter(model, guide, x, mask, num_particles, resample, threshold).log_likelihood
    result = smc_particle_filter(
        model,
        guide,
        x,
        mask,
        num_particles=num_particles,
        resample=resample,
        threshold=threshold,
        max_plate_nesting=max_plate_nesting,
    )
    return result.log_likelihood
