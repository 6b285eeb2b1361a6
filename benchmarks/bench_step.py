"""
SVI step time of a pyro_seq model against a hand-written pure-PyTorch step of
the same bound, timed in the same run on the same batches.

    python benchmarks/bench_step.py --model srnn --data-root ../shared/data [--epochs 1]
    python benchmarks/bench_step.py --model zforcing --data-root ../shared/data
    python benchmarks/bench_step.py --model lvae --data-root ../shared/data --max-batches 60
    python benchmarks/bench_step.py --model adgm --data-root ../shared/data --max-batches 40

Sizes: SRNN at the paper's music size (Fraccaro et al. 2016): d = 300, z = 100,
a = 300, MLP width 500; Z-Forcing at the size pyro_seq trains on music
(emb 128, h = b = 256, z = 32, MLP width 256) with the auxiliary cost and the
backward-prediction loss on (w = 1, w_b = 1). Batch 16, JSB Chorales training
split grouped by length. The Ladder VAE at the paper's MNIST size (5 layers,
z 64-32-16-8-4, blocks of two layers 512-256-128-64-32, batch norm) with the
ladder guide, batch 256 of the fixed binarized MNIST (it has no per-step form). The ADGM at the
released code's MNIST size (every network 500-500, z = a = 100) with the auxiliary guide and
:class:`~pyro_seq.losses.SemiSupervised_ELBO` (labels enumerated by ``TraceEnum_ELBO``), 100
labelled + 100 unlabelled dynamically binarized MNIST images per step; its floor is
``reference.semi_supervised_loss`` (an explicit loop over the ten classes). Three Pyro variants are timed: the fast form (one
sequence-level latent site and one emission site) with Pyro's validation on (the
default) and off, and the readable ``pyro.markov`` form (one site per step) on a
few batches. The floor is :mod:`pyro_seq.reference` (``srnn_elbo`` /
``zforcing_elbo``) + the same optimiser (ClippedAdam), driven by plain
``loss.backward(); opt.step()``.
Prints a JSON summary; record it in BENCHMARKS.md with the machine and date.

``--emission made`` (SRNN and Z-Forcing) gives both sides the autoregressive MADE emission
(:class:`~pyro_seq.distributions.MADEBernoulli`, one hidden layer of the MLP width) in place of the
independent Bernoulli; the floor then scores it with the masked products written out in one pass
(``reference.made_log_prob(..., key_loop=False)``), so the ratio is the Pyro overhead of that model.

On a GPU: ``--device cuda`` moves both sides and every batch (pinned, non-blocking) to the device
and synchronises around each timed step; ``--amp bf16`` adds a fourth arm, the Pyro fast form
trained under ``torch.autocast(dtype=torch.bfloat16)`` on its own copy of the model, and reports
its mean training loss per frame over the second half of the timed steps beside the float32
arm's, so the speed comes with the bound it reaches.
"""

import argparse
import functools
import itertools
import json
import platform
import time

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import ClippedAdam
from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam

from pyro_seq.data import load_semi_supervised, load_sequences, make_batches, to_device
from pyro_seq.guides import SemiSupervisedGuide, LadderGuide, SRNNGuide, ZForcingGuide
from pyro_seq.losses import LinearSchedule, SemiSupervised_ELBO, WarmupTrace_ELBO, ZForcingTrace_ELBO
from pyro_seq.models import ADGM, EMISSIONS, SRNN, LadderVAE, ZForcing
from pyro_seq.reference import ladder_elbo, semi_supervised_loss, srnn_elbo, zforcing_elbo


def build_srnn(seed, fast=True, emission="bernoulli"):
    torch.manual_seed(seed)
    model = SRNN(x_dim=88, d_dim=300, z_dim=100, hidden_dim=500, fast=fast, emission=emission)
    guide = SRNNGuide(model, kind="smoother", res_q=True, a_dim=300)
    return model, guide


def build_zforcing(seed, fast=True, emission="bernoulli"):
    torch.manual_seed(seed)
    model = ZForcing(
        x_dim=88, emb_dim=128, h_dim=256, z_dim=32, hidden_dim=256, fast=fast, emission=emission
    )
    guide = ZForcingGuide(model, auxiliary="z", backward_prediction=True)
    return model, guide


def build_lvae(seed, fast=True):
    torch.manual_seed(seed)
    model = LadderVAE()
    return model, LadderGuide(model)


def build_adgm(seed, fast=True):
    torch.manual_seed(seed)
    model = ADGM()
    return model, SemiSupervisedGuide(model)


def lvae_floor(model, guide, batch, beta):
    return -ladder_elbo(model, guide, batch.x[:, 0], beta=beta, by_hand=False).sum()


def adgm_floor(model, guide, batch, beta, alpha=50.0):
    return semi_supervised_loss(model, guide, *batch.args, alpha=alpha)[0]


def srnn_floor(model, guide, batch, beta):
    return -srnn_elbo(model, guide, batch.x, batch.mask, beta=beta, made_key_loop=False).sum()


def zforcing_floor(model, guide, batch, beta, w=1.0, w_b=1.0):
    elbo, aux, backward = zforcing_elbo(model, guide, batch.x, batch.mask, beta=beta, made_key_loop=False)
    return -(elbo.sum() + w * aux.sum() + w_b * backward.sum())


#: model -> (builder, Pyro loss, pure-PyTorch surrogate loss, sizes)
MODELS = {
    "srnn": (build_srnn, lambda schedule: WarmupTrace_ELBO(schedule=schedule), srnn_floor,
             dict(d=300, z=100, a=300, hidden=500)),
    "zforcing": (build_zforcing,
                 lambda schedule: ZForcingTrace_ELBO(schedule=schedule, aux_schedule=1.0, backward_weight=1.0),
                 zforcing_floor, dict(emb=128, h=256, b=256, z=32, hidden=256, aux_weight=1.0, backward_weight=1.0)),
    "lvae": (build_lvae, lambda schedule: WarmupTrace_ELBO(schedule=schedule), lvae_floor,
             dict(z=[64, 32, 16, 8, 4], hidden=[512, 256, 128, 64, 32], layers_per_block=2, batch_norm=True)),
    "adgm": (build_adgm, lambda schedule: SemiSupervised_ELBO(alpha=50.0), adgm_floor,
             dict(z=100, a=100, hidden=[500, 500], labelled=100, unlabelled=100, alpha=50.0)),
}
#: models without a per-step (pyro.markov) form
NO_MARKOV_FORM = {"lvae", "adgm"}
#: models with an ``emission`` option (``--emission``)
EMISSION_MODELS = {"srnn", "zforcing"}
#: default data set and batch size per model
DEFAULTS = {"srnn": ("jsb", 16), "zforcing": ("jsb", 16), "lvae": ("binarized_mnist", 256), "adgm": ("dynamic_mnist", 100)}


def _args(batch):
    return batch.args if hasattr(batch, "args") else (batch.x, batch.mask)


def _frames(batch):
    return batch.x_labelled.size(0) + batch.x_unlabelled.size(0) if hasattr(batch, "args") else int(batch.mask.sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--model", choices=sorted(MODELS), default="srnn")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--dataset", default=None, help="default: jsb (lvae: binarized_mnist)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 (lvae: 256)")
    parser.add_argument("--max-batches", type=int, default=None, help="time only the first N batches of each epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--markov-batches", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N]")
    parser.add_argument("--amp", choices=("off", "bf16"), default="off", help="also time a bfloat16 autocast arm")
    parser.add_argument("--emission", choices=EMISSIONS, default="bernoulli",
                        help="srnn / zforcing frame emission: bernoulli (independent keys) or made")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")

    build, make_loss, floor, sizes = MODELS[args.model]
    if args.model in EMISSION_MODELS:
        build, sizes = functools.partial(build, emission=args.emission), dict(sizes, emission=args.emission)
    elif args.emission != "bernoulli":
        raise SystemExit(f"--emission: only {sorted(EMISSION_MODELS)} have an emission option")
    args.dataset = args.dataset or DEFAULTS[args.model][0]
    args.batch_size = args.batch_size or DEFAULTS[args.model][1]
    torch.set_default_dtype(torch.float32)
    if args.model == "adgm":  # labelled + unlabelled mini-batches, binarized per step
        semi = load_semi_supervised(args.dataset, 10, args.seed, data_root=args.data_root).train

        def epoch_batches_of(epoch):
            return semi.batches(epoch, args.batch_size, 100, args.seed)
    else:
        train = load_sequences(args.dataset, "train", data_root=args.data_root)

        def epoch_batches_of(epoch):
            return make_batches(train.sequences, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch)
    schedule = LinearSchedule(0.2, 1.0, 1000)
    lr = {"lr": 1e-3, "clip_norm": 10.0}

    pyro.clear_param_store()

    def on_device(pair):
        return tuple(m.to(device) for m in pair)

    model, guide = on_device(build(args.seed))
    elbo = make_loss(schedule)
    svi = SVI(model, guide, ClippedAdam(dict(lr)), elbo)
    ref_model, ref_guide = on_device(build(args.seed))
    params = list(ref_model.parameters()) + list(ref_guide.parameters())
    opt = TorchClippedAdam(params, **lr)
    amp = None
    if args.amp != "off":
        amp_model, amp_guide = on_device(build(args.seed))
        amp_elbo = make_loss(schedule)
        amp = {"svi": SVI(amp_model, amp_guide, ClippedAdam(dict(lr)), amp_elbo), "elbo": amp_elbo}
    losses = {"pyro_fast": [], "pyro_fast_bf16": []}

    def pyro_step(batch, step):
        elbo.step = step
        return svi.step(*_args(batch))

    def amp_step(batch, step):
        amp["elbo"].step = step
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            return amp["svi"].step(*_args(batch))

    def pure_step(batch, step):
        opt.zero_grad()
        loss = floor(ref_model, ref_guide, batch, schedule(step))
        loss.backward()
        opt.step()
        return loss.item()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn, *a, record=None):
        sync()
        t0 = time.perf_counter()
        value = fn(*a)
        sync()
        if record is not None:
            per = 1 if hasattr(a[0], "args") else max(_frames(a[0]), 1)  # semi-supervised losses are per image already
            losses[record].append(value / per)
        return time.perf_counter() - t0

    times = {"pyro_fast": 0.0, "pyro_fast_novalidate": 0.0, "pure": 0.0}
    frames = 0
    step = 0
    batches = [to_device(b, device) for b in itertools.islice(epoch_batches_of(0), max(1, args.markov_batches))]
    # warm-up (allocator, first-call costs)
    pyro_step(batches[0], 0)
    pure_step(batches[0], 0)
    for epoch in range(args.epochs):
        epoch_batches = epoch_batches_of(epoch)
        for i, batch in enumerate(epoch_batches):
            if args.max_batches is not None and i >= args.max_batches:
                break
            batch = to_device(batch, device)
            pyro.enable_validation(True)
            times["pyro_fast"] += timed(pyro_step, batch, step, record="pyro_fast")
            if amp is not None:
                times["pyro_fast_bf16"] = times.get("pyro_fast_bf16", 0.0) + timed(amp_step, batch, step, record="pyro_fast_bf16")
            pyro.enable_validation(False)
            times["pyro_fast_novalidate"] += timed(pyro_step, batch, step)
            pyro.enable_validation(True)
            times["pure"] += timed(pure_step, batch, step)
            frames += _frames(batch)
            step += 1

    # the readable pyro.markov form on a few batches, against the floor on the same batches
    markov = {"pyro_markov": 0.0, "pure": 0.0}
    pyro.clear_param_store()
    m_model, m_guide = on_device(build(args.seed, fast=False))
    m_svi = SVI(m_model, m_guide, ClippedAdam(dict(lr)), make_loss(schedule))
    markov_batches = 0 if args.model in NO_MARKOV_FORM else args.markov_batches
    for batch in batches[:markov_batches]:
        markov["pyro_markov"] += timed(lambda b: m_svi.step(b.x, b.mask), batch)
        markov["pure"] += timed(pure_step, batch, step)

    n_batches = step
    result = {
        "benchmark": f"{args.model}_svi_step",
        "dataset": args.dataset,
        "sizes": dict(sizes, batch=args.batch_size),
        "epochs": args.epochs,
        "batches": n_batches,
        "frames_per_epoch": frames // args.epochs,
        "seconds_per_epoch": {k: v / args.epochs for k, v in times.items()},
        "ms_per_step": {k: 1000 * v / n_batches for k, v in times.items()},
        "ratio_pyro_fast_to_pure": times["pyro_fast"] / times["pure"],
        "ratio_pyro_fast_novalidate_to_pure": times["pyro_fast_novalidate"] / times["pure"],
        "markov_batches": markov_batches,
        "ratio_pyro_markov_to_pure": markov["pyro_markov"] / markov["pure"] if markov_batches else None,
        "markov_ms_per_step": {k: 1000 * v / markov_batches for k, v in markov.items()} if markov_batches else None,
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__} "
        f"threads {torch.get_num_threads()}"
        + (f" {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "device": str(device),
        "pyro": pyro.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    if amp is not None:
        half = lambda v: v[len(v) // 2 :] or v  # noqa: E731
        result["ratio_pyro_fast_bf16_to_pure"] = times["pyro_fast_bf16"] / times["pure"]
        result["train_loss_per_frame_second_half"] = {k: sum(half(v)) / len(half(v)) for k, v in losses.items() if v}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
