"""
Objectives: warm-up (KL annealing) ELBOs and their schedules.

The warm-up ELBOs are ordinary Pyro ELBOs (:class:`~pyro.infer.Trace_ELBO`,
:class:`~pyro.infer.TraceMeanField_ELBO`) whose latent terms are multiplied by
:math:`\\beta`:

.. math::

    \\mathcal{L}_\\beta = \\mathbb{E}_q\\big[\\log p(x \\mid z)\\big]
        + \\beta\\, \\mathbb{E}_q\\big[\\log p(z) - \\log q(z \\mid x)\\big],

so :math:`\\beta = 1` is the base ELBO exactly and :math:`\\beta = 0` keeps
only the reconstruction term. :math:`\\beta` follows a schedule of the SVI
step; the trainer sets ``loss.step`` before each step.

**References**

[1] Casper Kaae Sønderby, Tapani Raiko, Lars Maaløe, Søren Kaae Sønderby,
    Ole Winther, "Ladder Variational Autoencoders", NIPS 2016, arXiv:1602.02282.
[2] Samuel R. Bowman et al., "Generating Sentences from a Continuous Space",
    CoNLL 2016, arXiv:1511.06349.
"""

import math
import warnings

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.poutine.messenger import Messenger

# ----------------------------------------------------------------- schedules


def linear_schedule(step, start=0.0, end=1.0, steps=1000):
    """Linear from ``start`` at step 0 to ``end`` at ``steps``, then constant."""
    if steps <= 0:
        return float(end)
    frac = min(max(step, 0) / steps, 1.0)
    return float(start + (end - start) * frac)


def cosine_schedule(step, start=0.0, end=1.0, steps=1000):
    """Half-cosine from ``start`` to ``end`` over ``steps``, then constant."""
    if steps <= 0:
        return float(end)
    frac = min(max(step, 0) / steps, 1.0)
    return float(end + (start - end) * 0.5 * (1 + math.cos(math.pi * frac)))


class Schedule:
    """
    A schedule ``step -> value``; callable, JSON-describable (``config``).

    :param str kind: ``"linear"``, ``"cosine"`` or ``"constant"``.
    :param float start: value at step 0.
    :param float end: value after ``steps``.
    :param int steps: length of the ramp in SVI steps.
    """

    KINDS = {"linear": linear_schedule, "cosine": cosine_schedule}

    def __init__(self, kind="linear", start=0.0, end=1.0, steps=1000):
        if kind != "constant" and kind not in self.KINDS:
            raise ValueError(
                f"schedule kind must be one of {sorted(self.KINDS) + ['constant']}, got {kind!r}"
            )
        if steps < 0:
            raise ValueError(f"schedule steps must be >= 0, got {steps}")
        self.kind, self.start, self.end, self.steps = kind, start, end, steps

    @property
    def config(self):
        return dict(kind=self.kind, start=self.start, end=self.end, steps=self.steps)

    def __call__(self, step):
        if self.kind == "constant":
            return float(self.end)
        return self.KINDS[self.kind](step, self.start, self.end, self.steps)

    def __repr__(self):
        return f"Schedule({self.kind!r}, start={self.start}, end={self.end}, steps={self.steps})"


def LinearSchedule(start=0.0, end=1.0, steps=1000):
    """A linear warm-up :class:`Schedule`."""
    return Schedule("linear", start, end, steps)


def ConstantSchedule(value=1.0):
    """A constant :class:`Schedule`."""
    return Schedule("constant", value, value, 0)


# ------------------------------------------------------------------ warm-up


class LatentScaleMessenger(Messenger):
    """Multiply the log density of every *latent* (non-observed) sample site by ``beta``."""

    def __init__(self, beta, exclude=()):
        super().__init__()
        self.beta = beta
        self.exclude = frozenset(exclude)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and msg["name"] not in self.exclude:
            msg["scale"] = self.beta * msg["scale"]


def scale_latents(fn, beta, exclude=()):
    """``fn`` with its latent sites' log densities scaled by ``beta``, except the sites named in ``exclude``."""
    return LatentScaleMessenger(beta, exclude)(fn)


def _site_sum(site):
    """Unscaled (but masked) log density of a site, summed."""
    log_p = site["unscaled_log_prob"]
    if site["mask"] is not None:
        log_p = log_p * site["mask"]
    return log_p.sum()


def _elbo_sums(model_trace, guide_trace):
    """
    ``(log_likelihood, kl)`` of one particle with their graphs: the observed sites' log density
    and the Monte Carlo :math:`\\log q - \\log p` over the latent sites (traces with log probs).
    """
    log_likelihood, kl = 0.0, 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            if site["is_observed"]:
                log_likelihood = log_likelihood + _site_sum(site)
            else:
                kl = kl - _site_sum(site)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            kl = kl + _site_sum(site)
    return torch.as_tensor(log_likelihood), torch.as_tensor(kl)


def elbo_terms(model_trace, guide_trace):
    """
    Log-likelihood and latent terms of one particle, unscaled by any warm-up.

    :returns: dict of detached scalars ``log_likelihood`` (observed sites) and
        ``kl`` (Monte Carlo :math:`\\log q - \\log p` over latent sites).
    """
    log_likelihood, kl = _elbo_sums(model_trace, guide_trace)
    return {"log_likelihood": log_likelihood.detach(), "kl": kl.detach()}


class WarmupELBOMixin:
    """
    Adds a :math:`\\beta` schedule on the latent terms to a trace-based Pyro
    ELBO. See :class:`WarmupTrace_ELBO`.

    :param schedule: a callable ``step -> beta`` (e.g. :class:`Schedule`) or a number.
    """

    def __init__(self, schedule=None, **kwargs):
        super().__init__(**kwargs)
        self.schedule = LinearSchedule() if schedule is None else schedule
        self.step = 0
        self.last_terms = {}

    @property
    def beta(self):
        """:math:`\\beta` at the current ``step``."""
        if callable(self.schedule):
            return float(self.schedule(self.step))
        return float(self.schedule)

    def _get_trace(self, model, guide, args, kwargs):
        beta = self.beta
        if beta != 1.0:
            model, guide = scale_latents(model, beta), scale_latents(guide, beta)
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        self.last_terms = dict(elbo_terms(model_trace, guide_trace), beta=beta)
        return model_trace, guide_trace


class WarmupTrace_ELBO(WarmupELBOMixin, Trace_ELBO):
    """
    :class:`~pyro.infer.Trace_ELBO` with warm-up: the latent terms
    :math:`\\log p(z) - \\log q(z)` are multiplied by ``beta = schedule(step)``.

    After each evaluation ``last_terms`` holds the (unscaled) log-likelihood
    and KL estimates and ``beta``, for logging.

    :param schedule: callable ``step -> beta`` or a number; default linear
        from 0 to 1 over 1000 steps.
    :param kwargs: passed to :class:`~pyro.infer.Trace_ELBO`.
    """


class WarmupTraceMeanField_ELBO(WarmupELBOMixin, TraceMeanField_ELBO):
    """
    :class:`~pyro.infer.TraceMeanField_ELBO` with warm-up: the analytic KL
    terms are multiplied by ``beta = schedule(step)``. For the sequence-level
    chain site of the fast models the KL is the semi-analytic one, summed along
    the sampled path (see :mod:`pyro_seq.distributions`).
    """


# ----------------------------------------------------------------- Z-Forcing

#: Guide sites holding the Z-Forcing auxiliary terms (see :class:`~pyro_seq.guides.ZForcingGuide`).
AUX_SITE, BACKWARD_SITE = "aux_log_prob", "backward_log_prob"


def _recorded_sum(guide_trace, name):
    site = guide_trace.nodes.get(name)
    return None if site is None else site["value"].sum()


class AuxiliaryCostMixin(WarmupELBOMixin):
    r"""
    Adds the Z-Forcing auxiliary cost to a warm-up ELBO (Goyal et al. 2017):
    the training objective (minimised) becomes

    .. math::

        -\mathcal{L}_\beta
        - w \sum_t \log p_\xi\big(\operatorname{sg}(b_t) \mid z_t\big)
        - w_b \sum_t \log p(x_{t-1} \mid b_t),

    with :math:`w` following its own schedule (independent of the KL warm-up
    :math:`\beta`). The terms are read from the guide trace (sites
    ``"aux_log_prob"`` and ``"backward_log_prob"``, recorded by guides built
    with ``auxiliary`` / ``backward_prediction``). Only the *surrogate* loss
    (what is differentiated) includes them: the returned loss is the warm-up
    ELBO, so a reported bound never contains the auxiliary term.
    ``last_terms`` gains ``aux_log_prob``, ``backward_log_prob`` and ``aux_weight``.

    :param aux_schedule: callable ``step -> w`` or a number (default 1).
    :param float backward_weight: :math:`w_b` (default 1).
    """

    def __init__(self, schedule=None, aux_schedule=1.0, backward_weight=1.0, **kwargs):
        super().__init__(schedule=schedule, **kwargs)
        self.aux_schedule = aux_schedule
        self.backward_weight = float(backward_weight)

    @property
    def aux_weight(self):
        """:math:`w` at the current ``step``."""
        if callable(self.aux_schedule):
            return float(self.aux_schedule(self.step))
        return float(self.aux_schedule)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        weight = self.aux_weight
        aux = _recorded_sum(guide_trace, AUX_SITE)
        backward = _recorded_sum(guide_trace, BACKWARD_SITE)
        if aux is not None:
            if weight != 0.0:
                surrogate = surrogate - weight * aux
            self.last_terms["aux_log_prob"] = aux.detach()
        elif weight != 0.0:
            raise ValueError(
                f"aux weight is {weight} but the guide records no {AUX_SITE!r} site; "
                "build the guide with auxiliary='z' (or 'hz')"
            )
        if backward is not None:
            if self.backward_weight != 0.0:
                surrogate = surrogate - self.backward_weight * backward
            self.last_terms["backward_log_prob"] = backward.detach()
        self.last_terms["aux_weight"] = weight
        return loss, surrogate


class ZForcingTrace_ELBO(AuxiliaryCostMixin, Trace_ELBO):
    """
    :class:`WarmupTrace_ELBO` plus the Z-Forcing auxiliary cost
    (see :class:`AuxiliaryCostMixin`).

    :param schedule: KL warm-up, callable ``step -> beta`` or a number.
    :param aux_schedule: auxiliary weight, callable ``step -> w`` or a number.
    :param float backward_weight: weight of the backward-prediction loss.

    **References**

    [1] Anirudh Goyal, Alessandro Sordoni, Marc-Alexandre Côté, Nan Rosemary Ke,
        Yoshua Bengio, "Z-Forcing: Training Stochastic Recurrent Networks",
        NIPS 2017, arXiv:1711.05411.
    """


class ZForcingTraceMeanField_ELBO(AuxiliaryCostMixin, TraceMeanField_ELBO):
    """
    :class:`WarmupTraceMeanField_ELBO` (analytic / semi-analytic KL) plus the
    Z-Forcing auxiliary cost (see :class:`AuxiliaryCostMixin`).
    """


# ------------------------------------------------------------ semi-supervised

#: Guide site of :math:`\log q(y \mid a, x)` for labelled images (see :class:`~pyro_seq.guides.AuxiliaryGuide`).
CLASSIFIER_SITE = "log_qy"


def default_alpha(num_data, num_labelled, factor=0.1):
    """The released ADGM code's classification weight :math:`\\alpha = 0.1 N / N_l`."""
    if num_data is None or num_labelled is None:
        raise ValueError("alpha=None needs num_data and num_labelled (alpha = 0.1 * num_data / num_labelled)")
    if num_labelled < 1 or num_data < num_labelled:
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


class SemiSupervisedELBO(WarmupELBOMixin, ELBO):
    r"""
    The semi-supervised objective of Kingma et al. (2014) and Maaløe et al. (2016) for a
    model called as ``model(x, y)`` and a guide that enumerates ``y`` when it is ``None``
    (:class:`~pyro_seq.models.SemiSupervisedVAE`, :class:`~pyro_seq.guides.AuxiliaryGuide`).
    One step takes a labelled and an unlabelled mini-batch; the loss (minimised) is

    .. math::

        -rac{1}{n_l} \sum_{i \in 	ext{labelled}} \Big[\mathcal{L}(x_i, y_i)
            + lpha \log q(y_i \mid a_i, x_i)\Big]
        - rac{1}{n_u} \sum_{j \in 	ext{unlabelled}} \mathcal{U}(x_j),
        \qquad \mathcal{U}(x) = \mathbb{E}_{q(a \mid x)}\Big[\sum_y q(y \mid a, x)
            ig(\mathcal{L}(x, y \mid a) - \log q(y \mid a, x)ig)\Big],

    a mean over each mini-batch, as in the released ADGM code. The sum over :math:`y` in
    :math:`\mathcal{U}` is done by Pyro's enumeration (:class:`~pyro.infer.TraceEnum_ELBO`,
    ``max_plate_nesting=1``), not by a loop over classes; :math:`a` and :math:`z` are
    reparameterised. :math:`lpha = 0.1\, N / N_l` by default (``N`` training images,
    ``N_l`` labelled). ``schedule`` gives a warm-up :math:`eta` on the latent terms of
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
        super().__init__(schedule=schedule, num_particles=num_particles, max_plate_nesting=1, vectorize_particles=vectorize_particles)
        self.alpha = float(default_alpha(num_data, num_labelled) if alpha is None else alpha)
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
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


# ----------------------------------------------------------------- VAE/GAN

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
    :class:`~pyro_seq.trainer.Trainer` like any ELBO: ``loss_and_grads(model, guide, x)`` returns
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
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"generator_loss must be one of {GENERATOR_LOSSES}, got {generator_loss!r}")
        if margin is not None and not margin >= 0:
            raise ValueError(f"margin must be >= 0 or None, got {margin}")
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
        log_likelihood, kl = _elbo_sums(model_trace, guide_trace)
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
