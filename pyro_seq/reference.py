"""
Hand-written pure-PyTorch bounds (SRNN, Z-Forcing, Ladder VAE, M2/ADGM/SDGM, VAE/GAN): no Pyro traces,
sites or handlers.

It uses the very same ``nn.Module`` children (and so the same parameter
tensors) as :class:`~pyro_seq.models.SRNN` and :class:`~pyro_seq.guides.SRNNGuide`,
and draws its noise in the same order, so for a fixed seed it reproduces the
Pyro ELBO exactly. The tests compare the two in value and gradient; the
benchmarks time it as the floor a Pyro step is measured against.
"""

import math

import torch
from torch.distributions.utils import _standard_normal

from pyro_seq.nn import gaussian_kl, gaussian_log_prob, reverse_padded, shift_right


def srnn_elbo(model, guide, x, mask, beta=1.0, analytic_kl=False, made_key_loop=True):
    """
    Per-sequence (warm-up) ELBO of an SRNN with its guide, in plain PyTorch, for
    either emission (``model.emission_kind``: independent keys, or the MADE written
    out by :func:`made_log_prob`).

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
    :param bool made_key_loop: MADE emission only: compute each key's logit in its own
        pass (the independent check of the tests) rather than all in one masked pass
        (the benchmark floor); see :func:`made_log_prob`.
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
    post_t, prior_t = post_ctx.unbind(1), prior_ctx.unbind(1)  # time x [batch, hidden]: no per-step indexing (O(T) backward)
    # sequential sampling of z from q
    z_prev = model.z_0.expand(batch, model.z_dim)  # [batch, z_dim]
    zs, locs_q, scales_q = [], [], []
    for t in range(time):
        loc, scale = post.step(z_prev, post_t[t])  # [batch, z_dim]
        if guide.res_q:
            loc = loc + prior.step(z_prev, prior_t[t])[0]
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
    out = model.emitter(torch.cat([z, d], -1))  # [batch, time, out_dim] (MADE: its context)
    log_lik = _frame_log_prob(model, out, x, made_key_loop)  # [batch, time]
    per_step = (log_lik + beta * latent).masked_fill(~mask, 0.0)  # [batch, time]
    return per_step.sum(-1)  # [batch]


def zforcing_elbo(model, guide, x, mask, beta=1.0, analytic_kl=False, made_key_loop=True):
    """
    Per-sequence (warm-up) ELBO of Z-Forcing with its guide, in plain PyTorch,
    and the auxiliary terms, drawing noise in the same order as the Pyro model.

    .. math::

        \\mathcal{L}_\\beta(x) = \\sum_t m_t \\Big[\\log p(x_t \\mid h_t)
            + \\beta \\big(\\log p(z_t \\mid h_{t-1}) - \\log q(z_t \\mid h_{t-1}, b_t)\\big)\\Big].

    :param model: :class:`~pyro_seq.models.ZForcing`
    :param guide: :class:`~pyro_seq.guides.ZForcingGuide`
    :param bool made_key_loop: MADE emission only, as for :func:`srnn_elbo`.
    :returns: ``(elbo [batch], aux_log_prob [batch] or None, backward_log_prob [batch] or None)``.
    """
    batch, time, _ = x.shape
    lengths = mask.sum(-1)  # [batch]
    b_rev, _ = guide.b_rnn(reverse_padded(x, lengths))
    b = reverse_padded(b_rev, lengths)  # [batch, time, b_dim]
    post_ctx = guide.posterior.project_context(b).unbind(1)  # time x [batch, hidden]
    e_x = model.embed_dropout(model.x_embed(shift_right(x, model.x_0)))  # [batch, time, emb]
    rnn, emb = model.rnn, model.emb_dim
    gates_x = (e_x @ rnn.weight_ih_l0[:, :emb].t() + rnn.bias_ih_l0 + rnn.bias_hh_l0).unbind(1)  # time x [batch, 4h]
    w_z, w_hh = rnn.weight_ih_l0[:, emb:], rnn.weight_hh_l0
    h = c = x.new_zeros(batch, model.h_dim)
    zs, hs, locs_q, scales_q = [], [], [], []
    for t in range(time):
        hs.append(h)  # h_{t-1}
        loc, scale = guide.posterior.step(h, post_ctx[t])  # [batch, z_dim]
        eps = _standard_normal(loc.shape, dtype=loc.dtype, device=loc.device)
        z_t = loc + scale * eps
        gates = gates_x[t] + model.z_embed(z_t) @ w_z.t() + h @ w_hh.t()  # [batch, 4h]
        i, f, g, o = gates.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        zs.append(z_t)
        locs_q.append(loc)
        scales_q.append(scale)
    z, h_prev = torch.stack(zs, 1), torch.stack(hs, 1)  # [batch, time, .]
    h_all = torch.cat([h_prev[:, 1:], h.unsqueeze(1)], 1)  # [batch, time, h_dim]: h_t
    loc_q, scale_q = torch.stack(locs_q, 1), torch.stack(scales_q, 1)
    loc_p, scale_p = model.prior(h_prev)  # [batch, time, z_dim]
    if analytic_kl:
        latent = -gaussian_kl(loc_q, scale_q, loc_p, scale_p).sum(-1)  # [batch, time]
    else:
        latent = (gaussian_log_prob(z, loc_p, scale_p) - gaussian_log_prob(z, loc_q, scale_q)).sum(-1)
    out = model.emitter(h_all)  # [batch, time, out_dim] (MADE: its context)
    log_lik = _frame_log_prob(model, out, x, made_key_loop)  # [batch, time]
    elbo = (log_lik + beta * latent).masked_fill(~mask, 0.0).sum(-1)  # [batch]
    aux = backward = None
    if guide.auxiliary is not None:
        inputs = z if guide.auxiliary == "z" else torch.cat([h_prev, z], -1)
        loc_b, log_var = guide.aux_net.net(inputs).chunk(2, -1)
        log_var = 10.0 * torch.tanh(log_var / 10.0)
        lp = gaussian_log_prob(b.detach(), loc_b, (0.5 * log_var).exp()).sum(-1)  # [batch, time]
        aux = lp.masked_fill(~mask, 0.0).sum(-1)
    if guide.backward_prediction:
        lp = _emission_log_prob(model, guide.backward_head(b[:, 1:]), x[:, :-1])  # [batch, time - 1]
        backward = lp.masked_fill(~mask[:, 1:], 0.0).sum(-1)
    return elbo, aux, backward


def _frame_log_prob(model, out, x, made_key_loop):
    """The emission's log density of each frame, ``[batch, time]``."""
    if getattr(model, "emission_kind", "bernoulli") == "made":
        return made_log_prob(model.made, x, out, key_loop=made_key_loop)
    return _emission_log_prob(model, out, x)


def _made_logits(made, x, context):
    """All logits of a :class:`~pyro_seq.nn.MADE` with the masked products written out: ``[..., D]``."""
    first = made.hidden[0]
    h = x @ (first.weight * first.mask).t() + first.bias  # [..., H_1]
    c_out = 0.0
    if made.context_layer is not None:
        c = context @ made.context_layer.weight.t()  # [..., H_1 + D]
        h = h + c[..., : first.out_features]
        c_out = c[..., first.out_features :]  # [..., D]
    h = made.activation(h)
    for layer in made.hidden[1:]:
        h = made.activation(h @ (layer.weight * layer.mask).t() + layer.bias)  # [..., H_l]
    out, direct = made.output, made.direct
    logits = h @ (out.weight * out.mask).t() + out.bias + c_out  # [..., D]
    return logits + x @ (direct.weight * direct.mask).t()  # [..., D]


def made_log_prob(made, x, context, key_loop=True):
    r"""
    :math:`\log p(x \mid c) = \sum_d \log \mathrm{Bernoulli}(x_d \mid \sigma(\ell_d(x_{<d}, c)))`
    of the frames ``x [..., D]`` under a conditional :class:`~pyro_seq.nn.MADE` with context
    ``c [..., C]``, by hand (independently of :class:`~pyro_seq.distributions.MADEBernoulli`).

    :param bool key_loop: compute :math:`\ell_d` in its own pass for each key, from the
        frame with the keys :math:`x_{\ge d}` set to 0, so that a mask letting a key see
        itself or a later key would change the result; ``False``: one masked pass.
    :returns: ``[...]``
    """
    if key_loop:
        num_keys = x.shape[-1]
        keep = torch.ones(num_keys, num_keys, dtype=x.dtype, device=x.device).tril(-1)  # [D, D]: row d: x_{<d}
        logits = torch.stack(
            [_made_logits(made, x * keep[d], context)[..., d] for d in range(num_keys)], dim=-1
        )  # [..., D]
    else:
        logits = _made_logits(made, x, context)  # [..., D]
    return (x * logits - torch.nn.functional.softplus(logits)).sum(-1)


def _emission_log_prob(model, out, x):
    if model.likelihood == "bernoulli":
        return -torch.nn.functional.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
    loc_x, raw = out.chunk(2, -1)
    scale_x = torch.nn.functional.softplus(raw) + model.min_scale
    return gaussian_log_prob(x, loc_x, scale_x).sum(-1)


def _dense(block, inputs):
    """A :func:`~pyro_seq.nn.dense_layers` stack by hand (linear, batch norm, leaky ReLU)."""
    h = inputs
    for layer in block:
        if isinstance(layer, torch.nn.Linear):
            h = h @ layer.weight.t() + layer.bias
        elif isinstance(layer, torch.nn.BatchNorm1d):
            if layer.training:
                mean, var = h.mean(0), h.var(0, unbiased=False)
            else:
                mean, var = layer.running_mean, layer.running_var
            h = (h - mean) / (var + layer.eps).sqrt() * layer.weight + layer.bias
        else:
            h = torch.where(h > 0, h, layer.negative_slope * h)
    return h


def _gaussian_block(block, inputs):
    """``(features, loc, scale)`` of a :class:`~pyro_seq.nn.GaussianBlock` by hand."""
    d = _dense(block.body, inputs)
    loc, raw = (d @ block.head.weight.t() + block.head.bias).chunk(2, dim=-1)
    loc = 10.0 * torch.tanh(loc / 10.0)
    scale = (torch.nn.functional.softplus(raw) + block.min_scale).clamp(max=10.0)
    return d, loc, scale


def ladder_elbo(model, guide, x, beta=1.0, analytic_kl=False, by_hand=True):
    """
    Per-image (warm-up) ELBO of a :class:`~pyro_seq.models.LadderVAE` with a
    :class:`~pyro_seq.guides.LadderGuide` or :class:`~pyro_seq.guides.BottomUpGuide`,
    in plain PyTorch (precision weighting and densities written out; noise drawn in
    the guide's order, so a fixed seed reproduces the Pyro ELBO).

    .. math::

        \\mathcal{L}_\\beta(x) = \\log p(x \\mid z_1) + \\beta \\Big[\\log p(z_L)
            + \\sum_{i<L} \\log p(z_i \\mid z_{i+1}) - \\log q(z_{1:L} \\mid x)\\Big],
        \\qquad z \\sim q.

    :param torch.Tensor x: ``[batch, x_dim]`` binary images.
    :param bool analytic_kl: per-layer Gaussian KL at the sampled parents (as
        ``TraceMeanField_ELBO``; valid for the ladder guide only).
    :param bool by_hand: write the blocks out (linear, batch norm, leaky ReLU) and
        recompute the prior's top-down pass: an independent check for the tests.
        ``False`` calls the modules and reuses the ladder guide's top-down pass for the
        prior, as the Pyro model does: the fastest plain-PyTorch form (the benchmark floor).
    :returns: ``[batch]`` (differentiable).
    """
    L = len(model.z_dims)
    block_fn = _gaussian_block if by_hand else (lambda block, inputs: block(inputs))

    def draw(loc, scale):
        return loc + scale * _standard_normal(loc.shape, dtype=loc.dtype, device=loc.device)

    z, q, p = {}, {}, {}  # layer -> sample, (loc, scale) of q and of p
    if hasattr(guide, "bottom_up"):
        d, est = x, []
        for block in guide.bottom_up:
            d, loc, scale = block_fn(block, d)
            est.append((loc, scale))
        blocks = model.top_down if guide.share_top_down else guide.guide_top_down
        q[L] = est[-1]
        z[L] = draw(*q[L])
        for i in range(L - 1, 0, -1):
            _, loc_p, scale_p = block_fn(blocks[i - 1], z[i + 1])
            if guide.share_top_down and not by_hand:
                p[i] = (loc_p, scale_p)
            (loc_e, scale_e) = est[i - 1]
            var = 1.0 / (scale_e.pow(-2) + scale_p.pow(-2))
            q[i] = ((loc_e * scale_e.pow(-2) + loc_p * scale_p.pow(-2)) * var, var.sqrt())
            z[i] = draw(*q[i])
    else:
        below = x
        for i, block in enumerate(guide.blocks, start=1):
            _, loc, scale = block_fn(block, below)
            q[i] = (loc, scale)
            z[i] = below = draw(loc, scale)
    p[L] = (torch.zeros_like(z[L]), torch.ones_like(z[L]))
    for i in range(L - 1, 0, -1):
        if i not in p:
            p[i] = block_fn(model.top_down[i - 1], z[i + 1])[1:]
    latent = 0.0
    for i in range(1, L + 1):
        if analytic_kl:
            latent = latent - gaussian_kl(*q[i], *p[i]).sum(-1)
        else:
            latent = latent + (gaussian_log_prob(z[i], *p[i]) - gaussian_log_prob(z[i], *q[i])).sum(-1)
    if by_hand:
        logits = _dense(model.decoder[0], z[1]) @ model.decoder[1].weight.t() + model.decoder[1].bias
    else:
        logits = model.decoder(z[1])  # [batch, x_dim]
    log_lik = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)  # [batch]
    return log_lik + beta * latent


def _normal_sample(loc, scale):
    """``loc + eps * scale`` with ``eps`` drawn exactly as Pyro's ``Normal(loc, scale).rsample()``."""
    return loc + _standard_normal(loc.shape, dtype=loc.dtype, device=loc.device) * scale


def _semi_supervised_terms(model, guide, x, y):
    r"""
    One pass of the auxiliary guide and the model by hand, for labels ``y`` (``[batch]``) or,
    with ``y=None``, for every class (``[K, 1]``), drawing noise in the guide's order.

    :returns: ``(L [..., batch], log_qa [batch] or 0, logits_y [batch, K])`` with
        :math:`L = \log p(x, y, z[, a]) - \log q(z \mid \cdot)` per class or label.
    """
    from pyro_seq.nn import bounded_loc_scale

    min_scale = model.min_scale
    a = log_qa = 0.0
    if model.a_dim:
        loc_a, scale_a = bounded_loc_scale(guide.a_net(x), min_scale)  # [batch, a_dim]
        a = _normal_sample(loc_a, scale_a)
        log_qa = gaussian_log_prob(a, loc_a, scale_a).sum(-1)  # [batch]
        logits_y = guide.y_net(x, a)  # [batch, K]
    else:
        logits_y = guide.y_net(x)
    ys = torch.arange(model.y_dim, device=x.device).view(-1, 1) if y is None else y  # [K, 1] or [batch]
    y1 = torch.nn.functional.one_hot(ys, model.y_dim).to(x.dtype)  # [K, 1, K] or [batch, K]
    z_inputs = (x, y1, a) if model.a_dim else (x, y1)
    loc_z, scale_z = bounded_loc_scale(guide.z_net(*z_inputs), min_scale)  # [..., batch, z_dim]
    z = _normal_sample(loc_z, scale_z)
    log_q = gaussian_log_prob(z, loc_z, scale_z).sum(-1)  # [..., batch]
    log_p = gaussian_log_prob(z, torch.zeros_like(z), torch.ones_like(z)).sum(-1) - math.log(model.y_dim)
    if model.auxiliary == "sdgm":
        loc_pa, scale_pa = bounded_loc_scale(model.a_net(y1, z), min_scale)
        log_p = log_p + gaussian_log_prob(a, loc_pa, scale_pa).sum(-1)
        logits_x = model.x_net(y1, z, a)
    else:
        logits_x = model.x_net(y1, z)  # [..., batch, x_dim]
        if model.auxiliary == "adgm":
            loc_pa, scale_pa = bounded_loc_scale(model.a_net(x, y1, z), min_scale)
            log_p = log_p + gaussian_log_prob(a, loc_pa, scale_pa).sum(-1)
    log_p = log_p + (x * logits_x - torch.nn.functional.softplus(logits_x)).sum(-1)  # Bernoulli log p(x | .)
    return log_p - log_q, log_qa, logits_y


def semi_supervised_loss(model, guide, x_labelled, y_labelled, x_unlabelled, alpha):
    r"""
    The loss of :class:`~pyro_seq.losses.SemiSupervised_ELBO` (one particle, no warm-up) by hand,
    the sum over classes written out as a loop:

    .. math::

        -\frac{1}{n_l}\sum_i \big[\mathcal{L}(x_i, y_i) + \alpha \log q(y_i \mid a_i, x_i)\big]
        - \frac{1}{n_u}\sum_j \Big[\sum_{c=1}^{K} q(c \mid a_j, x_j)
            \big(\mathcal{L}(x_j, c \mid a_j) - \log q(c \mid a_j, x_j)\big) - \log q(a_j \mid x_j)\Big].

    Noise is drawn in the guide's order (labelled ``a``, ``z``, then unlabelled ``a``, ``z``),
    so a fixed seed reproduces the Pyro loss exactly.

    :returns: ``(loss, labelled bound per image, unlabelled bound per image)``.
    """
    terms, log_qa, logits_y = _semi_supervised_terms(model, guide, x_labelled, y_labelled)
    log_qy = torch.log_softmax(logits_y, -1).gather(-1, y_labelled[:, None]).squeeze(-1)  # [n_l]
    bound_l = (terms - log_qa).sum()
    terms, log_qa, logits_y = _semi_supervised_terms(model, guide, x_unlabelled, None)  # terms [K, n_u]
    log_q = torch.log_softmax(logits_y, -1)  # [n_u, K]
    bound_u = -torch.as_tensor(log_qa).sum() if model.a_dim else 0.0
    for c in range(model.y_dim):
        bound_u = bound_u + (log_q[:, c].exp() * (terms[c] - log_q[:, c])).sum()
    n_l, n_u = x_labelled.size(0), x_unlabelled.size(0)
    loss = -(bound_l + alpha * log_qy.sum()) / n_l - bound_u / n_u
    return loss, bound_l / n_l, bound_u / n_u


def vaegan_terms(model, guide, x, generator_loss="non_saturating"):
    r"""
    The terms of :class:`~pyro_seq.losses.VAEGANLoss` by hand, with the same networks and the
    noise drawn in the same order (the guide's :math:`z`, then the prior sample :math:`z_p`):
    sums over the batch of the Monte Carlo KL, the feature log-likelihood
    :math:`\log \mathcal{N}(\mathrm{Dis}_l(x) \mid \mathrm{Dis}_l(\tilde x), \sigma^2 I)`, the GAN
    loss :math:`-\log D(x) - \log(1 - D(\tilde x)) - \log(1 - D(x_p))` and the generator loss.
    The discriminator runs on ``[x, x_tilde]`` and on ``[x, x_p]``, as the model does in the
    guided and in the prior trace (batch norm sees the same batches).

    :param x: images ``[batch, C, H, W]`` in [0, 1].
    :returns: dict of scalars ``kl``, ``log_likelihood``, ``gan_loss``, ``generator_loss`` and the
        logits ``real``, ``recon``, ``prior`` (``[batch]`` each): what
        :func:`~pyro_seq.losses.vaegan_backward` takes.
    """
    softplus = torch.nn.functional.softplus
    x = 2.0 * x - 1.0  # [batch, C, H, W] in [-1, 1]
    loc, scale = guide.encoder(x)  # [batch, z_dim] each
    z = _normal_sample(loc, scale)
    kl = (gaussian_log_prob(z, loc, scale) - gaussian_log_prob(z, torch.zeros_like(z), torch.ones_like(z))).sum()
    x_tilde = model.decoder(z)  # [batch, C, H, W]
    features, logits = model.discriminator(torch.cat([x, x_tilde]))  # [2 * batch, F], [2 * batch]
    real, fake = features.chunk(2)
    log_likelihood = gaussian_log_prob(real, fake, torch.full_like(fake, model.scale)).sum()
    logit_real, logit_recon = logits.chunk(2)
    z_p = _standard_normal(z.shape, dtype=z.dtype, device=z.device)  # [batch, z_dim]
    _, logits_p = model.discriminator(torch.cat([x, model.decoder(z_p)]))
    logit_prior = logits_p.chunk(2)[1]
    gan_loss = (softplus(-logit_real) + softplus(logit_recon) + softplus(logit_prior)).sum()
    if generator_loss == "non_saturating":
        gen = (softplus(-logit_recon) + softplus(-logit_prior)).sum()
    else:
        gen = -gan_loss
    return {"kl": kl, "log_likelihood": log_likelihood, "gan_loss": gan_loss, "generator_loss": gen,
            "real": logit_real, "recon": logit_recon, "prior": logit_prior}
