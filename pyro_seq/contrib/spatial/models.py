r"""
Digit-sequence classifiers with spatial transformers, written as Pyro models: the recurrent
spatial transformer (RNN-SPN), its feed-forward counterpart (FFN-SPN) and a plain CNN.

Each reads a batch of images ``x [batch, 1, S, S]`` in [0, 1] and, for every one of its
``num_digits`` digits (left to right), observes the label at a Pyro sample site
``"digit_{t}"`` inside ``pyro.plate("images")``, stepping with ``pyro.markov``:

.. math::

    p(y_{1:D} \mid x) = \prod_{t=1}^{D} \mathrm{Cat}\big(y_t \mid
        \mathrm{softmax}\, f(\mathcal{T}_{\theta_t}(x))\big),

with :math:`\mathcal{T}_\theta` the affine glimpse (``affine_grid`` / ``grid_sample``, an output
of ``int(S / downsample)`` pixels a side) and :math:`f` a convolutional classifier shared over
steps. In the RNN-SPN :math:`\theta_t = A\, h_t + b`, :math:`h_t = \mathrm{GRU}(c(x), h_{t-1})`
with :math:`c(x)` convolutional features of the whole image, :math:`A = 0` and :math:`b` the
identity at initialisation. ``Trace_ELBO`` with an empty guide is then the summed
cross-entropy of the digits.

With ``stochastic_attention=True`` the glimpse parameters are latent:

.. math::

    \theta_t \sim \mathcal{N}(\theta_{\mathrm{id}}, \sigma_p^2 I), \qquad
    q(\theta_t \mid x) = \mathcal{N}(\mu_t(x), \mathrm{diag}\, s_t(x)^2),

where the amortised guide :class:`~pyro_seq.contrib.spatial.SpatialAttentionGuide` runs the RNN-SPN's
localisation network and GRU; SVI maximises
:math:`\mathbb{E}_q[\log p(y \mid x, \theta)] - \mathrm{KL}(q \,\|\, p)`.

Example::

    model = RecurrentSpatialTransformer(canvas=100, num_digits=3, downsample=3)
    svi = SVI(model, PointEstimateGuide(), Adam({"lr": 1e-3}), Trace_ELBO())
    svi.step(x, y)                        # x [B, 1, 100, 100], y [B, 3]
    probs = model.predict(x)              # [B, 3, 10]

**References**

[1] Søren Kaae Sønderby, Casper Kaae Sønderby, Lars Maaløe, Ole Winther,
    "Recurrent Spatial Transformer Networks", arXiv:1509.05329.
[2] Max Jaderberg, Karen Simonyan, Andrew Zisserman, Koray Kavukcuoglu,
    "Spatial Transformer Networks", arXiv:1506.02025.
"""

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.nn import PyroModule

from pyro_seq.models.vaegan import check_image_batch
from pyro_seq.util import check_int, check_int_labels, check_probability, module_tensor

__all__ = [
    "IDENTITY_AFFINE",
    "ConvDigitClassifier",
    "DigitSequenceClassifier",
    "FeedForwardSpatialTransformer",
    "GlimpseClassifier",
    "LocalisationCNN",
    "RecurrentAttention",
    "RecurrentSpatialTransformer",
    "glimpse",
    "glimpse_side",
]

#: The identity transform, the six entries of :math:`[[1, 0, 0], [0, 1, 0]]` in row-major order.
IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
NUM_CLASSES = 10


def glimpse_side(canvas, downsample):
    """Side of a glimpse of a ``canvas``-pixel image: ``int(canvas / downsample)`` (100 / 3 -> 33)."""
    if not downsample >= 1.0:
        raise ValueError(f"downsample must be >= 1 (ratio of input to glimpse pixels per side), got {downsample}")
    return int(canvas / downsample)


def glimpse(x, theta, side):
    """
    Affine glimpses of images: bilinear samples of ``x`` at the grid ``theta`` maps the output's
    pixel centres to (normalised coordinates, ``align_corners=False``; zeros outside).

    :param x: ``[batch, C, H, W]``.
    :param theta: ``[batch, 6]`` (or ``[batch, 2, 3]``) affine parameters.
    :param int side: glimpse side.
    :returns: ``[batch, C, side, side]``. With the identity ``theta`` this is
        ``F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)``.
    """
    grid = F.affine_grid(theta.reshape(-1, 2, 3), (x.size(0), x.size(1), side, side), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _affine_head(in_features):
    """A linear layer onto the six affine parameters: zero weights, identity bias."""
    head = nn.Linear(in_features, 6)
    nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.tensor(IDENTITY_AFFINE))
    return head


def _flat_size(net, channels, side):
    with torch.no_grad():
        return int(net(torch.zeros(1, channels, side, side)).numel())


def _check_sizes(dropout=None, **sizes):
    """Positive integer sizes and a dropout rate in ``[0, 1)``, each named in the error."""
    for name, value in sizes.items():
        check_int(name, value, 1)
    if dropout is not None:
        check_probability("dropout", dropout, high_open=True)


class LocalisationCNN(nn.Module):
    """
    Features of the whole image for the localisation network: max-pool 2, then three blocks of
    a 3×3 convolution (``channels`` filters, ReLU, no padding) with max-pool 2 between them,
    flattened (the reference RNN-SPN's layout; 100×100 -> 20×9×9).
    """

    def __init__(self, canvas, channels=20):
        super().__init__()
        self.net = nn.Sequential(
            nn.MaxPool2d(2), nn.Conv2d(1, channels, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(channels, channels, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(channels, channels, 3), nn.ReLU(),
            nn.Flatten(),
        )
        try:
            self.out_features = _flat_size(self.net, 1, canvas)
        except RuntimeError as e:
            raise ValueError(f"a {canvas}×{canvas} canvas is too small for the localisation network's three poolings and convolutions") from e

    def forward(self, x):
        return self.net(x)  # [batch, out_features]


class GlimpseClassifier(nn.Module):
    """
    The convolutional classifier of a glimpse: three 3×3 convolutions of ``channels`` filters
    (ReLU, max-pool 2 after the first two), a dense layer and ``num_heads`` ten-way outputs.
    """

    def __init__(self, side, channels=32, dense=400, num_heads=1, dropout=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(dropout),
            nn.Conv2d(channels, channels, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(dropout),
            nn.Conv2d(channels, channels, 3), nn.ReLU(), nn.Flatten(),
        )
        try:
            flat = _flat_size(self.features, 1, side)
        except RuntimeError as e:
            raise ValueError(f"a {side}×{side} glimpse is too small for the classifier's three convolutions and two poolings: lower downsample") from e
        self.out = nn.Sequential(nn.Linear(flat, dense), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dense, num_heads * NUM_CLASSES))

    def forward(self, g):
        return self.out(self.features(g)).reshape(g.size(0), self.num_heads, NUM_CLASSES)  # [batch, heads, 10]


class RecurrentAttention(nn.Module):
    """
    The RNN-SPN's attention: :class:`LocalisationCNN` features of the whole image, fed to a GRU
    at each of ``num_steps`` steps, and one affine head (identity at initialisation) per output.

    :param int num_outputs: 1 for the glimpse parameters; 2 for a Gaussian's location and raw
        scale (the second head's bias is ``init_raw_scale``).
    """

    def __init__(self, canvas, hidden=256, loc_channels=20, num_outputs=1, init_raw_scale=-3.0):
        super().__init__()
        self.localisation = LocalisationCNN(canvas, loc_channels)
        self.gru = nn.GRU(self.localisation.out_features, hidden, batch_first=True)
        self.heads = nn.ModuleList([_affine_head(hidden) for _ in range(num_outputs)])
        for head in self.heads[1:]:
            nn.init.constant_(head.bias, init_raw_scale)

    def forward(self, x, num_steps):
        """:returns: one ``[batch, num_steps, 6]`` tensor per head."""
        features = self.localisation(x)  # [batch, F]
        h, _ = self.gru(features.unsqueeze(1).expand(-1, num_steps, -1).contiguous())  # [batch, steps, hidden]
        return [head(h) for head in self.heads]  # each [batch, steps, 6]


class DigitSequenceClassifier(PyroModule):
    """
    Base of the digit-sequence classifiers: input checks, the likelihood sites and prediction.
    A subclass sets ``canvas``, ``num_digits`` and ``side`` and implements :meth:`logits`.
    """

    stochastic_attention = False
    #: Distinct glimpses per image: one per digit (RNN-SPN), one for all (FFN-SPN), none (CNN).
    num_glimpses = 0

    def glimpses(self, x, theta):
        """The glimpses ``[batch, G, 1, side, side]`` of images ``x`` at ``theta [batch, G, 6]``."""
        b, d = theta.shape[:2]
        xs = x.unsqueeze(1).expand(-1, d, -1, -1, -1).reshape(b * d, *x.shape[1:])  # [batch * G, 1, S, S]
        return glimpse(xs, theta.reshape(b * d, 6), self.side).reshape(b, d, x.size(1), self.side, self.side)

    def check_inputs(self, x, y=None):
        x = check_image_batch(x, 1, self.canvas, like=module_tensor(self))
        y = check_int_labels(y, (x.size(0), self.num_digits), 0, NUM_CLASSES - 1, "y", "digit labels")
        return x, y

    def logits(self, x, theta=None):
        """``(logits [batch, D, 10], theta [batch, D, 6] or None)`` of checked images."""
        raise NotImplementedError

    def observe(self, logits, y):
        """The likelihood sites ``digit_0 .. digit_{D-1}`` (inside the caller's plate)."""
        for t in pyro.markov(range(self.num_digits)):
            pyro.sample(f"digit_{t}", dist.Categorical(logits=logits[:, t]), obs=None if y is None else y[:, t])

    def forward(self, x, y=None):
        """The Pyro model :math:`p(y \\mid x)`; returns the logits ``[batch, D, 10]``."""
        x, y = self.check_inputs(x, y)
        with pyro.plate("images", x.size(0), dim=-1):
            logits, _ = self.logits(x)
            self.observe(logits, y)
        return logits

    @torch.no_grad()
    def predict(self, x, guide=None, num_samples=1):
        """Class probabilities ``[batch, D, 10]`` (deterministic: ``guide`` and ``num_samples`` unused)."""
        x, _ = self.check_inputs(x)
        return self.logits(x)[0].softmax(-1)


class RecurrentSpatialTransformer(DigitSequenceClassifier):
    """
    RNN-SPN: a GRU over the whole image's features picks one affine glimpse per digit; a shared
    :class:`GlimpseClassifier` reads one digit from each (see the module docstring).

    :param int canvas: image side.
    :param int num_digits: digits per image (GRU steps).
    :param float downsample: input pixels per glimpse pixel along a side (the paper uses 3).
    :param int hidden: GRU units.
    :param int loc_channels: filters of the localisation convolutions.
    :param int channels: filters of the classifier's convolutions.
    :param int dense: units of the classifier's dense layer.
    :param float dropout: classifier dropout.
    :param bool stochastic_attention: make each step's affine parameters a latent variable
        ``theta_{t}`` with prior :math:`\\mathcal{N}(\\theta_{id}, \\sigma_p^2 I)`; pair with
        :class:`~pyro_seq.contrib.spatial.SpatialAttentionGuide`.
    :param float prior_scale: :math:`\\sigma_p`.
    """

    def __init__(self, canvas=100, num_digits=3, downsample=3.0, hidden=256, loc_channels=20, channels=32,
                 dense=400, dropout=0.0, stochastic_attention=False, prior_scale=0.5):
        _check_sizes(canvas=canvas, num_digits=num_digits, hidden=hidden, loc_channels=loc_channels, channels=channels,
                     dense=dense, dropout=dropout)
        super().__init__()
        if not prior_scale > 0:
            raise ValueError(f"prior_scale must be > 0, got {prior_scale}")
        self.canvas, self.num_digits, self.downsample = int(canvas), int(num_digits), float(downsample)
        self.num_glimpses = self.num_digits
        self.side = glimpse_side(self.canvas, self.downsample)
        self.hidden, self.loc_channels = int(hidden), int(loc_channels)
        self.stochastic_attention, self.prior_scale = bool(stochastic_attention), float(prior_scale)
        self.classifier = GlimpseClassifier(self.side, channels, dense, num_heads=1, dropout=dropout)
        # deterministic attention lives in the model; stochastic attention in the guide
        self.attention = None if self.stochastic_attention else RecurrentAttention(self.canvas, hidden, loc_channels)
        self.register_buffer("identity", torch.tensor(IDENTITY_AFFINE))

    def logits(self, x, theta=None):
        if theta is None:
            if self.attention is None:
                raise ValueError("a stochastic-attention model needs theta [batch, D, 6] (e.g. from its guide)")
            (theta,) = self.attention(x, self.num_digits)  # [batch, D, 6]
        g = self.glimpses(x, theta)  # [batch, D, 1, side, side]: all steps through the classifier at once
        logits = self.classifier(g.flatten(0, 1)).reshape(x.size(0), self.num_digits, NUM_CLASSES)
        return logits, theta

    def forward(self, x, y=None):
        """
        The Pyro model :math:`p(y \\mid x)`, or with stochastic attention
        :math:`p(y, \\theta \\mid x) = \\prod_t p(\\theta_t)\\, p(y_t \\mid g(x, \\theta_t))` with
        glimpses :math:`g`.

        :param torch.Tensor x: images ``[batch, 1, canvas, canvas]``.
        :param torch.Tensor y: digit labels ``[batch, D]`` (``None``: sampled).
        :returns: the logits ``[batch, D, 10]``.
        """
        if not self.stochastic_attention:
            return super().forward(x, y)
        x, y = self.check_inputs(x, y)
        prior = dist.Normal(self.identity, self.identity.new_tensor(self.prior_scale)).to_event(1)
        with pyro.plate("images", x.size(0), dim=-1):
            thetas = [pyro.sample(f"theta_{t}", prior) for t in pyro.markov(range(self.num_digits))]
            logits, _ = self.logits(x, torch.stack(thetas, 1))  # [batch, D, 10]
            self.observe(logits, y)
        return logits

    @torch.no_grad()
    def predict(self, x, guide=None, num_samples=1):
        """
        Class probabilities ``[batch, D, 10]``. With stochastic attention they average over
        ``num_samples`` glimpse draws from ``guide`` (``num_samples=0``: at the guide's means).
        """
        if not self.stochastic_attention:
            return super().predict(x)
        if guide is None:
            raise ValueError("a stochastic-attention model predicts through its guide: predict(x, guide=guide)")
        x, _ = self.check_inputs(x)
        loc, scale = guide.attention_params(x)  # [batch, D, 6] each
        if num_samples == 0:
            return self.logits(x, loc)[0].softmax(-1)
        probs = sum(self.logits(x, loc + scale * torch.randn_like(scale))[0].softmax(-1) for _ in range(num_samples))
        return probs / num_samples


class FeedForwardSpatialTransformer(DigitSequenceClassifier):
    """
    FFN-SPN: one affine glimpse of the whole image (localisation CNN, a dense layer, identity
    initialisation), read by a :class:`GlimpseClassifier` with one ten-way head per digit.
    """

    def __init__(self, canvas=100, num_digits=3, downsample=3.0, loc_channels=20, loc_dense=200, channels=96,
                 dense=400, dropout=0.0):
        _check_sizes(canvas=canvas, num_digits=num_digits, loc_channels=loc_channels, loc_dense=loc_dense, channels=channels,
                     dense=dense, dropout=dropout)
        super().__init__()
        self.canvas, self.num_digits, self.downsample = int(canvas), int(num_digits), float(downsample)
        self.side = glimpse_side(self.canvas, self.downsample)
        self.num_glimpses = 1
        self.localisation = LocalisationCNN(self.canvas, loc_channels)
        self.loc_dense = nn.Sequential(nn.Linear(self.localisation.out_features, loc_dense), nn.ReLU())
        self.affine = _affine_head(loc_dense)
        self.classifier = GlimpseClassifier(self.side, channels, dense, num_heads=self.num_digits, dropout=dropout)

    def logits(self, x, theta=None):
        if theta is None:
            theta = self.affine(self.loc_dense(self.localisation(x)))  # [batch, 6]
        logits = self.classifier(glimpse(x, theta, self.side))  # [batch, D, 10]
        return logits, theta.unsqueeze(1).expand(-1, self.num_digits, -1)


class ConvDigitClassifier(DigitSequenceClassifier):
    """
    The CNN baseline: the :class:`GlimpseClassifier` (one head per digit) on the whole image,
    down-sampled by the same factor as the transformers' glimpses (bilinear, i.e. the identity
    glimpse), so all three models read the same number of pixels.
    """

    def __init__(self, canvas=100, num_digits=3, downsample=3.0, channels=96, dense=400, dropout=0.0):
        _check_sizes(canvas=canvas, num_digits=num_digits, channels=channels, dense=dense, dropout=dropout)
        super().__init__()
        self.canvas, self.num_digits, self.downsample = int(canvas), int(num_digits), float(downsample)
        self.side = glimpse_side(self.canvas, self.downsample)
        self.classifier = GlimpseClassifier(self.side, channels, dense, num_heads=self.num_digits, dropout=dropout)

    def logits(self, x, theta=None):
        small = x if self.side == self.canvas else F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return self.classifier(small), None  # [batch, D, 10]
