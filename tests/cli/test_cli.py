import json
import os

import mido
import numpy as np
import pytest
from conftest import jsb_available, shared_data_root
import torch

from pyro_seq.training.checkpoint import load_checkpoint
from pyro_seq.cli import main
from pyro_seq.recipes import RECIPES
from pyro_seq.training import resolve_device
from pyro_seq.midi import piano_roll_png, write_midi

DATA_ROOT = shared_data_root()
needs_jsb = pytest.mark.skipif(
    not jsb_available(),
    reason=f"JSB Chorales not found under {DATA_ROOT}",
)

TINY = [
    "--data", "jsb", "--data-root", str(DATA_ROOT),
    "--max-train-sequences", "8", "--max-eval-sequences", "4", "--max-length", "40", "--batch-size", "4",
    "--d-dim", "6", "--z-dim", "3", "--a-dim", "6", "--hidden-dim", "8",
    "--warmup-steps", "5", "--lr", "3e-3", "--eval-samples", "2", "--device", "cpu", "--no-progress", "--seed", "1",
]  # fmt: skip


def _train(out, epochs, *extra):
    return main(["train", "srnn", *TINY, "--out", str(out), "--epochs", str(epochs), *extra])


def _epoch_lines(out):
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r for r in lines if r["event"] == "epoch"]


@needs_jsb
def test_train_resume_evaluate_sample(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 1) == 0
    assert (out / "best.pt").exists() and (out / "last.pt").exists() and (out / "test.json").exists()
    assert [r["epoch"] for r in _epoch_lines(out)] == [1]
    test = json.loads((out / "test.json").read_text())
    assert test["elbo"]["nats_per_frame_total"] > 0 and test["iwae"]["nats_per_frame_seq_mean"] > 0

    # the "killed" run is continued by a second invocation asking for more epochs
    assert _train(out, 2, "--resume") == 0
    assert [r["epoch"] for r in _epoch_lines(out)] == [1, 2]
    last = load_checkpoint(out / "last.pt", kind="srnn")
    assert last["epoch"] == 2 and last["config"]["model"]["d_dim"] == 6

    # same parameters as an uninterrupted two-epoch run
    straight = tmp_path / "straight"
    assert _train(straight, 2) == 0
    other = load_checkpoint(straight / "last.pt")
    for key in ("model", "guide"):
        for name, value in other[key].items():
            assert torch.equal(last[key][name], value), name

    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(out / "best.pt"), "--num-samples", "3", "--max-sequences", "5", "--output", str(report), "--device", "cpu", "--fivo-particles", "4"]) == 0
    printed = capsys.readouterr().out
    assert "-ELBO" in printed and "-IWAE (K=3)" in printed and "-FIVO (K=4)" in printed
    result = json.loads(report.read_text())
    for bound in ("elbo", "iwae", "fivo"):
        assert set(result[bound]) == {"nats_per_frame_total", "nats_per_frame_seq_mean", "nats_per_sequence"}
        per_frame = result[bound]["nats_per_frame_total"]
        assert result[bound]["nats_per_sequence"] == pytest.approx(per_frame * result["num_frames"] / 5)
    assert result["fivo_particles"] == 4
    assert result["iwae"]["nats_per_frame_total"] <= result["elbo"]["nats_per_frame_total"] + 0.5
    assert result["num_sequences"] == 5 and result["split"] == "test"

    samples = tmp_path / "samples"
    assert main(["sample", str(out / "best.pt"), "--num", "2", "--steps", "12", "--out", str(samples), "--device", "cpu"]) == 0
    for i in range(2):
        assert (samples / f"sample_{i:03d}.png").stat().st_size > 0
        midi = mido.MidiFile(samples / f"sample_{i:03d}.mid")
        assert midi.length == pytest.approx(12 * 0.25)


@needs_jsb
def test_resume_with_another_architecture_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 1, "--eval-samples", "0") == 0
    assert _train(out, 2, "--resume", "--z-dim", "5") == 1
    assert "was trained with other options (model.z_dim 3 -> 5)" in capsys.readouterr().err


def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"\x80\x02garbage")
    assert main(["evaluate", str(bad), "--device", "cpu"]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "missing.pt"), "--out", str(tmp_path), "--device", "cpu"]) == 1
    assert "not found" in capsys.readouterr().err


def test_registry_and_device():
    assert "srnn" in RECIPES
    model, guide, loss = RECIPES["srnn"].build(
        "srnn",
        {"model": {"x_dim": 88, "d_dim": 4, "z_dim": 2, "hidden_dim": 4}, "guide": {"kind": "filter", "res_q": False, "a_dim": 3, "hidden_dim": 4}, "loss": {"elbo": "trace", "warmup_start": 0.5, "warmup_steps": 10}}
    )
    assert guide.config["kind"] == "filter" and loss.beta == 0.5
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_write_midi_note_on_and_off(tmp_path):
    roll = np.zeros((4, 88), dtype=np.float32)
    roll[0:2, 39] = 1  # middle C (60) for two steps
    roll[1:4, 43] = 1  # E4 (64) from step 1 to the end
    path = write_midi(roll, tmp_path / "a.mid", seconds_per_step=0.5, velocity=70)
    midi = mido.MidiFile(path)
    assert midi.length == pytest.approx(2.0)
    events, now = [], 0.0
    for msg in midi:  # iterating a MidiFile gives times in seconds
        now += msg.time
        if msg.type in ("note_on", "note_off"):
            events.append((round(now, 6), msg.type, msg.note))
        if msg.type == "program_change":
            assert msg.program == 0
    assert events == [(0.0, "note_on", 60), (0.5, "note_on", 64), (1.0, "note_off", 60), (2.0, "note_off", 64)]
    assert [m.velocity for m in midi.tracks[0] if m.type == "note_on"] == [70, 70]


def test_piano_roll_png(tmp_path):
    roll = torch.zeros(16, 88)
    roll[::2, 40] = 1
    path = piano_roll_png(roll, tmp_path / "sub" / "roll.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        piano_roll_png(torch.zeros(3), tmp_path / "bad.png")


@needs_jsb
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
    """A real ``pyro-seq train`` process is SIGKILLed mid-run, then continued with ``--resume``."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pyro_seq", "train", "srnn", *TINY, "--eval-samples", "0"]
    proc = subprocess.Popen(cmd + ["--out", str(out), "--epochs", "1000"], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "log.jsonl").exists() and len(_epoch_lines(out)) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the training process wrote no checkpoint in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = load_checkpoint(out / "last.pt")["epoch"]  # the last complete checkpoint
    assert done >= 1
    epochs = done + 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _train(out, epochs, "--resume", "--eval-samples", "0") == 0
        straight = tmp_path / "straight"
        assert _train(straight, epochs, "--eval-samples", "0") == 0
    finally:
        torch.set_num_threads(threads)
    resumed, other = load_checkpoint(out / "last.pt"), load_checkpoint(straight / "last.pt")
    assert resumed["epoch"] == other["epoch"] == epochs
    for key in ("model", "guide"):
        for name, value in other[key].items():
            assert torch.allclose(resumed[key][name], value, atol=1e-6, rtol=0), name
    assert [r["epoch"] for r in _epoch_lines(out)] == list(range(1, epochs + 1))
