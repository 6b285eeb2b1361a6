"""
Does Z-Forcing's auxiliary cost keep latents in use better than KL annealing?

Trains SRNN and Z-Forcing, each plain, with KL warm-up, with the auxiliary cost,
and with both, through the ``pyro-seq`` command line (so every run is an
ordinary run directory with ``config.json``, ``log.jsonl``, ``best.pt`` and
``test.json``), then reports for each run the test bound (ELBO and
importance-sampled), the KL per time step and the number of active latent units
(a unit is active when the variance over all test frames of its posterior mean
exceeds 0.01, and informative when its KL averaged over the test frames exceeds
0.01 nats; see :mod:`pyro_seq.diagnostics.latents`).

    python benchmarks/zforcing_claim.py train --data jsb --jobs 2      # runs/claim/jsb/<model>_<variant>
    python benchmarks/zforcing_claim.py table --data jsb               # runs/claim/jsb/table.{md,json}

Runs that finished (``test.json`` present) are skipped; unfinished ones resume
from ``last.pt``. Every run uses one thread (``OMP_NUM_THREADS=1``) so that
``--jobs`` runs share the cores evenly.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: Variants: KL warm-up (beta from 0.2 to 1 over 1000 steps) and/or the auxiliary cost.
VARIANTS = {
    "plain": dict(warmup=False, aux=False),
    "warmup": dict(warmup=True, aux=False),
    "aux": dict(warmup=False, aux=True),
    "both": dict(warmup=True, aux=True),
}

#: Model sizes: SRNN as the foundation's small JSB model, Z-Forcing of similar size.
MODEL_ARGS = {
    "srnn": ["--d-dim", "128", "--z-dim", "32", "--a-dim", "128", "--hidden-dim", "256"],
    "zforcing": ["--emb-dim", "128", "--h-dim", "256", "--z-dim", "32", "--hidden-dim", "256"],
}

#: Per data set: epochs, batch size, dropout, test K, which models.
DATA_ARGS = {
    "jsb": dict(epochs=100, batch_size=16, dropout=0.3, eval_samples=100, models=("srnn", "zforcing")),
    "chorales": dict(epochs=150, batch_size=16, dropout=0.3, eval_samples=100, models=("srnn", "zforcing")),
    "mnist": dict(epochs=3, batch_size=128, dropout=0.0, eval_samples=20, eval_every=10, models=("zforcing",)),
}


def run_args(data, model, variant, out, aux_weight, data_root=None):
    """The ``pyro-seq train`` arguments of one run."""
    d, v = DATA_ARGS[data], VARIANTS[variant]
    args = ["train", model, "--data", data, "--out", str(out), "--epochs", str(d["epochs"]),
            "--batch-size", str(d["batch_size"]), "--dropout", str(d["dropout"]), "--lr", "2e-3",
            "--lrd", "0.9998", "--seed", "0", "--eval-samples", str(d["eval_samples"]), "--no-progress"]
    args += MODEL_ARGS[model]
    args += ["--warmup-start", "0.2", "--warmup-steps", "1000"] if v["warmup"] else ["--warmup-start", "1", "--warmup-steps", "0"]
    if v["aux"]:
        args += ["--aux-weight", str(aux_weight)]
        if model == "zforcing":
            args += ["--backward-weight", "1"]
    if d.get("eval_every", 1) > 1:
        args += ["--eval-every", str(d["eval_every"])]
    if data_root:
        args += ["--data-root", str(data_root)]
    return args


def cmd_train(args):
    root = Path(args.out) / args.data
    todo = []
    for model in DATA_ARGS[args.data]["models"]:
        for variant in args.variants:
            out = root / f"{model}_{variant}"
            if (out / "test.json").exists():
                print(f"[claim] {out}: done, skipped")
                continue
            cli = run_args(args.data, model, variant, out, args.aux_weight, args.data_root)
            if (out / "last.pt").exists():
                cli.append("--resume")
            todo.append((out, cli))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    running = []
    while todo or running:
        while todo and len(running) < args.jobs:
            out, cli = todo.pop(0)
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / "train.log", "a")
            print(f"[claim] start {out}: pyro-seq {' '.join(cli)}", flush=True)
            running.append((out, subprocess.Popen([sys.executable, "-m", "pyro_seq", *cli], stdout=log, stderr=log, env=env), log))
        time.sleep(5)
        for item in list(running):
            out, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"[claim] {out}: exit {proc.returncode}", flush=True)


def cmd_table(args):
    import numpy as np
    import pyro
    import torch

    from pyro_seq.recipes import load_model
    from pyro_seq.data import load_sequences, make_batches
    from pyro_seq.diagnostics.latents import latent_health

    torch.set_num_threads(args.threads)
    root = Path(args.out) / args.data
    test = list(load_sequences(args.data, "test", data_root=args.data_root))[:: DATA_ARGS[args.data].get("eval_every", 1)]
    rows, curves = [], {}
    for model_kind in DATA_ARGS[args.data]["models"]:
        for variant in args.variants:
            out = root / f"{model_kind}_{variant}"
            if not (out / "test.json").exists():
                print(f"[claim] {out}: no test.json, skipped")
                continue
            result = json.loads((out / "test.json").read_text())
            config = json.loads((out / "config.json").read_text())
            epochs = [json.loads(line) for line in open(out / "log.jsonl") if '"event": "epoch"' in line]
            model, guide, _, state = load_model(out / "best.pt")
            pyro.set_rng_seed(0)
            health = latent_health(model, guide, make_batches(test, 64, shuffle=False))
            kl_step = np.nanmean(health.kl_per_step, axis=0)  # [T_max]: mean KL at each step
            curves[f"{model_kind} {variant}"] = kl_step
            rows.append({
                "data": args.data,
                "model": model_kind,
                "variant": variant,
                "run": str(out),
                "best_epoch": state["epoch"],
                "epochs": len(epochs),
                "train_seconds": epochs[-1]["elapsed"] if epochs else None,
                "aux_weight": config["loss"].get("aux_weight", 0.0),
                "elbo": result["elbo"],
                "iwae": result["iwae"],
                "num_samples": result["num_samples"],
                "num_sequences": result["num_sequences"],
                "num_frames": result["num_frames"],
                "kl_per_frame": health.kl_per_frame,
                "kl_per_step_first10": [float(v) for v in kl_step[:10]],
                "active_units": health.active_units,
                "informative_units": health.informative_units,
                "z_dim": int(health.posterior_mean_variance.shape[0]),
            })
            print(f"[claim] {out}: -ELBO {result['elbo']['nats_per_frame_total']:.4f}, "
                  f"KL/frame {health.kl_per_frame:.4f}, active {health.active_units}", flush=True)
    (root / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    _plot_kl_per_step(rows, curves, root / "kl_per_step.png", args.data)
    per_image = args.data == "mnist"
    unit = "nats per image" if per_image else "nats per frame (total nats / total frames)"
    lines = ["| model | variant | -ELBO | -IWAE (K) | KL per frame | active units | informative units | best epoch / epochs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        scale = r["num_frames"] / r["num_sequences"] if per_image else 1.0
        elbo = r["elbo"]["nats_per_frame_total"] * scale
        iwae = r["iwae"]["nats_per_frame_total"] * scale
        lines.append(f"| {r['model']} | {r['variant']} | {elbo:.3f} | {iwae:.3f} ({r['num_samples']}) | "
                     f"{r['kl_per_frame']:.3f} | {r['active_units']} / {r['z_dim']} | {r['informative_units']} / {r['z_dim']} | "
                     f"{r['best_epoch']} / {r['epochs']} |")
    text = f"{args.data} test, {unit}\n\n" + "\n".join(lines) + "\n"
    (root / "table.md").write_text(text)
    print(text)


def _plot_kl_per_step(rows, curves, path, data):
    """Mean KL (nats) at each time step over the test sequences that reach it, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, curve in curves.items():
        t = min(len(curve), 100)
        ax.plot(range(1, t + 1), curve[:t], label=name, linestyle="-" if name.startswith("zforcing") else "--")
    ax.set_xlabel("time step t")
    ax.set_ylabel("KL(q(z_t | .) || p(z_t | .)), nats")
    ax.set_title(f"{data} test: KL per time step (mean over sequences)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("train", cmd_train), ("table", cmd_table)):
        p = sub.add_parser(name)
        p.add_argument("--data", choices=sorted(DATA_ARGS), required=True)
        p.add_argument("--data-root", default=None)
        p.add_argument("--out", default="runs/claim")
        p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
        p.add_argument("--aux-weight", type=float, default=0.001, help="auxiliary cost weight w of the aux runs")
        p.add_argument("--jobs", type=int, default=2, help="runs at once (train)")
        p.add_argument("--threads", type=int, default=2, help="torch threads (table)")
        p.set_defaults(func=fn)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
