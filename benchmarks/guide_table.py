"""
Markdown table of the JSB test bounds of each SRNN guide, from the JSON files that
``benchmarks/srnn_guides.sh`` writes (``pyro-seq evaluate --num-samples K --fivo-particles K``).

    python benchmarks/guide_table.py
"""

import json
import sys
from pathlib import Path

RUNS = {
    "filter": "runs/guides/jsb/filter",
    "smoother": "runs/guides/jsb/smoother",
    "smoother + Res_q": "runs/claim/jsb/srnn_warmup",
}


def main(argv=None):
    runs = dict(RUNS)
    if argv:
        runs = dict(zip(argv[::2], argv[1::2]))
    print("| guide | −ELBO | −IWAE K=100 | −IWAE K=1000 | −FIVO K=100 | −FIVO K=1000 | best epoch |")
    print("|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        run = Path(run)
        results = {k: json.loads((run / f"test_k{k}.json").read_text()) for k in (100, 1000) if (run / f"test_k{k}.json").exists()}
        if not results:
            print(f"| {name} | (no results in {run}) |||||", file=sys.stdout)
            continue

        def cell(k, bound):
            r = results.get(k, {}).get(bound)
            return "–" if r is None else f"{r['nats_per_frame_total']:.3f} / {r['nats_per_frame_seq_mean']:.3f}"

        elbo = cell(1000, "elbo") if 1000 in results else cell(100, "elbo")
        epoch = next(iter(results.values())).get("epoch")
        print(f"| {name} | {elbo} | {cell(100, 'iwae')} | {cell(1000, 'iwae')} | {cell(100, 'fivo')} | {cell(1000, 'fivo')} | {epoch} |")


if __name__ == "__main__":
    main(sys.argv[1:])
