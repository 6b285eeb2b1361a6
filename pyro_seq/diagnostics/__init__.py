"""
Diagnostics of trained pyro_seq models and guides.

- :mod:`.latents`: latent health: KL per step and per unit along a posterior
  path, active units (:func:`latent_health`).
- :mod:`.psis`: importance weights per sequence, their importance-weighted
  log-likelihood and effective sample size.
- :mod:`.arviz_adapter`: the only module that calls ArviZ (0.x API):
  Pareto :math:`\\hat k`, :func:`to_inference_data`, :func:`music_ppc`.
- :mod:`.compare`: :func:`compare_guides`, a table in the form of ``arviz.compare``.
- :mod:`.ppc`: predictive draws and music statistics (notes per frame, note durations).
- :mod:`.plots`: the pictures (KL heat map and bars, :math:`\\hat k`, comparison, PPC).

Typical use on a test split::

    batches = list(make_batches(test, 16, shuffle=False))
    health = latent_health(model, guide, batches)
    idata = to_inference_data(model, guide, batches, num_samples=200)
    table = compare_guides({"smoother": (model, guide), "filter": (model, guide_f)}, batches)
    plot_khat(idata, path="khat.png")
"""

from pyro_seq.diagnostics.arviz_adapter import (
    ArvizVersionError,
    music_ppc,
    pareto_khat,
    to_inference_data,
)
from pyro_seq.diagnostics.compare import compare_guides, compare_inference_data
from pyro_seq.diagnostics.latents import ACTIVE_THRESHOLD, LatentHealth, latent_health, layer_health
from pyro_seq.diagnostics.plots import (
    plot_compare,
    plot_kl_heatmap,
    plot_kl_per_unit,
    plot_khat,
    plot_layer_kl,
    plot_music_ppc,
)
from pyro_seq.diagnostics.ppc import music_statistics
from pyro_seq.diagnostics.psis import importance_ess, importance_weights, iw_log_likelihood

__all__ = [
    "ACTIVE_THRESHOLD",
    "ArvizVersionError",
    "LatentHealth",
    "compare_guides",
    "compare_inference_data",
    "importance_ess",
    "importance_weights",
    "iw_log_likelihood",
    "latent_health",
    "layer_health",
    "music_ppc",
    "music_statistics",
    "pareto_khat",
    "plot_compare",
    "plot_kl_heatmap",
    "plot_kl_per_unit",
    "plot_khat",
    "plot_layer_kl",
    "plot_music_ppc",
    "to_inference_data",
]
