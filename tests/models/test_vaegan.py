"""VAE/GAN: loss routing, the feature likelihood, the balance rule, input checks and the trainer path."""

import json
import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyro_seq.data import ImageBatch, image_batches
from pyro_seq.guides import VAEGANGuide
from pyro_seq.losses import VAEGANLoss, gan_balance, vaegan_optim, vaegan_parameters
from pyro_seq.models import VAEGAN
from pyro_seq.training.trainer import Trainer

from conftest import shared_data_root


def tiny(likelihood="features", image_size=28, dtype=torch.float64):
    model = VAEGAN(image_size=image_size, z_dim=3, width=0.0625, likelihood=likelihood).to(dtype)
    guide = VAEGANGuide(model).to(dtype)
    return model, guide


def images(n=5, size=28, dtype=torch.float64, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _grads(objective, params):
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, torch.autograd.grad(objective, params, retain_graph=True, allow_unused=True))]


def _nonzero(grads):
    return any(bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.parametrize("generator_loss", ["non_saturating", "minimax"])
def test_loss_routing_parameter_by_parameter(generator_loss):
    """Each term's gradient reaches exactly the networks the paper updates with it."""
    model, guide = tiny()
    x = images()
    loss = VAEGANLoss(gamma=0.3, margin=None, generator_loss=generator_loss)
    groups = vaegan_parameters(model, guide)
    all_params = [p for ps in groups.values() for p in ps]

    # hand-written reference: each term's gradient on each network, same random draws
    pyro.set_rng_seed(1)
    t = loss.terms(model, guide, x)
    prior, llike = t["kl"], -t["log_likelihood"]  # L_prior, L_llike (minimised)
    grads = {
        term: {net: _grads(value, groups[net]) for net in groups}
        for term, value in (("prior", prior), ("llike", llike), ("gan", t["gan_loss"]), ("gen", t["generator_loss"]))
    }
    # the exclusions are not vacuous: these terms do depend on the networks they must not train
    assert _nonzero(grads["llike"]["discriminator"])  # Dis_l features of both images
    assert _nonzero(grads["gan"]["encoder"]) and _nonzero(grads["gan"]["decoder"])
    assert _nonzero(grads["prior"]["encoder"]) and not _nonzero(grads["prior"]["decoder"])

    pyro.set_rng_seed(1)
    value = loss.loss_and_grads(model, guide, x)
    assert value == pytest.approx(float((prior + llike).detach()), rel=1e-12)
    expected = {
        "encoder": [a + b for a, b in zip(grads["prior"]["encoder"], grads["llike"]["encoder"])],
        "decoder": [0.3 * a + b for a, b in zip(grads["llike"]["decoder"], grads["gen"]["decoder"])],
        "discriminator": grads["gan"]["discriminator"],
    }
    for net, params in groups.items():
        for p, g in zip(params, expected[net]):
            assert p.grad is not None, net
            torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-12, msg=lambda m: f"{net}: {m}")
    assert len({id(p) for p in all_params}) == len(all_params)  # the three networks share nothing
    terms = loss.last_terms
    assert terms["dis_update"] == 1.0 and terms["dec_update"] == 1.0
    assert 0 < float(terms["d_real"]) < x.size(0)


def test_balance_rule_skips_a_network_and_leaves_its_grads_none():
    model, guide = tiny()
    x = images()
    loss = VAEGANLoss(margin=0.35)
    with torch.no_grad():  # make the discriminator far ahead: a huge logit bias for "real"
        head = model.discriminator.head[-1]
        head.bias.fill_(0.0)
    # the rule itself
    assert gan_balance(0.69, 0.69) == (True, True)
    assert gan_balance(0.1, 0.69) == (False, True)  # discriminator far ahead on real images
    assert gan_balance(0.69, 1.5) == (True, False)  # discriminator losing: decoder far ahead
    assert gan_balance(0.1, 1.5) == (True, True)  # both would sit out: both train
    assert gan_balance(0.0, 5.0, margin=None) == (True, True)
    # a step whose rule says "skip the discriminator"
    loss.equilibrium = 100.0  # every error is far below: the discriminator sits out
    loss.loss_and_grads(model, guide, x)
    groups = vaegan_parameters(model, guide)
    assert all(p.grad is None for p in groups["discriminator"])
    assert all(p.grad is not None for p in groups["decoder"])
    assert loss.last_terms["dis_update"] == 0.0


def test_feature_likelihood_equals_hand_computation():
    model, guide = tiny()
    model.eval()
    x = images(4)
    z = torch.randn(4, model.z_dim, dtype=torch.float64)
    conditioned = poutine.condition(model, data={"z": z})
    trace = poutine.trace(conditioned).get_trace(x)
    trace.compute_log_prob()
    site = trace.nodes["features"]
    # by hand: Dis_l of the real and the decoded image, a unit Gaussian around the decoded one
    with torch.no_grad():
        x_tilde = model.decoder(z)
        feats, _ = model.discriminator(torch.cat([2 * x - 1, x_tilde]))
        real, fake = feats[:4], feats[4:]
    hand = (-0.5 * (real - fake) ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(site["log_prob"].detach(), hand, rtol=1e-12, atol=1e-9)
    assert site["fn"].event_shape == (model.discriminator.feature_dim,)
    # sigma scales as a Gaussian should
    model.scale = 2.0
    trace = poutine.trace(conditioned).get_trace(x)
    hand2 = (-0.5 * ((real - fake) / 2.0) ** 2 - math.log(2.0) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(trace.nodes["features"]["fn"].log_prob(trace.nodes["features"]["value"]).detach(), hand2, rtol=1e-12, atol=1e-9)


def test_pixel_vae_likelihood_and_trace_elbo():
    model, guide = tiny("pixels")
    model.eval()
    x = images(3)
    z = torch.randn(3, model.z_dim, dtype=torch.float64)
    trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x)
    trace.compute_log_prob()
    with torch.no_grad():
        mean = model.decoder(z)
    hand = (-0.5 * (2 * x - 1 - mean) ** 2 - 0.5 * math.log(2 * math.pi)).flatten(1).sum(-1)
    torch.testing.assert_close(trace.nodes["x"]["log_prob"].detach(), hand, rtol=1e-12, atol=1e-9)
    assert not hasattr(model, "discriminator")
    with pytest.raises(ValueError, match="Trace_ELBO"):
        vaegan_parameters(model, guide)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(2, 28, 28, 1, dtype=torch.float64), r"shape \[batch, 1, 28, 28\]"),
        (torch.full((2, 1, 28, 28), float("nan"), dtype=torch.float64), "NaN"),
        (2 * torch.ones(2, 1, 28, 28, dtype=torch.float64), r"\[0, 1\]"),
        (torch.zeros(0, 1, 28, 28, dtype=torch.float64), "empty"),
        (torch.ones(2, 1, 28, 28, dtype=torch.float32), "dtype"),
    ],
)
def test_bad_images_are_refused(bad, match):
    model, guide = tiny()
    with pytest.raises(ValueError, match=match):
        guide(bad)


def test_constructor_checks():
    with pytest.raises(ValueError, match="image_size"):
        VAEGAN(image_size=32)
    with pytest.raises(ValueError, match="likelihood"):
        VAEGAN(likelihood="bernoulli")
    with pytest.raises(ValueError, match="network_lr"):
        vaegan_optim(network_lr={"generator": 1e-3})


def test_shapes_64_and_28():
    for size in (64, 28):
        model, guide = tiny(image_size=size, dtype=torch.float32)
        x = images(2, size, torch.float32)
        out = model(x)
        out = out.detach()
        assert out.shape == (2, 1, size, size) and float(out.min()) >= 0 and float(out.max()) <= 1
        feats, logit = model.discriminator(2 * x - 1)
        assert feats.shape[-1] == model.discriminator.feature_dim and logit.shape == (2,)
        assert guide.reconstruct(x).shape == x.shape and model.generate(3).shape == (3, 1, size, size)


def test_trainer_with_per_network_learning_rates(tmp_path):
    """The trainer drives the three networks; a zero learning rate freezes exactly one of them."""
    model, guide = tiny(dtype=torch.float32)
    loss = VAEGANLoss(margin=None)
    x = images(12, dtype=torch.float32)
    trainer = Trainer(
        model, guide, loss, lambda epoch: image_batches(x, 6, shuffle=True, epoch=epoch), image_batches(x, 6),
        optim=vaegan_optim(lr=1e-3, network_lr={"discriminator": 0.0}), out_dir=tmp_path, kind="vaegan",
        eval_fn=lambda m, g, batches: float(sum(float(((g.reconstruct(b.x) - b.x) ** 2).mean()) for b in batches)),
        progress=False,
    )
    before = {name: [p.detach().clone() for p in ps] for name, ps in vaegan_parameters(model, guide).items()}
    summary = trainer.fit(2)
    after = vaegan_parameters(model, guide)
    assert summary["global_step"] == 4
    for name in ("encoder", "decoder"):
        assert any(not torch.equal(a, b) for a, b in zip(before[name], after[name])), name
    assert all(torch.equal(a, b) for a, b in zip(before["discriminator"], after["discriminator"]))
    record = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()][-1]
    assert record["dis_update"] == 1.0 and 0.0 < record["d_real_per_frame"] < 1.0
    assert ImageBatch(x[:2]).frames == 2.0


def test_image_batches_merge_a_single_last_image():
    x = torch.rand(9, 1, 28, 28)
    sizes = [b.x.size(0) for b in image_batches(x, 4)]
    assert sizes == [4, 5]
    shuffled = torch.cat([b.x for b in image_batches(x, 4, shuffle=True, seed=1, epoch=2)])
    assert sorted(shuffled.sum((1, 2, 3)).tolist()) == sorted(x.sum((1, 2, 3)).tolist())
    with pytest.raises(ValueError, match="at least 2"):
        image_batches(x[:1], 4)


needs_faces = pytest.mark.skipif(not (shared_data_root() / "faces" / "olivettifaces.mat").is_file(), reason="Olivetti faces not under the data root")


@needs_faces
def test_cli_train_faces_resume_and_sample(tmp_path, monkeypatch):
    from pyro_seq.cli import main

    monkeypatch.setenv("PYRO_SEQ_DATA", str(shared_data_root()))
    out = tmp_path / "run"
    common = ["train", "vaegan", "--data", "faces", "--width", "0.0625", "--z-dim", "4", "--limit", "64", "--valid-limit", "8",
              "--batch-size", "32", "--test-samples", "16", "--out", str(out), "--no-progress"]
    assert main(common + ["--epochs", "1"]) == 0
    assert main(common + ["--epochs", "2", "--resume"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in log if r.get("event") == "epoch"]
    assert epochs == [1, 2]
    assert any(r.get("event") == "gan_health" for r in log)
    test = json.loads((out / "test.json").read_text())
    assert test["num_images"] == 40 and test["epoch"] == 2 and "spread_ratio" in test and "discriminator_feature_mse" in test
    assert (out / "reconstructions.png").stat().st_size > 0 and (out / "samples.png").stat().st_size > 0
    assert main(["sample", str(out / "last.pt"), "--out", str(tmp_path / "grids"), "--num", "3"]) == 0
    assert (tmp_path / "grids" / "samples.png").is_file()


def test_pyro_terms_equal_the_pure_pytorch_floor():
    from pyro_seq.reference import vaegan_terms

    model, guide = tiny()
    x = images(4)
    loss = VAEGANLoss()
    pyro.set_rng_seed(3)
    pyro_terms = loss.terms(model, guide, x)
    pyro.set_rng_seed(3)
    hand = vaegan_terms(model, guide, x)
    for key in ("kl", "log_likelihood", "gan_loss", "generator_loss"):
        torch.testing.assert_close(pyro_terms[key], hand[key], rtol=1e-12, atol=1e-9, msg=lambda m: f"{key}: {m}")
