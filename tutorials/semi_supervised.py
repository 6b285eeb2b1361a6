"""
Semi-supervised classification with M2 and ADGM
===============================================

Tutorial: semi-supervised classification with M2 and the auxiliary deep generative model (ADGM),
ten labels per class, with a plain Pyro SVI loop.

This is what ``pyro-seq train m2|adgm`` does, written out with Pyro and pyro_seq's pieces:

1. load a semi-supervised task: ``load_semi_supervised`` picks ten labelled images per class
   (by a seed) and leaves the others unlabelled; each step takes a labelled and an unlabelled
   mini-batch, both binarized afresh;
2. build the model (``M2`` or ``ADGM``) and the ``SemiSupervisedGuide`` q(a|x) q(y|a,x) q(z|a,x,y):
   for unlabelled images the guide marks ``y`` for parallel enumeration, so Pyro's
   ``TraceEnum_ELBO`` (inside ``SemiSupervised_ELBO``) sums over the ten classes exactly;
3. train with ``SVI`` on ``SemiSupervised_ELBO``: labelled bound + unlabelled bound +
   alpha * log q(y | a, x) on the labelled images, alpha = 0.1 N / N_l;
4. report the test error of ``guide.predict`` (class probabilities averaged over samples of a),
   its calibration, and how uncertain the ADGM is where it is wrong;
5. draw samples of each class and the PCA of q(a | x).

Run::

    python tutorials/semi_supervised.py                                  # digits, about 2 minutes
    python tutorials/semi_supervised.py --data dynamic_mnist --data-root ../shared/data --epochs 10
    python tutorials/semi_supervised.py --smoke                          # seconds (used by the tests)
"""

import argparse
import json
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_seq.data import labelled_batches, load_semi_supervised
from pyro_seq.guides import SemiSupervisedGuide
from pyro_seq.losses import SemiSupervised_ELBO
from pyro_seq.models import ADGM, M2
from pyro_seq.plotting import image_grid_png
from pyro_seq.recipes.semisupervised import classification_metrics

MODELS = {"m2": M2, "adgm": ADGM}


def train_one(name, data, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    x_dim = data.train.x.shape[-1]
    model = MODELS[name](x_dim=x_dim, z_dim=args.z_dim, a_dim=args.z_dim, hidden_dims=(args.hidden,) * 2)
    guide = SemiSupervisedGuide(model)
    loss = SemiSupervised_ELBO(num_data=data.train.num_data, num_labelled=data.train.num_labelled)
    svi = SVI(model, guide, Adam({"lr": args.lr}), loss)
    valid = labelled_batches(*data.valid)
    for epoch in range(args.epochs):
        total, steps = 0.0, 0
        for batch in data.train.batches(epoch, batch_size=100, labelled_batch_size=100, seed=args.seed):
            total += svi.step(batch.x_labelled, batch.y_labelled, batch.x_unlabelled)
            steps += 1
        if (epoch + 1) % max(1, args.epochs // 10) == 0 or epoch + 1 == args.epochs:
            error = classification_metrics(guide, valid, num_samples=10)["error"]
            terms = loss.last_terms
            print(f"{name:>4} epoch {epoch + 1:4d}: loss {total / steps:8.2f}, labelled bound "
                  f"{float(terms['labelled_bound']):8.2f}, unlabelled bound {float(terms['unlabelled_bound']):8.2f} "
                  f"nats/image, valid error {error:5.2f}%")
    return model, guide


def main(argv=None):
    parser = argparse.ArgumentParser(description="semi-supervised classification with M2 and ADGM, ten labels per class")
    parser.add_argument("--data", default="digits", choices=("digits", "dynamic_mnist"))
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--z-dim", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/tutorial_semi_supervised")
    parser.add_argument("--smoke", action="store_true", help="two epochs on 300 images per split")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.hidden, args.z_dim = 2, 16, 4
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = load_semi_supervised(args.data, labels_per_class=10 if not args.smoke else 3, label_seed=args.seed,
                                data_root=args.data_root, limit=300 if args.smoke else None)
    test = labelled_batches(*data.test)
    results = {}
    for name in MODELS:
        model, guide = train_one(name, data, args)
        pyro.set_rng_seed(args.seed)
        metrics = classification_metrics(guide, test, num_samples=100)
        # where is the ADGM unsure? predictive entropy of right and wrong test predictions
        pred = guide.predict(torch.as_tensor(data.test[0]), num_samples=100)
        wrong = pred.probs.argmax(-1) != torch.as_tensor(data.test[1])
        metrics["entropy_right"] = float(pred.entropy[~wrong].mean()) if bool((~wrong).any()) else None
        metrics["entropy_wrong"] = float(pred.entropy[wrong].mean()) if bool(wrong.any()) else None
        results[name] = metrics
        print(f"{name}: test error {metrics['error']:.2f}%, NLL {metrics['nll']:.3f}, ECE {metrics['ece']:.2f}%, "
              f"entropy right/wrong {metrics['entropy_right']} / {metrics['entropy_wrong']}")
        shape = tuple(model.image_shape)
        samples = model.generate(torch.arange(10).repeat_interleave(8)).reshape(-1, *shape)
        image_grid_png(samples, out / f"{name}_samples.png", title=f"{name}: one row per class", columns=8)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    results["files"] = sorted(p.name for p in out.iterdir())
    return results


if __name__ == "__main__":
    main()
