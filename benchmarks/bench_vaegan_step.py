"""
VAE/GAN training-step time: the Pyro step (:class:`~pyro_seq.losses.VAEGANLoss` through
``SVI`` with :func:`~pyro_seq.losses.vaegan_optim`) against a hand-written pure-PyTorch step of
the same three routed losses (:func:`pyro_seq.reference.vaegan_terms` +
:func:`~pyro_seq.losses.vaegan_backward` + one ``torch.optim.Adam`` per network), timed in the
same run on the same batches; the plain VAE's ``Trace_ELBO`` step is timed beside them.

    PYRO_SEQ_DATA=../shared/data python benchmarks/bench_vaegan_step.py --data faces --width 0.125 --steps 20
    PYRO_SEQ_DATA=../shared/data python benchmarks/bench_vaegan_step.py --data faces --width 1 --device cuda

Prints a JSON summary; record it in BENCHMARKS.md with the machine and date.
"""

import argparse
import json
import platform
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyro_seq.guides import VAEGANGuide
from pyro_seq.losses import VAEGANLoss, vaegan_backward, vaegan_optim, vaegan_parameters
from pyro_seq.models import VAEGAN
from pyro_seq.reference import vaegan_terms
from pyro_seq.data.image_batches import IMAGE_DATA, image_batches, load_image_split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", choices=sorted(IMAGE_DATA), default="faces")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--z-dim", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    size = IMAGE_DATA[args.data]
    train, _ = load_image_split(args.data, "train", args.data_root)
    batches = [b.to(device) for b in image_batches(train, args.batch_size, shuffle=True, seed=0)]
    batches = [batches[i % len(batches)] for i in range(args.steps + 1)]

    def build(likelihood="features"):
        torch.manual_seed(0)
        model = VAEGAN(image_size=size, z_dim=args.z_dim, width=args.width, likelihood=likelihood).to(device)
        return model, VAEGANGuide(model).to(device)

    pyro.clear_param_store()
    model, guide = build()
    loss = VAEGANLoss()
    svi = SVI(model, guide, vaegan_optim(lr=3e-4), loss)
    ref_model, ref_guide = build()
    groups = vaegan_parameters(ref_model, ref_guide)
    opts = [torch.optim.Adam(ps, lr=3e-4, betas=(0.5, 0.999)) for ps in groups.values()]
    vae_model, vae_guide = build("pixels")
    vae_svi = SVI(vae_model, vae_guide, ClippedAdam({"lr": 3e-4, "betas": (0.5, 0.999)}), Trace_ELBO())

    def pure_step(x):
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        terms = vaegan_terms(ref_model, ref_guide, x)
        vaegan_backward(terms, groups, loss.gamma, 1.0, loss.equilibrium, loss.margin)
        for opt in opts:
            opt.step()
        return float((terms["kl"] - terms["log_likelihood"]).detach())

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    arms = {"pyro_vaegan": lambda x: svi.step(x), "pure_vaegan": pure_step, "pyro_vae": lambda x: vae_svi.step(x)}
    times = {k: 0.0 for k in arms}
    for name, fn in arms.items():  # warm-up
        fn(batches[0].x)
    for batch in batches[1:]:
        for name, fn in arms.items():
            sync()
            t0 = time.perf_counter()
            fn(batch.x)
            sync()
            times[name] += time.perf_counter() - t0
    n = len(batches) - 1
    result = {
        "benchmark": "vaegan_step",
        "data": args.data,
        "sizes": {"image": size, "width": args.width, "z": args.z_dim, "batch": args.batch_size},
        "steps": n,
        "ms_per_step": {k: 1000 * v / n for k, v in times.items()},
        "ratio_pyro_to_pure": times["pyro_vaegan"] / times["pure_vaegan"],
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__} threads {torch.get_num_threads()}"
        + (f" {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "device": str(device),
        "pyro": pyro.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
