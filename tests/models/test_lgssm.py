"""
The linear Gaussian state-space model: exact likelihood, guides, and every
bound of the package checked against the exact log-likelihood.
"""

import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_seq.bounds import importance_bounds, iwae_log_likelihood, log_importance_weights
from pyro_seq.fivo import fivo_log_likelihood, particle_filter
from pyro_seq.guides import LinearGaussianSSMGuide
from pyro_seq.guides.lgssm import (
    MarkovTrilGaussianChain,
    lower_cholesky,
    tril_diag_gaussian_kl,
    tril_gaussian_log_prob,
)
from pyro_seq.models import LinearGaussianSSM
from pyro_seq.models.lgssm import inverse_softplus_scale

X_DIM, Z_DIM, T = 3, 2, 20
LENGTHS = [20, 15, 20, 7, 20, 12, 18, 20]


def make_model(fast=True):
    """A fixed, stable LGSSM (float64 when the default dtype is)."""
    torch.manual_seed(0)
    model = LinearGaussianSSM(X_DIM, Z_DIM, fast=fast)
    return model.set_parameters(
        trans_matrix=[[0.8, 0.2], [-0.3, 0.7]],
        emit_matrix=[[1.0, 0.5], [-0.4, 0.9], [0.3, -1.2]],
        init_scale=[1.0, 0.8],
        trans_scale=[0.5, 0.3],
        emit_scale=[0.4, 0.6, 0.5],
    )


def make_data(model, lengths=LENGTHS, seed=0):
    """Sequences drawn from ``model``, right-padded with zeros to ``T``."""
    pyro.set_rng_seed(seed)
    lengths = torch.tensor(lengths)
    mask = torch.arange(T) < lengths[:, None]  # [batch, time]
    x = model.generate(len(lengths), T)  # [batch, time, x_dim]
    return x * mask[..., None], mask


def kalman_log_likelihood(A, C, P0, Q, R, x):
    """Hand-written Kalman filter: log p(x_{1:T}) of one sequence ``x [T, x_dim]``."""
    m, P = torch.zeros(A.shape[0]), P0
    total = 0.0
    for t in range(x.shape[0]):
        if t > 0:
            m, P = A @ m, A @ P @ A.T + Q  # predict
        S = C @ P @ C.T + R  # innovation covariance
        r = x[t] - C @ m  # innovation
        total += float(-0.5 * (r @ torch.linalg.solve(S, r) + torch.logdet(2 * math.pi * S)))
        gain = P @ C.T @ torch.linalg.inv(S)
        m, P = m + gain @ r, P - gain @ C @ P  # update
    return total


def train_guide(model, kind, x, mask, steps=500, seed=0):
    """Fit a guide to the fixed model by SVI (TraceMeanField_ELBO, 8 copies of the batch)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = LinearGaussianSSMGuide(model, kind)
    frozen = pyro.poutine.block(model, hide_types=["param"])
    optim = pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.99})
    svi = SVI(frozen, guide, optim, TraceMeanField_ELBO())
    xr, mr = x.repeat(8, 1, 1), mask.repeat(8, 1)
    for _ in range(steps):
        svi.step(xr, mr)
    pyro.clear_param_store()
    return guide


@pytest.fixture(scope="module")
def trained():
    """The model, its data, the exact log-likelihood and both guides trained (float64)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = make_model()
        model.requires_grad_(False)
        x, mask = make_data(model)
        exact = model.exact_log_likelihood(x, mask).detach()
        guides = {kind: train_guide(model, kind, x, mask) for kind in ("smoother", "filter")}
    finally:
        torch.set_default_dtype(old)
    return model, x, mask, exact, guides


# ---------------------------------------------------------------- the model


def test_exact_log_likelihood_equals_hand_written_kalman_filter(float64):
    model = make_model()
    x, mask = make_data(model)
    got = model.exact_log_likelihood(x, mask)
    A, C = model.trans_matrix.detach(), model.emit_matrix.detach()
    scales = (model.init_scale, model.trans_scale, model.emit_scale)
    P0, Q, R = (torch.diag(s.detach() ** 2) for s in scales)
    want = torch.tensor(
        [kalman_log_likelihood(A, C, P0, Q, R, x[b, :L]) for b, L in enumerate(LENGTHS)]
    )
    assert torch.allclose(got, want, atol=1e-9, rtol=0)
    # a sequence's value does not depend on the padding or on the other sequences
    alone = model.exact_log_likelihood(x[3:4, :7])
    assert torch.allclose(alone, got[3:4], atol=1e-10, rtol=0)
    # and it is differentiable in every parameter
    grads = torch.autograd.grad(got.sum(), list(model.parameters()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_set_parameters_round_trips(float64):
    model = make_model()
    assert torch.allclose(model.trans_scale, torch.tensor([0.5, 0.3]))
    assert torch.allclose(model.emit_scale, torch.tensor([0.4, 0.6, 0.5]))
    assert torch.allclose(inverse_softplus_scale(30.0, 1e-3), torch.tensor(30.0 - 1e-3), atol=1e-8)
    with pytest.raises(ValueError, match="min_scale"):
        inverse_softplus_scale(1e-4, 1e-3)


def test_trace_log_density_matches_closed_form(float64):
    # the Pyro model's log p(x, z) for a fixed path, written out by hand
    model = make_model()
    x, mask = make_data(model)
    z = torch.randn(x.shape[0], T, Z_DIM)
    trace = pyro.poutine.trace(pyro.poutine.condition(model, data={"z": z})).get_trace(x, mask)
    trace.compute_log_prob()
    got = trace.nodes["z"]["log_prob"] + trace.nodes["x"]["log_prob"]  # [batch]
    z_prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)
    scales = torch.stack([model.init_scale] + [model.trans_scale] * (T - 1))  # [T, z_dim]
    log_pz = torch.distributions.Normal(z_prev @ model.trans_matrix.T, scales).log_prob(z).sum(-1)
    emission = torch.distributions.Normal(z @ model.emit_matrix.T, model.emit_scale)
    log_px = emission.log_prob(x).sum(-1)
    want = ((log_pz + log_px) * mask).sum(-1)
    assert torch.allclose(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["smoother", "filter"])
def test_fast_and_markov_forms_agree(float64, kind):
    x, mask = make_data(make_model())
    results = []
    for fast in (True, False):
        model = make_model(fast)
        torch.manual_seed(2)
        guide = LinearGaussianSSMGuide(model, kind)
        with torch.no_grad():  # a guide whose every parameter matters
            for p in guide.parameters():
                p.add_(0.1 * torch.randn_like(p))
        params = list(model.parameters()) + list(guide.parameters())
        pyro.set_rng_seed(5)
        loss = Trace_ELBO().differentiable_loss(model, guide, x, mask)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    (la, ga), (lb, gb) = results
    assert torch.allclose(la, lb, atol=1e-9, rtol=0)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)
    assert all(g.abs().sum() > 0 for g in ga)


def test_generate_shapes():
    model = LinearGaussianSSM(X_DIM, Z_DIM)
    x, z = model.generate(4, 9, return_latents=True)
    assert x.shape == (4, 9, X_DIM) and z.shape == (4, 9, Z_DIM)
    with pytest.raises(ValueError):
        model.generate(0, 3)


def test_bad_input_gets_a_clear_error():
    model = LinearGaussianSSM(X_DIM, Z_DIM)
    guide = LinearGaussianSSMGuide(model)
    for fn in (model, guide, model.exact_log_likelihood):
        with pytest.raises(ValueError, match="x_dim=3"):
            fn(torch.zeros(2, 5, 4))
        with pytest.raises(ValueError, match="prefix"):
            fn(torch.zeros(2, 3, X_DIM), torch.tensor([[1, 0, 1], [1, 1, 1]]).bool())
    with pytest.raises(ValueError, match="kind"):
        LinearGaussianSSMGuide(model, kind="backward")


# ------------------------------------------------------------- guide maths


def test_full_covariance_helpers_match_torch(float64):
    torch.manual_seed(0)
    L = lower_cholesky(torch.randn(4, 3, 3), 1e-3)  # [4, 3, 3]
    loc_q, loc_p, value = torch.randn(3, 4, 3).unbind(0)
    scale_p = torch.rand(4, 3) + 0.5
    q = torch.distributions.MultivariateNormal(loc_q, scale_tril=L)
    p = torch.distributions.MultivariateNormal(loc_p, scale_tril=torch.diag_embed(scale_p))
    assert torch.allclose(tril_gaussian_log_prob(value, loc_q, L), q.log_prob(value))
    kl = tril_diag_gaussian_kl(loc_q, L, loc_p, scale_p)
    assert torch.allclose(kl, torch.distributions.kl_divergence(q, p))


def test_tril_chain_scores_its_own_samples_and_has_a_semi_analytic_kl(float64):
    model = make_model()
    x, mask = make_data(model)
    guide = LinearGaussianSSMGuide(model)
    _, _, lengths = model.check(x, mask)
    q = guide.posterior_chain(x, mask, lengths)
    assert isinstance(q, MarkovTrilGaussianChain)
    z = q.rsample()
    cached = q.log_prob(z)
    q._cache = None
    assert torch.allclose(cached, q.log_prob(z))  # vectorised scoring = sequential sampling
    p = model.prior_chain(x.shape[0], T, mask)
    z = q.rsample()
    kl = torch.distributions.kl_divergence(q, p)  # [batch], the masked sum of per-step KLs
    loc_q, scale_tril_q = q.params(z)  # [batch, T, z_dim], [batch, T, z_dim, z_dim]
    loc_p, scale_p = p.params(z)  # [batch, T, z_dim]
    per_step = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(loc_q, scale_tril=scale_tril_q),
        torch.distributions.MultivariateNormal(loc_p, scale_tril=torch.diag_embed(scale_p)),
    )  # [batch, T]
    assert torch.allclose(kl, (per_step * mask).sum(-1))


# ------------------------------------------------------- bounds vs exact


def test_trained_smoother_is_nearly_exact_and_the_filter_is_not(trained):
    model, x, mask, exact, guides = trained
    pyro.set_rng_seed(0)
    gap = {}
    for kind, guide in guides.items():
        elbo = importance_bounds(model, guide, x, mask, num_samples=2000)["elbo"]
        gap[kind] = float((exact - elbo).mean())  # nats per sequence
    # measured (seeds 0, 1, 2 of the training): exact - ELBO = 0.09, 0.09, 0.01 nats per
    # sequence for the smoother (its family holds the exact posterior up to the horizon),
    # 2.85 for the filter (it cannot see the future frames)
    assert 0 < gap["smoother"] < 0.1, gap  # the documented claim: within 0.1 nats per sequence
    assert gap["filter"] > 2.0, gap


def test_elbo_below_iwae_below_exact_and_iwae_tightens_with_k(trained):
    # the filter guide, whose ELBO is 2.85 nats per sequence below the exact value
    model, x, mask, exact, guides = trained
    pyro.set_rng_seed(0)
    gaps = []
    for k, repeats in [(1, 1000), (10, 200), (100, 20), (1000, 4)]:
        log_w = log_importance_weights(model, guides["filter"], x, mask, k * repeats)
        iwae = torch.logsumexp(log_w.reshape(repeats, k, -1), 1) - math.log(k)  # [repeats, batch]
        gaps.append(float((exact - iwae).mean()))  # mean over repeats and sequences
    # measured: exact - IWAE(K) = 2.85 (K=1, the ELBO), 0.93, 0.26, 0.05 nats per sequence
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[0] > 2.0 and 0 < gaps[2] < 0.5 and -0.05 < gaps[3] < 0.15, gaps


def test_iwae_with_5000_samples_in_bounded_chunks_is_close_to_exact(trained):
    model, x, mask, exact, guides = trained
    rows = []

    def counting_guide(x, mask):
        rows.append(x.shape[0])
        return guides["smoother"](x, mask)

    pyro.set_rng_seed(0)
    iwae = iwae_log_likelihood(model, counting_guide, x, mask, num_samples=5000, max_frames=20000)
    assert sum(rows) == 5000 * x.shape[0] and max(rows) * T <= 20000
    # measured: |exact - IWAE(5000)| < 0.01 nats for every sequence (smoother guide)
    assert float((exact - iwae).abs().max()) < 0.05


def test_fivo_is_close_to_exact_with_enough_particles(trained):
    model, x, mask, exact, guides = trained
    pyro.set_rng_seed(0)
    with torch.no_grad():
        result = particle_filter(model, guides["filter"], x, mask, num_particles=1000)
    error = (exact - result.log_likelihood).abs()  # [batch]
    # measured: mean 0.003, max 0.11 nats per sequence, 0 to 7 resampling steps per sequence
    assert error.max() < 0.5 and error.mean() < 0.15, error
    assert (result.num_resampled > 0).any()
    assert (result.num_resampled <= mask.sum(-1) - 1).all()


def test_fivo_resampling_keeps_long_sequences_tight(trained):
    # 200 steps, 100 particles: the importance-weighted bound degrades with T, FIVO does not
    model, _, _, _, guides = trained
    pyro.set_rng_seed(1)
    x = model.generate(4, 200)
    exact = model.exact_log_likelihood(x).detach()
    with torch.no_grad():
        fivo = fivo_log_likelihood(model, guides["filter"], x, num_particles=100)
        iwae = fivo_log_likelihood(model, guides["filter"], x, num_particles=100, resample="never")
    # measured: exact - FIVO within +-4 nats (mean about 0.5), exact - IWAE 12 to 30 nats
    assert float((exact - fivo).mean().abs()) < 3.0
    assert float((exact - iwae).mean()) > 8.0
