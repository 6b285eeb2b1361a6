# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Protein sequence data: an amino-acid alphabet, residue encodings, readers for
subcellular localisation (DeepLoc FASTA) and secondary structure (CB513 CSV,
Zhou & Troyanskaya arrays), a cross-validation protocol and padded batches.

**Alphabet.** :data:`AMINO_ACIDS` ``"ACDEFGHIKLMNPQRSTVWY"`` are token ids
0..19. Every other upper-case letter, i.e. ``X`` and the ambiguity or rare
codes ``B`` (D/N), ``Z`` (E/Q), ``J`` (I/L), ``U`` (selenocysteine) and ``O``
(pyrrolysine), is :data:`UNKNOWN` (20); :data:`PAD` (21) fills batches after
each sequence's end. :func:`tokenize` accepts upper-case letters only (no
lower case, gaps ``-`` or stop ``*``). :func:`encoding_matrix` gives the
one-hot and BLOSUM62 encodings ``[22, F]`` of these ids (see there).

**Secondary structure.** :data:`SS8` ``"GHIBESTC"`` is the DSSP 8-state
alphabet in the order of NetSurfP-2.0 (3-10 helix, alpha helix, pi helix,
bridge, strand, bend, turn, coil; ``C`` is DSSP's blank / loop, called ``L``
by Zhou & Troyanskaya). :data:`SS3` ``"HEC"``. :func:`q8_to_q3` applies the
standard merge H, G, I -> H; E, B -> E; T, S, C -> C (NetSurfP-2.0's
``HHHEECCC``).

**DeepLoc** (Almagro Armenteros et al., Bioinformatics 2017):
:func:`load_deeploc` reads the FASTA files of github.com/HannesStark/protein-localization
(commit ``7b0be1e6``; Stärk et al., Bioinformatics Advances 2021) under
``protein_localization/`` in the data root, verified by sha256 before
parsing (:data:`DEEPLOC_FILES`): ``"test"`` (the DeepLoc 1.0 test split,
2,768 proteins), ``"valid"`` (the Light Attention authors' validation split
drawn from the DeepLoc training set, 1,678 proteins of which 23 are labelled
``Cytoplasm-Nucleus``) and ``"hard"`` (setHARD, 490 proteins). The training
split is not among them. Each header is ``>ACCESSION Location-MembraneCode
[test|new_test_set]``; the location is one of the ten :data:`LOCATIONS` and
the membrane code ``M`` (membrane), ``S`` (soluble) or ``U`` (unknown).

Multi-location labels such as ``Cytoplasm-Nucleus`` (two of the ten
locations joined by ``-``) are handled by ``multi_location``: ``"drop"`` (the
default; the number dropped is logged at INFO level, so ``"valid"`` gives
1,655 proteins), ``"error"`` or ``"keep"`` (the record keeps the label
string; :func:`protein_batches` gives it the class ``-1``, "no single class").

**Length cap** (:func:`cap_length`): a sequence longer than ``max_length``
(default 1000) keeps its first ``max_length - max_length // 2`` and its last
``max_length // 2`` residues (500 + 500), so both the N-terminal signal and
the C-terminal region are seen. This is the policy described for DeepLoc;
the readers never cap, :func:`protein_batches` caps only when asked.

**CB513** (Cuff & Barton 1999) in the NetSurfP-2.0 release (Klausen et al.,
Proteins 2019): :func:`load_cb513` reads ``protein_ss/CB513.csv`` (from
github.com/shahid-43/protein_secondary_structure_prediction, commit
``f86c6fa0``, verified by sha256 :data:`CB513_FILE`): 511 chains, 144,011
residues, 83,991 of them in the evaluation mask. Its ``disorder`` column
follows NetSurfP-2.0 (1 = ordered, 0 = disordered); the records store the
inverse, ``disorder = True`` on disordered residues (3,525 of them).

**Zhou & Troyanskaya** (ICML 2014) ``cullpdb+profile_*.npy(.gz)`` and
``cb513+profile_split1.npy(.gz)`` are not distributed here; users who have
them read them with :func:`load_zhou_troyanskaya` (``allow_pickle=False``).

**Cross-validation** (:func:`sequence_folds`) keeps identical sequences in
one fold; it does not separate homologues.

**Batches** (:func:`protein_batches`) are :class:`ProteinBatch` objects of
length-sorted proteins, so padding stays small, shuffled deterministically by
``(seed, epoch)``::

    records = load_deeploc("test")
    for batch in protein_batches(records, batch_size=32, shuffle=True, epoch=epoch,
                                 max_length=1000):
        logits = model(batch.tokens, batch.mask)  # [B, L] -> [B, 10]
        loss = F.cross_entropy(logits, batch.y, ignore_index=-1)
"""

import csv
import gzip
import logging
import re
from collections import Counter
from typing import NamedTuple, Optional

import numpy as np
import torch

from pyro_seq.data.batching import check_int, batch_order
from pyro_seq.data.download import DataIntegrityError
from pyro_seq.data.images import ImageFile, fetch_verified

__all__ = [
    "AMINO_ACIDS",
    "BLOSUM62",
    "BLOSUM62_SCALE",
    "CB513_FILE",
    "DEEPLOC_FILES",
    "DEEPLOC_SPLITS",
    "ENCODINGS",
    "LOCATIONS",
    "MEMBRANE_CODES",
    "PAD",
    "SS3",
    "SS8",
    "UNKNOWN",
    "VOCAB_SIZE",
    "ZT_FEATURES",
    "ZT_LENGTH",
    "ZT_PROFILE_ORDER",
    "ZT_Q8_ORDER",
    "ZT_RESIDUE_ORDER",
    "ProteinBatch",
    "ProteinFormatError",
    "ProteinRecord",
    "SecondaryStructureRecord",
    "ZhouTroyanskayaData",
    "cap_length",
    "encode_structure",
    "encoding_matrix",
    "load_cb513",
    "load_deeploc",
    "load_zhou_troyanskaya",
    "protein_batches",
    "q8_to_q3",
    "read_cb513_csv",
    "read_deeploc_fasta",
    "sequence_folds",
    "tokenize",
]

logger = logging.getLogger(__name__)


class ProteinFormatError(DataIntegrityError, ValueError):
    """
    A protein data file is malformed. The message names the file and, for the
    text formats, the line. It is both a :class:`~pyro_seq.data.DataIntegrityError`
    and a :class:`ValueError`.
    """


# ---------------------------------------------------------------------------
# alphabet and encodings

#: The 20 standard amino acids; token ids 0..19 in this order.
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: Token id of ``X`` and of every other upper-case letter (B, Z, J, U, O, ...).
UNKNOWN = 20
#: Token id of padding after a sequence's end (never produced by :func:`tokenize`).
PAD = 21
#: Number of token ids (20 amino acids, :data:`UNKNOWN`, :data:`PAD`).
VOCAB_SIZE = 22

_LOOKUP = np.full(256, -1, dtype=np.int64)
for _c in range(ord("A"), ord("Z") + 1):
    _LOOKUP[_c] = UNKNOWN
for _i, _c in enumerate(AMINO_ACIDS):
    _LOOKUP[ord(_c)] = _i
_NOT_UPPER = re.compile(r"[^A-Z]")


def _prefix(where):
    return f"{where}: " if where else ""


def tokenize(sequence, where=None):
    """
    Token ids of a protein sequence: :data:`AMINO_ACIDS` -> 0..19, any other
    upper-case letter (``X``, ``B``, ``Z``, ``J``, ``U``, ``O``) ->
    :data:`UNKNOWN`.

    Example::

        tokenize("ACX")  # array([0, 1, 20])

    :param str sequence: upper-case letters ``A``-``Z`` only.
    :param str where: where the sequence comes from (e.g. ``"file.fasta line 12"``),
        used in the error message.
    :returns: int64 array ``[len(sequence)]`` (empty for an empty string).
    :rtype: numpy.ndarray
    :raises ValueError: a character is not an upper-case letter; the message
        names ``where``, the character and its 1-based position.
    """
    if not isinstance(sequence, str):
        raise TypeError(f"{_prefix(where)}expected a str sequence, got {type(sequence).__name__}")
    bad = _NOT_UPPER.search(sequence)
    if bad is not None:
        raise ValueError(
            f"{_prefix(where)}invalid character {bad.group()!r} at position {bad.start() + 1} "
            "of the sequence; protein sequences must be upper-case letters A-Z"
        )
    return _LOOKUP[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]


# BLOSUM62 (Henikoff & Henikoff, PNAS 1992) in the usual NCBI order, in half-bit units;
# the last row is X against the 20 standard amino acids.
_BLOSUM62_ORDER = "ARNDCQEGHILKMFPSTWYV"
_BLOSUM62_TEXT = """
A  4 -1 -2 -2  0 -1 -1  0 -2 -1 -1 -1 -1 -2 -1  1  0 -3 -2  0
R -1  5  0 -2 -3  1  0 -2  0 -3 -2  2 -1 -3 -2 -1 -1 -3 -2 -3
N -2  0  6  1 -3  0  0  0  1 -3 -3  0 -2 -3 -2  1  0 -4 -2 -3
D -2 -2  1  6 -3  0  2 -1 -1 -3 -4 -1 -3 -3 -1  0 -1 -4 -3 -3
C  0 -3 -3 -3  9 -3 -4 -3 -3 -1 -1 -3 -1 -2 -3 -1 -1 -2 -2 -1
Q -1  1  0  0 -3  5  2 -2  0 -3 -2  1  0 -3 -1  0 -1 -2 -1 -2
E -1  0  0  2 -4  2  5 -2  0 -3 -3  1 -2 -3 -1  0 -1 -3 -2 -2
G  0 -2  0 -1 -3 -2 -2  6 -2 -4 -4 -2 -3 -3 -2  0 -2 -2 -3 -3
H -2  0  1 -1 -3  0  0 -2  8 -3 -3 -1 -2 -1 -2 -1 -2 -2  2 -3
I -1 -3 -3 -3 -1 -3 -3 -4 -3  4  2 -3  1  0 -3 -2 -1 -3 -1  3
L -1 -2 -3 -4 -1 -2 -3 -4 -3  2  4 -2  2  0 -3 -2 -1 -2 -1  1
K -1  2  0 -1 -3  1  1 -2 -1 -3 -2  5 -1 -3 -1  0 -1 -3 -2 -2
M -1 -1 -2 -3 -1  0 -2 -3 -2  1  2 -1  5  0 -2 -1 -1 -1 -1  1
F -2 -3 -3 -3 -2 -3 -3 -3 -1  0  0 -3  0  6 -4 -2 -2  1  3 -1
P -1 -2 -2 -1 -3 -1 -1 -2 -2 -3 -3 -1 -2 -4  7 -1 -1 -4 -3 -2
S  1 -1  1  0 -1  0  0  0 -1 -2 -2  0 -1 -2 -1  4  1 -3 -2 -2
T  0 -1  0 -1 -1 -1 -1 -2 -2 -1 -1 -1 -1 -2 -1  1  5 -2 -2  0
W -3 -3 -4 -4 -2 -2 -3 -2 -2 -3 -2 -3 -1  1 -4 -3 -2 11  2 -3
Y -2 -2 -2 -3 -2 -1 -2 -3  2 -1 -1 -2 -1  3 -3 -2 -2  2  7 -1
V  0 -3 -3 -3 -1 -2 -2 -3 -3  3  1 -2  1 -1 -2 -2  0 -3 -1  4
X  0 -1 -1 -1 -2 -1 -1 -1 -1 -1 -1 -1 -1 -1 -2  0  0 -2 -1 -1
"""


def _parse_blosum62():
    rows = {}
    for line in _BLOSUM62_TEXT.strip().splitlines():
        letter, *values = line.split()
        rows[letter] = [int(v) for v in values]
    perm = [_BLOSUM62_ORDER.index(a) for a in AMINO_ACIDS]
    full = np.array([rows[a] for a in AMINO_ACIDS], dtype=np.int64)[:, perm]  # [20, 20]
    x_row = np.array(rows["X"], dtype=np.int64)[perm]  # [20]
    full.setflags(write=False)
    x_row.setflags(write=False)
    return full, x_row


#: BLOSUM62 scores, int64 ``[20, 20]``, rows and columns in :data:`AMINO_ACIDS`
#: order (read-only).
BLOSUM62, _BLOSUM62_X = _parse_blosum62()
#: The BLOSUM62 encoding divides the scores by this (so most diagonal entries are about 1).
BLOSUM62_SCALE = 4.0
#: Names accepted by :func:`encoding_matrix`.
ENCODINGS = ("onehot", "blosum62")


def encoding_matrix(name):
    """
    A residue encoding as a lookup table: row ``t`` is the feature vector of
    token id ``t``, so ``encoding_matrix(name)[tokens]`` encodes a batch
    ``[B, L] -> [B, L, F]`` (padding gives zeros).

    * ``"onehot"``: ``F = 21`` -- unit vectors for the 20 amino acids and
      :data:`UNKNOWN`; the :data:`PAD` row is all zeros.
    * ``"blosum62"``: ``F = 20`` -- row ``a`` is ``BLOSUM62[a, :] / 4``
      (:data:`BLOSUM62_SCALE`) over the 20 standard amino acids in
      :data:`AMINO_ACIDS` order; the :data:`UNKNOWN` row is BLOSUM62's ``X``
      row over the same 20 columns, also divided by 4; the :data:`PAD` row is
      all zeros.

    :param str name: ``"onehot"`` or ``"blosum62"``.
    :returns: float32 tensor ``[22, F]`` (a new tensor on every call).
    :rtype: torch.Tensor
    :raises ValueError: unknown name.
    """
    if name == "onehot":
        m = torch.zeros(VOCAB_SIZE, UNKNOWN + 1, dtype=torch.float32)  # [22, 21]
        m[: UNKNOWN + 1] = torch.eye(UNKNOWN + 1)
        return m
    if name == "blosum62":
        m = torch.zeros(VOCAB_SIZE, len(AMINO_ACIDS), dtype=torch.float32)  # [22, 20]
        m[: len(AMINO_ACIDS)] = torch.from_numpy(BLOSUM62.astype(np.float32)) / BLOSUM62_SCALE
        m[UNKNOWN] = torch.from_numpy(_BLOSUM62_X.astype(np.float32)) / BLOSUM62_SCALE
        return m
    raise ValueError(f"Unknown encoding {name!r}; valid names are: {', '.join(ENCODINGS)}")


# ---------------------------------------------------------------------------
# secondary structure alphabets

#: DSSP 8-state alphabet in NetSurfP-2.0's order; ids 0..7.
SS8 = "GHIBESTC"
#: 3-state alphabet; ids 0..2.
SS3 = "HEC"
_Q8_TO_Q3 = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "C": "C"}
_Q8_TO_Q3_TRANS = str.maketrans(_Q8_TO_Q3)
_Q8_TO_Q3_IDS = np.array([SS3.index(_Q8_TO_Q3[c]) for c in SS8], dtype=np.int64)  # [8]


def encode_structure(labels, alphabet=SS8, where=None):
    """
    Ids of a string of secondary-structure letters in ``alphabet``.

    :param str labels: e.g. ``"CCHHHE"``.
    :param str alphabet: :data:`SS8` or :data:`SS3` (or any string of distinct letters).
    :param str where: used in the error message.
    :returns: int64 array ``[len(labels)]``.
    :raises ValueError: a letter is not in ``alphabet`` (the message names
        ``where``, the letter and its 1-based position).
    """
    lookup = np.full(256, -1, dtype=np.int64)
    for i, c in enumerate(alphabet):
        lookup[ord(c)] = i
    try:
        codes = np.frombuffer(labels.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        codes = None
    ids = None if codes is None else lookup[codes]
    if ids is None or (ids < 0).any():
        pos = next(i for i, c in enumerate(labels) if c not in alphabet)
        raise ValueError(
            f"{_prefix(where)}unknown secondary-structure letter {labels[pos]!r} at position "
            f"{pos + 1}; expected one of {alphabet!r}"
        )
    return ids


def q8_to_q3(labels):
    """
    Merge 8-state into 3-state secondary structure: H, G, I -> H; E, B -> E;
    T, S, C -> C.

    :param labels: a string of :data:`SS8` letters, or an integer array or
        tensor of :data:`SS8` ids (negative entries, e.g. ``-1`` for
        unlabelled, are kept).
    :returns: a string of :data:`SS3` letters, or an int64 array / tensor of
        :data:`SS3` ids of the same shape.
    :raises ValueError: a letter or id outside :data:`SS8`.
    """
    if isinstance(labels, str):
        encode_structure(labels, SS8)  # validate
        return labels.translate(_Q8_TO_Q3_TRANS)
    is_tensor = isinstance(labels, torch.Tensor)
    ids = labels.detach().cpu().numpy() if is_tensor else np.asarray(labels)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"q8_to_q3 expects a str or integer ids, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if (ids >= len(SS8)).any():
        raise ValueError(f"Q8 ids must be < {len(SS8)} (or negative for unlabelled)")
    out = np.where(ids >= 0, _Q8_TO_Q3_IDS[np.clip(ids, 0, None)], ids)
    return torch.from_numpy(out).to(labels.device) if is_tensor else out


# ---------------------------------------------------------------------------
# length cap


def cap_length(tokens, max_length=1000):
    """
    Cap a sequence at ``max_length`` residues, DeepLoc's way: a longer sequence
    keeps its first ``max_length - max_length // 2`` and last
    ``max_length // 2`` residues (the first and last 500 for 1000); shorter
    ones are returned unchanged.

    :param tokens: a 1-D sequence: str, list, numpy array or tensor (also
        per-residue labels, to cap them like the residues).
    :param int max_length: at least 1.
    :returns: the same type, of length ``min(len(tokens), max_length)``.
    """
    max_length = check_int("max_length", max_length, 1)
    n = len(tokens)
    if n <= max_length:
        return tokens
    tail = int(max_length) // 2
    head = int(max_length) - tail
    first, last = tokens[:head], tokens[n - tail :]
    if isinstance(tokens, torch.Tensor):
        return torch.cat([first, last])
    if isinstance(tokens, np.ndarray):
        return np.concatenate([first, last])
    return first + last


# ---------------------------------------------------------------------------
# DeepLoc

#: The ten DeepLoc locations; class ids 0..9 in this order.
LOCATIONS = (
    "Nucleus",
    "Cytoplasm",
    "Extracellular",
    "Mitochondrion",
    "Cell.membrane",
    "Endoplasmic.reticulum",
    "Plastid",
    "Golgi.apparatus",
    "Lysosome/Vacuole",
    "Peroxisome",
)
#: DeepLoc membrane codes and the value of ``ProteinBatch.membrane`` for each.
MEMBRANE_CODES = {"S": 0, "M": 1, "U": -1}
_TEST_TAGS = ("test", "new_test_set")
_MULTI_LOCATION_POLICIES = ("drop", "error", "keep")


class ProteinRecord(NamedTuple):
    """
    One protein of a DeepLoc FASTA file.

    :ivar str accession: the UniProt accession (first word of the header).
    :ivar str sequence: upper-case letters.
    :ivar str location: one of :data:`LOCATIONS`, or a ``-``-joined
        multi-location label kept with ``multi_location="keep"``.
    :ivar str membrane: ``"M"`` (membrane), ``"S"`` (soluble) or ``"U"`` (unknown).
    :ivar bool test: whether the header carries ``test`` or ``new_test_set``.
    :ivar int source_line: 1-based line number of the header.
    """

    accession: str
    sequence: str
    location: str
    membrane: str
    test: bool
    source_line: int


_DEEPLOC_URL = (
    "https://raw.githubusercontent.com/HannesStark/protein-localization/"
    "7b0be1e64a91db8ad1a8feae994a4d09aa9d7b1b/data_files/{}"
)


def _deeploc_file(name, sha256):
    return ImageFile("protein_localization/" + name, (sha256,), _DEEPLOC_URL.format(name))


#: The DeepLoc FASTA files by split (``shared/data/SOURCES.md``, section 5).
DEEPLOC_FILES = {
    "test": _deeploc_file(
        "deeploc_test_set.fasta",
        "b4d4fb4dbf53e87fb1bff9cbad41919c7c1f2615299a0dd50ecb5a4d002b4b6a",
    ),
    "valid": _deeploc_file(
        "deeploc_our_val_set.fasta",
        "5fddf9a7c076c7a0c34e46bdf8a530fddb8cd17a54b28d8e7ebcf3d4fbbf77d6",
    ),
    "hard": _deeploc_file(
        "setHARD.fasta",
        "a6522e6bd9a36acfd1932851b4d7ed855981586bddd835441886a40413eeb908",
    ),
}
#: Split names accepted by :func:`load_deeploc`.
DEEPLOC_SPLITS = tuple(DEEPLOC_FILES)


def _text_lines(path):
    """``(line number, line without its end-of-line)`` of a UTF-8 text file (a byte-order mark
    at its start, as some editors write, is dropped)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ProteinFormatError(f"{path} line {lineno}: not UTF-8 text ({e})") from e
            yield lineno, line.rstrip("\r\n")


def _parse_deeploc_header(line, where):
    """``(accession, location, membrane, test)`` of a header line (with its ``>``)."""
    fields = line[1:].split()
    if not fields:
        raise ProteinFormatError(f"{where}: header has no accession")
    accession = fields[0]
    if len(fields) < 2:
        raise ProteinFormatError(
            f"{where}: header of {accession} has no location; expected "
            "'>ACCESSION Location-MembraneCode [test|new_test_set]'"
        )
    if len(fields) > 3:
        raise ProteinFormatError(
            f"{where}: header of {accession} has {len(fields)} fields, expected "
            "'>ACCESSION Location-MembraneCode [test|new_test_set]'"
        )
    label = fields[1]
    location, sep, membrane = label.rpartition("-")
    if not sep or not location:
        raise ProteinFormatError(
            f"{where}: label {label!r} of {accession} is not 'Location-MembraneCode'"
        )
    if membrane not in MEMBRANE_CODES:
        raise ProteinFormatError(
            f"{where}: unknown membrane code {membrane!r} in {label!r}; expected M, S or U"
        )
    test = False
    if len(fields) == 3:
        if fields[2] not in _TEST_TAGS:
            raise ProteinFormatError(
                f"{where}: unknown tag {fields[2]!r} after the label of {accession}; "
                f"expected one of {', '.join(_TEST_TAGS)} or nothing"
            )
        test = True
    return accession, location, membrane, test


def _is_multi_location(location):
    parts = location.split("-")
    return len(parts) > 1 and all(p in LOCATIONS for p in parts)


def read_deeploc_fasta(path, multi_location="drop"):
    """
    Parse a DeepLoc FASTA file. Each header is ``>ACCESSION Location-MembraneCode``
    optionally followed by ``test`` or ``new_test_set``; the sequence follows on
    one or more lines. Blank lines and surrounding white space are ignored.

    :param path: the FASTA file.
    :param str multi_location: what to do with multi-location labels (two or
        more of :data:`LOCATIONS` joined by ``-``, e.g. ``Cytoplasm-Nucleus``):
        ``"drop"`` (default; the count is logged), ``"error"`` or ``"keep"``.
    :returns: the proteins in file order.
    :rtype: list[ProteinRecord]
    :raises ProteinFormatError: naming the file and line, for a sequence line
        before any header, a header without accession or location, an
        unknown location, membrane code or tag, a multi-location label with
        ``multi_location="error"``, a character that is not an upper-case
        letter, an empty sequence, or a duplicate accession.
    :raises ValueError: unknown ``multi_location`` policy.
    """
    if multi_location not in _MULTI_LOCATION_POLICIES:
        raise ValueError(
            f"Unknown multi_location policy {multi_location!r}; valid policies are: "
            f"{', '.join(_MULTI_LOCATION_POLICIES)}"
        )
    records = []
    seen = {}  # accession -> header line
    dropped = []
    current = None  # [accession, location, membrane, test, header line, [sequence lines]]

    def finish():
        if current is None:
            return
        accession, location, membrane, test, lineno, parts = current
        sequence = "".join(parts)
        if not sequence:
            raise ProteinFormatError(f"{path} line {lineno}: {accession} has an empty sequence")
        if location not in LOCATIONS and multi_location == "drop":
            dropped.append(location)
            return
        records.append(ProteinRecord(accession, sequence, location, membrane, test, lineno))

    for lineno, line in _text_lines(path):
        line = line.strip()
        if not line:
            continue
        where = f"{path} line {lineno}"
        if line.startswith(">"):
            finish()
            accession, location, membrane, test = _parse_deeploc_header(line, where)
            if accession in seen:
                raise ProteinFormatError(
                    f"{where}: duplicate accession {accession} "
                    f"(first seen on line {seen[accession]})"
                )
            seen[accession] = lineno
            if location not in LOCATIONS:
                if not _is_multi_location(location):
                    raise ProteinFormatError(
                        f"{where}: unknown location {location!r} of {accession}; valid "
                        f"locations are: {', '.join(LOCATIONS)}"
                    )
                if multi_location == "error":
                    raise ProteinFormatError(
                        f"{where}: {accession} has the multi-location label {location!r} "
                        "(use multi_location='drop' or 'keep')"
                    )
            current = [accession, location, membrane, test, lineno, []]
            continue
        if current is None:
            raise ProteinFormatError(f"{where}: sequence line before any '>' header")
        bad = _NOT_UPPER.search(line)
        if bad is not None:
            raise ProteinFormatError(
                f"{where}: invalid character {bad.group()!r} in the sequence of {current[0]} "
                f"(column {bad.start() + 1}); sequences must be upper-case letters A-Z"
            )
        current[5].append(line)
    finish()
    if dropped:
        logger.info(
            "%s: dropped %d multi-location proteins (%s)",
            path,
            len(dropped),
            ", ".join(f"{k} {v}" for k, v in sorted(Counter(dropped).items())),
        )
    return records


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; valid values are: {', '.join(choices)}")


def load_deeploc(split, data_root=None, download=True, multi_location="drop"):
    """
    One DeepLoc split (see the module docstring): ``"test"`` (2,768 proteins),
    ``"valid"`` (1,678, or 1,655 after dropping the 23 ``Cytoplasm-Nucleus``
    proteins) or ``"hard"`` (setHARD, 490).

    The file's sha256 is checked against :data:`DEEPLOC_FILES` before it is
    parsed; a missing file is downloaded (if ``download``) and checked first.

    :param str split: ``"test"``, ``"valid"`` or ``"hard"``.
    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`; the files
        are under ``protein_localization/``.
    :param bool download: whether a missing file may be downloaded.
    :param str multi_location: see :func:`read_deeploc_fasta`.
    :rtype: list[ProteinRecord]
    :raises ValueError: unknown split or policy.
    :raises ~pyro_seq.data.DataUnavailableError: the file is missing and could not be downloaded.
    :raises ~pyro_seq.data.DataIntegrityError: the file has the wrong sha256 or contents.
    """
    _check_choice("split", split, DEEPLOC_SPLITS)
    _check_choice("multi_location policy", multi_location, _MULTI_LOCATION_POLICIES)
    path = fetch_verified(DEEPLOC_FILES[split], data_root, download)  # verified before parsing
    return read_deeploc_fasta(path, multi_location=multi_location)


# ---------------------------------------------------------------------------
# CB513 (NetSurfP-2.0 CSV)

#: The NetSurfP-2.0 CB513 CSV (``shared/data/SOURCES.md``, section 4).
CB513_FILE = ImageFile(
    "protein_ss/CB513.csv",
    ("35e442debd6faea0aa156551cd65dc9ce1f96b59023eef08bce8522e20f8bb0d",),
    "https://raw.githubusercontent.com/shahid-43/protein_secondary_structure_prediction/"
    "f86c6fa0657d7692f63cedc43cc781ae55c45d7e/data/CB513.csv",
)
_CB513_HEADER = ["input", "dssp3", "dssp8", "disorder", "cb513_mask"]


class SecondaryStructureRecord(NamedTuple):
    """
    One chain of a secondary-structure CSV.

    :ivar str sequence: upper-case letters.
    :ivar str q8: one :data:`SS8` letter per residue.
    :ivar str q3: one :data:`SS3` letter per residue.
    :ivar numpy.ndarray disorder: bool ``[L]``, ``True`` on disordered
        residues (the CSV's ``disorder`` column is 1 = ordered, 0 = disordered,
        as in NetSurfP-2.0).
    :ivar numpy.ndarray eval_mask: bool ``[L]``, the ``cb513_mask`` column
        (residues to evaluate on).
    :ivar int source_line: 1-based line number in the CSV.
    """

    sequence: str
    q8: str
    q3: str
    disorder: np.ndarray
    eval_mask: np.ndarray
    source_line: int


def _binary_field(text, column, length, where):
    tokens = text.split()
    if len(tokens) != length:
        raise ProteinFormatError(
            f"{where}: column {column!r} has {len(tokens)} values, but the sequence has "
            f"{length} residues"
        )
    try:
        values = np.array(tokens, dtype=np.float64)  # [L]
    except ValueError:
        values = None
    ok = None if values is None else (values == 0) | (values == 1)
    if ok is None or not ok.all():
        pos = next(i for i, t in enumerate(tokens) if not _is_binary_token(t))
        raise ProteinFormatError(
            f"{where}: column {column!r} value {tokens[pos]!r} at residue {pos + 1} is not 0 or 1"
        )
    return values == 1


def _is_binary_token(token):
    try:
        return float(token) in (0.0, 1.0)
    except ValueError:
        return False


def read_cb513_csv(path):
    """
    Parse a NetSurfP-2.0 style secondary-structure CSV with the header
    ``input,dssp3,dssp8,disorder,cb513_mask``: the sequence, Q3 and Q8 letters
    (one per residue) and two space-separated per-residue 0/1 columns.

    :param path: the CSV file.
    :returns: the chains in file order.
    :rtype: list[SecondaryStructureRecord]
    :raises ProteinFormatError: naming the file and line, for a wrong header,
        a wrong number of fields, an empty or invalid sequence, a field whose
        length differs from the sequence's, unknown Q3 / Q8 letters or mask
        values other than 0 and 1.
    """
    records = []
    lines = (line for _, line in _text_lines(path))
    reader = csv.reader(lines)
    header = next(reader, None)
    if header != _CB513_HEADER:
        raise ProteinFormatError(
            f"{path} line 1: header is {','.join(header or [])!r}, expected "
            f"{','.join(_CB513_HEADER)!r}"
        )
    for row in reader:
        lineno = reader.line_num
        where = f"{path} line {lineno}"
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(_CB513_HEADER):
            raise ProteinFormatError(
                f"{where}: {len(row)} fields, expected {len(_CB513_HEADER)} "
                f"({','.join(_CB513_HEADER)})"
            )
        sequence, q3, q8 = (f.strip() for f in row[:3])
        disorder, mask = row[3], row[4]
        if not sequence:
            raise ProteinFormatError(f"{where}: empty sequence")
        try:
            tokenize(sequence)
        except ValueError as e:
            raise ProteinFormatError(f"{where}: column 'input': {e}") from None
        n = len(sequence)
        for column, value in (("dssp3", q3), ("dssp8", q8)):
            if len(value) != n:
                raise ProteinFormatError(
                    f"{where}: column {column!r} has {len(value)} letters, but the sequence has "
                    f"{n} residues"
                )
        try:
            encode_structure(q3, SS3)
        except ValueError as e:
            raise ProteinFormatError(f"{where}: column 'dssp3': {e}") from None
        try:
            encode_structure(q8, SS8)
        except ValueError as e:
            raise ProteinFormatError(f"{where}: column 'dssp8': {e}") from None
        ordered = _binary_field(disorder, "disorder", n, where)
        eval_mask = _binary_field(mask, "cb513_mask", n, where)
        records.append(SecondaryStructureRecord(sequence, q8, q3, ~ordered, eval_mask, lineno))
    return records


def load_cb513(data_root=None, download=True):
    """
    CB513 in the NetSurfP-2.0 release: 511 chains, 144,011 residues, 83,991
    with ``eval_mask`` (see the module docstring).

    The file's sha256 is checked against :data:`CB513_FILE` before it is
    parsed; a missing file is downloaded (if ``download``) and checked first.

    :param data_root: see :func:`~pyro_seq.data.resolve_data_root`; the file is
        ``protein_ss/CB513.csv`` under it.
    :param bool download: whether a missing file may be downloaded.
    :rtype: list[SecondaryStructureRecord]
    :raises ~pyro_seq.data.DataUnavailableError: the file is missing and could not be downloaded.
    :raises ~pyro_seq.data.DataIntegrityError: the file has the wrong sha256 or contents.
    """
    path = fetch_verified(CB513_FILE, data_root, download)  # verified before parsing
    return read_cb513_csv(path)


# ---------------------------------------------------------------------------
# Zhou & Troyanskaya arrays

#: Residues per protein of the Zhou & Troyanskaya arrays (padded).
ZT_LENGTH = 700
#: Features per residue of the Zhou & Troyanskaya arrays.
ZT_FEATURES = 57
#: Order of the residue one-hot features 0..20 (feature 21 is ``NoSeq``).
ZT_RESIDUE_ORDER = "ACEDGFIHKMLNQPSRTWVYX"
#: Order of the secondary-structure features 22..29 (feature 30 is ``NoSeq``);
#: ``L`` (loop) is :data:`SS8`'s ``C``.
ZT_Q8_ORDER = "LBEGIHST"
#: Order of the profile features 35..55 as stated by the data set's readme
#: (21 letters for the 22 profile columns 35..56).
ZT_PROFILE_ORDER = "ACDEFGHIKLMNPQRSTVWXY"
_ZT_TOKEN = np.array([_LOOKUP[ord(c)] for c in ZT_RESIDUE_ORDER], dtype=np.int64)  # [21]
_ZT_Q8 = np.array([SS8.index("C" if c == "L" else c) for c in ZT_Q8_ORDER], dtype=np.int64)  # [8]


class ZhouTroyanskayaData(NamedTuple):
    """
    The arrays of a Zhou & Troyanskaya ``.npy`` file.

    :ivar numpy.ndarray tokens: int64 ``[N, 700]`` token ids (:func:`tokenize`
        ids), :data:`PAD` after each protein's end.
    :ivar numpy.ndarray q8: int64 ``[N, 700]`` :data:`SS8` ids, ``-1`` at
        padding and at residues without a label.
    :ivar numpy.ndarray mask: bool ``[N, 700]``, ``True`` on residues (a prefix of each row).
    :ivar numpy.ndarray profiles: float32 ``[N, 700, 22]``, features 35..56 as
        stored (see :data:`ZT_PROFILE_ORDER`).
    :ivar numpy.ndarray lengths: int64 ``[N]`` residues per protein.
    """

    tokens: np.ndarray
    q8: np.ndarray
    mask: np.ndarray
    profiles: np.ndarray
    lengths: np.ndarray


def _load_npy(path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        if gz:
            with gzip.open(path, "rb") as g:
                arr = np.load(g, allow_pickle=False)  # read through the stream, not its fd
        else:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise ProteinFormatError(
            f"Could not read {path} as a{' gzipped' if gz else ''} .npy array without "
            f"pickle: {e}"
        ) from e
    if not isinstance(arr, np.ndarray):
        raise ProteinFormatError(f"{path} is an .npz archive, expected a single .npy array")
    return arr


def _check_binary(block, path, what):
    if not ((block == 0) | (block == 1)).all():
        raise ProteinFormatError(f"{path}: the {what} features must be 0 or 1")


def load_zhou_troyanskaya(path):
    """
    Read a Zhou & Troyanskaya (ICML 2014) secondary-structure array:
    ``cullpdb+profile_6133.npy.gz``, ``cullpdb+profile_6133_filtered.npy.gz``,
    ``cullpdb+profile_5926*.npy.gz`` or ``cb513+profile_split1.npy.gz``, gzipped
    or not (detected from the file's first bytes). The file is read with
    ``numpy.load(..., allow_pickle=False)`` only.

    The array is ``N x (700 * 57)`` (or already ``N x 700 x 57``): 700
    residues per protein, padded at the end, with 57 features each. The layout,
    from the data set's readme (``dataset_readme.txt`` of the ICML 2014 data
    page of J. Zhou, Princeton, as quoted in the public code that uses it):

    * ``[0, 22)``: one-hot residue in the order ``ACEDGFIHKMLNQPSRTWVYX``
      (:data:`ZT_RESIDUE_ORDER`) and ``NoSeq`` (21, padding);
    * ``[22, 31)``: one-hot 8-state secondary structure in the order
      ``LBEGIHST`` (:data:`ZT_Q8_ORDER`) and ``NoSeq`` (30);
    * ``[31, 33)``: N- and C-terminal flags;
    * ``[33, 35)``: relative and absolute solvent accessibility;
    * ``[35, 57)``: the sequence profile, whose residue order the readme gives
      as ``ACDEFGHIKLMNPQRSTVWXY`` (:data:`ZT_PROFILE_ORDER`), which differs
      from the one-hot order.

    Checks: the shape, the one-hot features 0..30 are 0/1 with at most one 1
    per residue in each block, every protein has at least one residue and its
    residues form a prefix of the 700 positions. Padding is a position with
    ``NoSeq`` set or no residue feature set. Residues without a structure
    label get ``q8 = -1``.

    :param path: the ``.npy`` or ``.npy.gz`` file.
    :rtype: ZhouTroyanskayaData
    :raises ProteinFormatError: the file is not a numeric ``.npy`` array of the
        expected layout.
    """
    arr = _load_npy(path)
    if arr.ndim == 2 and arr.shape[1] == ZT_LENGTH * ZT_FEATURES:
        arr = arr.reshape(arr.shape[0], ZT_LENGTH, ZT_FEATURES)  # [N, 700, 57]
    if arr.ndim != 3 or arr.shape[1:] != (ZT_LENGTH, ZT_FEATURES) or arr.shape[0] == 0:
        raise ProteinFormatError(
            f"{path}: array of shape {arr.shape}, expected (N, {ZT_LENGTH * ZT_FEATURES}) or "
            f"(N, {ZT_LENGTH}, {ZT_FEATURES}) with N >= 1"
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ProteinFormatError(f"{path}: dtype {arr.dtype}, expected a numeric array")
    residues = np.asarray(arr[:, :, :22])  # [N, 700, 22]
    structure = np.asarray(arr[:, :, 22:31])  # [N, 700, 9]
    _check_binary(residues, path, "residue (0..21)")
    _check_binary(structure, path, "secondary-structure (22..30)")
    if (residues.sum(-1) > 1).any():
        raise ProteinFormatError(
            f"{path}: a position has more than one residue feature (0..21) set"
        )
    if (structure.sum(-1) > 1).any():
        raise ProteinFormatError(
            f"{path}: a position has more than one secondary-structure feature (22..30) set"
        )
    mask = residues[:, :, :21].any(-1)  # [N, 700]
    lengths = mask.sum(-1).astype(np.int64)  # [N]
    if (lengths == 0).any():
        i = int(np.flatnonzero(lengths == 0)[0])
        raise ProteinFormatError(f"{path}: protein {i} has no residues")
    prefix = np.arange(ZT_LENGTH)[None, :] < lengths[:, None]  # [N, 700]
    if (mask != prefix).any():
        i = int(np.flatnonzero((mask != prefix).any(-1))[0])
        raise ProteinFormatError(
            f"{path}: the residues of protein {i} are not a prefix of the {ZT_LENGTH} positions"
        )
    tokens = np.where(mask, _ZT_TOKEN[residues[:, :, :21].argmax(-1)], PAD)  # [N, 700]
    labelled = mask & structure[:, :, :8].any(-1)  # [N, 700]
    q8 = np.where(labelled, _ZT_Q8[structure[:, :, :8].argmax(-1)], -1)  # [N, 700]
    profiles = np.asarray(arr[:, :, 35:57], dtype=np.float32)  # [N, 700, 22]
    return ZhouTroyanskayaData(
        tokens.astype(np.int64), q8.astype(np.int64), mask, profiles, lengths
    )


# ---------------------------------------------------------------------------
# cross-validation


def sequence_folds(sequences, num_folds=5, seed=0):
    """
    Assign items to ``num_folds`` cross-validation folds so that identical
    sequences always share a fold.

    Items are grouped by their exact sequence string. The groups, in a random
    order drawn from ``numpy.random.default_rng(seed)`` and then stably sorted
    by size (largest first), are each put in the currently smallest fold (the
    lowest fold id among ties); fold ids are then permuted with the same
    generator. Fold sizes therefore differ by at most the size of the largest
    group, and the result depends only on the sequences and ``seed``.

    This removes **exact duplicates** across folds only: near-identical
    sequences and homologues can still fall in different folds, so it is not a
    homology partition.

    :param sequences: sequence strings, or records with a ``sequence`` attribute
        (:class:`ProteinRecord`, :class:`SecondaryStructureRecord`).
    :param int num_folds: at least 2 and at most the number of distinct sequences.
    :param int seed: random seed.
    :returns: int64 ``[N]`` fold id in ``0..num_folds-1`` per item.
    :rtype: numpy.ndarray
    :raises ValueError: bad ``num_folds``, or fewer distinct sequences than folds.
    """
    if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)) or num_folds < 2:
        raise ValueError(f"num_folds must be an integer >= 2, got {num_folds!r}")
    keys = [s if isinstance(s, str) else s.sequence for s in sequences]
    groups = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    members = list(groups.values())  # in first-occurrence order
    if len(members) < num_folds:
        raise ValueError(
            f"{len(members)} distinct sequences cannot fill {num_folds} folds"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(members))
    order = order[np.argsort([-len(members[g]) for g in order], kind="stable")]
    sizes = np.zeros(num_folds, dtype=np.int64)
    folds = np.empty(len(keys), dtype=np.int64)
    for g in order:
        f = int(np.argmin(sizes))
        folds[members[g]] = f
        sizes[f] += len(members[g])
    relabel = rng.permutation(num_folds)
    return relabel[folds]


# ---------------------------------------------------------------------------
# batching


class ProteinBatch(NamedTuple):
    """
    A padded batch of proteins.

    :ivar torch.Tensor tokens: int64 ``[B, L]`` token ids, :data:`PAD` after each length.
    :ivar torch.Tensor mask: bool ``[B, L]``, ``True`` on residues (a prefix of each row).
    :ivar torch.Tensor y: int64 targets: ``[B]`` class ids into
        :data:`LOCATIONS` for localisation, or ``[B, L]`` per-residue ids
        (:data:`SS8` or :data:`SS3`); ``-1`` marks padding, unlabelled
        residues and proteins without a single class.
    :ivar torch.Tensor membrane: int64 ``[B]`` (0 soluble, 1 membrane, -1
        unknown), or ``None``.
    :ivar torch.Tensor eval_mask: bool ``[B, L]`` residues to evaluate on
        (``False`` at padding), or ``None``.
    :ivar torch.Tensor index: int64 ``[B]`` positions of the proteins in the
        input of :func:`protein_batches`, or ``None``.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor
    membrane: Optional[torch.Tensor] = None
    eval_mask: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None

    def to(self, device, non_blocking=False):
        """
        Move every tensor to ``device``.

        :rtype: ProteinBatch
        """
        return ProteinBatch(
            *(None if t is None else t.to(device, non_blocking=non_blocking) for t in self)
        )

    def pin_memory(self):
        """The batch in page-locked host memory (for asynchronous copies to a GPU)."""
        return ProteinBatch(*(None if t is None else t.pin_memory() for t in self))

    @property
    def args(self):
        """``(tokens, mask, y)``, followed by ``membrane`` when the batch has it."""
        if self.membrane is None:
            return (self.tokens, self.mask, self.y)
        return (self.tokens, self.mask, self.y, self.membrane)

    @property
    def frames(self):
        """The number of proteins ``B`` (as a float, what the trainer divides by)."""
        return float(self.tokens.size(0))

    @property
    def lengths(self):
        """int64 ``[B]`` residues per protein."""
        return self.mask.sum(-1)


_TARGETS = ("q8", "q3")


def _items(data, target):
    """
    ``[(tokens [L], y (int or [L]), membrane or None, eval_mask [L] or None, where)]``.
    """
    if isinstance(data, ZhouTroyanskayaData):
        out = []
        for i, n in enumerate(data.lengths.tolist()):
            y = data.q8[i, :n]
            y = q8_to_q3(y) if target == "q3" else y
            out.append((data.tokens[i, :n], y, None, None, f"item {i}"))
        return out
    out = []
    for i, item in enumerate(data):
        if isinstance(item, ProteinRecord):
            where = f"item {i} ({item.accession}, line {item.source_line})"
            y = LOCATIONS.index(item.location) if item.location in LOCATIONS else -1
            tokens = tokenize(item.sequence, where)
            out.append((tokens, y, MEMBRANE_CODES[item.membrane], None, where))
        elif isinstance(item, SecondaryStructureRecord):
            where = f"item {i} (line {item.source_line})"
            labels = item.q3 if target == "q3" else item.q8
            y = encode_structure(labels, SS3 if target == "q3" else SS8, where)
            tokens = tokenize(item.sequence, where)
            out.append((tokens, y, None, np.asarray(item.eval_mask, dtype=bool), where))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            tokens, y = item
            where = f"item {i}"
            if isinstance(tokens, str):
                tokens = tokenize(tokens, where)
            tokens = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens)
            if tokens.ndim != 1 or (tokens.size and not np.issubdtype(tokens.dtype, np.integer)):
                raise ValueError(
                    f"{where}: tokens must be a 1-D integer array, got a {tokens.dtype} array "
                    f"of shape {tokens.shape}"
                )
            if tokens.size and (tokens.min() < 0 or tokens.max() > UNKNOWN):
                raise ValueError(f"{where}: token ids must be in 0..{UNKNOWN}")
            y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
            if y.ndim == 0:
                y = int(y)
            elif y.shape != tokens.shape:
                count = y.shape[0] if y.ndim == 1 else y.shape
                raise ValueError(f"{where}: {count} labels for {len(tokens)} residues")
            out.append((tokens.astype(np.int64), y, None, None, where))
        else:
            raise TypeError(
                f"item {i}: expected a ProteinRecord, a SecondaryStructureRecord or a "
                f"(tokens, y) pair, got {type(item).__name__}"
            )
    return out


def protein_batches(
    records_or_arrays,
    batch_size,
    shuffle=False,
    seed=0,
    epoch=0,
    sort_by_length=True,
    max_length=None,
    target="q8",
):
    """
    Padded batches of proteins (:class:`ProteinBatch`).

    With ``sort_by_length=True`` the proteins are sorted by length (ties in a
    random order when shuffling) and cut into consecutive batches of
    ``batch_size``, so each batch holds similar lengths; with ``shuffle=True``
    the order of the batches is then shuffled. All randomness comes from
    ``numpy.random.default_rng([seed, epoch])``, as in
    :func:`~pyro_seq.data.make_batches`, so the batches are a deterministic
    function of the arguments.

    Inputs:

    * :class:`ProteinRecord` s: ``y [B]`` the index into :data:`LOCATIONS`
      (``-1`` for a kept multi-location label) and ``membrane [B]``;
    * :class:`SecondaryStructureRecord` s: ``y [B, L]`` :data:`SS8` ids (or
      :data:`SS3` ids with ``target="q3"``) and ``eval_mask [B, L]``;
    * a :class:`ZhouTroyanskayaData`: ``y [B, L]`` its ``q8`` (or Q3) ids;
    * ``(tokens, y)`` pairs: a sequence string or 1-D token ids, and an
      integer class or a 1-D array of per-residue ids (``-1`` = unlabelled).

    :param records_or_arrays: see above (a non-empty list, or a
        :class:`ZhouTroyanskayaData`).
    :param int batch_size: maximum proteins per batch.
    :param bool shuffle: shuffle (see above).
    :param int seed: random seed.
    :param int epoch: epoch number, mixed into the seed.
    :param bool sort_by_length: group proteins of similar length.
    :param int max_length: cap every protein (and its per-residue labels) with
        :func:`cap_length`; ``None`` keeps full lengths.
    :param str target: ``"q8"`` or ``"q3"`` for per-residue secondary structure.
    :rtype: list[ProteinBatch]
    :raises ValueError: an empty input, an empty sequence (naming the item),
        mixed input kinds or bad arguments.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    epoch = check_int("epoch", epoch, 0)
    if max_length is not None:
        max_length = check_int("max_length", max_length, 1)
    _check_choice("target", target, _TARGETS)
    items = _items(records_or_arrays, target)
    if not items:
        raise ValueError("protein_batches needs at least one protein, got none")
    per_residue = {not isinstance(y, int) for _, y, _, _, _ in items}
    if len(per_residue) > 1:
        raise ValueError("protein_batches: mixed per-protein and per-residue targets")
    per_residue = per_residue.pop()
    kinds = {(m is None, e is None) for _, _, m, e, _ in items}
    if len(kinds) > 1:
        raise ValueError(
            "protein_batches: mixed input kinds (membrane or eval_mask in some items only)"
        )
    for tokens, _, _, _, where in items:
        if len(tokens) == 0:
            raise ValueError(f"{where}: empty sequence (proteins need at least one residue)")
    if max_length is not None:
        items = [
            (
                cap_length(t, max_length),
                cap_length(y, max_length) if per_residue else y,
                m,
                None if e is None else cap_length(e, max_length),
                w,
            )
            for t, y, m, e, w in items
        ]
    lengths = np.array([len(t) for t, _, _, _, _ in items], dtype=np.int64)  # [N]
    chunks = batch_order(lengths, batch_size, shuffle, seed, epoch, sort_by_length)
    return [_collate([items[i] for i in idx], idx, per_residue) for idx in chunks]


def _collate(items, idx, per_residue):
    b = len(items)
    length = max(len(t) for t, _, _, _, _ in items)
    tokens = torch.full((b, length), PAD, dtype=torch.long)  # [B, L]
    mask = torch.zeros(b, length, dtype=torch.bool)  # [B, L]
    y = torch.full((b, length) if per_residue else (b,), -1, dtype=torch.long)  # [B, L] or [B]
    has_membrane = items[0][2] is not None
    has_eval = items[0][3] is not None
    membrane = torch.empty(b, dtype=torch.long) if has_membrane else None  # [B]
    eval_mask = torch.zeros(b, length, dtype=torch.bool) if has_eval else None  # [B, L]
    for row, (t, lab, m, e, _) in enumerate(items):
        n = len(t)
        tokens[row, :n] = torch.as_tensor(np.asarray(t), dtype=torch.long)
        mask[row, :n] = True
        if per_residue:
            y[row, :n] = torch.as_tensor(np.asarray(lab), dtype=torch.long)
        else:
            y[row] = lab
        if has_membrane:
            membrane[row] = m
        if has_eval:
            eval_mask[row, :n] = torch.as_tensor(np.asarray(e), dtype=torch.bool)
    index = torch.as_tensor(np.asarray(idx), dtype=torch.long)  # [B]
    return ProteinBatch(tokens, mask, y, membrane, eval_mask, index)
