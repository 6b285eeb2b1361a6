"""
Recurrent spatial transformers on cluttered MNIST
=================================================

Tutorial: a recurrent spatial transformer reads three cluttered MNIST digits, with a plain Pyro
SVI loop, and the same network with stochastic attention.

This is what ``pyro-seq train rnn-spn`` does, written out with Pyro and pyro_seq's pieces:

1. generate (or read from the cache) cluttered-MNIST sequences: three digits side by side on
   a 100×100 canvas with eight 9×9 fragments of other digits;
2. build ``RecurrentSpatialTransformer``: a GRU over convolutional features of the whole image
   picks one affine glimpse (33×33, down-sampling factor 3) per digit, identity at the start, and
   a shared CNN reads each glimpse. Its labels are Pyro sample sites ``digit_0 .. digit_2``, so
   ``Trace_ELBO`` with the empty ``PointEstimateGuide`` is the cross-entropy;
3. build the stochastic-attention variant: the glimpse parameters ``theta_t`` are latent with a
   Gaussian prior at the identity, and ``SpatialAttentionGuide`` (the same attention network with
   a scale head) is their amortised posterior; ``Trace_ELBO`` is now a real ELBO;
4. train both with ``SVI``, report per-digit and per-sequence test error, and draw each step's
   glimpse as a box (with draws from the posterior for the stochastic model).

Run::

    python tutorials/rnn_spn_cluttered.py --data-root ../shared/data          # ~15 minutes on 2 CPU cores
    python tutorials/rnn_spn_cluttered.py --data-root ../shared/data --smoke  # seconds (used by the tests)
"""

import argparse
import json
from pathlib import Path

import pyro
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from tqdm.auto import tqdm

from pyro_seq.contrib.spatial.data import ClutteredBatches, load_cluttered_mnist
from pyro_seq.guides import PointEstimateGuide
from pyro_seq.contrib.spatial.guides import SpatialAttentionGuide
from pyro_seq.contrib.spatial.models import RecurrentSpatialTransformer
from pyro_seq.contrib.spatial.metrics import digit_metrics, glimpse_figure


def train_one(stochastic, train, test, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = RecurrentSpatialTransformer(canvas=100, num_digits=3, downsample=3.0, channels=args.channels, hidden=args.hidden,
                                        stochastic_attention=stochastic, prior_scale=0.5)
    guide = SpatialAttentionGuide(model) if stochastic else PointEstimateGuide()
    svi = SVI(model, guide, ClippedAdam({"lr": 1e-3, "clip_norm": 5.0}), Trace_ELBO(max_plate_nesting=1))
    name = "stochastic attention" if stochastic else "RNN-SPN"
    for epoch in range(args.epochs):
        total, digits = 0.0, 0
        for batch in tqdm(ClutteredBatches(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch), desc=f"{name} epoch {epoch + 1}", leave=False, disable=args.smoke):
            total += svi.step(batch.x, batch.y)
            digits += batch.y.numel()
        print(f"{name:>20} epoch {epoch + 1}: loss {total / digits:.3f} nats per digit")
    metrics, _ = digit_metrics(model, guide, ClutteredBatches(test, 200), num_samples=4)
    print(f"{name:>20} test: digit error {metrics['digit_error']:.2f}%, sequence error {metrics['sequence_error']:.2f}%")
    x, y = test.tensors()
    glimpse_figure(model, guide, x[:4], y[:4], Path(args.out) / f"glimpses_{'stochastic' if stochastic else 'deterministic'}.png", title=name)
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description="RNN-SPN on cluttered MNIST sequences")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default="runs/tutorial_rnn_spn")
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a few images and tiny networks (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_train, args.epochs, args.batch_size, args.channels, args.hidden = 40, 1, 20, 4, 8
    Path(args.out).mkdir(parents=True, exist_ok=True)
    train = load_cluttered_mnist("train", num_images=args.num_train, data_root=args.data_root)
    test = load_cluttered_mnist("test", num_images=40 if args.smoke else 2000, data_root=args.data_root)
    result = {"deterministic": train_one(False, train, test, args), "stochastic": train_one(True, train, test, args)}
    (Path(args.out) / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
