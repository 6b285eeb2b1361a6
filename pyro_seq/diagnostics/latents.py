r"""
Latent health: how much each latent step and unit is used.

For a guide sample :math:`z \sim q(z \mid x)` and the model replayed on it, the
KL of step :math:`t` of sequence :math:`b` along the sampled path is

.. math::

    \mathrm{KL}_{b,t} = \sum_{i=1}^{d_z} \mathrm{KL}\big(
        q(z_{t,i} \mid z_{t-1}, x) \,\|\, p(z_{t,i} \mid z_{t-1}, x_{<t})\big),

the analytic per-step KL of Fraccaro et al. (2016) that
:class:`~pyro.infer.TraceMeanField_ELBO` subtracts (summed over real steps, it
*is* the ELBO's KL term for that sample). A unit :math:`i` is **active** when
its posterior mean varies with the data (Burda et al. 2016, applied per frame):

.. math::

    A_i = \operatorname{Var}_{(b,t)\,:\,m_{b,t}}\big(\mu^q_{b,t,i}\big) > 0.01,

the variance over all real frames of the split of the guide's conditional mean
:math:`\mu^q_{b,t,i}` along the sampled path.

In a sequential model the *prior* mean :math:`\mu^p_{b,t,i}` also moves with the
observed past, so a unit whose posterior merely follows its prior counts as active
by this definition. A unit is **informative** when it carries KL:

.. math::

    I_i = \frac{1}{\#\{(b,t) : m_{b,t}\}} \sum_{(b,t)\,:\,m_{b,t}} \mathrm{KL}_{b,t,i} > 0.01 \text{ nats},

which is zero exactly when the posterior of that unit equals its prior.

Works for any pyro_seq model/guide pair whose latent path is either one site
``"z"`` holding a :class:`~pyro_seq.distributions.MarkovGaussianChain` (in
guide and model), or per-step sites ``"z_1" .. "z_T"`` of (masked,
independent) Normals.

**References**

[1] Marco Fraccaro, Søren Kaae Sønderby, Ulrich Paquet, Ole Winther,
    "Sequential Neural Models with Stochastic Layers", NIPS 2016, arXiv:1605.07571.

[2] Yuri Burda, Roger Grosse, Ruslan Salakhutdinov,
    "Importance Weighted Autoencoders", ICLR 2016, arXiv:1509.00519.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from pyro.poutine.util import site_is_subsample

from pyro_seq.diagnostics._common import (
    base_distribution,
    batch_tensors,
    eval_mode,
    pad_rows,
    step_site_names,
    trace_pair,
)
from pyro_seq.distributions import MarkovGaussianChain
from pyro_seq.nn import gaussian_kl

__all__ = [
    "ACTIVE_THRESHOLD",
    "GaussianSteps",
    "LatentHealth",
    "Moments",
    "gaussian_steps",
    "kl_elementwise",
    "latent_health",
    "latent_path",
    "latent_steps",
    "layer_health",
]

#: Burda et al. (2016)'s activity threshold on the variance of the posterior mean.
ACTIVE_THRESHOLD = 0.01
#: KL per frame (nats) above which a unit counts as informative (see the module docstring).
INFORMATIVE_THRESHOLD = 0.01


class GaussianSteps(NamedTuple):
    """
    Per-step Gaussian parameters of guide and model along one sampled path; each
    field is ``[batch, T, z_dim]``.
    """

    value: torch.Tensor
    loc_q: torch.Tensor
    scale_q: torch.Tensor
    loc_p: torch.Tensor
    scale_p: torch.Tensor


def _chain(site, role):
    fn = base_distribution(site["fn"])
    if not isinstance(fn, MarkovGaussianChain):
        raise TypeError(
            f"the {role}'s site {site['name']!r} holds a {type(fn).__name__}; "
            "latent diagnostics need a MarkovGaussianChain (or per-step Normal sites)"
        )
    return fn


def _normal(site, role):
    fn = base_distribution(site["fn"])
    if not isinstance(fn, torch.distributions.Normal):
        raise TypeError(
            f"the {role}'s site {site['name']!r} holds a {type(fn).__name__}; "
            "per-step latent sites must be (masked, independent) Normals"
        )
    return fn


def gaussian_steps(guide_trace, model_trace, num_steps, site="z"):
    """
    Read the per-step Gaussians of guide and model from a guide trace and the
    model trace replayed on it.

    - one site ``site`` with :class:`~pyro_seq.distributions.MarkovGaussianChain`
      distributions: :meth:`~pyro_seq.distributions.MarkovGaussianChain.params`
      (the guide's cached ``(loc, scale)`` of its sample, the model's path
      function at the same ``z_{0:T-1}``), as in
      :func:`~pyro_seq.distributions.kl_per_step`;
    - else per-step sites ``{site}_1 .. {site}_T`` of Normals.

    :param int num_steps: ``T`` (the padded time dim).
    :rtype: GaussianSteps
    """
    if site in guide_trace.nodes:
        if site not in model_trace.nodes:
            raise ValueError(f"the guide samples {site!r} but the model has no such site")
        q = _chain(guide_trace.nodes[site], "guide")
        p = _chain(model_trace.nodes[site], "model")
        value = guide_trace.nodes[site]["value"]  # [batch, T, z_dim]
        loc_q, scale_q = q.params(value)  # [batch, T, z_dim] each
        loc_p, scale_p = p.params(value)  # [batch, T, z_dim] each
        for role, scale in (("guide", scale_q), ("model", scale_p)):
            if scale.shape != value.shape:
                raise NotImplementedError(
                    f"the {role}'s {type(q if role == 'guide' else p).__name__} at site "
                    f"{site!r} has per-step scales of shape {tuple(scale.shape)}, not "
                    f"{tuple(value.shape)}: only diagonal Gaussian steps are supported "
                    "(a full-covariance step has no KL per unit)"
                )
        return GaussianSteps(value, loc_q, scale_q, loc_p, scale_p)
    names = step_site_names(guide_trace, site, num_steps)
    fields = {k: [] for k in GaussianSteps._fields}
    for name in names:
        if name not in model_trace.nodes:
            raise ValueError(f"the guide samples {name!r} but the model has no such site")
        q = _normal(guide_trace.nodes[name], "guide")
        p = _normal(model_trace.nodes[name], "model")
        value = guide_trace.nodes[name]["value"]  # [batch, z_dim]
        for key, t in zip(GaussianSteps._fields, (value, q.loc, q.scale, p.loc, p.scale)):
            fields[key].append(t.expand_as(value))
    return GaussianSteps(*(torch.stack(fields[k], dim=-2) for k in GaussianSteps._fields))


def latent_steps(model, guide, x, mask, site="z"):
    """
    Run the guide and the replayed model on one batch (no gradients) and read the
    per-step Gaussians (see :func:`gaussian_steps`).

    :param torch.Tensor x: ``[batch, time, x_dim]``
    :param torch.Tensor mask: ``[batch, time]`` bool
    :rtype: GaussianSteps
    """
    guide_trace, model_trace = trace_pair(model, guide, x, mask)
    with torch.no_grad():
        return gaussian_steps(guide_trace, model_trace, x.shape[1], site)


def kl_elementwise(steps, mask):
    """
    :math:`\\mathrm{KL}(q(z_{t,i} \\mid \\cdot) \\| p(z_{t,i} \\mid \\cdot))` per sequence,
    step and unit, zero on padded steps.

    :param GaussianSteps steps: per-step parameters.
    :param torch.Tensor mask: ``[batch, T]`` bool
    :returns: ``[batch, T, z_dim]``
    """
    kl = gaussian_kl(steps.loc_q, steps.scale_q, steps.loc_p, steps.scale_p)  # [batch, T, z_dim]
    return kl.masked_fill(~mask.unsqueeze(-1), 0.0)


class Moments:
    """
    Running count, mean and sum of squared deviations of ``[n, d]`` rows, merged
    batch by batch (Chan et al.'s parallel update; stable in float64).
    """

    def __init__(self, dim):
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)  # [d]
        self.m2 = torch.zeros(dim, dtype=torch.float64)  # [d]

    def update(self, rows):
        """Add ``rows [n, d]``."""
        rows = rows.detach().to("cpu", torch.float64)  # [n, d]
        n = rows.shape[0]
        if n == 0:
            return self
        mean_b = rows.mean(0)  # [d]
        m2_b = ((rows - mean_b) ** 2).sum(0)  # [d]
        total = self.count + n
        delta = mean_b - self.mean  # [d]
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n / total
        self.count = total
        return self

    @property
    def variance(self):
        """Population variance ``[d]`` (NaN before any row)."""
        if self.count == 0:
            return torch.full_like(self.mean, float("nan"))
        return self.m2 / self.count


@dataclass
class LatentHealth:
    """
    Result of :func:`latent_health`; arrays are numpy ``float64``.

    :ivar kl_per_step: ``[N, T_max]`` KL per sequence and step along the sampled
        path, summed over units; NaN beyond each sequence's length.
    :ivar lengths: ``[N]`` frames per sequence.
    :ivar kl_per_frame: total KL / total frames (nats per frame).
    :ivar kl_per_unit: ``[z_dim]`` KL of each unit summed over real frames / total
        frames (sums to ``kl_per_frame``).
    :ivar posterior_mean_variance: ``[z_dim]`` variance over all real frames of the
        guide's conditional mean of each unit.
    :ivar active_units: number of units with ``posterior_mean_variance > threshold``.
    :ivar threshold: the activity threshold used.
    """

    kl_per_step: np.ndarray
    lengths: np.ndarray
    kl_per_frame: float
    kl_per_unit: np.ndarray
    posterior_mean_variance: np.ndarray
    active_units: int
    threshold: float = ACTIVE_THRESHOLD

    @property
    def informative(self):
        """``[z_dim]`` bool: units whose KL per frame exceeds :data:`INFORMATIVE_THRESHOLD` nats."""
        return self.kl_per_unit > INFORMATIVE_THRESHOLD

    @property
    def informative_units(self):
        """Number of units whose KL per frame exceeds :data:`INFORMATIVE_THRESHOLD` nats."""
        return int(self.informative.sum())

    @property
    def active(self):
        """``[z_dim]`` bool: which units are active."""
        return self.posterior_mean_variance > self.threshold

    @property
    def kl_per_sequence(self):
        """``[N]`` total KL of each sequence (nats)."""
        return np.nansum(self.kl_per_step, axis=1)


def latent_health(model, guide, batches, site="z", threshold=ACTIVE_THRESHOLD):
    """
    KL per step and unit, and active units, over a data split (one posterior path
    per sequence, model and guide in eval mode, no gradients).

    Sequence ``n`` of the result is the ``n``-th sequence in the iteration order
    of ``batches`` (use ``make_batches(..., shuffle=False)`` to keep the data order).

    :param model: a pyro_seq model, ``model(x, mask)``.
    :param guide: its guide, ``guide(x, mask)``.
    :param batches: iterable of :class:`~pyro_seq.data.SequenceBatch` (or ``(x, mask)``).
    :param str site: the latent site name (``"z"``, or the stem of ``"z_1" .. "z_T"``).
    :param float threshold: activity threshold on the variance of the posterior mean.
    :rtype: LatentHealth
    """
    rows, lengths = [], []
    kl_unit_sum, moments, frames = None, None, 0
    with eval_mode(model, guide), torch.no_grad():
        for batch in batches:
            x, mask = batch_tensors(batch)
            steps = latent_steps(model, guide, x, mask, site)
            kl = kl_elementwise(steps, mask).double()  # [batch, T, z_dim]
            if kl_unit_sum is None:
                kl_unit_sum = torch.zeros(kl.shape[-1], dtype=torch.float64)
                moments = Moments(kl.shape[-1])
            kl_unit_sum += kl.sum((0, 1)).cpu()  # [z_dim]
            moments.update(steps.loc_q[mask])  # [frames, z_dim]
            kl_step = kl.sum(-1).cpu()  # [batch, T]
            length = mask.sum(-1).cpu()  # [batch]
            rows.extend(kl_step[b, : length[b]] for b in range(kl_step.shape[0]))
            lengths.append(length)
            frames += int(length.sum())
    if not rows:
        raise ValueError("latent_health() got no batches")
    lengths = torch.cat(lengths)  # [N]
    kl_per_step = pad_rows(rows, int(lengths.max()))  # [N, T_max]
    kl_per_unit = kl_unit_sum / frames  # [z_dim]
    variance = moments.variance  # [z_dim]
    return LatentHealth(
        kl_per_step=kl_per_step.numpy(),
        lengths=lengths.numpy(),
        kl_per_frame=float(kl_unit_sum.sum() / frames),
        kl_per_unit=kl_per_unit.numpy(),
        posterior_mean_variance=variance.numpy(),
        active_units=int((variance > threshold).sum()),
        threshold=float(threshold),
    )


def latent_path(guide_trace, num_steps, site="z"):
    """
    The sampled latent path of a guide trace: site ``site`` ``[batch, T, z_dim]``, or
    the per-step sites ``{site}_1 .. {site}_T`` stacked along time.

    :returns: ``[batch, T, z_dim]``
    """
    if site in guide_trace.nodes:
        return guide_trace.nodes[site]["value"]
    names = step_site_names(guide_trace, site, num_steps)
    return torch.stack([guide_trace.nodes[n]["value"] for n in names], dim=-2)


def layer_health(model, guide, batches, sites=None, threshold=ACTIVE_THRESHOLD):
    r"""
    KL per unit and active units of each stochastic *layer* of a hierarchical
    model (the Ladder VAE's :math:`z_1, \dots, z_L`), over a data split: one
    guide sample per data point, model and guide in eval mode, no gradients.

    For layer site :math:`z_i` the KL is the analytic
    :math:`\mathrm{KL}(q(z_i \mid \cdot) \,\|\, p(z_i \mid z_{i+1}))` at the
    sampled parents (summed over layers it is the ELBO's KL for that sample), and
    a unit is active when the variance over the split of its posterior mean
    exceeds ``threshold`` (Sønderby et al. 2016 after Burda et al. 2016).

    :param batches: iterable of :class:`~pyro_seq.data.SequenceBatch` (or ``(x, mask)``).
    :param sites: latent site names (default: every latent sample site of the
        guide, in sorted order: ``z_1 .. z_L``).
    :returns: dict ``site -> LatentHealth`` with one "frame" per data point
        (``kl_per_frame`` is nats per data point, ``kl_per_step`` ``[N, 1]``).
    """
    kl_sum, moments, count, per_point = {}, {}, 0, {}
    with eval_mode(model, guide), torch.no_grad():
        for batch in batches:
            x, mask = batch_tensors(batch)
            guide_trace, model_trace = trace_pair(model, guide, x, mask)
            if sites is None:
                sites = sorted(
                    n for n, site in guide_trace.nodes.items()
                    if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
                )
                if not sites:
                    raise ValueError("the guide has no latent sample sites")
            for name in sites:
                q = _normal(guide_trace.nodes[name], "guide")
                p = _normal(model_trace.nodes[name], "model")
                kl = gaussian_kl(q.loc, q.scale, p.loc, p.scale).double()  # [batch, z_dim]
                if name not in kl_sum:
                    kl_sum[name] = torch.zeros(kl.shape[-1], dtype=torch.float64)
                    moments[name], per_point[name] = Moments(kl.shape[-1]), []
                kl_sum[name] += kl.sum(0).cpu()
                moments[name].update(q.loc.expand_as(kl))  # [batch, z_dim]
                per_point[name].append(kl.sum(-1).cpu())  # [batch]
            count += x.shape[0]
    if not count:
        raise ValueError("layer_health() got no batches")
    out = {}
    for name in sites:
        variance = moments[name].variance
        out[name] = LatentHealth(
            kl_per_step=torch.cat(per_point[name]).unsqueeze(-1).numpy(),
            lengths=np.ones(count, dtype=np.int64),
            kl_per_frame=float(kl_sum[name].sum() / count),
            kl_per_unit=(kl_sum[name] / count).numpy(),
            posterior_mean_variance=variance.numpy(),
            active_units=int((variance > threshold).sum()),
            threshold=float(threshold),
        )
    return out
