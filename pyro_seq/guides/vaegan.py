"""The amortised guide of :class:`~pyro_seq.models.VAEGAN`: the convolutional encoder."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from pyro_seq.models.vaegan import ConvEncoder
from pyro_seq.nn import MIN_SCALE
from pyro_seq.util import check_real


class VAEGANGuide(PyroModule):
    r"""
    The VAE/GAN encoder as a Pyro guide (Larsen et al. 2015):

    .. math::

        q_\phi(z \mid x) = \mathcal{N}\big(\mu_\phi(x), \operatorname{diag} \sigma_\phi(x)^2\big),

    with :math:`(\mu_\phi, \sigma_\phi)` from :class:`~pyro_seq.models.vaegan.ConvEncoder`
    (three 5×5 stride-2 convolutions with batch norm, a dense layer of 1024). The same guide
    serves VAE/GAN and the plain VAE. The model is not a submodule.

    :param model: the :class:`~pyro_seq.models.VAEGAN` it serves (fixes the image shape,
        ``z_dim`` and the width multiplier).
    :param float width: multiplier of the encoder's widths (default: the model's).

    **References**

    [1] Anders Boesen Lindbo Larsen, Søren Kaae Sønderby, Hugo Larochelle, Ole Winther,
        "Autoencoding beyond pixels using a learned similarity metric", ICML 2016,
        arXiv:1512.09300.
    """

    def __init__(self, model, width=None, min_scale=MIN_SCALE):
        super().__init__()
        self._model = (model,)  # not a submodule: its parameters keep one Pyro name
        self.width = float(model.width) if width is None else check_real("width", width, 0.0, low_open=True)
        min_scale = check_real("min_scale", min_scale, 0.0)
        self.encoder = ConvEncoder(model.image_size, model.channels, model.z_dim, self.width, min_scale)

    @property
    def model(self):
        return self._model[0]

    @property
    def config(self):
        return {"width": self.width}

    def encode(self, x):
        """``x [batch, C, H, W]`` in [0, 1] -> ``(loc, scale)`` of :math:`q(z \\mid x)`, each ``[batch, z_dim]``."""
        return self.encoder(2.0 * self.model.check(x) - 1.0)

    def forward(self, x, mask=None):
        loc, scale = self.encode(x)  # [batch, z_dim] each
        with pyro.plate("data", loc.size(0), dim=-1):
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def reconstruct(self, x, sample=False):
        """
        Reconstructions ``[batch, C, H, W]`` in [0, 1] (evaluation mode): the decoded
        posterior mean, or a decoded posterior sample with ``sample=True``.
        """
        was_training = self.training
        self.eval()
        try:
            loc, scale = self.encode(x)
            z = loc + scale * torch.randn_like(loc) if sample else loc
            return self.model.generate(len(z), z=z)
        finally:
            self.train(was_training)
