r"""The mean-field guide of a Bayesian output layer (:class:`~pyro_seq.contrib.protein.ProteinLocalizer`,
:class:`~pyro_seq.contrib.protein.SecondaryStructureBLSTM` with ``bayesian_last_layer=True``)."""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

__all__ = ["LastLayerGuide"]


class LastLayerGuide(PyroModule):
    r"""
    A mean-field Gaussian posterior over the output layer of a protein model with
    ``bayesian_last_layer=True``:

    .. math::

        q_\phi(W, b) = \prod_{ij} \mathcal{N}(W_{ij} \mid \mu_{ij}, \sigma_{ij}^2)
            \prod_i \mathcal{N}(b_i \mid \mu^b_i, (\sigma^b_i)^2),

    against the model's prior :math:`\mathcal{N}(0, \sigma_p^2)` (``prior_scale``). The network
    below the output layer (convolutions, LSTMs, attention, dense layers) stays a point
    estimate: its parameters are registered by the model's ``pyro.module`` statements and
    learned by the same SVI, so the ELBO

    .. math::

        \mathcal{L}(\theta, \phi) = \frac{N}{B} \sum_{n \in \text{batch}}
            \mathbb{E}_{q_\phi}\bigl[\log p_\theta(y_n \mid x_n, W, b)\bigr]
            - \operatorname{KL}\bigl(q_\phi(W, b) \,\|\, p(W, b)\bigr)

    is variational inference for the head and maximum likelihood (MAP with the optimiser's
    weight decay) for the body :math:`\theta`. :math:`N` is the model's ``num_data``: with it
    the likelihood of a batch of :math:`B` proteins is scaled by :math:`N / B`, so the KL
    counts once per pass over the data.

    Sites ``"out.weight"`` and ``"out.bias"``, sampled once per call (not per protein), with
    reparameterised Normals. The means start at the model's deterministic output layer (its
    initialisation, or trained values), the standard deviations at ``init_scale``; the scales
    are :class:`~pyro.nn.PyroParam` with a softplus-positive constraint
    (:math:`\sigma = \operatorname{softplus}(\rho)`, gentler than ``exp`` for large values).
    Parameter names: ``weight_loc``, ``weight_scale``, ``bias_loc``, ``bias_scale``.

    Use a ``Trace_ELBO`` without ``vectorize_particles`` (the model applies the sampled
    weights with ``F.linear``)::

        guide = LastLayerGuide(model)
        svi = SVI(model, guide, Adam({"lr": 1e-3}), Trace_ELBO())
        svi.step(tokens, mask, y, num_data=num_train)
        probs = model.predict(tokens, mask, guide=guide, num_samples=20)

    :param model: the model (``bayesian_last_layer=True``); not registered as a submodule.
    :param float init_scale: initial posterior standard deviation.

    **References**

    [1] Charles Blundell, Julien Cornebise, Koray Kavukcuoglu, Daan Wierstra, "Weight
        Uncertainty in Neural Networks", ICML 2015, arXiv:1505.05424.
    [2] Jasper Snoek, Oren Rippel, Kevin Swersky, Ryan Kiros, Nadathur Satish, Narayanan
        Sundaram, Md. Mostofa Ali Patwary, Prabhat, Ryan P. Adams, "Scalable Bayesian
        Optimization Using Deep Neural Networks", ICML 2015, arXiv:1502.05700.
    """

    def __init__(self, model, init_scale=1e-3):
        if not getattr(model, "bayesian_last_layer", False):
            raise ValueError(
                "LastLayerGuide needs a model built with bayesian_last_layer=True "
                f"(got {type(model).__name__} with a deterministic output layer)"
            )
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        super().__init__()
        self._model = (model,)  # not a submodule: its parameters keep one Pyro name
        self.init_scale = float(init_scale)
        out = torch.nn.Module.__getattr__(model, "out")  # plain access: no pyro.module statement
        weight, bias = out.weight.detach().clone(), out.bias.detach().clone()
        self.weight_loc = PyroParam(weight)
        self.weight_scale = PyroParam(torch.full_like(weight, init_scale), constraint=constraints.softplus_positive)
        self.bias_loc = PyroParam(bias)
        self.bias_scale = PyroParam(torch.full_like(bias, init_scale), constraint=constraints.softplus_positive)

    @property
    def model(self):
        return self._model[0]

    @property
    def config(self):
        return dict(init_scale=self.init_scale)

    def forward(self, *args, **kwargs):
        """Sample ``"out.weight"`` and ``"out.bias"`` (the model's arguments are ignored)."""
        weight = pyro.sample("out.weight", dist.Normal(self.weight_loc, self.weight_scale).to_event(2))
        bias = pyro.sample("out.bias", dist.Normal(self.bias_loc, self.bias_scale).to_event(1))
        return weight, bias

    @torch.no_grad()
    def sample_weights(self, num_samples=1):
        """
        ``num_samples`` draws from :math:`q`, outside any Pyro trace.

        :returns: ``(weight [S, out, in], bias [S, out])``.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        w_loc, w_scale, b_loc, b_scale = self.weight_loc, self.weight_scale, self.bias_loc, self.bias_scale
        weight = w_loc + w_scale * torch.randn((num_samples,) + w_loc.shape, dtype=w_loc.dtype, device=w_loc.device)
        bias = b_loc + b_scale * torch.randn((num_samples,) + b_loc.shape, dtype=b_loc.dtype, device=b_loc.device)
        return weight, bias
