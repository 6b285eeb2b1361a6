"""Z-Forcing: model, guide, auxiliary-cost ELBO, against hand-written PyTorch."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_seq.bounds import log_importance_weights
from pyro_seq.guides import SRNNGuide, ZForcingGuide
from pyro_seq.losses import (
    LinearSchedule,
    WarmupTrace_ELBO,
    WarmupTraceMeanField_ELBO,
    ZForcingTrace_ELBO,
    ZForcingTraceMeanField_ELBO,
)
from pyro_seq.models import SRNN, ZForcing
from pyro_seq.reference import zforcing_elbo

B, T, D = 3, 7, 5


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.clear_param_store()
    yield
    torch.set_default_dtype(old)


def ragged_batch(likelihood="bernoulli", seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 4, 2])
    mask = torch.arange(T) < lengths[:, None]  # [batch, time]
    if likelihood == "bernoulli":
        x = (torch.rand(B, T, D, generator=g) < 0.3).double()
    else:
        x = torch.randn(B, T, D, generator=g)
    return x * mask[..., None], mask


def tiny(fast=True, auxiliary="z", backward_prediction=True, likelihood="bernoulli"):
    torch.manual_seed(1)
    model = ZForcing(x_dim=D, emb_dim=4, h_dim=6, z_dim=3, hidden_dim=8, fast=fast, likelihood=likelihood)
    guide = ZForcingGuide(model, auxiliary=auxiliary, backward_prediction=backward_prediction)
    return model, guide


def params_of(*modules):
    return [p for m in modules for p in m.parameters()]


def grads(loss_fn, params):
    for p in params:
        p.grad = None
    pyro.set_rng_seed(5)
    value = loss_fn()
    return value, [None if p.grad is None else p.grad.clone() for p in params]


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("fast", [True, False])
def test_elbo_matches_hand_written(fast, likelihood):
    model, guide = tiny(fast=fast, likelihood=likelihood, auxiliary="hz")
    x, mask = ragged_batch(likelihood)
    beta, w, w_b = 0.3, 0.7, 0.4
    loss = ZForcingTrace_ELBO(schedule=beta, aux_schedule=w, backward_weight=w_b)
    params = params_of(model, guide)
    value, g_pyro = grads(lambda: loss.loss_and_grads(model, guide, x, mask), params)

    def reference():
        elbo, aux, backward = zforcing_elbo(model, guide, x, mask, beta=beta)
        (-(elbo.sum() + w * aux.sum() + w_b * backward.sum())).backward()
        return -elbo.sum().item(), aux.sum().item(), backward.sum().item()

    ref_value, g_ref = grads(reference, params)
    assert value == pytest.approx(ref_value[0], abs=1e-9)  # the reported loss has no auxiliary term
    assert loss.last_terms["aux_log_prob"].item() == pytest.approx(ref_value[1], abs=1e-9)
    assert loss.last_terms["backward_log_prob"].item() == pytest.approx(ref_value[2], abs=1e-9)
    for a, b in zip(g_pyro, g_ref):
        assert a is not None and b is not None
        assert torch.allclose(a, b, atol=1e-9, rtol=0)


def test_meanfield_matches_hand_written_analytic_kl():
    model, guide = tiny()
    x, mask = ragged_batch()
    loss = ZForcingTraceMeanField_ELBO(schedule=1.0, aux_schedule=0.0, backward_weight=0.0)
    pyro.set_rng_seed(5)
    value = loss.loss_and_grads(model, guide, x, mask)
    pyro.set_rng_seed(5)
    elbo, _, _ = zforcing_elbo(model, guide, x, mask, analytic_kl=True)
    assert value == pytest.approx(-elbo.sum().item(), abs=1e-9)


@pytest.mark.parametrize("base, zf", [(WarmupTrace_ELBO, ZForcingTrace_ELBO), (WarmupTraceMeanField_ELBO, ZForcingTraceMeanField_ELBO)])
def test_zero_weight_is_the_base_elbo(base, zf):
    model, guide = tiny()
    x, mask = ragged_batch()
    params = params_of(model, guide)
    schedule = LinearSchedule(0.2, 1.0, 10)
    a = base(schedule=schedule)
    b = zf(schedule=schedule, aux_schedule=0.0, backward_weight=0.0)
    a.step = b.step = 4
    va, ga = grads(lambda: a.loss_and_grads(model, guide, x, mask), params)
    vb, gb = grads(lambda: b.loss_and_grads(model, guide, x, mask), params)
    assert va == vb
    for p, q in zip(ga, gb):
        assert (p is None and q is None) or torch.equal(p, q)


def _aux_grads(model, guide, x, mask):
    """Gradients of the auxiliary term alone, and of its path through z."""
    pyro.set_rng_seed(5)
    trace = pyro.poutine.trace(guide).get_trace(x, mask)
    aux = trace.nodes["aux_log_prob"]["value"].sum()
    z = trace.nodes["z"]["value"]
    params = params_of(model, guide)
    full = torch.autograd.grad(aux, params, retain_graph=True, allow_unused=True)
    (dz,) = torch.autograd.grad(aux, z, retain_graph=True)
    via_z = torch.autograd.grad(z, params, grad_outputs=dz, allow_unused=True)
    names = [n for n, _ in model.named_parameters()] + [f"guide.{n}" for n, _ in guide.named_parameters()]
    return dict(zip(names, full)), dict(zip(names, via_z))


def test_auxiliary_gradients():
    # auxiliary="z": the aux term depends on the guide only through z (with "hz" also through
    # the h_{t-1} the sampling loop computed from the per-step z tensors)
    model, guide = tiny(auxiliary="z")
    x, mask = ragged_batch()
    full, via_z = _aux_grads(model, guide, x, mask)
    # the target b_t is detached: whatever reaches the backward LSTM comes through z_t
    for name, g in full.items():
        if name.startswith("guide.b_rnn"):
            assert g is not None
            assert torch.allclose(g, via_z[name], atol=1e-12, rtol=0), name
    # xi, the posterior and the forward recurrence (through h_{t-1} and z) all get a gradient
    for prefix in ("guide.aux_net", "guide.posterior", "rnn.", "z_embed"):
        gs = [g for n, g in full.items() if n.startswith(prefix)]
        assert gs and all(g is not None for g in gs), prefix
        assert any(g.abs().sum() > 0 for g in gs), prefix
    # the backward head is not touched by the auxiliary term
    assert all(g is None or g.abs().sum() == 0 for n, g in full.items() if n.startswith("guide.backward_head"))


def test_auxiliary_target_is_detached():
    """Holding z fixed, the auxiliary term has no gradient on the backward LSTM at all."""
    model, guide = tiny(auxiliary="z")
    x, mask = ragged_batch()
    lengths = mask.sum(-1)
    b = guide.backward_states(x, lengths)
    z = torch.randn(B, T, 3)
    h_prev = torch.zeros(B, T, 6)
    aux = guide.auxiliary_terms(x, mask, b, z, h_prev)["aux_log_prob"].sum()
    gs = torch.autograd.grad(aux, list(guide.b_rnn.parameters()), allow_unused=True)
    assert all(g is None for g in gs)
    # and it equals a diagonal Gaussian log density of b under the aux network, 0 on padding
    loc, log_var = guide.aux_net(z)
    expected = torch.distributions.Normal(loc, (0.5 * log_var).exp()).log_prob(b).sum(-1)
    assert torch.allclose(aux, expected[mask].sum(), atol=1e-10)


def test_aux_weight_schedule_and_logging():
    model, guide = tiny()
    x, mask = ragged_batch()
    loss = ZForcingTrace_ELBO(schedule=1.0, aux_schedule=LinearSchedule(0.0, 2.0, 10))
    for step, expected in [(0, 0.0), (5, 1.0), (20, 2.0)]:
        loss.step = step
        loss.loss(model, guide, x, mask)  # plain loss: no aux computed into it
        assert loss.aux_weight == pytest.approx(expected)
    loss.step = 5
    loss.loss_and_grads(model, guide, x, mask)
    assert loss.last_terms["aux_weight"] == pytest.approx(1.0)
    assert set(loss.last_terms) >= {"log_likelihood", "kl", "beta", "aux_log_prob", "backward_log_prob"}


def test_aux_weight_without_auxiliary_guide_is_an_error():
    model, guide = tiny(auxiliary=None, backward_prediction=False)
    x, mask = ragged_batch()
    with pytest.raises(ValueError, match="auxiliary='z'"):
        ZForcingTrace_ELBO(aux_schedule=1.0).loss_and_grads(model, guide, x, mask)


def test_bounds_exclude_auxiliary_terms():
    model, guide = tiny(auxiliary="hz")
    x, mask = ragged_batch()
    pyro.set_rng_seed(3)
    log_w = log_importance_weights(model, guide, x, mask, num_samples=1)[0]
    pyro.set_rng_seed(3)
    elbo, _, _ = zforcing_elbo(model, guide, x, mask)
    assert torch.allclose(log_w, elbo.detach(), atol=1e-9)


def test_fast_and_markov_forms_agree():
    x, mask = ragged_batch()
    values = []
    for fast in (True, False):
        model, guide = tiny(fast=fast)
        pyro.set_rng_seed(2)
        values.append(Trace_ELBO().loss(model, guide, x, mask))
    assert values[0] == pytest.approx(values[1], abs=1e-9)


def test_generate_and_errors():
    model, guide = tiny()
    x = model.generate(4, 6)
    assert x.shape == (4, 6, D) and set(x.unique().tolist()) <= {0.0, 1.0}
    x, means = model.generate(2, 3, mean_frames=True)
    assert means.shape == (2, 3, D)
    with pytest.raises(ValueError, match="auxiliary must be one of"):
        ZForcingGuide(model, auxiliary="b")
    with pytest.raises(ValueError, match="x_dim"):
        guide(torch.zeros(2, 3, D + 1))
    with pytest.raises(ValueError, match="likelihood"):
        ZForcing(likelihood="poisson")


def test_srnn_guide_auxiliary_cost():
    torch.manual_seed(0)
    model = SRNN(x_dim=D, d_dim=4, z_dim=3, hidden_dim=6)
    guide = SRNNGuide(model, auxiliary="hz")
    x, mask = ragged_batch()
    loss = ZForcingTraceMeanField_ELBO(schedule=1.0, aux_schedule=1.0)
    pyro.set_rng_seed(0)
    value = loss.loss_and_grads(model, guide, x, mask)
    base = WarmupTraceMeanField_ELBO(schedule=1.0)
    pyro.set_rng_seed(0)
    assert value == pytest.approx(base.loss_and_grads(model, guide, x, mask), abs=1e-10)
    assert loss.last_terms["aux_log_prob"] < 0 or loss.last_terms["aux_log_prob"] > 0
    assert all(p.grad is not None for p in guide.aux_net.parameters())
    with pytest.raises(ValueError, match="smoother"):
        SRNNGuide(model, kind="filter", auxiliary="z")


def test_training_reduces_the_loss():
    model, guide = tiny(auxiliary="z")
    x, mask = ragged_batch()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), ZForcingTraceMeanField_ELBO(schedule=1.0))
    pyro.set_rng_seed(0)
    first = sum(svi.step(x, mask) for _ in range(5)) / 5
    for _ in range(60):
        svi.step(x, mask)
    last = sum(svi.step(x, mask) for _ in range(5)) / 5
    assert last < first - 1.0


def test_command_line_train_evaluate_sample(tmp_path):
    import json

    from conftest import jsb_available, shared_data_root

    from pyro_seq.training.checkpoint import load_checkpoint
    from pyro_seq.cli import main

    if not jsb_available():
        pytest.skip("JSB Chorales not found")
    torch.set_default_dtype(torch.float32)  # as a user's run (the fixture restores it)
    out = tmp_path / "zf"
    args = [
        "train", "zforcing", "--data", "jsb", "--data-root", str(shared_data_root()),
        "--max-train-sequences", "8", "--max-eval-sequences", "4", "--max-length", "30", "--batch-size", "4",
        "--emb-dim", "4", "--h-dim", "6", "--z-dim", "3", "--hidden-dim", "8", "--aux-weight", "0.5",
        "--aux-start", "0", "--aux-steps", "4", "--backward-weight", "1", "--auxiliary", "hz",
        "--epochs", "2", "--eval-samples", "2", "--device", "cpu", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    epochs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["event"] == "epoch"]
    # the auxiliary terms are logged beside the bound, with the weight's ramp
    assert all("aux_log_prob_per_frame" in r and "backward_log_prob_per_frame" in r for r in epochs)
    assert 0.0 < epochs[0]["aux_weight"] < epochs[1]["aux_weight"] <= 0.5
    state = load_checkpoint(out / "best.pt", kind="zforcing")
    assert state["config"]["guide"] == {"b_dim": None, "hidden_dim": 8, "auxiliary": "hz", "backward_prediction": True}
    assert main(["evaluate", str(out / "best.pt"), "--num-samples", "3", "--max-sequences", "2", "--device", "cpu"]) == 0
    assert main(["sample", str(out / "best.pt"), "--num", "1", "--steps", "5", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    # a bad option value is a one-line error (not argparse's usage dump) and exit status 2
    assert main(["train", "srnn", "--out", str(tmp_path / "x"), "--backward-weight", "1", "--auxiliary", "q"]) == 2
    assert main(["train", "srnn", "--out", str(tmp_path / "x"), "--backward-weight", "1"]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_step_protocol_matches_the_pyro_model(likelihood):
    """The FIVO step protocol scores a path exactly as the Pyro model and guide do."""
    from pyro_seq.fivo import fivo_log_likelihood, protocol_log_weight

    model, guide = tiny(likelihood=likelihood, auxiliary="z")
    x, mask = ragged_batch(likelihood)
    pyro.set_rng_seed(4)
    guide_trace = pyro.poutine.trace(guide).get_trace(x, mask)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(x, mask)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w = sum(s["log_prob"] for s in model_trace.nodes.values() if s["type"] == "sample") - sum(
        s["log_prob"] for s in guide_trace.nodes.values() if s["type"] == "sample"
    )
    z = guide_trace.nodes["z"]["value"]
    assert torch.allclose(protocol_log_weight(model, guide, x, mask, z), log_w, atol=1e-9)
    with torch.no_grad():
        fivo = fivo_log_likelihood(model, guide, x, mask, num_particles=64)
    assert torch.isfinite(fivo).all() and fivo.shape == (B,)


def test_model_reuses_the_guides_forward_path(monkeypatch):
    """One LSTM recurrence per ELBO evaluation: the model takes h_{1:T} from the guide's sampling loop."""
    model, guide = tiny()
    x, mask = ragged_batch()
    calls = []
    original = model.hidden_path
    monkeypatch.setattr(model, "hidden_path", lambda *a: calls.append(1) or original(*a))
    Trace_ELBO().loss(model, guide, x, mask)
    assert calls == []
    # a replayed model call on another x tensor than the guide saw recomputes
    guide_trace = pyro.poutine.trace(guide).get_trace(x, mask)
    pyro.poutine.replay(model, trace=guide_trace)(x.clone(), mask)
    assert calls == [1]
