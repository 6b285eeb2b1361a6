"""
Run folders cannot be clobbered or mixed: a second run into a folder that holds one is refused
(``--overwrite`` replaces it), a folder in use by a running trainer is refused with the holder
named, and ``--resume`` refuses options that would make it another run while it records the ones
it may change.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import jsb_available, shared_data_root
from reliability_cases import cli_error, record, tiny_srnn_train

from pyro_seq.cli import main
from pyro_seq.training.run_folder import LOCK_FILE, RunFolderError, RunFolderLock, claim_run_folder

DATA_ROOT = shared_data_root()
needs_jsb = pytest.mark.skipif(not jsb_available(), reason=f"JSB Chorales not found under {DATA_ROOT}")
TINY = tiny_srnn_train(DATA_ROOT)


def files_and_times(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != LOCK_FILE}


@needs_jsb
def test_a_second_run_into_a_used_folder_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out), "--epochs", "1"]) == 0
    before = files_and_times(out)
    status, lines = cli_error(TINY + ["--out", str(out), "--epochs", "1", "--lr", "1e-2"], capsys)
    assert status == 1 and len(lines) == 1 and "already holds a run" in lines[0] and "--resume" in lines[0], lines
    assert files_and_times(out) == before  # nothing touched
    record("run folders", "train", "main", "fresh run into a used folder", True)
    assert main(TINY + ["--out", str(out), "--epochs", "1", "--lr", "1e-2", "--overwrite"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["lr"] == 1e-2
    epochs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["event"] == "epoch"] == [1]  # the old log is gone, not appended to
    status, lines = cli_error(TINY + ["--out", str(out), "--resume", "--overwrite"], capsys)
    assert status == 1 and "give one of them" in lines[0]
    record("run folders", "train", "main", "--resume with --overwrite", True)


@needs_jsb
def test_resume_refuses_options_that_shape_the_run_and_records_the_others(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out), "--epochs", "1"]) == 0
    before = files_and_times(out)
    for extra, key in ((["--lr", "5e-3"], "train.lr"), (["--z-dim", "3"], "model.z_dim"), (["--clip-norm", "5"], "train.clip_norm")):
        status, lines = cli_error(TINY + ["--out", str(out), "--epochs", "2", "--resume", *extra], capsys)
        assert status == 1 and len(lines) == 1 and key in lines[0] and "--resume" in lines[0], lines
        record("run folders", "train", "main", f"--resume changing {key}", True)
    assert files_and_times(out) == before
    assert main(TINY + ["--out", str(out), "--epochs", "2", "--resume", "--warmup-steps", "7"]) == 0  # the objective may change
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    changed = [r for r in log if r["event"] == "resume_options"]
    assert changed and ["train.epochs", 1, 2] in changed[0]["changes"] and ["loss.warmup_steps", 1000, 7] in changed[0]["changes"]
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["loss"]["warmup_steps"] == 7  # recorded truthfully


HOLD = """
import fcntl, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
handle.seek(0); handle.truncate(); handle.write("pid 4242 on testhost (pyro-seq train srnn, since now)"); handle.flush()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_folder_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--resume"]):
            status, lines = cli_error(TINY + ["--out", str(out), "--epochs", "1", *extra], capsys)
            assert status == 1 and len(lines) == 1 and "in use by pid 4242 on testhost" in lines[0], lines
            record("run folders", "train", "main", f"second trainer on a busy folder {' '.join(extra)}".strip(), True)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    with RunFolderLock(out):  # the killed holder's lock is gone with it
        pass


def test_lock_is_exclusive_within_a_process_too(tmp_path):
    with RunFolderLock(tmp_path):
        with pytest.raises(RunFolderError, match=f"in use by pid {os.getpid()}"):
            with RunFolderLock(tmp_path):
                pass


def test_claim_removes_only_the_run_files(tmp_path):
    for name in ("config.json", "log.jsonl", "last.pt", "notes.txt"):
        (tmp_path / name).write_text("x")
    with pytest.raises(RunFolderError, match="already holds a run"):
        claim_run_folder(tmp_path, resume=False, overwrite=False)
    removed = claim_run_folder(tmp_path, resume=False, overwrite=True)
    assert sorted(p.name for p in removed) == ["config.json", "last.pt", "log.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert claim_run_folder(tmp_path, resume=False, overwrite=False) == []  # empty of runs: fine


def test_out_that_is_a_file_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "a_file"
    out.write_text("not a folder")
    status, lines = cli_error(TINY + ["--out", str(out), "--epochs", "1"], capsys)
    assert status == 1 and len(lines) == 1 and "cannot make the run folder" in lines[0], lines
    assert out.read_text() == "not a folder"
    record("run folders", "train", "main", "--out is a file", True)
