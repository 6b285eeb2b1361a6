"""
Helpers shared by the diagnostics modules: batches, eval mode, traces, site reading.

Nothing here imports ArviZ or matplotlib.
"""

from contextlib import contextmanager

import pyro.poutine as poutine
import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from torch.distributions import Independent


def batch_tensors(batch):
    """
    ``(x, mask)`` of a batch: a :class:`~pyro_seq.data.SequenceBatch` or any tuple
    ``(x, mask, ...)`` (as :func:`pyro_seq.bounds.evaluate` accepts). A missing
    mask (``None``) becomes all True.

    :returns: ``x [batch, time, x_dim]``, bool ``mask [batch, time]``.
    """
    x, mask = batch[0], batch[1]
    if not torch.is_tensor(x) or x.dim() != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"a batch's x must be a [batch, time, x_dim] tensor, got {shape}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)  # [batch, time]
    if mask.shape != x.shape[:2]:
        raise ValueError(
            f"a batch's mask must have shape [batch, time] = {tuple(x.shape[:2])}, "
            f"got {tuple(mask.shape)}"
        )
    return x, mask.bool()


@contextmanager
def eval_mode(*modules):
    """
    Put ``modules`` in eval mode (no dropout) and restore their modes on exit;
    arguments that are not :class:`torch.nn.Module` (plain model functions) are left alone.
    """
    modules = [m for m in modules if isinstance(m, torch.nn.Module)]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)


@torch.no_grad()
def trace_pair(model, guide, x, mask):
    """
    Run the guide and replay the model on its sample, as Pyro's ELBOs do.

    :returns: ``(guide_trace, model_trace)``.
    """
    guide_trace = poutine.trace(guide).get_trace(x, mask)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, mask)
    return guide_trace, model_trace


def base_distribution(fn):
    """Strip :class:`~torch.distributions.Independent` and masking wrappers off a site's ``fn``."""
    while isinstance(fn, (Independent, MaskedDistribution)):
        fn = fn.base_dist
    return fn


def step_site_names(trace, name, num_steps):
    """
    The per-step site names ``name_1 .. name_T`` of a trace, checked to exist.

    :raises ValueError: naming the sites the trace does hold.
    """
    names = [f"{name}_{t + 1}" for t in range(num_steps)]
    missing = [n for n in names if n not in trace.nodes]
    if missing:
        sites = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
        raise ValueError(
            f"expected a sample site {name!r} or per-step sites {names[0]!r}..{names[-1]!r}; "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}; the trace holds {sites}"
        )
    return names


def pad_rows(rows, width, fill=float("nan")):
    """
    Stack 1-D+ tensors of different lengths along a new first dim, padding dim 0 of
    each row to ``width`` with ``fill``.

    :param rows: list of tensors ``[T_i, ...]`` (same trailing shape).
    :returns: ``[len(rows), width, ...]``
    """
    if not rows:
        raise ValueError("pad_rows needs at least one row")
    trailing = rows[0].shape[1:]
    out = torch.full((len(rows), width) + tuple(trailing), fill, dtype=torch.float64)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r.to(torch.float64)
    return out
