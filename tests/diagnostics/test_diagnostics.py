import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO

from pyro_seq.data import make_batches
from pyro_seq.diagnostics import (
    compare_guides,
    compare_inference_data,
    importance_ess,
    iw_log_likelihood,
    latent_health,
    music_ppc,
    pareto_khat,
    plot_compare,
    plot_kl_heatmap,
    plot_kl_per_unit,
    plot_khat,
    plot_music_ppc,
    to_inference_data,
)
from pyro_seq.diagnostics._common import trace_pair
from pyro_seq.diagnostics.arviz_adapter import (
    ArvizVersionError,
    arviz,
    check_arviz_version,
    elpd_from_inference_data,
    inference_data_from_weights,
)
from pyro_seq.diagnostics.compare import TABLE_COLUMNS
from pyro_seq.diagnostics.latents import Moments, kl_elementwise, latent_steps
from pyro_seq.diagnostics.ppc import (
    music_statistics,
    note_durations,
    notes_per_frame,
    quantile_match,
)
from pyro_seq.diagnostics.psis import ImportanceWeights
from pyro_seq.guides import SRNNGuide
from pyro_seq.models import SRNN

X_DIM, Z_DIM = 6, 3
LENGTHS = [5, 9, 12, 7, 3, 10, 8]


def sequences(lengths=LENGTHS, rate=0.2, seed=0):
    g = np.random.default_rng(seed)
    return [(g.random((n, X_DIM)) < rate).astype(np.float32) for n in lengths]


def batches(batch_size=3, **kwargs):
    return list(make_batches(sequences(**kwargs), batch_size, shuffle=False))


def tiny(fast=True, name="srnn", seed=1):
    torch.manual_seed(seed)
    model = SRNN(x_dim=X_DIM, d_dim=8, z_dim=Z_DIM, hidden_dim=16, fast=fast, name=name)
    return model, SRNNGuide(model, name=f"{name}_guide")


# ------------------------------------------------------------------ latent health


@pytest.mark.parametrize("fast", [True, False])
def test_kl_per_step_is_the_mean_field_elbo_kl(float64, fast):
    batch = make_batches(sequences(), 7, shuffle=False, dtype=torch.float64)
    x, mask, _ = next(iter(batch))
    model, guide = tiny(fast)
    pyro.set_rng_seed(7)
    kl = kl_elementwise(latent_steps(model, guide, x, mask), mask)  # [batch, T, z_dim]
    assert (kl >= 0).all()
    assert (kl[~mask] == 0).all()
    # the same guide sample: -loss = log p(x | z) - KL
    pyro.set_rng_seed(7)
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide, x, mask)
    pyro.set_rng_seed(7)
    _, model_trace = trace_pair(model, guide, x, mask)
    log_lik = sum(
        s["fn"].log_prob(s["value"]).sum()
        for s in model_trace.nodes.values()
        if s["type"] == "sample" and s["is_observed"]
    )
    assert torch.allclose(-loss.detach(), log_lik - kl.sum(), atol=1e-9)


def test_latent_health_layout_and_sums():
    model, guide = tiny()
    health = latent_health(model, guide, batches())
    n, t_max = len(LENGTHS), max(LENGTHS)
    assert health.kl_per_step.shape == (n, t_max)
    assert sorted(health.lengths.tolist()) == sorted(LENGTHS)
    for row, length in zip(health.kl_per_step, health.lengths):
        assert np.isfinite(row[:length]).all() and (row[:length] >= 0).all()
        assert np.isnan(row[length:]).all()
    frames = sum(LENGTHS)
    assert health.kl_per_frame == pytest.approx(np.nansum(health.kl_per_step) / frames)
    assert health.kl_per_unit.shape == health.posterior_mean_variance.shape == (Z_DIM,)
    assert health.kl_per_unit.sum() == pytest.approx(health.kl_per_frame)
    assert health.active_units == int(health.active.sum())
    assert 0 <= health.active_units <= Z_DIM


def _toy_model(x, mask):
    batch, time, _ = x.shape
    with pyro.plate("sequences", batch, dim=-1):
        for t in pyro.markov(range(time)):
            z = pyro.sample(
                f"z_{t + 1}",
                dist.Normal(torch.zeros(batch, 3), 1.0).to_event(1).mask(mask[:, t]),
            )
            logits = z.sum(-1, keepdim=True).expand(batch, x.shape[-1])  # [batch, x_dim]
            pyro.sample(
                f"x_{t + 1}",
                dist.Bernoulli(logits=logits).to_event(1).mask(mask[:, t]),
                obs=x[:, t],
            )


def _toy_guide(x, mask):
    batch, time, _ = x.shape
    with pyro.plate("sequences", batch, dim=-1):
        for t in pyro.markov(range(time)):
            notes = x[:, t].sum(-1)  # [batch]
            # unit 0 follows the data, unit 1 is constant, unit 2 moves by Var < 0.01
            loc = torch.stack([notes, torch.full_like(notes, 0.3), 0.01 * notes], -1)
            pyro.sample(f"z_{t + 1}", dist.Normal(loc, 0.5).to_event(1).mask(mask[:, t]))


def test_active_units_on_a_guide_with_a_constant_unit():
    data = batches()
    health = latent_health(_toy_model, _toy_guide, data)
    notes = np.concatenate([b.x[b.mask].sum(-1).numpy() for b in data])  # [frames]
    expected = np.array([notes.var(), 0.0, 1e-4 * notes.var()])
    assert np.allclose(health.posterior_mean_variance, expected, atol=1e-9)
    assert health.active.tolist() == [True, False, False]
    assert health.active_units == 1
    # analytic KL(N(loc, 0.5) || N(0, 1)) per unit, averaged over frames
    locs = np.stack([notes, np.full_like(notes, 0.3), 0.01 * notes], -1)
    kl = 0.5 * (0.25 + locs**2 - 1 - math.log(0.25))
    assert np.allclose(health.kl_per_unit, kl.mean(0), rtol=1e-5)


def test_moments_merge_matches_numpy():
    rows = torch.randn(50, 4, dtype=torch.float64) * 3 + 7
    m = Moments(4)
    for chunk in rows.split([1, 20, 0, 29]):
        m.update(chunk)
    assert m.count == 50
    assert torch.allclose(m.variance, rows.var(0, unbiased=False))


def test_latent_site_errors_are_clear():
    data = batches()

    def guide_without_z(x, mask):
        pass

    with pytest.raises(ValueError, match="z_1"):
        latent_health(_toy_model, guide_without_z, data)


# ----------------------------------------------------------------- weights, PSIS


def test_pareto_khat_heavy_and_light_tails():
    g = np.random.default_rng(0)
    # w ~ Pareto with tail index 1/2 (k = 2) vs lognormal with a tiny spread
    heavy = pareto_khat(2.0 * g.standard_exponential((1000, 10)))
    light = pareto_khat(g.normal(0.0, 0.1, (1000, 10)))
    assert (heavy > 0.7).all(), heavy
    assert (light < 0.5).all(), light
    with pytest.warns(UserWarning, match="at least 21"):
        assert np.isnan(pareto_khat(np.zeros((20, 3)))).all()


def test_importance_ess_bounds():
    g = np.random.default_rng(1)
    k = 50
    for spread in (0.0, 0.1, 1.0, 10.0, 1000.0):
        ess = importance_ess(spread * g.normal(size=(k, 8)))
        assert ((1.0 <= ess) & (ess <= k)).all()
    assert np.allclose(importance_ess(np.zeros((k, 2))), k)
    assert np.allclose(importance_ess(np.array([[0.0], [-1e4], [-1e4]])), 1.0)
    lw = torch.randn(30, 4, dtype=torch.float64)
    expected = torch.logsumexp(lw, 0) - math.log(30)
    assert np.allclose(iw_log_likelihood(lw), expected.numpy())


def test_arviz_version_guard():
    check_arviz_version("0.23.4")
    for v in ("1.0.0", "1.0.0rc1", "2.1"):
        with pytest.raises(ArvizVersionError, match="0.x API"):
            check_arviz_version(v)
    # the installed ArviZ is the one this module speaks
    assert arviz().__version__.startswith("0.")


def test_inference_data_groups_and_dims():
    model, guide = tiny()
    data = batches(batch_size=2)
    k, shown = 25, 3
    idata = to_inference_data(model, guide, data, num_samples=k, num_shown=shown)
    assert set(idata.groups()) == {
        "posterior",
        "posterior_predictive",
        "observed_data",
        "log_likelihood",
        "sample_stats",
        "constant_data",
        "importance",
    }
    n = len(LENGTHS)
    lengths = np.concatenate([b.lengths.numpy() for b in data])
    t_shown = lengths[:shown].max()
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "sequence", "time", "z_dim")
    assert z.shape == (1, k, shown, t_shown, Z_DIM)
    assert idata.posterior_predictive["x"].shape == (1, k, shown, t_shown, X_DIM)
    assert idata.observed_data["x"].dims == ("sequence", "time", "x_dim")
    ll = idata.log_likelihood["x"]
    assert ll.dims == ("chain", "draw", "sequence") and ll.shape == (1, 1, n)
    assert idata.sample_stats["log_weight"].shape == (1, k, n)
    assert np.array_equal(idata.constant_data["length"].values, lengths)
    # the log-likelihood is the importance-weighted estimate of the stored weights
    lw = idata.sample_stats["log_weight"].values[0]  # [K, N]
    assert np.allclose(ll.values[0, 0], iw_log_likelihood(lw))
    ess = idata.importance["ess"].values
    assert ((1 <= ess) & (ess <= k)).all()
    assert idata.importance["pareto_k"].shape == (n,)
    # padding is NaN, real frames are finite; observed x is the data, draws are binary
    for i in range(shown):
        n_i = lengths[i]
        assert np.isfinite(z.values[0, :, i, :n_i]).all()
        assert np.isnan(z.values[0, :, i, n_i:]).all()
        assert np.array_equal(idata.observed_data["x"].values[i, :n_i], data[i // 2].x[i % 2, :n_i])
        draws = idata.posterior_predictive["x"].values[0, :, i, :n_i]
        assert set(np.unique(draws)) <= {0.0, 1.0}
    elpd = elpd_from_inference_data(idata)
    assert elpd["elpd_loo"] == pytest.approx(ll.values.sum())


# --------------------------------------------------------------------- compare


def _weights(log_likelihood, spread, k=100, seed=0):
    """Hand-set log weights whose IW estimate is exactly ``log_likelihood``."""
    g = np.random.default_rng(seed)
    lw = spread * g.normal(size=(k, len(log_likelihood)))
    lw += log_likelihood - iw_log_likelihood(lw)
    return ImportanceWeights(lw, np.full(len(log_likelihood), 100))


def test_compare_table_from_hand_set_weights():
    g = np.random.default_rng(0)
    n = 40
    good = -2000.0 + g.normal(size=n)  # whole sequences: exp() underflows
    bad = good - 1.0 + 0.5 * g.normal(size=n)
    idatas = {
        "bad": inference_data_from_weights(_weights(bad, 0.1)),
        "good": inference_data_from_weights(_weights(good, 0.1)),
    }
    table = compare_inference_data(idatas)
    assert tuple(table.columns) == TABLE_COLUMNS
    assert table.index.tolist() == ["good", "bad"]
    assert table["rank"].tolist() == [0, 1]
    assert table.loc["good", "elpd"] == pytest.approx(good.sum())
    assert table.loc["bad", "elpd"] == pytest.approx(bad.sum())
    assert table.loc["bad", "elpd_diff"] == pytest.approx(good.sum() - bad.sum())
    assert table.loc["bad", "dse"] == pytest.approx(math.sqrt(n * np.var(good - bad)))
    assert table.loc["good", "se"] == pytest.approx(math.sqrt(n * np.var(good)))
    assert np.isnan(table["p"]).all() and (table["scale"] == "log").all()
    assert table["weight"].sum() == pytest.approx(1.0)
    assert table.loc["good", "weight"] > 0.9  # stacking survives exp(-2000)
    assert (table["khat_share"] == 0.0).all() and not table["warning"].any()
    assert table.loc["good", "nats_per_frame"] == pytest.approx(-good.sum() / (100 * n))
    # heavy-tailed weights are flagged
    heavy = ImportanceWeights(2.0 * g.standard_exponential((100, n)) + bad[None], np.full(n, 100))
    flagged = compare_inference_data(
        {"good": idatas["good"], "heavy": inference_data_from_weights(heavy)}
    )
    assert flagged.loc["heavy", "khat_share"] > 0.5 and flagged.loc["heavy", "warning"]


def test_compare_guides_ranks_a_trained_guide_first():
    data = batches(rate=0.05)
    trained = tiny(name="trained")
    svi = SVI(*trained, pyro.optim.Adam({"lr": 0.03}), TraceMeanField_ELBO())
    for _ in range(30):
        for b in data:
            svi.step(b.x, b.mask)
    untrained = tiny(name="untrained")
    table = compare_guides({"untrained": untrained, "trained": trained}, data, num_samples=30)
    assert table.index.tolist() == ["trained", "untrained"]
    assert table.loc["untrained", "elpd_diff"] > 0
    with pytest.raises(ValueError, match="same batches"):
        compare_inference_data({
            "a": inference_data_from_weights(_weights(np.zeros(3), 0.1)),
            "b": inference_data_from_weights(
                ImportanceWeights(np.zeros((100, 3)), np.arange(1, 4))
            ),
        })


# ------------------------------------------------------------------------- PPC


def test_music_statistics_of_a_hand_made_roll():
    x = torch.tensor(
        [[[1, 0], [1, 1], [0, 1], [1, 1]],  # pitch 0: runs 2, 1; pitch 1: run 3
         [[0, 1], [0, 1], [1, 1], [1, 0]]],  # length 3: pitch 0: run 1; pitch 1: run 3
        dtype=torch.float32,
    )
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    assert notes_per_frame(x, mask).tolist() == [1, 2, 1, 2, 1, 1, 2]
    assert note_durations(x, mask).tolist() == [2, 1, 3, 1, 3]
    assert notes_per_frame(x.expand(5, 2, 4, 2), mask).shape == (5, 7)
    assert sorted(quantile_match(np.array([1, 1, 2, 5]), 8).tolist()) == [1, 1, 1, 1, 2, 2, 5, 5]
    assert quantile_match(np.array([], dtype=np.int64), 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("source", ["posterior", "generate"])
def test_music_ppc_inference_data(source):
    model, guide = tiny()
    data = batches()
    stats = music_statistics(model, guide, data, num_draws=4, source=source)
    frames = sum(LENGTHS)
    notes = stats.observed["note_duration"].size
    assert stats.observed["notes_per_frame"].shape == (frames,)
    assert stats.predicted["notes_per_frame"].shape == (4, frames)
    assert stats.predicted["note_duration"].shape == (4, notes)
    idata = music_ppc(model, guide, data, num_draws=4, source=source)
    assert set(idata.groups()) == {"posterior_predictive", "observed_data"}
    assert idata.posterior_predictive["note_duration"].dims == ("chain", "draw", "note")


# ----------------------------------------------------------------------- plots


def test_plots_write_png_files(tmp_path):
    model, guide = tiny()
    data = batches()
    health = latent_health(model, guide, data)
    idata = to_inference_data(model, guide, data, num_samples=25, num_shown=0)
    other = inference_data_from_weights(
        ImportanceWeights(
            idata.sample_stats["log_weight"].values[0] - 1.0,
            idata.constant_data["length"].values,
        )
    )
    table = compare_inference_data({"a": idata, "b": other})
    ppc = music_ppc(model, guide, data, num_draws=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ArviZ's deprecation chatter is silenced
        plot_kl_heatmap(health, path=tmp_path / "kl.png")
        plot_kl_per_unit(health, path=tmp_path / "units.png")
        plot_khat(idata, path=tmp_path / "khat.png")
        plot_compare(table, path=tmp_path / "compare.png")
        plot_music_ppc(ppc, path=tmp_path / "ppc.png")
    for name in ("kl", "units", "khat", "compare", "ppc"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def _moving_prior_model(x, mask):
    batch, time, _ = x.shape
    with pyro.plate("sequences", batch, dim=-1):
        for t in pyro.markov(range(time)):
            past = x[:, t - 1].sum(-1) if t > 0 else torch.zeros(batch)  # [batch]
            loc = torch.stack([past, torch.zeros_like(past)], -1)  # unit 0's prior follows the past
            z = pyro.sample(f"z_{t + 1}", dist.Normal(loc, 1.0).to_event(1).mask(mask[:, t]))
            logits = z.sum(-1, keepdim=True).expand(batch, x.shape[-1])
            pyro.sample(f"x_{t + 1}", dist.Bernoulli(logits=logits).to_event(1).mask(mask[:, t]), obs=x[:, t])


def _prior_following_guide(x, mask):
    batch, time, _ = x.shape
    with pyro.plate("sequences", batch, dim=-1):
        for t in pyro.markov(range(time)):
            past = x[:, t - 1].sum(-1) if t > 0 else torch.zeros(batch)
            loc = torch.stack([past, 0.5 * x[:, t].sum(-1)], -1)  # unit 0 = its prior; unit 1 reads x_t
            pyro.sample(f"z_{t + 1}", dist.Normal(loc, 1.0).to_event(1).mask(mask[:, t]))


def test_a_unit_that_follows_its_prior_is_active_but_not_informative():
    health = latent_health(_moving_prior_model, _prior_following_guide, batches())
    assert health.active.tolist() == [True, True]  # both posterior means vary over the data
    assert health.kl_per_unit[0] == pytest.approx(0.0, abs=1e-12)
    assert health.informative.tolist() == [False, True] and health.informative_units == 1
