"""Figure helpers: matplotlib without a display (:func:`pyplot`, :func:`save_figure`) and pictures of
generated sequences that are not piano rolls (images drawn row by row, audio frames)."""

from pathlib import Path

import numpy as np


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path):
    """Write ``fig`` to ``path`` (parent folders made), close it and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return path


def image_grid_png(x, path, title=None, columns=8):
    """
    Save sequences of image rows (sequential MNIST: ``[n, 28, 28]``, time = image row) as a grid.

    :param x: ``[n, T, x_dim]`` array or tensor with values in [0, 1].
    :param path: output ``.png`` (parent directories are created).
    :returns: the path written.
    """
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"expected [n, T, x_dim] images, got shape {x.shape}")
    plt = pyplot()
    n = x.shape[0]
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + (0.4 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def signal_png(frames, path, title=None):
    """
    Save one sequence of real-valued frames (``[T, frame_size]``, e.g. 200-sample audio
    frames) as the concatenated signal.

    :returns: the path written.
    """
    frames = np.asarray(frames.detach().cpu() if hasattr(frames, "detach") else frames, dtype=np.float32)
    if frames.ndim != 2:
        raise ValueError(f"expected [T, frame_size] frames, got shape {frames.shape}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 2))
    ax.plot(frames.reshape(-1), linewidth=0.5)
    ax.set_xlabel("sample")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
