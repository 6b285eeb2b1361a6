"""RNN-SPN, FFN-SPN and the CNN: identity glimpses, the likelihood, stochastic attention, pictures and the CLI."""

import json

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from conftest import shared_data_root
from pyro_seq.guides import PointEstimateGuide
from pyro_seq.contrib.spatial.guides import SpatialAttentionGuide
from pyro_seq.contrib.spatial.models import ConvDigitClassifier, FeedForwardSpatialTransformer, RecurrentSpatialTransformer
from pyro_seq.contrib.spatial.models import IDENTITY_AFFINE, glimpse
from pyro_seq.contrib.spatial.metrics import affine_corners, digit_metrics, glimpse_figure

ROOT = shared_data_root()
needs_mnist = pytest.mark.skipif(not (ROOT / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(), reason="MNIST not under the data root")
TINY = {"canvas": 40, "num_digits": 3, "downsample": 2.0, "channels": 4, "dense": 8}


def tiny_rnn(**kwargs):
    return RecurrentSpatialTransformer(**{**TINY, "num_digits": 2, "hidden": 8, "loc_channels": 3, **kwargs})


def images(n=4, side=40, seed=0):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("downsample, side", [(1.0, 80), (2.0, 40), (3.0, 26), (4.0, 20)])
def test_identity_initialised_transformer_returns_the_downsampled_input(float64, downsample, side):
    model = tiny_rnn(canvas=80, downsample=downsample)
    x = images(side=80)
    (theta,) = model.attention(x, model.num_digits)
    assert torch.equal(theta, torch.tensor(IDENTITY_AFFINE).expand(4, 2, 6))  # every step, before training
    g = model.glimpses(x, theta)  # [4, 2, 1, side, side]
    assert g.shape == (4, 2, 1, side, side)
    expected = x if side == 80 else F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    torch.testing.assert_close(g[:, 0], expected, rtol=0, atol=1e-12)


def test_glimpse_zooms_and_translates(float64):
    x = torch.zeros(1, 1, 40, 40)
    x[0, 0, 20:30, 20:30] = 1.0  # a square in the bottom-right quadrant
    theta = torch.tensor([[0.5, 0.0, 0.5, 0.0, 0.5, 0.5]])  # the bottom-right quarter, zoomed in twice
    g = glimpse(x, theta, 20)
    torch.testing.assert_close(g[0, 0, 0:10, 0:10], torch.ones(10, 10))
    assert float(g[0, 0, 10:, :].abs().max()) < 1e-12 and float(g[0, 0, :, 10:].abs().max()) < 1e-12
    corners = affine_corners(theta[0], 40, 40)
    torch.testing.assert_close(corners, torch.tensor([[20.0, 20.0], [40.0, 20.0], [40.0, 40.0], [20.0, 40.0]], dtype=torch.float64))


@pytest.mark.parametrize("make", [tiny_rnn, lambda: FeedForwardSpatialTransformer(**TINY, loc_channels=3, loc_dense=8),
                                  lambda: ConvDigitClassifier(**TINY)])
def test_pyro_likelihood_is_the_cross_entropy(float64, make):
    model = make()
    x = images()
    y = torch.randint(0, 10, (4, model.num_digits), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model.logits(x)
    ce = F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="sum")
    loss = Trace_ELBO(max_plate_nesting=1).loss(model, PointEstimateGuide(), x, y)
    assert loss == pytest.approx(ce.item(), rel=1e-12)
    trace = poutine.trace(model).get_trace(x, y)
    assert [n for n in trace.nodes if n.startswith("digit_")] == [f"digit_{t}" for t in range(model.num_digits)]
    assert trace.nodes["digit_0"]["cond_indep_stack"][0].name == "images"
    probs = model.predict(x)
    torch.testing.assert_close(probs, logits.softmax(-1))


def test_training_moves_the_glimpse_away_from_the_identity():
    model = tiny_rnn()
    x, y = images(8), torch.randint(0, 10, (8, 2))
    svi = SVI(model, PointEstimateGuide(), pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    for _ in range(3):
        svi.step(x, y)
    with torch.no_grad():
        (theta,) = model.attention(x, 2)
    assert float((theta - torch.tensor(IDENTITY_AFFINE)).abs().max()) > 1e-3
    assert not torch.allclose(theta[:, 0], theta[:, 1])  # the GRU gives each step its own glimpse


def test_stochastic_attention_elbo_is_the_hand_written_one(float64):
    model = tiny_rnn(stochastic_attention=True, prior_scale=0.7)
    guide = SpatialAttentionGuide(model)
    assert model.attention is None
    x, y = images(), torch.randint(0, 10, (4, 2))
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    theta = torch.stack([guide_trace.nodes[f"theta_{t}"]["value"] for t in range(2)], 1)  # [4, 2, 6]
    loc, scale = guide.attention_params(x)
    log_q = torch.distributions.Normal(loc, scale).log_prob(theta).sum()
    log_p = torch.distributions.Normal(torch.tensor(IDENTITY_AFFINE), 0.7).log_prob(theta).sum()
    log_lik = -F.cross_entropy(model.logits(x, theta)[0].reshape(-1, 10), y.reshape(-1), reduction="sum")
    elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
    assert elbo.item() == pytest.approx((log_lik + log_p - log_q).item(), rel=1e-10)
    loc, scale = loc.detach(), scale.detach()
    torch.testing.assert_close(loc, torch.tensor(IDENTITY_AFFINE).expand(4, 2, 6))  # the guide starts at the identity
    assert float(scale.min()) == pytest.approx(float(F.softplus(torch.tensor(-3.0))) + 1e-4)
    probs = model.predict(x, guide=guide, num_samples=3)
    assert probs.shape == (4, 2, 10) and torch.allclose(probs.sum(-1), torch.ones(4, 2, dtype=probs.dtype))
    with pytest.raises(ValueError, match="through its guide"):
        model.predict(x)
    with pytest.raises(ValueError, match="stochastic_attention=True"):
        SpatialAttentionGuide(tiny_rnn())


def test_bad_inputs_are_named():
    model = tiny_rnn()
    x = images()
    with pytest.raises(ValueError, match=r"shape \[batch, 1, 40, 40\]"):
        model(x[:, :, :20])
    with pytest.raises(ValueError, match="NaN"):
        model(x.masked_fill(x > 0.99, float("nan")))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(x * 3)
    with pytest.raises(ValueError, match=r"y must have shape \(4, 2\)"):
        model(x, torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="digit labels in 0..9"):
        model(x, torch.full((4, 2), 10))
    with pytest.raises(ValueError, match="too small"):
        tiny_rnn(downsample=3.0)  # 13 pixels
    with pytest.raises(ValueError, match="downsample must be >= 1"):
        tiny_rnn(downsample=0.5)


def test_metrics_and_glimpse_picture(tmp_path):
    from pyro_seq.contrib.spatial.data import ClutteredBatch

    model = tiny_rnn(stochastic_attention=True)
    guide = SpatialAttentionGuide(model)
    x, y = images(6), torch.randint(0, 10, (6, 2))
    metrics, bins = digit_metrics(model, guide, [ClutteredBatch(x, y)], num_samples=2)
    wrong = model.predict(x, guide=guide, num_samples=2)  # a fresh draw: only the shapes and ranges are compared
    assert wrong.shape == (6, 2, 10)
    assert 0 <= metrics["digit_error"] <= metrics["sequence_error"] <= 100 and len(metrics["position_error"]) == 2
    assert metrics["num_digits"] == 12 and bins["num_items"] == 12 and len(metrics["posterior_scale"]) == 6
    path = glimpse_figure(model, guide, x[:2], y[:2], tmp_path / "g.png", title="tiny")
    assert path.stat().st_size > 0
    cnn = ConvDigitClassifier(**TINY)
    assert glimpse_figure(cnn, PointEstimateGuide(), x[:2], torch.randint(0, 10, (2, 3)), tmp_path / "c.png").stat().st_size > 0


@needs_mnist
def test_cli_trains_resumes_and_evaluates(tmp_path, monkeypatch):
    from pyro_seq.cli import main

    monkeypatch.setenv("PYRO_SEQ_DATA", str(ROOT))
    out = tmp_path / "run"
    args = ["train", "rnn-spn", "--variant", "single40", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--num-train", "60", "--valid-images", "20", "--num-test", "30", "--batch-size", "20", "--epochs", "1",
            "--downsample", "2", "--hidden", "8", "--channels", "4", "--dense", "8", "--no-progress"]
    assert main(args) == 0
    record = json.loads((out / "test.json").read_text())
    assert record["test"]["num_images"] == 30 and 0 <= record["test"]["digit_error"] <= 100
    config = json.loads((out / "config.json").read_text())
    assert config["loss"] == {"warmup_steps": 0, "kl_weight": 1.0}  # as before the shared options: old checkpoints read the same
    assert config["train"]["clip_norm"] == 5.0 and config["train"]["epochs"] == 1 and config["data"]["batch_size"] == 20
    assert (out / "glimpses.png").stat().st_size > 0 and (out / "reliability_test.png").stat().st_size > 0
    more = list(args)
    more[more.index("--epochs") + 1] = "2"
    assert main(more + ["--resume"]) == 0  # one more epoch from last.pt
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r.get("event") == "epoch"] == [1, 2]
    assert main(["evaluate", str(out / "best.pt"), "--output", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert set(again["test"]) == set(record["test"])
    assert main(["train", "cnn", "--stochastic-attention", "--out", str(tmp_path / "x")]) == 2  # an rnn-spn option: a usage error


def test_attention_networks_learn_at_a_scaled_rate():
    from pyro_seq.contrib.spatial.recipe import spn_optim

    stochastic = tiny_rnn(stochastic_attention=True)
    pairs = ((tiny_rnn(), PointEstimateGuide()), (FeedForwardSpatialTransformer(**TINY, loc_channels=3, loc_dense=8), PointEstimateGuide()),
             (stochastic, SpatialAttentionGuide(stochastic)))
    for model, guide in pairs:
        pyro.clear_param_store()
        optim = spn_optim(lr=1e-3, attention_lr_scale=0.1)
        SVI(model, guide, optim, Trace_ELBO(max_plate_nesting=1)).step(images(), torch.randint(0, 10, (4, model.num_digits)))
        store = pyro.get_param_store()
        rates = {store.param_name(p).replace("$$$", "."): o.param_groups[0]["lr"] for p, o in optim.optim_objs.items()}
        full = {n for n in rates if n.startswith(("classifier.", "attention.heads.1."))}  # the classifier and the guide's scale head
        assert {n for n, r in rates.items() if r == pytest.approx(1e-4)} == set(rates) - full
        assert all(rates[n] == pytest.approx(1e-3) for n in full)
        assert any(n.startswith("attention.heads.1.") for n in full) == model.stochastic_attention


def test_stochastic_attention_warm_up_scales_the_kl(float64):
    from pyro_seq.contrib.spatial.recipe import build_spn

    config = {"model": {**TINY, "num_digits": 2, "hidden": 8, "stochastic_attention": True}, "loss": {"warmup_steps": 10}}
    model, guide, loss = build_spn("rnn-spn", config)
    x, y = images(), torch.randint(0, 10, (4, 2))
    loss.step = 0
    at_zero = loss.loss(model, guide, x, y)
    assert loss.last_terms["beta"] == 0.0 and at_zero == pytest.approx(-float(loss.last_terms["log_likelihood"]), rel=1e-9)
    loss.step = 10  # beta = 1: the analytic-KL ELBO itself
    pyro.set_rng_seed(3)
    at_one = loss.loss(model, guide, x, y)
    pyro.set_rng_seed(3)
    assert loss.last_terms["beta"] == 1.0 and at_one == pytest.approx(TraceMeanField_ELBO(max_plate_nesting=1).loss(model, guide, x, y), rel=1e-12)
    assert isinstance(build_spn("rnn-spn", {**config, "loss": {}})[2], Trace_ELBO)
    _, _, weighted = build_spn("rnn-spn", {**config, "loss": {"kl_weight": 0.01}})  # a fixed beta, no warm-up
    weighted.step = 10**6
    assert weighted.beta == 0.01
    # the shared warm-up: beta rises from --warmup-start to 1 over --warmup-steps, times --kl-weight
    _, _, ramp = build_spn("rnn-spn", {**config, "loss": {"kl_weight": 0.1, "warmup_start": 0.5, "warmup_steps": 10}})
    ramp.step = 0
    assert ramp.beta == pytest.approx(0.05)
    ramp.step = 10
    assert ramp.beta == pytest.approx(0.1)


def test_stochastic_attention_starts_from_a_deterministic_model():
    from pyro_seq.contrib.spatial.recipe import init_from

    source = tiny_rnn()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model = tiny_rnn(stochastic_attention=True)
    guide = SpatialAttentionGuide(model)
    init_from(model, guide, source, PointEstimateGuide())
    x = images()
    with torch.no_grad():
        loc, scale = guide.attention_params(x)
        torch.testing.assert_close(loc, source.attention(x, 2)[0])
        torch.testing.assert_close(model.predict(x, guide=guide, num_samples=0), source.predict(x))
    assert float(scale.max()) < 0.06  # the scale head keeps its initialisation
    other = tiny_rnn(stochastic_attention=True, hidden=6)
    with pytest.raises(ValueError, match="does not fit"):
        init_from(other, SpatialAttentionGuide(other), source, PointEstimateGuide())
