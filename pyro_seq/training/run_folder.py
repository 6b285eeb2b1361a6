"""
Run folders that cannot be clobbered or mixed: an advisory lock held for the whole run, a refusal
to start a fresh run over an earlier one (unless asked to replace it), and a check that a
``resume`` continues the run it finds rather than a different one.
"""

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from pyro_seq.training.trainer import BEST_CHECKPOINT, LAST_CHECKPOINT, LOG_FILE

__all__ = [
    "LOCK_FILE",
    "RUN_FILES",
    "RunFolderError",
    "RunFolderLock",
    "claim_run_folder",
    "config_changes",
    "make_run_folder",
    "resume_command",
    "write_text_atomic",
]

#: The lock file inside a run folder (it stays; the lock is the ``flock`` on it, released when the
#: process ends, however it ends).
LOCK_FILE = ".lock"
#: The files a training run writes into its folder.
RUN_FILES = ("config.json", LOG_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT, "test.json")


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (busy, holding another run, not writable)."""


class RunFolderLock:
    """
    An exclusive advisory lock (``fcntl.flock``) on ``folder/.lock`` for the life of a run. A second
    process that tries to take it gets a :class:`RunFolderError` naming the holder (process id,
    host, command and start time, written into the lock file). The operating system drops the lock
    when the holder exits, even when it is killed, so a stale lock never blocks a ``resume``.

    :param folder: the run folder (it must exist).
    """

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_FILE
        self._file = None

    def __enter__(self):
        import fcntl

        try:
            handle = open(self.path, "a+")
        except OSError as e:
            raise RunFolderError(f"cannot write in the run folder {self.path.parent}: {e.strerror}") from e
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(
                f"run folder {self.path.parent} is in use by {holder}; wait for that run to end, or choose another --out"
            ) from None
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({command}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
            handle.flush()
        except OSError as e:  # e.g. a full disk: fail now, before any data is read
            try:
                handle.close()  # flushes again, and fails again
            except OSError:
                pass
            raise RunFolderError(f"cannot write in the run folder {self.path.parent}: {e.strerror or e}") from None
        self._file = handle
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None
        return False


def claim_run_folder(folder, resume: bool, overwrite: bool) -> List[Path]:
    """
    Check that a run may start in ``folder`` (call it while holding :class:`RunFolderLock`).

    * With ``resume`` the folder's run continues (nothing is removed).
    * Without it, a folder that already holds run files is refused, unless ``overwrite``: then
      those files (and only those: :data:`RUN_FILES`) are removed.

    :returns: the files removed.
    :raises RunFolderError: the folder holds a run and neither ``resume`` nor ``overwrite`` was
        given, or both were.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    found = [folder / name for name in RUN_FILES if (folder / name).exists()]
    if resume or not found:
        return []
    if not overwrite:
        names = ", ".join(p.name for p in found)
        raise RunFolderError(
            f"run folder {folder} already holds a run ({names}); continue it with --resume, "
            "replace it with --overwrite, or choose another --out"
        )
    for path in found:
        path.unlink()
    return found


def _flatten(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = json.loads(json.dumps(value))  # tuples and lists compare alike
    return flat


def config_changes(saved: Dict[str, Any], config: Dict[str, Any], sections: Iterable[str]) -> List[Tuple[str, Any, Any]]:
    """
    The entries of ``sections`` of two run configs that differ: ``[(key, saved value, new value)]``
    with dotted keys such as ``"model.z_dim"``; a key missing on one side counts as ``None``.
    """
    old = _flatten({s: saved.get(s) or {} for s in sections})
    new = _flatten({s: config.get(s) or {} for s in sections})
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def describe_changes(changes: List[Tuple[str, Any, Any]], limit: Optional[int] = 4) -> str:
    """``"model.z_dim 4 -> 5, train.lr 0.001 -> 0.002"`` (the first ``limit`` changes)."""
    shown = changes if limit is None else changes[:limit]
    text = ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in shown)
    return text + (f" and {len(changes) - len(shown)} more" if limit is not None and len(changes) > limit else "")


def make_run_folder(folder) -> Path:
    """
    Make the run folder ``folder`` (and its parents) if missing.

    :raises RunFolderError: one line naming the path and the reason: it is a file, a parent is a
        file, the file system is read-only or does not allow new folders there (``/proc``), ...
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {folder}: cannot make the run folder (it is a file); choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"--out {folder}: cannot make the run folder ({e.strerror or e})") from None
    return folder


def write_text_atomic(path, text: str) -> Path:
    """
    Write ``text`` to ``path`` through a temporary file renamed over it: a failed write (a full
    disk) leaves an earlier file intact and no temporary file behind.

    :raises OSError: naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise type(e)(e.errno, e.strerror, str(path)) if e.errno is not None else e from None
    return path


_DROPPED_FLAGS = ("--resume", "--overwrite")


def resume_command(argv: Iterable[str], out, program: str = "pyro-seq") -> str:
    """
    The command line that resumes a run: ``argv`` (the arguments after the program name) without
    ``--resume``, ``--overwrite`` and ``--out DIR``, then ``--resume --out DIR``; quoted for a
    POSIX shell.

    :param argv: the arguments of the interrupted command.
    :param out: the run folder.
    """
    import shlex

    kept, tokens = [], list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _DROPPED_FLAGS:
            i += 1
            continue
        if token == "--out":
            i += 2
            continue
        if token.startswith("--out="):
            i += 1
            continue
        kept.append(token)
        i += 1
    return " ".join(shlex.quote(t) for t in [program, *kept, "--resume", "--out", str(out)])
