"""
Interrupted runs (slow): a tiny ``pyro-seq train`` is SIGKILLed at three seeded random points, one
of them half-way through writing a checkpoint, resumed each time, and ends with exactly the
parameters of an uninterrupted run.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, jsb_available, shared_data_root
from reliability_cases import NOTES, assert_same, record

import pyro_seq
from pyro_seq.training.checkpoint import CheckpointError, load_checkpoint

REPO = REPO_ROOT
PACKAGE = Path(pyro_seq.__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# interrupted runs
# --------------------------------------------------------------------------------------------

KILL_RUN = [
    "--log-level", "WARNING", "train", "srnn", "--data", "jsb", "--data-root", str(shared_data_root()),
    "--max-train-sequences", "8", "--max-eval-sequences", "4", "--max-length", "40", "--batch-size", "4",
    "--d-dim", "6", "--z-dim", "3", "--a-dim", "6", "--hidden-dim", "8", "--warmup-steps", "5", "--lr", "3e-3",
    "--eval-samples", "0", "--device", "cpu", "--no-progress", "--seed", "1",
]  # fmt: skip
KILL_EPOCHS = 12

# Runs the command line in a subprocess; with RELIABILITY_SLOW_SAVE_EPOCH=k, the first checkpoint
# of epoch k is written half-way, a marker file is created, and the process sleeps until it is
# killed: a SIGKILL during a checkpoint write, with a half-written temporary file on disk. The
# patch of torch.save lives only in this subprocess; the library has no test hook.
WRAPPER = '''
import io, os, sys, time
import torch

_save = torch.save
_epoch = int(os.environ.get("RELIABILITY_SLOW_SAVE_EPOCH", "0"))
_marker = os.environ.get("RELIABILITY_SLOW_SAVE_MARKER", "")


def _slow_save(obj, f, *args, **kwargs):
    if _epoch and isinstance(obj, dict) and obj.get("pyro_seq_checkpoint") and obj.get("epoch") == _epoch:
        buf = io.BytesIO()
        _save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        open(_marker, "w").close()
        time.sleep(600)  # killed here
    return _save(obj, f, *args, **kwargs)


torch.save = _slow_save
from pyro_seq.cli import main

sys.exit(main(sys.argv[1:]))
'''


def _launch(wrapper, out, tmp_path, tag, slow_epoch=0):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["RELIABILITY_SLOW_SAVE_EPOCH"] = str(slow_epoch)
    env["RELIABILITY_SLOW_SAVE_MARKER"] = str(tmp_path / f"saving_{tag}")
    argv = [sys.executable, str(wrapper), *KILL_RUN, "--out", str(out), "--epochs", str(KILL_EPOCHS)]
    if out.exists():
        argv.append("--resume")
    log = open(tmp_path / f"stderr_{tag}.txt", "wb")
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def _wait(proc, condition, what, tmp_path, tag, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    tail = (tmp_path / f"stderr_{tag}.txt").read_bytes()[-2000:].decode(errors="replace")
    pytest.fail(f"{tag}: {what} did not happen (exit status {proc.returncode}):\n{tail}")


@pytest.mark.slow
@pytest.mark.skipif(not jsb_available(), reason="JSB Chorales not under the shared data root")
def test_run_sigkilled_at_random_points_resumes_to_the_uninterrupted_result(tmp_path):
    """
    SIGKILL a tiny ``pyro-seq train srnn`` three times at seeded random points (two at random
    times, one half-way through writing a checkpoint), resume with ``--resume`` after each, and
    compare the end of the run with an uninterrupted one: same parameters, optimiser state and
    counters, bit for bit. A kill during a write leaves only a temporary file that the loader
    refuses (a truncated checkpoint raises CheckpointError: ``test_checkpoint.py``
    ``test_truncated_checkpoint_is_a_clear_error``); the resumed run starts from the last
    complete checkpoint.
    """
    wrapper = tmp_path / "run_cli.py"
    wrapper.write_text(WRAPPER)
    rng = random.Random(20261123)
    out = tmp_path / "killed"
    trials = []

    def last_epoch():
        return load_checkpoint(out / "last.pt")["epoch"] if (out / "last.pt").exists() else 0

    for trial in range(3):
        done = last_epoch()
        tag = f"kill{trial}"
        if trial < 2:  # at a random time: a random delay after the checkpoint of a random epoch
            target = done + rng.randint(1, 3)
            delay = rng.uniform(0.0, 0.3)
            proc = _launch(wrapper, out, tmp_path, tag)
            _wait(proc, lambda: last_epoch() >= target, f"checkpoint of epoch {target}", tmp_path, tag)
            time.sleep(delay)
            point = f"{delay:.3f} s after the epoch-{target} checkpoint"
        else:  # half-way through writing the first checkpoint of a random epoch
            target = done + rng.randint(1, 3)
            proc = _launch(wrapper, out, tmp_path, tag, slow_epoch=target)
            _wait(proc, lambda: (tmp_path / f"saving_{tag}").exists(), f"checkpoint write of epoch {target}", tmp_path, tag)
            point = f"half-way through writing the epoch-{target} checkpoint"
        assert proc.poll() is None, f"{tag}: the run ended before it was killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        partial = sorted(p.name for p in out.glob(".*.tmp"))
        if trial == 2:
            assert partial, "no half-written temporary file was left by the kill during the write"
            for name in partial:  # what the kill left is never a loadable checkpoint
                with pytest.raises(CheckpointError, match="truncated|corrupt"):
                    load_checkpoint(out / name)
            assert last_epoch() == target - 1  # the last *complete* checkpoint
        trials.append({"trial": trial + 1, "killed": point, "last_complete_checkpoint_epoch": last_epoch(), "partial_files_left": partial})

    # resume to the end, then the same run without interruption
    proc = _launch(wrapper, out, tmp_path, "final")
    assert proc.wait(timeout=300) == 0, (tmp_path / "stderr_final.txt").read_text()[-2000:]
    assert not list(out.glob(".*.tmp")), "the resumed run did not remove the half-written files"
    straight = tmp_path / "straight"
    proc = _launch(wrapper, straight, tmp_path, "straight")
    assert proc.wait(timeout=300) == 0, (tmp_path / "stderr_straight.txt").read_text()[-2000:]
    resumed, expected = load_checkpoint(out / "last.pt", kind="srnn"), load_checkpoint(straight / "last.pt", kind="srnn")
    for key in ("epoch", "global_step", "model", "guide", "optim", "best_valid", "best_epoch"):
        assert_same(resumed[key], expected[key], key)
    assert resumed["epoch"] == KILL_EPOCHS
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["event"] == "epoch"] == list(range(1, KILL_EPOCHS + 1))
    NOTES["kill_and_resume"].append({"trials": trials, "final_epoch": resumed["epoch"], "identical_to_uninterrupted_run": True})
    for t in trials:
        record("kill and resume", "srnn", "pyro-seq train", f"trial {t['trial']}: killed {t['killed']}", True)


