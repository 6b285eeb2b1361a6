"""
An SRNN on polyphonic music
===========================

Tutorial: an SRNN on polyphonic music with a plain Pyro SVI loop.

This is what ``pyro-seq train srnn`` does, written out with nothing but Pyro
and pyro_seq's model, guide, loss and data pieces:

1. load piano rolls and make length-grouped, padded, masked mini-batches;
2. build ``SRNN`` (the Pyro model) and ``SRNNGuide`` (the structured guide);
3. train with ``SVI`` and a warm-up ELBO whose β rises from 0.2 to 1;
4. report the test bound (ELBO and importance-sampled, nats per frame);
5. plot the KL per time step of a test piece and a generated piano roll.

Run::

    python tutorials/srnn_music.py                      # chorales, ~5 minutes on 2 CPU cores
    python tutorials/srnn_music.py --data jsb --data-root ../shared/data
    python tutorials/srnn_music.py --smoke              # seconds (used by the tests)
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import SVI  # noqa: E402
from pyro.optim import ClippedAdam  # noqa: E402

from pyro_seq.bounds import evaluate  # noqa: E402
from pyro_seq.data import load_music, make_batches  # noqa: E402
from pyro_seq.distributions import kl_per_step  # noqa: E402
from pyro_seq.guides import SRNNGuide  # noqa: E402
from pyro_seq.losses import LinearSchedule, WarmupTraceMeanField_ELBO  # noqa: E402
from pyro_seq.midi import piano_roll_png  # noqa: E402
from pyro_seq.models import SRNN  # noqa: E402


def posterior_kl_per_step(model, guide, x):
    """KL(q(z_t | z_{t-1}, x) || p(z_t | z_{t-1}, d_t)) along one posterior path: ``[time]``."""
    with torch.no_grad():
        x, mask, lengths = model.check(x)
        q = guide.posterior_chain(x, mask, lengths)  # computes d_t and shares it with the model
        q.rsample()
        p = model.prior_chain(model.deterministic(x), mask)
        return kl_per_step(q, p)[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description="SRNN on polyphonic music with a Pyro SVI loop")
    parser.add_argument("--data", default="chorales")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="runs/tutorial_srnn")
    parser.add_argument("--smoke", action="store_true", help="tiny model, few sequences, 2 epochs")
    args = parser.parse_args(argv)

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. data
    train = list(load_music(args.data, "train", data_root=args.data_root))
    test = list(load_music(args.data, "test", data_root=args.data_root))
    sizes = dict(d_dim=300, z_dim=100, hidden_dim=500)
    if args.smoke:
        train, test, args.epochs = train[:24], test[:8], 2
        sizes = dict(d_dim=16, z_dim=4, hidden_dim=16)

    # 2. model and guide
    model = SRNN(x_dim=88, **sizes)
    guide = SRNNGuide(model, kind="smoother", res_q=True)

    # 3. SVI with a warm-up ELBO (analytic KL per step along the sampled path)
    elbo = WarmupTraceMeanField_ELBO(schedule=LinearSchedule(0.2, 1.0, steps=500))
    svi = SVI(model, guide, ClippedAdam({"lr": 1e-3, "clip_norm": 10.0}), elbo)
    for epoch in range(args.epochs):
        total, frames = 0.0, 0
        for batch in make_batches(train, batch_size=16, shuffle=True, seed=0, epoch=epoch):
            total += svi.step(batch.x, batch.mask)  # -ELBO_beta of the batch, nats
            frames += int(batch.mask.sum())
            elbo.step += 1  # advance the warm-up schedule
        print(f"epoch {epoch + 1:3d}  loss {total / frames:.4f} nats/frame  beta {elbo.beta:.2f}")

    # 4. test bounds, both normalisations
    result = evaluate(model, guide, make_batches(test, 16, shuffle=False), num_samples=20)
    for bound in ("elbo", "iwae"):
        r = result[bound]
        print(
            f"test -{bound.upper()}: {r['total']:.4f} nats/frame (total nats / total frames), "
            f"{r['seq_mean']:.4f} (mean over sequences)"
        )

    # 5. pictures: KL per time step of one test piece, and a generated piece
    x = torch.as_tensor(test[0]).unsqueeze(0)  # [1, time, 88]
    kl = posterior_kl_per_step(model, guide, x)
    fig, ax = plt.subplots(2, 1, figsize=(8, 4), sharex=True)
    ax[0].imshow(x[0].T.numpy(), aspect="auto", origin="lower", cmap="Greys", interpolation="nearest")
    ax[0].set_ylabel("key")
    ax[1].plot(kl.numpy())
    ax[1].set_ylabel("KL (nats)")
    ax[1].set_xlabel("time step")
    fig.suptitle("a test piece and the KL of its posterior per step")
    fig.savefig(out / "kl_per_step.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    piano_roll_png(model.generate(1, 64)[0], out / "sample.png", title="SRNN sample")
    print(f"figures in {out}")
    return result


if __name__ == "__main__":
    main()
