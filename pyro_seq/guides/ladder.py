"""Guides for :class:`~pyro_seq.models.LadderVAE`: the ladder guide and the bottom-up baseline."""

import pyro
import pyro.distributions as dist
import torch.nn as nn
from pyro.nn import PyroModule

from pyro_seq.models.ladder import check_batch_norm_batch, top_down_blocks
from pyro_seq.nn import GaussianBlock, precision_merge
from pyro_seq.util import PyroNamed, check_call_shape, check_int, claim_pyro_name


class _HierarchicalGuide(PyroNamed, PyroModule):
    """Shared construction: the model (not a submodule), the per-layer sizes and the Pyro name."""

    def __init__(self, model, hidden_dims=None, num_layers=None, batch_norm=None, name=None):
        super().__init__("ladder_guide" if name is None else name)
        self._init_pyro_name(name)
        self._model = (model,)  # not a submodule: its parameters keep one Pyro name
        if hidden_dims is not None and (isinstance(hidden_dims, (str, bytes)) or not hasattr(hidden_dims, "__iter__")):
            raise ValueError(f"hidden_dims must be a sequence of integers >= 1 (one per layer), got {hidden_dims!r}")
        self.hidden_dims = tuple(
            model.hidden_dims if hidden_dims is None else (check_int(f"hidden_dims[{i}]", d, 1) for i, d in enumerate(hidden_dims))
        )
        if len(self.hidden_dims) != len(model.z_dims):
            raise ValueError(
                f"hidden_dims needs one width per stochastic layer ({len(model.z_dims)}), got {self.hidden_dims}"
            )
        self.num_layers = model.num_layers if num_layers is None else check_int("num_layers", num_layers, 1)
        self.batch_norm = model.batch_norm if batch_norm is None else bool(batch_norm)

    @property
    def model(self):
        return self._model[0]

    def _pyro_base_name(self):
        return claim_pyro_name(self.model) + "_guide"

    def check(self, x, mask=None, batch_size=None):
        """
        The model's input check, and at least two images per batch if this guide's blocks
        use batch normalisation in training mode; ``batch_size`` (required under
        ``JitTrace_ELBO``) is checked against ``x``.
        """
        if x is None:
            raise ValueError("the guide needs data: q(z | x) with x=None is undefined")
        x = self.model.check(x, mask)  # [batch, x_dim]
        check_batch_norm_batch(self, x)
        check_call_shape(x.size(0), 1, 1, batch_size)
        return x

    def _base_config(self):
        return dict(hidden_dims=list(self.hidden_dims), num_layers=self.num_layers, batch_norm=self.batch_norm)


class LadderGuide(_HierarchicalGuide):
    r"""
    The Ladder VAE's inference model (Sønderby et al. 2016). A deterministic
    bottom-up pass gives per-layer Gaussian estimates
    :math:`(\hat\mu_i, \hat\sigma_i)`, :math:`d_i = \mathrm{MLP}_i(d_{i-1})`,
    :math:`d_0 = x`; a top-down pass then samples from the top, combining each
    estimate with the generative model's top-down parameters by precision weighting:

    .. math::

        q(z_L \mid x) &= \mathcal{N}(\hat\mu_L, \hat\sigma_L^2), \\
        q(z_i \mid z_{i+1}, x) &= \mathcal{N}(\mu^q_i, \sigma^{q\,2}_i), \quad
            \sigma^{q\,2}_i = \frac{1}{\hat\sigma_i^{-2} + \sigma_i^{p\,-2}}, \quad
            \mu^q_i = \big(\hat\mu_i \hat\sigma_i^{-2} + \mu^p_i \sigma_i^{p\,-2}\big)\,
            \sigma^{q\,2}_i,

    with :math:`(\mu^p_i, \sigma^p_i)(z_{i+1})` from the top-down blocks
    (:func:`~pyro_seq.nn.precision_merge`).

    ``share_top_down=True`` (default, as in the paper) uses the *model's* top-down
    blocks: the posterior is the prior corrected by the data, the guide has no
    top-down parameters of its own, and the values it computes are handed to the
    model for the same ELBO evaluation (one pass and one batch-norm update per
    step). ``False`` gives the guide its own copy of that architecture (separately
    initialised and trained): more parameters and a looser coupling, for
    ablations.

    :param model: the :class:`~pyro_seq.models.LadderVAE`.
    :param bool share_top_down: see above.
    :param hidden_dims: widths of the bottom-up blocks (default: the model's).
    :param int num_layers: dense layers per block (default: the model's).
    :param bool batch_norm: batch norm in the bottom-up blocks (default: the model's).
    :param str name: Pyro name (default: the model's Pyro name + ``"_guide"``, fixed on
        the first run; see :class:`~pyro_seq.util.PyroNamed`).

    **References**

    [1] Casper Kaae Sønderby, Tapani Raiko, Lars Maaløe, Søren Kaae Sønderby, Ole Winther,
        "Ladder Variational Autoencoders", NIPS 2016, arXiv:1602.02282.
    """

    def __init__(self, model, share_top_down=True, hidden_dims=None, num_layers=None, batch_norm=None, name=None):
        super().__init__(model, hidden_dims, num_layers, batch_norm, name)
        z_dims = model.z_dims
        inputs = (model.x_dim,) + self.hidden_dims[:-1]
        self.bottom_up = nn.ModuleList(
            GaussianBlock(n_in, width, z_dim, self.num_layers, self.batch_norm, model.min_scale)
            for n_in, width, z_dim in zip(inputs, self.hidden_dims, z_dims)
        )
        self.share_top_down = bool(share_top_down)
        if not self.share_top_down:
            # its own name: model and guide are both top-level PyroModules, so an attribute
            # called top_down here would collide with the model's in Pyro's parameter store
            self.guide_top_down = top_down_blocks(z_dims, model.hidden_dims, model.num_layers, model.batch_norm, model.min_scale)

    @property
    def config(self):
        return dict(share_top_down=self.share_top_down, **self._base_config())

    def bottom_up_estimates(self, x):
        r"""The bottom-up estimates :math:`[(\hat\mu_i, \hat\sigma_i)]_{i=1}^{L}`, each ``[batch, z_dims[i-1]]``."""
        d, estimates = x, []
        for block in self.bottom_up:
            d, loc, scale = block(d)  # d [batch, width]
            estimates.append((loc, scale))
        return estimates

    def forward(self, x, mask=None, *, batch_size=None, predict=False):
        """
        :param torch.Tensor x: ``[batch, x_dim]`` or ``[batch, 1, x_dim]`` binary images.
        :param torch.Tensor mask: ignored except for validation.
        :param int batch_size: checked against ``x`` (required under ``JitTrace_ELBO``).
        :param bool predict: the model's flag, ignored.
        :returns: :math:`z_1` (with leading particle or sample dims under vectorised plates).
        """
        self.sync_pyro_params()
        model = self.model
        x_in = x
        x = self.check(x, mask, batch_size)  # [batch, x_dim]
        # the top-down blocks: the model's (its training mode), or this guide's copy of them
        check_batch_norm_batch(model if self.share_top_down else self, x, batch_norm=model.batch_norm)
        batch, L = x.size(0), model.num_stochastic_layers
        estimates = self.bottom_up_estimates(x)
        blocks = model.top_down if self.share_top_down else self.guide_top_down
        shared = {}
        with pyro.plate("data", batch, dim=-1):
            loc, scale = estimates[-1]  # [batch, z_L]
            z = pyro.sample(f"z_{L}", dist.Normal(loc, scale).to_event(1))
            for i in range(L - 1, 0, -1):
                loc_p, scale_p = model.prior_params(i, z, blocks)  # [batch, z_dims[i-1]]
                shared[i] = (z, loc_p, scale_p)
                loc, scale = precision_merge(*estimates[i - 1], loc_p, scale_p)
                z = pyro.sample(f"z_{i}", dist.Normal(loc, scale).to_event(1))
        if self.share_top_down:
            model.share_top_down(x_in, shared)
        return z


class BottomUpGuide(_HierarchicalGuide):
    r"""
    The standard hierarchical inference model, the "VAE" rows of the Ladder VAE
    paper: each layer conditions on the one below,

    .. math::

        q(z_{1:L} \mid x) = q(z_1 \mid x) \prod_{i=2}^{L} q(z_i \mid z_{i-1}),

    each factor a diagonal Gaussian from a deterministic block (``num_layers``
    dense layers of width ``hidden_dims[i]``). Sampled bottom-up, so use it with a
    Monte Carlo ELBO (``Trace_ELBO``): the analytic per-site KL of
    ``TraceMeanField_ELBO`` is not valid here, because :math:`p(z_i \mid z_{i+1})`
    conditions on a variable that :math:`q` samples *after* :math:`z_i`.

    :param model: the :class:`~pyro_seq.models.LadderVAE`.
    :param hidden_dims: widths (default: the model's).
    :param int num_layers: dense layers per block (default: the model's).
    :param bool batch_norm: batch norm in the blocks (default: the model's).
    :param str name: Pyro name (default: the model's Pyro name + ``"_guide"``).
    """

    def __init__(self, model, hidden_dims=None, num_layers=None, batch_norm=None, name=None):
        super().__init__(model, hidden_dims, num_layers, batch_norm, name)
        z_dims = model.z_dims
        inputs = (model.x_dim,) + z_dims[:-1]
        self.blocks = nn.ModuleList(
            GaussianBlock(n_in, width, z_dim, self.num_layers, self.batch_norm, model.min_scale)
            for n_in, width, z_dim in zip(inputs, self.hidden_dims, z_dims)
        )

    @property
    def config(self):
        return self._base_config()

    def forward(self, x, mask=None, *, batch_size=None, predict=False):
        """Arguments as :meth:`LadderGuide.forward`; returns :math:`z_L`."""
        self.sync_pyro_params()
        x = self.check(x, mask, batch_size)  # [batch, x_dim]
        z = x
        with pyro.plate("data", x.size(0), dim=-1):
            for i, block in enumerate(self.blocks, start=1):
                _, loc, scale = block(z)  # [batch, z_dims[i-1]]
                z = pyro.sample(f"z_{i}", dist.Normal(loc, scale).to_event(1))
        return z
