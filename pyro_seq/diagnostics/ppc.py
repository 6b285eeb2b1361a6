r"""
Predictive draws and music statistics for posterior predictive checks.

Two sources of draws with the observed frame layout (same sequences, same
lengths):

- ``"posterior"``: :math:`\tilde x \sim p(x \mid z, x_{<t})` with
  :math:`z \sim q(z \mid x)`: the guide is run, the model is replayed on its
  sample and its emission site (``"x"``, or ``"x_1" .. "x_T"``) is *sampled*
  instead of scored. In an autoregressive model such as SRNN the emission at
  :math:`t` also depends on the *observed* past through :math:`d_t`, so these
  are one-step-ahead draws given the observed past and the posterior path.
- ``"generate"``: free-running samples ``model.generate(n, T)`` (prior
  predictive), cut to the observed lengths.

Statistics of binary piano rolls ``[..., T, 88]`` (values >= 0.5 sound):

- notes per frame: number of sounding pitches in each real frame;
- note durations: lengths of the runs of 1s of each pitch within each sequence.

Nothing here imports ArviZ.
"""

from dataclasses import dataclass

import numpy as np
import torch

from pyro_seq.diagnostics._common import (
    batch_tensors,
    eval_mode,
    step_site_names,
    trace_pair,
)
from pyro_seq.diagnostics.latents import latent_path

__all__ = [
    "MusicStatistics",
    "SOURCES",
    "emission_draw",
    "generated_draws",
    "music_statistics",
    "note_durations",
    "notes_per_frame",
    "posterior_draws",
    "posterior_predictive",
    "quantile_match",
]

SOURCES = ("posterior", "generate")


def emission_draw(model_trace, mask, site="x"):
    """
    One draw from the emission distribution(s) recorded in a model trace.

    :param model_trace: a trace of the model (replayed on a guide sample).
    :param torch.Tensor mask: ``[batch, T]`` bool; padded steps are set to 0.
    :param str site: the observation site (``"x"`` or the stem of ``"x_1" .. "x_T"``).
    :returns: ``[batch, T, x_dim]``
    """
    if site in model_trace.nodes:
        draw = model_trace.nodes[site]["fn"].sample()  # [batch, T, x_dim]
    else:
        names = step_site_names(model_trace, site, mask.shape[1])
        draw = torch.stack([model_trace.nodes[n]["fn"].sample() for n in names], dim=1)
    if draw.shape[:2] != mask.shape:
        raise ValueError(
            f"site {site!r} draws have shape {tuple(draw.shape)}; expected [batch, T, x_dim] "
            f"with [batch, T] = {tuple(mask.shape)}"
        )
    return draw * mask.unsqueeze(-1)  # [batch, T, x_dim]


@torch.no_grad()
def posterior_draws(
    model, guide, x, mask, num_draws=1, latent_site="z", obs_site="x", chunk_size=None
):
    """
    ``num_draws`` guide samples of a batch and, for each, one draw of the model's
    emission along it (see the module docstring); drawn ``chunk_size`` at a time
    by repeating the batch.

    :param torch.Tensor x: ``[batch, T, x_dim]``
    :param torch.Tensor mask: ``[batch, T]`` bool
    :returns: ``(z, x_draws)``: ``[num_draws, batch, T, z_dim]`` and
        ``[num_draws, batch, T, x_dim]`` (zero on padded steps); draw ``k`` of
        ``x_draws`` was emitted along draw ``k`` of ``z``.
    """
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    batch, time = mask.shape
    if chunk_size is None:
        chunk_size = max(1, min(num_draws, (1 << 16) // (batch * time)))
    zs, xs, done = [], [], 0
    while done < num_draws:
        k = min(chunk_size, num_draws - done)
        xk, mk = x.repeat(k, 1, 1), mask.repeat(k, 1)  # [k * batch, T, x_dim], [k * batch, T]
        guide_trace, model_trace = trace_pair(model, guide, xk, mk)
        z = latent_path(guide_trace, time, latent_site)  # [k * batch, T, z_dim]
        zs.append(z.reshape(k, batch, time, -1))
        xs.append(emission_draw(model_trace, mk, obs_site).reshape(k, batch, time, -1))
        done += k
    return torch.cat(zs, dim=0), torch.cat(xs, dim=0)


def posterior_predictive(model, guide, x, mask, num_draws=1, site="x", chunk_size=None):
    """
    ``num_draws`` posterior predictive draws of a batch, one guide sample each
    (the ``x`` half of :func:`posterior_draws`, for any latent site names).

    :returns: ``[num_draws, batch, T, x_dim]``, zero on padded steps.
    """
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    batch, time = mask.shape
    if chunk_size is None:
        chunk_size = max(1, min(num_draws, (1 << 16) // (batch * time)))
    draws, done = [], 0
    with torch.no_grad():
        while done < num_draws:
            k = min(chunk_size, num_draws - done)
            xk, mk = x.repeat(k, 1, 1), mask.repeat(k, 1)  # [k * batch, T, x_dim], [k * batch, T]
            _, model_trace = trace_pair(model, guide, xk, mk)
            draws.append(emission_draw(model_trace, mk, site).reshape(k, batch, time, -1))
            done += k
    return torch.cat(draws, dim=0)  # [num_draws, batch, T, x_dim]


@torch.no_grad()
def generated_draws(model, mask, num_draws=1):
    """
    Free-running samples ``model.generate`` with the layout of a batch.

    :param torch.Tensor mask: ``[batch, T]`` bool; steps beyond each length are set to 0.
    :returns: ``[num_draws, batch, T, x_dim]``
    """
    if not callable(getattr(model, "generate", None)):
        raise TypeError(f"{type(model).__name__} has no generate(num_sequences, num_steps) method")
    batch, time = mask.shape
    x = model.generate(num_draws * batch, time)  # [num_draws * batch, T, x_dim]
    x = x.reshape(num_draws, batch, time, -1).to(mask.device)  # [num_draws, batch, T, x_dim]
    return x * mask.unsqueeze(-1)


def _binary(x):
    return x.detach() >= 0.5


def notes_per_frame(x, mask):
    """
    Sounding notes in each real frame.

    :param torch.Tensor x: ``[..., batch, T, pitches]`` piano rolls.
    :param torch.Tensor mask: ``[batch, T]`` bool
    :returns: int64 numpy array ``[..., frames]`` (real frames in row-major (b, t) order).
    """
    counts = _binary(x).sum(-1)  # [..., batch, T]
    return counts[..., mask].cpu().numpy().astype(np.int64)  # [..., frames]


def note_durations(x, mask):
    """
    Lengths of the runs of 1s of each pitch within each sequence's real frames.

    :param torch.Tensor x: ``[batch, T, pitches]`` piano rolls.
    :param torch.Tensor mask: ``[batch, T]`` bool
    :returns: int64 numpy array ``[notes]`` (ordered by sequence, pitch, onset).
    """
    on = (_binary(x) & mask.unsqueeze(-1)).cpu().numpy().astype(np.int8)  # [batch, T, P]
    batch, time, pitches = on.shape
    padded = np.zeros((batch, pitches, time + 2), dtype=np.int8)  # [batch, P, T + 2]
    padded[:, :, 1:-1] = on.transpose(0, 2, 1)
    change = np.diff(padded, axis=-1)  # [batch, P, T + 1]: +1 onset, -1 release
    # np.nonzero walks (b, p, t) in order, so the k-th onset and the k-th release pair up
    onsets = np.nonzero(change == 1)[-1]
    releases = np.nonzero(change == -1)[-1]
    return (releases - onsets).astype(np.int64)  # [notes]


def quantile_match(values, size):
    """
    ``size`` empirical quantiles of ``values`` at levels :math:`(j + 1/2) / size`
    (``inverted_cdf``, so they are values of the sample): a sample of fixed size with
    (up to rounding of the levels) the same distribution. Empty input gives zeros.

    :returns: numpy array ``[size]`` of the dtype of ``values``.
    """
    values = np.asarray(values)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if values.size == 0:
        return np.zeros(size, dtype=values.dtype)
    levels = (np.arange(size) + 0.5) / size  # [size]
    return np.quantile(values, levels, method="inverted_cdf").astype(values.dtype)


@dataclass
class MusicStatistics:
    """
    Observed and predicted music statistics, aligned for a PPC.

    :ivar observed: ``{"notes_per_frame": [frames], "note_duration": [notes]}``.
    :ivar predicted: the same names, ``[draws, frames]`` and ``[draws, notes]``; each
        draw's durations are represented by ``notes`` quantiles
        (:func:`quantile_match`), since their number varies from draw to draw.
    :ivar predicted_num_notes: ``[draws]`` how many notes each draw really has.
    :ivar source: ``"posterior"`` or ``"generate"``.
    """

    observed: dict
    predicted: dict
    predicted_num_notes: np.ndarray
    source: str = "posterior"


def music_statistics(model, guide, batches, num_draws=20, source="posterior", site="x"):
    """
    Notes per frame and note durations of a split, observed vs ``num_draws`` predictive
    draws (model and guide in eval mode).

    :param batches: iterable of :class:`~pyro_seq.data.SequenceBatch` (or ``(x, mask)``).
    :param str source: ``"posterior"`` (guide + replayed emission) or ``"generate"``
        (free-running ``model.generate``); see the module docstring.
    :rtype: MusicStatistics
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    obs_npf, obs_dur = [], []
    pred_npf, pred_dur = [], [[] for _ in range(num_draws)]
    with eval_mode(model, guide), torch.no_grad():
        for batch in batches:
            x, mask = batch_tensors(batch)
            if source == "posterior":
                draws = posterior_predictive(model, guide, x, mask, num_draws, site)
            else:
                draws = generated_draws(model, mask, num_draws)  # [K, batch, T, x_dim]
            obs_npf.append(notes_per_frame(x, mask))  # [frames]
            obs_dur.append(note_durations(x, mask))  # [notes]
            pred_npf.append(notes_per_frame(draws, mask))  # [K, frames]
            for k in range(num_draws):
                pred_dur[k].append(note_durations(draws[k], mask))
    if not obs_npf:
        raise ValueError("music_statistics() got no batches")
    observed_durations = np.concatenate(obs_dur)  # [notes]
    if observed_durations.size == 0:
        raise ValueError("the observed data hold no notes; note durations are undefined")
    draws_durations = [np.concatenate(d) for d in pred_dur]
    return MusicStatistics(
        observed={
            "notes_per_frame": np.concatenate(obs_npf),
            "note_duration": observed_durations,
        },
        predicted={
            "notes_per_frame": np.concatenate(pred_npf, axis=-1),  # [K, frames]
            "note_duration": np.stack(
                [quantile_match(d, observed_durations.size) for d in draws_durations]
            ),  # [K, notes]
        },
        predicted_num_notes=np.array([d.size for d in draws_durations], dtype=np.int64),
        source=source,
    )
