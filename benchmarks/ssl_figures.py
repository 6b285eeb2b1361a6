"""
Validation error against epoch for the runs of ``benchmarks/ssl_runs.sh`` (one line per model and
label seed), as a PNG.

    python benchmarks/ssl_figures.py runs/ssl/dynamic_mnist docs/figures/ssl_mnist100_valid_error.png
"""

import json
import sys
from pathlib import Path

from pyro_seq.plotting import pyplot, save_figure

COLOURS = {"m2": "tab:grey", "adgm": "tab:blue", "sdgm": "tab:orange"}


def main(argv=None):
    root, png = (argv or sys.argv[1:])[:2]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for model, colour in COLOURS.items():
        for i, log in enumerate(sorted(Path(root).glob(f"{model}_s*/log.jsonl"))):
            rows = [json.loads(line) for line in log.read_text().splitlines() if '"event": "epoch"' in line]
            ax.plot([r["epoch"] for r in rows], [r["valid_bound"] for r in rows], color=colour, alpha=0.8,
                    label=model.upper() if i == 0 else None)
    ax.set_xlabel("epoch (pass over the unlabelled images)")
    ax.set_ylabel("validation error, % (10 samples of a)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(f"{Path(root).name}: 10 labels per class, one line per label seed")
    print(save_figure(fig, png))


if __name__ == "__main__":
    main()
