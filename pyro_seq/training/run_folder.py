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

__all__ = ["LOCK_FILE", "RUN_FILES", "RunFolderError", "RunFolderLock", "claim_run_folder", "config_changes"]

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
        handle.seek(0)
        handle.truncate()
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({command}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
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
