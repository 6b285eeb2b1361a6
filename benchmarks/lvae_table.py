"""
Markdown table of the Ladder VAE experiment from the runs of ``benchmarks/lvae_runs.sh``.

    python benchmarks/lvae_table.py [runs/lvae]

Columns: negative log-likelihood bounds in nats per image (lower is better): the
importance-weighted bound with K = 5000 and the ELBO (the mean of the same 5000 log
weights) on every 10th test image (1000 images), the IW-100 bound and ELBO on the full
test set (10,000 images); active units (variance over the 1000 test images of the
posterior mean > 0.01), informative units (KL per image > 0.01 nats) and KL (nats per image) per
layer, z_1 (bottom) first; training
epochs, best-valid epoch and training time.
"""

import json
import sys
from pathlib import Path

ORDER = ["vae2_plain", "vae2_wu_bn", "lvae2_plain", "lvae2_wu_bn",
         "vae5_plain", "vae5_wu_bn", "lvae5_plain", "lvae5_wu", "lvae5_bn", "lvae5_wu_bn"]


def _row(run):
    config = json.loads((run / "config.json").read_text())
    iw = json.loads((run / "test_iw5000.json").read_text())
    full_path = run / "test_iw100_full.json"
    full = json.loads(full_path.read_text()) if full_path.exists() else None
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e.get("event") == "epoch"]
    guide = "LVAE" if config["guide"]["kind"] == "ladder" else "VAE"
    depth = len(config["model"]["z_dims"])
    warmup = config["loss"]["warmup_steps"] > 0 and config["loss"]["warmup_start"] < 1
    bn = config["model"]["batch_norm"]
    layers = iw.get("layers", {})
    names = sorted(layers, key=lambda n: int(n.split("_")[1]))
    active = "-".join(str(layers[n]["active_units"]) for n in names)
    informative = "-".join(str(sum(k > 0.01 for k in layers[n]["kl_per_unit"])) for n in names)
    kl = " / ".join(f"{layers[n]['kl_nats']:.1f}" for n in names)
    hours = sum(e["seconds"] for e in epochs) / 3600
    cells = [
        run.name, guide, str(depth), "yes" if warmup else "no", "yes" if bn else "no",
        f"{iw['iwae']['nats_per_sequence']:.2f}", f"{iw['elbo']['nats_per_sequence']:.2f}",
        f"{full['iwae']['nats_per_sequence']:.2f}" if full else "–",
        f"{full['elbo']['nats_per_sequence']:.2f}" if full else "–",
        active, informative, kl, f"{len(epochs)} / {iw.get('epoch')}", f"{hours:.2f} h",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else "runs/lvae")
    runs = [root / n for n in ORDER if (root / n / "test_iw5000.json").exists()]
    runs += sorted(p.parent for p in root.glob("*/test_iw5000.json") if p.parent.name not in ORDER)
    print("| run | guide | depth | warm-up | batch norm | −log p̂ IW-5000 | −ELBO (same 5000 samples) "
          "| −log p̂ IW-100, full test | −ELBO, full test | active units per layer | informative units per layer "
          "| KL per layer (nats) | epochs / best | train time |")
    print("|" + "---|" * 14)
    for run in runs:
        print(_row(run))


if __name__ == "__main__":
    main()
