import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_seq.bounds import evaluate, log_importance_weights, normalise
from pyro_seq.guides import SRNNGuide
from pyro_seq.losses import (
    ConstantSchedule,
    LinearSchedule,
    Schedule,
    WarmupTrace_ELBO,
    WarmupTraceMeanField_ELBO,
    cosine_schedule,
    linear_schedule,
)
from pyro_seq.models import SRNN
from pyro_seq.nn import reverse_padded
from pyro_seq.reference import srnn_elbo

B, T, D = 3, 7, 5


def ragged_batch(likelihood="bernoulli", seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 4, 2])
    mask = torch.arange(T) < lengths[:, None]  # [batch, time]
    if likelihood == "bernoulli":
        x = (torch.rand(B, T, D, generator=g) < 0.3).to(torch.get_default_dtype())
    else:
        x = torch.randn(B, T, D, generator=g)
    return x * mask[..., None], mask


def tiny(fast=True, kind="smoother", res_q=True, likelihood="bernoulli", dropout=0.0):
    torch.manual_seed(1)
    model = SRNN(
        x_dim=D, d_dim=4, z_dim=3, hidden_dim=6, fast=fast, likelihood=likelihood, dropout=dropout
    )
    guide = SRNNGuide(model, kind=kind, res_q=res_q)
    return model, guide


def params_of(model, guide):
    return list(model.parameters()) + list(guide.parameters())


def loss_and_grads(fn, model, guide):
    pyro.set_rng_seed(5)
    loss = fn()
    return loss.detach(), torch.autograd.grad(loss, params_of(model, guide))


def assert_same(a, b, atol=1e-10):
    (la, ga), (lb, gb) = a, b
    assert torch.allclose(la, lb, atol=atol, rtol=0), (la, lb)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=atol, rtol=0)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("res_q", [True, False])
@pytest.mark.parametrize("kind", ["smoother", "filter"])
@pytest.mark.parametrize("fast", [True, False])
def test_pyro_elbo_equals_hand_written(float64, fast, kind, res_q, likelihood):
    x, mask = ragged_batch(likelihood)
    model, guide = tiny(fast, kind, res_q, likelihood)
    pyro_result = loss_and_grads(
        lambda: Trace_ELBO().differentiable_loss(model, guide, x, mask), model, guide
    )
    ref_result = loss_and_grads(lambda: -srnn_elbo(model, guide, x, mask).sum(), model, guide)
    assert_same(pyro_result, ref_result)
    # every parameter gets a gradient
    assert all(g.abs().sum() > 0 for g in pyro_result[1])


def test_dropout_matches_hand_written_and_is_off_in_eval(float64):
    x, mask = ragged_batch()
    model, guide = tiny(dropout=0.5)
    pyro_result = loss_and_grads(
        lambda: Trace_ELBO().differentiable_loss(model, guide, x, mask), model, guide
    )
    ref_result = loss_and_grads(lambda: -srnn_elbo(model, guide, x, mask).sum(), model, guide)
    assert_same(pyro_result, ref_result)
    model.eval()
    no_dropout, _ = tiny()
    pyro.set_rng_seed(5)
    a = srnn_elbo(model, guide, x, mask)
    pyro.set_rng_seed(5)
    b = srnn_elbo(no_dropout, guide, x, mask)
    assert torch.allclose(a, b)


@pytest.mark.parametrize("kind", ["smoother", "filter"])
def test_fast_and_markov_forms_agree(float64, kind):
    x, mask = ragged_batch()
    results = []
    for fast in (True, False):
        model, guide = tiny(fast, kind)
        results.append(
            loss_and_grads(lambda: Trace_ELBO().differentiable_loss(model, guide, x, mask), model, guide)
        )
    assert_same(*results)


@pytest.mark.parametrize("fast", [True, False])
def test_mean_field_elbo_uses_pathwise_kl(float64, fast):
    x, mask = ragged_batch()
    model, guide = tiny(fast)
    pyro_result = loss_and_grads(
        lambda: TraceMeanField_ELBO().differentiable_loss(model, guide, x, mask), model, guide
    )
    ref_result = loss_and_grads(
        lambda: -srnn_elbo(model, guide, x, mask, analytic_kl=True).sum(), model, guide
    )
    assert_same(pyro_result, ref_result)


@pytest.mark.parametrize(
    "warm_cls, base_cls, analytic",
    [(WarmupTrace_ELBO, Trace_ELBO, False), (WarmupTraceMeanField_ELBO, TraceMeanField_ELBO, True)],
)
def test_warmup_beta_one_is_base_and_beta_zero_drops_latents(float64, warm_cls, base_cls, analytic):
    x, mask = ragged_batch()
    model, guide = tiny()
    base = loss_and_grads(lambda: base_cls().differentiable_loss(model, guide, x, mask), model, guide)
    warm = warm_cls(schedule=LinearSchedule(0.0, 1.0, steps=10))
    warm.step = 10
    assert warm.beta == 1.0
    one = loss_and_grads(lambda: warm.differentiable_loss(model, guide, x, mask), model, guide)
    assert torch.equal(base[0], one[0])
    for a, b in zip(base[1], one[1]):
        assert torch.equal(a, b)
    for beta in (0.0, 0.37):
        warm.schedule = ConstantSchedule(beta)
        got = loss_and_grads(lambda: warm.differentiable_loss(model, guide, x, mask), model, guide)
        ref = loss_and_grads(
            lambda: -srnn_elbo(model, guide, x, mask, beta=beta, analytic_kl=analytic).sum(),
            model,
            guide,
        )
        assert_same(got, ref)
    # logged terms are unscaled: log-likelihood - KL reproduces the beta = 1 Trace_ELBO
    warm = WarmupTrace_ELBO(schedule=0.2)
    pyro.set_rng_seed(5)
    loss = warm.differentiable_loss(model, guide, x, mask)
    terms = warm.last_terms
    pyro.set_rng_seed(5)
    full = -srnn_elbo(model, guide, x, mask).sum()
    assert terms["beta"] == 0.2
    assert torch.allclose(terms["log_likelihood"] - terms["kl"], -full.detach())
    assert torch.allclose(-(terms["log_likelihood"] - 0.2 * terms["kl"]), loss.detach())


def test_schedules():
    assert linear_schedule(0, 0.2, 1.0, 100) == 0.2
    assert linear_schedule(50, 0.2, 1.0, 100) == pytest.approx(0.6)
    assert linear_schedule(1000, 0.2, 1.0, 100) == 1.0
    assert cosine_schedule(0, 0.0, 1.0, 10) == pytest.approx(0.0)
    assert cosine_schedule(5, 0.0, 1.0, 10) == pytest.approx(0.5)
    assert cosine_schedule(10, 0.0, 1.0, 10) == pytest.approx(1.0)
    assert ConstantSchedule(0.5)(123) == 0.5
    assert Schedule(**LinearSchedule(0.1, 1.0, 7).config)(7) == 1.0
    with pytest.raises(ValueError, match="schedule kind"):
        Schedule("exponential")


def test_deterministic_layer_is_shared_with_the_guide(float64):
    x, mask = ragged_batch()
    model, guide = tiny()
    calls = []
    model.d_rnn.register_forward_hook(lambda *a: calls.append(1))
    Trace_ELBO().differentiable_loss(model, guide, x, mask)
    assert len(calls) == 1  # the model reused the guide's d
    # a parameter update invalidates the shared value
    guide(x, mask)
    with torch.no_grad():
        model.d_rnn.weight_hh_l0.add_(0.1)
    calls.clear()
    model(x, mask)
    assert len(calls) == 1


def test_reverse_padded():
    x = torch.arange(2 * 4, dtype=torch.float).reshape(2, 4, 1)
    out = reverse_padded(x, torch.tensor([4, 2]))
    assert out[0, :, 0].tolist() == [3, 2, 1, 0]
    assert out[1, :, 0].tolist() == [5, 4, 6, 7]
    assert torch.equal(reverse_padded(out, torch.tensor([4, 2])), x)


def test_smoother_ignores_padding(float64):
    # the posterior of a sequence does not change when padding is appended
    x, mask = ragged_batch()
    model, guide = tiny()
    pyro.set_rng_seed(3)
    z_short = guide(x[1:2, :4], mask[1:2, :4])
    pyro.set_rng_seed(3)
    z_padded = guide(x[1:2], mask[1:2])
    assert torch.allclose(z_short, z_padded[:, :4])


def test_importance_weights_and_bounds(float64):
    x, mask = ragged_batch()
    model, guide = tiny()
    log_w = log_importance_weights(model, guide, x, mask, num_samples=200, chunk_size=64)
    assert log_w.shape == (200, B)
    elbo = log_w.mean(0)
    iwae = torch.logsumexp(log_w, 0) - math.log(200)
    assert (iwae >= elbo).all()
    # the weights are the per-sequence ELBO integrands: their mean matches the hand-written ELBO
    ref = torch.stack([srnn_elbo(model, guide, x, mask).detach() for _ in range(200)]).mean(0)
    assert torch.allclose(elbo, ref, atol=0.5)
    out = evaluate(model, guide, [(x, mask)], num_samples=20)
    assert out["num_frames"] == 13 and out["num_sequences"] == 3
    assert out["iwae"]["total"] <= out["elbo"]["total"] + 1e-9


def test_normalise_conventions():
    ll = torch.tensor([-10.0, -30.0])
    lengths = torch.tensor([10, 20])
    out = normalise(ll, lengths)
    assert out["total"] == pytest.approx(40 / 30)
    assert out["seq_mean"] == pytest.approx((1.0 + 1.5) / 2)


def test_generate():
    model, _ = tiny()
    x = model.generate(4, 9)
    assert x.shape == (4, 9, D)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    model, _ = tiny(likelihood="gaussian")
    x, mean = model.generate(2, 3, mean_frames=True)
    assert x.shape == mean.shape == (2, 3, D)


@pytest.mark.parametrize(
    "x, mask, match",
    [
        (torch.zeros(3, 7), None, r"shape \[batch, time, x_dim\]"),
        (torch.zeros(3, 7, 4), None, "x_dim=5"),
        (torch.full((3, 7, 5), float("nan")), None, "NaN"),
        (torch.full((3, 7, 5), 0.5), None, "binary"),
        (torch.zeros(3, 7, 5), torch.ones(3, 6, dtype=torch.bool), r"mask must have shape"),
        (torch.zeros(3, 7, 5), torch.zeros(3, 7, dtype=torch.bool), "length 0"),
        (torch.zeros(3, 7, 5), torch.tensor([[0, 1] * 3 + [1]] * 3).bool(), "prefix"),
        (torch.zeros(0, 7, 5), None, "empty"),
        (torch.zeros(3, 7, 5, dtype=torch.long), None, "floating point"),
    ],
)
def test_bad_input_gets_a_clear_error(x, mask, match):
    model, guide = tiny()
    for fn in (model, guide):
        with pytest.raises(ValueError, match=match):
            fn(x, mask)


def test_bad_configuration():
    with pytest.raises(ValueError, match="likelihood"):
        SRNN(likelihood="poisson")
    model, _ = tiny()
    with pytest.raises(ValueError, match="kind"):
        SRNNGuide(model, kind="backward")


def test_svi_registers_every_parameter_once():
    model = SRNN(x_dim=D, d_dim=4, z_dim=3, hidden_dim=6)
    guide = SRNNGuide(model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), WarmupTrace_ELBO())
    x, mask = ragged_batch()
    before = [p.detach().clone() for p in params_of(model, guide)]
    svi.step(x, mask)
    store = pyro.get_param_store()
    assert len(store) == len(params_of(model, guide))
    assert {id(v) for v in store._params.values()} == {id(p) for p in params_of(model, guide)}
    assert all(not torch.equal(a, b) for a, b in zip(before, params_of(model, guide)))
