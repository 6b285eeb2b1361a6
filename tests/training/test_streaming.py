"""Streaming (truncated-backpropagation) training and chunked evaluation with carried state."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_seq.bounds import trace_log_weights
from pyro_seq.guides import SRNNGuide
from pyro_seq.models import SRNN
from pyro_seq.bounds import streaming_elbo
from pyro_seq.data.streaming import StreamCarry, stream_batches
from pyro_seq.training.trainer import Trainer


def _sequences(lengths, x_dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(t, x_dim, generator=g) < 0.3).double() for t in lengths]


def _srnn(kind="filter", fast=True):
    model = SRNN(x_dim=5, d_dim=4, z_dim=3, hidden_dim=6, fast=fast).double()
    guide = SRNNGuide(model, kind=kind, res_q=True).double()
    return model, guide


def test_plan_covers_every_frame_once_in_order():
    seqs = _sequences([23, 5, 11, 40, 7, 9, 3])
    batches = stream_batches(seqs, batch_size=3, chunk_length=6, seed=1)
    seen = {i: [] for i in range(len(seqs))}
    steps = 0
    for batch in batches:
        steps += 1
        assert batch.x.shape[0] == batch.mask.shape[0] == batch.carry.reset.shape[0] <= 3
        assert batch.mask[:, 0].all()  # no empty rows
        for r in range(batch.x.shape[0]):
            i = int(batch.sequence_index[r])
            n = int(batch.mask[r].sum())
            assert bool(batch.carry.reset[r]) == (len(seen[i]) == 0)  # reset exactly at a sequence start
            seen[i].append(batch.x[r, :n])
            assert not batch.x[r, n:].any()
    assert steps == len(batches)
    for i, s in enumerate(seqs):
        assert torch.equal(torch.cat(seen[i]), s)
    # balanced: 4+1+2+7+2+2+1 = 19 chunks over 3 slots -> at most 7 steps (the longest piece)
    assert len(batches) == 7


@pytest.mark.parametrize("fast", [True, False])
def test_chunked_filter_elbo_equals_the_whole_sequence_elbo(float64, fast):
    # one slot: chunks consume the same random numbers in the same order as the whole sequence,
    # and the filter guide's q factorises over chunks, so the bound is the same to rounding
    model, guide = _srnn("filter", fast)
    seq = _sequences([17])
    pyro.set_rng_seed(5)
    whole, _ = trace_log_weights(model, guide, seq[0].unsqueeze(0), torch.ones(1, 17, dtype=torch.bool))
    pyro.set_rng_seed(5)
    chunked = streaming_elbo(model, guide, seq, batch_size=1, chunk_length=5)
    assert chunked["log_likelihoods"].shape == (1,)
    assert torch.allclose(chunked["log_likelihoods"], whole.detach(), rtol=0, atol=1e-10)
    assert chunked["num_frames"] == 17


def test_carry_changes_the_bound_and_resets_restore_it(float64):
    model, guide = _srnn("smoother")
    x = _sequences([6])[0].unsqueeze(0)
    mask = torch.ones(1, 6, dtype=torch.bool)
    state = {"x": torch.ones(1, 5), "h": torch.full((1, 4), 0.7), "z": torch.full((1, 3), 2.0)}
    values = {}
    for name, reset in (("carried", False), ("reset", True), ("none", None)):
        pyro.set_rng_seed(2)
        carry = None if reset is None else StreamCarry(state, torch.tensor([reset]))
        values[name] = trace_log_weights(model, guide, x, mask, carry)[0]
        if carry is not None:
            assert set(carry.final) == {"x", "h", "z"} and carry.final["z"].shape == (1, 3)
    assert torch.equal(values["reset"], values["none"])
    assert not torch.allclose(values["carried"], values["none"])


def test_bad_carry_is_refused():
    model, guide = _srnn()
    x = _sequences([4])[0].unsqueeze(0).double()
    with pytest.raises(TypeError, match="StreamCarry"):
        guide(x, None, {"z": 0})
    with pytest.raises(ValueError, match="rows"):
        model(x, None, StreamCarry({}, torch.tensor([True, False])))
    with pytest.raises(ValueError, match="chunk_length"):
        stream_batches(_sequences([4]), 2, 0)


def _zforcing():
    from pyro_seq.guides import ZForcingGuide
    from pyro_seq.models import ZForcing

    model = ZForcing(x_dim=5, emb_dim=4, h_dim=6, z_dim=3, hidden_dim=7).double()
    return model, ZForcingGuide(model, auxiliary="z", backward_prediction=True).double()


@pytest.mark.parametrize("kind", ["srnn", "zforcing"])
def test_trainer_streams_long_sequences(float64, tmp_path, kind):
    model, guide = _srnn("smoother") if kind == "srnn" else _zforcing()
    seqs = _sequences([60, 35, 80, 12])
    trainer = Trainer(
        model, guide, Trace_ELBO(), lambda epoch: stream_batches(seqs, 2, 10, seed=0, epoch=epoch, dtype=torch.float64), None,
        progress=False, lr=1e-2, out_dir=tmp_path,
    )  # fmt: skip
    before = streaming_elbo(model, guide, seqs, 2, 10)["elbo"]["total"]
    summary = trainer.fit(3)
    after = streaming_elbo(model, guide, seqs, 2, 10)["elbo"]["total"]
    assert summary["global_step"] == 3 * len(stream_batches(seqs, 2, 10))
    assert after < before  # nats per frame went down


# ------------------------------------------------------------------------------------ command line

from conftest import jsb_available, shared_data_root  # noqa: E402

from pyro_seq.cli import main  # noqa: E402

TINY = [
    "--data", "jsb", "--data-root", str(shared_data_root()),
    "--max-train-sequences", "6", "--max-eval-sequences", "3", "--batch-size", "3",
    "--warmup-steps", "5", "--eval-samples", "2", "--device", "cpu", "--no-progress", "--seed", "1",
]  # fmt: skip
SIZES = {
    "srnn": ["--d-dim", "6", "--z-dim", "3", "--a-dim", "6", "--hidden-dim", "8"],
    "zforcing": ["--emb-dim", "4", "--h-dim", "6", "--z-dim", "3", "--hidden-dim", "8", "--aux-weight", "0.1"],
}


@pytest.mark.skipif(not jsb_available(), reason="JSB Chorales not in the data root")
@pytest.mark.parametrize("kind", sorted(SIZES))
def test_cli_streams_training_and_evaluation(tmp_path, capsys, kind):
    import json

    out = tmp_path / "run"
    assert main(["train", kind, *TINY, *SIZES[kind], "--stream-length", "16", "--epochs", "1", "--out", str(out)]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "epoch" and log[0]["train_loss_per_frame"] > 0
    assert json.loads((out / "config.json").read_text())["data"]["stream_length"] == 16
    capsys.readouterr()
    assert main(["evaluate", str(out / "best.pt"), "--stream-length", "16", "--max-sequences", "3", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "-ELBO" in text and "-IWAE" not in text
    record = json.loads((out / "best_test_eval.json").read_text())
    assert record["stream_length"] == 16 and record["elbo"]["nats_per_frame_total"] > 0


@pytest.mark.parametrize("extra, message", [
    (["lvae", "--stream-length", "8"], "only srnn and zforcing"),
    (["srnn", "--stream-length", "8", "--max-length", "20"], "alternatives"),
])  # fmt: skip
def test_cli_refuses_what_it_cannot_stream(tmp_path, capsys, extra, message):
    argv = ["train", extra[0], "--data", "chorales", "--out", str(tmp_path / "x"), *extra[1:]]
    assert main(argv) == 2  # a usage error, refused before anything runs
    assert message in capsys.readouterr().err
