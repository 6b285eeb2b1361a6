"""
The autoregressive frame distribution (MADE) and the ``emission="made"`` option of
SRNN and Z-Forcing: exact normalisation, sampling, masking, and the models' bounds
against the hand-written pure-PyTorch oracle (:mod:`pyro_seq.reference`).
"""

import itertools

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions import Bernoulli
from pyro.infer import Trace_ELBO
from scipy.stats import chisquare

from pyro_seq.bounds import trace_log_weights
from pyro_seq.distributions import MADEBernoulli, frame_log_prob, frame_mean, mask_frames
from pyro_seq.fivo import fivo_log_likelihood, protocol_log_weight
from pyro_seq.guides import SRNNGuide, ZForcingGuide
from pyro_seq.losses import WarmupTrace_ELBO, ZForcingTrace_ELBO
from pyro_seq.models import EMISSIONS, SRNN, ZForcing
from pyro_seq.nn import MADE, MLP, MaskedLinear, made_degrees
from pyro_seq.reference import made_log_prob, srnn_elbo, zforcing_elbo

B, T, D = 3, 7, 5


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def tiny_made(num_keys=D, context_dim=3, hidden_dims=(8,), seed=0, gain=2.0):
    """A small MADE with weights scaled up so that the keys depend clearly on each other."""
    torch.manual_seed(seed)
    made = MADE(num_keys, context_dim, hidden_dims)
    with torch.no_grad():
        for p in made.parameters():
            p.mul_(gain)
    return made


def all_frames(num_keys):
    """Every binary frame of ``num_keys`` keys: ``[2 ** num_keys, num_keys]``."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=num_keys)))


def key_by_key_log_prob(made, x, context):
    """sum_d log Bernoulli(x_d | logit_d), each logit from its own pass with x_{>=d} zeroed."""
    total = 0.0
    for d in range(x.shape[-1]):
        seen = torch.cat([x[..., :d], torch.zeros_like(x[..., d:])], dim=-1)  # [..., D]: x_{<d} only
        logit = made(seen, context)[..., d]
        total = total + Bernoulli(logits=logit).log_prob(x[..., d])
    return total


# --------------------------------------------------------------- the network


def test_masks_follow_the_degrees():
    keys, hidden = made_degrees(4, [6, 3])
    assert keys.tolist() == [1, 2, 3, 4]
    assert hidden[0].tolist() == [0, 1, 2, 3, 0, 1] and hidden[1].tolist() == [0, 1, 2]
    made = MADE(4, 2, [6, 3])
    assert torch.equal(made.direct.mask, torch.ones(4, 4).tril(-1).bool())
    # a unit of degree 0 sees no key; output 1 (degree 1) reads only units of degree 0
    assert not made.hidden[0].mask[0].any() and made.hidden[0].mask[3].tolist() == [True, True, True, False]
    assert made.output.mask[0].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="mask must have shape"):
        MaskedLinear(3, 2, torch.ones(3, 2))
    with pytest.raises(ValueError, match="hidden layer"):
        MADE(4, 2, [])
    with pytest.raises(ValueError, match="conditional"):
        made(torch.zeros(4))


@pytest.mark.parametrize("hidden_dims", [[8], [7, 9]])
def test_logit_d_depends_on_earlier_keys_only(hidden_dims):
    made = tiny_made(hidden_dims=hidden_dims)
    x, context = torch.rand(D), torch.randn(3)
    jac = torch.autograd.functional.jacobian(lambda v: made(v, context), x)  # [D (logits), D (keys)]
    assert torch.equal(jac.triu(), torch.zeros(D, D))
    assert (jac.tril(-1)[torch.ones(D, D).tril(-1).bool()] != 0).all()  # every earlier key matters
    assert (torch.autograd.functional.jacobian(lambda c: made(x, c), context) != 0).all()


def test_mlp_without_output_layer_ends_with_the_activation():
    torch.manual_seed(0)
    mlp = MLP(4, [5, 6], None, dropout=0.1)
    assert [type(m).__name__ for m in mlp.net] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout"]
    assert mlp(torch.randn(2, 4)).shape == (2, 6)
    with pytest.raises(ValueError, match="hidden layer"):
        MLP(4, [], None)


# ---------------------------------------------------------- the distribution


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("hidden_dims", [[8], [7, 9]])
@pytest.mark.parametrize("num_keys", [4, 5, 6])
def test_probabilities_sum_to_one(num_keys, hidden_dims, batch_shape):
    made = tiny_made(num_keys, hidden_dims=hidden_dims)
    dist = MADEBernoulli(made, torch.randn(*batch_shape, 3))
    assert dist.batch_shape == batch_shape and dist.event_shape == (num_keys,)
    frames = all_frames(num_keys).reshape(2**num_keys, *([1] * len(batch_shape)), num_keys)
    log_p = dist.log_prob(frames)  # [2^D, *batch]
    assert log_p.shape == (2**num_keys, *batch_shape)
    assert torch.allclose(log_p.logsumexp(0), torch.zeros(batch_shape), atol=1e-12, rtol=0)
    # and the keys are far from independent (the test is not about a factorised Bernoulli)
    probs = log_p.exp()
    marginals = (probs.unsqueeze(-1) * frames).sum(0)  # [*batch, D]
    independent = Bernoulli(probs=marginals).log_prob(frames).sum(-1).exp()  # [2^D, *batch]
    assert (probs - independent).abs().max() > 1e-2


def test_log_prob_is_the_key_by_key_product():
    made = tiny_made(hidden_dims=[7, 9])
    context = torch.randn(2, 4, 3)
    dist = MADEBernoulli(made, context)
    x = (torch.rand(6, 2, 4, D) < 0.4).double()  # a sample dim in front of the batch
    want = key_by_key_log_prob(made, x, context)  # [6, 2, 4]
    assert torch.allclose(dist.log_prob(x), want, atol=1e-12, rtol=0)
    # the hand-written oracle, by key and in one pass
    for key_loop in (True, False):
        assert torch.allclose(made_log_prob(made, x, context, key_loop=key_loop), want, atol=1e-12, rtol=0)
    # the conditionals along x
    probs = dist.conditional_probs(x)
    assert probs.shape == (6, 2, 4, D)
    assert torch.allclose(probs[..., 0], torch.sigmoid(made(torch.zeros(D), context)[..., 0]).expand(6, 2, 4))


def test_sampling_frequencies_match_the_probabilities():
    num_keys, n = 3, 20000
    made = tiny_made(num_keys, gain=3.0, seed=2)
    dist = MADEBernoulli(made, torch.randn(2, 3))  # two contexts: batch shape [2]
    pyro.set_rng_seed(0)
    x = dist.sample((n,))  # [n, 2, D]
    assert x.shape == (n, 2, num_keys) and set(x.unique().tolist()) == {0.0, 1.0}
    frames = all_frames(num_keys)  # [8, D]
    with torch.no_grad():
        probs = dist.log_prob(frames.unsqueeze(1)).exp()  # [8, 2]
    index = (x * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()  # [n, 2]: row of all_frames
    for b in range(2):
        counts = torch.bincount(index[:, b], minlength=8).double()
        assert (n * probs[:, b]).min() > 20  # every cell populated enough for the chi-square test
        p_value = chisquare(counts.numpy(), (n * probs[:, b]).numpy()).pvalue
        assert p_value > 1e-3, (counts, n * probs[:, b])
    # sampling is not part of any graph
    assert not x.requires_grad


def test_shapes_expand_support_and_errors():
    made = tiny_made()
    context = torch.randn(B, 3)
    dist = MADEBernoulli(made, context)
    assert not dist.has_rsample and not dist.has_enumerate_support
    assert dist.sample().shape == (B, D) and dist.sample((2, 4)).shape == (2, 4, B, D)
    wide = dist.expand([4, B])
    assert wide.batch_shape == (4, B) and wide.event_shape == (D,)
    x = (torch.rand(4, B, D) < 0.5).double()
    assert torch.allclose(wide.log_prob(x), dist.log_prob(x), atol=1e-12, rtol=0)
    assert wide.sample().shape == (4, B, D)
    # an expanded distribution whose projected context was cached keeps agreeing
    dist.log_prob(x)
    assert torch.allclose(dist.expand([4, B]).log_prob(x), wide.log_prob(x), atol=1e-12, rtol=0)
    assert dist.support.check(x).all() and not dist.support.check(torch.full((D,), 0.5))
    with pytest.raises(ValueError):
        MADEBernoulli(made, context, validate_args=True).log_prob(torch.full((B, D), 0.5))
    with pytest.raises(ValueError, match=r"context must have shape \[\.\.\., 3\]"):
        MADEBernoulli(made, torch.randn(B, 4))
    with pytest.raises(NotImplementedError):
        dist.rsample()
    with pytest.raises(NotImplementedError, match="no closed-form mean"):
        dist.mean
    assert frame_mean(dist, x[0]).shape == (B, D)


def test_mask_zeroes_padded_steps():
    made = tiny_made()
    context = torch.randn(B, T, 3, requires_grad=True)
    mask = torch.arange(T) < torch.tensor([7, 4, 2])[:, None]  # [batch, time]
    x = (torch.rand(B, T, D) < 0.3).double()
    dist = MADEBernoulli(made, context)
    full = dist.log_prob(x)  # [batch, time]
    masked = dist.mask(mask).log_prob(x)
    assert torch.equal(masked, torch.where(mask, full, torch.zeros(())))
    # one site over the whole sequence: the masked sum, with no gradient from padded steps
    site = mask_frames(dist, mask)
    assert site.batch_shape == (B,) and site.event_shape == (T, D)
    total = site.log_prob(x)
    assert torch.allclose(total, (full * mask).sum(-1), atol=1e-12, rtol=0)
    (grad,) = torch.autograd.grad(total.sum(), context)
    assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask])) and grad[mask].abs().sum() > 0
    # one step
    step = mask_frames(MADEBernoulli(made, context[:, 2]), mask[:, 2])
    assert step.batch_shape == (B,) and step.event_shape == (D,)
    assert torch.allclose(step.log_prob(x[:, 2]), masked[:, 2], atol=1e-12, rtol=0)


def test_without_key_weights_it_is_the_independent_bernoulli():
    # with every weight from the keys at zero the MADE is a linear Bernoulli head on its
    # context: the same site log densities as the per-key emission, through mask_frames
    made = tiny_made()
    with torch.no_grad():
        made.hidden[0].weight.zero_()
        made.direct.weight.zero_()
    context = torch.randn(B, T, 3)
    logits = made(torch.zeros(D), context)  # [batch, time, D]
    mask = torch.arange(T) < torch.tensor([7, 4, 2])[:, None]
    x = (torch.rand(B, T, D) < 0.3).double()
    joint, independent = MADEBernoulli(made, context), Bernoulli(logits=logits)
    assert torch.allclose(frame_log_prob(joint, x), frame_log_prob(independent, x), atol=1e-12, rtol=0)
    for m, v in ((mask, x), (mask[:, 3], x[:, 3])):
        j = joint if m.dim() == 2 else MADEBernoulli(made, context[:, 3])
        i = independent if m.dim() == 2 else Bernoulli(logits=logits[:, 3])
        assert torch.allclose(mask_frames(j, m).log_prob(v), mask_frames(i, m).log_prob(v), atol=1e-12, rtol=0)


def test_in_a_users_pyro_model():
    # a plate expands a context shared by the whole batch; the site scores every frame
    made = tiny_made()
    context = torch.randn(3)
    x = (torch.rand(B, D) < 0.3).double()

    def model(x):
        pyro.module("made", made)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("x", MADEBernoulli(made, context), obs=x)

    trace = poutine.trace(model).get_trace(x)
    trace.compute_log_prob()
    site = trace.nodes["x"]
    assert site["fn"].batch_shape == (B,)
    assert torch.allclose(site["log_prob"], key_by_key_log_prob(made, x, context), atol=1e-12, rtol=0)
    store = pyro.get_param_store()
    assert {id(v) for v in store._params.values()} == {id(p) for p in made.parameters()}
    # unobserved, it samples whole frames
    pyro.set_rng_seed(0)
    assert model(torch.zeros(B, D)).shape == (B, D)
    assert not poutine.trace(model).get_trace(x).nodes["x"]["fn"].has_rsample


# ------------------------------------------------------------------- SRNN


def ragged_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(T) < torch.tensor([7, 4, 2])[:, None]  # [batch, time]
    x = (torch.rand(B, T, D, generator=g) < 0.3).double()
    return x * mask[..., None], mask


def tiny_srnn(fast=True, kind="smoother", res_q=True, dropout=0.0, emission="made"):
    torch.manual_seed(1)
    model = SRNN(x_dim=D, d_dim=4, z_dim=3, hidden_dim=6, fast=fast, dropout=dropout, emission=emission)
    return model, SRNNGuide(model, kind=kind, res_q=res_q)


def params_of(*modules):
    return [p for m in modules for p in m.parameters()]


def loss_and_grads(fn, params):
    pyro.set_rng_seed(5)
    loss = fn()
    return loss.detach(), torch.autograd.grad(loss, params)


def assert_same(a, b, atol=1e-10):
    (la, ga), (lb, gb) = a, b
    assert torch.allclose(la, lb, atol=atol, rtol=0), (la, lb)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=atol, rtol=0)


@pytest.mark.parametrize("res_q", [True, False])
@pytest.mark.parametrize("kind", ["smoother", "filter"])
@pytest.mark.parametrize("fast", [True, False])
def test_srnn_elbo_equals_hand_written(fast, kind, res_q):
    x, mask = ragged_batch()
    model, guide = tiny_srnn(fast, kind, res_q)
    assert model.emission_kind == "made" and model.config["emission"] == "made"
    params = params_of(model, guide)
    pyro_result = loss_and_grads(lambda: Trace_ELBO().differentiable_loss(model, guide, x, mask), params)
    for key_loop in (True, False):
        ref_result = loss_and_grads(
            lambda: -srnn_elbo(model, guide, x, mask, made_key_loop=key_loop).sum(), params
        )
        assert_same(pyro_result, ref_result)
    assert all(g.abs().sum() > 0 for g in pyro_result[1])  # the MADE's parameters included


def test_srnn_dropout_and_warmup_match_hand_written():
    x, mask = ragged_batch()
    model, guide = tiny_srnn(dropout=0.5)
    params = params_of(model, guide)
    loss = WarmupTrace_ELBO(schedule=0.3)
    got = loss_and_grads(lambda: loss.differentiable_loss(model, guide, x, mask), params)
    want = loss_and_grads(lambda: -srnn_elbo(model, guide, x, mask, beta=0.3).sum(), params)
    assert_same(got, want)


@pytest.mark.parametrize("kind", ["smoother", "filter"])
def test_srnn_fast_and_markov_forms_agree(kind):
    x, mask = ragged_batch()
    results = []
    for fast in (True, False):
        model, guide = tiny_srnn(fast, kind)
        results.append(
            loss_and_grads(
                lambda: Trace_ELBO().differentiable_loss(model, guide, x, mask), params_of(model, guide)
            )
        )
    assert_same(*results)


@pytest.mark.parametrize("fast", [True, False])
def test_srnn_padding_adds_nothing(fast):
    # the same sequences padded with 3 more steps: the same log weight per sequence
    x, mask = ragged_batch()
    model, guide = tiny_srnn(fast)
    weights = []
    padded_x = torch.cat([x, torch.zeros(B, 3, D)], 1)  # [batch, time + 3, x_dim]
    padded_mask = torch.cat([mask, torch.zeros(B, 3, dtype=torch.bool)], 1)  # [batch, time + 3]
    for xs, ms in ((x, mask), (padded_x, padded_mask)):
        pyro.set_rng_seed(4)
        weights.append(trace_log_weights(model, guide, xs, ms)[0])
    assert torch.allclose(weights[0], weights[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["smoother", "filter"])
@pytest.mark.parametrize("fast", [True, False])
def test_srnn_step_protocol_scores_like_the_traces(fast, kind):
    x, mask = ragged_batch()
    model, guide = tiny_srnn(fast, kind)
    pyro.set_rng_seed(4)
    z = poutine.trace(guide).get_trace(x, mask).nodes["_RETURN"]["value"]  # [batch, time, z_dim]
    pyro.set_rng_seed(4)
    want, _ = trace_log_weights(model, guide, x, mask)
    got = protocol_log_weight(model, guide, x, mask, z)
    assert torch.allclose(got, want, atol=1e-10, rtol=0), (got, want)
    with torch.no_grad():
        fivo = fivo_log_likelihood(model, guide, x, mask, num_particles=8)
    assert fivo.shape == (B,) and torch.isfinite(fivo).all()


def test_srnn_generate_config_and_svi():
    model, guide = tiny_srnn()
    x = model.generate(4, 6)
    assert x.shape == (4, 6, D) and set(x.unique().tolist()) <= {0.0, 1.0}
    x, means = model.generate(2, 3, mean_frames=True)
    assert means.shape == (2, 3, D) and ((means > 0) & (means < 1)).all()
    # rebuilt from its config (what a checkpoint stores): the same parameters
    again = SRNN(**model.config)
    assert again.config == model.config
    shapes = [(n, p.shape) for n, p in model.named_parameters()]
    assert [(n, p.shape) for n, p in again.named_parameters()] == shapes
    # one SVI step registers every parameter once and moves it
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), WarmupTrace_ELBO())
    x, mask = ragged_batch()
    before = [p.detach().clone() for p in params_of(model, guide)]
    svi.step(x, mask)
    store = pyro.get_param_store()
    assert {id(v) for v in store._params.values()} == {id(p) for p in params_of(model, guide)}
    assert all(not torch.equal(a, b) for a, b in zip(before, params_of(model, guide)))


def test_default_emission_is_unchanged():
    # the default builds no MADE and draws the same initial weights as emission="bernoulli"
    a, _ = tiny_srnn(emission="bernoulli")
    torch.manual_seed(1)
    b = SRNN(x_dim=D, d_dim=4, z_dim=3, hidden_dim=6)
    assert a.made is None and b.config["emission"] == "bernoulli"
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not any("made" in n for n, _ in b.named_parameters())
    assert EMISSIONS == ("bernoulli", "made")


@pytest.mark.parametrize("cls", [SRNN, ZForcing])
def test_bad_emission_gets_a_clear_error(cls):
    match = "emission='made' .* needs likelihood='bernoulli', got likelihood='gaussian'"
    with pytest.raises(ValueError, match=match):
        cls(x_dim=D, emission="made", likelihood="gaussian")
    with pytest.raises(ValueError, match="emission must be one of"):
        cls(x_dim=D, emission="nade")


# --------------------------------------------------------------- Z-Forcing


def tiny_zforcing(fast=True, auxiliary="hz", backward_prediction=True):
    torch.manual_seed(1)
    model = ZForcing(x_dim=D, emb_dim=4, h_dim=6, z_dim=3, hidden_dim=8, fast=fast, emission="made")
    return model, ZForcingGuide(model, auxiliary=auxiliary, backward_prediction=backward_prediction)


@pytest.mark.parametrize("fast", [True, False])
def test_zforcing_elbo_matches_hand_written(fast):
    model, guide = tiny_zforcing(fast)
    x, mask = ragged_batch()
    beta, w, w_b = 0.3, 0.7, 0.4
    loss = ZForcingTrace_ELBO(schedule=beta, aux_schedule=w, backward_weight=w_b)
    params = params_of(model, guide)

    def grads(fn):
        for p in params:
            p.grad = None
        pyro.set_rng_seed(5)
        value = fn()
        return value, [p.grad.clone() for p in params]

    def reference():
        elbo, aux, backward = zforcing_elbo(model, guide, x, mask, beta=beta)
        (-(elbo.sum() + w * aux.sum() + w_b * backward.sum())).backward()
        return -elbo.sum().item()

    value, g_pyro = grads(lambda: loss.loss_and_grads(model, guide, x, mask))
    ref_value, g_ref = grads(reference)
    assert value == pytest.approx(ref_value, abs=1e-9)
    for a, b in zip(g_pyro, g_ref):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)
    assert all(g.abs().sum() > 0 for g in g_pyro)


def test_zforcing_step_protocol_and_generate():
    model, guide = tiny_zforcing(auxiliary="z")
    x, mask = ragged_batch()
    pyro.set_rng_seed(4)
    guide_trace = poutine.trace(guide).get_trace(x, mask)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, mask)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w = sum(s["log_prob"] for s in model_trace.nodes.values() if s["type"] == "sample") - sum(
        s["log_prob"] for s in guide_trace.nodes.values() if s["type"] == "sample"
    )
    z = guide_trace.nodes["z"]["value"]
    assert torch.allclose(protocol_log_weight(model, guide, x, mask, z), log_w, atol=1e-10, rtol=0)
    with torch.no_grad():
        assert torch.isfinite(fivo_log_likelihood(model, guide, x, mask, num_particles=8)).all()
    x, means = model.generate(2, 3, mean_frames=True)
    assert x.shape == means.shape == (2, 3, D) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert ZForcing(**model.config).config["emission"] == "made"
