"""
Does an auxiliary variable tighten a plain VAE's bound? (Maaløe et al. 2016, section 2)

Trains, with the same seed, data order and number of steps, a one-layer VAE
(:class:`~pyro_seq.models.LadderVAE` with one stochastic layer, :class:`~pyro_seq.guides.BottomUpGuide`)
and the same VAE wrapped by :func:`~pyro_seq.guides.add_auxiliary` (p(a | x, z), q(a | x) q(z | a, x)),
on the fixed binarized MNIST, through the common trainer (Trace_ELBO, one sample, Adam). Then
reports on every 10th test image the negative ELBO and the negative importance-weighted bound
(K samples) of both, in nats per image, as JSON lines and a Markdown table.

    PYRO_SEQ_DATA=../shared/data python benchmarks/aux_vae.py --epochs 30 --seeds 0 1 --out runs/aux_vae

``--frozen-epochs N`` then isolates the variational family: for each seed it takes the trained
plain VAE (``OUT/vae_s<seed>/last.pt``), freezes its generative model, and fits for N more epochs
(a) its own guide and (b) the same guide wrapped with an auxiliary variable (which starts exactly
at (a)'s bound); both are scored on the same fixed model, so any difference in the ELBO is the
guide's alone (the importance-weighted bounds of the two should agree).
"""

import argparse
import json
import time
from pathlib import Path

import pyro
import torch

from pyro.infer import Trace_ELBO

from pyro_seq.bounds import evaluate
from pyro_seq.training.checkpoint import load_checkpoint
from pyro_seq.data import load_images, make_batches
from pyro_seq.guides import BottomUpGuide, add_auxiliary
from pyro_seq.losses import WarmupTrace_ELBO
from pyro_seq.models import LadderVAE
from pyro_seq.training.trainer import Trainer


def build(auxiliary, z_dim, hidden, a_dim):
    model = LadderVAE(z_dims=[z_dim], hidden_dims=[hidden], batch_norm=False)
    guide = BottomUpGuide(model)
    if auxiliary:
        model, guide = add_auxiliary(model, guide, {"z_1": z_dim}, 784, a_dim=a_dim, hidden_dims=(hidden,))
    return model, guide


def score(model, guide, test, seed, iw_samples):
    model.eval()
    guide.eval()
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        result = evaluate(model, guide, make_batches(test, 50, shuffle=False), num_samples=iw_samples)
    return result["elbo"]["total"], result["iwae"]["total"]


def frozen_model(args, out, train, test):
    """Fit (a) the plain guide and (b) the auxiliary guide of each trained VAE with its model frozen."""
    rows = []
    for seed in args.seeds:
        for auxiliary in (False, True):
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            model, guide = build(False, args.z_dim, args.hidden, args.a_dim)
            state = load_checkpoint(out / f"vae_s{seed}" / "last.pt")
            model.load_state_dict(state["model"])
            guide.load_state_dict(state["guide"])
            if auxiliary:
                model, guide = add_auxiliary(model, guide, {"z_1": args.z_dim}, 784, a_dim=args.a_dim, hidden_dims=(args.hidden,))
            before = score(model, guide, test, seed, 10)[0]
            model.train()
            guide.train()
            optim = torch.optim.Adam(guide.parameters(), lr=args.lr)  # the guide only: the model stays fixed
            elbo = Trace_ELBO()
            start = time.perf_counter()
            for epoch in range(args.frozen_epochs):
                for batch in make_batches(train, 100, shuffle=True, seed=seed, epoch=1000 + epoch):
                    optim.zero_grad()
                    elbo.differentiable_loss(model, guide, batch.x, batch.mask).backward()
                    optim.step()
            neg_elbo, neg_iw = score(model, guide, test, seed, args.iw_samples)
            row = {"name": f"frozen_vae_s{seed}_{'aux_guide' if auxiliary else 'plain_guide'}", "seed": seed,
                   "auxiliary": auxiliary, "frozen_epochs": args.frozen_epochs, "neg_elbo_before": before,
                   "neg_elbo": neg_elbo, "neg_iw": neg_iw, "seconds": time.perf_counter() - start,
                   "guide_parameters": sum(p.numel() for p in guide.parameters())}
            rows.append(row)
            print(json.dumps(row), flush=True)
            with open(out / "frozen.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    print("\n| fixed model (seed) | guide | test -ELBO before | test -ELBO after %d epochs | test -IW (K=%d) |" % (args.frozen_epochs, args.iw_samples))
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| VAE s{r['seed']} | {'aux (q(a|x) q(z|a,x))' if r['auxiliary'] else 'plain q(z|x)'} | "
              f"{r['neg_elbo_before']:.2f} | {r['neg_elbo']:.2f} | {r['neg_iw']:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--z-dim", type=int, default=32)
    parser.add_argument("--a-dim", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--every", type=int, default=10, help="evaluate every N-th test image")
    parser.add_argument("--out", default="runs/aux_vae")
    parser.add_argument("--frozen-epochs", type=int, default=0, help="only the frozen-model comparison, with this many epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_images("binarized_mnist", "train")
    valid = load_images("binarized_mnist", "valid")[::10]
    test = load_images("binarized_mnist", "test")[:: args.every]
    if args.frozen_epochs:
        return frozen_model(args, out, train, test)
    done = {}
    if (out / "results.jsonl").exists():  # finished runs of the same settings are not redone
        for line in (out / "results.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row["epochs"] == args.epochs and row["iw_samples"] == args.iw_samples and row["test_images"] == len(test):
                done[row["name"]] = row
    rows = []
    for seed in args.seeds:
        for auxiliary in (False, True):
            name = f"{'aux_vae' if auxiliary else 'vae'}_s{seed}"
            if name in done:
                rows.append(done[name])
                continue
            pyro.set_rng_seed(seed)
            model, guide = build(auxiliary, args.z_dim, args.hidden, args.a_dim)
            trainer = Trainer(
                model, guide, WarmupTrace_ELBO(schedule=1.0),
                lambda epoch: make_batches(train, 100, shuffle=True, seed=seed, epoch=epoch),
                lambda epoch: make_batches(valid, 500, shuffle=False),
                lr=args.lr, seed=seed, out_dir=out / name, progress=False,
            )
            start = time.perf_counter()
            trainer.fit(args.epochs)
            seconds = time.perf_counter() - start
            model.eval()
            guide.eval()
            pyro.set_rng_seed(seed)
            with torch.no_grad():
                result = evaluate(model, guide, make_batches(test, 50, shuffle=False), num_samples=args.iw_samples)
            row = {
                "name": name, "seed": seed, "auxiliary": auxiliary, "epochs": args.epochs,
                "test_images": len(test), "iw_samples": args.iw_samples, "train_seconds": seconds,
                "neg_elbo": result["elbo"]["total"], "neg_iw": result["iwae"]["total"],
                "parameters": sum(p.numel() for m in (model, guide) for p in m.parameters()),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    print("\n| model | seed | test -ELBO | test -IW (K=%d) | gap | train s |" % args.iw_samples)
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {'VAE + a' if r['auxiliary'] else 'VAE'} | {r['seed']} | {r['neg_elbo']:.2f} | {r['neg_iw']:.2f} | "
              f"{r['neg_elbo'] - r['neg_iw']:.2f} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
