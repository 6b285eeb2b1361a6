"""Ladder VAE: precision weighting, the Pyro ELBO against a hand-written one, bounds, batch norm."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

from pyro_seq.bounds import evaluate, importance_bounds
from pyro_seq.diagnostics import layer_health
from pyro_seq.guides import BottomUpGuide, LadderGuide
from pyro_seq.models import LadderVAE
from pyro_seq.nn import precision_merge
from pyro_seq.reference import ladder_elbo


def tiny(batch_norm=True, guide="ladder", **guide_kwargs):
    model = LadderVAE(x_dim=12, z_dims=(5, 4, 3), hidden_dims=(8, 7, 6), batch_norm=batch_norm)
    cls = LadderGuide if guide == "ladder" else BottomUpGuide
    return model, cls(model, **guide_kwargs)


def images(n=6, x_dim=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, x_dim), 0.3), generator=g)  # [n, 1, x_dim]


def loss_and_grads(fn, *modules):
    for m in modules:
        m.zero_grad()
    pyro.set_rng_seed(7)
    loss = fn()
    params = [p for m in modules for p in m.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def assert_same(a, b, atol=1e-10):
    """Same loss and same gradients."""
    assert torch.allclose(a[0], b[0], atol=atol, rtol=0), (a[0], b[0])
    for ga, gb in zip(a[1], b[1]):
        assert torch.allclose(ga, gb, atol=atol, rtol=0)


def test_precision_merge_by_hand_and_limits(float64):
    loc_a, scale_a = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])
    loc_b, scale_b = torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0])
    loc, scale = precision_merge(loc_a, scale_a, loc_b, scale_b)
    # by hand: precisions 4 and 1 -> var 0.2, mean (1*4 + 3*1) * 0.2 = 1.4; 0.25 and 1 -> var 0.8, mean -0.4
    assert torch.allclose(loc, torch.tensor([1.4, -0.4]))
    assert torch.allclose(scale**2, torch.tensor([0.2, 0.8]))
    # a bottom-up estimate with infinite variance leaves the prior unchanged
    loc, scale = precision_merge(loc_a, torch.full_like(scale_a, 1e8), loc_b, scale_b)
    assert torch.allclose(loc, loc_b) and torch.allclose(scale, scale_b)
    # equal precisions average the means and halve the variance
    loc, scale = precision_merge(loc_a, scale_b, loc_b, scale_b)
    assert torch.allclose(loc, (loc_a + loc_b) / 2) and torch.allclose(scale**2, scale_b**2 / 2)


@pytest.mark.parametrize("by_hand", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "guide,kwargs", [("ladder", {}), ("ladder", {"share_top_down": False}), ("bottom-up", {})]
)
def test_pyro_elbo_equals_hand_written(float64, guide, kwargs, training, by_hand):
    model, g = tiny(guide=guide, **kwargs)
    model.train(training)
    g.train(training)
    x = images()
    pyro_result = loss_and_grads(lambda: Trace_ELBO().differentiable_loss(model, g, x), model, g)
    ref_result = loss_and_grads(lambda: -ladder_elbo(model, g, x[:, 0], by_hand=by_hand).sum(), model, g)
    assert_same(pyro_result, ref_result)
    # the gradient reaches every parameter
    assert all(bool(gr.abs().sum() > 0) for gr in pyro_result[1])


def test_mean_field_elbo_is_the_analytic_kl_bound(float64):
    model, guide = tiny()
    x = images()
    a = loss_and_grads(lambda: TraceMeanField_ELBO().differentiable_loss(model, guide, x), model, guide)
    b = loss_and_grads(lambda: -ladder_elbo(model, guide, x[:, 0], analytic_kl=True).sum(), model, guide)
    assert_same(a, b)


def test_importance_bound_is_above_the_elbo_and_grows_with_k(float64):
    model, guide = tiny()
    model.eval()
    guide.eval()
    x = images(n=40, seed=3)
    pyro.set_rng_seed(0)
    means = {}
    for k in (1, 10, 100):
        b = importance_bounds(model, guide, x, None, num_samples=k)
        means[k] = (b["elbo"].mean().item(), b["iwae"].mean().item())
    elbo = means[100][0]
    assert means[1][1] == pytest.approx(means[1][0])  # K = 1: the two agree
    assert elbo < means[10][1] < means[100][1]


def test_batch_norm_updates_once_per_step_and_never_in_evaluation():
    model, guide = tiny()
    svi = pyro.infer.SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    x = images(n=16)
    for _ in range(3):
        svi.step(x)
    bns = [m for m in list(model.modules()) + list(guide.modules()) if isinstance(m, torch.nn.BatchNorm1d)]
    assert bns and all(int(m.num_batches_tracked) == 3 for m in bns)
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    result = evaluate(model, guide, [(x, None)], num_samples=50)
    assert result["num_sequences"] == 16
    for m, (mean, var) in zip(bns, before):
        assert int(m.num_batches_tracked) == 3
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    assert model.training and guide.training  # modes restored
    # in eval mode each image's densities do not depend on the rest of the batch
    model.eval()
    guide.eval()
    full_g = poutine.trace(guide).get_trace(x)
    full_m = poutine.trace(poutine.replay(model, trace=full_g)).get_trace(x)
    data = {k: v["value"][:4] for k, v in full_g.nodes.items() if k.startswith("z_")}
    sliced = full_g.copy()
    for name, value in dict(data, data=full_g.nodes["data"]["value"][:4]).items():
        sliced.nodes[name] = dict(sliced.nodes[name], value=value)
    part_g = poutine.trace(poutine.replay(guide, trace=sliced)).get_trace(x[:4])
    part_m = poutine.trace(poutine.replay(model, trace=part_g)).get_trace(x[:4])
    for a, b in ((full_g, part_g), (full_m, part_m)):
        a.compute_log_prob()
        b.compute_log_prob()
        for name in data:
            assert torch.allclose(a.nodes[name]["log_prob"][:4], b.nodes[name]["log_prob"], atol=1e-5)
    assert torch.allclose(full_m.nodes["x"]["log_prob"][:4], part_m.nodes["x"]["log_prob"], atol=1e-5)


def test_separate_top_down_has_its_own_parameters():
    model, guide = tiny(share_top_down=False)
    svi = pyro.infer.SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    svi.step(images())
    names = set(pyro.get_param_store().keys())
    # the model's and the guide's top-down blocks are separate parameters
    assert len([n for n in names if "top_down" in n]) == 2 * len(list(model.top_down.parameters()))
    shared_model, shared_guide = tiny()
    assert not hasattr(shared_guide, "guide_top_down")
    assert sum(p.numel() for p in guide.parameters()) > sum(p.numel() for p in shared_guide.parameters())


def test_model_reuses_the_guides_top_down_pass_only_for_the_same_batch(float64):
    model, guide = tiny(batch_norm=False)
    x = images()
    calls = []
    hook = model.top_down[0].register_forward_hook(lambda *a: calls.append(1))
    g = poutine.trace(guide).get_trace(x)
    assert len(calls) == 1
    poutine.replay(model, trace=g)(x)
    assert len(calls) == 1  # reused
    guide(x)
    poutine.replay(model, trace=g)(x.clone())  # another x tensor: recomputed
    assert len(calls) == 3
    hook.remove()


def test_layer_health_kl_is_the_elbo_kl(float64):
    model, guide = tiny()
    x = images(n=10)
    pyro.set_rng_seed(3)
    health = layer_health(model, guide, [(x, None)])
    assert list(health) == ["z_1", "z_2", "z_3"]
    model.eval()
    guide.eval()
    pyro.set_rng_seed(3)
    with torch.no_grad():
        full = ladder_elbo(model, guide, x[:, 0], analytic_kl=True)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        log_lik = ladder_elbo(model, guide, x[:, 0], beta=0.0)
    kl = (log_lik - full).mean().item()
    assert sum(h.kl_per_frame for h in health.values()) == pytest.approx(kl, rel=1e-9)
    for name, h in health.items():
        assert h.kl_per_unit.shape == (model.z_dims[int(name[2:]) - 1],)
        assert 0 <= h.active_units <= h.kl_per_unit.size


def test_inputs_are_checked():
    model, guide = tiny()
    with pytest.raises(ValueError, match="binary"):
        guide(torch.full((2, 12), 0.5))
    with pytest.raises(ValueError, match="x_dim=12"):
        model(torch.zeros(2, 1, 10))
    with pytest.raises(ValueError, match=r"\[batch, 1, x_dim\]"):
        model(torch.zeros(2, 3, 12))
    with pytest.raises(ValueError, match="one per stochastic"):
        LadderVAE(z_dims=(4, 2), hidden_dims=(8,))
    x = torch.zeros(2, 1, 12)
    x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(x)


def test_generate_shapes_and_modes():
    model, _ = tiny()
    x = model.generate(5)
    assert x.shape == (5, 1, 12) and ((x >= 0) & (x <= 1)).all()
    assert model.training
    b = model.generate(3, mean_frames=False)
    assert ((b == 0) | (b == 1)).all()
    with pytest.raises(ValueError, match="num_steps"):
        model.generate(2, 5)


def _mnist_root():
    from conftest import shared_data_root

    root = shared_data_root()
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found under {root}")
    return root


def test_command_line_train_evaluate_sample(tmp_path, capsys):
    import json

    from pyro_seq.cli import main

    root = str(_mnist_root())
    out = tmp_path / "run"
    common = ["--data", "dynamic_mnist", "--data-root", root, "--max-train-sequences", "300",
              "--max-eval-sequences", "100", "--batch-size", "100", "--z-dims", "4,2",
              "--hidden-dims", "16,8", "--no-progress", "--eval-samples", "5"]
    assert main(["train", "lvae", "--out", str(out), "--epochs", "2", "--elbo", "trace",
                 "--guide", "bottom-up", "--warmup-start", "0", "--warmup-steps", "3"] + common) == 0
    test = json.loads((out / "test.json").read_text())
    assert test["iwae"]["nats_per_sequence"] <= test["elbo"]["nats_per_sequence"] + 5.0
    assert 100 < test["elbo"]["nats_per_sequence"] < 800  # nats per image, a barely trained model
    config = json.loads((out / "config.json").read_text())
    assert config["guide"] == {"kind": "bottom-up"} and config["model"]["z_dims"] == [4, 2]
    assert main(["evaluate", str(out / "best.pt"), "--num-samples", "3", "--max-sequences", "50",
                 "--latent-health", "--data-root", root]) == 0
    result = json.loads((out / "best_test_eval.json").read_text())
    assert set(result["layers"]) == {"z_1", "z_2"} and result["layers"]["z_1"]["units"] == 4
    assert (out / "best_test_eval.layers.png").stat().st_size > 0
    assert main(["sample", str(out / "best.pt"), "--num", "4", "--out", str(tmp_path / "s"), "--data-root", root]) == 0
    assert (tmp_path / "s" / "samples.png").is_file() and (tmp_path / "s" / "reconstructions.png").is_file()
    # the importance-weighted objective (the paper's fine-tuning), resumed from the ELBO run
    assert main(["train", "lvae", "--out", str(out), "--epochs", "3", "--elbo", "iwae", "--num-particles", "3",
                 "--guide", "bottom-up", "--resume", "--eval-samples", "0"] + common[:-2]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log if e.get("event") == "epoch"] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["loss"]["elbo"] == "iwae"
    # the analytic-KL ELBO is refused for the bottom-up guide, with the reason
    assert main(["train", "lvae", "--out", str(tmp_path / "bad"), "--epochs", "1", "--guide", "bottom-up"] + common) == 2
    assert "--elbo trace" in capsys.readouterr().err
