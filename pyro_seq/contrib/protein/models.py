r"""
Discriminative models of protein sequences, written as Pyro models: subcellular localisation
(:class:`ProteinLocalizer`) and secondary structure (:class:`SecondaryStructureBLSTM`).

Both read a padded batch of amino-acid token ids ``tokens [batch, length]`` (ids ``0 .. 19``
for the 20 amino acids, ``UNKNOWN = 20``, ``PAD = 21``; :mod:`pyro_seq.contrib.protein.data`) with a
prefix ``mask [batch, length]``, look the tokens up in a fixed encoding (one-hot or BLOSUM62
rows; a buffer, not trained), and are built so that padding never changes a prediction:
encodings and convolution features are zeroed at padding, the recurrences run on packed
sequences, and attention gives padding zero weight.

Each ``forward`` is a Pyro model whose likelihood sites sit in a plate ``"proteins"``
(``max_plate_nesting=1``), so that ``Trace_ELBO`` with an empty guide is the (summed)
cross-entropy, and :class:`~pyro_seq.contrib.protein.LastLayerGuide` turns the output layer into a
Bayesian one (``bayesian_last_layer=True``)::

    model = ProteinLocalizer(encoding="blosum62", bayesian_last_layer=True)
    guide = LastLayerGuide(model)
    svi = SVI(model, guide, Adam({"lr": 1e-3}), Trace_ELBO())
    svi.step(batch.tokens, batch.mask, batch.y, num_data=len(train))
    probs = model.predict(tokens, mask, guide=guide, num_samples=20)   # [batch, 10]
"""

import contextlib

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pyro_seq.util import check_int, check_probability, check_real, check_sizes
from pyro_seq.util import check_int_labels as _check_int_labels
from pyro_seq.util import check_mask_values, module_tensor

__all__ = [
    "LOCALIZER_WIDTHS",
    "SS_WIDTHS",
    "ProteinLocalizer",
    "SecondaryStructureBLSTM",
    "check_proteins",
    "q8_merge_matrix",
    "q8_probs_to_q3",
]

#: Kernel widths of the localisation model's parallel convolutions (Sønderby et al. 2015).
LOCALIZER_WIDTHS = (1, 3, 5, 9, 15, 21)

#: Kernel widths of the secondary-structure model's convolutions.
SS_WIDTHS = (3, 9, 15)


def _alphabet():
    """``(PAD, number of token ids)`` of :mod:`pyro_seq.contrib.protein.data` (imported lazily)."""
    from pyro_seq.contrib.protein import data as protein

    return int(protein.PAD), int(protein.VOCAB_SIZE)


def _encoding_table(encoding):
    """``(name, [num_tokens, F] float tensor)`` of a named encoding or a given matrix."""
    _, num_tokens = _alphabet()
    if isinstance(encoding, str):
        from pyro_seq.contrib.protein.data import encoding_matrix

        table = torch.as_tensor(encoding_matrix(encoding))
        name = encoding
    elif torch.is_tensor(encoding):
        table, name = encoding.detach().clone(), None
    elif isinstance(encoding, (list, tuple)):  # a matrix from a saved config
        table, name = torch.tensor(encoding, dtype=torch.float32), None
    else:
        raise TypeError(
            f"encoding must be 'onehot', 'blosum62' or a [{num_tokens}, F] tensor, got {type(encoding).__name__}"
        )
    if table.dim() != 2 or table.shape[0] != num_tokens or table.shape[1] < 1 or not table.is_floating_point():
        raise ValueError(
            f"an encoding matrix must be a floating point [{num_tokens}, F] tensor (one row per token id), "
            f"got dtype {table.dtype} and shape {tuple(table.shape)}"
        )
    return name, table.float()


def check_proteins(tokens, mask=None, like=None, name="tokens"):
    """
    Validate a padded batch of proteins and return ``(tokens, mask, lengths)``.

    :param torch.Tensor tokens: ``[batch, length]`` int64 token ids in ``0 .. PAD``; ``PAD``
        only at padding positions (where ``mask`` is False, any id is accepted: those
        positions are never read).
    :param torch.Tensor mask: ``[batch, length]`` bool (or 0/1) prefix mask with at least one
        True per row; ``None``: ``tokens != PAD``.
    :param torch.Tensor like: a model tensor; ``tokens`` must be on its device.
    :raises TypeError: ``tokens`` or ``mask`` is not a tensor.
    :raises ValueError: naming the argument and what is wrong (dtype, shape, values, rows).
    :returns: ``tokens``, a bool ``mask`` and ``lengths [batch]`` (int64).
    """
    pad, num_tokens = _alphabet()
    if not torch.is_tensor(tokens):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.dtype != torch.long:
        raise ValueError(f"{name} must hold int64 (torch.long) token ids, got dtype {tokens.dtype}")
    if tokens.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, length], got shape {tuple(tokens.shape)}")
    if tokens.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(tokens.shape)}")
    if like is not None and tokens.device != like.device:
        raise ValueError(
            f"{name} is on device {tokens.device} but the model is on {like.device}: "
            f"move it with {name}.to({str(like.device)!r})"
        )
    bad = (tokens < 0) | (tokens >= num_tokens)
    if bool(bad.any()):
        raise ValueError(
            f"{name} must hold token ids in 0..{num_tokens - 1} (PAD = {pad}); found "
            f"{torch.unique(tokens[bad])[:10].tolist()}"
        )
    batch, length = tokens.shape
    if mask is None:
        mask = tokens != pad
    else:
        if not torch.is_tensor(mask):
            raise TypeError(
                f"mask must be a torch.Tensor of shape [batch, length] = {(batch, length)} or None, "
                f"got {type(mask).__name__}"
            )
        if tuple(mask.shape) != (batch, length):
            raise ValueError(f"mask must have shape [batch, length] = {(batch, length)}, got {tuple(mask.shape)}")
        if mask.device != tokens.device:
            raise ValueError(f"mask is on device {mask.device} but {name} is on {tokens.device}")
        mask = check_mask_values(mask)
    lengths = mask.sum(-1)  # [batch]
    if bool((lengths == 0).any()):
        rows = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(f"mask rows {rows[:10]} are all False: every protein needs at least one residue")
    prefix = torch.arange(length, device=mask.device) < lengths.unsqueeze(-1)  # [batch, length]
    if not torch.equal(prefix, mask):
        rows = torch.nonzero((prefix != mask).any(-1)).flatten().tolist()
        raise ValueError(
            "mask must be a prefix mask (True for the first L_b residues of row b, then False): "
            f"right-pad the proteins; rows {rows[:10]} are not"
        )
    padded_inside = (tokens == pad) & mask
    if bool(padded_inside.any()):
        rows = torch.nonzero(padded_inside.any(-1)).flatten().tolist()
        raise ValueError(
            f"{name} holds PAD ({pad}) at positions the mask marks as residues, in rows {rows[:10]}: "
            "PAD is only allowed where mask is False (use UNKNOWN for unknown residues)"
        )
    return tokens, mask, lengths


def _check_num_data(num_data, batch):
    if num_data is None:
        return batch
    if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < batch:
        raise ValueError(
            f"num_data must be None or an integer >= the batch size {batch} (the number of proteins "
            f"in the training set), got {num_data!r}"
        )
    return num_data


def _check_num_samples(num_samples):
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return num_samples


def _check_sizes(num_classes, widths, **sizes):
    """``num_classes >= 2`` and positive widths and sizes; returns ``widths`` as a tuple of ints."""
    check_int("num_classes", num_classes, 2)
    for name, value in sizes.items():
        check_int(name, value, 1)
    widths = check_sizes("widths", widths)
    return widths


class ConvBank(nn.Module):
    """
    Parallel 1-D convolutions over residues (one per kernel width, ``filters`` each, "same"
    padding, ReLU), concatenated, with padding positions zeroed.

    :param int in_dim: features per residue.
    :param widths: kernel widths.
    :param int filters: filters per width.
    """

    def __init__(self, in_dim, widths, filters):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, filters, int(k), padding="same") for k in widths)
        self.out_dim = filters * len(self.convs)

    def forward(self, x, mask):
        """``x [batch, length, in_dim]`` (zeros at padding) -> ``[batch, length, out_dim]``."""
        h = x.transpose(1, 2)  # [batch, in_dim, length]
        h = torch.cat([F.relu(conv(h)) for conv in self.convs], dim=1)  # [batch, out_dim, length]
        return h.transpose(1, 2) * mask.unsqueeze(-1).to(h.dtype)  # [batch, length, out_dim]


def packed_lstm(lstm, x, lengths):
    """
    Run a ``batch_first`` LSTM on packed sequences, so padding never enters the recurrence.

    :returns: ``[batch, length, directions * hidden]`` with zeros at padding.
    """
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
    return out


class _ProteinModel(PyroModule):
    """
    Shared machinery: the fixed encoding, input checks, the output layer (deterministic or
    Bayesian), the data plate and prediction with MC dropout and/or weight samples.

    Subclasses define ``body(tokens, mask, lengths) -> [..., dense]`` features, ``self.out``
    (an ``nn.Linear``) and ``_sample_sites(out, mask, labels, num_data)``.
    """

    def _init_common(self, encoding, dropout, bayesian_last_layer, prior_scale, num_data):
        dropout = check_probability("dropout", dropout, high_open=True)
        prior_scale = check_real("prior_scale", prior_scale, 0.0, low_open=True)
        self.encoding, table = _encoding_table(encoding)
        self.register_buffer("encoding_table", table)  # [num_tokens, F], not trained
        self.dropout_p = float(dropout)
        self.bayesian_last_layer = bool(bayesian_last_layer)
        self.prior_scale = float(prior_scale)
        if num_data is not None:
            _check_num_data(num_data, 1)
        self.num_data = num_data

    @property
    def input_dim(self):
        """Features per residue of the encoding."""
        return int(self.encoding_table.shape[1])

    def _encoding_config(self):
        return self.encoding if self.encoding is not None else self.encoding_table.tolist()

    def check(self, tokens, mask=None):
        """Validate inputs (:func:`check_proteins`); returns ``(tokens, mask, lengths)``."""
        return check_proteins(tokens, mask, like=module_tensor(self))

    def encode(self, tokens, mask):
        """Encoding rows of ``tokens`` with zeros at padding: ``[batch, length, F]``."""
        table = torch.nn.Module.__getattr__(self, "encoding_table")
        x = F.embedding(tokens, table)  # [batch, length, F]
        return x * mask.unsqueeze(-1).to(x.dtype)

    # ----- the output layer -----
    def output_shapes(self):
        """``(weight shape, bias shape)`` of the output layer."""
        out = torch.nn.Module.__getattr__(self, "out")
        return tuple(out.weight.shape), tuple(out.bias.shape)

    def output_weights(self):
        """
        The output layer's ``(weight, bias)``: the deterministic layer's parameters, or (with
        ``bayesian_last_layer``) Pyro samples ``"out.weight"`` and ``"out.bias"`` from the prior
        :math:`\\mathcal{N}(0, \\sigma_p^2)`, drawn once per call, outside the data plate.
        """
        if not self.bayesian_last_layer:
            return self.out.weight, self.out.bias  # pyro.module registration of self.out
        like = module_tensor(self)
        w_shape, b_shape = self.output_shapes()
        zero = like.new_zeros(())
        weight = pyro.sample("out.weight", dist.Normal(zero, self.prior_scale).expand(w_shape).to_event(2))
        bias = pyro.sample("out.bias", dist.Normal(zero, self.prior_scale).expand(b_shape).to_event(1))
        return weight, bias

    def plate(self, batch, num_data):
        """
        The data plate ``"proteins"``: with ``num_data`` (else the model's ``num_data``
        attribute) the batch is a subsample of ``num_data`` proteins, and Pyro scales the
        likelihood by ``num_data / batch``.
        """
        num_data = _check_num_data(self.num_data if num_data is None else num_data, batch)
        device = module_tensor(self).device
        return pyro.plate("proteins", num_data, subsample=torch.arange(batch, device=device), dim=-1)

    # ----- prediction -----
    @contextlib.contextmanager
    def _dropout_mode(self, mc_dropout):
        """Eval mode, with only the dropout layers on when ``mc_dropout``; modes restored after."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        if mc_dropout:
            for m in self.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
        try:
            yield
        finally:
            for m, mode in modes:
                m.training = mode

    def _head_samples(self, guide, num_samples):
        """``num_samples`` ``(weight, bias)`` pairs: the deterministic layer's, or draws from ``guide``."""
        if not self.bayesian_last_layer:
            if guide is not None:
                raise ValueError(
                    "guide is only used with bayesian_last_layer=True; this model's output layer is deterministic"
                )
            out = torch.nn.Module.__getattr__(self, "out")
            return [(out.weight, out.bias)] * num_samples
        if guide is None:
            raise ValueError(
                "a model with bayesian_last_layer=True needs its guide to predict: "
                "model.predict(tokens, mask, guide=guide, num_samples=S)"
            )
        if getattr(guide, "model", None) is not self:
            raise ValueError("guide was built for another model: pass the LastLayerGuide of this model")
        weights, biases = guide.sample_weights(num_samples)  # [S, ...], [S, ...]
        return list(zip(weights.unbind(0), biases.unbind(0)))

    def _predict_outputs(self, tokens, mask, num_samples, mc_dropout, guide, link):
        """Mean over samples of ``link(out)``, ``out`` the output layer's value ``[..., out_dim]``."""
        num_samples = _check_num_samples(num_samples)
        tokens, mask, lengths = self.check(tokens, mask)
        stochastic = mc_dropout or self.bayesian_last_layer
        heads = self._head_samples(guide, num_samples if stochastic else 1)
        total = 0.0
        with torch.no_grad(), self._dropout_mode(mc_dropout):
            h = None
            for weight, bias in heads:
                if h is None or mc_dropout:  # fresh dropout masks per pass
                    h = self.body(tokens, mask, lengths)
                total = total + link(F.linear(h, weight, bias))
        return total / len(heads), mask


class ProteinLocalizer(_ProteinModel):
    r"""
    Subcellular localisation of proteins from their sequence (Sønderby et al. 2015; DeepLoc,
    Almagro Armenteros et al. 2017): a convolutional and bidirectional-LSTM encoder with
    attention over residues, and a categorical over ``num_classes`` locations:

    .. math::

        x_t &= E[a_t] \quad \text{(fixed one-hot or BLOSUM62 rows)}, \\
        c_t &= \bigl[\operatorname{ReLU}(W_k * x)_t\bigr]_{k \in (1, 3, 5, 9, 15, 21)}, \\
        h_t &= [\overrightarrow{h}_t; \overleftarrow{h}_t] = \operatorname{BLSTM}(\operatorname{dropout}(c))_t, \\
        \alpha_t &= \frac{\exp(v^\top \tanh(W h_t + b))}{\sum_{s \le L} \exp(v^\top \tanh(W h_s + b))},
            \qquad \bar h = \sum_{t \le L} \alpha_t h_t, \\
        d &= \operatorname{dropout}(\operatorname{ReLU}(W_d \bar h + b_d)), \\
        y &\sim \operatorname{Cat}(\operatorname{softmax}(W_o d + b_o)),

    and, with ``membrane_head``, a membrane-bound (1) / soluble (0) label
    :math:`m \sim \operatorname{Bernoulli}(\operatorname{sigmoid}(w_m^\top d + b_m))`.
    The location logits and the membrane logit are the rows of one output layer ``out``
    (``[num_classes + membrane_head, dense]``), so that a Bayesian last layer covers both.

    Padding never changes a prediction: the encoding and the convolution features are zeroed
    at padding (the convolutions of the last residues then see the same zeros as at the end
    of an unpadded protein), the BLSTM runs on packed sequences, and padding gets attention
    weight exactly 0 (score :math:`-\infty`).

    **Pyro sites** (``max_plate_nesting=1``): in a plate ``"proteins"``, ``"y"``
    (``Categorical``, ``[batch]``, masked to the rows whose label is not -1) and, with ``membrane_head``, ``"membrane"``
    (``Bernoulli``, ``[batch]``, masked to the rows whose membrane label is 0 or 1; with
    ``membrane=None`` the site is left out: no latent site for the guide to cover).
    With ``bayesian_last_layer``, ``"out.weight"`` and ``"out.bias"`` with prior
    :math:`\mathcal{N}(0, \sigma_p^2)`, sampled once per call outside the plate (see
    :class:`~pyro_seq.contrib.protein.LastLayerGuide`). With ``num_data`` the plate is
    ``pyro.plate("proteins", num_data, subsample=arange(batch))``: the likelihood is scaled by
    ``num_data / batch``, so the ELBO estimates the full-data ELBO, whose KL term is counted
    once (equivalently, relative to the likelihood of the batch, the KL is scaled by
    ``batch / num_data``).

    :param encoding: ``"onehot"`` or ``"blosum62"`` (:func:`pyro_seq.contrib.protein.data.encoding_matrix`),
        or a ``[22, F]`` tensor (or nested list, as in :attr:`config`).
    :param int num_classes: number of locations (10 in DeepLoc).
    :param widths: convolution kernel widths.
    :param int filters: filters per width.
    :param int hidden: LSTM units per direction.
    :param int attention_dim: width of the attention's hidden layer.
    :param int dense: width of the dense layer.
    :param float dropout: dropout rate after the convolutions and after the dense layer.
    :param bool membrane_head: also model the membrane-bound/soluble label.
    :param bool bayesian_last_layer: make ``out`` a pair of Pyro sample sites.
    :param float prior_scale: prior standard deviation :math:`\sigma_p` of those weights.
    :param int num_data: default ``num_data`` of :meth:`forward` (for callers, such as the
        :class:`~pyro_seq.training.trainer.Trainer`, that pass only ``batch.args``).

    **References**

    [1] Søren Kaae Sønderby, Casper Kaae Sønderby, Henrik Nielsen, Ole Winther,
        "Convolutional LSTM Networks for Subcellular Localization of Proteins", AlCoB 2015,
        arXiv:1503.01919.
    [2] José Juan Almagro Armenteros, Casper Kaae Sønderby, Søren Kaae Sønderby, Henrik
        Nielsen, Ole Winther, "DeepLoc: prediction of protein subcellular localization using
        deep learning", Bioinformatics 33(21), 2017.
    [3] Yarin Gal, Zoubin Ghahramani, "Dropout as a Bayesian Approximation: Representing
        Model Uncertainty in Deep Learning", ICML 2016, arXiv:1506.02142.
    """

    def __init__(
        self,
        encoding="onehot",
        num_classes=10,
        widths=LOCALIZER_WIDTHS,
        filters=20,
        hidden=64,
        attention_dim=64,
        dense=64,
        dropout=0.25,
        membrane_head=False,
        bayesian_last_layer=False,
        prior_scale=1.0,
        num_data=None,
    ):
        widths = _check_sizes(num_classes, widths, filters=filters, hidden=hidden, attention_dim=attention_dim, dense=dense)
        super().__init__()
        self._init_common(encoding, dropout, bayesian_last_layer, prior_scale, num_data)
        self.num_classes, self.widths, self.filters = int(num_classes), widths, int(filters)
        self.hidden, self.attention_dim, self.dense_dim = int(hidden), int(attention_dim), int(dense)
        self.membrane_head = bool(membrane_head)
        self.conv = ConvBank(self.input_dim, widths, self.filters)
        self.drop = nn.Dropout(self.dropout_p)
        self.lstm = nn.LSTM(self.conv.out_dim, self.hidden, batch_first=True, bidirectional=True)
        self.attn_hidden = nn.Linear(2 * self.hidden, self.attention_dim)  # W, b
        self.attn_score = nn.Linear(self.attention_dim, 1, bias=False)  # v
        self.dense = nn.Linear(2 * self.hidden, self.dense_dim)
        self.out = nn.Linear(self.dense_dim, self.num_classes + int(self.membrane_head))

    @property
    def config(self):
        """JSON-able constructor arguments."""
        return dict(
            encoding=self._encoding_config(),
            num_classes=self.num_classes,
            widths=list(self.widths),
            filters=self.filters,
            hidden=self.hidden,
            attention_dim=self.attention_dim,
            dense=self.dense_dim,
            dropout=self.dropout_p,
            membrane_head=self.membrane_head,
            bayesian_last_layer=self.bayesian_last_layer,
            prior_scale=self.prior_scale,
            num_data=self.num_data,
        )

    def check_labels(self, y, membrane, batch):
        """``y [batch]`` in ``-1 .. num_classes - 1`` and ``membrane [batch]`` in ``{-1, 0, 1}`` (or ``None``)."""
        y = _check_int_labels(
            y, (batch,), -1, self.num_classes - 1, "y", "location class indices", " (-1: no single class)"
        )
        if membrane is not None and not self.membrane_head:
            raise ValueError("membrane labels were given but the model has no membrane head (membrane_head=False)")
        membrane = _check_int_labels(
            membrane, (batch,), -1, 1, "membrane", "labels", " (1 membrane, 0 soluble, -1 unknown)"
        )
        return y, membrane

    def encoder(self, tokens, mask, lengths):
        """Per-residue BLSTM states ``[batch, length, 2 * hidden]`` (zeros at padding)."""
        x = self.encode(tokens, mask)  # [batch, length, F]
        c = self.drop(self.conv(x, mask))  # [batch, length, filters * widths]
        return packed_lstm(self.lstm, c, lengths)  # [batch, length, 2 * hidden]

    def attention_weights(self, h, mask):
        r"""Masked softmax of :math:`v^\top \tanh(W h_t + b)` over residues: ``[batch, length]``."""
        score = self.attn_score(torch.tanh(self.attn_hidden(h))).squeeze(-1)  # [batch, length]
        return score.masked_fill(~mask, float("-inf")).softmax(-1)  # [batch, length], 0 at padding

    def body(self, tokens, mask, lengths):
        """The features below the output layer, ``[batch, dense]``."""
        h = self.encoder(tokens, mask, lengths)  # [batch, length, 2 * hidden]
        alpha = self.attention_weights(h, mask)  # [batch, length]
        context = torch.einsum("bl,bld->bd", alpha, h)  # [batch, 2 * hidden]
        return self.drop(F.relu(self.dense(context)))  # [batch, dense]

    def forward(self, tokens, mask=None, y=None, membrane=None, num_data=None):
        """
        :param torch.Tensor tokens: ``[batch, length]`` int64 token ids.
        :param torch.Tensor mask: ``[batch, length]`` bool prefix mask (``None``: ``tokens != PAD``).
        :param torch.Tensor y: ``[batch]`` location indices, -1 for proteins without a single
            class (not observed), or ``None`` to sample them.
        :param torch.Tensor membrane: ``[batch]`` membrane labels (1 membrane, 0 soluble,
            -1 unknown: not observed), or ``None`` (all unknown).
        :param int num_data: size of the training set the batch is drawn from (likelihood
            scaled by ``num_data / batch``); ``None``: the model's ``num_data``, and if that is
            ``None`` too, the batch is the data.
        :returns: location logits ``[batch, num_classes]``.
        """
        tokens, mask, lengths = self.check(tokens, mask)  # [batch, length] x 2, [batch]
        batch = tokens.size(0)
        y, membrane = self.check_labels(y, membrane, batch)
        weight, bias = self.output_weights()  # outside the plate: once per call
        out = F.linear(self.body(tokens, mask, lengths), weight, bias)  # [batch, num_classes (+1)]
        logits = out[..., : self.num_classes]  # [batch, num_classes]
        with self.plate(batch, num_data):
            if y is None:
                pyro.sample("y", dist.Categorical(logits=logits))
            else:  # -1 (no single class): not observed
                pyro.sample("y", dist.Categorical(logits=logits).mask(y >= 0), obs=y.clamp_min(0))
            if self.membrane_head and membrane is not None:
                m_logit = out[..., self.num_classes]  # [batch]
                pyro.sample(
                    "membrane",
                    dist.Bernoulli(logits=m_logit).mask(membrane >= 0),  # -1: not observed
                    obs=membrane.clamp_min(0).to(m_logit.dtype),
                )
        return logits

    def predict(self, tokens, mask=None, num_samples=1, mc_dropout=False, guide=None, return_membrane=False):
        r"""
        Location probabilities, averaged over ``num_samples`` stochastic passes:

        .. math::

            p(y \mid x) \approx \frac1S \sum_{s=1}^S \operatorname{softmax}(W_s d_s + b_s),

        with fresh dropout masks :math:`d_s` per pass when ``mc_dropout`` (MC dropout; only
        the dropout layers are switched on, each protein gets its own masks) and weights
        :math:`(W_s, b_s) \sim q` from ``guide`` with a Bayesian last layer. Otherwise dropout
        is off and one deterministic pass is made. Module modes are restored afterwards.

        :param guide: the :class:`~pyro_seq.contrib.protein.LastLayerGuide` of this model (required
            with ``bayesian_last_layer``, refused otherwise).
        :param bool return_membrane: also return the mean membrane probability ``[batch]``.
        :returns: ``probs [batch, num_classes]`` (rows sum to 1), or ``(probs, p_membrane)``.
        """
        if return_membrane and not self.membrane_head:
            raise ValueError("return_membrane=True needs a model with membrane_head=True")
        K = self.num_classes

        def link(out):  # [batch, K (+1)] -> location probabilities (and membrane probability)
            probs = out[..., :K].softmax(-1)
            return torch.cat([probs, torch.sigmoid(out[..., K:])], -1) if self.membrane_head else probs

        mean, _ = self._predict_outputs(tokens, mask, num_samples, mc_dropout, guide, link)
        if return_membrane:
            return mean[..., :K], mean[..., K]
        return mean[..., :K]

    def attention(self, tokens, mask=None):
        """
        Attention weights over residues in eval mode (dropout off): ``[batch, length]``, zero at
        padding, each row summing to 1.
        """
        tokens, mask, lengths = self.check(tokens, mask)
        with torch.no_grad(), self._dropout_mode(False):
            return self.attention_weights(self.encoder(tokens, mask, lengths), mask)


class SecondaryStructureBLSTM(_ProteinModel):
    r"""
    Per-residue 8-state secondary structure (Q8) from the sequence, after Sønderby & Winther
    (2014): convolution features, two bidirectional LSTM layers with a feed-forward layer
    between them, and a per-residue categorical:

    .. math::

        x_t &= E[a_t], \qquad c_t = \bigl[x_t;\ \operatorname{ReLU}(W_k * x)_t\bigr]_{k \in (3, 9, 15)}, \\
        h^{(1)} &= \operatorname{BLSTM}_1(\operatorname{dropout}(c)), \qquad
            f_t = \operatorname{dropout}(\operatorname{ReLU}(W_f h^{(1)}_t + b_f)), \\
        h^{(2)} &= \operatorname{BLSTM}_2(f), \qquad
            d_t = \operatorname{dropout}(\operatorname{ReLU}(W_d h^{(2)}_t + b_d)), \\
        y_t &\sim \operatorname{Cat}(\operatorname{softmax}(W_o d_t + b_o)), \quad t \le L.

    Both BLSTMs run on packed sequences and every per-residue feature is zeroed at padding, so
    a protein's probabilities do not depend on the padding of its batch. The classes are the
    DSSP states in :data:`pyro_seq.contrib.protein.data.SS8` order (``"GHIBESTC"``);
    :func:`q8_probs_to_q3` merges predicted probabilities into ``H, E, C``.

    **Pyro sites** (``max_plate_nesting=1``): a plate ``"proteins"`` over the batch and one
    site ``"y"`` per protein: a per-residue ``Categorical`` ``[batch, length]`` made an event
    with ``.to_event(1)``, masked by ``mask & (y >= 0)`` (unlabelled residues and padding
    add nothing; the observed value is ``y`` with -1 replaced by 0). A plate over proteins
    (rather than over the flattened residues) keeps data subsampling per protein: with
    ``num_data`` (proteins in the training set) the likelihood is scaled by
    ``num_data / batch``. With ``y=None`` the site is sampled, masked by ``mask``. The
    Bayesian last layer (``"out.weight"``, ``"out.bias"``) is as in :class:`ProteinLocalizer`.

    :param encoding: ``"onehot"``, ``"blosum62"`` or a ``[22, F]`` tensor.
    :param int num_classes: number of states (8).
    :param widths: convolution kernel widths.
    :param int filters: filters per width.
    :param int hidden: units per direction of each LSTM.
    :param int ff_dim: width of the feed-forward layer between the LSTMs.
    :param int dense: width of the per-residue dense layer before the output.
    :param float dropout: dropout rate (before the first LSTM, in the feed-forward and the
        dense layer).
    :param bool bayesian_last_layer: make the output layer a pair of Pyro sample sites.
    :param float prior_scale: their prior standard deviation.
    :param int num_data: default ``num_data`` of :meth:`forward`.

    **References**

    [1] Søren Kaae Sønderby, Ole Winther, "Protein Secondary Structure Prediction with Long
        Short Term Memory Networks", arXiv:1412.7828, 2014.
    [2] Jian Zhou, Olga G. Troyanskaya, "Deep Supervised and Convolutional Generative
        Stochastic Network for Protein Secondary Structure Prediction", ICML 2014,
        arXiv:1403.1347.
    """

    def __init__(
        self,
        encoding="onehot",
        num_classes=8,
        widths=SS_WIDTHS,
        filters=16,
        hidden=64,
        ff_dim=64,
        dense=64,
        dropout=0.25,
        bayesian_last_layer=False,
        prior_scale=1.0,
        num_data=None,
    ):
        widths = _check_sizes(num_classes, widths, filters=filters, hidden=hidden, ff_dim=ff_dim, dense=dense)
        super().__init__()
        self._init_common(encoding, dropout, bayesian_last_layer, prior_scale, num_data)
        self.num_classes, self.widths, self.filters = int(num_classes), widths, int(filters)
        self.hidden, self.ff_dim, self.dense_dim = int(hidden), int(ff_dim), int(dense)
        self.conv = ConvBank(self.input_dim, widths, self.filters)
        self.drop = nn.Dropout(self.dropout_p)
        self.lstm1 = nn.LSTM(self.input_dim + self.conv.out_dim, self.hidden, batch_first=True, bidirectional=True)
        self.ff = nn.Linear(2 * self.hidden, self.ff_dim)
        self.lstm2 = nn.LSTM(self.ff_dim, self.hidden, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * self.hidden, self.dense_dim)
        self.out = nn.Linear(self.dense_dim, self.num_classes)

    @property
    def config(self):
        """JSON-able constructor arguments."""
        return dict(
            encoding=self._encoding_config(),
            num_classes=self.num_classes,
            widths=list(self.widths),
            filters=self.filters,
            hidden=self.hidden,
            ff_dim=self.ff_dim,
            dense=self.dense_dim,
            dropout=self.dropout_p,
            bayesian_last_layer=self.bayesian_last_layer,
            prior_scale=self.prior_scale,
            num_data=self.num_data,
        )

    def check_labels(self, y, shape):
        """``y [batch, length]`` in ``-1 .. num_classes - 1`` (-1: unlabelled), or ``None``."""
        return _check_int_labels(
            y, shape, -1, self.num_classes - 1, "y", "per-residue class indices", " (-1: unlabelled)"
        )

    def body(self, tokens, mask, lengths):
        """Per-residue features below the output layer, ``[batch, length, dense]`` (zeros at padding)."""
        keep = mask.unsqueeze(-1)  # [batch, length, 1]
        x = self.encode(tokens, mask)  # [batch, length, F]
        c = self.drop(torch.cat([x, self.conv(x, mask)], -1))  # [batch, length, F + filters * widths]
        h = packed_lstm(self.lstm1, c, lengths)  # [batch, length, 2 * hidden]
        f = self.drop(F.relu(self.ff(h))) * keep.to(h.dtype)  # [batch, length, ff_dim]
        h = packed_lstm(self.lstm2, f, lengths)  # [batch, length, 2 * hidden]
        return self.drop(F.relu(self.dense(h))) * keep.to(h.dtype)  # [batch, length, dense]

    def forward(self, tokens, mask=None, y=None, num_data=None):
        """
        :param torch.Tensor tokens: ``[batch, length]`` int64 token ids.
        :param torch.Tensor mask: ``[batch, length]`` bool prefix mask (``None``: ``tokens != PAD``).
        :param torch.Tensor y: ``[batch, length]`` class indices, -1 where unlabelled (labels
            at padding positions are ignored), or ``None`` to sample them.
        :param int num_data: number of proteins in the training set (see the class docstring).
        :returns: logits ``[batch, length, num_classes]``.
        """
        tokens, mask, lengths = self.check(tokens, mask)
        y = self.check_labels(y, tokens.shape)
        weight, bias = self.output_weights()  # outside the plate: once per call
        logits = F.linear(self.body(tokens, mask, lengths), weight, bias)  # [batch, length, num_classes]
        with self.plate(tokens.size(0), num_data):
            if y is None:
                pyro.sample("y", dist.Categorical(logits=logits).mask(mask).to_event(1))
            else:
                observed = mask & (y >= 0)  # [batch, length]
                pyro.sample("y", dist.Categorical(logits=logits).mask(observed).to_event(1), obs=y.clamp_min(0))
        return logits

    def predict(self, tokens, mask=None, num_samples=1, mc_dropout=False, guide=None):
        """
        Per-residue class probabilities ``[batch, length, num_classes]``, averaged as in
        :meth:`ProteinLocalizer.predict`; rows at padding positions are all zero.
        """
        mean, mask = self._predict_outputs(tokens, mask, num_samples, mc_dropout, guide, lambda out: out.softmax(-1))
        return mean * mask.unsqueeze(-1).to(mean.dtype)


def q8_merge_matrix(order=None, dtype=torch.float32, device=None):
    """
    The ``[8, 3]`` 0/1 matrix merging 8-state into 3-state secondary structure, columns
    ``H, E, C``: H, G, I -> H (helices); E, B -> E (strands, bridges); the rest (S, T, C or
    L, coil) -> C.

    :param str order: the 8 state letters in class order; default
        :data:`pyro_seq.contrib.protein.data.SS8` (``"GHIBESTC"``), merged with
        :func:`pyro_seq.contrib.protein.data.q8_to_q3` into :data:`~pyro_seq.contrib.protein.data.SS3`
        (``"HEC"``) order.
    """
    if order is None:
        from pyro_seq.contrib.protein.data import SS3, SS8, q8_to_q3

        if SS3 != "HEC" or len(SS8) != 8:  # pragma: no cover - guards the documented order
            raise ValueError(f"expected SS3 = 'HEC' and 8 states in SS8, got {SS3!r} and {SS8!r}")
        target = q8_to_q3(torch.arange(8)).tolist()  # [8] SS3 ids
    else:
        order = str(order).upper()
        if len(order) != 8 or len(set(order)) != 8 or not set(order) <= set("GHIBESTCL"):
            raise ValueError(
                f"order must be 8 distinct secondary-structure letters (DSSP, C or L for coil), got {order!r}"
            )
        target = [0 if state in "HGI" else 1 if state in "EB" else 2 for state in order]
    merge = torch.zeros(8, 3, dtype=dtype, device=device)
    merge[torch.arange(8), torch.tensor(target)] = 1
    return merge


def q8_probs_to_q3(probs, order=None):
    """
    Sum 8-state probabilities ``[..., 8]`` into 3-state ones ``[..., 3]`` (``H, E, C``; see
    :func:`q8_merge_matrix` for the merge and the class order).
    """
    if not torch.is_tensor(probs) or not probs.is_floating_point() or probs.dim() < 1 or probs.shape[-1] != 8:
        shape = tuple(probs.shape) if torch.is_tensor(probs) else type(probs).__name__
        raise ValueError(f"probs must be a floating point tensor [..., 8] of Q8 probabilities, got {shape}")
    return probs @ q8_merge_matrix(order, dtype=probs.dtype, device=probs.device)
