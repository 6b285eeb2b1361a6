import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from pyro.nn import PyroModule

from pyro_seq.training.checkpoint import CheckpointError, load_checkpoint
from pyro_seq.data import make_batches, pad_batch
from pyro_seq.training.trainer import BEST_CHECKPOINT, LAST_CHECKPOINT, LOG_FILE, NonFiniteLossError, Trainer

X_DIM = 6


# ------------------------------------------------------------------ toy model


class ToyModel(PyroModule):
    """One Gaussian latent per sequence, Bernoulli frames."""

    def __init__(self, x_dim=X_DIM, z_dim=2):
        super().__init__("toy")
        self.z_dim = z_dim
        self.emit = nn.Linear(z_dim, x_dim)

    def forward(self, x, mask):
        batch, time, _ = x.shape
        with pyro.plate("sequences", batch):
            z = pyro.sample("z", dist.Normal(x.new_zeros(batch, self.z_dim), 1.0).to_event(1))
            logits = self.emit(z).unsqueeze(1).expand(batch, time, -1)  # [batch, time, x_dim]
            pyro.sample("x", dist.Bernoulli(logits=logits).mask(mask.unsqueeze(-1)).to_event(2), obs=x)


class ToyGuide(PyroModule):
    def __init__(self, model, x_dim=X_DIM):
        super().__init__("toy_guide")
        object.__setattr__(self, "_model", model)  # held, not registered
        self.encode = nn.Linear(x_dim, 2 * model.z_dim)

    def forward(self, x, mask):
        m = mask.unsqueeze(-1).to(x.dtype)
        mean_x = (x * m).sum(1) / m.sum(1)  # [batch, x_dim]
        loc, log_scale = self.encode(mean_x).chunk(2, -1)
        with pyro.plate("sequences", x.size(0)):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def _sequences(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((int(rng.integers(3, 12)), X_DIM)) < 0.3).astype(np.float32) for _ in range(n)]


TRAIN, VALID = _sequences(24, 0), _sequences(8, 1)


def _build(kind, init_seed=0):
    pyro.set_rng_seed(init_seed)
    if kind == "toy":
        model = ToyModel()
        guide = ToyGuide(model)
        loss = pyro.infer.Trace_ELBO()
    else:
        from pyro_seq.guides import SRNNGuide
        from pyro_seq.losses import LinearSchedule, WarmupTraceMeanField_ELBO
        from pyro_seq.models import SRNN

        model = SRNN(x_dim=X_DIM, d_dim=4, z_dim=3, hidden_dim=8)
        guide = SRNNGuide(model, kind="smoother", res_q=True, a_dim=4, hidden_dim=8)
        loss = WarmupTraceMeanField_ELBO(schedule=LinearSchedule(start=0.2, end=1.0, steps=10))
    return model, guide, loss


def _trainer(kind, out_dir, init_seed=0, **kwargs):
    model, guide, loss = _build(kind, init_seed)
    kwargs.setdefault("lr", 0.01)
    kwargs.setdefault("lrd", 0.999)
    return Trainer(
        model,
        guide,
        loss,
        lambda epoch: make_batches(TRAIN, 5, shuffle=True, seed=3, epoch=epoch),
        lambda epoch: make_batches(VALID, 4, shuffle=False),
        out_dir=out_dir,
        seed=7,
        kind=kind,
        config={"model": {"kind": kind}},
        progress=False,
        **kwargs,
    )


def _params(trainer):
    named = dict(trainer.model.named_parameters())
    named.update({"guide." + k: v for k, v in trainer.guide.named_parameters()})
    return {k: v.detach().clone() for k, v in named.items()}


def _assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _epoch_lines(out_dir):
    lines = [json.loads(line) for line in (out_dir / LOG_FILE).read_text().splitlines()]
    return [r for r in lines if r["event"] == "epoch"]


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("kind", ["toy", "srnn"])
def test_resume_matches_uninterrupted_run(tmp_path, kind):
    epochs = 3 if kind == "toy" else 2
    straight = _trainer(kind, tmp_path / "a", log_every=2)
    straight.fit(epochs)
    expected = _params(straight)
    expected_optim = straight.optim.get_state()
    expected_step = straight.global_step

    first = _trainer(kind, tmp_path / "b", log_every=2)
    first.fit(1)
    # "kill" the process: a new model with other initial weights, a fresh trainer and store
    resumed = _trainer(kind, tmp_path / "b", init_seed=123, resume=True, log_every=2)
    assert resumed.resumed and resumed.epoch == 1 and resumed.global_step == first.global_step
    resumed.fit(epochs)

    assert resumed.global_step == expected_step
    _assert_same_tensors(_params(resumed), expected)
    got_optim = resumed.optim.get_state()
    assert got_optim.keys() == expected_optim.keys()
    for name in expected_optim:
        assert got_optim[name]["param_groups"][0]["lr"] == expected_optim[name]["param_groups"][0]["lr"]
        for key, value in expected_optim[name]["state"][0].items():
            if torch.is_tensor(value):
                assert torch.equal(got_optim[name]["state"][0][key], value)
    # the param store holds the modules' own parameter tensors
    store = pyro.get_param_store()
    module_params = {id(p) for m in (resumed.model, resumed.guide) for p in m.parameters()}
    assert len(store) > 0 and all(id(store._params[n]) in module_params for n in store.keys())
    # same log: one line per epoch, same numbers
    a, b = _epoch_lines(tmp_path / "a"), _epoch_lines(tmp_path / "b")
    assert [r["epoch"] for r in b] == list(range(1, epochs + 1))
    for ra, rb in zip(a, b):
        assert ra["train_loss_per_frame"] == rb["train_loss_per_frame"]
        assert ra["valid_bound"] == rb["valid_bound"]
    if kind == "srnn":
        assert b[0]["beta"] is not None and b[0]["kl_per_frame"] is not None


def test_resume_after_crash_mid_epoch(tmp_path):
    straight = _trainer("toy", tmp_path / "a")
    straight.fit(2)
    expected = _params(straight)

    crashing = _trainer("toy", tmp_path / "b", log_every=1)
    crashing.fit(1)
    calls = {"n": 0}
    real_step = crashing.step

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed mid-epoch 2, after 2 steps
        return real_step(*args, **kwargs)

    crashing.step = dying_step
    with pytest.raises(KeyboardInterrupt):
        crashing.fit(2)
    resumed = _trainer("toy", tmp_path / "b", init_seed=5, resume=True, log_every=1)
    resumed.fit(2)
    _assert_same_tensors(_params(resumed), expected)
    lines = [json.loads(line) for line in (tmp_path / "b" / LOG_FILE).read_text().splitlines()]
    steps = [r["step"] for r in lines if r["event"] == "step"]
    assert steps == sorted(set(steps))  # the interrupted epoch's lines were dropped, then redone


def test_checkpoints_and_log(tmp_path):
    trainer = _trainer("toy", tmp_path, log_every=3)
    summary = trainer.fit(2)
    assert summary["epochs"] == 2 and summary["global_step"] == 10
    last = load_checkpoint(tmp_path / LAST_CHECKPOINT, kind="toy")
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT, kind="toy")
    assert last["epoch"] == 2 and last["global_step"] == 10
    assert best["epoch"] == summary["best_epoch"]
    assert last["config"] == {"model": {"kind": "toy"}}
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    epochs = [r for r in lines if r["event"] == "epoch"]
    assert len(epochs) == 2 and len([r for r in lines if r["event"] == "step"]) == 3
    for key in ("epoch", "step", "train_loss_per_frame", "valid_bound", "lr", "seconds", "beta"):
        assert key in epochs[0]
    assert math.isfinite(epochs[0]["valid_bound"]) and epochs[0]["valid_bound"] > 0
    assert epochs[1]["lr"] == pytest.approx(0.01 * 0.999**10)
    # a checkpoint of another kind or config is refused
    with pytest.raises(CheckpointError, match="kind"):
        _trainer("srnn", tmp_path, resume=True)


def test_validation_is_total_nats_over_total_frames(tmp_path):
    trainer = _trainer("toy", None, eval_fn=None)
    batches = list(make_batches(VALID, 4, shuffle=False))
    pyro.set_rng_seed(0)
    value = trainer.validate()
    pyro.set_rng_seed(0)
    from pyro_seq.bounds import evaluate

    expected = evaluate(trainer.model, trainer.guide, batches, num_samples=1)["elbo"]["total"]
    assert value == pytest.approx(expected)


def _nan_batch():
    batch = pad_batch([torch.tensor(s) for s in TRAIN[:4]])
    x = batch.x.clone()
    x[0, 0, 0] = float("nan")
    return batch._replace(x=x)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("validation", [True, False])
def test_nan_batch_is_skipped_without_touching_parameters(tmp_path, validation):
    good = pad_batch([torch.tensor(s) for s in TRAIN[4:8]])
    trainer = _trainer("toy", None)
    with pyro.validation_enabled(validation):
        trainer.step(good.x, good.mask)  # optimiser state exists
        before, optim_before, step_before = _params(trainer), trainer.optim.get_state(), trainer.global_step
        bad = _nan_batch()
        result = trainer.step(bad.x, bad.mask)
    assert not result["ok"] and "non-finite" in result["reason"]
    assert trainer.global_step == step_before
    _assert_same_tensors(_params(trainer), before)
    _assert_same_optim_state(trainer.optim.get_state(), optim_before)
    assert all(p.grad is None or not p.grad.abs().sum() for p in trainer.model.parameters())
    # training goes on normally after the bad batch
    assert trainer.step(good.x, good.mask)["ok"]


def _assert_same_optim_state(a, b):
    """Two ``PyroOptim.get_state()`` dicts hold equal per-parameter state and param groups."""
    assert a.keys() == b.keys()
    for name in a:
        assert a[name]["param_groups"] == b[name]["param_groups"], name  # lr (after lrd decay), betas, ...
        assert a[name]["state"].keys() == b[name]["state"].keys(), name
        for i in a[name]["state"]:
            for key, value in a[name]["state"][i].items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[name]["state"][i][key])), (name, key)


def test_non_finite_gradient_is_skipped(tmp_path):
    trainer = _trainer("toy", None)
    good = pad_batch([torch.tensor(s) for s in TRAIN[:4]])
    assert trainer.step(good.x, good.mask)["ok"]  # optimiser state exists
    handle = trainer.model.emit.weight.register_hook(lambda g: g * float("nan"))
    before, optim_before = _params(trainer), trainer.optim.get_state()
    result = trainer.step(good.x, good.mask)
    assert not result["ok"] and result["reason"] == "non-finite gradient"
    _assert_same_tensors(_params(trainer), before)
    _assert_same_optim_state(trainer.optim.get_state(), optim_before)
    handle.remove()
    assert trainer.step(good.x, good.mask)["ok"]


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_injected_into_a_real_models_batch_is_skipped_and_training_goes_on(tmp_path):
    """
    NaN injection with SRNN (whose input check rejects the batch): the step is skipped with
    the parameters, the optimiser state (moments, step counts, decayed lr) and the step
    counter untouched, the skip is logged with its batch index, and the run continues with
    the next batch to the end of the epoch.
    """
    model, guide, loss = _build("srnn")
    good = [pad_batch([torch.tensor(s) for s in TRAIN[i : i + 4]]) for i in (0, 4, 8)]
    bad = _nan_batch()
    trainer = Trainer(model, guide, loss, [good[0], bad, good[1], good[2]], None, out_dir=tmp_path, progress=False, kind="srnn", lrd=0.99)
    seen = []
    real_step = trainer.step

    def recording_step(*args, **kwargs):
        before = (_params(trainer), trainer.optim.get_state(), trainer.global_step)
        result = real_step(*args, **kwargs)
        seen.append((before, result, (_params(trainer), trainer.optim.get_state(), trainer.global_step)))
        return result

    trainer.step = recording_step
    summary = trainer.fit(1)
    assert [r["ok"] for _, r, _ in seen] == [True, False, True, True]
    (params0, optim0, step0), result, (params1, optim1, step1) = seen[1]
    assert "NaN" in result["reason"]
    assert step1 == step0 == 1
    _assert_same_tensors(params1, params0)
    _assert_same_optim_state(optim1, optim0)
    # the next good batch does update the parameters
    assert not all(torch.equal(seen[2][2][0][k], v) for k, v in params1.items())
    assert summary["global_step"] == 3
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    skipped = [r for r in lines if r["event"] == "skipped_step"]
    assert len(skipped) == 1 and skipped[0]["batch"] == 1 and skipped[0]["epoch"] == 1
    assert "NaN" in skipped[0]["reason"]
    assert [r["skipped_steps"] for r in lines if r["event"] == "epoch"] == [1]


def test_nan_batches_in_an_epoch_are_logged_and_too_many_stop(tmp_path):
    good = [pad_batch([torch.tensor(s) for s in TRAIN[i : i + 4]]) for i in (0, 4)]
    model, guide, loss = _build("toy")
    trainer = Trainer(model, guide, loss, [good[0], _nan_batch(), good[1]], None, out_dir=tmp_path, progress=False, kind="toy")
    summary = trainer.fit(1)
    assert summary["global_step"] == 2
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["event"] for r in lines] == ["skipped_step", "epoch"]
    assert lines[0]["batch"] == 1 and "non-finite" in lines[0]["reason"]  # logged with its batch index
    assert lines[1]["skipped_steps"] == 1

    model, guide, loss = _build("toy")
    trainer = Trainer(model, guide, loss, [_nan_batch()] * 5, None, progress=False, max_bad_steps=3)
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        trainer.fit(1)


def test_early_stopping(tmp_path):
    values = iter([3.0, 2.0, 2.5, 2.4, 2.1, 1.0])
    trainer = _trainer("toy", tmp_path, patience=3, eval_fn=lambda model, guide, batches: next(values))
    summary = trainer.fit(10)
    assert summary["stopped_early"] and summary["epochs"] == 5
    assert summary["best_valid"] == 2.0 and summary["best_epoch"] == 2
    assert load_checkpoint(tmp_path / BEST_CHECKPOINT)["epoch"] == 2
    # a resumed run that had stopped early stays stopped
    again = _trainer("toy", tmp_path, patience=3, resume=True)
    assert again.fit(10)["epochs"] == 5


def test_time_budget_stops_after_the_epoch_that_reaches_it(tmp_path):
    trainer = _trainer("toy", tmp_path, max_seconds=1e-9)
    summary = trainer.fit(10)
    assert summary["out_of_time"] and summary["epochs"] == 1
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert lines[-1]["event"] == "time_budget" and lines[-1]["epoch"] == 1
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)["epoch"] == 1  # the epoch was saved first
    again = _trainer("toy", tmp_path, resume=True, max_seconds=1e6)  # a larger budget continues the run
    assert again.fit(3)["epochs"] == 3 and not again.out_of_time
    with pytest.raises(ValueError, match="max_seconds"):
        _trainer("toy", tmp_path, max_seconds=0)


def test_loss_step_is_set_before_each_step():
    seen = []

    class RecordingELBO(pyro.infer.Trace_ELBO):
        step = -1

        def loss_and_grads(self, model, guide, *args, **kwargs):
            seen.append(self.step)
            return super().loss_and_grads(model, guide, *args, **kwargs)

    model, guide, _ = _build("toy")
    trainer = Trainer(model, guide, RecordingELBO(), lambda e: make_batches(TRAIN, 8, seed=0, epoch=e), None, progress=False)
    trainer.fit(2)
    assert seen == list(range(6))
