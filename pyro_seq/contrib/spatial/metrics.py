"""
Test figures of the digit-sequence classifiers (:mod:`pyro_seq.contrib.spatial.models`) on
cluttered MNIST: per-digit and per-sequence error, calibration and the posterior spread of
stochastic attention (:func:`digit_metrics`), glimpse pictures (:func:`glimpse_figure`,
:func:`affine_corners`) and the test record of a checkpoint (:func:`evaluate_spn`).
``pyro-seq train|evaluate rnn-spn|ffn-spn|cnn`` (:mod:`pyro_seq.contrib.spatial.recipe`), the
tutorial and ``benchmarks/spn_figures.py`` use them.

Errors: *per digit* counts every wrong digit, *per sequence* every image with at least one wrong
digit, both in %.
"""

from pathlib import Path

import numpy as np
import torch

__all__ = ["affine_corners", "digit_metrics", "evaluate_spn", "glimpse_figure", "load_split"]

_STEP_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple")


def _attention(model, guide, x):
    """``(loc, scale)`` of each step's glimpse parameters ``[batch, D, 6]`` (scale ``None`` if deterministic), or ``None`` for the CNN."""
    if model.stochastic_attention:
        return guide.attention_params(x)
    theta = model.logits(x)[1]
    return None if theta is None else (theta, None)


@torch.no_grad()
def digit_metrics(model, guide, batches, num_samples=1, num_bins=15):
    """
    Test figures of a digit-sequence classifier: per-digit and per-sequence error (%), the
    per-digit error at each position, NLL per digit, ECE (%, over digits) and, for stochastic
    attention, the mean posterior scale of each glimpse parameter.

    :param int num_samples: glimpse draws from the guide per image (stochastic attention).
    :returns: ``(metrics dict, reliability bins)``.
    """
    from pyro_seq.diagnostics.calibration import expected_calibration_error, reliability_bins

    model.eval()
    probs, labels, scales = [], [], []
    for batch in batches:
        p = model.predict(batch.x, guide=guide, num_samples=num_samples)  # [B, D, 10]
        probs.append(p.double().cpu())
        labels.append(batch.y.cpu())
        if model.stochastic_attention:
            scales.append(guide.attention_params(batch.x)[1].double().cpu())  # [B, D, 6]
    probs, labels = torch.cat(probs), torch.cat(labels)  # [N, D, 10], [N, D]
    wrong = probs.argmax(-1) != labels  # [N, D]
    flat_probs, flat_labels = probs.reshape(-1, probs.size(-1)), labels.reshape(-1)
    metrics = {
        "digit_error": 100.0 * float(wrong.double().mean()),
        "sequence_error": 100.0 * float(wrong.any(-1).double().mean()),
        "position_error": [100.0 * float(e) for e in wrong.double().mean(0)],
        "nll": float(-flat_probs.gather(-1, flat_labels[:, None]).clamp_min(1e-12).log().mean()),
        "ece": 100.0 * expected_calibration_error(flat_probs, flat_labels, num_bins),
        "num_images": int(labels.size(0)),
        "num_digits": int(labels.numel()),
    }
    if scales:
        metrics["posterior_scale"] = torch.cat(scales).mean((0, 1)).tolist()  # [6]: per affine entry
    return metrics, reliability_bins(flat_probs, flat_labels, num_bins)


def affine_corners(theta, height, width):
    """
    The input-pixel coordinates of a glimpse's four corners (the outer edges of its corner
    pixels under ``align_corners=False``): ``theta [..., 6]`` -> ``[..., 4, 2]`` as (column, row),
    in the order top-left, top-right, bottom-right, bottom-left.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64).reshape(*np.shape(theta)[:-1], 2, 3)
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]], dtype=torch.float64)
    xy = torch.einsum("...ij,kj->...ki", theta, corners)  # normalised (x, y) in [-1, 1]
    return torch.stack([(xy[..., 0] + 1) * width / 2, (xy[..., 1] + 1) * height / 2], -1)


@torch.no_grad()
def glimpse_figure(model, guide, x, y, path, title=None, num_draws=8):
    """
    Images with each step's glimpse drawn as a box (one colour per step; for stochastic
    attention also ``num_draws`` thin boxes drawn from the guide), each followed by its
    glimpses and the predicted digits.

    :param x: ``[n, 1, S, S]`` images; :param y: ``[n, D]`` labels.
    :returns: the path written.
    """
    from pyro_seq.contrib.spatial.models import IDENTITY_AFFINE
    from pyro_seq.plotting import pyplot, save_figure

    model.eval()
    plt = pyplot()
    n, d, s = x.size(0), model.num_digits, model.canvas
    attention = _attention(model, guide, x)
    loc = attention[0] if attention is not None else x.new_tensor(IDENTITY_AFFINE).expand(n, d, 6)
    scale = attention[1] if attention is not None else None
    predicted = model.predict(x, guide=guide, num_samples=0 if model.stochastic_attention else 1).argmax(-1)  # [n, D]
    g = model.num_glimpses
    glimpses = model.glimpses(x, loc[:, :g]) if g else None  # [n, G, 1, side, side]
    cols = 1 + g
    fig, axes = plt.subplots(n, cols, figsize=(2.2 + 1.2 * (cols - 1), 2.2 * n + (0.4 if title else 0)), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2] + [1.2] * (cols - 1)}, layout="constrained")
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(x[i, 0].cpu().numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        for t in range(g):  # the CNN reads the whole image: no boxes
            colour = _STEP_COLOURS[t % len(_STEP_COLOURS)]
            if scale is not None:
                for _ in range(num_draws):
                    draw = loc[i, t] + scale[i, t] * torch.randn_like(scale[i, t])
                    c = affine_corners(draw.cpu(), s, s).numpy()
                    ax.fill(c[:, 0] - 0.5, c[:, 1] - 0.5, fill=False, edgecolor=colour, linewidth=0.4, alpha=0.6)
            c = affine_corners(loc[i, t].cpu(), s, s).numpy()
            ax.fill(c[:, 0] - 0.5, c[:, 1] - 0.5, fill=False, edgecolor=colour, linewidth=1.5)
        ax.set_xlim(-0.5, s - 0.5)
        ax.set_ylim(s - 0.5, -0.5)
        ax.set_title("true " + "".join(map(str, y[i].tolist())) + "  pred " + "".join(map(str, predicted[i].tolist())), fontsize=8)
        ax.axis("off")
        for t in range(cols - 1):
            ax = axes[i, 1 + t]
            ax.imshow(glimpses[i, t, 0].cpu().numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            colour = _STEP_COLOURS[t % len(_STEP_COLOURS)]
            read = f"step {t + 1}: {int(predicted[i, t])}" if g == d else "glimpse: " + "".join(map(str, predicted[i].tolist()))
            ax.set_title(read, fontsize=8, color=colour)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def load_split(data, split, num_images, data_root=None):
    """
    ``num_images`` images of a split of the cluttered-MNIST variant that a run config's ``"data"``
    entry names (its variant, generator seed and cache folder); ``data_root`` (default: the run's)
    holds MNIST.
    """
    from pyro_seq.contrib.spatial.data import load_cluttered_mnist

    return load_cluttered_mnist(split, data["variant"], num_images, data["data_seed"], data_root or data.get("data_root"), data.get("cache_dir"))


def evaluate_spn(model, guide, state, out, num_samples=8, seed=0, device="cpu", data_root=None):
    """
    Test figures of a checkpoint on its variant's test split (``state["config"]["data"]``); the
    figures are printed. With ``out``, a reliability diagram (``out/reliability_test.png``) and a
    glimpse picture (``out/glimpses.png``) are written there.

    :param data_root: MNIST's root (default: the run's).
    :returns: the record ``{"kind", "epoch", "variant", ..., "test": metrics}``.
    """
    import pyro

    from pyro_seq.diagnostics.calibration import reliability_diagram
    from pyro_seq.contrib.spatial.data import ClutteredBatches

    data = state["config"]["data"]
    test = load_split(data, "test", data["num_test"], data_root)
    batches = [b.to(device) for b in ClutteredBatches(test, 200)]
    pyro.set_rng_seed(seed)
    metrics, bins = digit_metrics(model, guide, batches, num_samples)
    record = {"kind": state["kind"], "epoch": state.get("epoch"), "variant": data["variant"], "downsample": model.downsample,
              "stochastic_attention": model.stochastic_attention, "num_samples": num_samples if model.stochastic_attention else None,
              "test": metrics}
    name = state["kind"] + (" (stochastic attention)" if model.stochastic_attention else "")
    print(f"{name} on {data['variant']} test ({metrics['num_images']} images, epoch {state.get('epoch')}): "
          f"digit error {metrics['digit_error']:.2f}%, sequence error {metrics['sequence_error']:.2f}%, "
          f"NLL {metrics['nll']:.4f}/digit, ECE {metrics['ece']:.2f}%")
    if out is not None:
        out = Path(out)
        reliability_diagram(bins, out / "reliability_test.png", title=f"{name}, {data['variant']} test")
        x, y = batches[0].x[:6], batches[0].y[:6]
        glimpse_figure(model, guide, x, y, out / "glimpses.png", title=f"{name}, epoch {state.get('epoch')}: glimpse per step")
    return record
