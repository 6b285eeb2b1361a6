"""
The VAE/GAN objective (Larsen et al. 2015, arXiv:1512.09300): three losses routed to the encoder,
decoder and discriminator, the equilibrium rule and one optimiser per network.
"""

import torch
from pyro.infer import ELBO

from pyro_seq.losses.warmup import elbo_sums
from pyro_seq.util import check_real


#: The three networks of VAE/GAN and the attribute that holds each (on the guide or the model).
VAEGAN_NETWORKS = (("encoder", "guide", "encoder"), ("decoder", "model", "decoder"), ("discriminator", "model", "discriminator"))
#: Generator objectives: the non-saturating :math:`-\log D(\tilde x)` or the paper's minimax :math:`\log(1 - D(\tilde x))`.
GENERATOR_LOSSES = ("non_saturating", "minimax")


def gan_balance(real_error, fake_error, equilibrium=0.68, margin=0.35):
    """
    Which of the two GAN players to update this step (the equilibrium rule of VAE/GAN
    implementations): the discriminator sits out while its error on real or on generated images
    is below ``equilibrium - margin`` (it is far ahead), the decoder sits out while either error
    is above ``equilibrium + margin`` (it is far ahead); if both would sit out, both train.

    :param float real_error: mean :math:`-\\log D(x)` over the batch's real images.
    :param float fake_error: mean :math:`-\\log(1 - D(\\tilde x))` over its generated images.
    :param float equilibrium: the balanced error (near :math:`\\log 2`).
    :param float margin: how far from it an error may go; ``None`` disables the rule.
    :returns: ``(train_discriminator, train_decoder)``.
    """
    if margin is None:
        return True, True
    train_dis = not (real_error < equilibrium - margin or fake_error < equilibrium - margin)
    train_dec = not (real_error > equilibrium + margin or fake_error > equilibrium + margin)
    if not (train_dis or train_dec):
        return True, True
    return train_dis, train_dec


def vaegan_parameters(model, guide):
    """
    The trainable parameters of each VAE/GAN network, ``{"encoder": [...], "decoder": [...],
    "discriminator": [...]}`` (the guide's ``encoder``, the model's ``decoder`` and ``discriminator``).

    :raises ValueError: the model has no discriminator (a plain VAE: train it with ``Trace_ELBO``).
    """
    owners = {"model": model, "guide": guide}
    groups = {}
    for name, owner, attr in VAEGAN_NETWORKS:
        module = owners[owner].__dict__["_modules"].get(attr)  # plain lookup: no Pyro registration
        if module is None:
            raise ValueError(
                f"VAEGANLoss needs a {owner} with a {attr!r} network; a model without a discriminator "
                "(likelihood='pixels', the plain VAE) trains with pyro.infer.Trace_ELBO"
            )
        groups[name] = [p for p in module.parameters() if p.requires_grad]
    return groups


def vaegan_backward(terms, groups, gamma, beta=1.0, equilibrium=0.68, margin=0.35):
    r"""
    The routed backward pass of VAE/GAN (pure PyTorch, shared by :class:`VAEGANLoss` and the
    hand-written floor of the benchmarks): the encoder gets
    :math:`\nabla(\beta \mathcal{L}_{\text{prior}} + \mathcal{L}_{\text{llike}})`, the decoder
    :math:`\nabla(\gamma \mathcal{L}_{\text{llike}} + \mathcal{L}_{\text{gen}})` and the
    discriminator :math:`\nabla \mathcal{L}_{\text{GAN}}`, each accumulated only into its own
    parameters' ``grad``; :func:`gan_balance` decides whether the decoder and the discriminator
    are updated this step (a skipped network's ``grad`` stays as it was, ``None`` after a
    zeroing that sets it to ``None``).

    :param dict terms: ``kl``, ``log_likelihood``, ``gan_loss``, ``generator_loss`` (scalars
        with graphs) and the logits ``real``, ``recon``, ``prior`` (``[batch]`` each).
    :param dict groups: parameters per network, as :func:`vaegan_parameters` returns them.
    :returns: ``(train_discriminator, train_decoder)``.
    """
    softplus = torch.nn.functional.softplus
    with torch.no_grad():
        real_error = float(softplus(-terms["real"]).mean())
        fake_error = float(torch.cat([softplus(terms["recon"]), softplus(terms["prior"])]).mean())
    train_dis, train_dec = gan_balance(real_error, fake_error, equilibrium, margin)
    objectives = [(beta * terms["kl"] - terms["log_likelihood"], groups["encoder"])]
    if train_dec:
        objectives.append((-gamma * terms["log_likelihood"] + terms["generator_loss"], groups["decoder"]))
    if train_dis:
        objectives.append((terms["gan_loss"], groups["discriminator"]))
    for i, (objective, params) in enumerate(objectives):
        if objective.requires_grad and params:
            torch.autograd.backward(objective, inputs=params, retain_graph=i < len(objectives) - 1)
    return train_dis, train_dec


def vaegan_optim(lr=3e-4, betas=(0.5, 0.999), clip_norm=10.0, lrd=1.0, network_lr=None):
    """
    The three optimisers of VAE/GAN as one :class:`~pyro.optim.ClippedAdam` with per-parameter
    arguments: each network (``encoder``, ``decoder``, ``discriminator``) gets its own learning
    rate, and every parameter its own Adam state, so a step that skips a network (its gradients
    left ``None`` by :class:`VAEGANLoss`) leaves that network and its moments untouched.

    :param float lr: learning rate of every network not named in ``network_lr``.
    :param dict network_lr: e.g. ``{"discriminator": 1e-4}``.
    """
    import pyro.optim

    network_lr = dict(network_lr or {})
    unknown = set(network_lr) - {name for name, _, _ in VAEGAN_NETWORKS}
    if unknown:
        raise ValueError(f"network_lr names unknown networks {sorted(unknown)}; use encoder, decoder, discriminator")

    def optim_args(param_name):
        network = param_name.split(".", 1)[0]
        return {"lr": float(network_lr.get(network, lr)), "betas": tuple(betas), "clip_norm": float(clip_norm), "lrd": float(lrd)}

    return pyro.optim.ClippedAdam(optim_args)


class VAEGANLoss(ELBO):
    r"""
    The VAE/GAN objective of Larsen et al. (2015) with the paper's routing of each term to the
    networks it trains. With :math:`\tilde x \sim \mathrm{Dec}(z),\ z \sim q(z \mid x)` and
    :math:`x_p = \mathrm{Dec}(z_p),\ z_p \sim p(z)`:

    .. math::

        \mathcal{L}_{\text{prior}} &= \mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)
            \quad\text{(one-sample Monte Carlo: } \log q - \log p\text{)}, \\
        \mathcal{L}_{\text{llike}}^{\mathrm{Dis}_l} &= -\log \mathcal{N}\big(\mathrm{Dis}_l(x)
            \mid \mathrm{Dis}_l(\tilde x), \sigma^2 I\big), \\
        \mathcal{L}_{\text{GAN}} &= -\log D(x) - \log\big(1 - D(\tilde x)\big) - \log\big(1 - D(x_p)\big),

    and the updates

    .. math::

        \theta_{\text{Enc}} &\leftarrow -\nabla\big(\mathcal{L}_{\text{prior}} + \mathcal{L}_{\text{llike}}^{\mathrm{Dis}_l}\big), \qquad
        \theta_{\text{Dec}} \leftarrow -\nabla\big(\gamma\, \mathcal{L}_{\text{llike}}^{\mathrm{Dis}_l} + \mathcal{L}_{\text{gen}}\big), \qquad
        \theta_{\text{Dis}} \leftarrow -\nabla \mathcal{L}_{\text{GAN}},

    where the generator term :math:`\mathcal{L}_{\text{gen}}` is
    :math:`-\log D(\tilde x) - \log D(x_p)` (``"non_saturating"``, default) or
    :math:`-\mathcal{L}_{\text{GAN}}` (``"minimax"``, the paper's form). The discriminator never
    learns from the feature likelihood (it would shrink its own features to make it trivially
    large). Every term is a sum over the batch's images, as in Pyro's ELBOs. With
    :func:`gan_balance` (``margin`` not ``None``) a step skips the discriminator or the decoder
    update while the other player is far ahead.

    Each term's gradient goes only to its networks (``torch.autograd.backward(..., inputs=...)``);
    the other parameters keep ``grad`` ``None``, so the trainer's optimiser
    (:func:`vaegan_optim`: one learning rate per network) leaves them untouched. Runs through
    :class:`~pyro_seq.training.trainer.Trainer` like any ELBO: ``loss_and_grads(model, guide, x)`` returns
    :math:`\mathcal{L}_{\text{prior}} + \mathcal{L}_{\text{llike}}` (the feature-space negative
    ELBO), and ``last_terms`` holds ``log_likelihood``, ``kl``, ``gan_loss``, ``generator_loss``,
    ``d_real``, ``d_recon``, ``d_prior`` (sums over images of :math:`D(\cdot)`: the trainer logs
    them per image) and ``dis_update`` / ``dec_update`` (1 if the network was updated).

    :param float gamma: :math:`\gamma`, the weight of the feature reconstruction against the GAN
        term in the decoder's objective.
    :param float equilibrium: see :func:`gan_balance`.
    :param float margin: see :func:`gan_balance`; ``None``: always update both players.
    :param str generator_loss: ``"non_saturating"`` or ``"minimax"``.
    :param float beta: weight of :math:`\mathcal{L}_{\text{prior}}` in the encoder's objective.

    **References**

    [1] Anders Boesen Lindbo Larsen, Søren Kaae Sønderby, Hugo Larochelle, Ole Winther,
        "Autoencoding beyond pixels using a learned similarity metric", ICML 2016,
        arXiv:1512.09300.

    [2] Ian Goodfellow et al., "Generative Adversarial Networks", NIPS 2014, arXiv:1406.2661.
    """

    def __init__(self, gamma=1e-2, equilibrium=0.68, margin=0.35, generator_loss="non_saturating", beta=1.0):
        gamma = check_real("gamma", gamma, 0.0)
        equilibrium = check_real("equilibrium", equilibrium, 0.0)
        beta = check_real("beta", beta, 0.0)
        if generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"generator_loss must be one of {GENERATOR_LOSSES}, got {generator_loss!r}")
        if margin is not None:
            margin = check_real("margin", margin, 0.0)
        super().__init__(num_particles=1, max_plate_nesting=1)
        self.gamma, self.equilibrium, self.margin = float(gamma), float(equilibrium), margin
        self.generator_loss, self.beta = generator_loss, float(beta)
        self.step = 0
        self.last_terms = None

    def terms(self, model, guide, *args, **kwargs):
        """
        The differentiable terms of one step (sums over the batch's images):
        ``kl``, ``log_likelihood`` (feature space), ``gan_loss`` (:math:`\\mathcal{L}_{\\text{GAN}}`),
        ``generator_loss`` and the logits ``real``, ``recon``, ``prior`` (each ``[batch]``).
        """
        import pyro.poutine as poutine

        from pyro_seq.models.vaegan import LOGITS_SITE

        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        prior_trace = poutine.trace(model).get_trace(*args, **kwargs)  # z from the prior
        if LOGITS_SITE not in model_trace.nodes:
            raise ValueError("VAEGANLoss needs a model that records discriminator logits (VAEGAN with likelihood='features')")
        for trace in (guide_trace, model_trace):
            trace.compute_log_prob()
        log_likelihood, kl = elbo_sums(model_trace, guide_trace)
        real, recon = model_trace.nodes[LOGITS_SITE]["value"].unbind(-1)  # [batch] each
        prior = prior_trace.nodes[LOGITS_SITE]["value"][..., 1]  # [batch]
        softplus = torch.nn.functional.softplus
        # -log D = softplus(-logit), -log(1 - D) = softplus(logit)
        gan_loss = (softplus(-real) + softplus(recon) + softplus(prior)).sum()
        if self.generator_loss == "non_saturating":
            generator_loss = (softplus(-recon) + softplus(-prior)).sum()
        else:
            generator_loss = -gan_loss
        return {
            "kl": kl, "log_likelihood": log_likelihood, "gan_loss": gan_loss, "generator_loss": generator_loss,
            "real": real, "recon": recon, "prior": prior,
        }

    def loss_and_grads(self, model, guide, *args, **kwargs):
        t = self.terms(model, guide, *args, **kwargs)
        train_dis, train_dec = vaegan_backward(
            t, vaegan_parameters(model, guide), self.gamma, self.beta, self.equilibrium, self.margin
        )
        self.last_terms = {
            "log_likelihood": t["log_likelihood"].detach(),
            "kl": t["kl"].detach(),
            "beta": self.beta,
            "gan_loss": t["gan_loss"].detach(),
            "generator_loss": t["generator_loss"].detach(),
            "d_real": torch.sigmoid(t["real"]).sum().detach(),
            "d_recon": torch.sigmoid(t["recon"]).sum().detach(),
            "d_prior": torch.sigmoid(t["prior"]).sum().detach(),
            "dis_update": float(train_dis),
            "dec_update": float(train_dec),
        }
        return float((t["kl"] - t["log_likelihood"]).detach())

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("VAEGANLoss draws its own traces (see terms())")

    def loss(self, model, guide, *args, **kwargs):
        """The feature-space negative ELBO :math:`\\mathcal{L}_{\\text{prior}} + \\mathcal{L}_{\\text{llike}}` (no gradients)."""
        with torch.no_grad():
            t = self.terms(model, guide, *args, **kwargs)
        return float(t["kl"] - t["log_likelihood"])
