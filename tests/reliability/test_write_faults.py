"""
A run folder that cannot be written: ``--out`` under a file or under ``/proc``, on a read-only file
system, not writable, on a full disk (at the start, and mid-run: a real 1 MB tmpfs filled while the
run goes). Each is one line that names the path and what was kept, exit status 1, no traceback, no
half-written checkpoint; where it can be known up front, before any data is read. And a damaged
``log.jsonl`` on ``--resume``: a last line cut short by a kill is dropped; any other line that is
not a JSON record is one clear line and nothing changes.

The mounts need root (``mount -t tmpfs``); the tests that use them skip, saying so, without it.
"""

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from conftest import REPO_ROOT, jsb_available, shared_data_root
from reliability_cases import cli_error, record, tiny_srnn_train

from pyro_seq.cli import main
from pyro_seq.training.checkpoint import load_checkpoint
from pyro_seq.training.run_folder import LOCK_FILE

DATA_ROOT = shared_data_root()
pytestmark = pytest.mark.skipif(not jsb_available(), reason=f"JSB Chorales not found under {DATA_ROOT}")
TINY = tiny_srnn_train(DATA_ROOT)
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def refuse_data(monkeypatch):
    """From now on reading the data fails the test: the fault must be found before."""
    import pyro_seq.data

    def refuse(*args, **kwargs):
        raise AssertionError("the data was read although the run folder cannot be written")

    monkeypatch.setattr(pyro_seq.data, "load_sequences", refuse)


@pytest.fixture
def no_data_read(monkeypatch):
    """Reading the data fails the test."""
    refuse_data(monkeypatch)


@contextmanager
def tmpfs(path, size="1m"):
    """A real tmpfs of ``size`` mounted at ``path`` (skips without root or when mounting fails)."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path}: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder):
    """Fill the file system of ``folder`` to the last byte with one file; returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def listing(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != LOCK_FILE}


def one_line(status, lines, *parts):
    assert status == 1 and len(lines) == 1, (status, lines)
    assert lines[0].startswith("pyro-seq: error: "), lines
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# --------------------------------------------------------------------------------------------
# a folder that cannot be made or written, found before any data is read
# --------------------------------------------------------------------------------------------


def test_out_under_a_file_or_under_proc_is_one_line(tmp_path, capsys, no_data_read):
    afile = tmp_path / "a_file"
    afile.write_text("not a folder")
    for kind, out, reason in (
        ("--out under a file", afile / "run", "Not a directory"),
        ("--out under /proc", "/proc/pyro_seq_run", "No such file or directory"),
    ):
        status, lines = cli_error(TINY + ["--out", str(out), "--epochs", "1"], capsys)
        one_line(status, lines, str(out), "cannot make the run folder", reason)
        record("write faults", "train", "main", kind, True)
    assert afile.read_text() == "not a folder"


def test_read_only_file_system(tmp_path, capsys, monkeypatch):
    """A run on a tmpfs remounted read-only: resuming it, or a new run beside it, is one line."""
    with tmpfs(tmp_path / "mnt") as mnt:
        out = mnt / "run"
        assert main(TINY + ["--out", str(out), "--epochs", "1"]) == 0
        before = listing(out)
        done = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount {mnt} read-only: {done.stderr.strip()}")
        refuse_data(monkeypatch)
        status, lines = cli_error(TINY + ["--out", str(out), "--epochs", "2", "--resume"], capsys)
        one_line(status, lines, f"cannot write in the run folder {out}", "Read-only file system")
        record("write faults", "train", "main", "--resume on a read-only file system", True)
        status, lines = cli_error(TINY + ["--out", str(mnt / "new"), "--epochs", "1"], capsys)
        one_line(status, lines, str(mnt / "new"), "cannot make the run folder", "Read-only file system")
        record("write faults", "train", "main", "new --out on a read-only file system", True)
        assert listing(out) == before


def _cli(argv, env=None, prefix=()):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([*prefix, sys.executable, "-m", "pyro_seq", "--log-level", "WARNING", *argv], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_folder_not_writable(tmp_path, capsys):
    """
    A folder without write permission (mode 555): as root, the run goes without the capability
    that lets root write anywhere (``setpriv``), so the permission bits apply.
    """
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "run").mkdir()
    os.chmod(locked / "run", 0o555)
    os.chmod(locked, 0o555)
    prefix = ()
    if ROOT:
        if subprocess.run(["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override", "true"], capture_output=True).returncode:
            pytest.skip("running as root and setpriv cannot drop CAP_DAC_OVERRIDE: permission bits would not apply")
        prefix = ("setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override")
    try:
        for kind, out, expected in (
            ("--out not writable", locked / "run", f"cannot write in the run folder {locked / 'run'}: Permission denied"),
            ("--out in a folder not writable", locked / "new", "cannot make the run folder (Permission denied)"),
        ):
            done = _cli(TINY + ["--out", str(out), "--epochs", "1"], prefix=prefix)
            lines = [line for line in done.stderr.splitlines() if line.startswith("pyro-seq")]
            assert "Traceback" not in done.stderr, done.stderr
            one_line(done.returncode, lines, str(out), expected)
            assert "data " not in done.stderr  # no data was read (its INFO line is not even due)
            record("write faults", "train", "pyro-seq train", kind, True)
        assert sorted(p.name for p in (locked / "run").iterdir()) == []
    finally:
        os.chmod(locked, 0o755)
        os.chmod(locked / "run", 0o755)


def test_disk_full_at_the_start_is_found_before_the_data_is_read(tmp_path, capsys, no_data_read):
    with tmpfs(tmp_path / "mnt") as mnt:
        filler = fill(mnt)
        status, lines = cli_error(TINY + ["--out", str(mnt / "run"), "--epochs", "1"], capsys)
        one_line(status, lines, f"cannot write in the run folder {mnt / 'run'}", "No space left on device")
        filler.unlink()
        record("write faults", "train", "main", "full disk at the start", True)


# --------------------------------------------------------------------------------------------
# the disk fills up while the run goes
# --------------------------------------------------------------------------------------------

def test_disk_full_mid_run_keeps_the_last_checkpoint_and_resumes(tmp_path):
    """
    A real 1 MB tmpfs, filled once the first checkpoint is written: the run stops at its next
    write with one line naming the file and the intact ``last.pt``, leaves no temporary file, and
    resumes to the end once there is room again.
    """
    with tmpfs(tmp_path / "mnt", size="1m") as mnt:
        out = mnt / "run"
        argv = TINY + ["--out", str(out), "--epochs", "200", "--log-every", "1"]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen([sys.executable, "-m", "pyro_seq", "--log-level", "WARNING", *argv], env=env, cwd=REPO_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.time() + 120
            while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            assert (out / "last.pt").exists() and proc.poll() is None, "the run wrote no checkpoint"
            filler = fill(mnt)
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = [line for line in stderr.splitlines() if line.startswith("pyro-seq")]
        assert "Traceback" not in stderr, stderr
        line = one_line(proc.returncode, lines, "no space left on device writing ", str(out), "is intact", "resume with: pyro-seq ")
        written = line.split("writing ", 1)[1].split(";", 1)[0]
        assert written in {str(out / name) for name in ("last.pt", "best.pt", "log.jsonl")}, line
        assert not list(out.glob(".*.tmp")), sorted(p.name for p in out.iterdir())  # no half-written checkpoint
        epoch = load_checkpoint(out / "last.pt", kind="srnn")["epoch"]
        assert f"last.pt (epoch {epoch}) is intact" in line, line
        record("write faults", "train", "pyro-seq train", "disk full mid-run", True)
        filler.unlink()
        resume = TINY + ["--out", str(out), "--epochs", str(epoch + 1), "--resume", "--log-every", "1"]
        done = _cli(resume)
        assert done.returncode == 0, done.stderr
        assert load_checkpoint(out / "last.pt", kind="srnn")["epoch"] == epoch + 1
        epochs = [json.loads(r)["epoch"] for r in (out / "log.jsonl").read_text().splitlines() if '"event": "epoch"' in r]
        assert epochs == list(range(1, epoch + 2))
        record("write faults", "train", "pyro-seq train", "disk full mid-run, resumed once there is room", True)


# --------------------------------------------------------------------------------------------
# a damaged log.jsonl on --resume
# --------------------------------------------------------------------------------------------


def test_log_cut_short_by_a_kill_is_tolerated_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out), "--epochs", "1"]) == 0
    with open(out / "log.jsonl", "a") as f:
        f.write('{"event": "step", "epoch": 2, "st')  # a kill in the middle of a line
    assert main(TINY + ["--out", str(out), "--epochs", "2", "--resume"]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]  # all whole again
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2]
    record("run folders", "train", "main", "log.jsonl with a last line cut short, on --resume", True)


@pytest.mark.parametrize(
    "garbage",
    ["this is not json\n", "[1, 2, 3]\n", "\x00\x01\x02 garbage \xff\n"],
    ids=["text", "json_not_a_record", "binary"],
)
def test_log_with_garbage_is_one_line_on_resume_and_nothing_changes(tmp_path, capsys, garbage):
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out), "--epochs", "1"]) == 0
    lines = (out / "log.jsonl").read_text().splitlines(keepends=True)
    damaged = "".join(lines[:1]) + garbage + "".join(lines[1:])
    (out / "log.jsonl").write_bytes(damaged.encode("utf-8"))
    before = listing(out)
    status, err = cli_error(TINY + ["--out", str(out), "--epochs", "2", "--resume"], capsys)
    one_line(status, err, f"{out / 'log.jsonl'} line 2 is not a JSON record", "remove that line")
    assert listing(out) == before
    record("run folders", "train", "main", f"log.jsonl with a garbage line ({garbage[:8]!r}), on --resume", True)
