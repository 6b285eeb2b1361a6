"""
Per-layer KL per unit of two Ladder VAE runs side by side, from the JSON that
``pyro-seq evaluate --latent-health`` writes (no model is re-run).

    python benchmarks/lvae_figures.py runs/lvae/vae5_wu_bn runs/lvae/lvae5_wu_bn --out kl_per_unit.png
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pyro_seq.diagnostics import LatentHealth, plot_kl_per_unit  # noqa: E402


def healths(run):
    layers = json.loads((Path(run) / "test_iw5000.json").read_text())["layers"]
    out = {}
    for name in sorted(layers, key=lambda n: int(n.split("_")[1])):
        layer = layers[name]
        kl = np.asarray(layer["kl_per_unit"])
        out[name] = LatentHealth(
            kl_per_step=np.zeros((0, 1)), lengths=np.zeros(0), kl_per_frame=layer["kl_nats"],
            kl_per_unit=kl, posterior_mean_variance=np.asarray(layer["posterior_mean_variance"]),
            active_units=layer["active_units"],
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    columns = [healths(r) for r in args.runs]
    rows = max(len(c) for c in columns)
    fig, axes = plt.subplots(rows, len(columns), figsize=(6.0 * len(columns), 2.1 * rows), squeeze=False)
    for j, (run, layers) in enumerate(zip(args.runs, columns)):
        for i, (name, h) in enumerate(layers.items()):
            ax = axes[i, j]
            plot_kl_per_unit(h, ax=ax)
            ax.set_xlabel("")
            ax.set_ylabel("KL (nats)")
            ax.set_title(
                f"{Path(run).name} {name}: KL {h.kl_per_frame:.2f} nats, {h.informative_units} informative "
                f"(blue), {h.active_units} active of {h.kl_per_unit.size}", fontsize=8
            )
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
