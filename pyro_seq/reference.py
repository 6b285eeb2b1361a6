"""
Hand-written pure-PyTorch SRNN bound: no Pyro traces, sites or handlers.

It uses the very same ``nn.Module`` children (and so the same parameter
tensors) as :class:`~pyro_seq.models.SRNN` and :class:`~pyro_seq.guides.SRNNGuide`,
and draws its noise in the same order, so for a fixed seed it reproduces the
Pyro ELBO exactly. The tests compare the two in value and gradient; the
benchmarks time it as the floor a Pyro step is measured against.
"""

import torch
from torch.distributions.utils import _standard_normal

from pyro_seq.nn import gaussian_kl, gaussian_log_prob, reverse_padded, shift_right


def srnn_elbo(model, guide, x, mask, beta=1.0, analytic_kl=False):
    """
    Per-sequence (warm-up) ELBO of an SRNN with its guide, in plain PyTorch.

    .. math::

        \\mathcal{L}_\\beta(x) = \\sum_t m_t \\Big[\\log p(x_t \\mid z_t, d_t)
            + \\beta \\big(\\log p(z_t \\mid z_{t-1}, d_t) - \\log q(z_t \\mid z_{t-1}, a_t)\\big)\\Big],
        \\qquad z_t \\sim q.

    :param model: :class:`~pyro_seq.models.SRNN`
    :param guide: :class:`~pyro_seq.guides.SRNNGuide`
    :param torch.Tensor x: ``[batch, time, x_dim]``
    :param torch.Tensor mask: ``[batch, time]`` bool
    :param float beta: warm-up weight of the latent terms.
    :param bool analytic_kl: use the per-step Gaussian KL along the sampled
        path instead of :math:`\\log p - \\log q` (as ``TraceMeanField_ELBO``).
    :returns: ``[batch]`` ELBO per sequence (differentiable).
    """
    batch, time, _ = x.shape
    lengths = mask.sum(-1)  # [batch]
    # deterministic layer
    d, _ = model.d_rnn(model.input_dropout(shift_right(x, model.x_0)))  # [batch, time, d_dim]
    # guide summaries
    xd = torch.cat([d, x], dim=-1)  # [batch, time, d_dim + x_dim]
    if guide.kind == "smoother":
        a_rev, _ = guide.a_rnn(reverse_padded(xd, lengths))
        a = reverse_padded(a_rev, lengths)  # [batch, time, a_dim]
    else:
        a = guide.a_net(xd)  # [batch, time, a_dim]
    post, prior = guide.posterior, model.prior
    post_ctx = post.project_context(a)  # [batch, time, hidden]
    prior_ctx = prior.project_context(d)  # [batch, time, hidden]
    # sequential sampling of z from q
    z_prev = model.z_0.expand(batch, model.z_dim)  # [batch, z_dim]
    zs, locs_q, scales_q = [], [], []
    for t in range(time):
        loc, scale = post.step(z_prev, post_ctx[:, t])  # [batch, z_dim]
        if guide.res_q:
            loc = loc + prior.step(z_prev, prior_ctx[:, t])[0]
        eps = _standard_normal(loc.shape, dtype=loc.dtype, device=loc.device)
        z_prev = loc + scale * eps
        zs.append(z_prev)
        locs_q.append(loc)
        scales_q.append(scale)
    z = torch.stack(zs, 1)  # [batch, time, z_dim]
    loc_q, scale_q = torch.stack(locs_q, 1), torch.stack(scales_q, 1)
    # prior along the path, vectorised
    z_before = torch.cat([model.z_0.expand(batch, 1, model.z_dim), z[:, :-1]], 1)
    loc_p, scale_p = prior(z_before, prior_ctx)  # [batch, time, z_dim]
    if analytic_kl:
        latent = -gaussian_kl(loc_q, scale_q, loc_p, scale_p).sum(-1)  # [batch, time]
    else:
        latent = (
            gaussian_log_prob(z, loc_p, scale_p) - gaussian_log_prob(z, loc_q, scale_q)
        ).sum(-1)  # [batch, time]
    # emission, vectorised
    out = model.emitter(torch.cat([z, d], -1))  # [batch, time, out_dim]
    if model.likelihood == "bernoulli":
        log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            out, x, reduction="none"
        ).sum(-1)  # [batch, time]
    else:
        loc_x, raw = out.chunk(2, -1)
        scale_x = torch.nn.functional.softplus(raw) + model.min_scale
        log_lik = gaussian_log_prob(x, loc_x, scale_x).sum(-1)  # [batch, time]
    per_step = (log_lik + beta * latent).masked_fill(~mask, 0.0)  # [batch, time]
    return per_step.sum(-1)  # [batch]
