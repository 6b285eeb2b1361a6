"""
A Ladder VAE against the bottom-up VAE
======================================

Tutorial: a Ladder VAE against the bottom-up VAE it improves on, with a plain Pyro SVI loop.

This is what ``pyro-seq train lvae`` does, written out with Pyro and pyro_seq's pieces:

1. load dynamically binarized MNIST (grey levels, a fresh binarization per batch) as
   one-frame sequences ``[batch, 1, 784]``;
2. build one generative model ``LadderVAE`` per guide: ``LadderGuide`` (bottom-up estimates
   merged with the model's top-down prior by precision weighting) and ``BottomUpGuide``
   (the standard q(z_1 | x) q(z_2 | z_1) ...);
3. train each with ``SVI`` and a warm-up ELBO whose β rises from 0 to 1 (``Trace_ELBO``:
   the bottom-up guide needs the Monte Carlo KL);
4. report the test ELBO and the importance-weighted bound, in nats per image;
5. draw the KL per unit of each layer (active units in colour), samples and reconstructions.

Run::

    python tutorials/ladder_vae.py --data-root ../shared/data          # ~15 minutes on 2 CPU cores
    python tutorials/ladder_vae.py --data-root ../shared/data --smoke  # seconds (used by the tests)
"""

import argparse
import json
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_seq.bounds import evaluate
from pyro_seq.data import binarize_batches, load_images, make_batches
from pyro_seq.diagnostics import layer_health, plot_layer_kl
from pyro_seq.guides import BottomUpGuide, LadderGuide
from pyro_seq.losses import LinearSchedule, WarmupTrace_ELBO
from pyro_seq.models import LadderVAE
from pyro_seq.plotting import image_grid_png

GUIDES = {"ladder": LadderGuide, "bottom-up": BottomUpGuide}


def train_one(name, train, test, args, sizes):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = LadderVAE(x_dim=784, **sizes)
    guide = GUIDES[name](model)
    steps_per_epoch = -(-len(train) // args.batch_size)
    loss = WarmupTrace_ELBO(schedule=LinearSchedule(0.0, 1.0, steps=args.epochs * steps_per_epoch // 4))
    svi = SVI(model, guide, Adam({"lr": 2e-3}), loss)
    step = 0
    for epoch in range(args.epochs):
        batches = make_batches(train, args.batch_size, shuffle=True, seed=0, epoch=epoch)
        total, count = 0.0, 0
        for batch in binarize_batches(batches, seed=0, epoch=epoch):
            loss.step = step  # β of the warm-up schedule
            total += svi.step(batch.x, batch.mask)
            count += batch.x.shape[0]
            step += 1
        print(f"{name:>9} epoch {epoch + 1}: warm-up loss {total / count:.2f} nats per image, beta {loss.beta:.2f}")
    test_batches = list(make_batches(test, 100, shuffle=False))
    bounds = evaluate(model, guide, test_batches, num_samples=args.num_samples)
    health = layer_health(model, guide, test_batches)
    return model, guide, bounds, health


def main(argv=None):
    parser = argparse.ArgumentParser(description="Ladder VAE vs bottom-up VAE on MNIST with a Pyro SVI loop")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-samples", type=int, default=100, help="K of the importance-weighted bound")
    parser.add_argument("--out", default="runs/tutorial_lvae")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 500 images, 2 epochs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    limit = 500 if args.smoke else None
    train = load_images("dynamic_mnist", "train", data_root=args.data_root, limit=limit)
    test = load_images("dynamic_mnist", "test", data_root=args.data_root)
    test = type(test)(test.name, test.split, test.sequences[:: 50 if args.smoke else 10])  # every class
    if args.smoke:
        args.epochs, args.num_samples = 2, 10
        sizes = dict(z_dims=(8, 4, 2), hidden_dims=(32, 16, 8))
    else:
        sizes = dict(z_dims=(64, 32, 16, 8, 4), hidden_dims=(512, 256, 128, 64, 32))

    results = {}
    for name in GUIDES:
        model, guide, bounds, health = train_one(name, train, test, args, sizes)
        results[name] = {
            "elbo_nats_per_image": bounds["elbo"]["per_sequence"],
            "iwae_nats_per_image": bounds["iwae"]["per_sequence"],
            "num_samples": args.num_samples,
            "num_images": bounds["num_sequences"],
            "active_units": {k: h.active_units for k, h in health.items()},
            "kl_nats": {k: h.kl_per_frame for k, h in health.items()},
        }
        print(
            f"{name}: test -ELBO {bounds['elbo']['per_sequence']:.2f}, "
            f"-IWAE(K={args.num_samples}) {bounds['iwae']['per_sequence']:.2f} nats per image; active units "
            + ", ".join(f"{k} {h.active_units}/{h.kl_per_unit.size}" for k, h in health.items())
        )
        plot_layer_kl(health, path=out / f"kl_per_unit_{name}.png")
        with torch.no_grad():
            image_grid_png(model.generate(32).reshape(-1, 28, 28), out / f"samples_{name}.png", title=f"{name}: samples")
            x = torch.stack([torch.as_tensor(test[i]) for i in range(16)])  # [16, 1, 784]
            model.eval()
            guide.eval()
            recon = poutine.replay(model, trace=poutine.trace(guide).get_trace(x))(x)  # [16, 784] Bernoulli means
            pairs = torch.stack([x[:, 0], recon], 1).reshape(-1, 28, 28)
            image_grid_png(pairs, out / f"reconstructions_{name}.png", title=f"{name}: test image, reconstruction")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
