"""
Small neural building blocks shared by pyro_seq models and guides.

Everything here is a plain :class:`torch.nn.Module` (not a
:class:`~pyro.nn.PyroModule`): models and guides hold them as children, so
Pyro registers their parameters with ``pyro.module`` when the owning
``PyroModule`` runs, while :mod:`pyro_seq.reference` can call the very same
modules without any Pyro machinery (the pure-PyTorch floor).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Smallest standard deviation any Gaussian head returns (the variance floor).
MIN_SCALE = 1e-3
#: Bound on the magnitude of a transition mean (soft clamp, see :func:`soft_clamp`).
MAX_LOC = 10.0
#: Largest standard deviation a transition returns.
MAX_SCALE = 10.0


def soft_clamp(x, bound):
    """``bound * tanh(x / bound)``: the identity near 0, smoothly bounded by ``bound``."""
    return bound * torch.tanh(x / bound)


def softplus_scale(raw, min_scale=MIN_SCALE):
    """Map an unconstrained tensor to a standard deviation ``>= min_scale``."""
    return F.softplus(raw) + min_scale


def bounded_loc_scale(out, min_scale=MIN_SCALE, max_loc=MAX_LOC, max_scale=MAX_SCALE):
    """
    Split ``out [..., 2 * z_dim]`` into a Gaussian ``(loc, scale)``: the mean soft-clamped
    to ``(-max_loc, max_loc)``, the standard deviation in ``[min_scale, max_scale]``.
    """
    z_dim = out.shape[-1] // 2
    # two slices, not out.chunk(2): TorchScript's autodiff of chunk fails when one half is unused
    # (SRNNGuide's res_q reads only the prior's loc), so JitTrace_ELBO needs the slices
    loc, raw_scale = out[..., :z_dim], out[..., z_dim:]  # [..., z_dim] each
    loc = soft_clamp(loc, max_loc)
    scale = softplus_scale(raw_scale, min_scale).clamp(max=max_scale)
    return loc, scale


class MLP(nn.Module):
    """
    A multilayer perceptron ``in -> hidden -> ... -> out``.

    :param int input_dim: input size.
    :param hidden_dims: hidden layer sizes (may be empty).
    :param int output_dim: output size, or ``None`` for no output layer: the
        network then ends with the last hidden activation (and dropout) and returns
        features ``[..., hidden_dims[-1]]`` (e.g. the context of a
        :class:`MADE` emission).
    :param activation: activation module class between layers.
    :param float dropout: dropout after each hidden activation.
    """

    def __init__(self, input_dim, hidden_dims, output_dim, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        hidden_dims = list(hidden_dims)
        if output_dim is None:
            if not hidden_dims:
                raise ValueError("MLP without an output layer needs at least one hidden layer")
            dims = [input_dim] + hidden_dims
            num_hidden = len(hidden_dims)
        else:
            dims = [input_dim] + hidden_dims + [output_dim]
            num_hidden = len(dims) - 2
        layers = []
        for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < num_hidden:
                layers.append(activation())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class GaussianTransition(nn.Module):
    r"""
    A diagonal-Gaussian transition :math:`p(z_t \mid z_{t-1}, c_t)` whose
    parameters come from an MLP of ``[z_{t-1}, c_t]``.

    The first layer is split into a ``z`` part and a context part so that the
    context projection (``W_c c_t``, which does not depend on the sampled chain)
    is computed once for all time steps with :meth:`project_context`; the
    sequential loop then only costs ``W_z z_{t-1}`` and the rest of the MLP
    per step (:meth:`step`). :meth:`forward` evaluates all steps at once when the
    whole path ``z_{0:T-1}`` is known (scoring).

    :param int z_dim: latent size.
    :param int context_dim: size of :math:`c_t`.
    :param int hidden_dim: hidden width of the two-layer MLP.
    :param float min_scale: variance floor (standard deviation).
    :param float max_loc: the mean is soft-clamped to ``(-max_loc, max_loc)``
        and the standard deviation clamped to ``<= max_scale``: a nonlinear
        chain can otherwise become expansive early in training and blow up
        over a few hundred steps (observed on JSB within 10 SVI steps).
    :param float max_scale: see ``max_loc``.
    :param int input_dim: size of the sequential input (default ``z_dim``: the
        previous latent). Z-Forcing's posterior reads ``h_{t-1}`` here instead.
    """

    def __init__(
        self,
        z_dim,
        context_dim,
        hidden_dim,
        min_scale=MIN_SCALE,
        max_loc=MAX_LOC,
        max_scale=MAX_SCALE,
        input_dim=None,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.min_scale = min_scale
        self.max_loc, self.max_scale = max_loc, max_scale
        self.lin_z = nn.Linear(z_dim if input_dim is None else input_dim, hidden_dim, bias=False)
        self.lin_context = nn.Linear(context_dim, hidden_dim)
        self.hidden = nn.Linear(hidden_dim, hidden_dim)
        self.loc_scale = nn.Linear(hidden_dim, 2 * z_dim)
        # start close to a standard-normal-like transition that does not
        # depend much on z_{t-1}, so that long chains do not blow up at init
        with torch.no_grad():
            self.loc_scale.weight.mul_(0.1)
            self.loc_scale.bias.zero_()

    def project_context(self, context):
        """``context [..., context_dim] -> [..., hidden_dim]`` (vectorised over time)."""
        return self.lin_context(context)

    def step(self, z_prev, context_proj):
        """
        One transition from already projected context.

        :param torch.Tensor z_prev: ``[batch, z_dim]``
        :param torch.Tensor context_proj: ``[batch, hidden_dim]``
        :returns: ``(loc, scale)``, each ``[batch, z_dim]``
        """
        h = torch.relu(self.lin_z(z_prev) + context_proj)  # [batch, hidden]
        h = torch.relu(self.hidden(h))  # [batch, hidden]
        return bounded_loc_scale(self.loc_scale(h), self.min_scale, self.max_loc, self.max_scale)

    def forward(self, z_prev, context_proj):
        """Same as :meth:`step` for any leading shape, e.g. ``[batch, time, z_dim]``."""
        return self.step(z_prev, context_proj)


class GaussianHead(nn.Module):
    """
    A bounded diagonal Gaussian ``(loc, scale)`` from a two-layer MLP of an input
    (Z-Forcing's prior :math:`p(z_t \\mid h_{t-1})`), with the clamps of
    :class:`GaussianTransition` and its small initial last layer.

    :param int input_dim: input size.
    :param int z_dim: output (latent) size.
    :param int hidden_dim: hidden width.
    :param float min_scale: variance floor (standard deviation).
    """

    def __init__(self, input_dim, z_dim, hidden_dim, min_scale=MIN_SCALE, max_loc=MAX_LOC, max_scale=MAX_SCALE):
        super().__init__()
        self.min_scale, self.max_loc, self.max_scale = min_scale, max_loc, max_scale
        self.net = MLP(input_dim, [hidden_dim], 2 * z_dim)
        last = self.net.net[-1]
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.zero_()

    def forward(self, inputs):
        """``inputs [..., input_dim] -> (loc, scale)``, each ``[..., z_dim]``."""
        return bounded_loc_scale(self.net(inputs), self.min_scale, self.max_loc, self.max_scale)


#: Bound on the auxiliary network's log-variance (Z-Forcing's p_xi(b | z)).
MAX_LOG_VAR = 10.0


class AuxiliaryGaussian(nn.Module):
    r"""
    Z-Forcing's auxiliary predictor :math:`p_\xi(b_t \mid z_t)` (or of
    :math:`[h_{t-1}, z_t]`): a diagonal Gaussian over a target ``b`` whose mean and
    log-variance come from a two-layer MLP; the log-variance is soft-clamped to
    ``±MAX_LOG_VAR``.

    :param int input_dim: size of the conditioning input.
    :param int target_dim: size of ``b``.
    :param int hidden_dim: hidden width.
    """

    def __init__(self, input_dim, target_dim, hidden_dim):
        super().__init__()
        self.net = MLP(input_dim, [hidden_dim], 2 * target_dim)

    def forward(self, inputs):
        """``inputs [..., input_dim] -> (loc, log_var)``, each ``[..., target_dim]``."""
        loc, log_var = self.net(inputs).chunk(2, dim=-1)
        return loc, soft_clamp(log_var, MAX_LOG_VAR)

    def log_prob(self, target, inputs):
        r""":math:`\log p_\xi(b \mid \cdot)` summed over the last dim: ``[...]``."""
        loc, log_var = self(inputs)
        return gaussian_log_prob(target, loc, (0.5 * log_var).exp()).sum(-1)


def lstm_cell(gates_in, state, weight_hh):
    """
    One LSTM step in PyTorch's gate order (input, forget, cell, output), the same
    maths as :class:`torch.nn.LSTM`, from precomputed input gates.

    :param torch.Tensor gates_in: ``[batch, 4 * h_dim]``: ``W_ih u_t + b_ih + b_hh``.
    :param tuple state: ``(h, c)``, each ``[batch, h_dim]``.
    :param torch.Tensor weight_hh: ``[4 * h_dim, h_dim]``.
    :returns: the new ``(h, c)``.
    """
    h, c = state
    gates = gates_in + h @ weight_hh.t()  # [batch, 4 * h_dim]
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # [batch, h_dim]
    h = torch.sigmoid(o) * torch.tanh(c)  # [batch, h_dim]
    return h, c


def reverse_padded(x, lengths):
    """
    Reverse each sequence of a right-padded batch within its own length.

    Padding stays where it was: row ``b`` becomes
    ``x[b, L_b-1], ..., x[b, 0], x[b, L_b], ..., x[b, T-1]``.

    :param torch.Tensor x: ``[batch, time, dim]``
    :param torch.Tensor lengths: ``[batch]`` integer lengths
    """
    batch, time = x.shape[:2]
    t = torch.arange(time, device=x.device).expand(batch, time)  # [batch, time]
    lengths = lengths.to(x.device).unsqueeze(-1)  # [batch, 1]
    index = torch.where(t < lengths, lengths - 1 - t, t)  # [batch, time]
    return x.gather(1, index.unsqueeze(-1).expand_as(x))  # [batch, time, dim]


class TimeSlices:
    """
    ``slices[t]`` is ``tensor[:, t]``, taken by one ``unbind`` along time on first use.

    A step loop over a tensor in the autograd graph must not index it per step: the backward of
    ``tensor[:, t]`` builds a zero tensor of the whole ``[batch, time, ...]`` shape, so a loop of T
    steps costs O(T^2) in the backward pass (4,000 steps: 37 s against 0.3 s here). ``unbind``'s
    backward stacks the T gradients once.

    :param torch.Tensor tensor: ``[batch, time, ...]``
    """

    def __init__(self, tensor):
        self.tensor = tensor
        self._steps = None

    def __getitem__(self, t):
        if self._steps is None:
            self._steps = self.tensor.unbind(1)  # T views [batch, ...]
        return self._steps[t]


def shift_right(x, first):
    """
    ``[x_0 .. x_{T-1}] -> [first, x_0 .. x_{T-2}]`` along the time dim (``-2``).

    :param torch.Tensor x: ``[..., batch, time, dim]``
    :param torch.Tensor first: ``[dim]``, ``[batch, dim]`` or ``[..., batch, dim]``
    """
    first = first.expand(x.shape[:-2] + x.shape[-1:]).unsqueeze(-2)  # [..., batch, 1, dim]
    return torch.cat([first, x[..., :-1, :]], dim=-2)  # [..., batch, time, dim]


def broadcast_cat(tensors):
    """
    Concatenate along the last dim after broadcasting the leading dims (a particle dim
    of some inputs, e.g. ``z [K, batch, time, z_dim]`` beside ``d [batch, time, d_dim]``).

    :param tensors: tensors ``[..., n_i]`` with broadcastable leading dims.
    :returns: ``[..., sum n_i]``
    """
    lead = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t if t.shape[:-1] == lead else t.expand(lead + t.shape[-1:]) for t in tensors], dim=-1)


def _flat_state(state, lead):
    """An RNN state ``[..., hidden]`` broadcast to ``lead`` and laid out as ``[1, N, hidden]``."""
    if state.shape[:-1] != lead:
        state = state.expand(lead + state.shape[-1:])
    return state.reshape(1, -1, state.shape[-1])


def recurrent_path(rnn, inputs, state=None):
    """
    A ``batch_first`` single-layer :class:`torch.nn.GRU` or :class:`torch.nn.LSTM` over
    ``inputs [..., batch, time, in]`` with any leading dims (folded into its batch).

    :param state: ``None``, a GRU state or an LSTM ``(h, c)``, each ``[..., batch, hidden]``
        (broadcast to the leading dims of ``inputs``).
    :returns: ``(outputs [..., batch, time, hidden], final state)``, the final state in the
        layout of ``state`` (each ``[..., batch, hidden]``).
    """
    lead = inputs.shape[:-2]
    if len(lead) == 1 and state is None:  # the plain case, untouched
        out, final = rnn(inputs)
    else:
        flat = inputs.reshape((-1,) + inputs.shape[-2:])  # [N, time, in]
        if state is None:
            out, final = rnn(flat)
        elif isinstance(state, tuple):
            out, final = rnn(flat, tuple(_flat_state(s, lead) for s in state))
        else:
            out, final = rnn(flat, _flat_state(state, lead))
        out = out.reshape(lead + out.shape[-2:])  # [..., batch, time, hidden]
    if isinstance(final, tuple):
        return out, tuple(f.reshape(lead + f.shape[-1:]) for f in final)
    return out, final.reshape(lead + final.shape[-1:])


def recurrent_step(rnn, inputs, state=None):
    """
    One step of a ``batch_first`` single-layer GRU or LSTM on ``inputs [..., batch, in]``
    (any leading dims): :func:`recurrent_path` over a one-step sequence.

    :returns: ``(output [..., batch, hidden], final state)``.
    """
    out, final = recurrent_path(rnn, inputs.unsqueeze(-2), state)
    return out.squeeze(-2), final


def gaussian_log_prob(value, loc, scale):
    """Elementwise diagonal-Gaussian log density (no Pyro, no validation)."""
    var = scale * scale
    return -((value - loc) ** 2) / (2 * var) - scale.log() - 0.5 * math.log(2 * math.pi)


def gaussian_kl(loc_q, scale_q, loc_p, scale_p):
    """Elementwise KL(N(loc_q, scale_q) || N(loc_p, scale_p))."""
    var_ratio = (scale_q / scale_p) ** 2
    t1 = ((loc_q - loc_p) / scale_p) ** 2
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


def dense_layers(input_dim, widths, batch_norm=False, activation=nn.LeakyReLU):
    """
    ``Linear -> [BatchNorm1d] -> activation`` for each width in ``widths``, as one
    :class:`torch.nn.Sequential` ``[..., input_dim] -> [..., widths[-1]]`` (the
    deterministic blocks of the Ladder VAE; batch norm before the nonlinearity).
    """
    layers, n_in = [], input_dim
    for width in widths:
        layers.append(nn.Linear(n_in, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(activation())
        n_in = width
    return nn.Sequential(*layers)


class GaussianBlock(nn.Module):
    """
    A deterministic block and a diagonal-Gaussian head on it:
    ``inputs [batch, input_dim] -> (features [batch, width], loc, scale [batch, z_dim])``,
    the mean soft-clamped and the standard deviation bounded as in
    :func:`bounded_loc_scale`.

    :param int input_dim: input size.
    :param int width: width of each of the ``num_layers`` dense layers.
    :param int z_dim: output size.
    :param bool batch_norm: batch normalisation in the dense layers (not in the head).
    """

    def __init__(self, input_dim, width, z_dim, num_layers=2, batch_norm=False, min_scale=MIN_SCALE):
        super().__init__()
        self.min_scale = min_scale
        self.body = dense_layers(input_dim, [width] * num_layers, batch_norm)
        self.head = nn.Linear(width, 2 * z_dim)

    def forward(self, inputs):
        """``inputs [..., input_dim]``: any leading dims, folded into one for batch normalisation."""
        features = rows(self.body, inputs)  # [..., width]
        loc, scale = bounded_loc_scale(self.head(features), self.min_scale)  # [..., z_dim] each
        return features, loc, scale


def rows(module, inputs):
    """
    ``module`` applied to ``inputs [..., n]`` as the rows of one ``[N, n]`` matrix, as
    :class:`torch.nn.BatchNorm1d` needs (a particle dim left of the batch then shares
    its batch statistics); ``[batch, n]`` inputs pass unchanged.
    """
    if inputs.dim() == 2:
        return module(inputs)
    out = module(inputs.reshape(-1, inputs.shape[-1]))  # [N, m]
    return out.reshape(inputs.shape[:-1] + out.shape[-1:])


def precision_merge(loc_a, scale_a, loc_b, scale_b):
    r"""
    Product of two diagonal Gaussians, renormalised (the Ladder VAE's precision
    weighting of a bottom-up estimate and a top-down prior):

    .. math::

        \sigma^2 = \frac{1}{\sigma_a^{-2} + \sigma_b^{-2}}, \qquad
        \mu = \big(\mu_a \sigma_a^{-2} + \mu_b \sigma_b^{-2}\big)\, \sigma^2.

    Elementwise, any broadcastable shapes; returns ``(loc, scale)``.
    """
    prec_a, prec_b = scale_a.pow(-2), scale_b.pow(-2)
    var = 1.0 / (prec_a + prec_b)
    loc = (loc_a * prec_a + loc_b * prec_b) * var
    return loc, var.sqrt()


class MultiInputMLP(nn.Module):
    """
    An MLP over several inputs that broadcast against each other: the first layer is a sum of
    one linear map per input (the same as one linear map of their concatenation, without
    building the broadcast concatenation), then ``activation`` and the remaining layers.
    Used where a label is enumerated: ``x [batch, d_x]``, ``y [classes, 1, d_y]`` and
    ``z [classes, batch, d_z]`` give ``[classes, batch, output_dim]``.

    :param input_dims: size of each input, in call order.
    :param hidden_dims: hidden layer sizes (at least one).
    :param int output_dim: output size.
    """

    def __init__(self, input_dims, hidden_dims, output_dim, activation=nn.ReLU):
        super().__init__()
        hidden_dims = list(hidden_dims)
        if not hidden_dims:
            raise ValueError("MultiInputMLP needs at least one hidden layer")
        self.inputs = nn.ModuleList(nn.Linear(d, hidden_dims[0], bias=(i == 0)) for i, d in enumerate(input_dims))
        self.rest = nn.Sequential(activation(), MLP(hidden_dims[0], hidden_dims[1:], output_dim, activation))

    def forward(self, *inputs):
        if len(inputs) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} inputs, got {len(inputs)}")
        h = sum(layer(value) for layer, value in zip(self.inputs, inputs))  # [..., hidden]
        return self.rest(h)


class MaskedLinear(nn.Linear):
    r"""
    A linear layer whose weight is multiplied elementwise by a fixed binary mask,
    :math:`y = (W \odot M) x + b`: the building block of :class:`MADE`. Masked
    weights get zero gradient and never take part in the output.

    :param int in_features: input size.
    :param int out_features: output size.
    :param torch.Tensor mask: ``[out_features, in_features]`` bool (or 0/1),
        ``True`` where a connection exists; kept as a buffer.
    :param bool bias: add a (never masked) bias.
    """

    def __init__(self, in_features, out_features, mask, bias=True):
        super().__init__(in_features, out_features, bias=bias)
        mask = torch.as_tensor(mask).bool()
        if mask.shape != (out_features, in_features):
            raise ValueError(
                f"mask must have shape [out_features, in_features] = [{out_features}, {in_features}], "
                f"got {list(mask.shape)}"
            )
        self.register_buffer("mask", mask)

    def masked_weight(self):
        """:math:`W \\odot M`, ``[out_features, in_features]``."""
        return self.weight * self.mask

    def forward(self, inputs):
        return F.linear(inputs, self.masked_weight(), self.bias)


def made_degrees(input_dim, hidden_dims):
    r"""
    The connectivity degrees of a :class:`MADE` in the natural key order: input
    (and output) key :math:`d` has degree :math:`d` (``1 .. D``); the hidden units of
    each layer take the degrees ``0, 1, .., D - 1`` in turn. A unit of degree
    :math:`m` depends on the keys :math:`x_1 .. x_m` only (degree 0: on the
    context only); output :math:`d` may read units of degree ``< d``.

    :returns: ``(key degrees [D], [hidden degrees [H_l] per layer])``, long tensors.
    """
    keys = torch.arange(1, input_dim + 1)  # [D]
    hidden = [torch.arange(width) % input_dim for width in hidden_dims]  # [H_l] each
    return keys, hidden


class MADE(nn.Module):
    r"""
    A conditional masked autoencoder for distribution estimation (MADE) over
    ``D`` binary keys in their natural order: the logits

    .. math::

        \ell_d(x_{<d}, c) = b_d + V_{d,:}\, h^{(L)} + A_{d,<d}\, x_{<d} + C_{d,:}\, c,
        \qquad h^{(l)} = g\big((W^{(l)} \odot M^{(l)})\, h^{(l-1)} + b^{(l)}
            [+\, U c \text{ for } l = 1]\big),\quad h^{(0)} = x,

    where the masks :math:`M^{(l)}` (from :func:`made_degrees`) make
    :math:`\ell_d` depend on :math:`x_{<d}` and the context :math:`c` only, so that
    all ``D`` conditionals come out of one pass over a known ``x``. The context
    enters the first hidden layer and, through direct connections, every logit; so do
    the keys (the strictly lower-triangular :math:`A`). With the key weights at zero
    this is a linear Bernoulli head on :math:`c` (an emission MLP's output layer).

    :param int input_dim: number of keys ``D``.
    :param int context_dim: context size ``C`` (0: unconditional).
    :param hidden_dims: hidden layer widths (at least one).
    :param activation: activation module class.

    Call as ``made(x [..., D], context [..., C]) -> logits [..., D]`` (leading
    dims broadcast), or project the context once with :meth:`project_context` and
    call :meth:`logits` repeatedly (sequential sampling).

    **References**

    [1] Mathieu Germain, Karol Gregor, Iain Murray, Hugo Larochelle,
        "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015,
        arXiv:1502.03509.
    """

    def __init__(self, input_dim, context_dim, hidden_dims, activation=nn.ReLU):
        super().__init__()
        hidden_dims = list(hidden_dims)
        if input_dim < 1:
            raise ValueError(f"MADE needs input_dim >= 1, got {input_dim}")
        if not hidden_dims or min(hidden_dims) < 1:
            raise ValueError(f"MADE needs at least one hidden layer of width >= 1, got {hidden_dims}")
        if context_dim < 0:
            raise ValueError(f"context_dim must be >= 0, got {context_dim}")
        self.input_dim, self.context_dim, self.hidden_dims = input_dim, context_dim, hidden_dims
        keys, hidden = made_degrees(input_dim, hidden_dims)
        layers, below = [], keys
        for width, degrees in zip(hidden_dims, hidden):
            layers.append(MaskedLinear(len(below), width, degrees[:, None] >= below[None, :]))
            below = degrees
        self.hidden = nn.ModuleList(layers)
        self.output = MaskedLinear(hidden_dims[-1], input_dim, keys[:, None] > below[None, :])
        self.direct = MaskedLinear(input_dim, input_dim, keys[:, None] > keys[None, :], bias=False)
        # one projection of the context for the first hidden layer and the logits
        self.context_layer = None
        if context_dim:
            self.context_layer = nn.Linear(context_dim, hidden_dims[0] + input_dim, bias=False)
        self.activation = activation()

    def project_context(self, context):
        """
        The context's contributions ``(to the first hidden layer [..., H_1], to the logits [..., D])``,
        or ``(None, None)`` without context.

        :param torch.Tensor context: ``[..., C]``
        """
        if self.context_layer is None:
            return None, None
        proj = self.context_layer(context)  # [..., H_1 + D]
        return proj[..., : self.hidden_dims[0]], proj[..., self.hidden_dims[0] :]

    def logits(self, x, context_terms):
        """
        All ``D`` logits in one masked pass.

        :param torch.Tensor x: ``[..., D]``
        :param tuple context_terms: from :meth:`project_context`.
        :returns: ``[..., D]`` (the leading dims of ``x`` and the context broadcast)
        """
        to_hidden, to_logits = context_terms
        h = self.hidden[0](x)  # [..., H_1]
        if to_hidden is not None:
            h = h + to_hidden
        h = self.activation(h)
        for layer in self.hidden[1:]:
            h = self.activation(layer(h))  # [..., H_l]
        out = self.output(h) + self.direct(x)  # [..., D]
        if to_logits is not None:
            out = out + to_logits
        return out

    def forward(self, x, context=None):
        """``x [..., D], context [..., C] -> logits [..., D]``; logit ``d`` depends on ``x[..., :d]`` only."""
        if context is None and self.context_dim:
            raise ValueError(f"this MADE is conditional: pass a context [..., {self.context_dim}]")
        return self.logits(x, self.project_context(context))
