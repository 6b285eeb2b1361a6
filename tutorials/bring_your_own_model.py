"""
Bring your own model
====================

Tutorial: bring your own model.

A deep Markov model (DMM; Krishnan et al. 2017, arXiv:1609.09869) written here as a Pyro user
writes one (a plate over sequences, a ``pyro.markov`` loop, per-step sites ``z_t`` and ``x_t``,
masks for ragged lengths), trained on JSB Chorales with what pyro_seq adds around any such model:

1. a structured amortised guide built from the model itself: :class:`~pyro_seq.guides.AutoSequenceSmoother`
   (a backward GRU over the frames, :math:`q(z_t \\mid z_{t-1}, x_{t:T})`), trained with the
   warm-up ELBO :class:`~pyro_seq.losses.WarmupTrace_ELBO` and then with the importance-weighted
   objective :class:`~pyro_seq.losses.IWAE_ELBO`, both in a plain ``pyro.infer.SVI`` loop;
2. the same model with the guide of Pyro's DMM tutorial, written by hand here (a backward RNN and
   a combiner). It also implements Pyro's sequential Monte Carlo protocol (``init``/``step``, as
   :class:`~pyro.infer.SMCFilter` uses it), as does the model, so the filtering objective
   :class:`~pyro_seq.losses.FIVO_ELBO` can train the pair;
3. per-sequence test bounds (:func:`pyro_seq.bounds.evaluate`, nats per frame) and an ArviZ
   comparison of the two guides (:func:`pyro_seq.diagnostics.compare_guides`).

Run::

    python tutorials/bring_your_own_model.py --data-root ../shared/data [--seed 0]   # ~25 minutes on 2 CPU cores
    python tutorials/bring_your_own_model.py --data-root ../shared/data --smoke      # seconds (the tests)

Speed. A model written this way costs about 2.4x a hand-written PyTorch step of the same bound
(``benchmarks/byo_step.py``; BENCHMARKS.md). Two levers are the user's: ``pyro.enable_validation(False)``
once the model is known to be right, and a plain ``nn.Module`` registered once per call with
``pyro.module(name, self)`` in place of a ``PyroModule`` with plain sub-networks (which registers a
sub-network's parameters at every attribute access, so at every time step). Both together bring it
to about 1.6x.
"""

import argparse
import json
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.infer import SVI
from pyro.nn import PyroModule
from pyro.optim import ClippedAdam

from pyro_seq.bounds import evaluate
from pyro_seq.data import load_music, make_batches
from pyro_seq.diagnostics import compare_guides
from pyro_seq.fivo import SequentialGuide, SequentialModel
from pyro_seq.guides import AutoSequenceSmoother
from pyro_seq.losses import FIVO_ELBO, IWAE_ELBO, LinearSchedule, WarmupTrace_ELBO

# ----------------------------------------------------------------------------- the user's model


class DMM(SequentialModel, PyroModule):
    r"""
    A deep Markov model over binary frames:

    .. math::

        p(x_{1:T}, z_{1:T}) = \prod_t \mathcal{N}(z_t \mid \mu(z_{t-1}), \sigma^2(z_{t-1}))\,
            \mathrm{Bernoulli}(x_t \mid \mathrm{sigmoid}(f(z_t))),

    with gated transitions as in Pyro's DMM example. ``forward(x, mask)`` is the Pyro model;
    ``init``/``step`` are the same model one step at a time, for FIVO.
    """

    def __init__(self, x_dim=88, z_dim=16, hidden_dim=64, name="dmm"):
        super().__init__(name)  # the prefix of its parameters in Pyro's param store
        self.z_dim = z_dim
        self.gate = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, z_dim), nn.Sigmoid())
        self.proposed_mean = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, z_dim))
        self.linear_mean = nn.Linear(z_dim, z_dim)
        self.scale = nn.Linear(z_dim, z_dim)
        self.emit = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, x_dim))

    def transition(self, z_prev):  # [..., z_dim] -> p(z_t | z_{t-1})
        gate = self.gate(z_prev)
        loc = (1 - gate) * self.linear_mean(z_prev) + gate * self.proposed_mean(z_prev)
        scale = nn.functional.softplus(self.scale(nn.functional.relu(self.proposed_mean(z_prev)))) + 1e-3
        return dist.Normal(loc, scale).to_event(1)

    def emission(self, z):  # [..., z_dim] -> p(x_t | z_t) over the 88 keys
        return dist.Bernoulli(logits=self.emit(z)).to_event(1)

    def forward(self, x, mask):  # x [batch, T, 88], mask [batch, T] bool
        z = x.new_zeros(x.shape[0], self.z_dim)  # [batch, z_dim]
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t + 1}", self.transition(z).mask(mask[:, t]))
                pyro.sample(f"x_{t + 1}", self.emission(z).mask(mask[:, t]), obs=x[:, t])

    # Pyro's SMC protocol: every state value is [particles, batch, ...]
    def init(self, state, x, mask):
        with pyro.plate("sequences", x.shape[0]):
            state["z"] = pyro.sample("z_0", dist.Delta(x.new_zeros(x.shape[0], self.z_dim), event_dim=1))

    def step(self, state, x_t, mask_t):
        with pyro.plate("sequences", x_t.shape[0]):
            z = pyro.sample("z", self.transition(state["z"]).mask(mask_t))
            pyro.sample("x", self.emission(z).mask(mask_t), obs=x_t)
        state["z"] = z


class DMMGuide(SequentialGuide, PyroModule):
    """
    The guide of Pyro's DMM tutorial: a backward RNN over the frames and a combiner
    :math:`q(z_t \\mid z_{t-1}, h_t)` with :math:`h_t` summarising :math:`x_{t:T}`.
    """

    def __init__(self, x_dim=88, z_dim=16, rnn_dim=64, name="dmm_guide"):
        super().__init__(name)
        self.z_dim = z_dim
        self.rnn = nn.GRU(x_dim, rnn_dim, batch_first=True)
        self.z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.loc = nn.Linear(rnn_dim, z_dim)
        self.scale = nn.Linear(rnn_dim, z_dim)

    def summaries(self, x, mask):  # the RNN read backwards from each sequence's own last frame
        lengths = mask.sum(-1)
        order = torch.arange(x.shape[1], device=x.device)
        backwards = (lengths[:, None] - 1 - order).clamp(min=0)  # [batch, T]
        x_rev = x.gather(1, backwards[..., None].expand_as(x)) * mask[..., None]
        h_rev, _ = self.rnn(x_rev)  # [batch, T, rnn_dim]
        return h_rev.gather(1, backwards[..., None].expand_as(h_rev))  # h_t over x_{t:T}

    def combiner(self, z_prev, h_t):
        h = 0.5 * (torch.tanh(self.z_to_hidden(z_prev)) + h_t)
        return dist.Normal(self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-3).to_event(1)

    def forward(self, x, mask):
        h = self.summaries(x, mask)  # [batch, T, rnn_dim]
        z = x.new_zeros(x.shape[0], self.z_dim)
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t + 1}", self.combiner(z, h[:, t]).mask(mask[:, t]))

    def init(self, state, x, mask):  # the smoothing summaries come from the whole batch
        self._h, self._t = self.summaries(x, mask), 0
        with pyro.plate("sequences", x.shape[0]):
            pyro.sample("z_0", dist.Delta(x.new_zeros(x.shape[0], self.z_dim), event_dim=1))

    def step(self, state, x_t, mask_t):
        h_t, self._t = self._h[:, self._t], self._t + 1
        with pyro.plate("sequences", x_t.shape[0]):
            pyro.sample("z", self.combiner(state["z"], h_t).mask(mask_t))


# ----------------------------------------------------------------------------- training


def train(model, guide, elbo, train_set, steps, batch_size, lr, seed=0, log=print, name=""):
    """A plain Pyro SVI loop over shuffled length-grouped batches; returns seconds per step."""
    svi = SVI(model, guide, ClippedAdam({"lr": lr, "clip_norm": 10.0}), elbo)
    done, epoch, start = 0, 0, time.perf_counter()
    while done < steps:
        for batch in make_batches(train_set, batch_size, seed=seed, epoch=epoch):
            loss = svi.step(batch.x, batch.mask)
            if hasattr(elbo, "step"):
                elbo.step += 1  # advances the warm-up
            done += 1
            if done % 50 == 0 or done == steps:
                log(f"{name} step {done}: loss {loss / float(batch.mask.sum()):.4f} nats/frame")
            if done == steps:
                break
        epoch += 1
    return (time.perf_counter() - start) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description="a user-written DMM with pyro_seq's guides and objectives")
    parser.add_argument("--data", default="jsb")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--steps", type=int, default=1500, help="SVI steps with the warm-up ELBO, per guide")
    parser.add_argument("--particle-steps", type=int, default=150, help="then SVI steps with IWAE and FIVO")
    parser.add_argument("--max-length", type=int, default=64, help="training pieces cut to this many frames")
    parser.add_argument("--seed", type=int, default=0, help="seeds the parameters, the noise and the batch order")
    parser.add_argument("--out", default="runs/tutorial_byo")
    parser.add_argument("--smoke", action="store_true", help="tiny model, few pieces, few steps")
    args = parser.parse_args(argv)

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    sizes = dict(z_dim=4, hidden_dim=8) if args.smoke else dict(z_dim=16, hidden_dim=64)
    train_pieces = list(load_music(args.data, "train", data_root=args.data_root))
    test_pieces = list(load_music(args.data, "test", data_root=args.data_root))
    if args.smoke:
        train_pieces, test_pieces = train_pieces[:8], [p[:20] for p in test_pieces[:4]]
        args.steps, args.particle_steps, args.max_length = 6, 2, 20
    train_set = [p[i : i + args.max_length] for p in train_pieces for i in range(0, len(p), args.max_length)]
    test_batches = list(make_batches(test_pieces, 16, shuffle=False))
    log = print

    num_samples = 21 if args.smoke else 100

    def test_bounds(model, guide):  # -ELBO and -IWAE(K = num_samples), total nats / total frames
        with torch.no_grad():
            b = evaluate(model, guide, test_batches, num_samples=num_samples)
        return {k: b[k]["total"] for k in ("elbo", "iwae")}

    def snapshot(module):
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def moved(module, before):  # the parameter tensors that training changed, of all
        after = module.state_dict()
        return sum(not torch.equal(before[k], after[k]) for k in before), len(before)

    # 1. the autoguide, built from the model, with the warm-up ELBO then IWAE (K = 4)
    dmm = DMM(**sizes)
    initial = {"autoguide model": snapshot(dmm)}
    auto = AutoSequenceSmoother(dmm, rnn_dim=sizes["hidden_dim"], hidden_dim=sizes["hidden_dim"])
    warmup = WarmupTrace_ELBO(schedule=LinearSchedule(0.2, 1.0, steps=max(args.steps // 2, 1)))
    seconds = {"autoguide": train(dmm, auto, warmup, train_set, args.steps, 16, 3e-3, args.seed, log, "autoguide")}
    after_elbo = {"autoguide": test_bounds(dmm, auto)}
    train(dmm, auto, IWAE_ELBO(num_particles=4), train_set, args.particle_steps, 16, 1e-3, args.seed, log, "autoguide, IWAE")

    # 2. the hand-written guide on a second copy of the model, warm-up ELBO then FIVO (K = 4)
    # A second model needs its own name: two PyroModules with the same name share one set of
    # parameters in the param store, and SVI would optimise the first model's copy, not this one.
    pyro.set_rng_seed(args.seed)
    dmm_hand = DMM(**sizes, name="dmm_hand")
    hand = DMMGuide(z_dim=sizes["z_dim"], rnn_dim=sizes["hidden_dim"])
    initial.update({"hand-written model": snapshot(dmm_hand), "hand-written guide": snapshot(hand)})
    warmup = WarmupTrace_ELBO(schedule=LinearSchedule(0.2, 1.0, steps=max(args.steps // 2, 1)))
    seconds["hand-written"] = train(dmm_hand, hand, warmup, train_set, args.steps, 16, 3e-3, args.seed, log, "hand-written")
    after_elbo["hand-written"] = test_bounds(dmm_hand, hand)
    train(dmm_hand, hand, FIVO_ELBO(num_particles=4, max_plate_nesting=1), train_set, args.particle_steps, 16, 1e-3, args.seed, log, "hand-written, FIVO")

    # 3. test bounds after the particle objectives, and the ArviZ comparison
    bounds = {"autoguide": test_bounds(dmm, auto), "hand-written": test_bounds(dmm_hand, hand)}
    with torch.no_grad():
        table = compare_guides(
            {"autoguide (own model)": (dmm, auto), "hand-written (own model)": (dmm_hand, hand)},
            test_batches,
            num_samples=num_samples,
            seed=args.seed,
        )
    result = {
        "data": args.data,
        "seed": args.seed,
        "steps": args.steps,
        "particle_steps": args.particle_steps,
        "seconds_per_step": seconds,
        "bounds_after_warmup_elbo": after_elbo,
        "bounds": bounds,
        "parameters_moved": {
            name: moved(module, initial[name])
            for name, module in [("autoguide model", dmm), ("hand-written model", dmm_hand), ("hand-written guide", hand)]
        },
        "num_sequences": sum(int(b.x.shape[0]) for b in test_batches),
        "compare": table.reset_index().rename(columns={"index": "guide"}).to_dict("records"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    for name, b in result["bounds"].items():
        a = after_elbo[name]
        log(f"{name}: test -ELBO {a['elbo']:.4f}, -IWAE(K={num_samples}) {a['iwae']:.4f} nats/frame after the warm-up ELBO, "
            f"{b['elbo']:.4f} / {b['iwae']:.4f} after the particle objective; {seconds[name]:.3f} s per warm-up step")
    log(table.to_string())
    return result


if __name__ == "__main__":
    main()
