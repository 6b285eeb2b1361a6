"""
VAE/GAN (Larsen et al. 2015): a VAE whose reconstruction term is a Gaussian likelihood on the
hidden features of a GAN discriminator, and the plain VAE with the same encoder and decoder.
"""

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.nn import PyroModule

from pyro_seq.nn import MIN_SCALE, bounded_loc_scale
from pyro_seq.util import check_dtype_device, check_int, check_real, module_tensor, record

#: Image sizes with a network layout: the paper's 64×64 CelebA networks and a 28×28 variant.
IMAGE_SIZES = (64, 28)
#: Reconstruction likelihoods: on discriminator features (VAE/GAN) or on pixels (plain VAE).
VAEGAN_LIKELIHOODS = ("features", "pixels")
#: Trace site holding the discriminator logits ``[batch, 2]`` (real image, decoded image).
LOGITS_SITE = "dis_logits"

# Per image size: side of the decoder's first feature map, and the decoder's deconvolution strides
# (three stride-2 deconvolutions take 8 -> 64; for 28x28, 7 -> 7 -> 14 -> 28).
_DECODER_LAYOUT = {64: (8, (2, 2, 2)), 28: (7, (1, 2, 2))}


def _width(channels, width):
    return max(1, int(round(channels * width)))


def _conv_block(in_channels, out_channels, stride, batch_norm=True):
    layers = [nn.Conv2d(in_channels, out_channels, 5, stride=stride, padding=2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU())
    return layers


def _conv_side(side, strides):
    for stride in strides:
        side = (side + 4 - 5) // stride + 1  # 5x5 kernel, padding 2
    return side


class ConvEncoder(nn.Module):
    """
    The VAE/GAN encoder: three 5×5 stride-2 convolutions (64, 128, 256 channels × ``width``)
    with batch norm and ReLU, a dense layer of 1024 (× ``width``), and a diagonal Gaussian
    ``(loc, scale)`` over ``z``.

    :param int image_size: 64 or 28.
    :param int channels: image channels.
    :param int z_dim: latent size.
    :param float width: multiplier of every hidden width (1: the paper's networks).
    """

    def __init__(self, image_size=64, channels=1, z_dim=128, width=1.0, min_scale=MIN_SCALE):
        super().__init__()
        c = [_width(n, width) for n in (64, 128, 256)]
        side = _conv_side(image_size, (2, 2, 2))
        self.min_scale = min_scale
        self.convs = nn.Sequential(
            *_conv_block(channels, c[0], 2), *_conv_block(c[0], c[1], 2), *_conv_block(c[1], c[2], 2), nn.Flatten()
        )
        hidden = _width(1024, width)
        self.dense = nn.Sequential(nn.Linear(c[2] * side * side, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 2 * z_dim)

    def forward(self, x):
        """``x [batch, C, H, W]`` in [-1, 1] -> ``(loc, scale)``, each ``[batch, z_dim]``."""
        h = self.dense(self.convs(x))  # [batch, 1024 * width]
        return bounded_loc_scale(self.head(h), self.min_scale)


class ConvDecoder(nn.Module):
    """
    The VAE/GAN decoder (generator): a dense layer to an 8×8×256 map (7×7 for 28×28 images),
    5×5 deconvolutions of 256, 128 and 32 channels (× ``width``) with batch norm and ReLU that
    double the side to the image size, and a 3×3 convolution to the image channels with tanh.
    """

    def __init__(self, image_size=64, channels=1, z_dim=128, width=1.0):
        super().__init__()
        side, strides = _DECODER_LAYOUT[image_size]
        c = [_width(n, width) for n in (256, 128, 32)]
        self.side, self.c0 = side, c[0]
        self.dense = nn.Sequential(nn.Linear(z_dim, c[0] * side * side, bias=False), nn.BatchNorm1d(c[0] * side * side), nn.ReLU())
        layers, previous = [], c[0]
        for out_channels, stride in zip(c, strides):
            layers += [
                nn.ConvTranspose2d(previous, out_channels, 5, stride=stride, padding=2, output_padding=stride - 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            ]
            previous = out_channels
        layers += [nn.Conv2d(previous, channels, 3, padding=1), nn.Tanh()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z):
        """``z [batch, z_dim]`` -> images ``[batch, C, H, W]`` in [-1, 1]."""
        h = self.dense(z).view(z.size(0), self.c0, self.side, self.side)  # [batch, 256w, side, side]
        return self.deconvs(h)


class ConvDiscriminator(nn.Module):
    r"""
    The VAE/GAN discriminator: a 5×5 convolution of 32 channels and ReLU, then 5×5 stride-2
    convolutions of 128, 256 and 256 channels (× ``width``) with batch norm and ReLU, a dense
    layer of 512 and one logit. The output of the fourth convolution is
    :math:`\mathrm{Dis}_l(x)`, the feature space of the reconstruction likelihood.
    """

    def __init__(self, image_size=64, channels=1, width=1.0):
        super().__init__()
        c = [_width(n, width) for n in (32, 128, 256, 256)]
        self.features = nn.Sequential(
            *_conv_block(channels, c[0], 1, batch_norm=False),
            *_conv_block(c[0], c[1], 2),
            *_conv_block(c[1], c[2], 2),
            *_conv_block(c[2], c[3], 2),
            nn.Flatten(),
        )
        side = _conv_side(image_size, (1, 2, 2, 2))
        self.feature_dim = c[3] * side * side
        hidden = _width(512, width)
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, x):
        """``x [batch, C, H, W]`` -> ``(Dis_l(x) [batch, feature_dim], logit [batch])``."""
        features = self.features(x)  # [batch, feature_dim]
        return features, self.head(features).squeeze(-1)


def check_image_batch(x, channels, image_size, name="x", like=None):
    """
    Validate a batch of images ``[batch, C, H, W]`` (or ``[batch, H, W]`` for one channel) with
    values in [0, 1]; returns it as ``[batch, C, H, W]``.

    :raises TypeError: ``x`` is not a tensor.
    :raises ValueError: naming the expected and actual shape, dtype, or the bad values.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3 and channels == 1:
        x = x.unsqueeze(1)
    expected = (channels, image_size, image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{name} must have shape [batch, {channels}, {image_size}, {image_size}], got shape {tuple(x.shape)}")
    if x.size(0) == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of pixel values in [0, 1], got dtype {x.dtype}")
    check_dtype_device(x, like, name)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must hold pixel values in [0, 1], found values in [{low:.4g}, {high:.4g}]")
    return x


class VAEGAN(PyroModule):
    r"""
    The generative model of VAE/GAN (Larsen et al. 2015): a Gaussian latent, a convolutional
    decoder (generator), and a reconstruction likelihood that lives in the feature space of a
    GAN discriminator's hidden layer :math:`\mathrm{Dis}_l`:

    .. math::

        p(z) = \mathcal{N}(0, I), \qquad \tilde x = \mathrm{Dec}_\theta(z), \qquad
        p\big(\mathrm{Dis}_l(x) \mid z\big) = \mathcal{N}\big(\mathrm{Dis}_l(x) \,\big|\,
            \mathrm{Dis}_l(\tilde x),\ \sigma^2 I\big).

    With ``likelihood="pixels"`` it is the plain VAE with the same decoder,
    :math:`p(x \mid z) = \mathcal{N}(x \mid \tilde x, \sigma^2 I)` on pixels in [-1, 1], and
    no discriminator.

    Sites (plate ``"data"``, ``max_plate_nesting=1``): ``"z"``; ``"features"`` (observed
    :math:`\mathrm{Dis}_l(x)`) or ``"x"``; and, for VAE/GAN, ``"dis_logits"`` ``[batch, 2]``
    (the discriminator's logits of the real and the decoded image, recorded with
    :func:`~pyro_seq.util.record`: it adds nothing to any bound). Images enter in [0, 1]
    (``[batch, C, H, W]``) and are mapped to [-1, 1], the range of the decoder's tanh.

    Train VAE/GAN with :class:`~pyro_seq.losses.VAEGANLoss`, which routes each term to the
    networks the paper updates with it (a plain ELBO would also train the discriminator to
    shrink its own features, the feature likelihood's trivial optimum); the plain VAE with
    :class:`~pyro.infer.Trace_ELBO`::

        model = VAEGAN(image_size=64)
        guide = VAEGANGuide(model)
        loss = VAEGANLoss(gamma=1e-2)
        svi = SVI(model, guide, vaegan_optim(), loss)
        svi.step(x)                          # x [batch, 1, 64, 64] in [0, 1]

    :param int image_size: 64 (the paper's CelebA networks) or 28 (MNIST).
    :param int channels: image channels (1 for grey images).
    :param int z_dim: latent size (the paper: 128).
    :param float width: multiplier of every hidden width of the encoder, decoder and
        discriminator (1: the paper's; smaller for CPU runs).
    :param str likelihood: ``"features"`` (VAE/GAN) or ``"pixels"`` (plain VAE).
    :param float scale: :math:`\sigma` of the Gaussian likelihood.

    **References**

    [1] Anders Boesen Lindbo Larsen, Søren Kaae Sønderby, Hugo Larochelle, Ole Winther,
        "Autoencoding beyond pixels using a learned similarity metric", ICML 2016,
        arXiv:1512.09300.
    """

    def __init__(self, image_size=64, channels=1, z_dim=128, width=1.0, likelihood="features", scale=1.0):
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
        if likelihood not in VAEGAN_LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {VAEGAN_LIKELIHOODS}, got {likelihood!r}")
        channels, z_dim = check_int("channels", channels, 1), check_int("z_dim", z_dim, 1)
        width = check_real("width", width, 0.0, low_open=True)
        scale = check_real("scale", scale, 0.0, low_open=True)
        super().__init__()
        self.image_size, self.channels, self.z_dim = int(image_size), int(channels), int(z_dim)
        self.width, self.likelihood, self.scale = float(width), likelihood, float(scale)
        self.decoder = ConvDecoder(image_size, channels, z_dim, width)
        if likelihood == "features":
            self.discriminator = ConvDiscriminator(image_size, channels, width)

    @property
    def config(self):
        """JSON-able constructor arguments."""
        return dict(
            image_size=self.image_size, channels=self.channels, z_dim=self.z_dim, width=self.width,
            likelihood=self.likelihood, scale=self.scale,
        )

    @property
    def image_shape(self):
        return (self.channels, self.image_size, self.image_size)

    def check(self, x, mask=None):
        """Validate images in [0, 1]; returns ``x [batch, C, H, W]`` (``mask`` is ignored)."""
        return check_image_batch(x, self.channels, self.image_size, like=module_tensor(self))

    def discriminate(self, x, x_tilde):
        """
        One discriminator pass over real and decoded images (one batch, so batch norm sees both).

        :returns: ``(Dis_l(x), Dis_l(x_tilde), logits [batch, 2])`` with the logits of the real
            and the decoded image in the columns.
        """
        features, logits = self.discriminator(torch.cat([x, x_tilde]))  # [2 * batch, F], [2 * batch]
        real, fake = features.chunk(2)  # [batch, F] each
        return real, fake, torch.stack(logits.chunk(2), -1)  # [batch, 2]

    def forward(self, x, mask=None):
        """
        :param torch.Tensor x: images ``[batch, C, H, W]`` in [0, 1].
        :returns: the decoded images ``[batch, C, H, W]`` in [0, 1] (reconstructions when
            replayed on guide samples, prior samples otherwise).
        """
        decoder = self.decoder  # registers the parameters with Pyro
        x = 2.0 * self.check(x, mask) - 1.0  # [batch, C, H, W] in [-1, 1]
        batch = x.size(0)
        with pyro.plate("data", batch, dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).expand([batch, self.z_dim]).to_event(1))
            x_tilde = decoder(z)  # [batch, C, H, W]
            if self.likelihood == "pixels":
                pyro.sample("x", dist.Normal(x_tilde, self.scale).to_event(3), obs=x)
            else:
                real, fake, logits = self.discriminate(x, x_tilde)  # [batch, F], [batch, F], [batch, 2]
                pyro.sample("features", dist.Normal(fake, self.scale).to_event(1), obs=real)
                record(LOGITS_SITE, logits)
        return (x_tilde + 1.0) / 2.0

    @torch.no_grad()
    def generate(self, num_images, z=None):
        """
        Decoded prior samples (evaluation mode: batch norm uses running statistics).

        :param int num_images: how many (ignored when ``z`` is given).
        :param torch.Tensor z: latents ``[n, z_dim]`` to decode instead of prior draws.
        :returns: images ``[n, C, H, W]`` in [0, 1].
        """
        was_training = self.training
        self.eval()
        try:
            like = module_tensor(self)
            if z is None:
                z = torch.randn(num_images, self.z_dim, device=like.device, dtype=like.dtype)  # [n, z_dim]
            return (self.decoder(z.to(like)) + 1.0) / 2.0
        finally:
            self.train(was_training)
