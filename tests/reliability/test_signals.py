"""
SIGINT and SIGTERM during ``pyro-seq train`` (real processes): the run stops at the next step
boundary with ``last.pt`` written there, releases its folder, exits with 128 + the signal's number
and one line that says where it stopped and the command that resumes it; the resumed run ends with
exactly the parameters of an uninterrupted one. A second signal while the checkpoint is written
does not cut it short; a second signal mid-step, or one before training starts, stops at once.
"""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, jsb_available, shared_data_root
from reliability_cases import assert_same, record

from pyro_seq.training.checkpoint import load_checkpoint
from pyro_seq.training.run_folder import RunFolderLock

pytestmark = pytest.mark.skipif(not jsb_available(), reason="JSB Chorales not under the shared data root")

RUN = [
    "--log-level", "WARNING", "train", "srnn", "--data", "jsb", "--data-root", str(shared_data_root()),
    "--max-train-sequences", "8", "--max-eval-sequences", "4", "--max-length", "40", "--batch-size", "4",
    "--d-dim", "6", "--z-dim", "3", "--a-dim", "6", "--hidden-dim", "8", "--warmup-steps", "5", "--lr", "3e-3",
    "--eval-samples", "0", "--device", "cpu", "--no-progress", "--seed", "1", "--log-every", "1",
]  # fmt: skip
EPOCHS = 3  # of 5 batches each (8 pieces of at most 40 frames)

# The command line in a subprocess, with hooks that only this wrapper installs (the library has
# none): RELIABILITY_SLOW_SAVE=progress|N makes the save of a mid-epoch checkpoint (or of the
# epoch-N checkpoint) create the marker file and wait a second first, with the signals held as in
# any save; RELIABILITY_SLOW_LOAD makes reading the data wait (marker, then 60 s); RELIABILITY_SLOW_STEP
# makes every step from the 3rd on take half a second (marker at the first slow one).
WRAPPER = """
import os, sys, time
import torch

marker = os.environ.get("RELIABILITY_MARKER", "")
slow_save = os.environ.get("RELIABILITY_SLOW_SAVE", "")
_save = torch.save


def _slow_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("pyro_seq_checkpoint") and slow_save:
        if (slow_save == "progress" and "epoch_progress" in obj) or (
            slow_save.isdigit() and "epoch_progress" not in obj and obj.get("epoch") == int(slow_save)
        ):
            open(marker, "w").close()
            time.sleep(1.0)
    return _save(obj, f, *args, **kwargs)


torch.save = _slow_save
if os.environ.get("RELIABILITY_SLOW_LOAD"):
    import pyro_seq.data

    def _slow_load(*args, **kwargs):
        open(marker, "w").close()
        time.sleep(60)

    pyro_seq.data.load_sequences = _slow_load
if os.environ.get("RELIABILITY_SLOW_STEP"):
    from pyro_seq.training.trainer import Trainer

    _step = Trainer.step

    def _slow_step(self, *args, **kwargs):
        if self.global_step >= 2:
            open(marker, "a").close()
            time.sleep(0.5)
        return _step(self, *args, **kwargs)

    Trainer.step = _slow_step
from pyro_seq.cli import main

sys.exit(main(sys.argv[1:]))
"""


class Run:
    """One ``pyro-seq train`` subprocess and its stderr."""

    def __init__(self, tmp_path, tag, argv, **hooks):
        self.tmp_path, self.tag = tmp_path, tag
        self.marker = tmp_path / f"marker_{tag}"
        wrapper = tmp_path / "run_cli.py"
        wrapper.write_text(WRAPPER)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", RELIABILITY_MARKER=str(self.marker))
        env.update({f"RELIABILITY_{k.upper()}": str(v) for k, v in hooks.items()})
        # this checkout's package, not whatever an editable install points at
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.stderr = tmp_path / f"stderr_{tag}.txt"
        with open(self.stderr, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(wrapper), *argv], env=env, cwd=REPO_ROOT, stdout=log, stderr=log)

    def wait_for(self, condition, what, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        self.proc.kill()
        self.proc.wait()
        pytest.fail(f"{self.tag}: {what} did not happen (exit status {self.proc.returncode}):\n{self.text()[-2000:]}")

    def finish(self, timeout=300):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.tag}: still running after {timeout} s:\n{self.text()[-2000:]}")

    def text(self):
        return self.stderr.read_text(errors="replace")

    def lines(self):
        return [line for line in self.text().splitlines() if line.strip()]


def log_records(out):
    import json

    path = out / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def steps_logged(out, epoch):
    return any(r.get("event") == "step" and r.get("epoch") == epoch for r in log_records(out))


def stopped_line(run, signame, out):
    """The one line a stopped run writes, checked; returns the resume command it gives."""
    lines = run.lines()
    assert "Traceback" not in run.text() and "KeyboardInterrupt" not in run.text(), run.text()
    assert len(lines) == 1, lines  # --log-level WARNING: nothing but the line
    line = lines[0]
    assert line.startswith("pyro-seq: stopped ") and signame in line, line
    command = line.split("resume with: ", 1)[1]
    assert command.startswith("pyro-seq ") and command.endswith(f"--resume --out {out}"), command
    return shlex.split(command)[1:]


def assert_folder_released(out):
    assert not list(out.glob(".*.tmp")), sorted(p.name for p in out.iterdir())
    with RunFolderLock(out):  # no process holds the folder any more
        pass


def test_sigint_mid_epoch_saves_there_and_the_resumed_run_ends_as_an_uninterrupted_one(tmp_path):
    """
    SIGINT in the middle of epoch 2, and a second SIGINT while the checkpoint of the stop is being
    written: exit 130, one line, a complete ``last.pt`` that holds the position in the epoch; the
    resume command it prints finishes the run with exactly the parameters, optimiser state,
    counters and bounds of a run that was never interrupted.
    """
    out = tmp_path / "stopped"
    argv = RUN + ["--epochs", str(EPOCHS), "--out", str(out)]
    run = Run(tmp_path, "sigint", argv, slow_save="progress")
    run.wait_for(lambda: steps_logged(out, 2), "a step of epoch 2")
    run.proc.send_signal(signal.SIGINT)
    run.wait_for(run.marker.exists, "the write of the stop's checkpoint")
    run.proc.send_signal(signal.SIGINT)  # while the checkpoint is written
    assert run.finish() == 130, run.text()
    resume = stopped_line(run, "SIGINT", out)
    assert "at epoch 2, step" in run.lines()[0] and "saved" in run.lines()[0]
    assert_folder_released(out)
    state = load_checkpoint(out / "last.pt", kind="srnn")
    assert state["epoch"] == 1 and state["epoch_progress"]["epoch"] == 2 and 0 < state["epoch_progress"]["batch"] < 5
    interrupted = [r for r in log_records(out) if r["event"] == "interrupted"]
    assert interrupted and interrupted[0]["step"] == state["global_step"]
    record("signals", "train", "pyro-seq train", "SIGINT mid-epoch: stop at the step boundary, last.pt there", True)
    record("signals", "train", "pyro-seq train", "second SIGINT while the stop's checkpoint is written", True)

    resumed = Run(tmp_path, "resumed", resume)
    assert resumed.finish() == 0, resumed.text()
    straight_out = tmp_path / "straight"
    straight = Run(tmp_path, "straight", RUN + ["--epochs", str(EPOCHS), "--out", str(straight_out)])
    assert straight.finish() == 0, straight.text()
    a, b = load_checkpoint(out / "last.pt", kind="srnn"), load_checkpoint(straight_out / "last.pt", kind="srnn")
    for key in ("epoch", "global_step", "model", "guide", "optim", "best_valid", "best_epoch"):
        assert_same(a[key], b[key], key)
    assert "epoch_progress" not in a
    epochs_a = [r for r in log_records(out) if r["event"] == "epoch"]
    epochs_b = [r for r in log_records(straight_out) if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs_a] == list(range(1, EPOCHS + 1))
    for ra, rb in zip(epochs_a, epochs_b):  # the interrupted epoch's figures too
        for key in ("step", "train_loss_per_frame", "kl_per_frame", "valid_bound", "best_valid"):
            assert ra[key] == rb[key], (ra["epoch"], key)
    steps_a = [r["step"] for r in log_records(out) if r["event"] == "step"]
    assert steps_a == sorted(set(steps_a)) == [r["step"] for r in log_records(straight_out) if r["event"] == "step"]
    record("signals", "train", "pyro-seq train", "SIGINT mid-epoch: resumed run identical to an uninterrupted one", True)


def test_sigterm_while_an_epoch_checkpoint_is_written_stops_after_it(tmp_path):
    """SIGTERM during the epoch-1 checkpoint write: the write completes, the run stops there, exit 143."""
    out = tmp_path / "stopped"
    run = Run(tmp_path, "sigterm", RUN + ["--epochs", str(EPOCHS), "--out", str(out)], slow_save=1)
    run.wait_for(run.marker.exists, "the write of the epoch-1 checkpoint")
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 143, run.text()
    resume = stopped_line(run, "SIGTERM", out)
    assert "at the end of epoch 1" in run.lines()[0]
    assert_folder_released(out)
    state = load_checkpoint(out / "last.pt", kind="srnn")
    assert state["epoch"] == 1 and "epoch_progress" not in state
    record("signals", "train", "pyro-seq train", "SIGTERM during an epoch checkpoint write", True)
    resumed = Run(tmp_path, "resumed", resume)
    assert resumed.finish() == 0, resumed.text()
    assert load_checkpoint(out / "last.pt", kind="srnn")["epoch"] == EPOCHS


def test_a_second_signal_mid_step_stops_at_once_keeping_the_last_checkpoint(tmp_path):
    """SIGINT then SIGTERM within one (slow) step: stop at once, exit 143, last.pt of epoch 1 intact."""
    out = tmp_path / "stopped"
    run = Run(tmp_path, "twice", RUN + ["--epochs", str(EPOCHS), "--out", str(out)], slow_step=1)
    run.wait_for(lambda: (out / "last.pt").exists() and steps_logged(out, 2), "a step of epoch 2")
    run.proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 143, run.text()
    resume = stopped_line(run, "SIGTERM", out)
    assert "stopped at once by a second SIGTERM" in run.lines()[0] and "last.pt (epoch 1) is intact" in run.lines()[0], run.lines()
    assert_folder_released(out)
    assert load_checkpoint(out / "last.pt", kind="srnn")["epoch"] == 1
    record("signals", "train", "pyro-seq train", "second signal mid-step: stop at once", True)
    resumed = Run(tmp_path, "resumed", resume)
    assert resumed.finish() == 0, resumed.text()
    assert load_checkpoint(out / "last.pt", kind="srnn")["epoch"] == EPOCHS


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_before_training_starts_stops_at_once(tmp_path, signum):
    """A signal while the data is read: exit 128 + signal, one line, the folder released."""
    out = tmp_path / "stopped"
    run = Run(tmp_path, "early", RUN + ["--epochs", str(EPOCHS), "--out", str(out)], slow_load=1)
    run.wait_for(run.marker.exists, "reading the data")
    run.proc.send_signal(signum)
    assert run.finish() == 128 + signum, run.text()
    stopped_line(run, signal.Signals(signum).name, out)
    assert "before training started; no checkpoint was written" in run.lines()[0]
    assert_folder_released(out)
    record("signals", "train", "pyro-seq train", f"{signal.Signals(signum).name} while reading the data", True)
