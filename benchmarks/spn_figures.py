"""
Tables and figures of BENCHMARKS.md "Recurrent spatial transformers" from benchmarks/spn_runs.sh.

    PYRO_SEQ_DATA=../shared/data python benchmarks/spn_figures.py --runs runs/spn --out docs/figures

Writes ``spn_table.md`` / ``.json`` (test per-digit and per-sequence error, per-position error,
NLL, ECE, epochs and training time of each run, with the paper's figures beside them),
``spn_downsample.md`` and ``spn_downsample.png`` (validation and test error after the same
600 steps, and seconds per step, against the down-sampling factor), ``spn_valid_error.png``
(validation error per epoch), ``spn_glimpses_<run>.png`` (test images with each step's glimpse
as a box, and the glimpses) and, for the stochastic-attention run, the posterior over glimpses:
the error at the posterior mean, with one draw and averaged over draws; the spread of the glimpse
centre in pixels; and, for every attention model, how far each step's glimpse centre lies from
the centre of the digit it should read.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pyro
import torch

from pyro_seq.contrib.spatial.data import ClutteredBatches
from pyro_seq.contrib.spatial.metrics import digit_metrics, evaluate_spn, glimpse_figure, load_split
from pyro_seq.recipes import load_model

PAPER = {"rnn_spn": 1.5, "ffn_spn": 2.0, "cnn": 2.9}
NAMES = {"rnn_spn": "RNN-SPN", "ffn_spn": "FFN-SPN", "cnn": "CNN",
         "rnn_spn_stochastic": "stochastic attention, ELBO (from RNN-SPN)",
         "rnn_spn_stochastic_beta": "stochastic attention, β = 0.01 (from RNN-SPN)"}
#: Runs stopped by hand after their first epoch: only their validation error is reported.
STOPPED = {"rnn_spn_stochastic_nowarmup": "stochastic attention, ELBO, from scratch",
           "rnn_spn_stochastic_warmup": "stochastic attention, KL warm-up over 2,400 steps, from scratch"}


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


@torch.no_grad()
def attention_offsets(model, guide, test, num_images=2000):
    """Mean distance (pixels) from each step's glimpse centre to the centre of digit ``t``, and the glimpse side (pixels)."""
    x, _ = test.tensors()
    x = x[:num_images]
    if model.stochastic_attention:
        theta = guide.attention_params(x)[0]
    else:
        theta = model.logits(x)[1]
    if theta is None:
        return None
    s = model.canvas
    centre = torch.stack([(theta[..., 2] + 1) * s / 2, (theta[..., 5] + 1) * s / 2], -1)  # [N, D, 2] (column, row)
    boxes = torch.as_tensor(test.boxes[:num_images], dtype=centre.dtype)
    target = torch.stack([boxes[..., 1] + 14, boxes[..., 0] + 14], -1)
    if theta.size(1) == model.num_digits and not torch.equal(theta[:, 0], theta[:, -1]):
        offset = (centre - target).norm(dim=-1).mean(0)  # [D]
    else:  # one glimpse for all digits (FFN-SPN): against the middle of the row of digits
        offset = (centre[:, 0] - target.mean(1)).norm(dim=-1).mean().reshape(1)
    a = theta[..., [0, 1, 3, 4]].reshape(*theta.shape[:-1], 2, 2)
    side = a.det().abs().sqrt().mean(0) * s
    return {"centre_offset_px": offset.tolist(), "glimpse_side_px": side.tolist()}


@torch.no_grad()
def posterior_summary(model, guide, test, num_images=2000, num_samples=8):
    """Error at the guide's mean, with one draw and averaged over draws; the spread of glimpse centres (pixels)."""
    batches = list(ClutteredBatches(test, 200, limit=num_images))
    out = {}
    for name, k in (("mean", 0), ("one_draw", 1), (f"average_{num_samples}", num_samples)):
        pyro.set_rng_seed(0)
        out[f"digit_error_{name}"] = digit_metrics(model, guide, batches, k)[0]["digit_error"]
    x, _ = test.tensors()
    scale = guide.attention_params(x[:num_images])[1]  # [N, D, 6]
    out["centre_scale_px"] = (scale[..., [2, 5]].mean((0, 2)) * model.canvas / 2).tolist()  # per step
    out["zoom_scale"] = scale[..., [0, 4]].mean((0, 2)).tolist()
    out["prior_scale"] = model.prior_scale
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", default="runs/spn")
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from pyro_seq.plotting import pyplot, save_figure

    plt = pyplot()
    table, curves = {}, {}
    for name in NAMES:
        run = runs / name
        if not (run / "best.pt").is_file():
            continue
        if not (run / "test.json").is_file():  # a run stopped by hand: test its best checkpoint here
            model, guide, _, state = load_model(run / "best.pt")
            record = evaluate_spn(model, guide, state, run, num_samples=8, seed=0, data_root=args.data_root)
            epochs = [r for r in _log(run) if r.get("event") == "epoch"]
            record = {"event": "test", **record, "train_seconds": epochs[-1]["elapsed"], "steps": epochs[-1]["step"]}  # as pyro_seq.recipes.train records it
            with open(run / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            (run / "test.json").write_text(json.dumps(record, indent=2) + "\n")
        record = json.loads((run / "test.json").read_text())
        log = _log(run)
        epochs = [r for r in log if r.get("event") == "epoch"]
        test_line = [r for r in log if r.get("event") == "test"][-1]
        curves[name] = [(r["epoch"], r["valid_bound"]) for r in epochs]
        model, guide, _, state = load_model(run / "best.pt")
        test = load_split(state["config"]["data"], "test", state["config"]["data"]["num_test"], args.data_root)
        row = {**record["test"], "epoch": record["epoch"], "epochs_run": len(epochs), "steps": test_line.get("steps"),
               "train_minutes": test_line.get("train_seconds", 0) / 60, "paper_digit_error": PAPER.get(name)}
        row["attention"] = attention_offsets(model, guide, test)
        if model.stochastic_attention:
            row["posterior"] = posterior_summary(model, guide, test)
        table[name] = row
        x, y = test.tensors()
        glimpse_figure(model, guide, x[:6], y[:6], out / f"spn_glimpses_{name}.png", title=f"{NAMES[name]}, test images (epoch {record['epoch']})")
    lines = ["| model | digit error % | sequence error % | per position % | NLL/digit | ECE % | paper digit error % | epochs (best) | steps | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in table.items():
        lines.append(f"| {NAMES[name]} | {r['digit_error']:.2f} | {r['sequence_error']:.2f} | {' / '.join(f'{e:.1f}' for e in r['position_error'])} | "
                     f"{r['nll']:.3f} | {r['ece']:.2f} | {r['paper_digit_error'] if r['paper_digit_error'] else '-'} | {r['epochs_run']} ({r['epoch']}) | {r['steps']} | {r['train_minutes']:.0f} |")
    for name, label in STOPPED.items():
        if (runs / name / "log.jsonl").is_file():
            first = [r for r in _log(runs / name) if r.get("event") == "epoch"][0]
            lines.append(f"| {label} | (valid {first['valid_bound']:.2f}) | - | - | - | - | - | 1 (stopped) | {first['step']} | {first['elapsed'] / 60:.0f} |")
    (out / "spn_table.md").write_text("\n".join(lines) + "\n")
    (out / "spn_table.json").write_text(json.dumps(table, indent=2) + "\n")
    print("\n".join(lines))
    if curves:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for name, pts in curves.items():
            ax.plot(*zip(*pts), marker="o", label=NAMES[name])
        ax.set_xlabel("epoch (60,000 images)")
        ax.set_ylabel("validation digit error %")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        save_figure(fig, out / "spn_valid_error.png")
    ds = {}
    for factor in (1, 2, 3, 4):
        run = runs / f"ds{factor}"
        if not (run / "test.json").is_file():
            continue
        log = _log(run)
        epoch = [r for r in log if r.get("event") == "epoch"][-1]
        record = json.loads((run / "test.json").read_text())
        ds[factor] = {"glimpse": int(100 / factor), "valid_digit_error": epoch["valid_bound"], "test_digit_error": record["test"]["digit_error"],
                      "test_sequence_error": record["test"]["sequence_error"], "steps": epoch["step"], "seconds_per_step": epoch["seconds"] / epoch["step"]}
    if ds:
        lines = ["| factor | glimpse | valid digit error % | test digit error % | test sequence error % | steps | s/step (training, one thread) |", "|---|---|---|---|---|---|---|"]
        for f, r in ds.items():
            lines.append(f"| {f} | {r['glimpse']}×{r['glimpse']} | {r['valid_digit_error']:.2f} | {r['test_digit_error']:.2f} | {r['test_sequence_error']:.2f} | {r['steps']} | {r['seconds_per_step']:.3f} |")
        (out / "spn_downsample.md").write_text("\n".join(lines) + "\n")
        (out / "spn_downsample.json").write_text(json.dumps(ds, indent=2) + "\n")
        print("\n".join(lines))
        fig, ax = plt.subplots(figsize=(5, 3.2))
        fs = list(ds)
        ax.plot(fs, [ds[f]["test_digit_error"] for f in fs], marker="o", color="tab:blue", label="test digit error")
        ax.set_xlabel("down-sampling factor")
        ax.set_ylabel("test digit error % (600 steps)", color="tab:blue")
        ax.set_xticks(fs)
        ax2 = ax.twinx()
        ax2.plot(fs, [ds[f]["seconds_per_step"] for f in fs], marker="s", color="tab:red")
        ax2.set_ylabel("seconds per step", color="tab:red")
        ax2.set_yscale("log")
        save_figure(fig, out / "spn_downsample.png")


if __name__ == "__main__":
    main()
