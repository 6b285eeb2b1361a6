"""
Pyro habits on the built-in models (SRNN, Z-Forcing, the linear-Gaussian SSM, the Ladder VAE):
vectorised particles and ``Predictive(parallel=True)``, the ``obs=None`` idiom (prior- and
posterior-predictive draws), ``JitTrace_ELBO``, one Pyro name per instance, saving and loading.
"""

import math

import pyro
import pyro.poutine as poutine
import pytest
from pyro.poutine.util import site_is_subsample
import torch
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

from pyro_seq.data import make_batches
from pyro_seq.guides import BottomUpGuide, LadderGuide, LinearGaussianSSMGuide, SRNNGuide, ZForcingGuide
from pyro_seq.losses import ZForcingTrace_ELBO
from pyro_seq.models import SRNN, LadderVAE, LinearGaussianSSM, ZForcing
from pyro_seq.training.trainer import Trainer

B, T, D = 3, 5, 4
SEQUENCE_FAMILIES = ("srnn", "zforcing", "lgssm")


def ragged_batch(binary=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(T) < torch.tensor([5, 3, 1])[:, None]  # [batch, time]
    if binary:
        x = (torch.rand(B, T, D, generator=g) < 0.4).to(torch.get_default_dtype())
    else:
        x = torch.randn(B, T, D, generator=g)
    return x * mask[..., None], mask


def build(family, fast=True, seed=1, name=None):
    """A tiny model of ``family``, its guide and a batch for it."""
    torch.manual_seed(seed)
    if family == "srnn":
        model = SRNN(x_dim=D, d_dim=6, z_dim=2, hidden_dim=8, fast=fast, name=name)
        return model, SRNNGuide(model), ragged_batch()
    if family == "zforcing":
        model = ZForcing(x_dim=D, emb_dim=4, h_dim=6, z_dim=2, hidden_dim=8, fast=fast, name=name)
        return model, ZForcingGuide(model), ragged_batch()
    if family == "lgssm":
        model = LinearGaussianSSM(x_dim=D, z_dim=2, fast=fast, name=name)
        return model, LinearGaussianSSMGuide(model), ragged_batch(binary=False)
    model = LadderVAE(x_dim=6, z_dims=(3, 2), hidden_dims=(8, 5), name=name)
    guide = (LadderGuide if family == "ladder" else BottomUpGuide)(model)
    g = torch.Generator().manual_seed(0)
    return model, guide, ((torch.rand(4, 6, generator=g) < 0.4).to(torch.get_default_dtype()),)


def params_of(*modules):
    return [p for m in modules for p in m.parameters()]


def sequence_log_probs(trace):
    """Sum of the log densities of every (non-recorded) sample site: ``[..., batch]``."""
    trace.compute_log_prob()
    return sum(
        site["log_prob"]
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("_deterministic")
    )


def latent_sites(guide_trace):
    return [n for n in guide_trace.stochastic_nodes if not site_is_subsample(guide_trace.nodes[n])]


# ------------------------------------------------------ 1. vectorised particles


@pytest.mark.parametrize(
    "family,fast",
    [(f, fast) for f in SEQUENCE_FAMILIES for fast in (True, False)] + [("ladder", True), ("bottom-up", True)],  # the Ladder VAE has one form
)
def test_vectorised_particles_score_each_path_as_one_sequential_pass(float64, family, fast):
    model, guide, args = build(family, fast)
    if family in ("ladder", "bottom-up"):  # in training mode the particles share batch-norm statistics
        model.eval(), guide.eval()
    K = 3
    with pyro.plate("particles", K, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    names = latent_sites(guide_trace)
    batch = args[0].shape[0]
    for name in names:
        assert guide_trace.nodes[name]["value"].shape[:2] == (K, batch), name
    log_q, log_p = sequence_log_probs(guide_trace), sequence_log_probs(model_trace)  # [K, batch]
    assert log_q.shape == log_p.shape == (K, batch)
    for name in names:  # the particles are independent draws
        assert not torch.equal(guide_trace.nodes[name]["value"][0], guide_trace.nodes[name]["value"][1])
    for k in range(K):
        values = {n: guide_trace.nodes[n]["value"][k] for n in names}
        one = poutine.trace(poutine.condition(guide, values)).get_trace(*args)
        replayed = poutine.trace(poutine.condition(model, values)).get_trace(*args)
        assert torch.allclose(sequence_log_probs(one), log_q[k], atol=1e-10, rtol=0)
        assert torch.allclose(sequence_log_probs(replayed), log_p[k], atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "family, loss",
    [
        ("srnn", Trace_ELBO),
        ("srnn", TraceMeanField_ELBO),
        ("zforcing", Trace_ELBO),
        ("zforcing", ZForcingTrace_ELBO),
        ("lgssm", TraceMeanField_ELBO),
    ],
)
def test_one_vectorised_particle_is_the_plain_elbo(float64, family, loss):
    # a particle plate of size 1 draws the same random numbers: the same loss and gradients
    model, guide, args = build(family)
    params = params_of(model, guide)
    results = []
    for vectorize in (False, True):
        elbo = loss(num_particles=1, vectorize_particles=vectorize, max_plate_nesting=1)
        pyro.set_rng_seed(4)
        value = elbo.differentiable_loss(model, guide, *args)
        results.append((value, torch.autograd.grad(value, params, allow_unused=True)))
    (a, grads_a), (b, grads_b) = results
    assert torch.allclose(a, b, atol=1e-10, rtol=0)
    for ga, gb in zip(grads_a, grads_b):
        assert (ga is None) == (gb is None)
        if ga is not None:
            assert torch.allclose(ga, gb, atol=1e-10, rtol=0)


def test_zforcing_cost_weighs_vectorised_particles_as_sequential_ones(float64):
    # the backward prediction does not depend on z: its gradient is the same exactly
    model, guide, args = build("zforcing")
    grads, terms = [], []
    for vectorize in (False, True):
        elbo = ZForcingTrace_ELBO(num_particles=3, vectorize_particles=vectorize, max_plate_nesting=1)
        for p in guide.backward_head.parameters():
            p.grad = None
        elbo.loss_and_grads(model, guide, *args)
        grads.append([p.grad.clone() for p in guide.backward_head.parameters()])
        terms.append(elbo.last_terms)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    assert torch.allclose(terms[0]["backward_log_prob"], terms[1]["backward_log_prob"])
    # last_terms are per particle in both cases
    for key in ("log_likelihood", "aux_log_prob"):
        assert abs(float(terms[1][key]) / float(terms[0][key]) - 1) < 0.5


@pytest.mark.parametrize("family", ["srnn", "zforcing"])
def test_vectorised_elbo_with_many_particles_estimates_the_sequential_one(float64, family):
    model, guide, args = build(family)
    K = 200
    pyro.set_rng_seed(0)
    with pyro.plate("particles", K, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    per_particle = (sequence_log_probs(model_trace) - sequence_log_probs(guide_trace)).sum(-1)  # [K]
    stderr = float(per_particle.detach().std()) / math.sqrt(K)
    pyro.set_rng_seed(1)
    vectorised = Trace_ELBO(num_particles=K, vectorize_particles=True, max_plate_nesting=1).loss(model, guide, *args)
    pyro.set_rng_seed(2)
    sequential = Trace_ELBO(num_particles=K).loss(model, guide, *args)
    assert abs(vectorised - sequential) < 5 * math.sqrt(2) * stderr
    assert abs(vectorised + float(per_particle.mean())) < 5 * math.sqrt(2) * stderr
    # and it trains: every parameter gets a gradient
    loss = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(model, guide, *args)
    grads = torch.autograd.grad(loss, params_of(model, guide), allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads[: len(list(model.parameters()))])


def test_chain_samples_any_sample_shape_and_expands():
    model = LinearGaussianSSM(x_dim=D, z_dim=2)
    chain = model.prior_chain(B, T)
    assert chain.sample().shape == (B, T, 2)
    draws = chain.sample((6,))
    assert draws.shape == (6, B, T, 2)
    assert not torch.equal(draws[0], draws[1])
    expanded = chain.expand([6, B])
    assert expanded.batch_shape == (6, B) and chain.batch_shape == (B,)
    path = expanded.rsample()
    assert path.shape == (6, B, T, 2)
    # scoring the sampled path (cached step parameters) equals scoring it from scratch
    assert torch.allclose(expanded.log_prob(path), chain.log_prob(path.clone()), atol=1e-5)
    assert chain.log_prob(draws).shape == (6, B)


@pytest.mark.parametrize("family", SEQUENCE_FAMILIES)
def test_parallel_predictive_has_the_shapes_of_the_sequential_one(family):
    model, guide, (x, mask) = build(family)
    shapes = []
    for parallel in (False, True):
        out = Predictive(model, guide=guide, num_samples=4, parallel=parallel)(x, mask)
        shapes.append({k: tuple(v.shape) for k, v in out.items()})
    assert shapes[0] == shapes[1]
    assert shapes[1]["z"] == (4, B, T, 2)


# ------------------------------------------------------ 2. obs=None: predictive draws


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("family", SEQUENCE_FAMILIES)
def test_prior_predictive_samples_new_sequences(family, fast, parallel):
    model, _, _ = build(family, fast)
    S = 4
    out = Predictive(model, num_samples=S, parallel=parallel)(None, num_steps=T, batch_size=B)
    x = out["x"] if "x" in out else torch.stack([out[f"x_{t + 1}"] for t in range(T)], dim=-2)
    assert x.shape == (S, B, T, D)
    assert not torch.equal(x[0], x[1])
    if family != "lgssm":
        assert set(x.unique().tolist()) <= {0.0, 1.0}
        assert out["z"].shape == (S, B, T, 2)  # the whole path, recorded beside the per-step sites
        assert torch.equal(out["x"][:, :, 2], out["x_3"])


@pytest.mark.parametrize("family", ["srnn", "zforcing"])
def test_prior_predictive_with_a_mask_zeroes_padded_frames(family):
    model, _, (_, mask) = build(family)
    trace = poutine.trace(model).get_trace(None, mask)
    x = trace.nodes["x"]["value"]
    assert x.shape == (B, T, D)
    assert (x[~mask] == 0).all()
    trace.compute_log_prob()
    assert (trace.nodes[f"x_{T}"]["log_prob"][~mask[:, -1]] == 0).all()  # padded steps score nothing


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("family", SEQUENCE_FAMILIES)
def test_posterior_predictive_draws_new_frames(family, fast):
    model, guide, (x, mask) = build(family, fast)
    S = 8
    out = Predictive(model, guide=guide, num_samples=S, parallel=True)(x, mask, predict=True)
    draws = out["x"] if fast else torch.stack([out[f"x_{t + 1}"] for t in range(T)], dim=-2)
    assert draws.shape == (S, B, T, D)
    real = mask.expand(S, B, T)
    assert not torch.equal(draws[real], x.expand(S, B, T, D)[real])
    if family != "lgssm":
        assert set(draws.unique().tolist()) <= {0.0, 1.0}
    # without predict=True the observation site holds the data (Pyro's Predictive keeps obs)
    observed = Predictive(model, guide=guide, num_samples=2, parallel=True)(x, mask)
    if fast:
        assert torch.equal(observed["x"][1], x)


@pytest.mark.parametrize(
    "family, mean_frames", [("srnn", False), ("srnn", True), ("zforcing", False), ("zforcing", True), ("lgssm", False)]
)
def test_generate_runs_the_model_without_data(family, mean_frames):
    model, _, _ = build(family)
    pyro.set_rng_seed(3)
    out = model.generate(2, 6, mean_frames) if family != "lgssm" else model.generate(2, 6)
    x = out[0] if mean_frames else out
    assert x.shape == (2, 6, D)
    if family != "lgssm":
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    if mean_frames:
        assert out[1].shape == (2, 6, D) and ((out[1] >= 0) & (out[1] <= 1)).all()
    model.eval()
    pyro.set_rng_seed(3)
    trace = poutine.trace(model).get_trace(None, num_steps=6, batch_size=2)
    assert torch.equal(trace.nodes["x"]["value"], x)  # the same code and random numbers
    assert model.training is False


@pytest.mark.parametrize("family", ["ladder", "bottom-up"])
def test_ladder_predictive_draws(family):
    model, guide, (x,) = build(family)
    prior = Predictive(model, num_samples=5, parallel=True)(None, batch_size=4)
    assert prior["x"].shape == (5, 4, 6) and set(prior["x"].unique().tolist()) <= {0.0, 1.0}
    posterior = Predictive(model, guide=guide, num_samples=5, parallel=True)(x, predict=True)
    assert posterior["x"].shape == (5, 4, 6)
    assert not torch.equal(posterior["x"], x.expand(5, 4, 6))
    assert model.generate(3).shape == (3, 1, 6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, g, x, mask: m(None), "pass num_steps and batch_size"),
        (lambda m, g, x, mask: m(None, num_steps=T), "pass num_steps and batch_size"),
        (lambda m, g, x, mask: m(None, num_steps=0, batch_size=2), "num_steps must be a positive int"),
        (lambda m, g, x, mask: m(None, mask, num_steps=T + 1), "num_steps=6 but mask has 5 steps"),
        (lambda m, g, x, mask: m(x, mask, batch_size=B + 1), "batch_size=4 but x holds 3 sequences"),
        (lambda m, g, x, mask: g(None), "the guide needs data"),
    ],
)
def test_calls_without_data_get_clear_errors(call, match):
    model, guide, (x, mask) = build("srnn")
    with pytest.raises(ValueError, match=match):
        call(model, guide, x, mask)


# ------------------------------------------------------ 3. JitTrace_ELBO


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("family", SEQUENCE_FAMILIES)
def test_jit_trace_elbo_trains_with_the_shape_as_keywords(family, fast):
    model, guide, (x, mask) = build(family, fast)
    elbo = JitTrace_ELBO(max_plate_nesting=1, ignore_jit_warnings=True)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), elbo)
    before = [p.detach().clone() for p in params_of(model, guide)]
    shapes = [(x, mask), (x[:2, :3], mask[:2, :3])]  # a second batch shape gets its own graph
    for _ in range(2):
        for xb, mb in shapes:
            assert math.isfinite(svi.step(xb, mb, num_steps=xb.shape[1], batch_size=xb.shape[0]))
    after = params_of(model, guide)
    assert all(not torch.equal(a, b) for a, b in zip(before[:3], after[:3]))
    # the compiled graph estimates the plain ELBO (its random stream may differ)
    n = 40
    jitted = torch.tensor([elbo.loss_and_grads(model, guide, x, mask, num_steps=T, batch_size=B) for _ in range(n)])
    plain = torch.tensor([Trace_ELBO().loss(model, guide, x, mask) for _ in range(n)])
    stderr = math.sqrt((jitted.var() + plain.var()) / n)
    assert abs(jitted.mean() - plain.mean()) < 5 * stderr


def test_jit_trace_elbo_without_the_shape_is_refused_in_one_sentence():
    model, guide, (x, mask) = build("srnn")
    svi = SVI(model, guide, Adam({"lr": 1e-2}), JitTrace_ELBO(ignore_jit_warnings=True))
    with pytest.raises(ValueError, match="under JitTrace_ELBO pass num_steps and batch_size as keyword arguments"):
        svi.step(x, mask)


# ------------------------------------------------------ 4. one Pyro name per instance


def test_two_default_models_in_one_process_both_train():
    (a, guide_a, (x, mask)), (b, guide_b, _) = build("srnn"), build("srnn")
    svis = [SVI(m, g, Adam({"lr": 1e-2}), Trace_ELBO()) for m, g in ((a, guide_a), (b, guide_b))]
    before = [[p.detach().clone() for p in params_of(m, g)] for m, g in ((a, guide_a), (b, guide_b))]
    for _ in range(2):
        for svi in svis:
            svi.step(x, mask)
    for old, (m, g) in zip(before, ((a, guide_a), (b, guide_b))):
        assert all(not torch.equal(p, q) for p, q in zip(old, params_of(m, g)))
    assert (a._pyro_name, guide_a._pyro_name, b._pyro_name, guide_b._pyro_name) == (
        "srnn",
        "srnn_guide",
        "srnn_1",
        "srnn_1_guide",
    )
    store = pyro.get_param_store()
    assert {id(v) for v in store._params.values()} == {id(p) for p in params_of(a, guide_a, b, guide_b)}


@pytest.mark.parametrize("family", SEQUENCE_FAMILIES + ("ladder",))
def test_every_family_takes_a_free_name(family):
    (a, guide_a, args), (b, guide_b, _) = build(family), build(family)
    Trace_ELBO().loss(a, guide_a, *args)
    Trace_ELBO().loss(b, guide_b, *args)
    base = type(a).default_pyro_name
    assert (a._pyro_name, b._pyro_name, guide_b._pyro_name) == (base, base + "_1", base + "_1_guide")
    store = pyro.get_param_store()
    assert {id(v) for v in store._params.values()} == {id(p) for p in params_of(a, guide_a, b, guide_b)}


def test_a_given_name_is_kept_and_the_guide_follows_it():
    model, guide, (x, mask) = build("srnn", name="mine")
    named_guide = SRNNGuide(model, name="q")
    Trace_ELBO().loss(model, guide, x, mask)
    Trace_ELBO().loss(model, named_guide, x, mask)
    assert (model._pyro_name, guide._pyro_name, named_guide._pyro_name) == ("mine", "mine_guide", "q")
    assert all(n.split(".")[0] in ("mine", "mine_guide", "q") for n in pyro.get_param_store().keys())


def test_one_name_given_twice_never_shares_values():
    (a, guide_a, (x, mask)), (b, guide_b, _) = build("srnn", name="m", seed=1), build("srnn", name="m", seed=2)
    guide_a, guide_b = SRNNGuide(a, name="q"), SRNNGuide(b, name="q")
    svis = [SVI(m, g, Adam({"lr": 1e-2}), Trace_ELBO()) for m, g in ((a, guide_a), (b, guide_b))]
    before = [[p.detach().clone() for p in params_of(m, g)] for m, g in ((a, guide_a), (b, guide_b))]
    for _ in range(2):
        for svi in svis:
            svi.step(x, mask)
    for old, (m, g) in zip(before, ((a, guide_a), (b, guide_b))):
        assert all(not torch.equal(p, q) for p, q in zip(old, params_of(m, g)))
    assert not torch.equal(a.d_rnn.weight_ih_l0, b.d_rnn.weight_ih_l0)
    # the store holds the parameters of the module that ran last
    assert {id(v) for v in pyro.get_param_store()._params.values()} == {id(p) for p in params_of(b, guide_b)}


def test_a_cleared_store_frees_the_default_name():
    (a, guide_a, (x, mask)), (b, guide_b, _) = build("srnn"), build("srnn")
    Trace_ELBO().loss(a, guide_a, x, mask)
    pyro.clear_param_store()
    Trace_ELBO().loss(b, guide_b, x, mask)
    assert a._pyro_name == b._pyro_name == "srnn"


def _trainer(model, guide, out_dir, **kwargs):
    g = torch.Generator().manual_seed(0)
    train = [(torch.rand(n, D, generator=g) < 0.4).float().numpy() for n in (5, 3, 4, 2, 5, 4)]
    return Trainer(
        model,
        guide,
        Trace_ELBO(),
        lambda epoch: make_batches(train, 3, shuffle=True, seed=1, epoch=epoch),
        lambda epoch: make_batches(train[:2], 2, shuffle=False),
        out_dir=out_dir,
        seed=7,
        kind="srnn",
        config={},
        progress=False,
        lr=0.01,
        **kwargs,
    )


def test_a_checkpoint_resumes_into_a_model_of_another_pyro_name(tmp_path):
    straight = _trainer(*build("srnn")[:2], tmp_path / "a")
    straight.fit(2)
    expected = [p.detach().clone() for p in params_of(straight.model, straight.guide)]

    pyro.clear_param_store()
    other, other_guide, (x, mask) = build("srnn", seed=5)
    model, guide, _ = build("srnn")
    Trace_ELBO().loss(other, other_guide, x, mask)
    Trace_ELBO().loss(model, guide, x, mask)  # takes the name "srnn_1"
    first = _trainer(model, guide, tmp_path / "b")
    first.fit(1)
    assert model._pyro_name == "srnn_1"

    pyro.clear_param_store()  # as in a new process: the rebuilt model is "srnn"
    resumed = _trainer(*build("srnn", seed=9)[:2], tmp_path / "b", resume=True)
    assert resumed.model._pyro_name == "srnn"
    waiting = resumed.optim._state_waiting_to_be_consumed
    assert set(waiting) == {name for name, _ in resumed._module_param_keys().items()}
    resumed.fit(2)
    for a, b in zip(expected, params_of(resumed.model, resumed.guide)):
        assert torch.equal(a, b)


def test_optimiser_state_of_an_old_checkpoint_reaches_the_renamed_ladder(tmp_path):
    # before one name per instance the Ladder VAE's parameters had no prefix ("top_down$$$...")
    model, guide, _ = build("ladder")
    trainer = Trainer(model, guide, Trace_ELBO(), [], [], out_dir=None, progress=False)
    old = {"top_down$$$0.head.weight": {"step": 1}, "bottom_up$$$1.head.bias": {"step": 2}, "other": {"step": 3}}
    renamed = trainer._renamed_optim_state({"optim": old})
    assert renamed == {
        "ladder.top_down$$$0.head.weight": {"step": 1},
        "ladder_guide.bottom_up$$$1.head.bias": {"step": 2},
        "other": {"step": 3},
    }


# ------------------------------------------------------ 5. saving and loading


def _train(model, guide, args, steps=3):
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(steps):
        svi.step(*args)


def _elbo(model, guide, args, seed=11):
    pyro.set_rng_seed(seed)
    return Trace_ELBO(num_particles=3).loss(model, guide, *args)


@pytest.mark.parametrize("family", SEQUENCE_FAMILIES + ("ladder",))
def test_state_dict_round_trip_gives_the_same_elbo(float64, tmp_path, family):
    model, guide, args = build(family)
    _train(model, guide, args)
    model.eval(), guide.eval()
    path = tmp_path / "weights.pt"
    torch.save({"model": model.state_dict(), "guide": guide.state_dict()}, path)
    expected = _elbo(model, guide, args)

    state = torch.load(path, weights_only=True)
    loaded, loaded_guide, _ = build(family, seed=123)  # other initial weights, another Pyro name
    loaded.load_state_dict(state["model"])
    loaded_guide.load_state_dict(state["guide"])
    loaded.eval(), loaded_guide.eval()
    assert _elbo(loaded, loaded_guide, args) == expected
    if family != "lgssm":
        pyro.set_rng_seed(2)
        a = model.generate(2, 3) if family != "ladder" else model.generate(2)
        pyro.set_rng_seed(2)
        b = loaded.generate(2, 3) if family != "ladder" else loaded.generate(2)
        assert torch.equal(a, b)


@pytest.mark.parametrize("family", SEQUENCE_FAMILIES + ("ladder",))
def test_param_store_round_trip_gives_the_same_elbo(float64, tmp_path, family):
    model, guide, args = build(family)
    _train(model, guide, args)
    path = tmp_path / "params.pt"
    pyro.get_param_store().save(path)
    # training mode: the store holds parameters only, not buffers such as the Ladder VAE's
    # batch-norm running statistics, which evaluation mode would use (state_dict has them)
    expected = _elbo(model, guide, args)
    pyro.set_rng_seed(2)
    generated = model.generate(2, 3) if family != "ladder" else None  # (its generate uses buffers)

    pyro.clear_param_store()
    loaded, loaded_guide, _ = build(family, seed=123)  # other initial weights
    pyro.get_param_store().load(path)
    if generated is not None:  # generate too reads the loaded values
        pyro.set_rng_seed(2)
        assert torch.equal(loaded.generate(2, 3), generated)
    assert _elbo(loaded, loaded_guide, args) == expected  # the loaded values reached the modules
    for a, b in zip(params_of(model, guide), params_of(loaded, loaded_guide)):
        assert torch.equal(a, b)
    store = pyro.get_param_store()
    assert {id(v) for v in store._params.values()} == {id(p) for p in params_of(loaded, loaded_guide)}
    # training goes on in the modules
    before = [p.detach().clone() for p in params_of(loaded, loaded_guide)]
    _train(loaded, loaded_guide, args, steps=1)
    assert all(not torch.equal(a, b) for a, b in zip(before[:3], params_of(loaded, loaded_guide)[:3]))


def test_param_store_of_another_configuration_is_refused(tmp_path):
    model, guide, (x, mask) = build("srnn")
    _train(model, guide, (x, mask), steps=1)
    path = tmp_path / "params.pt"
    pyro.get_param_store().save(path)
    pyro.clear_param_store()
    torch.manual_seed(0)
    wider = SRNN(x_dim=D, d_dim=7, z_dim=2, hidden_dim=8)
    pyro.get_param_store().load(path)
    with pytest.raises(ValueError, match="of the same configuration"):
        Trace_ELBO().loss(wider, SRNNGuide(wider), x, mask)


def test_param_store_of_a_suffixed_model_loads_into_a_model_given_that_name(float64, tmp_path):
    (a, guide_a, args), (b, guide_b, _) = build("srnn"), build("srnn", seed=2)
    Trace_ELBO().loss(a, guide_a, *args)
    _train(b, guide_b, args)  # "srnn_1"
    path = tmp_path / "params.pt"
    pyro.get_param_store().save(path)
    expected = _elbo(b, guide_b, args)
    pyro.clear_param_store()
    loaded, loaded_guide, _ = build("srnn", seed=123, name=b._pyro_name)
    pyro.get_param_store().load(path)
    assert _elbo(loaded, loaded_guide, args) == expected
