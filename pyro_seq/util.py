"""Input checks shared by every pyro_seq model, guide and loss."""

import torch


def check_sequences(x, mask=None, x_dim=None, binary=False, name="x"):
    """
    Validate a padded batch of sequences and return ``(x, mask, lengths)``.

    :param torch.Tensor x: ``[batch, time, x_dim]`` floating point frames.
    :param torch.Tensor mask: optional ``[batch, time]`` bool (or 0/1) mask whose
        True entries form a prefix of each row; all True if omitted.
    :param int x_dim: expected frame size, if known.
    :param bool binary: require 0/1 values (Bernoulli likelihoods).
    :raises ValueError: naming the argument, the expected and the actual
        shape, dtype or range.
    :returns: ``x``, a bool ``mask [batch, time]`` and ``lengths [batch]``.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(
            f"{name} must have shape [batch, time, x_dim], got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {x.dtype}")
    batch, time, dim = x.shape
    if batch == 0 or time == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if x_dim is not None and dim != x_dim:
        raise ValueError(
            f"{name} has frames of size {dim} but the model expects x_dim={x_dim}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")
    if binary and not ((x == 0) | (x == 1)).all():
        raise ValueError(
            f"{name} must be binary (0/1) for a Bernoulli likelihood; "
            f"found values in [{x.min().item():g}, {x.max().item():g}]"
        )
    if mask is None:
        mask = torch.ones(batch, time, dtype=torch.bool, device=x.device)
    else:
        if not torch.is_tensor(mask) or mask.shape != (batch, time):
            shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
            raise ValueError(
                f"mask must have shape [batch, time] = {(batch, time)}, got {shape}"
            )
        if mask.dtype != torch.bool:
            if not ((mask == 0) | (mask == 1)).all():
                raise ValueError("mask must be boolean or 0/1")
            mask = mask.bool()
    lengths = mask.sum(-1)  # [batch]
    if (lengths == 0).any():
        bad = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(f"sequences {bad[:10]} have length 0 (an all-False mask row)")
    prefix = torch.arange(time, device=mask.device) < lengths.unsqueeze(-1)
    if not torch.equal(prefix, mask):
        raise ValueError(
            "mask must be a prefix mask (True for the first L_b steps of row b, "
            "then False): right-pad ragged sequences"
        )
    return x, mask, lengths


def record(name, value, event_dim=1):
    """
    Record a tensor in the enclosing Pyro trace without adding it to any bound:
    an observed, fully masked ``Delta`` site marked auxiliary (so that
    :class:`~pyro.infer.TraceMeanField_ELBO` accepts it in a guide). Used by guides
    for the Z-Forcing auxiliary terms, which losses read from the guide trace
    (``guide_trace.nodes[name]["value"]``); the value keeps its autograd graph.

    :param str name: site name.
    :param torch.Tensor value: ``[batch, ...]`` inside the batch plate.
    :param int event_dim: dims of ``value`` right of the plate dims.
    """
    import pyro
    import pyro.distributions as dist

    return pyro.sample(
        name,
        dist.Delta(value, event_dim=event_dim).mask(False),
        obs=value,
        infer={"is_auxiliary": True, "_deterministic": True},
    )


class GuideModelCache:
    r"""
    Hands a value the guide computed to the *next* model call on the same data,
    so one ELBO evaluation (guide, then the model replayed on its samples) runs
    a shared deterministic computation once: SRNN's :math:`d_{1:T}`, Z-Forcing's
    forward LSTM path, the Ladder VAE's top-down prior parameters. Sharing
    also means one dropout mask and one batch-norm update per SVI step.

    :meth:`take` returns the stored value only when it is asked for with the
    very ``x`` tensor it was stored with, the parameters of ``modules`` (the
    modules the value depends on) have not changed in place since (their
    ``_version`` counters), and the grad mode is the same; any other call gets
    ``None`` and the caller recomputes. The entry is consumed by the first
    :meth:`take`.
    """

    def __init__(self):
        self._entry = None

    @staticmethod
    def _version(modules):
        return tuple(p._version for m in modules for p in m.parameters())

    def put(self, x, value, modules):
        """Keep ``value`` (computed from ``x`` with ``modules``) for the next :meth:`take` on ``x``."""
        self._entry = (x, self._version(modules), torch.is_grad_enabled(), value)

    def take(self, x, modules):
        """The value stored for ``x`` if still valid, else ``None``."""
        entry, self._entry = self._entry, None
        if entry is None:
            return None
        cached_x, version, grad_mode, value = entry
        if cached_x is x and grad_mode == torch.is_grad_enabled() and version == self._version(modules):
            return value
        return None
