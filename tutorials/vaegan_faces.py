"""
VAE/GAN against the plain VAE on faces
======================================

Tutorial: VAE/GAN against the plain VAE on the Olivetti faces, with a plain Pyro SVI loop.

This is what ``pyro-seq train vaegan|vae --data faces`` does, written out with Pyro and
pyro_seq's pieces:

1. load the Olivetti faces (64×64 grey, split by person: 32 training people, 4 + 4 held out);
2. build ``VAEGAN(likelihood="features")`` (the reconstruction term is a Gaussian on the
   discriminator's hidden features) and ``VAEGAN(likelihood="pixels")`` (the plain VAE with the
   same encoder and decoder), each with ``VAEGANGuide`` (the convolutional encoder);
3. train VAE/GAN with ``SVI`` and ``VAEGANLoss``, which sends each term only to the networks it
   trains (encoder: KL + feature reconstruction; decoder: γ · reconstruction + GAN; discriminator:
   GAN only) and skips a player's update while the other is far ahead; three learning rates in
   one ``vaegan_optim``. The plain VAE trains with ``Trace_ELBO``;
4. print the discriminator's outputs as training goes (a collapsing GAN shows up here:
   D(real) → 1, D(sample) → 0, and a prior-sample spread far below the data's);
5. write grids of test reconstructions and prior samples for both models.

Run::

    python tutorials/vaegan_faces.py --data-root ../shared/data          # ~6 minutes on 2 CPU cores
    python tutorials/vaegan_faces.py --data-root ../shared/data --smoke  # seconds (used by the tests)
"""

import argparse
import json
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyro_seq.data import image_batches, load_image_split
from pyro_seq.guides import VAEGANGuide
from pyro_seq.losses import VAEGANLoss, vaegan_optim
from pyro_seq.models import VAEGAN
from pyro_seq.plotting import image_grid_png
from pyro_seq.recipes.vaegan import gan_health, reconstruction_metrics


def train_one(likelihood, train, valid, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = VAEGAN(image_size=64, z_dim=args.z_dim, width=args.width, likelihood=likelihood, scale=1.0 if likelihood == "features" else 0.1)
    guide = VAEGANGuide(model)
    if likelihood == "features":
        loss = VAEGANLoss(gamma=1e-2)
        svi = SVI(model, guide, vaegan_optim(lr=3e-4), loss)
    else:
        loss = Trace_ELBO()
        svi = SVI(model, guide, ClippedAdam({"lr": 3e-4, "betas": (0.5, 0.999)}), loss)
    for epoch in range(args.epochs):
        total, d_real, d_prior, images = 0.0, 0.0, 0.0, 0
        for batch in image_batches(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch):
            total += svi.step(batch.x)
            images += batch.x.size(0)
            if likelihood == "features":
                d_real += float(loss.last_terms["d_real"])
                d_prior += float(loss.last_terms["d_prior"])
        line = f"{'VAE/GAN' if likelihood == 'features' else 'VAE':>7} epoch {epoch + 1}: loss {total / images:.1f} nats per image"
        if likelihood == "features":
            line += f", D(real) {d_real / images:.2f}, D(prior sample) {d_prior / images:.2f}"
        if (epoch + 1) % max(1, args.epochs // 5) == 0 or epoch + 1 == args.epochs:
            health = gan_health(model, valid)
            line += f", prior-sample spread {health['spread_ratio']:.2f} of the data's"
        print(line)
    return model, guide


def main(argv=None):
    parser = argparse.ArgumentParser(description="VAE/GAN vs VAE on the Olivetti faces with a Pyro SVI loop")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=float, default=0.125, help="multiplier of the paper's channel counts")
    parser.add_argument("--z-dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/tutorial_vaegan")
    parser.add_argument("--smoke", action="store_true", help="tiny networks, 64 images, 1 epoch")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, _ = load_image_split("faces", "train", args.data_root, limit=64 if args.smoke else None)
    valid, _ = load_image_split("faces", "valid", args.data_root)
    test, _ = load_image_split("faces", "test", args.data_root)
    if args.smoke:
        args.epochs, args.width, args.z_dim = 1, 0.0625, 8

    results = {}
    for likelihood, name in (("features", "vaegan"), ("pixels", "vae")):
        model, guide = train_one(likelihood, train, valid, args)
        results[name] = {**reconstruction_metrics(model, guide, test), **gan_health(model, test)}
        print(f"{name}: test pixel MSE {results[name]['pixel_mse']:.5f}, prior-sample spread {results[name]['spread_ratio']:.2f} of the data's")
        x = test[::5][:8]  # one image of each held-out person, twice
        pairs = torch.stack([x, guide.reconstruct(x)], 1).reshape(-1, 64, 64)
        image_grid_png(1 - pairs, out / f"reconstructions_{name}.png", title=f"{name}: test face, reconstruction", columns=4)
        torch.manual_seed(args.seed)
        image_grid_png(1 - model.generate(16)[:, 0], out / f"samples_{name}.png", title=f"{name}: prior samples")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
