"""
Atomic checkpoint writing and safe checkpoint reading.

A checkpoint is a plain nested ``dict`` holding only tensors, dicts, lists, tuples, ints, floats,
bools, strings and ``None``, so that it loads with ``torch.load(weights_only=True)`` (no arbitrary
code runs when a checkpoint is opened). Random number generator states of Python, NumPy and torch
are converted to such values by :func:`get_rng_state` and restored by :func:`set_rng_state`.

Every checkpoint written by :func:`save_checkpoint` through :class:`~pyro_seq.training.trainer.Trainer`
carries::

    {
        "pyro_seq_checkpoint": True,      # marker: this is one of ours
        "format_version": FORMAT_VERSION,
        "kind": "srnn",                   # model kind (a key of pyro_seq.recipes.RECIPES)
        "config": {...},                  # JSON-able config the model is rebuilt from
        ...                               # state dicts, optimiser state, RNG states, counters
    }
"""

import contextlib
import math
import os
import pickle
import random
import signal
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "check_config",
    "check_finite_weights",
    "remove_stale_temporaries",
    "save_checkpoint",
    "hold_signals",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
]

#: Version of the checkpoint layout; bump when the layout changes incompatibly.
FORMAT_VERSION = 1
_MARKER = "pyro_seq_checkpoint"

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """
    Raised for a checkpoint that is missing, truncated, corrupt, not a ``pyro_seq`` checkpoint,
    of an unsupported format version, or of another model kind than the one expected.
    """


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------

_SCALARS = (bool, int, float, str, type(None))


def _check_safe(obj: Any, where: str = "state") -> None:
    """
    Raise :class:`TypeError` naming the first value that ``torch.load(weights_only=True)`` could
    not read back, so that an unloadable checkpoint is never written.
    """
    # exact types: subclasses (numpy.float64, torch.torch_version.TorchVersion, enums) pickle as
    # globals that weights_only loading refuses
    if type(obj) in _SCALARS or isinstance(obj, (torch.Tensor, torch.Size, torch.dtype)):
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(f"checkpoint key {where}[{key!r}] must be str or int, got {type(key).__name__}")
            _check_safe(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_safe(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint value {where} has type {type(obj).__module__}.{type(obj).__name__}, which "
        "torch.load(weights_only=True) cannot read; convert it to tensors/dicts/lists/numbers/str"
    )


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable. Not possible on every platform (e.g. Windows): best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> Path:
    """
    Write ``state`` to ``path`` atomically: the data goes to a temporary file in the same
    directory, which is flushed, fsync'ed and then renamed over ``path`` with :func:`os.replace`
    (the directory is fsync'ed too). A failure at any point leaves a previous file at ``path``
    intact and removes the temporary file. SIGINT and SIGTERM are held back while the file is
    written (in the main thread), so a Ctrl-C lands after the write, never in the middle of it.

    If ``state`` lacks the ``"pyro_seq_checkpoint"`` marker or ``"format_version"``, they are added
    (to a shallow copy).

    :param path: destination file; its parent directory is created if missing.
    :param dict state: checkpoint contents; only tensors, dicts, lists, tuples, ints, floats, bools,
        strings and ``None`` are allowed (checked before anything is written).
    :returns: the destination path.
    :rtype: pathlib.Path
    :raises TypeError: if ``state`` holds a value that could not be loaded with
        ``weights_only=True``.
    :raises OSError: if the file cannot be written (e.g. ``ENOSPC`` on a full disk, ``EROFS``);
        the error names ``path``, whatever step failed.
    """
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    state = dict(state)
    state.setdefault(_MARKER, True)
    state.setdefault("format_version", FORMAT_VERSION)
    _check_safe(state)

    path = Path(path)
    with hold_signals():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as e:
            raise _named(e, path) from None
        writer = None
        try:
            with os.fdopen(fd, "wb") as f:
                writer = _RecordingWriter(f)
                torch.save(state, writer)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
        except BaseException as e:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            # torch.save reports a failed write (a full disk) as an opaque RuntimeError
            error = writer.error if writer is not None and writer.error is not None else e
            if isinstance(error, OSError):
                raise _named(error, path) from None
            raise
        _fsync_dir(path.parent)
    return path


class _RecordingWriter:
    """A file object for :func:`torch.save` that keeps the first :class:`OSError` of a write."""

    def __init__(self, f):
        self._f = f
        self.error: Optional[OSError] = None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        return self._f.flush()


def _named(error: OSError, path: Path) -> OSError:
    """``error`` as an :class:`OSError` of the same kind naming ``path`` (the file being written)."""
    if error.errno is None:
        return error
    return type(error)(error.errno, error.strerror, str(path))


@contextlib.contextmanager
def hold_signals():
    """
    Hold SIGINT and SIGTERM back (they are delivered when the block ends), so that a Ctrl-C
    during a checkpoint write does not cut it short: the write completes or fails on its own.
    Only in the main thread of a platform with :func:`signal.pthread_sigmask`; blocks nest (the
    signals wait for the outermost one to end).

    Example::

        with hold_signals():
            save_checkpoint(out / "last.pt", state)
            saved_epoch = state["epoch"]  # a signal handler that runs next sees it
    """
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def remove_stale_temporaries(path: PathLike) -> List[Path]:
    """
    Delete the temporary files (``.NAME.*.tmp`` beside ``path``) that a process killed while
    :func:`save_checkpoint` was writing ``path`` left behind; they are never loaded, only
    removed. Call it when no other process writes ``path`` (e.g. when a run resumes).

    :returns: the files removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def _short(error: BaseException) -> str:
    """The informative line of a (possibly very long) torch.load error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error"):
            return line
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def load_checkpoint(
    path: PathLike,
    map_location: Optional[Union[str, torch.device]] = "cpu",
    kind: Optional[str] = None,
    check_finite: bool = True,
) -> Dict[str, Any]:
    """
    Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    :param path: checkpoint file.
    :param map_location: passed to :func:`torch.load` (default ``"cpu"``).
    :param str kind: if given, the model kind the checkpoint must hold (e.g. ``"srnn"``).
    :param bool check_finite: refuse NaN or infinite values in the ``"model"`` and ``"guide"``
        state dicts (see :func:`check_finite_weights`).
    :returns: the checkpoint dict.
    :raises CheckpointError: if the file is missing, truncated or corrupt, is not a ``pyro_seq``
        checkpoint, has an unsupported format version, holds another model kind, or (with
        ``check_finite``) holds non-finite weights.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty (truncated write?): {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {path} could not be loaded with weights_only=True: it is truncated or corrupt, "
            f"not a pyro_seq checkpoint, or holds objects other than tensors, containers, numbers and "
            f"strings ({_short(e)})"
        ) from e
    except Exception as e:  # torch.load fails in many ways on damaged files (RuntimeError, EOFError, IndexError, ...)
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt and cannot be read ({_short(e)})") from e
    if not isinstance(state, dict) or not state.get(_MARKER, False):
        raise CheckpointError(f"{path} is a torch file but not a pyro_seq checkpoint")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this pyro_seq reads versions 1..{FORMAT_VERSION}"
        )
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(
            f"checkpoint {path} holds a model of kind {state.get('kind')!r}, expected {kind!r}"
        )
    if check_finite:
        check_finite_weights(state, path)
    return state


def check_finite_weights(state: Dict[str, Any], path: PathLike = "state", sections=("model", "guide")) -> None:
    """
    Refuse a checkpoint whose ``sections`` (state dicts) hold NaN or infinite floating-point
    values, naming the first such tensor and how many bad values it holds.

    :raises CheckpointError: e.g. ``checkpoint run/last.pt: model parameter 'emitter.0.weight'
        has 12 NaN values``.
    """
    for section in sections:
        tensors = state.get(section)
        if not isinstance(tensors, dict):
            continue
        for name, t in tensors.items():
            if not torch.is_tensor(t) or not (t.is_floating_point() or t.is_complex()):
                continue
            finite = torch.isfinite(t)
            if bool(finite.all()):
                continue
            nan = int(torch.isnan(t).sum())
            inf = int((~finite).sum()) - nan
            counts = " and ".join(f"{n} {what} value{'s' if n != 1 else ''}" for n, what in ((nan, "NaN"), (inf, "infinite")) if n)
            raise CheckpointError(
                f"checkpoint {path}: {section} parameter {name!r} has {counts} (of {t.numel()}); "
                "a model cannot be evaluated or trained on from it"
            )


#: Value kinds of :func:`check_config` schemas: name -> (test, description).
_CONFIG_KINDS = {
    "int": (lambda v: type(v) is int, "an int"),
    "real": (lambda v: type(v) in (int, float) and math.isfinite(v), "a finite number"),
    "bool": (lambda v: type(v) is bool, "a bool (true or false)"),
    "str": (lambda v: type(v) is str, "a string"),
    "dict": (lambda v: type(v) in (dict, OrderedDict), "a dict"),
    "ints": (lambda v: type(v) in (list, tuple) and len(v) > 0 and all(type(i) is int for i in v), "a non-empty list of ints"),
}


def check_config(config: Any, schema: Dict[str, str], path: PathLike = "config") -> None:
    """
    Check a checkpoint's run config against ``schema`` before a model is rebuilt from it, so that a
    damaged or hand-edited config is one line naming the key rather than a ``KeyError`` or
    ``TypeError`` from inside a constructor.

    :param dict schema: dotted key (``"model.z_dim"``) -> value kind: ``"int"``, ``"real"``,
        ``"bool"``, ``"str"``, ``"dict"`` or ``"ints"``; ``"?"`` before the kind makes the key
        optional, ``"|None"`` after it allows ``None`` (e.g. ``"?int|None"``). The parents of a key
        must be dicts.
    :raises CheckpointError: e.g. ``checkpoint X: config key 'model.z_dim' is missing`` or
        ``... config key 'model.z_dim' should be an int, got 'abc'``.
    """
    if type(config) not in (dict, OrderedDict):
        raise CheckpointError(f"checkpoint {path}: config should be a dict, got {type(config).__name__}")
    for key, spec in schema.items():
        optional, spec = spec.startswith("?"), spec.lstrip("?")
        kind, _, none = spec.partition("|")
        test, wanted = _CONFIG_KINDS[kind]
        node, parts = config, key.split(".")
        for i, part in enumerate(parts):
            if type(node) not in (dict, OrderedDict):
                parent = ".".join(parts[:i])
                raise CheckpointError(f"checkpoint {path}: config key {parent!r} should be a dict, got {node!r:.80}")
            if part not in node:
                if optional:
                    break
                raise CheckpointError(f"checkpoint {path}: config key {key!r} is missing")
            node = node[part]
        else:
            if node is None and none:
                continue
            if not test(node):
                wanted += " or null" if none else ""
                raise CheckpointError(f"checkpoint {path}: config key {key!r} should be {wanted}, got {node!r:.80}")


# --------------------------------------------------------------------------------------------
# RNG states as weights_only-safe values
# --------------------------------------------------------------------------------------------


def get_rng_state() -> Dict[str, Any]:
    """
    Capture the Python, NumPy, torch (and CUDA, where available) random number generator states
    as tensors, ints, floats and strings.

    :rtype: dict
    """
    version, py_state, gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state = {
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),  # [625]
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),  # [624]
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),  # uint8 [N]
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """
    Restore random number generator states captured by :func:`get_rng_state`.

    :param dict state: as returned by :func:`get_rng_state` (possibly after a save/load).
    """
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].cpu().numpy().astype(np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu().to(torch.uint8) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
