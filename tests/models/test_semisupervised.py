"""M2 / ADGM / SDGM: enumerated bound, reduction to M2, label bookkeeping, data, command line."""

import json

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyro_seq.cli import main
from pyro_seq.data import (
    SemiSupervisedData,
    choose_labelled,
    labelled_batches,
    load_digits,
    load_semi_supervised,
)
from pyro_seq.guides import SemiSupervisedGuide
from pyro_seq.losses import LinearSchedule, SemiSupervised_ELBO, default_alpha
from pyro_seq.models import ADGM, M2, SDGM
from pyro_seq.reference import semi_supervised_loss
from pyro_seq.recipes.semisupervised import classification_metrics

MODELS = {"m2": M2, "adgm": ADGM, "sdgm": SDGM}


def tiny(kind, seed=0, y_dim=4, x_dim=6):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    model = MODELS[kind](x_dim=x_dim, y_dim=y_dim, z_dim=3, a_dim=2, hidden_dims=(5,)).double()
    return model, SemiSupervisedGuide(model).double()


def images(n, x_dim=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, x_dim), 0.4, dtype=torch.float64), generator=g)


def grads(modules):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for m in modules for p in m.parameters()]


def zero(modules):
    for m in modules:
        for p in m.parameters():
            p.grad = None


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_enumerated_loss_equals_explicit_sum_over_classes(kind):
    """Pyro's enumeration (TraceEnum_ELBO) equals the hand-written loop over the classes, in value
    and in the gradient of every parameter."""
    model, guide = tiny(kind)
    x_l, y_l, x_u = images(5), torch.tensor([0, 3, 1, 1, 2]), images(7, seed=2)
    loss_fn = SemiSupervised_ELBO(alpha=2.5)
    pyro.set_rng_seed(3)
    loss = loss_fn.differentiable_loss(model, guide, x_l, y_l, x_u)
    loss.backward()
    pyro_grads = grads([model, guide])
    zero([model, guide])
    pyro.set_rng_seed(3)
    expected, bound_l, bound_u = semi_supervised_loss(model, guide, x_l, y_l, x_u, alpha=2.5)
    expected.backward()
    hand_grads = grads([model, guide])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-10)
    assert loss_fn.last_terms["labelled_bound"].item() == pytest.approx(bound_l.item(), rel=1e-10)
    assert loss_fn.last_terms["unlabelled_bound"].item() == pytest.approx(bound_u.item(), rel=1e-10)
    assert len(pyro_grads) == len(hand_grads) and len(pyro_grads) > 0
    for a, b in zip(pyro_grads, hand_grads):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)
    assert any(bool(g.abs().sum() > 0) for g in pyro_grads)


def test_adgm_with_auxiliary_ignored_reduces_to_m2():
    """With q(y|a,x), q(z|a,x,y) blind to a and p(a|x,y,z) = q(a|x), ADGM's loss is M2's."""
    m2, m2_guide = tiny("m2", seed=0)
    adgm, adgm_guide = tiny("adgm", seed=1)
    with torch.no_grad():
        # shared networks: M2's weights, zero weights on the a inputs
        for ours, theirs in ((adgm.x_net, m2.x_net), (adgm_guide.y_net, m2_guide.y_net), (adgm_guide.z_net, m2_guide.z_net)):
            for layer_a, layer_b in zip(ours.inputs, theirs.inputs):
                layer_a.load_state_dict(layer_b.state_dict())
            if len(ours.inputs) > len(theirs.inputs):
                ours.inputs[-1].weight.zero_()  # the a input (last)
            ours.rest.load_state_dict(theirs.rest.state_dict())
        # p(a | x, y, z) and q(a | x): the same constant Gaussian
        for net in (adgm.a_net, adgm_guide.a_net):
            for p in net.parameters():
                p.zero_()
            net.rest[1].net[-1].bias.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64))
    x_l, y_l, x_u = images(4), torch.tensor([0, 1, 2, 3]), images(6, seed=2)
    loss_fn = SemiSupervised_ELBO(alpha=1.0)
    pyro.set_rng_seed(5)
    adgm_loss = loss_fn.differentiable_loss(adgm, adgm_guide, x_l, y_l, x_u)
    adgm_terms = dict(loss_fn.last_terms)

    class SkipA(torch.nn.Module):  # draw the ADGM's a noise so that z gets the same noise
        def __init__(self, guide):
            super().__init__()
            self.guide = guide

        def forward(self, x, y=None):
            torch.distributions.Normal(torch.zeros(x.size(0), 2, dtype=x.dtype), 1.0).rsample()
            return self.guide(x, y)

    pyro.set_rng_seed(5)
    m2_loss = loss_fn.differentiable_loss(m2, SkipA(m2_guide), x_l, y_l, x_u)
    assert adgm_loss.item() == pytest.approx(m2_loss.item(), rel=1e-10)
    for key in ("labelled_bound", "unlabelled_bound", "classifier_log_prob"):
        assert adgm_terms[key].item() == pytest.approx(loss_fn.last_terms[key].item(), rel=1e-10)


def test_labelled_and_unlabelled_terms_do_not_mix():
    model, guide = tiny("adgm")
    x_l, y_l, x_u = images(5), torch.tensor([0, 3, 1, 1, 2]), images(7, seed=2)
    loss_fn = SemiSupervised_ELBO(alpha=1.0)

    def terms(*args):
        pyro.set_rng_seed(0)
        loss_fn.loss(model, guide, *args)
        return dict(loss_fn.last_terms)

    base = terms(x_l, y_l, x_u)
    other_u = terms(x_l, y_l, images(7, seed=9))
    other_y = terms(x_l, torch.tensor([1, 1, 1, 1, 1]), x_u)
    assert other_u["labelled_bound"] == base["labelled_bound"]
    assert other_u["classifier_log_prob"] == base["classifier_log_prob"]
    assert other_u["unlabelled_bound"] != base["unlabelled_bound"]
    assert other_y["unlabelled_bound"] == base["unlabelled_bound"]
    assert other_y["labelled_bound"] != base["labelled_bound"]
    # labelled-only and unlabelled-only steps
    assert set(terms(x_l, y_l, None)) == {"beta", "labelled_bound", "classifier_log_prob"}
    assert set(terms(None, None, x_u)) == {"beta", "unlabelled_bound"}
    # in the traces: y observed for labelled images, enumerated for the others
    labelled = poutine.trace(model).get_trace(x_l, y_l)
    assert labelled.nodes["y"]["is_observed"]
    guide_trace = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x_u)
    assert guide_trace.nodes["y"]["infer"]["enumerate"] == "parallel"
    assert guide_trace.nodes["y"]["value"].shape == (model.y_dim, 1)
    assert guide_trace.nodes["z"]["value"].shape == (model.y_dim, 7, model.z_dim)
    assert "log_qy" not in guide_trace.nodes


def test_batches_keep_labelled_images_out_of_the_unlabelled_pool():
    n, x_dim = 60, 6
    x = np.arange(n * x_dim, dtype=np.float32).reshape(n, x_dim)  # row i identifies image i
    y = np.arange(n) % 3
    labelled = choose_labelled(y, 4, seed=1)
    data = SemiSupervisedData(x, y, labelled, dynamic=False, num_classes=3)
    assert data.num_labelled == 12 and len(data.unlabelled) == 48
    row = lambda t: (t[:, 0] / x_dim).long().tolist()  # noqa: E731
    for epoch in range(2):
        seen = []
        for batch in data.batches(epoch, batch_size=10, labelled_batch_size=5, seed=0):
            ids_l, ids_u = row(batch.x_labelled), row(batch.x_unlabelled)
            assert set(ids_l) <= set(labelled.tolist()) and len(set(ids_l)) == 5
            assert not set(ids_u) & set(labelled.tolist())
            assert batch.y_labelled.tolist() == [int(y[i]) for i in ids_l]
            seen += ids_u
        assert sorted(seen) == sorted(data.unlabelled.tolist())  # each unlabelled image once per epoch
    first = [b.x_unlabelled for b in data.batches(0, 10, 5, seed=0)]
    again = [b.x_unlabelled for b in data.batches(0, 10, 5, seed=0)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_dynamic_binarization_is_seeded_and_binary():
    x = np.full((30, 4), 0.5, dtype=np.float32)
    y = np.arange(30) % 3
    data = SemiSupervisedData(x, y, choose_labelled(y, 2, seed=0), dynamic=True, num_classes=3)
    a = next(iter(data.batches(0, 8, 4, seed=1)))
    b = next(iter(data.batches(0, 8, 4, seed=1)))
    c = next(iter(data.batches(1, 8, 4, seed=1)))
    assert torch.equal(a.x_unlabelled, b.x_unlabelled) and not torch.equal(a.x_unlabelled, c.x_unlabelled)
    assert set(a.x_unlabelled.unique().tolist()) <= {0.0, 1.0}


def test_matching_recovers_the_grey_image_of_each_binary_image():
    from pyro_seq.data import match_to_grey

    rng = np.random.default_rng(0)
    grey = rng.uniform(0.02, 0.98, (40, 300)).astype(np.float32)
    order = rng.permutation(40)
    binary = (rng.random((40, 300)) < grey[order]).astype(np.uint8)
    index, margin = match_to_grey(binary, grey, chunk=7)
    assert np.array_equal(index, order) and bool((margin > 0).all())


def test_binarized_mnist_labels_are_cached_and_recomputed_when_stale(tmp_path, monkeypatch):
    from pyro_seq.data import images, mnist, semisupervised

    rng = np.random.default_rng(1)
    grey = {s: rng.integers(0, 256, (n, 28, 28)).astype(np.uint8) for s, n in (("train", 6), ("valid", 3), ("test", 4))}
    labels = {s: np.arange(len(g)) % 10 for s, g in grey.items()}
    binary = {s: (rng.random(g.shape) < g / 255.0).astype(np.uint8) for s, g in grey.items()}
    monkeypatch.setattr(images, "load_mnist", lambda s, **kw: (grey[s], labels[s]))
    monkeypatch.setattr(mnist, "load_binarized_mnist", lambda s, **kw: binary)
    first = semisupervised.binarized_mnist_labels(cache_dir=tmp_path)
    assert np.array_equal(first["test"][1], np.arange(9, 13)) and np.array_equal(first["test"][0], labels["test"])
    assert (tmp_path / "binarized_mnist_labels.npz").is_file()
    monkeypatch.setattr(semisupervised, "match_to_grey", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    again = semisupervised.binarized_mnist_labels(cache_dir=tmp_path)
    assert all(np.array_equal(first[s][0], again[s][0]) for s in first)
    binary["test"] = binary["test"][::-1].copy()  # other images: the cache is stale
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        semisupervised.binarized_mnist_labels(cache_dir=tmp_path)


def test_choose_labelled():
    y = np.repeat(np.arange(10), 20)
    chosen = choose_labelled(y, 10, seed=0)
    assert len(chosen) == 100 and np.all(np.bincount(y[chosen]) == 10)
    assert not np.array_equal(chosen, choose_labelled(y, 10, seed=1))
    assert np.array_equal(chosen, choose_labelled(y, 10, seed=0))
    with pytest.raises(ValueError, match="class 3 has 5 images"):
        choose_labelled(np.r_[y[y != 3], [3] * 5], 10, seed=0)


def test_digits_splits():
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    assert x_train.shape == (1200, 64) and x_test.shape == (400, 64)
    assert 0 <= x_train.min() and x_train.max() <= 1 and len(np.unique(x_train)) > 2  # grey levels
    assert set(np.unique(x_test)) <= {0.0, 1.0}  # binarized once
    assert np.array_equal(x_test, load_digits("test")[0])
    assert set(np.unique(y_train)) == set(range(10))
    data = load_semi_supervised("digits", labels_per_class=10, label_seed=0)
    assert data.train.num_labelled == 100 and data.train.num_data == 1200 and data.image_shape == (8, 8)
    with pytest.raises(ValueError, match="Unknown semi-supervised data set 'omniglot'"):
        load_semi_supervised("omniglot")


@pytest.mark.parametrize(
    "y, message",
    [
        (torch.tensor([0, 1, 4]), r"class indices in 0..3; rows \[2\] hold \[4\]"),
        (torch.tensor([0, -1, 1]), r"rows \[1\] hold \[-1\]"),
        (torch.tensor([0.0, 1.0, 1.0]), "integer class indices"),
        (torch.tensor([0, 1]), r"shape \(3,\)"),
    ],
)
def test_bad_labels_are_named(y, message):
    model, guide = tiny("adgm")
    with pytest.raises(ValueError, match=message):
        SemiSupervised_ELBO(alpha=1.0).loss(model, guide, images(3), y, images(2))


def test_alpha_and_step_arguments():
    assert default_alpha(50000, 100) == pytest.approx(50.0)
    assert SemiSupervised_ELBO(num_data=1200, num_labelled=100).alpha == pytest.approx(1.2)
    with pytest.raises(ValueError, match="num_data and num_labelled"):
        SemiSupervised_ELBO()
    model, guide = tiny("m2")
    loss = SemiSupervised_ELBO(alpha=1.0)
    with pytest.raises(ValueError, match="needs y_labelled"):
        loss.loss(model, guide, images(3), None, images(2))
    with pytest.raises(ValueError, match="no images"):
        loss.loss(model, guide, None, None, None)


def test_warmup_scales_the_latent_terms():
    """At beta = 0 the loss no longer depends on p(a | x, y, z) (it enters only the a term); at
    beta = 1 it does."""
    model, guide = tiny("adgm")
    x_u = images(5)
    loss = SemiSupervised_ELBO(alpha=1.0, schedule=LinearSchedule(0.0, 1.0, 10))

    def value_with_a_net_bias(bias, step):
        with torch.no_grad():
            model.a_net.rest[1].net[-1].bias.fill_(bias)
        loss.step = step
        pyro.set_rng_seed(0)
        return loss.loss(model, guide, None, None, x_u)

    assert value_with_a_net_bias(0.0, 0) == pytest.approx(value_with_a_net_bias(1.0, 0), rel=1e-12)
    assert loss.last_terms["beta"] == 0.0
    assert value_with_a_net_bias(0.0, 10) != pytest.approx(value_with_a_net_bias(1.0, 10), rel=1e-6)
    assert loss.last_terms["beta"] == 1.0


def test_predict_averages_over_a():
    model, guide = tiny("adgm")
    pred = guide.predict(images(8), num_samples=50)
    assert pred.probs.shape == (8, 4) and torch.allclose(pred.probs.sum(-1), torch.ones(8, dtype=torch.float64))
    assert bool((pred.std > 0).any()) and pred.entropy.shape == (8,)
    m2, m2_guide = tiny("m2")
    assert torch.equal(m2_guide.predict(images(8)).std, torch.zeros(8, 4, dtype=torch.float64))
    batches = [b._replace(x=b.x.double()) for b in labelled_batches(images(8).numpy(), np.arange(8) % 4, batch_size=3)]
    metrics = classification_metrics(guide, batches, 10)
    assert 0 <= metrics["error"] <= 100 and metrics["num_items"] == 8 and metrics["nll"] > 0


def test_training_reduces_the_error_on_digits():
    """A tiny ADGM learns from 10 labels per class of the digits: error well below chance."""
    data = load_semi_supervised("digits", labels_per_class=10, label_seed=0)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = ADGM(x_dim=64, z_dim=8, a_dim=8, hidden_dims=(64,))
    guide = SemiSupervisedGuide(model)
    loss = SemiSupervised_ELBO(num_data=data.train.num_data, num_labelled=data.train.num_labelled)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), loss)
    valid = labelled_batches(*data.valid)
    before = classification_metrics(guide, valid, 5)["error"]
    for epoch in range(4):
        for batch in data.train.batches(epoch, 100, 100, seed=0):
            svi.step(*batch.args)
    after = classification_metrics(guide, valid, 5)["error"]
    assert after < 45.0 and after < before - 20


def test_cli_train_and_resume(tmp_path):
    out = tmp_path / "adgm"
    args = ["train", "adgm", "--data", "digits", "--z-dim", "4", "--a-dim", "4", "--hidden-dims", "16",
            "--limit", "300", "--labels-per-class", "3", "--epochs", "1", "--eval-samples", "5",
            "--valid-samples", "2", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    record = json.loads((out / "test.json").read_text())
    assert 0 <= record["last"]["error"] <= 100 and record["last"]["epoch"] == 1
    config = json.loads((out / "config.json").read_text())
    assert len(config["data"]["labelled_indices"]) == 30 and config["loss"]["alpha"] > 0
    args[args.index("--epochs") + 1] = "2"
    assert main(args + ["--resume"]) == 0
    assert json.loads((out / "test.json").read_text())["last"]["epoch"] == 2
    assert main(["evaluate", str(out / "last.pt"), "--num-samples", "3", "--output", str(tmp_path / "e.json")]) == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["split"] == "test" and 0 <= evaluated["error"] <= 100 and evaluated["num_items"] == 300
    assert main(["sample", str(out / "last.pt"), "--num", "2", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "samples.png").exists() and (tmp_path / "s" / "a_pca.png").exists()
    assert np.load(tmp_path / "s" / "samples.npy").shape == (20, 8, 8)
    assert main(["train", "m2", "--data", "omniglot", "--out", str(tmp_path / "x")]) == 2  # a usage error


# ------------------------------------------------------------- auxiliary-variable wrapper


def _vae(seed=0):
    from pyro_seq.guides import BottomUpGuide
    from pyro_seq.models import LadderVAE

    pyro.clear_param_store()
    torch.manual_seed(seed)
    model = LadderVAE(x_dim=6, z_dims=[3], hidden_dims=[5], batch_norm=False).double()
    return model, BottomUpGuide(model).double()


def _elbo(model, guide, x, seed):
    pyro.set_rng_seed(seed)
    return pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x)


def test_auxiliary_wrapper_keeps_the_marginal_model():
    from pyro_seq.guides import add_auxiliary

    model, guide = _vae()
    aux_model, aux_guide = add_auxiliary(model, guide, {"z_1": 3}, 6, a_dim=2, hidden_dims=(4,))
    aux_model.double(), aux_guide.double()
    x = images(5)
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(aux_guide).get_trace(x)
    wrapped = poutine.trace(poutine.replay(aux_model, trace=guide_trace)).get_trace(x)
    plain = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    for name in ("z_1", "x"):  # p(x, z) untouched
        assert torch.equal(wrapped.nodes[name]["fn"].log_prob(wrapped.nodes[name]["value"]),
                           plain.nodes[name]["fn"].log_prob(plain.nodes[name]["value"]))
    assert wrapped.nodes["aux_a"]["value"] is guide_trace.nodes["aux_a"]["value"]
    assert [f.name for f in wrapped.nodes["aux_a"]["cond_indep_stack"]] == ["aux_data"]


def test_auxiliary_wrapper_reduces_to_the_plain_guide():
    """At initialisation q(z | a, x) = q(z | x); with p(a | x, z) = q(a | x) the bound is the
    plain VAE's, value and gradient of the shared parameters."""
    from pyro_seq.guides import add_auxiliary

    model, guide = _vae()
    aux_model, aux_guide = add_auxiliary(model, guide, {"z_1": 3}, 6, a_dim=2, hidden_dims=(4,))
    aux_model.double(), aux_guide.double()
    with torch.no_grad():
        for net in (aux_model.p_a_net, aux_guide.q_a_net):  # the same constant Gaussian
            for p in net.parameters():
                p.zero_()
            net.rest[1].net[-1].bias.copy_(torch.tensor([0.2, -0.1, 0.4, 0.3], dtype=torch.float64))
    x = images(5)

    class DrawA(torch.nn.Module):  # the plain guide, drawing the same a-noise first
        def forward(self, x):
            torch.distributions.Normal(torch.zeros(x.size(0), 2, dtype=x.dtype), 1.0).rsample()
            return guide(x)

    wrapped = _elbo(aux_model, aux_guide, x, seed=1)
    wrapped.backward()
    wrapped_grads = grads([guide, model])
    zero([guide, model])
    plain = _elbo(model, DrawA(), x, seed=1)
    plain.backward()
    assert wrapped.item() == pytest.approx(plain.item(), rel=1e-12)
    for a, b in zip(wrapped_grads, grads([guide, model])):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_auxiliary_wrapper_names_missing_latents():
    from pyro_seq.guides import add_auxiliary

    model, guide = _vae()
    aux_model, aux_guide = add_auxiliary(model, guide, {"z_9": 3}, 6, a_dim=2)
    aux_model.double(), aux_guide.double()
    with pytest.raises(ValueError, match=r"no latent sites \['z_9'\]"):
        pyro.infer.Trace_ELBO().loss(aux_model, aux_guide, images(3))


def test_vectorized_particles_estimate_the_same_loss():
    model, guide = tiny("adgm")
    args = (images(5), torch.tensor([0, 3, 1, 1, 2]), images(7, seed=2))
    values = {}
    for vectorize in (False, True):
        pyro.set_rng_seed(0)
        values[vectorize] = SemiSupervised_ELBO(alpha=1.0, num_particles=200, vectorize_particles=vectorize).loss(model, guide, *args)
    assert values[True] == pytest.approx(values[False], abs=0.6)
