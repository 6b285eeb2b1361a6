r"""
The amortised guide of the stochastic-attention RNN-SPN
(:class:`~pyro_seq.contrib.spatial.RecurrentSpatialTransformer` with ``stochastic_attention=True``):

.. math::

    q(\theta_{1:D} \mid x) = \prod_{t=1}^{D} \mathcal{N}\big(\theta_t \mid \mu_t(x),
        \mathrm{diag}\, s_t(x)^2\big), \qquad
    (\mu_t, \log s_t) = \text{heads}(h_t), \quad h_t = \mathrm{GRU}(c(x), h_{t-1}),

the RNN-SPN's own attention network (:class:`~pyro_seq.contrib.spatial.models.RecurrentAttention`) with
a second head for the scales (:math:`s_t = \mathrm{softplus}(\cdot) + 10^{-4}`, about 0.05 at
initialisation). It does not see the labels, so the same network serves prediction.

**References**

[1] Søren Kaae Sønderby, Casper Kaae Sønderby, Lars Maaløe, Ole Winther,
    "Recurrent Spatial Transformer Networks", arXiv:1509.05329.
"""

import pyro
import pyro.distributions as dist
import torch.nn.functional as F
from pyro.nn import PyroModule

from pyro_seq.contrib.spatial.models import RecurrentAttention
from pyro_seq.util import check_real

__all__ = ["SpatialAttentionGuide"]

MIN_SCALE = 1e-4


class SpatialAttentionGuide(PyroModule):
    """
    The amortised guide of stochastic attention: a recurrent attention network of its own reads
    the image and proposes each glimpse's affine parameters,

    .. math::

        q(\\theta_{1:D} \\mid x) = \\prod_{t=1}^{D} \\mathcal{N}\\big(\\theta_t \\mid
            \\mu_t(x), \\mathrm{diag}\\, \\sigma_t^2(x)\\big),

    for images ``x [batch, 1, canvas, canvas]`` (``forward(x, y=None)``; the labels ``y [batch, D]``
    are accepted and ignored), sites ``theta_0 .. theta_{D-1}`` of shape ``[batch, 6]``.

    :param model: a :class:`~pyro_seq.contrib.spatial.RecurrentSpatialTransformer` with stochastic
        attention (read for its sizes; not registered).
    :param float init_raw_scale: bias of the scale head (softplus(-3) = 0.049).
    """

    def __init__(self, model, init_raw_scale=-3.0):
        super().__init__()
        if not getattr(model, "stochastic_attention", False):
            raise ValueError("SpatialAttentionGuide serves a RecurrentSpatialTransformer built with stochastic_attention=True")
        self.num_digits = model.num_digits
        self.config = {"init_raw_scale": check_real("init_raw_scale", init_raw_scale)}
        self.attention = RecurrentAttention(model.canvas, model.hidden, model.loc_channels, num_outputs=2, init_raw_scale=init_raw_scale)

    def attention_params(self, x):
        """``(loc, scale)`` of :math:`q(\\theta_t \\mid x)`, each ``[batch, D, 6]``."""
        loc, raw_scale = self.attention(x, self.num_digits)
        return loc, F.softplus(raw_scale) + MIN_SCALE

    def forward(self, x, y=None):
        """Samples ``theta_t [batch, 6]`` for images ``x [batch, 1, canvas, canvas]``; returns ``(loc, scale)``."""
        loc, scale = self.attention_params(x)  # [batch, D, 6]
        with pyro.plate("images", x.size(0), dim=-1):
            for t in pyro.markov(range(self.num_digits)):
                pyro.sample(f"theta_{t}", dist.Normal(loc[:, t], scale[:, t]).to_event(1))
        return loc, scale
