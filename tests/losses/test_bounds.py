"""
Bounds on log p(x): importance-weighted estimates (evaluation and training),
and the FIVO particle filter over the sequential step protocol, for SRNN and
the linear Gaussian state-space model.
"""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_seq.losses import IWAE_ELBO
from pyro_seq.bounds import evaluate, importance_bounds, log_importance_weights, normalise, particles_per_chunk, trace_log_weights
from pyro_seq.losses import FIVO_ELBO
from pyro_seq.fivo import ancestor_indices, effective_sample_size, fivo_log_likelihood, particle_filter, protocol_log_weight
from pyro_seq.guides import LinearGaussianSSMGuide, SRNNGuide
from pyro_seq.models import SRNN, LinearGaussianSSM
from pyro_seq.training.trainer import Trainer

B, T, D = 3, 7, 5
LENGTHS = [7, 4, 2]


def ragged_batch(likelihood="bernoulli", seed=0, x_dim=D):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(T) < torch.tensor(LENGTHS)[:, None]  # [batch, time]
    if likelihood == "bernoulli":
        x = (torch.rand(B, T, x_dim, generator=g) < 0.3).to(torch.get_default_dtype())
    else:
        x = torch.randn(B, T, x_dim, generator=g)
    return x * mask[..., None], mask


def tiny_srnn(fast=True, kind="smoother", res_q=True, likelihood="bernoulli"):
    torch.manual_seed(1)
    model = SRNN(x_dim=D, d_dim=4, z_dim=3, hidden_dim=6, fast=fast, likelihood=likelihood)
    return model, SRNNGuide(model, kind=kind, res_q=res_q)


def tiny_lgssm(fast=True, kind="smoother"):
    torch.manual_seed(1)
    model = LinearGaussianSSM(x_dim=D, z_dim=2, fast=fast)
    guide = LinearGaussianSSMGuide(model, kind=kind)
    with torch.no_grad():  # a guide whose every parameter matters
        for p in guide.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, guide


def params_of(model, guide):
    return list(model.parameters()) + list(guide.parameters())


# every model/guide pair that implements the step protocol, with data for it
PAIRS = [
    pytest.param(
        lambda fast=fast, kind=kind, res_q=res_q, lik=lik: (
            *tiny_srnn(fast, kind, res_q, lik),
            lik,
        ),
        id=f"srnn-{'fast' if fast else 'markov'}-{kind}-{'resq' if res_q else 'plain'}-{lik}",
    )
    for fast in (True, False)
    for kind in ("smoother", "filter")
    for res_q in (True, False)
    for lik in ("bernoulli", "gaussian")
] + [
    pytest.param(
        lambda fast=fast, kind=kind: (*tiny_lgssm(fast, kind), "gaussian"),
        id=f"lgssm-{'fast' if fast else 'markov'}-{kind}",
    )
    for fast in (True, False)
    for kind in ("smoother", "filter")
]


# ------------------------------------------------------------ normalisation


def test_normalise_conventions():
    out = normalise(torch.tensor([-10.0, -30.0]), torch.tensor([10, 20]))
    assert out["total"] == pytest.approx(40 / 30)
    assert out["seq_mean"] == pytest.approx((1.0 + 1.5) / 2)
    assert out["per_sequence"] == pytest.approx(20.0)


def test_evaluate_reports_per_sequence(float64):
    x, mask = ragged_batch()
    model, guide = tiny_srnn()
    out = evaluate(model, guide, [(x, mask)], num_samples=20)
    for bound in ("elbo", "iwae"):
        assert set(out[bound]) == {"total", "seq_mean", "per_sequence"}
        assert out[bound]["per_sequence"] == pytest.approx(out[bound]["total"] * 13 / 3)
    assert out["iwae"]["per_sequence"] <= out["elbo"]["per_sequence"] + 1e-9


# ---------------------------------------------------- importance weighting


def test_chunks_bound_memory_with_5000_samples(float64):
    model = LinearGaussianSSM(x_dim=3, z_dim=2)
    guide = LinearGaussianSSMGuide(model, kind="smoother")
    x = model.generate(2, 6)
    rows = []

    def counting_guide(x, mask):
        rows.append(x.shape[0])
        return guide(x, mask)

    pyro.set_rng_seed(0)
    bounds = importance_bounds(model, counting_guide, x, num_samples=5000, max_frames=6000)
    assert sum(rows) == 5000 * 2 and max(rows) * 6 <= 6000 and len(rows) == 10
    # the tightness against the exact value: tests/models/test_lgssm.py (trained guides)
    assert (bounds["elbo"] < bounds["iwae"]).all()
    # the old arguments still work (positional chunk_size)
    assert log_importance_weights(model, guide, x, None, 10, 3).shape == (10, 2)
    assert particles_per_chunk(10000, 2, 6) == (1 << 16) // 12
    assert particles_per_chunk(5000, 2, 6, chunk_size=7) == 7
    assert particles_per_chunk(5000, 1000, 1000, max_frames=10) == 1


def test_importance_bounds_match_the_weights(float64):
    x, mask = ragged_batch()
    model, guide = tiny_srnn()
    pyro.set_rng_seed(3)
    log_w = log_importance_weights(model, guide, x, mask, num_samples=30, chunk_size=7)
    pyro.set_rng_seed(3)
    bounds = importance_bounds(model, guide, x, mask, num_samples=30, chunk_size=7)
    assert torch.allclose(bounds["elbo"], log_w.mean(0))
    assert torch.allclose(bounds["iwae"], torch.logsumexp(log_w, 0) - math.log(30))


# ----------------------------------------------------------------- IWAE_ELBO


@pytest.mark.parametrize("make", [tiny_srnn, tiny_lgssm], ids=["srnn", "lgssm"])
def test_iwae_loss_with_one_particle_is_the_elbo(float64, make):
    model, guide = make()
    x, mask = ragged_batch("gaussian" if make is tiny_lgssm else "bernoulli")
    params = params_of(model, guide)
    pyro.set_rng_seed(5)
    elbo = Trace_ELBO().differentiable_loss(model, guide, x, mask)
    elbo_grads = torch.autograd.grad(elbo, params)
    pyro.set_rng_seed(5)
    loss = IWAE_ELBO(num_particles=1)
    iwae = loss.differentiable_loss(model, guide, x, mask)
    iwae_grads = torch.autograd.grad(iwae, params)
    assert torch.allclose(elbo, iwae, atol=1e-10, rtol=0)
    for a, b in zip(elbo_grads, iwae_grads):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    terms = loss.last_terms
    assert torch.allclose(terms["log_likelihood"] - terms["kl"], -iwae.detach())


def test_iwae_loss_is_a_per_sequence_log_mean_exp(float64):
    x, mask = ragged_batch()
    model, guide = tiny_srnn()
    pyro.set_rng_seed(5)
    log_w = log_importance_weights(model, guide, x, mask, num_samples=8, chunk_size=8)  # [8, batch]
    pyro.set_rng_seed(5)
    loss = IWAE_ELBO(num_particles=8).differentiable_loss(model, guide, x, mask)
    per_sequence = torch.logsumexp(log_w, 0) - math.log(8)  # [batch]
    assert torch.allclose(-loss, per_sequence.sum())
    # not the log-mean-exp of the whole batch's summed weights (RenyiELBO, alpha = 0)
    batch_level = torch.logsumexp(log_w.sum(-1), 0) - math.log(8)
    assert per_sequence.sum() > batch_level + 1e-6


@pytest.mark.parametrize(
    "loss",
    [IWAE_ELBO(num_particles=3), FIVO_ELBO(num_particles=3, resample="always")],
    ids=["iwae", "fivo"],
)
@pytest.mark.parametrize("make", [tiny_srnn, tiny_lgssm], ids=["srnn", "lgssm"])
def test_one_trainer_step_changes_every_parameter(loss, make):
    model, guide = make()
    x, mask = ragged_batch("gaussian" if make is tiny_lgssm else "bernoulli")
    x = x.float()
    trainer = Trainer(model, guide, loss, [(x, mask)], None, lr=1e-2, progress=False, seed=0)
    before = [p.detach().clone() for p in params_of(model, guide)]
    result = trainer.step(x, mask)
    assert result["ok"], result
    assert math.isfinite(result["loss"]) and result["terms"] is loss.last_terms
    assert trainer.global_step == 1
    changed = [not torch.equal(a, b) for a, b in zip(before, params_of(model, guide))]
    assert all(changed), changed
    if isinstance(loss, FIVO_ELBO):
        assert loss.last_terms["resampling_steps"] == sum(n - 1 for n in LENGTHS)
        assert -loss.last_terms["fivo"] == pytest.approx(result["loss"])


# ---------------------------------------------------- FIVO and the protocol


@pytest.mark.parametrize("make", PAIRS)
def test_protocol_scores_a_pyro_path_like_the_traces(float64, make):
    # replay: the step protocol's log p(x, z) - log q(z | x) of the path a Pyro guide
    # trace drew equals the trace's log weight, per sequence
    model, guide, likelihood = make()
    x, mask = ragged_batch(likelihood)
    pyro.set_rng_seed(4)
    guide_trace = poutine.trace(guide).get_trace(x, mask)
    z = guide_trace.nodes["_RETURN"]["value"]  # [batch, time, z_dim]
    pyro.set_rng_seed(4)
    want, _ = trace_log_weights(model, guide, x, mask)
    got = protocol_log_weight(model, guide, x, mask, z)
    assert torch.allclose(got, want, atol=1e-10, rtol=0), (got, want)


@pytest.mark.parametrize("make", PAIRS)
def test_fivo_without_resampling_is_the_iwae_bound(float64, make):
    # from the same random numbers: the guide draws the same path in both
    model, guide, likelihood = make()
    x, mask = ragged_batch(likelihood)
    pyro.set_rng_seed(3)
    log_w = log_importance_weights(model, guide, x, mask, num_samples=16, chunk_size=16)
    pyro.set_rng_seed(3)
    fivo = fivo_log_likelihood(model, guide, x, mask, num_particles=16, resample="never")
    assert torch.allclose(fivo, torch.logsumexp(log_w, 0) - math.log(16), atol=1e-10, rtol=0)


def test_fivo_gradients_reach_every_parameter(float64):
    x, mask = ragged_batch("gaussian")
    model, guide = tiny_srnn(likelihood="gaussian")
    loss = FIVO_ELBO(num_particles=4, resample="always").differentiable_loss(model, guide, x, mask)
    grads = torch.autograd.grad(loss, params_of(model, guide))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_fivo_padding_adds_nothing(float64):
    # the same sequences padded with 3 more steps: same estimate, same resampling
    x, mask = ragged_batch("gaussian")
    model, guide = tiny_srnn(likelihood="gaussian")
    padded_x = torch.cat([x, torch.zeros(B, 3, D)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(B, 3, dtype=torch.bool)], dim=1)
    results = []
    for xs, ms in ((x, mask), (padded_x, padded_mask)):
        pyro.set_rng_seed(7)
        results.append(particle_filter(model, guide, xs, ms, num_particles=10, resample="always"))
    assert torch.allclose(results[0].log_likelihood, results[1].log_likelihood, atol=1e-12, rtol=0)
    # padded steps and the last real step never resample
    for r in results:
        assert r.num_resampled.tolist() == [n - 1 for n in LENGTHS]


def test_resampling_helpers():
    log_w = torch.tensor([[0.0, 0.0, 0.0], [0.0, -1e9, -1e9], [0.0, -1e9, 0.0]])  # [K=3, batch=3]
    ess = effective_sample_size(log_w)
    assert torch.allclose(ess, torch.tensor([3.0, 1.0, 2.0]))
    torch.manual_seed(0)
    index = ancestor_indices(log_w, torch.tensor([True, True, False])).reshape(3, 3)
    batch_of = index % 3
    assert torch.equal(batch_of, torch.arange(3).expand(3, 3))  # ancestors within the sequence
    assert (index[:, 1] == 1).all()  # only particle 0 has weight in sequence 1
    assert torch.equal(index[:, 2], torch.tensor([2, 5, 8]))  # not resampled: the identity
    with pytest.raises(ValueError, match="resample"):
        fivo_log_likelihood(*tiny_srnn(), *ragged_batch(), num_particles=2, resample="sometimes")
