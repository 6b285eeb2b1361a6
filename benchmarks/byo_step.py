"""
SVI step time of a user-written ``pyro.markov`` model against a hand-written pure-PyTorch step of
the same bound, timed in the same run on the same batches.

    python benchmarks/byo_step.py --data-root ../shared/data [--batches 20 --repeats 3]

The model and the hand-written guide are the deep Markov model of
``tutorials/bring_your_own_model.py`` (z = 16, MLP and GRU width 64), exactly as a Pyro user writes
them: a plate over sequences, a ``pyro.markov`` loop, one ``z_t`` and one ``x_t`` site per step.
The batches are JSB Chorales training pieces cut to 64 frames as in the tutorial, keeping the
full-length cuts (batch 16 x 64 frames). The floor (``floor_loss``
below) computes the same -ELBO with the same modules and the same noise (checked to 1e-10 in float64
before timing) without Pyro, with the same optimiser (ClippedAdam, clip 10).

Arms, interleaved batch by batch after one untimed pass over every batch (lazy set-up, caches):

- floor: the pure-PyTorch step;
- ``Trace_ELBO`` with the hand-written guide, Pyro's validation on (the default) and off;
- ``Trace_ELBO`` with :class:`~pyro_seq.guides.AutoSequenceSmoother` in place of the hand-written
  guide (a different guide network, so its ratio includes that guide's own extra work), validation
  on and off;
- the same model and guide as plain ``nn.Module`` classes registered once per call with
  ``pyro.module`` (Pyro's DMM example style) instead of ``PyroModule`` (which registers a
  sub-network's parameters at each attribute access, so at every time step).

Every arm has its own parameters (distinct names or modules in Pyro's parameter store).

``JitTrace_ELBO`` is not an arm: Pyro's JIT cannot trace the tutorial's guide (a ``PyroModule``
GRU's flat weights reach the traced graph as constants that require grad).

Prints a JSON summary; record it in BENCHMARKS.md with the machine and date.
"""

import argparse
import importlib.util
import itertools
import json
import math
import platform
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam
from torch.distributions.utils import _standard_normal

from pyro_seq.data import load_music, make_batches
from pyro_seq.guides import AutoSequenceSmoother

TUTORIAL = Path(__file__).resolve().parents[1] / "tutorials" / "bring_your_own_model.py"
LOG_2PI = math.log(2 * math.pi)


def load_tutorial():
    spec = importlib.util.spec_from_file_location("bring_your_own_model", TUTORIAL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def normal_log_density(value, loc, scale):  # summed over the last dimension
    return (-0.5 * ((value - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)


def floor_loss(model, guide, x, mask):
    """
    The -ELBO of the tutorial's DMM with its hand-written guide, written out in PyTorch: one
    reparameterised draw per sequence, the guide's noise drawn in the same order as Pyro draws it.

    :param x: frames ``[batch, T, 88]``
    :param mask: ``[batch, T]`` bool
    :returns: the summed -ELBO (a scalar)
    """
    h = guide.summaries(x, mask)  # [batch, T, rnn_dim]
    z_prev = x.new_zeros(x.shape[0], guide.z_dim)  # [batch, z_dim]
    elbo = x.new_zeros(x.shape[0])  # [batch]
    for t in range(x.shape[1]):
        # guide q(z_t | z_{t-1}, h_t)
        hidden = 0.5 * (torch.tanh(guide.z_to_hidden(z_prev)) + h[:, t])
        q_loc, q_scale = guide.loc(hidden), F.softplus(guide.scale(hidden)) + 1e-3  # [batch, z_dim]
        z = q_loc + q_scale * _standard_normal(q_loc.shape, dtype=x.dtype, device=x.device)
        # model p(z_t | z_{t-1}) (gated transition) and p(x_t | z_t)
        gate = model.gate(z_prev)
        proposed = model.proposed_mean(z_prev)
        p_loc = (1 - gate) * model.linear_mean(z_prev) + gate * proposed
        p_scale = F.softplus(model.scale(F.relu(proposed))) + 1e-3
        log_px = -F.binary_cross_entropy_with_logits(model.emit(z), x[:, t], reduction="none").sum(-1)
        step = normal_log_density(z, p_loc, p_scale) + log_px - normal_log_density(z, q_loc, q_scale)
        elbo = elbo + step * mask[:, t]
        z_prev = z
    return -elbo.sum()


def plain_module(tutorial_class, name):
    """
    The tutorial's ``PyroModule`` class rewritten the way Pyro's DMM example writes it: a plain
    ``nn.Module`` whose ``forward`` registers all its parameters once per call with
    ``pyro.module`` (a ``PyroModule`` registers a sub-network's parameters on every attribute
    access, i.e. at every time step).
    """

    class Plain(torch.nn.Module):
        def __init__(self, source):
            super().__init__()
            self.z_dim = source.z_dim
            for child_name, child in source._modules.items():
                self.add_module(child_name, child)

        def forward(self, *args, **kwargs):
            pyro.module(name, self)
            return tutorial_class.forward(self, *args, **kwargs)

    for method in ("transition", "emission", "summaries", "combiner"):
        if hasattr(tutorial_class, method):
            setattr(Plain, method, getattr(tutorial_class, method))
    Plain.__name__ = f"Plain{tutorial_class.__name__}"
    return Plain


_BUILDS = itertools.count()


def build(tutorial, seed, auto=False, plain=False, dtype=torch.float32):
    torch.manual_seed(seed)
    number = next(_BUILDS)
    model = tutorial.DMM(z_dim=16, hidden_dim=64, name=f"dmm_{number}").to(dtype)
    guide = None if auto else tutorial.DMMGuide(z_dim=16, rnn_dim=64, name=f"dmm_guide_{number}").to(dtype)
    if plain:
        model = plain_module(tutorial.DMM, f"dmm_{number}")(model)
        guide = guide and plain_module(tutorial.DMMGuide, f"dmm_guide_{number}")(guide)
    if auto:
        guide = AutoSequenceSmoother(model, rnn_dim=64, hidden_dim=64)
    return model, guide


def check_floor(tutorial, batch):
    """The floor equals Pyro's Trace_ELBO loss on the same noise (float64), for both module styles."""
    gaps = []
    for plain in (False, True):
        pyro.clear_param_store()
        model, guide = build(tutorial, 0, plain=plain, dtype=torch.float64)
        x, mask = batch.x.double(), batch.mask
        torch.manual_seed(1)
        pyro_loss = Trace_ELBO().differentiable_loss(model, guide, x, mask)
        torch.manual_seed(1)
        floor = floor_loss(model, guide, x, mask)
        gaps.append(abs(pyro_loss.item() - floor.item()))
        if gaps[-1] > 1e-10 * abs(floor.item()):
            raise AssertionError(f"the floor differs from Trace_ELBO by {gaps[-1]}")
    return max(gaps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--batches", type=int, default=20, help="timed batches of 16 x 64 frames")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the batches")
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)

    tutorial = load_tutorial()
    pieces = list(load_music("jsb", "train", data_root=args.data_root))
    cuts = [p[i : i + 64] for p in pieces for i in range(0, len(p), 64)]
    cuts = [c for c in cuts if len(c) == 64]
    batches = list(make_batches(cuts, 16, seed=0))
    batches = [b for b in batches if b.x.shape[0] == 16][: args.batches]
    gap = check_floor(tutorial, batches[0])

    arms = {}

    def pyro_arm(name, elbo, auto=False, plain=False, validate=True):
        model, guide = build(tutorial, 0, auto=auto, plain=plain)
        svi = SVI(model, guide, ClippedAdam({"lr": args.lr, "clip_norm": 10.0}), elbo)

        def step(batch):
            pyro.enable_validation(validate)
            try:
                svi.step(batch.x, batch.mask)
            finally:
                pyro.enable_validation(True)

        arms[name] = step

    def floor_arm():
        model, guide = build(tutorial, 0)
        params = list(model.parameters()) + list(guide.parameters())
        optim = TorchClippedAdam(params, lr=args.lr, clip_norm=10.0)

        def step(batch):
            optim.zero_grad()
            floor_loss(model, guide, batch.x, batch.mask).backward()
            optim.step()

        arms["pure PyTorch floor"] = step

    floor_arm()
    pyro_arm("Trace_ELBO, hand-written guide", Trace_ELBO())
    pyro_arm("Trace_ELBO, hand-written guide, validation off", Trace_ELBO(), validate=False)
    pyro_arm("Trace_ELBO, AutoSequenceSmoother", Trace_ELBO(), auto=True)
    pyro_arm("Trace_ELBO, AutoSequenceSmoother, validation off", Trace_ELBO(), auto=True, validate=False)
    pyro_arm("nn.Module + pyro.module, Trace_ELBO, hand-written guide", Trace_ELBO(), plain=True)
    pyro_arm("nn.Module + pyro.module, Trace_ELBO, hand-written guide, validation off", Trace_ELBO(), plain=True, validate=False)
    pyro_arm("nn.Module + pyro.module, Trace_ELBO, AutoSequenceSmoother, validation off", Trace_ELBO(), auto=True, plain=True, validate=False)

    for batch in batches:  # untimed: lazy autoguide set-up, allocator warm-up
        for step in arms.values():
            step(batch)
    seconds = {name: 0.0 for name in arms}
    for _ in range(args.repeats):
        for batch in batches:
            for name, step in arms.items():
                start = time.perf_counter()
                step(batch)
                seconds[name] += time.perf_counter() - start
    steps = args.repeats * len(batches)
    floor_ms = 1000 * seconds["pure PyTorch floor"] / steps
    rows = {name: {"ms_per_step": 1000 * s / steps, "ratio_to_floor": 1000 * s / steps / floor_ms} for name, s in seconds.items()}
    summary = {
        "benchmark": "byo_step",
        "model": "tutorial DMM (z 16, width 64), JSB training cuts 16 x 64 frames",
        "timed_steps_per_arm": steps,
        "floor_check_abs_gap_float64": gap,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "arms": rows,
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
