"""
Samples and posterior-predictive checks of a trained music model.

For a checkpoint of ``pyro-seq train srnn|zforcing`` on a piano-roll set this writes, into
``--out``:

* ``sample_NNN.png`` / ``sample_NNN.mid``: free-running samples (``model.generate``) as piano-roll
  pictures and MIDI files;
* ``ppc.json`` / ``ppc.md`` / ``ppc.png``: notes per frame and note durations (in frames) of the
  test split against the model's draws, both free-running (``generate``: prior predictive, cut to
  the test pieces' lengths) and one-step-ahead (``posterior``: the guide's path, the emission
  sampled given the observed past), from :func:`pyro_seq.diagnostics.music_statistics`.

Usage::

    PYTHONPATH=. python benchmarks/music_figures.py runs/music_made/jsb_s0/best.pt \\
        --data-root ../shared/data --out docs/figures/music_jsb
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pyro
import torch

from pyro_seq.data import load_sequences, make_batches
from pyro_seq.diagnostics import music_statistics
from pyro_seq.midi import piano_roll_png, write_midi
from pyro_seq.plotting import pyplot, save_figure
from pyro_seq.recipes import load_model


def summary(values):
    """Mean, sd and quartiles of a 1-D array (JSON-able)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    q = np.quantile(values, [0.25, 0.5, 0.75])
    return {"mean": float(values.mean()), "sd": float(values.std()), "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-samples", type=int, default=4, help="free-running samples drawn as pictures and MIDI")
    parser.add_argument("--steps", type=int, default=64, help="frames per sample")
    parser.add_argument("--draws", type=int, default=10, help="predictive draws per test piece for the checks")
    parser.add_argument("--seconds-per-step", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, guide, _, state = load_model(args.checkpoint)
    name = state["config"]["data"]["name"]
    title = f"{state['kind']} ({state['config']['model'].get('emission', 'bernoulli')} emission) on {name}, epoch {state['epoch']}"

    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        x = model.generate(args.num_samples, args.steps).cpu()  # [num, steps, 88]
    for i in range(x.size(0)):
        piano_roll_png(x[i], out / f"sample_{i:03d}.png", title=f"{title}: sample {i}")
        write_midi(x[i], out / f"sample_{i:03d}.mid", seconds_per_step=args.seconds_per_step)

    test = list(load_sequences(name, "test", data_root=args.data_root))
    record = {"checkpoint": str(args.checkpoint), "data": name, "epoch": state["epoch"], "draws": args.draws, "seed": args.seed, "checks": {}}
    stats = {}
    for source in ("generate", "posterior"):
        pyro.set_rng_seed(args.seed)
        s = music_statistics(model, guide, make_batches(test, 16, shuffle=False), num_draws=args.draws, source=source)
        stats[source] = s
        record["checks"][source] = {
            "notes_per_frame": {"observed": summary(s.observed["notes_per_frame"]), "predicted": summary(s.predicted["notes_per_frame"])},
            "note_duration": {"observed": summary(s.observed["note_duration"]), "predicted": summary(s.predicted["note_duration"])},
            "num_notes": {"observed": int(s.observed["note_duration"].size), "predicted_mean": float(s.predicted_num_notes.mean())},
        }
    (out / "ppc.json").write_text(json.dumps(record, indent=2) + "\n")

    rows = ["| statistic | test data | free-running draws | one-step-ahead draws |", "|---|---|---|---|"]
    for key, label in (("notes_per_frame", "notes per frame"), ("note_duration", "note duration (frames)")):
        obs = record["checks"]["generate"][key]["observed"]
        gen = record["checks"]["generate"][key]["predicted"]
        post = record["checks"]["posterior"][key]["predicted"]
        fmt = lambda s: f"{s['mean']:.2f} ± {s['sd']:.2f} (median {s['median']:.0f})"  # noqa: E731
        rows.append(f"| {label} | {fmt(obs)} | {fmt(gen)} | {fmt(post)} |")
    n = record["checks"]
    rows.append(f"| notes in the test pieces | {n['generate']['num_notes']['observed']} | {n['generate']['num_notes']['predicted_mean']:.0f} | {n['posterior']['num_notes']['predicted_mean']:.0f} |")
    (out / "ppc.md").write_text(f"{title}; {args.draws} draws per test piece, seed {args.seed}.\n\n" + "\n".join(rows) + "\n")

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    obs = stats["generate"].observed
    for ax, key, label, bins in ((axes[0], "notes_per_frame", "notes per frame", np.arange(-0.5, 12.5)), (axes[1], "note_duration", "note duration (frames)", np.arange(0.5, 33.5))):
        ax.hist(obs[key], bins=bins, density=True, histtype="step", color="black", linewidth=1.5, label="test data")
        for source, colour in (("generate", "tab:red"), ("posterior", "tab:blue")):
            ax.hist(stats[source].predicted[key].ravel(), bins=bins, density=True, histtype="step", color=colour, label=f"{source} draws")
        ax.set_xlabel(label)
        ax.set_ylabel("density")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, out / "ppc.png")
    print((out / "ppc.md").read_text())


if __name__ == "__main__":
    main()
