"""
RNN-SPN training-step time: the Pyro step (``SVI`` with ``Trace_ELBO``, the empty guide and
``ClippedAdam``, as :mod:`pyro_seq.contrib.spatial.recipe` trains it) against a hand-written pure-PyTorch step of
the same loss (the same network's logits, ``F.cross_entropy(reduction="sum")``, ``torch.optim.Adam``
after gradient-norm clipping), interleaved in the same run on the same batches, for each
down-sampling factor; with ``--kinds`` also the FFN-SPN and the CNN, and with ``--stochastic`` the
stochastic-attention RNN-SPN (its floor: a reparameterised draw, the hand-written ELBO).

    PYRO_SEQ_DATA=../shared/data python benchmarks/bench_spn_step.py --downsample 1 2 3 4 --steps 10
    PYRO_SEQ_DATA=../shared/data python benchmarks/bench_spn_step.py --device cuda --batch-size 100

Prints a JSON summary; record it in BENCHMARKS.md with the machine and date.
"""

import argparse
import json
import platform
import time

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyro_seq.contrib.spatial.data import ClutteredBatches, load_cluttered_mnist
from pyro_seq.contrib.spatial.recipe import DEFAULT_CHANNELS, build_spn


def pure_loss(model, guide, x, y):
    """The same objective without Pyro: the digits' summed cross-entropy (minus the ELBO's other terms)."""
    if not model.stochastic_attention:
        logits, _ = model.logits(x)
        return F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="sum")
    loc, scale = guide.attention_params(x)  # [B, D, 6]
    theta = loc + scale * torch.randn_like(scale)
    logits, _ = model.logits(x, theta)
    prior = torch.distributions.Normal(model.identity, model.prior_scale)
    log_ratio = torch.distributions.Normal(loc, scale).log_prob(theta).sum() - prior.log_prob(theta).sum()
    return F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="sum") + log_ratio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--downsample", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--kinds", nargs="+", default=["rnn-spn"], choices=["rnn-spn", "ffn-spn", "cnn"])
    parser.add_argument("--stochastic", action="store_true", help="also the stochastic-attention rnn-spn")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    data = load_cluttered_mnist("valid", num_images=args.batch_size * (args.steps + 1), data_root=args.data_root)
    batches = [b.to(device) for b in ClutteredBatches(data, args.batch_size)]
    arms = [(k, d, False) for k in args.kinds for d in args.downsample] + ([("rnn-spn", 3.0, True)] if args.stochastic else [])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows = []
    for kind, factor, stochastic in arms:
        config = {"model": {"canvas": 100, "num_digits": 3, "downsample": factor, "channels": DEFAULT_CHANNELS[kind]}, "guide": {}}
        if stochastic:
            config["model"]["stochastic_attention"] = True
        pyro.clear_param_store()
        torch.manual_seed(0)
        model, guide, loss = build_spn(kind, config)
        model.to(device), guide.to(device)
        svi = SVI(model, guide, ClippedAdam({"lr": 1e-3, "clip_norm": 5.0}), loss)
        torch.manual_seed(0)
        ref_model, ref_guide, _ = build_spn(kind, config)
        ref_model.to(device), ref_guide.to(device)
        params = list(ref_model.parameters()) + list(ref_guide.parameters())
        opt = torch.optim.Adam(params, lr=1e-3)

        def pure_step(x, y):
            opt.zero_grad(set_to_none=True)
            value = pure_loss(ref_model, ref_guide, x, y)
            value.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            return float(value.detach())

        steps = {"pyro": lambda x, y: svi.step(x, y), "pure": pure_step}
        times = {k: 0.0 for k in steps}
        for fn in steps.values():  # warm-up
            fn(batches[0].x, batches[0].y)
        for batch in batches[1:]:
            for name, fn in steps.items():
                sync()
                t0 = time.perf_counter()
                fn(batch.x, batch.y)
                sync()
                times[name] += time.perf_counter() - t0
        n = len(batches) - 1
        rows.append({"kind": kind, "downsample": factor, "stochastic_attention": stochastic, "glimpse": model.side,
                     "ms_per_step_pyro": 1000 * times["pyro"] / n, "ms_per_step_pure": 1000 * times["pure"] / n,
                     "ratio_pyro_to_pure": times["pyro"] / times["pure"]})
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "spn_step", "batch": args.batch_size, "steps": len(batches) - 1, "rows": rows,
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__} threads {torch.get_num_threads()}"
        + (f" {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "device": str(device), "pyro": pyro.__version__, "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
