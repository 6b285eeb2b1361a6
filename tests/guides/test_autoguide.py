"""
The structured autoguides (:mod:`pyro_seq.guides.autoguide`) on models written by hand:
a deep Markov model as a Pyro user writes it, the per-step linear Gaussian SSM against its
exact Kalman log-likelihood, models they cannot serve, and the residual parameterisation.
"""

import math
import sys
import textwrap
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_seq.bounds import evaluate, importance_bounds
from pyro_seq.diagnostics import latent_health
from pyro_seq.guides import AutoSequenceFilter, AutoSequenceGuide, AutoSequenceSmoother
from pyro_seq.losses import LinearSchedule, WarmupTrace_ELBO
from pyro_seq.losses.particle import trace_log_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_lgssm import make_data as make_lgssm_data  # noqa: E402
from test_lgssm import make_model as make_lgssm  # noqa: E402

X_DIM, Z_DIM, HIDDEN, T = 6, 2, 8, 7
LENGTHS = [7, 3, 5, 7, 1, 6]
GUIDES = [AutoSequenceSmoother, AutoSequenceFilter]


class DeepMarkovModel(nn.Module):
    """A deep Markov model (Krishnan et al. 2017) written as a Pyro user would: Bernoulli keys."""

    def __init__(self, x_dim=X_DIM, z_dim=Z_DIM, hidden=HIDDEN):
        super().__init__()
        self.z_dim = z_dim
        self.trans = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim))
        self.emit = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.z_0 = nn.Parameter(torch.zeros(z_dim))

    def forward(self, x, mask=None):
        pyro.module("dmm", self)
        batch, time, _ = x.shape
        if mask is None:
            mask = torch.ones(batch, time, dtype=torch.bool)
        with pyro.plate("sequences", batch):
            z = self.z_0.expand(batch, self.z_dim)
            for t in pyro.markov(range(1, time + 1)):
                loc, raw_scale = self.trans(z).chunk(2, dim=-1)
                z = pyro.sample(
                    f"z_{t}",
                    dist.Normal(loc, F.softplus(raw_scale) + 0.01).mask(mask[:, t - 1 : t]).to_event(1),
                )
                pyro.sample(
                    f"obs_x_{t}",
                    dist.Bernoulli(logits=self.emit(z)).mask(mask[:, t - 1 : t]).to_event(1),
                    obs=x[:, t - 1],
                )


def make_music(lengths=LENGTHS, seed=0):
    """Tiny piano rolls: keys mostly on or mostly off, more so on every other step; zero-padded."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    mask = torch.arange(T) < lengths[:, None]  # [batch, time]
    on = torch.arange(X_DIM) % 2 == 0  # [x_dim]
    strong = torch.arange(T)[:, None] % 2 == 0  # [time, 1]
    probs = torch.where(on, torch.where(strong, 0.95, 0.8), torch.where(strong, 0.05, 0.2))  # [time, x_dim]
    x = (torch.rand(len(lengths), T, X_DIM, generator=gen) < probs).to(torch.get_default_dtype())
    return x * mask[..., None], mask


def perturbed(guide, *args, scale=0.3):
    """Set the guide up on ``args`` and move every parameter, so that each one matters."""
    guide(*args)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(scale * torch.randn_like(p))
    return guide


def replayed(guide, x, mask, values):
    """``guide`` replaying the latent values ``values[name]`` (a trace of its own, overwritten)."""
    trace = poutine.trace(poutine.block(guide, hide_types=["param"])).get_trace(x, mask)
    for name, value in values.items():
        trace.nodes[name]["value"] = value
    return poutine.replay(guide, trace=trace)


# -------------------------------------------------------- deep Markov model


@pytest.mark.parametrize("loss", ["trace", "meanfield", "warmup"])
@pytest.mark.parametrize("guide_class", GUIDES)
def test_user_dmm_trains_with_each_guide_and_loss(guide_class, loss):
    pyro.set_rng_seed(0)
    model = DeepMarkovModel()
    x, mask = make_music()
    guide = guide_class(model, rnn_dim=8, hidden_dim=8)
    elbo = {
        "trace": Trace_ELBO(),
        "meanfield": TraceMeanField_ELBO(),
        "warmup": WarmupTrace_ELBO(schedule=LinearSchedule(start=0.5, end=1.0, steps=10)),
    }[loss]
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.03}), elbo)
    losses = []
    for step in range(30):
        elbo.step = step  # as the trainer does (warm-up schedule)
        losses.append(svi.step(x, mask))
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 5.0, losses
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith(guide._pyro_name + ".") for n in names)  # the guide's own parameters
    assert any(n.startswith("dmm$$$") for n in names)  # and the model's, from the replay
    if loss == "warmup":
        assert set(elbo.last_terms) == {"log_likelihood", "kl", "beta"} and elbo.beta == 1.0


def test_guide_trace_holds_only_the_per_step_latents_in_the_batch_plate():
    model = DeepMarkovModel()
    x, mask = make_music()
    guide = AutoSequenceSmoother(model, rnn_dim=8, hidden_dim=8)
    trace = poutine.trace(guide).get_trace(x, mask)
    samples = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    assert samples == [f"z_{t}" for t in range(1, T + 1)]
    params = [n for n, s in trace.nodes.items() if s["type"] == "param"]
    assert params and all(n.startswith(guide._pyro_name + ".") for n in params)  # no "dmm$$$"
    trace.compute_log_prob()
    for name in samples:
        site = trace.nodes[name]
        assert site["log_prob"].shape == (len(LENGTHS),)  # one density per sequence
        assert [f.name for f in site["cond_indep_stack"]] == ["sequences"]
        assert site["fn"].has_rsample
    # padded steps count in the guide as in the model: z_4 of the length-3 sequence is masked
    assert trace.nodes["z_4"]["log_prob"][1] == 0 and trace.nodes["z_4"]["log_prob"][0] != 0
    # two guides of the same model never share a parameter name
    other = AutoSequenceSmoother(model, rnn_dim=8, hidden_dim=8)
    other(x, mask)
    assert other._pyro_name != guide._pyro_name
    assert guide.median(x, mask)["z_1"].shape == (len(LENGTHS), Z_DIM)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("guide_class", GUIDES)
def test_padded_batch_equals_each_sequence_alone(float64, guide_class, residual):
    # log p(x, z) - log q(z | x) at a fixed latent path: the padded batch's value of each
    # sequence is that sequence's value alone, and frames beyond a sequence's length change
    # nothing (the backward GRU starts at each sequence's own last frame)
    model = DeepMarkovModel().double()
    x, mask = make_music()
    guide = perturbed(guide_class(model, rnn_dim=8, hidden_dim=8, residual=residual), x, mask)
    z = torch.randn(len(LENGTHS), T, Z_DIM)  # [batch, time, z_dim]
    values = {f"z_{t + 1}": z[:, t] for t in range(T)}
    with torch.no_grad():
        log_w, _ = trace_log_weights(model, replayed(guide, x, mask, values), x, mask)  # [batch]
        noise = torch.rand(x.shape) * (~mask).unsqueeze(-1)  # [batch, time, x_dim], padding only
        x_changed = x + noise.round()
        guide_changed = replayed(guide, x_changed, mask, values)
        changed, _ = trace_log_weights(model, guide_changed, x_changed, mask)
        alone = []
        for b, length in enumerate(LENGTHS):
            xb = x[b : b + 1, :length]  # [1, length, x_dim]
            vb = {f"z_{t + 1}": z[b : b + 1, t] for t in range(length)}
            alone.append(trace_log_weights(model, replayed(guide, xb, None, vb), xb, None)[0])
        alone = torch.cat(alone)  # [batch]
    assert torch.allclose(log_w, alone, atol=1e-10, rtol=0), (log_w, alone)
    assert torch.allclose(log_w.sum(), alone.sum(), atol=1e-10, rtol=0)
    assert torch.equal(changed, log_w)


def test_bounds_and_latent_health_accept_the_guide():
    pyro.set_rng_seed(0)
    model = DeepMarkovModel()
    x, mask = make_music()
    guide = AutoSequenceSmoother(model, rnn_dim=8, hidden_dim=8)
    batches = [(x[:3], mask[:3]), (x[3:], mask[3:])]
    result = evaluate(model, guide, batches, num_samples=4)
    assert result["num_sequences"] == len(LENGTHS) and result["num_frames"] == sum(LENGTHS)
    for bound in ("elbo", "iwae"):
        assert all(math.isfinite(v) and v > 0 for v in result[bound].values())
    assert result["iwae"]["total"] <= result["elbo"]["total"] + 1e-6
    health = latent_health(model, guide, batches, site="z")
    assert health.kl_per_step.shape == (len(LENGTHS), T)
    assert math.isnan(health.kl_per_step[1, 3]) and not math.isnan(health.kl_per_step[1, 2])
    assert health.kl_per_unit.shape == (Z_DIM,) and health.kl_per_frame > 0


def test_vectorized_particles_and_several_streams_per_step():
    # two streams per step, z_t (a vector) and w_t (a scalar that depends on z_t), and
    # Trace_ELBO's vectorised particles (the guide's chain broadcasts over them)
    def model(x, mask):
        batch, time, _ = x.shape
        with pyro.plate("sequences", batch):
            z = x.new_zeros(batch, Z_DIM)
            for t in pyro.markov(range(time)):
                z = pyro.sample(f"z_{t}", dist.Normal(0.9 * z, 1.0).to_event(1).mask(mask[:, t]))
                w = pyro.sample(f"w_{t}", dist.Normal(z.sum(-1), 0.5).mask(mask[:, t]))
                loc = (z.sum(-1) + w).unsqueeze(-1).expand(w.shape + (X_DIM,))  # [..., batch, x_dim]
                pyro.sample(f"x_{t}", dist.Normal(loc, 1.0).to_event(1).mask(mask[:, t]), obs=x[:, t])

    x, mask = make_music()
    guide = AutoSequenceFilter(model, rnn_dim=4, hidden_dim=4, residual=True)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    assert all(math.isfinite(svi.step(x, mask)) for _ in range(3))
    trace = poutine.trace(guide).get_trace(x, mask)
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    assert sites == [f"{s}_{t}" for t in range(T) for s in "zw"]
    assert trace.nodes["w_0"]["value"].shape == (len(LENGTHS),)
    assert trace.nodes["z_0"]["value"].shape == (len(LENGTHS), Z_DIM)
    assert [i.label for i in guide.streams_info.values()] == ["z", "w"]


def test_docstring_example_runs():
    doc = AutoSequenceGuide.__doc__
    start = doc.index("::", doc.index("Example")) + 2
    code = textwrap.dedent(doc[start : doc.index(":param callable model")])
    x, mask = make_music()
    namespace = dict(pyro=pyro, dist=dist, nn=nn, F=F, SVI=SVI, Trace_ELBO=Trace_ELBO)
    namespace.update(AutoSequenceSmoother=AutoSequenceSmoother, x=x, mask=mask, x_dim=X_DIM, z_dim=Z_DIM)
    exec(code, namespace)
    assert math.isfinite(namespace["loss"])
    assert namespace["guide"].residual and len(namespace["guide"].median(x, mask)) == T


# ------------------------------------------------------------------ LGSSM


@pytest.mark.slow
def test_smoother_on_the_per_step_lgssm_reaches_the_exact_log_likelihood(float64):
    # trained as tests/models/test_lgssm.py trains the built-in LinearGaussianSSMGuide
    # (TraceMeanField_ELBO, ClippedAdam, copies of the batch), on the same model and data,
    # with the model's per-step form (sites z_1 .. z_T in pyro.markov); a nonlinear guide
    # needs more steps and a larger batch than the built-in linear one
    model = make_lgssm(fast=False)
    model.requires_grad_(False)
    x, mask = make_lgssm_data(model)
    exact = model.exact_log_likelihood(x, mask).detach()
    pyro.set_rng_seed(0)
    guide = AutoSequenceSmoother(model, rnn_dim=16, hidden_dim=16, residual=True)
    frozen = poutine.block(model, hide_types=["param"])
    optim = pyro.optim.ClippedAdam({"lr": 0.03, "lrd": 0.996})
    svi = SVI(frozen, guide, optim, TraceMeanField_ELBO())
    xr, mr = x.repeat(32, 1, 1), mask.repeat(32, 1)
    for _ in range(800):
        svi.step(xr, mr)
    pyro.set_rng_seed(0)
    elbo = importance_bounds(model, guide, x, mask, num_samples=2000)["elbo"]
    gap = float((exact - elbo).mean())  # nats per sequence
    # the built-in guide's margin (test_lgssm.py: 0 < gap < 0.1, it measures 0.01 to 0.09);
    # measured: 0.09 nats per sequence (training seeds 0 and 1: 0.09 and 0.07 with 500
    # samples); shorter training (400 to 500 steps, or 8 copies) or residual=False measured
    # 0.15 to 0.4
    assert 0 < gap < 0.1, gap


# ------------------------------------------------------------------ errors


def observe(x, t, loc):
    """Frame ``t`` of ``x`` observed as ``Normal(loc, 1)``, ``loc`` broadcast to ``[batch, x_dim]``."""
    fn = dist.Normal(loc, 1.0).expand(x.shape[:1] + x.shape[2:]).to_event(1)
    pyro.sample(f"x_{t + 1}", fn, obs=x[:, t])


def test_models_the_guides_cannot_serve_get_a_clear_error():
    x, mask = make_music()
    batch = x.shape[0]

    def global_latent(x, mask):
        with pyro.plate("sequences", batch):
            theta = pyro.sample("theta", dist.Normal(0.0, 1.0))  # [batch]
            for t in pyro.markov(range(T)):
                observe(x, t, theta.unsqueeze(-1))

    def bernoulli_latent(x, mask):
        with pyro.plate("sequences", batch):
            for t in pyro.markov(range(T)):
                b = pyro.sample(f"b_{t + 1}", dist.Bernoulli(0.5 * torch.ones(batch, 1)).to_event(1))
                observe(x, t, b)

    def outside_plate(x, mask):
        for t in pyro.markov(range(T)):
            z = pyro.sample(f"z_{t + 1}", dist.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
            with pyro.plate("sequences", batch):
                observe(x, t, z.sum())

    def laplace_latent(x, mask):
        with pyro.plate("sequences", batch):
            for t in pyro.markov(range(T)):
                z = pyro.sample(f"z_{t + 1}", dist.Laplace(torch.zeros(batch, Z_DIM), 1.0).to_event(1))
                observe(x, t, z.sum(-1, keepdim=True))

    def one_step_short(x, mask):
        with pyro.plate("sequences", batch):
            for t in pyro.markov(range(T - 1)):
                z = pyro.sample(f"z_{t + 1}", dist.Normal(torch.zeros(batch, Z_DIM), 1.0).to_event(1))
                observe(x, t, z.sum(-1, keepdim=True))

    def no_latent(x, mask):
        with pyro.plate("sequences", batch):
            observe(x, 0, 0.0)

    for guide_class in GUIDES:
        with pytest.raises(ValueError, match="'theta' has none"):
            guide_class(global_latent)(x, mask)
        with pytest.raises(ValueError, match="'b_1' has a Bernoulli prior"):
            guide_class(bernoulli_latent)(x, mask)
        with pytest.raises(ValueError, match="'z_1' must be inside the batch plate"):
            guide_class(outside_plate)(x, mask)
        with pytest.raises(ValueError, match="residual=True .* 'z_1' has a Laplace prior"):
            guide_class(laplace_latent, residual=True)(x, mask)
        assert set(guide_class(laplace_latent)(x, mask)) == {f"z_{t + 1}" for t in range(T)}
        with pytest.raises(ValueError, match="stream 'z' must have one site per frame of x"):
            guide_class(one_step_short)(x, mask)
        with pytest.raises(ValueError, match="no latent sample site"):
            guide_class(no_latent)(x, mask)
        with pytest.raises(ValueError, match="no observed sequences x"):
            guide_class(lambda lengths, x: global_latent(x, None))(torch.tensor(LENGTHS), x)
        # ... which data= fixes
        guide = guide_class(
            lambda lengths, x: laplace_latent(x, None), data=lambda lengths, x: (x, None)
        )
        assert len(guide(torch.tensor(LENGTHS), x)) == T
    with pytest.raises(ValueError, match="kind"):
        AutoSequenceGuide(global_latent, kind="backward")


# --------------------------------------------------------------- residual


@pytest.mark.parametrize("guide_class", GUIDES)
def test_residual_guide_starts_at_the_model_prior_mean(float64, guide_class):
    model = DeepMarkovModel().double()
    x, mask = make_music()
    guide = guide_class(model, rnn_dim=8, hidden_dim=8, residual=True)
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(guide).get_trace(x, mask)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, mask)
    for t in range(1, T + 1):
        q = guide_trace.nodes[f"z_{t}"]["fn"].base_dist.base_dist  # Normal [batch, z_dim]
        p = model_trace.nodes[f"z_{t}"]["fn"].base_dist.base_dist  # at the guide's z_{t-1}
        assert torch.allclose(q.loc, p.loc, atol=1e-12, rtol=0), t
        assert not torch.allclose(q.scale, p.scale)  # only the mean is the prior's
    # and the residual is learned: after training the means differ
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(3):
        svi.step(x, mask)
    guide_trace = poutine.trace(guide).get_trace(x, mask)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, mask)
    q = guide_trace.nodes["z_2"]["fn"].base_dist.base_dist
    p = model_trace.nodes["z_2"]["fn"].base_dist.base_dist
    assert not torch.allclose(q.loc, p.loc)
