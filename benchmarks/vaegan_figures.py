"""
Tables and figures of BENCHMARKS.md "VAE/GAN" from the runs of benchmarks/vaegan_runs.sh.

    PYRO_SEQ_DATA=../shared/data python benchmarks/vaegan_figures.py --runs runs/vaegan --out docs/figures

Writes ``vaegan_table.md`` / ``vaegan_table.json`` (test figures of VAE and VAE/GAN on both data
sets; the collapse count over the VAE/GAN face seeds), ``vaegan_{faces,mnist}_{vae,vaegan}_*.png``
(the grids), ``vaegan_glasses.png`` (latent arithmetic on held-out Olivetti people) and
``vaegan_seeds.png`` (prior-sample spread and D outputs per validation, one line per seed).
"""

import argparse
import json
import shutil
from pathlib import Path

import torch

from pyro_seq.data import load_image_split
from pyro_seq.plotting import pyplot, save_figure
from pyro_seq.recipes import load_model

#: Olivetti people wearing glasses in their first image (chosen by eye from a grid of the 40 people;
#: a person-level label, so a few of their ten images may be without glasses).
OLIVETTI_GLASSES = (1, 3, 5, 12, 13, 16, 18, 19, 26, 27, 30, 33, 36)

COLUMNS = (
    ("pixel_mse", "pixel MSE", "{:.5f}"),
    ("classifier_feature_mse", "classifier-feature MSE", "{:.4f}"),
    ("discriminator_feature_mse", "own Dis_l MSE", "{:.4f}"),
    ("mean_confidence", "sample confidence", "{:.3f}"),
    ("inception_score", "classifier IS", "{:.2f}"),
    ("num_classes_seen", "classes seen", "{}"),
    ("frechet_distance", "Fréchet distance", "{:.2f}"),
    ("spread_ratio", "sample spread / data", "{:.2f}"),
)


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def table(runs):
    rows, records = [], {}
    for data in ("faces", "mnist"):
        for kind in ("vae", "vaegan"):
            path = runs / f"{data}_{kind}_s0" / "test.json"
            if not path.is_file():
                continue
            rec = json.loads(path.read_text())
            records[f"{data}_{kind}"] = rec
            cells = [COLUMNS[i][2].format(rec[k]) if k in rec else "–" for i, (k, _, _) in enumerate(COLUMNS)]
            rows.append(f"| {data} | {'VAE/GAN' if kind == 'vaegan' else 'VAE'} | {rec['epoch']} | " + " | ".join(cells) + f" | {rec['train_seconds'] / 60:.1f} |")
    classifier_path = Path("runs/mnist_classifier.pt")
    if classifier_path.is_file() and any(k.startswith("mnist") for k in records):
        from pyro_seq.diagnostics.image_metrics import load_or_train_classifier, sample_quality

        classifier, _ = load_or_train_classifier(classifier_path)
        real, _ = load_image_split("mnist", "train", None, 2000)
        test, _ = load_image_split("mnist", "test", None)
        rec = {**sample_quality(classifier, real, reference=test), "spread_ratio": float(real.flatten(1).std(0).mean() / test.flatten(1).std(0).mean())}
        records["mnist_real"] = rec
        cells = [COLUMNS[i][2].format(rec[k]) if k in rec else "–" for i, (k, _, _) in enumerate(COLUMNS)]
        rows.append("| mnist | real training images (2,000; the floor) | – | " + " | ".join(cells) + " | – |")
    head = "| data | model | epochs | " + " | ".join(c[1] for c in COLUMNS) + " | train min |\n|" + "---|" * (len(COLUMNS) + 4)
    return head + "\n" + "\n".join(rows), records


def seeds(runs, out):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    summary = []
    for run in sorted(runs.glob("faces_vaegan_s*")):
        if not (run / "test.json").is_file():
            continue
        log = _log(run)
        health = [r for r in log if r.get("event") == "gan_health"]
        epochs = [r for r in log if r.get("event") == "epoch"]
        test = json.loads((run / "test.json").read_text())
        seed = run.name.rsplit("_s", 1)[1]
        axes[0].plot(range(1, len(health) + 1), [h["spread_ratio"] for h in health], label=f"seed {seed}")
        axes[1].plot(range(1, len(health) + 1), [h["d_real"] - h["d_prior"] for h in health], label=f"seed {seed}")
        last = epochs[-1]
        summary.append({
            "seed": int(seed), "collapsed": test["collapsed"], "spread_ratio": test["spread_ratio"],
            "pixel_mse": test["pixel_mse"], "d_real": last.get("d_real_per_frame"), "d_prior": last.get("d_prior_per_frame"),
            "d_real_eval": test.get("d_real"), "d_prior_eval": test.get("d_prior"),
            "dis_update_last_epoch": last.get("dis_update"), "dec_update_last_epoch": last.get("dec_update"),
            "epochs_flagged": sum(h["collapsed"] for h in health), "validations": len(health),
        })
    axes[0].axhline(0.25, color="k", linestyle=":", linewidth=1, label="collapse threshold")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("prior-sample spread / data spread")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("D(real) - D(prior sample)")
    axes[0].legend(fontsize=7)
    fig.suptitle("VAE/GAN on Olivetti faces, one line per seed (validation images, evaluation mode)", fontsize=9)
    save_figure(fig, out / "vaegan_seeds.png")
    return summary


@torch.no_grad()
def attribute_vector(guide, with_attribute, without_attribute):
    """
    The mean latent difference :math:`\\bar z_{\\text{with}} - \\bar z_{\\text{without}}` of two
    groups of images (posterior means of :math:`q(z \\mid x)`, evaluation mode), as in the paper's
    visual attribute vectors.

    :returns: ``[z_dim]``.
    """
    was_training = guide.training
    guide.eval()
    try:
        mean_with = guide.encode(with_attribute)[0].mean(0)  # [z_dim]
        mean_without = guide.encode(without_attribute)[0].mean(0)  # [z_dim]
    finally:
        guide.train(was_training)
    return mean_with - mean_without


@torch.no_grad()
def latent_arithmetic(model, guide, targets, vector, strengths=(0.0, 0.5, 1.0, 1.5, 2.0)):
    """
    Decode :math:`\\mu_\\phi(x) + s\\, v` for every target image and strength ``s``.

    :returns: ``[len(targets), len(strengths), C, H, W]`` images in [0, 1].
    """
    was_training = guide.training
    guide.eval()
    try:
        loc = guide.encode(targets)[0]  # [n, z_dim]
    finally:
        guide.train(was_training)
    s = torch.as_tensor(strengths, dtype=loc.dtype, device=loc.device)  # [S]
    z = loc[:, None, :] + s[None, :, None] * vector  # [n, S, z_dim]
    return model.generate(0, z=z.reshape(-1, z.size(-1))).view(len(targets), len(s), *model.image_shape)


def glasses(runs, out, data_root):
    train, person = load_image_split("faces", "train", data_root)
    test_people = {}
    for split in ("valid", "test"):
        x, p = load_image_split("faces", split, data_root)
        for img, pid in zip(x, p.tolist()):
            if pid not in OLIVETTI_GLASSES:
                test_people.setdefault(pid, img)
    targets = torch.stack(list(test_people.values()))  # one image of each held-out person without glasses
    has = torch.tensor([pid in OLIVETTI_GLASSES for pid in person.tolist()])
    strengths = (0.0, 0.5, 1.0, 1.5, 2.0)
    plt = pyplot()
    kinds = [k for k in ("vae", "vaegan") if (runs / f"faces_{k}_s0" / "last.pt").is_file()]
    fig, axes = plt.subplots(len(targets), (len(strengths) + 1) * len(kinds), figsize=(1.2 * (len(strengths) + 1) * len(kinds), 1.25 * len(targets)), squeeze=False)
    for k, kind in enumerate(kinds):
        model, guide, _, _ = load_model(runs / f"faces_{kind}_s0" / "last.pt")
        vector = attribute_vector(guide, train[has], train[~has])
        grid = latent_arithmetic(model, guide, targets, vector, strengths)  # [n, S, 1, 64, 64]
        for i in range(len(targets)):
            col = k * (len(strengths) + 1)
            axes[i, col].imshow(targets[i, 0], cmap="gray", vmin=0, vmax=1)
            for j in range(len(strengths)):
                axes[i, col + 1 + j].imshow(grid[i, j, 0], cmap="gray", vmin=0, vmax=1)
                if i == 0:
                    axes[i, col + 1 + j].set_title(f"{'VAE/GAN' if kind == 'vaegan' else 'VAE'} +{strengths[j]}v", fontsize=7)
            if i == 0:
                axes[i, col].set_title("input", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("z + s·v, v = mean z(glasses) − mean z(no glasses) over the 32 training people; inputs are held-out people", fontsize=8)
    return save_figure(fig, out / "vaegan_glasses.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/vaegan")
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text, records = table(runs)
    summary = seeds(runs, out)
    collapsed = sum(s["collapsed"] for s in summary)
    text += f"\n\nVAE/GAN face seeds: {collapsed} of {len(summary)} collapsed (prior-sample spread < 0.25 of the data's at the end)\n\n"
    text += "| seed | collapsed | spread / data | pixel MSE | D(real), last epoch | D(prior sample), last epoch | D updates (last epoch) | decoder updates | validations flagged |\n|---|---|---|---|---|---|---|---|---|\n"
    for s in summary:
        text += (f"| {s['seed']} | {'yes' if s['collapsed'] else 'no'} | {s['spread_ratio']:.2f} | {s['pixel_mse']:.5f} | {s['d_real']:.2f} | "
                 f"{s['d_prior']:.2f} | {s['dis_update_last_epoch']:.2f} | {s['dec_update_last_epoch']:.2f} | {s['epochs_flagged']} of {s['validations']} |\n")
    (out / "vaegan_table.md").write_text(text)
    (out / "vaegan_table.json").write_text(json.dumps({"test": records, "seeds": summary}, indent=2) + "\n")
    for data in ("faces", "mnist"):
        for kind in ("vae", "vaegan"):
            for name in ("reconstructions", "samples"):
                src = runs / f"{data}_{kind}_s0" / f"{name}.png"
                if src.is_file():
                    shutil.copy(src, out / f"vaegan_{data}_{kind}_{name}.png")
    if (runs / "faces_vaegan_s0" / "last.pt").is_file():
        glasses(runs, out, args.data_root)
    print(text)


if __name__ == "__main__":
    main()
