"""The Ladder variational autoencoder (LVAE) of Sønderby et al. (2016): its generative model."""

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.nn import PyroModule

from pyro_seq.nn import MIN_SCALE, GaussianBlock, dense_layers, rows
from pyro_seq.util import (
    GuideModelCache,
    PyroNamed,
    check_call_shape,
    check_int,
    check_real,
    check_dtype_device,
    check_mask_values,
    check_values,
    module_tensor,
    prior_call_shape,
)

#: The paper's MNIST setting: five stochastic layers (``z_1`` nearest the data).
PAPER_Z_DIMS = (64, 32, 16, 8, 4)
#: Widths of the deterministic blocks of each layer in the paper's MNIST setting.
PAPER_HIDDEN_DIMS = (512, 256, 128, 64, 32)


def top_down_blocks(z_dims, hidden_dims, num_layers=2, batch_norm=True, min_scale=MIN_SCALE):
    r"""
    The top-down Gaussian blocks :math:`z_{i+1} \mapsto (\mu^p_i, \sigma^p_i)` for
    :math:`i = 1, \dots, L-1`: block ``i - 1`` reads :math:`z_{i+1}` through
    ``num_layers`` dense layers of width ``hidden_dims[i]``.

    :rtype: torch.nn.ModuleList
    """
    return nn.ModuleList(
        GaussianBlock(z_dims[i], hidden_dims[i], z_dims[i - 1], num_layers, batch_norm, min_scale)
        for i in range(1, len(z_dims))
    )


def check_images(x, mask=None, x_dim=None, name="x", like=None):
    """
    Validate a batch of flat binary images and return it as ``[batch, x_dim]``.

    Accepts ``[batch, x_dim]`` or one-frame sequences ``[batch, 1, x_dim]`` (what
    :func:`~pyro_seq.data.make_batches` gives for image data sets), with an
    optional all-True ``mask``: ``[batch, 1]`` (or ``[batch]`` for 2-D ``x``).
    ``like`` (a model parameter), if given, fixes the dtype and device ``x`` must have.

    :raises TypeError: ``x`` or ``mask`` is not a tensor.
    :raises ValueError: naming the argument, the expected and the actual shape or range.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        if x.size(1) != 1:
            raise ValueError(
                f"{name} must have shape [batch, x_dim] or [batch, 1, x_dim] (images are "
                f"one-frame sequences), got shape {tuple(x.shape)}"
            )
        expected = [tuple(x.shape[:2])]
    elif x.dim() == 2:
        expected = [(x.size(0), 1), (x.size(0),)]
    else:
        raise ValueError(f"{name} must have shape [batch, x_dim] or [batch, 1, x_dim], got shape {tuple(x.shape)}")
    if x.size(0) == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if mask is not None:
        if not torch.is_tensor(mask):
            raise TypeError(
                f"mask must be a torch.Tensor of shape {expected[0]} or None, got {type(mask).__name__}"
            )
        if tuple(mask.shape) not in expected:
            raise ValueError(
                f"mask must have shape {' or '.join(map(str, expected))} (all True: images have "
                f"one frame), got shape {tuple(mask.shape)}"
            )
        mask = check_mask_values(mask).reshape(mask.size(0), -1)  # [batch, 1]
        if not bool(mask.all()):
            rows = torch.nonzero(~mask.all(-1)).flatten().tolist()
            raise ValueError(
                f"mask must be all True for images (one frame each); rows {rows[:10]} are False"
            )
    if x.dim() == 3:
        x = x[:, 0]
    if x_dim is not None and x.size(-1) != x_dim:
        raise ValueError(f"{name} has {x.size(-1)} pixels per image but the model expects x_dim={x_dim}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {x.dtype}")
    check_dtype_device(x, like, name)
    hint = " (binarize grey-level images first, e.g. pyro_seq.data.binarize_batches)"
    check_values(x, binary=True, name=name, hint=hint)
    return x


def check_batch_norm_batch(module, x, name="x", batch_norm=None):
    """
    Raise :class:`ValueError` if ``module`` (with a ``batch_norm`` flag) normalises with batch
    statistics (training mode) and ``x`` holds fewer than two rows, which batch
    normalisation cannot use. Checked where the blocks run (``forward``), not in ``check``:
    the particle bounds repeat a batch ``K`` times before it reaches the model.

    :param bool batch_norm: whether the blocks normalise (default: ``module.batch_norm``).
    """
    batch_norm = getattr(module, "batch_norm", False) if batch_norm is None else batch_norm
    if batch_norm and module.training and x.size(0) < 2:
        raise ValueError(
            f"{name} holds {x.size(0)} image but batch normalisation in training mode needs at "
            "least 2 per batch: score single images in evaluation mode (model.eval(), "
            "guide.eval()) or build the model with batch_norm=False"
        )


def _dims(name, dims):
    """A tuple of positive layer sizes (an int or a sequence of ints)."""
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
        raise ValueError(f"{name} must be a sequence of integers >= 1 (one per layer), got {dims!r}")
    return tuple(check_int(f"{name}[{i}]", d, 1) for i, d in enumerate(dims))


class LadderVAE(PyroNamed, PyroModule):
    r"""
    The generative model of the Ladder VAE (Sønderby et al. 2016): a hierarchy of
    :math:`L` diagonal-Gaussian layers with a deterministic top-down path, and a
    Bernoulli likelihood for binary images:

    .. math::

        p_\theta(x, z_{1:L}) = p(z_L) \prod_{i=1}^{L-1} p_\theta(z_i \mid z_{i+1})\;
            p_\theta(x \mid z_1), \qquad p(z_L) = \mathcal{N}(0, I), \\
        p_\theta(z_i \mid z_{i+1}) = \mathcal{N}\big(\mu^p_i(z_{i+1}),
            \operatorname{diag} \sigma^p_i(z_{i+1})^2\big), \qquad
        p_\theta(x \mid z_1) = \operatorname{Bernoulli}\big(\operatorname{sigmoid} f(z_1)\big),

    where :math:`\mu^p_i, \sigma^p_i` and :math:`f` are deterministic blocks
    (``num_layers`` dense layers of width ``hidden_dims[i]``, leaky ReLU, optional
    batch normalisation). Sites ``"z_L", ..., "z_1"`` (sampled top-down) and ``"x"``
    in a plate ``"data"``. Pair it with :class:`~pyro_seq.guides.LadderGuide` (the
    LVAE) or :class:`~pyro_seq.guides.BottomUpGuide` (the paper's "VAE" rows) and a
    warm-up ELBO from :mod:`pyro_seq.losses`::

        model = LadderVAE()                       # the paper's 5-layer MNIST setting
        guide = LadderGuide(model)
        svi = SVI(model, guide, Adam({"lr": 2e-3}), WarmupTrace_ELBO(LinearSchedule(0.0, 1.0, 10000)))
        svi.step(x)                               # x [batch, 784] or [batch, 1, 784], 0/1

    Batch normalisation: in training mode each block normalises with its batch
    statistics and updates its running statistics; the Ladder guide computes the
    top-down parameters once per ELBO evaluation and hands them to this model
    (:class:`~pyro_seq.util.GuideModelCache`), so one SVI step updates each
    block's running statistics once. In evaluation mode (``model.eval()``, as
    :func:`pyro_seq.bounds.evaluate` and the trainer's validation set it) the
    running statistics are used and never updated, so importance sampling with
    thousands of samples per image neither depends on the batch nor pollutes them.

    Pyro habits: the blocks fold any dims left of the ``"data"`` plate into their batch,
    so vectorised particles and ``Predictive(parallel=True)`` work (in training mode a
    particle dim then shares the batch-norm statistics of its batch).
    ``model(None, batch_size=B)`` samples new images at the same sites (``"x"``
    unobserved: ``Predictive(model, num_samples=S)(None, batch_size=B)["x"]`` are
    prior-predictive draws ``[S, B, x_dim]``), and ``predict=True`` samples ``"x"``
    given the guide's latents instead of scoring the data.

    :param int x_dim: pixels per image (784 for 28×28).
    :param z_dims: latent sizes :math:`(|z_1|, \dots, |z_L|)`, bottom to top.
    :param hidden_dims: widths of the deterministic blocks of each layer, bottom to top.
    :param int num_layers: dense layers per deterministic block.
    :param bool batch_norm: batch normalisation in the deterministic blocks.
    :param float min_scale: standard-deviation floor of every Gaussian.
    :param image_shape: ``(height, width)`` for pictures (default: square if possible).
    :param str name: Pyro name (default ``"ladder"``, or with a suffix ``_1``, … when
        another model holds it; see :class:`~pyro_seq.util.PyroNamed`).

    **References**

    [1] Casper Kaae Sønderby, Tapani Raiko, Lars Maaløe, Søren Kaae Sønderby, Ole Winther,
        "Ladder Variational Autoencoders", NIPS 2016, arXiv:1602.02282.
    """

    default_pyro_name = "ladder"

    def __init__(
        self,
        x_dim=784,
        z_dims=PAPER_Z_DIMS,
        hidden_dims=PAPER_HIDDEN_DIMS,
        num_layers=2,
        batch_norm=True,
        min_scale=MIN_SCALE,
        image_shape=None,
        name=None,
    ):
        z_dims, hidden_dims = _dims("z_dims", z_dims), _dims("hidden_dims", hidden_dims)
        x_dim, num_layers = check_int("x_dim", x_dim, 1), check_int("num_layers", num_layers, 1)
        min_scale = check_real("min_scale", min_scale, 0.0)
        if not z_dims or len(z_dims) != len(hidden_dims):
            raise ValueError(
                f"z_dims and hidden_dims must be non-empty and of equal length (one per stochastic "
                f"layer), got {len(z_dims)} and {len(hidden_dims)}"
            )
        if min(z_dims + hidden_dims + (x_dim, num_layers)) < 1:
            raise ValueError("x_dim, z_dims, hidden_dims and num_layers must be positive")
        super().__init__(self.default_pyro_name if name is None else name)
        self._init_pyro_name(name)
        if image_shape is None:
            side = int(round(x_dim**0.5))
            image_shape = (side, side) if side * side == x_dim else (1, x_dim)
        self.x_dim, self.z_dims, self.hidden_dims = x_dim, z_dims, hidden_dims
        self.num_layers, self.batch_norm, self.min_scale = num_layers, batch_norm, min_scale
        self.image_shape = tuple(image_shape)
        self.top_down = top_down_blocks(z_dims, hidden_dims, num_layers, batch_norm, min_scale)
        self.decoder = nn.Sequential(
            dense_layers(z_dims[0], [hidden_dims[0]] * num_layers, batch_norm), nn.Linear(hidden_dims[0], x_dim)
        )
        self._shared = GuideModelCache()

    @property
    def num_stochastic_layers(self):
        return len(self.z_dims)

    @property
    def config(self):
        """JSON-able constructor arguments."""
        return dict(
            x_dim=self.x_dim,
            z_dims=list(self.z_dims),
            hidden_dims=list(self.hidden_dims),
            num_layers=self.num_layers,
            batch_norm=self.batch_norm,
            min_scale=self.min_scale,
            image_shape=list(self.image_shape),
        )

    def check(self, x, mask=None):
        """Validate inputs; returns ``x [batch, x_dim]`` (see :func:`check_images`)."""
        return check_images(x, mask, self.x_dim, like=module_tensor(self))

    def prior_params(self, i, z_above, blocks=None):
        r"""
        :math:`(\mu^p_i, \sigma^p_i)` of :math:`p(z_i \mid z_{i+1})`, each ``[batch, z_dims[i-1]]``.

        :param int i: layer, ``1 <= i < L``.
        :param torch.Tensor z_above: :math:`z_{i+1}` ``[batch, z_dims[i]]``.
        :param blocks: top-down blocks to use (default: this model's).
        """
        _, loc, scale = (self.top_down if blocks is None else blocks)[i - 1](z_above)
        return loc, scale

    def share_top_down(self, x, params):
        """
        Keep the guide's top-down parameters ``{i: (z_{i+1}, loc, scale)}`` for the next model
        call on the same ``x`` tensor (see :class:`~pyro_seq.util.GuideModelCache`).
        """
        self._shared.put(x, params, [self.top_down])

    def forward(self, x=None, mask=None, *, batch_size=None, predict=False):
        """
        :param torch.Tensor x: ``[batch, x_dim]`` or ``[batch, 1, x_dim]`` binary images, or
            ``None`` to sample ``batch_size`` new images.
        :param torch.Tensor mask: ignored except for validation (images have one frame).
        :param int batch_size: the number of images without ``x``; else checked against it.
        :param bool predict: sample ``"x"`` instead of scoring ``x``.
        :returns: the Bernoulli means of :math:`p(x \\mid z_1)`, ``[..., batch, x_dim]``
            (reconstructions when replayed on guide samples).
        """
        self.sync_pyro_params()
        shared = self._shared.take(x, [self.top_down]) or {}
        top_down = self.top_down  # registers the parameters with Pyro
        if x is None:
            if mask is not None:
                raise ValueError("images have one frame each: sampling new ones (x=None) takes no mask")
            batch = prior_call_shape(None, 1, batch_size)[0]
            like = module_tensor(self)
            check_batch_norm_batch(self, like.new_empty(batch, 0), "batch_size")
            obs = None
        else:
            x = self.check(x, mask)  # [batch, x_dim]
            check_batch_norm_batch(self, x)
            batch, like = x.size(0), x
            check_call_shape(batch, 1, 1, batch_size)  # one graph per batch size under JitTrace_ELBO
            obs = None if predict else x
        L = self.num_stochastic_layers
        with pyro.plate("data", batch, dim=-1):
            z = pyro.sample(f"z_{L}", dist.Normal(like.new_zeros(()), 1.0).expand([batch, self.z_dims[-1]]).to_event(1))
            for i in range(L - 1, 0, -1):
                cached = shared.get(i)
                if cached is not None and cached[0] is z:
                    loc, scale = cached[1], cached[2]
                else:
                    loc, scale = self.prior_params(i, z, top_down)  # [batch, z_dims[i-1]]
                z = pyro.sample(f"z_{i}", dist.Normal(loc, scale).to_event(1))
            logits = rows(self.decoder, z)  # [..., batch, x_dim]
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=obs)
        return torch.sigmoid(logits)

    @torch.no_grad()
    def generate(self, num_sequences, num_steps=1, mean_frames=True):
        """
        Images from the prior (evaluation mode: batch norm uses running statistics).

        :param int num_sequences: number of images.
        :param int num_steps: must be 1 (images are one-frame sequences; kept for the
            common ``generate`` signature).
        :param bool mean_frames: return the Bernoulli means (default) instead of binary samples.
        :returns: ``[num_sequences, 1, x_dim]``
        """
        if num_steps != 1:
            raise ValueError(f"LadderVAE generates images (one frame each); num_steps must be 1, got {num_steps}")
        self.sync_pyro_params()  # values loaded into Pyro's param store reach the module
        was_training = self.training
        self.eval()
        try:
            param = next(self.parameters())
            z = torch.randn(num_sequences, self.z_dims[-1], device=param.device, dtype=param.dtype)  # [n, z_L]
            for i in range(self.num_stochastic_layers - 1, 0, -1):
                loc, scale = self.prior_params(i, z)
                z = loc + scale * torch.randn_like(loc)  # [n, z_dims[i-1]]
            probs = torch.sigmoid(self.decoder(z))  # [n, x_dim]
            x = probs if mean_frames else torch.bernoulli(probs)
        finally:
            self.train(was_training)
        return x.unsqueeze(1)  # [n, 1, x_dim]
