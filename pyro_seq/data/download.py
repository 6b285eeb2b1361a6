# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Locating, downloading and verifying data files.

Every data file that ``pyro_seq`` reads lives under a *data root*, chosen by
:func:`resolve_data_root`:

1. the ``data_root`` argument, if given;
2. else the environment variable ``PYRO_SEQ_DATA``;
3. else ``$XDG_CACHE_HOME/pyro_seq`` or, without ``XDG_CACHE_HOME``,
   ``~/.cache/pyro_seq``.

The layout under a root mirrors the project's ``shared/data`` folder, e.g.
``<root>/polyphonic_music/tcn_mat/JSB_Chorales.mat``.

:func:`fetch` returns the path of a file under the root after checking its
sha256. A missing file is downloaded into a temporary file in the target
folder, checked *before anything parses it*, and only then moved into place
with :func:`os.replace`; on any failure the temporary file is removed, so no
partial file is ever left behind. Files that already exist are never deleted
or overwritten: a checksum mismatch raises :class:`DataIntegrityError`.

The network opener is injectable (the ``urlopen`` argument of :func:`fetch`, or
the module attribute :data:`URLOPEN`), so tests never touch the network.
"""

import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

__all__ = [
    "DataError",
    "DataIntegrityError",
    "DataUnavailableError",
    "DownloadIntegrityError",
    "atomic_savez",
    "default_cache_dir",
    "fetch",
    "resolve_data_root",
    "sha256sum",
]

logger = logging.getLogger(__name__)

#: Environment variable that overrides the default data root.
ENV_VAR = "PYRO_SEQ_DATA"

#: Opener used by :func:`fetch` when none is passed; replace it (e.g. in tests)
#: with any callable ``(url, timeout=...) -> response`` whose response is a
#: context manager with a ``read(n)`` method.
URLOPEN = urllib.request.urlopen

_CHUNK = 1 << 16


class DataError(RuntimeError):
    """Base class of the data errors raised by :mod:`pyro_seq.data`."""


class DataUnavailableError(DataError):
    """
    A required data file is missing and could not be downloaded (offline,
    download disabled, server error, bad download). The message names the
    file, its expected sha256, the URL and the exact path where a copy can be
    placed by hand.
    """


class DataIntegrityError(DataError):
    """
    A data file exists but is not the expected file (sha256 mismatch or
    unreadable contents). The message names the file, the expected and actual
    checksums and where to put a good copy.
    """


class DownloadIntegrityError(DataUnavailableError, DataIntegrityError):
    """A downloaded file did not match its sha256; nothing was kept."""


def default_cache_dir():
    """
    The default data root: ``$XDG_CACHE_HOME/pyro_seq`` if ``XDG_CACHE_HOME``
    is set and non-empty, else ``~/.cache/pyro_seq``.

    :rtype: pathlib.Path
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pyro_seq"


def _resolve_with_origin(data_root=None):
    if data_root is not None:
        if isinstance(data_root, str) and not data_root.strip():
            raise ValueError("data_root must be a non-empty path, got an empty string")
        return Path(data_root).expanduser(), "argument"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), "env"
    return default_cache_dir(), "cache"


def resolve_data_root(data_root=None):
    """
    Resolve the data root: the argument, else ``$PYRO_SEQ_DATA``, else
    ``$XDG_CACHE_HOME/pyro_seq`` (or ``~/.cache/pyro_seq``). The folder is not
    created here.

    :param data_root: an explicit root folder, or ``None``.
    :type data_root: str or os.PathLike or None
    :rtype: pathlib.Path
    """
    return _resolve_with_origin(data_root)[0]


def sha256sum(path):
    """
    Hex sha256 digest of a file, read in chunks.

    :param path: the file.
    :rtype: str
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask_mode():
    """Permissions of a newly created regular file (0o666 minus the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_savez(path, arrays):
    """
    Write ``arrays`` (name -> array) as a compressed ``.npz`` at ``path`` atomically: into a
    temporary file in the same folder, flushed to disk, then moved into place with
    :func:`os.replace`, so a killed writer never leaves a partial file under ``path``.
    """
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _check_relpath(relpath):
    rel = PurePosixPath(str(relpath).replace(os.sep, "/"))
    if not rel.parts or rel.is_absolute() or ".." in rel.parts or str(rel) in ("", "."):
        raise ValueError(f"relpath must be a relative path inside the data root, got {relpath!r}")
    return Path(*rel.parts)


def _origin_words(origin):
    return {
        "argument": "the data_root argument",
        "env": f"the environment variable {ENV_VAR}",
        "cache": f"the default cache folder (set {ENV_VAR} or pass data_root to use another)",
    }[origin]


def fetch(relpath, sha256, url=None, data_root=None, download=True, *, urlopen=None, timeout=60.0):
    """
    Return the verified path of ``relpath`` under the data root, downloading it
    from ``url`` if it is missing.

    An existing file is checked against ``sha256`` and never modified; a
    mismatch raises :class:`DataIntegrityError`. A missing file is streamed into
    a temporary file next to its target, its sha256 is checked, and only then
    is it moved into place with :func:`os.replace`. On any failure the
    temporary file is removed and :class:`DataUnavailableError` is raised (a
    :class:`DownloadIntegrityError` if the bytes did not match).

    :param str relpath: path relative to the data root, with ``/`` separators,
        e.g. ``"polyphonic_music/tcn_mat/JSB_Chorales.mat"``.
    :param str sha256: expected hex sha256 of the file.
    :param str url: where to download the file from; ``None`` means the file can
        only be provided by hand.
    :param data_root: see :func:`resolve_data_root`.
    :param bool download: if ``False``, never touch the network.
    :param urlopen: opener ``(url, timeout=...) -> response`` used instead of
        :data:`URLOPEN` (for tests and custom transports).
    :param float timeout: socket timeout in seconds.
    :returns: the absolute path of the verified file.
    :rtype: pathlib.Path
    :raises DataIntegrityError: the existing file has the wrong checksum.
    :raises DataUnavailableError: the file is missing and could not be obtained.
    """
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError(f"sha256 must be a 64-character hex string, got {sha256!r}")
    sha256 = sha256.lower()
    rel = _check_relpath(relpath)
    root, origin = _resolve_with_origin(data_root)
    target = (root / rel).absolute()

    if target.exists():
        if not target.is_file():
            raise DataIntegrityError(
                f"Expected a data file at {target}, but it is not a regular file."
            )
        actual = sha256sum(target)
        if actual != sha256:
            if origin == "cache":
                advice = (
                    f"This file is in pyro_seq's cache folder ({root}), where pyro_seq downloads "
                    "files; it may be a corrupted or outdated download. Delete it to have it "
                    f"downloaded again{f' from {url}' if url else ''}, "
                    "or replace it with a good copy."
                )
            else:
                advice = (
                    f"The data root {root} was chosen by {_origin_words(origin)}, so pyro_seq "
                    "leaves this file alone; replace it with a good copy"
                    f"{f' (e.g. from {url})' if url else ''}, or point the data root elsewhere."
                )
            raise DataIntegrityError(
                f"Checksum mismatch for data file {rel.as_posix()} at {target}:\n"
                f"  expected sha256 {sha256}\n"
                f"  actual   sha256 {actual}\n"
                f"A good copy must be placed at {target}. {advice}"
            )
        return target

    manual = (
        f"To provide it by hand, put a copy with sha256 {sha256} at exactly {target} "
        f"(data root {root}, chosen by {_origin_words(origin)})."
    )
    if url is None or not download:
        why = (
            "downloading is disabled (download=False)"
            if url is not None
            else "it has no download URL"
        )
        raise DataUnavailableError(
            f"Data file {rel.as_posix()} is missing and {why}.\n"
            f"  expected sha256 {sha256}\n"
            f"  URL             {url}\n"
            f"{manual}"
        )

    opener = urlopen if urlopen is not None else URLOPEN
    tmp_path = None
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".part"
            )
            tmp_path = Path(tmp_name)
        except OSError as e:
            raise DataUnavailableError(
                f"Cannot download data file {rel.as_posix()}: the folder {target.parent} is not "
                f"writable ({e}).\n  expected sha256 {sha256}\n  URL             {url}\n{manual}"
            ) from e
        logger.info("Downloading %s to %s", url, target)
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as resp:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except Exception as e:  # URLError, HTTPError, timeouts, IncompleteRead, ...
            raise DataUnavailableError(
                f"Could not download data file {rel.as_posix()} from {url}: {e}\n"
                f"  expected sha256 {sha256}\n"
                f"  URL             {url}\n"
                f"{manual}"
            ) from e
        actual = h.hexdigest()
        if actual != sha256:
            raise DownloadIntegrityError(
                f"Downloaded data file {rel.as_posix()} from {url} has the wrong checksum; "
                f"the download ({size} bytes) was discarded.\n"
                f"  expected sha256 {sha256}\n"
                f"  actual   sha256 {actual}\n"
                f"  URL             {url}\n"
                f"{manual}"
            )
        os.chmod(tmp_path, _umask_mode())  # mkstemp creates files with mode 0600
        os.replace(tmp_path, target)
        tmp_path = None
        return target
    finally:
        if tmp_path is not None:
            try:
                tmp_path.unlink()
            except FileNotFoundError:
                pass
