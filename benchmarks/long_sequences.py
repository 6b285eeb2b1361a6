"""
Time and peak memory of SRNN training and evaluation against sequence length: whole sequences
(backpropagation through all T frames) against streaming in chunks of L frames with carried
state (:mod:`pyro_seq.data.streaming`).

    OMP_NUM_THREADS=1 python benchmarks/long_sequences.py --data-root ../shared/data \\
        --lengths 100 300 1000 3000 10000 --chunk 100 --out runs/long_sequences

Data: real piano rolls, the Piano-midi.de training pieces concatenated into one stream, from which
``--batch`` sequences of T frames are cut at spread offsets (T = 10,000 is longer than any piece).
SRNN at the paper's size (d = 300, z = 100, a = 300, MLP 500), smoother guide with Res_q,
``Trace_ELBO``, ClippedAdam. Each (mode, T) runs in a fresh process; memory is the rise of the
process's peak resident set (``ru_maxrss``) over its resident set just before the measured pass,
so it counts what the pass itself allocated. Modes:

- ``train_whole``: one SVI step on the ``[batch, T]`` batch;
- ``train_stream``: one pass over the same frames as T / L SVI steps on ``[batch, L]`` chunks;
- ``eval_whole``: the ELBO of the batch under ``torch.no_grad``;
- ``eval_stream``: :func:`~pyro_seq.bounds.streaming_elbo` in chunks of L.

Writes ``results.jsonl`` and ``long_sequences.png`` under ``--out`` and prints a Markdown table.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

MODES = ("train_whole", "train_stream", "eval_whole", "eval_stream")


def _rss_kb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def measure(args):
    """One (mode, T) in this process; prints one JSON line."""
    import numpy as np
    import pyro
    import torch
    from pyro.infer import Trace_ELBO
    from pyro.optim import ClippedAdam

    from pyro_seq.bounds import trace_log_weights
    from pyro_seq.data import load_music, pad_batch
    from pyro_seq.guides import SRNNGuide
    from pyro_seq.models import SRNN
    from pyro_seq.bounds import streaming_elbo
    from pyro_seq.data.streaming import stream_batches

    stream = np.concatenate(list(load_music("piano", "train", data_root=args.data_root)), axis=0)  # [N, 88]
    T, B = args.length, args.batch
    if B * T > len(stream):
        raise SystemExit(f"{B} x {T} frames exceed the {len(stream)} of the Piano-midi.de training split")
    offsets = np.linspace(0, len(stream) - T, B).astype(int)
    seqs = [stream[o : o + T] for o in offsets]
    pyro.set_rng_seed(0)
    model = SRNN(x_dim=88, d_dim=300, z_dim=100, hidden_dim=500)
    guide = SRNNGuide(model, kind="smoother", res_q=True, a_dim=300)
    elbo, optim = Trace_ELBO(), ClippedAdam({"lr": 1e-3, "clip_norm": 10.0})

    def svi_step(*inputs):
        with pyro.poutine.trace(param_only=True) as capture:
            loss = elbo.loss_and_grads(model, guide, *inputs)
        params = {s["value"].unconstrained() for s in capture.trace.nodes.values()}
        optim(params)
        pyro.infer.util.zero_grads(params)
        return loss

    batch = pad_batch(seqs)
    svi_step(batch.x[:, :20], batch.mask[:, :20])  # warm-up: parameters registered, optimiser state made
    rss_before = _rss_kb()
    start = time.perf_counter()
    steps = 0
    if args.mode == "train_whole":
        loss = svi_step(batch.x, batch.mask)
        steps = 1
    elif args.mode == "train_stream":
        loss = 0.0
        for chunk in stream_batches(seqs, B, args.chunk, shuffle=False):
            loss += svi_step(*chunk.args)
            steps += 1
    elif args.mode == "eval_whole":
        with torch.no_grad():
            model.eval(), guide.eval()
            loss = -float(trace_log_weights(model, guide, batch.x, batch.mask)[0].sum())
        steps = 1
    else:
        loss = streaming_elbo(model, guide, seqs, B, args.chunk)["elbo"]["per_sequence"] * B
        steps = -(-T // args.chunk)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "mode": args.mode, "length": T, "batch": B, "chunk": args.chunk, "steps": steps, "seconds": seconds,
        "frames_per_second": B * T / seconds, "peak_rss_mb": peak_kb / 1024,
        "pass_memory_mb": max(0, peak_kb - rss_before) / 1024, "loss_per_frame": float(loss) / (B * T),
        "threads": torch.get_num_threads(),
    }))  # fmt: skip


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for mode in MODES:
        pts = sorted((r["length"], r) for r in rows if r["mode"] == mode)
        if not pts:
            continue
        xs = [t for t, _ in pts]
        axes[0].plot(xs, [r["seconds"] for _, r in pts], "o-", label=mode)
        axes[1].plot(xs, [max(r["pass_memory_mb"], 1e-1) for _, r in pts], "o-", label=mode)
    for ax, label in zip(axes, ("seconds per pass over the batch", "memory of the pass (MB, peak RSS rise)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T (frames)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("SRNN (paper size): whole sequences vs streaming chunks with carried state")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 1000, 3000, 10000])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--out", default="runs/long_sequences")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one measurement (child process)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        return measure(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for T in args.lengths:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--mode", mode, "--length", str(T), "--batch", str(args.batch), "--chunk", str(args.chunk)]
            if args.data_root:
                cmd += ["--data-root", args.data_root]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{mode} T={T} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["machine"] = platform.processor() or platform.machine()
            rows.append(row)
            print(f"{mode:>13} T={T:>6}: {row['seconds']:8.2f} s, {row['pass_memory_mb']:8.1f} MB", flush=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot(rows, out / "long_sequences.png")
    print("\n| T | " + " | ".join(f"{m} s / MB" for m in args.modes) + " |")
    print("|---|" + "---|" * len(args.modes))
    for T in args.lengths:
        cells = []
        for mode in args.modes:
            r = next((r for r in rows if r["mode"] == mode and r["length"] == T), None)
            cells.append("–" if r is None else f"{r['seconds']:.2f} / {r['pass_memory_mb']:.0f}")
        print(f"| {T} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
