"""
Tables and figures of BENCHMARKS.md "Protein sequence models" from benchmarks/protein_runs.sh.

    PYRO_SEQ_DATA=../shared/data python benchmarks/protein_figures.py --runs runs/protein --out docs/figures

Writes ``protein_table.md`` / ``.json`` (accuracy, Gorodkin correlation or Q8/Q3, NLL and ECE of
the deterministic, MC-dropout and Bayesian-last-layer variants on every test set),
``protein_reliability_{localization,structure}.png`` (the three variants on one diagram),
``protein_attention_profile.png``, ``protein_attention_tracks.png`` (an extracellular protein and
a peroxisomal one), ``protein_filter_logos.png`` and ``protein_structure_strip.png``.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from pyro_seq.contrib.protein.data import protein_batches
from pyro_seq.contrib.protein.metrics import evaluate_protein, test_sets_of
from pyro_seq.contrib.protein.plots import attention_profile, attention_track, filter_logos, structure_strip
from pyro_seq.diagnostics.calibration import reliability_diagram
from pyro_seq.recipes import load_model

VARIANT_NAMES = {"deterministic": "deterministic", "mc_dropout": "MC dropout", "bayesian": "Bayesian last layer"}


def _evaluate(runs, kind, names, num_samples, seed):
    """Every variant of each run's best checkpoint on its protocol's test sets (:func:`evaluate_protein`)."""
    results, bins, models = {}, {}, {}
    for run in names:
        path = runs / run / "best.pt"
        if not path.is_file():
            continue
        model, guide, _, state = load_model(path)
        tests = test_sets_of(state)
        models[run] = (model, guide, state, tests)
        record, run_bins = evaluate_protein(model, guide, state, tests, None, num_samples, seed)
        for test_name, variants in record["tests"].items():
            for variant, metrics in variants.items():
                metrics.pop("confusion", None)
                results.setdefault(test_name, {})[variant] = {**metrics, "run": run, "epoch": state.get("epoch")}
                bins.setdefault(test_name, {})[VARIANT_NAMES[variant]] = run_bins[test_name][variant]
    return results, bins, models


def _table(kind, results):
    key = "accuracy" if kind == "localizer" else "q8"
    second = "gorodkin" if kind == "localizer" else "q3"
    head = f"| test set | variant | {'accuracy' if kind == 'localizer' else 'Q8'} | {'Gorodkin' if kind == 'localizer' else 'Q3'} | NLL | ECE % | items | run (epoch) |\n|---|---|---|---|---|---|---|---|\n"
    rows = "".join(
        f"| {name} | {VARIANT_NAMES[v]} | {m[key]:.3f} | {m[second]:.3f} | {m['nll']:.3f} | {100 * m['ece']:.2f} | {m['num_items']} | {m['run']} ({m['epoch']}) |\n"
        for name, variants in results.items() for v, m in variants.items()
    )
    return head + rows


def structure_cv_summary(runs):
    """Mean and standard deviation over the CB513 folds that were run (``ss_det`` = fold 0, ``ss_det_f<k>``)."""
    import numpy as np

    records = [json.loads((r / "test.json").read_text()) for r in [runs / "ss_det", *sorted(runs.glob("ss_det_f*"))] if (r / "test.json").is_file()]
    if len(records) < 2:
        return ""
    lines = f"\nCB513, {len(records)} folds (folds {', '.join(str(r['fold']) for r in records)}), mean ± sd over folds:\n\n| variant | Q8 | Q3 | ECE % |\n|---|---|---|---|\n"
    for variant in ("deterministic", "mc_dropout"):
        m = [next(iter(r["tests"].values()))[variant] for r in records]
        q8, q3, ece = (np.array([x[k] for x in m]) for k in ("q8", "q3", "ece"))
        lines += f"| {VARIANT_NAMES[variant]} | {q8.mean():.3f} ± {q8.std(ddof=1):.3f} | {q3.mean():.3f} ± {q3.std(ddof=1):.3f} | {100 * ece.mean():.2f} ± {100 * ece.std(ddof=1):.2f} |\n"
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/protein")
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--num-samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text, everything = "", {}
    for kind, names, figure in (("localizer", ("loc_det", "loc_bll", "loc_cv0"), "localization"), ("secondary-structure", ("ss_det", "ss_bll"), "structure")):
        results, bins, models = _evaluate(runs, kind, names, args.num_samples, args.seed)
        if not results:
            continue
        everything[kind] = results
        text += f"### {kind}\n\n" + _table(kind, results) + "\n"
        first = next(iter(bins))
        reliability_diagram(bins[first], out / f"protein_reliability_{figure}.png", title=f"{kind} on {first}: reliability of the three variants")
        model, guide, state, tests = models[next(n for n in names if n in models)]
        test_name, records = next(iter(tests.items()))
        batches = protein_batches(records, 64, max_length=state["config"]["data"]["max_length"])
        if kind == "localizer":
            attention_profile(model, batches, out / "protein_attention_profile.png", title=f"attention along the proteins of {test_name} (loc_det)")
            from pyro_seq.contrib.protein.plots import kyte_doolittle

            # the extracellular protein (<= 400 residues, starting with M) with the most hydrophobic
            # N-terminal stretch: a clear signal-peptide h-region
            candidates = [r for r in records if r.location == "Extracellular" and len(r.sequence) <= 400 and r.sequence[0] == "M"]
            extracellular = max(candidates, key=lambda r: float(np.nanmax(kyte_doolittle(r.sequence[:30]))))
            peroxisome = next(r for r in records if r.location == "Peroxisome" and len(r.sequence) <= 700)
            attention_track(model, extracellular.sequence, out / "protein_attention_track_extracellular.png",
                            title=f"{extracellular.accession} (Extracellular): attention and hydropathy; shaded: residues 1-25, where signal peptides lie",
                            regions=[(1, 25, "N-terminal 25")])
            n = len(peroxisome.sequence)
            attention_track(model, peroxisome.sequence, out / "protein_attention_track_peroxisome.png",
                            title=f"{peroxisome.accession} (Peroxisome): attention and hydropathy; shaded: the C-terminal tripeptide (PTS1 site)",
                            regions=[(n - 2, n, f"C-term {peroxisome.sequence[-3:]}")])
            filter_logos(model, batches, out / "protein_filter_logos.png", width=9, num_filters=6, select="max")
        else:
            batch = max(batches, key=lambda b: int(b.eval_mask.sum()) if b.eval_mask is not None else 0)
            structure_strip(model, batch.tokens, batch.mask, batch.y, out / "protein_structure_strip.png", index=0, max_residues=400,
                            guide=guide if model.bayesian_last_layer else None, num_samples=args.num_samples if model.bayesian_last_layer else 1)
    text += structure_cv_summary(runs)
    (out / "protein_table.md").write_text(text)
    (out / "protein_table.json").write_text(json.dumps(everything, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
