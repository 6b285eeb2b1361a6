"""
Table of the semi-supervised runs of ``benchmarks/ssl_runs.sh``: test error (%) of M2, ADGM and
SDGM over label seeds, mean ± sd, with the validation error, NLL, ECE and training time.

    python benchmarks/ssl_table.py runs/ssl/dynamic_mnist [runs/ssl/digits ...]
"""

import json
import statistics
import sys
from pathlib import Path

MODELS = ("m2", "adgm", "sdgm")


def fmt(values, digits=2):
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise(root):
    root = Path(root)
    rows = []
    for model in MODELS:
        runs = sorted(root.glob(f"{model}_s*/test.json"))
        records = [json.loads(p.read_text()) for p in runs]
        if not records:
            continue
        seeds = [p.parent.name.split("_s")[-1] for p in runs]
        last = [r["last"] for r in records]
        best = [r["best_valid"] for r in records]
        valid = []
        for p in runs:
            epochs = [json.loads(line) for line in (p.parent / "log.jsonl").read_text().splitlines() if '"event": "epoch"' in line]
            valid.append(epochs[-1]["valid_bound"])
        rows.append({
            "model": model.upper(),
            "seeds": ",".join(seeds),
            "epochs": last[0]["epoch"],
            "test_error_last": fmt([r["error"] for r in last]),
            "per_seed": " / ".join(f"{r['error']:.2f}" for r in last),
            "valid_error_last": fmt(valid),
            "test_error_best_valid": fmt([r["error"] for r in best]),
            "nll": fmt([r["nll"] for r in last], 3),
            "ece": fmt([r["ece"] for r in last]),
            "train_minutes": fmt([r["train_seconds"] / 60 for r in records], 1),
        })
    return rows


def main(argv=None):
    for root in argv or sys.argv[1:]:
        rows = summarise(root)
        print(f"\n{root}\n")
        print("| model | label seeds | epochs | test error % (last) | per seed | valid error % (last) | test error % (best valid) | test NLL | test ECE % | train min |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['seeds']} | {r['epochs']} | {r['test_error_last']} | {r['per_seed']} | {r['valid_error_last']} | "
                  f"{r['test_error_best_valid']} | {r['nll']} | {r['ece']} | {r['train_minutes']} |")


if __name__ == "__main__":
    main()
