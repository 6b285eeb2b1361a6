"""
Semi-supervised deep generative models: M2 (Kingma et al. 2014) and the auxiliary deep
generative models ADGM and SDGM (Maaløe et al. 2016).
"""

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule

from pyro_seq.models.ladder import check_images
from pyro_seq.nn import MIN_SCALE, MultiInputMLP, bounded_loc_scale
from pyro_seq.util import check_int, check_int_labels, check_real, check_sizes, module_tensor

#: The released MNIST setting of Maaløe et al.: two hidden layers of 500 units in every network.
PAPER_HIDDEN_DIMS = (500, 500)

#: The auxiliary structures: ``None`` (M2), ``"adgm"`` and ``"sdgm"``.
AUXILIARY_STRUCTURES = (None, "adgm", "sdgm")


def check_labels(y, batch, num_classes, name="y"):
    """
    Validate class labels for a batch of ``batch`` items: ``None`` (unlabelled) or an integer
    tensor ``[batch]`` with values in ``0 .. num_classes - 1``.

    :raises TypeError: ``y`` is not a tensor.
    :raises ValueError: wrong dtype, shape or values, naming the offending entries.
    """
    return check_int_labels(
        y, (batch,), 0, num_classes - 1, name, "class indices", shape_note=" (one label per image)"
    )


class SemiSupervisedVAE(PyroModule):
    r"""
    The generative model shared by M2, ADGM and SDGM: a uniform class
    :math:`y`, a Gaussian latent :math:`z`, Bernoulli pixels, and (ADGM, SDGM)
    an auxiliary Gaussian :math:`a`:

    .. math::

        \text{M2:}\quad & p(y)\, p(z)\, p_\theta(x \mid y, z), \\
        \text{ADGM:}\quad & p(y)\, p(z)\, p_\theta(x \mid y, z)\, p_\theta(a \mid x, y, z), \\
        \text{SDGM:}\quad & p(y)\, p(z)\, p_\theta(a \mid y, z)\, p_\theta(x \mid a, y, z),

    with :math:`p(y) = \operatorname{Cat}(1/K)`, :math:`p(z) = \mathcal{N}(0, I)`,
    Gaussian :math:`p_\theta(a \mid \cdot)` and
    :math:`p_\theta(x \mid \cdot) = \operatorname{Bernoulli}(\operatorname{sigmoid} f_\theta(\cdot))`.
    In the ADGM the auxiliary variable leaves the marginal :math:`p(x, y, z)` unchanged; it
    only makes the variational family richer. In the SDGM :math:`a` is a second
    stochastic layer of the generative model (with a skip connection from :math:`y, z`).

    Sites ``"y"``, ``"z"``, ``"x"`` and ``"a"`` in a plate ``"data"`` (``max_plate_nesting=1``).
    ``forward(x, y)`` observes ``y`` when labels are given; with ``y=None`` the guide
    (:class:`~pyro_seq.guides.SemiSupervisedGuide`) enumerates it, and
    :class:`~pyro_seq.losses.SemiSupervised_ELBO` (a :class:`~pyro.infer.TraceEnum_ELBO`)
    sums it out exactly::

        model = ADGM()
        guide = SemiSupervisedGuide(model)
        loss = SemiSupervised_ELBO(num_data=50000, num_labelled=100)
        svi = SVI(model, guide, Adam({"lr": 3e-4}), loss)
        svi.step(x_labelled, y_labelled, x_unlabelled)   # binary images [batch, 784]

    Each network is an MLP whose first layer sums one linear map per input (the
    released code's construction; :class:`~pyro_seq.nn.MultiInputMLP`), so an
    enumerated ``y [K, 1]`` broadcasts against the batch without copying ``x``.

    :param int x_dim: pixels per image.
    :param int y_dim: number of classes :math:`K`.
    :param int z_dim: size of :math:`z`.
    :param int a_dim: size of :math:`a` (ignored by M2).
    :param hidden_dims: hidden widths of every network (the released code: 500, 500).
    :param str auxiliary: ``None`` (M2), ``"adgm"`` or ``"sdgm"``.
    :param float min_scale: standard-deviation floor of every Gaussian.
    :param image_shape: ``(height, width)`` for pictures (default: square if possible).

    **References**

    [1] Lars Maaløe, Casper Kaae Sønderby, Søren Kaae Sønderby, Ole Winther,
        "Auxiliary Deep Generative Models", ICML 2016, arXiv:1602.05473.
    [2] Diederik P. Kingma, Danilo J. Rezende, Shakir Mohamed, Max Welling,
        "Semi-Supervised Learning with Deep Generative Models", NIPS 2014, arXiv:1406.5298.
    """

    auxiliary = None

    def __init__(
        self,
        x_dim=784,
        y_dim=10,
        z_dim=100,
        a_dim=100,
        hidden_dims=PAPER_HIDDEN_DIMS,
        min_scale=MIN_SCALE,
        image_shape=None,
    ):
        x_dim, z_dim = check_int("x_dim", x_dim, 1), check_int("z_dim", z_dim, 1)
        y_dim = check_int("y_dim", y_dim, 2)
        if self.auxiliary:
            a_dim = check_int("a_dim", a_dim, 1)
        hidden_dims = check_sizes("hidden_dims", hidden_dims)
        min_scale = check_real("min_scale", min_scale, 0.0)
        super().__init__()
        if image_shape is None:
            side = int(round(x_dim**0.5))
            image_shape = (side, side) if side * side == x_dim else (1, x_dim)
        self.x_dim, self.y_dim, self.z_dim = int(x_dim), int(y_dim), int(z_dim)
        self.a_dim = int(a_dim) if self.auxiliary else 0
        self.hidden_dims, self.min_scale, self.image_shape = hidden_dims, min_scale, tuple(image_shape)
        if self.auxiliary == "sdgm":
            self.a_net = MultiInputMLP((y_dim, z_dim), hidden_dims, 2 * a_dim)  # p(a | y, z)
            self.x_net = MultiInputMLP((y_dim, z_dim, a_dim), hidden_dims, x_dim)  # p(x | a, y, z)
        else:
            self.x_net = MultiInputMLP((y_dim, z_dim), hidden_dims, x_dim)  # p(x | y, z)
            if self.auxiliary == "adgm":
                self.a_net = MultiInputMLP((x_dim, y_dim, z_dim), hidden_dims, 2 * a_dim)  # p(a | x, y, z)

    @property
    def config(self):
        """JSON-able constructor arguments."""
        return dict(
            x_dim=self.x_dim,
            y_dim=self.y_dim,
            z_dim=self.z_dim,
            a_dim=self.a_dim,
            hidden_dims=list(self.hidden_dims),
            min_scale=self.min_scale,
            image_shape=list(self.image_shape),
        )

    def check(self, x, y=None):
        """Validate inputs; returns ``(x [batch, x_dim], y [batch] or None)``."""
        x = check_images(x, None, self.x_dim, like=module_tensor(self))
        return x, check_labels(y, x.size(0), self.y_dim)

    def one_hot(self, y, like):
        """``y [...]`` (observed ``[batch]`` or enumerated ``[K, 1]``) as one-hot ``[..., K]`` in ``like``'s dtype."""
        return F.one_hot(y, self.y_dim).to(like.dtype)

    def forward(self, x, y=None):
        """
        :param torch.Tensor x: ``[batch, x_dim]`` or ``[batch, 1, x_dim]`` binary images.
        :param torch.Tensor y: ``[batch]`` class indices, or ``None`` for unlabelled images.
        :returns: the Bernoulli means of :math:`p(x \\mid \\cdot)` (``[batch, x_dim]``, or
            ``[K, batch, x_dim]`` under enumeration of ``y``).
        """
        x, y = self.check(x, y)  # [batch, x_dim], [batch] or None
        batch = x.size(0)
        with pyro.plate("data", batch, dim=-1):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(batch, self.y_dim)), obs=y)  # [batch] or [K, 1]
            y1 = self.one_hot(y, x)  # [batch, K] or [K, 1, K]
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).expand([batch, self.z_dim]).to_event(1))
            if self.auxiliary == "sdgm":
                loc, scale = bounded_loc_scale(self.a_net(y1, z), self.min_scale)  # [..., batch, a_dim]
                a = pyro.sample("a", dist.Normal(loc, scale).to_event(1))
                logits = self.x_net(y1, z, a)  # [..., batch, x_dim]
            else:
                logits = self.x_net(y1, z)  # [..., batch, x_dim]
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)
            if self.auxiliary == "adgm":
                loc, scale = bounded_loc_scale(self.a_net(x, y1, z), self.min_scale)  # [..., batch, a_dim]
                pyro.sample("a", dist.Normal(loc, scale).to_event(1))
        return torch.sigmoid(logits)

    @torch.no_grad()
    def generate(self, y, mean_frames=True):
        """
        Images of the given classes from the prior (``z`` and, for the SDGM, ``a`` sampled).

        :param torch.Tensor y: ``[n]`` class indices.
        :returns: ``[n, 1, x_dim]`` Bernoulli means (or binary samples with ``mean_frames=False``).
        """
        like = module_tensor(self)
        y = check_labels(torch.as_tensor(y, device=like.device), len(y), self.y_dim)
        y1 = self.one_hot(y, like)  # [n, K]
        z = torch.randn(len(y), self.z_dim, dtype=like.dtype, device=like.device)  # [n, z_dim]
        if self.auxiliary == "sdgm":
            loc, scale = bounded_loc_scale(self.a_net(y1, z), self.min_scale)
            logits = self.x_net(y1, z, loc + scale * torch.randn_like(loc))
        else:
            logits = self.x_net(y1, z)  # [n, x_dim]
        probs = torch.sigmoid(logits)
        return (probs if mean_frames else torch.bernoulli(probs)).unsqueeze(1)  # [n, 1, x_dim]


class M2(SemiSupervisedVAE):
    """
    Kingma et al.'s M2, :math:`p(y)\\,p(z)\\,p_\\theta(x \\mid y, z)`: the semi-supervised VAE
    without an auxiliary variable (see :class:`SemiSupervisedVAE`).
    """

    auxiliary = None


class ADGM(SemiSupervisedVAE):
    """
    The auxiliary deep generative model,
    :math:`p(y)\\,p(z)\\,p_\\theta(x \\mid y, z)\\,p_\\theta(a \\mid x, y, z)` (see
    :class:`SemiSupervisedVAE`).
    """

    auxiliary = "adgm"


class SDGM(SemiSupervisedVAE):
    """
    The skip deep generative model (two stochastic layers),
    :math:`p(y)\\,p(z)\\,p_\\theta(a \\mid y, z)\\,p_\\theta(x \\mid a, y, z)` (see
    :class:`SemiSupervisedVAE`).
    """

    auxiliary = "sdgm"
