# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
import gzip
import hashlib
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import no_network, shared_data_root, tree_listing
from pyro_seq.contrib.protein.data import AMINO_ACIDS, BLOSUM62, CB513_FILE, DEEPLOC_FILES, LOCATIONS, PAD, SS3, SS8, UNKNOWN, ProteinBatch, ProteinFormatError, ProteinRecord, SecondaryStructureRecord, ZhouTroyanskayaData, cap_length, encode_structure, encoding_matrix, load_cb513, load_deeploc, load_zhou_troyanskaya, protein_batches, q8_to_q3, read_cb513_csv, read_deeploc_fasta, sequence_folds, tokenize
from pyro_seq.data import DataIntegrityError, DataUnavailableError
from pyro_seq.data import download as download_mod
from pyro_seq.contrib.protein import data as protein_mod
from pyro_seq.data.images import ImageFile

ROOT = shared_data_root()


def _have(*infos):
    return all((ROOT / i.relpath).is_file() for i in infos)


needs_deeploc = pytest.mark.skipif(
    not _have(*DEEPLOC_FILES.values()), reason=f"DeepLoc FASTA files not under {ROOT}"
)
needs_cb513 = pytest.mark.skipif(
    not _have(CB513_FILE), reason=f"{CB513_FILE.relpath} not under {ROOT}"
)


@pytest.fixture(autouse=True)
def _offline(offline):
    """Every test here runs without network access."""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _aa(a, b):
    return BLOSUM62[AMINO_ACIDS.index(a), AMINO_ACIDS.index(b)]


# --------------------------------------------------------------------------- alphabet


def test_tokenize_ids_and_unknown_letters():
    assert tokenize(AMINO_ACIDS).tolist() == list(range(20))
    assert tokenize("XBZUOJ").tolist() == [UNKNOWN] * 6
    t = tokenize("MKX")
    assert t.dtype == np.int64
    assert t.tolist() == [AMINO_ACIDS.index("M"), AMINO_ACIDS.index("K"), 20]
    assert tokenize("").shape == (0,)
    assert UNKNOWN == 20 and PAD == 21


@pytest.mark.parametrize("seq,char,pos", [("MKa", "a", 3), ("M-K", "-", 2), ("MK*", "*", 3),
                                          ("1MK", "1", 1), ("MK K", " ", 3), ("MÄ", "Ä", 2)])
def test_tokenize_rejects_non_letters(seq, char, pos):
    with pytest.raises(ValueError) as info:
        tokenize(seq, where="file.fasta line 12")
    msg = str(info.value)
    assert "file.fasta line 12" in msg and repr(char) in msg and f"position {pos}" in msg


def test_blosum62_known_values():
    assert BLOSUM62.shape == (20, 20) and BLOSUM62.dtype == np.int64
    np.testing.assert_array_equal(BLOSUM62, BLOSUM62.T)
    assert _aa("W", "W") == 11 and _aa("A", "A") == 4 and _aa("C", "C") == 9
    assert _aa("A", "R") == -1 and _aa("W", "C") == -2 and _aa("H", "H") == 8
    assert _aa("P", "P") == 7 and _aa("D", "E") == 2 and _aa("I", "V") == 3 and _aa("F", "Y") == 3
    assert _aa("G", "I") == -4 and _aa("W", "Y") == 2 and _aa("S", "T") == 1
    assert (np.diag(BLOSUM62) > 0).all() and BLOSUM62.min() == -4
    # each diagonal entry is the largest in its row
    assert (np.diag(BLOSUM62)[:, None] >= BLOSUM62).all()
    assert not BLOSUM62.flags.writeable


def test_encoding_matrices():
    onehot = encoding_matrix("onehot")
    assert onehot.shape == (22, 21) and onehot.dtype == torch.float32
    torch.testing.assert_close(onehot[:21], torch.eye(21))
    assert (onehot[PAD] == 0).all()
    blosum = encoding_matrix("blosum62")
    assert blosum.shape == (22, 20) and blosum.dtype == torch.float32
    torch.testing.assert_close(blosum[:20], torch.tensor(BLOSUM62, dtype=torch.float32) / 4)
    torch.testing.assert_close(blosum[:20], blosum[:20].T)
    w = AMINO_ACIDS.index("W")
    assert blosum[w, w] == 11 / 4
    assert (blosum[PAD] == 0).all()
    # the unknown row is BLOSUM62's X row: 0 against A, S, T; -2 against C, P, W; else -1
    x = {a: float(blosum[UNKNOWN, i]) * 4 for i, a in enumerate(AMINO_ACIDS)}
    assert {a for a, v in x.items() if v == 0} == set("AST")
    assert {a for a, v in x.items() if v == -2} == set("CPW")
    assert {a for a, v in x.items() if v == -1} == set(AMINO_ACIDS) - set("ASTCPW")
    # lookup of a padded batch
    tokens = torch.tensor([[0, 1, PAD]])
    assert onehot[tokens].shape == (1, 3, 21) and (onehot[tokens][0, 2] == 0).all()
    encoding_matrix("onehot")[0, 0] = 5.0  # a fresh tensor each call
    assert encoding_matrix("onehot")[0, 0] == 1.0
    with pytest.raises(ValueError, match="onehot"):
        encoding_matrix("blosum50")


def test_q8_to_q3_and_structure_ids():
    assert SS8 == "GHIBESTC" and SS3 == "HEC"
    assert q8_to_q3("HGIEBTSC") == "HHHEECCC"
    assert q8_to_q3(SS8) == "HHHEECCC"
    ids = encode_structure("GHIBESTC", SS8)
    assert ids.tolist() == list(range(8))
    assert q8_to_q3(ids).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert q8_to_q3(np.array([[1, -1], [4, 7]])).tolist() == [[0, -1], [1, 2]]
    t = q8_to_q3(torch.tensor([0, 3, -1]))
    assert isinstance(t, torch.Tensor) and t.tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match="'L'"):
        q8_to_q3("HHL")
    with pytest.raises(ValueError):
        q8_to_q3(np.array([8]))
    with pytest.raises(ValueError) as info:
        encode_structure("HEX", SS3, where="f.csv line 4")
    msg = str(info.value)
    assert "f.csv line 4" in msg and "'X'" in msg and "position 3" in msg


def test_cap_length_keeps_both_ends():
    long = np.arange(1500)
    capped = cap_length(long)
    assert capped.shape == (1000,)
    np.testing.assert_array_equal(capped, np.r_[0:500, 1000:1500])
    seq = "A" * 10 + "C" * 5 + "D" * 10
    assert cap_length(seq, 20) == "A" * 10 + "D" * 10
    assert cap_length("ABCDEFG", 5) == "ABCFG"  # odd: 3 from the start, 2 from the end
    assert cap_length("ABC", 1) == "A"
    assert cap_length(torch.arange(10), 4).tolist() == [0, 1, 8, 9]
    assert cap_length(list(range(6)), 4) == [0, 1, 4, 5]
    short = np.arange(1000)
    assert cap_length(short) is short
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            cap_length("AAAA", bad)


# --------------------------------------------------------------------------- DeepLoc FASTA

GOOD_FASTA = """>P1 Nucleus-U test
MKTAYIAKQR
QISFVKSHFS
RQ

>P2 Cell.membrane-M new_test_set 
MAAPQDVHVRICNQEIVKFDLEVKX
>P3 Lysosome/Vacuole-S
MG
"""


def test_read_deeploc_fasta(tmp_path):
    path = _write(tmp_path, "x.fasta", GOOD_FASTA)
    records = read_deeploc_fasta(path)
    assert [r.accession for r in records] == ["P1", "P2", "P3"]
    r1, r2, r3 = records
    assert isinstance(r1, ProteinRecord)
    assert r1.sequence == "MKTAYIAKQRQISFVKSHFSRQ" and r1.location == "Nucleus"
    assert (r1.membrane, r1.test, r1.source_line) == ("U", True, 1)
    assert r2 == ProteinRecord("P2", "MAAPQDVHVRICNQEIVKFDLEVKX", "Cell.membrane", "M", True, 6)
    assert r3 == ProteinRecord("P3", "MG", "Lysosome/Vacuole", "S", False, 8)
    assert set(LOCATIONS) >= {r.location for r in records} and len(LOCATIONS) == 10


@pytest.mark.parametrize("text,line,fragment", [
    ("MKT\n>P1 Nucleus-S\nMK\n", 1, "before any"),
    (">P1 Nucleus-S\nMK\n>P2\nMK\n", 3, "no location"),
    (">P1 Nucleus-S\nMK\n>\nMK\n", 3, "no accession"),
    (">P1 Nucleus-S\nMK\n>P2 Moon-S\nMK\n", 3, "unknown location 'Moon'"),
    (">P1 Nucleus-S\nMK\n>P2 Moon-Nucleus-S\nMK\n", 3, "unknown location"),
    (">P1 Nucleus-Q\nMK\n", 1, "unknown membrane code 'Q'"),
    (">P1 Nucleus\nMK\n", 1, "Location-MembraneCode"),
    (">P1 Nucleus-S train\nMK\n", 1, "unknown tag 'train'"),
    (">P1 Nucleus-S test extra\nMK\n", 1, "4 fields"),
    (">P1 Nucleus-S\n>P2 Nucleus-S\nMK\n", 1, "empty sequence"),
    (">P1 Nucleus-S\nMK\n\n>P2 Nucleus-S\n\n", 4, "empty sequence"),
    (">P1 Nucleus-S\nMK\n>P2 Cytoplasm-S\nMK\n>P1 Nucleus-S\nMK\n", 5, "duplicate accession P1"),
    (">P1 Nucleus-S\nMKT\nMK1T\n", 3, "'1'"),
    (">P1 Nucleus-S\nMKT\nmkt\n", 3, "'m'"),
    (">P1 Nucleus-S\nMK-T\n", 2, "'-'"),
])
def test_deeploc_fasta_errors_name_the_line(tmp_path, text, line, fragment):
    path = _write(tmp_path, "bad.fasta", text)
    with pytest.raises(ProteinFormatError) as info:
        read_deeploc_fasta(path)
    msg = str(info.value)
    assert f"{path} line {line}:" in msg and fragment in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, DataIntegrityError)


def test_deeploc_duplicate_names_first_line(tmp_path):
    path = _write(tmp_path, "d.fasta", ">P1 Nucleus-S\nMK\n>P1 Nucleus-S\nMK\n")
    with pytest.raises(ProteinFormatError, match="first seen on line 1"):
        read_deeploc_fasta(path)


def test_deeploc_not_utf8(tmp_path):
    path = tmp_path / "b.fasta"
    path.write_bytes(b">P1 Nucleus-S\nMK\xff\n")
    with pytest.raises(ProteinFormatError, match="line 2"):
        read_deeploc_fasta(path)


def test_deeploc_multi_location_policies(tmp_path, caplog):
    text = ">P1 Nucleus-S\nMK\n>P2 Cytoplasm-Nucleus-U\nMKL\n>P3 Cytoplasm-S\nMG\n"
    path = _write(tmp_path, "m.fasta", text)
    with caplog.at_level(logging.INFO, logger="pyro_seq.contrib.protein.data"):
        dropped = read_deeploc_fasta(path)
    assert [r.accession for r in dropped] == ["P1", "P3"]
    assert "dropped 1 multi-location" in caplog.text and "Cytoplasm-Nucleus 1" in caplog.text
    kept = read_deeploc_fasta(path, multi_location="keep")
    assert [r.location for r in kept] == ["Nucleus", "Cytoplasm-Nucleus", "Cytoplasm"]
    assert kept[1].membrane == "U" and kept[1].source_line == 3
    with pytest.raises(ProteinFormatError, match=r"line 3: P2 has the multi-location"):
        read_deeploc_fasta(path, multi_location="error")
    with pytest.raises(ValueError, match="drop"):
        read_deeploc_fasta(path, multi_location="ignore")
    # a multi-location protein kept gets no single class in batches
    batch = protein_batches(kept, 3, sort_by_length=False)[0]
    assert batch.y.tolist() == [LOCATIONS.index("Nucleus"), -1, LOCATIONS.index("Cytoplasm")]


def test_load_deeploc_verifies_before_parsing(tmp_path, monkeypatch):
    info = DEEPLOC_FILES["hard"]
    target = tmp_path / info.relpath
    target.parent.mkdir(parents=True)
    target.write_text(">P1 Nucleus-U new_test_set\nMKV\n")
    sha = hashlib.sha256(target.read_bytes()).hexdigest()
    # wrong checksum: rejected without parsing
    monkeypatch.setattr(protein_mod, "read_deeploc_fasta", lambda *a, **k: pytest.fail("parsed"))
    with pytest.raises(DataIntegrityError) as err:
        load_deeploc("hard", tmp_path, download=True)
    assert info.sha256s[0] in str(err.value) and target.is_file()
    monkeypatch.undo()
    monkeypatch.setattr(download_mod, "URLOPEN", no_network)
    pinned = dict(DEEPLOC_FILES, hard=ImageFile(info.relpath, (sha,), info.url))
    monkeypatch.setattr(protein_mod, "DEEPLOC_FILES", pinned)
    records = load_deeploc("hard", tmp_path, download=False)
    assert records == [ProteinRecord("P1", "MKV", "Nucleus", "U", True, 1)]


def test_load_deeploc_missing_and_bad_split(tmp_path):
    with pytest.raises(DataUnavailableError) as err:
        load_deeploc("test", tmp_path, download=False)
    msg = str(err.value)
    assert DEEPLOC_FILES["test"].url in msg and DEEPLOC_FILES["test"].sha256s[0] in msg
    assert "raw.githubusercontent.com/HannesStark/protein-localization/7b0be1e6" in msg
    with pytest.raises(ValueError, match="hard"):
        load_deeploc("train", tmp_path, download=False)
    with pytest.raises(ValueError, match="keep"):
        load_deeploc("test", tmp_path, download=False, multi_location="all")


@needs_deeploc
def test_deeploc_shared_files():
    before = tree_listing(ROOT / "protein_localization")
    test = load_deeploc("test", ROOT, download=False)
    valid = load_deeploc("valid", ROOT, download=False)
    valid_all = load_deeploc("valid", ROOT, download=False, multi_location="keep")
    hard = load_deeploc("hard", ROOT, download=False)
    assert tree_listing(ROOT / "protein_localization") == before
    assert (len(test), len(valid), len(valid_all), len(hard)) == (2768, 1655, 1678, 490)
    assert Counter(r.location for r in test) == {
        "Nucleus": 806, "Cytoplasm": 505, "Extracellular": 393, "Mitochondrion": 302,
        "Cell.membrane": 273, "Endoplasmic.reticulum": 173, "Plastid": 152,
        "Golgi.apparatus": 70, "Lysosome/Vacuole": 64, "Peroxisome": 30,
    }
    # LOCATIONS is in the order of SOURCES.md (by test-split count)
    assert [loc for loc, _ in Counter(r.location for r in test).most_common()] == list(LOCATIONS)
    extra = Counter(r.location for r in valid_all) - Counter(r.location for r in valid)
    assert extra == {"Cytoplasm-Nucleus": 23}
    assert set(r.location for r in valid) == set(LOCATIONS) == set(r.location for r in hard)
    assert all(r.test for r in test) and all(r.test for r in hard)
    assert not any(r.test for r in valid_all)
    assert {r.membrane for r in hard} == {"U"}
    lengths = [len(r.sequence) for r in test + valid_all + hard]
    assert (min(lengths), max(lengths)) == (40, 13100)
    accessions = [r.accession for r in test + valid_all + hard]
    assert len(set(accessions)) == len(accessions)
    # setHARD puts each sequence on the line after its header
    assert all(r.source_line == 2 * i + 1 for i, r in enumerate(hard))
    batches = protein_batches(hard, 64, max_length=1000)
    assert sum(b.frames for b in batches) == 490
    assert max(b.tokens.size(1) for b in batches) == 1000


@needs_deeploc
def test_deeploc_shared_file_tampered_copy_rejected(tmp_path, monkeypatch):
    info = DEEPLOC_FILES["test"]
    target = tmp_path / info.relpath
    target.parent.mkdir(parents=True)
    shutil.copyfile(ROOT / info.relpath, target)
    data = bytearray(target.read_bytes())
    data[1000] = ord("X") if data[1000] != ord("X") else ord("A")
    target.write_bytes(bytes(data))
    monkeypatch.setattr(protein_mod, "read_deeploc_fasta", lambda *a, **k: pytest.fail("parsed"))
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_deeploc("test", tmp_path)


# --------------------------------------------------------------------------- CB513 CSV

CSV_HEADER = "input,dssp3,dssp8,disorder,cb513_mask\n"


def _csv_row(seq="MKV", q3="CHE", q8="CHE", disorder="1.0 1.0 0.0 ", mask="0.0 1.0 1.0"):
    return f"{seq},{q3},{q8},{disorder},{mask}\n"


def test_read_cb513_csv(tmp_path):
    rows = _csv_row() + _csv_row("AC", "HH", "GI", "1 1", "1 0") + "\n"
    path = _write(tmp_path, "cb.csv", CSV_HEADER + rows)
    records = read_cb513_csv(path)
    assert len(records) == 2
    r = records[0]
    assert isinstance(r, SecondaryStructureRecord)
    assert (r.sequence, r.q8, r.q3, r.source_line) == ("MKV", "CHE", "CHE", 2)
    assert r.disorder.dtype == bool and r.disorder.tolist() == [False, False, True]
    assert r.eval_mask.dtype == bool and r.eval_mask.tolist() == [False, True, True]
    assert records[1].source_line == 3 and records[1].q3 == q8_to_q3(records[1].q8)


@pytest.mark.parametrize("row,line,fragment", [
    ("MKV,CHE,CHE,1 1 1\n", 3, "4 fields"),
    (_csv_row(q3="CH"), 3, "'dssp3' has 2 letters"),
    (_csv_row(q8="CHEE"), 3, "'dssp8' has 4 letters"),
    (_csv_row(disorder="1 1"), 3, "'disorder' has 2 values"),
    (_csv_row(mask="1 1 1 1"), 3, "'cb513_mask' has 4 values"),
    (_csv_row(q8="CLE"), 3, "'L'"),
    (_csv_row(q3="CGE"), 3, "'G'"),
    (_csv_row(mask="0 2.0 1"), 3, "'2.0' at residue 2 is not 0 or 1"),
    (_csv_row(disorder="1 x 1"), 3, "'x' at residue 2"),
    (_csv_row(disorder="1 nan 1"), 3, "'nan'"),
    (_csv_row(seq="MkV"), 3, "'k'"),
    (_csv_row(seq="", q3="", q8="", disorder="", mask=""), 3, "empty sequence"),
])
def test_cb513_csv_errors_name_the_line(tmp_path, row, line, fragment):
    path = _write(tmp_path, "bad.csv", CSV_HEADER + _csv_row() + row)
    with pytest.raises(ProteinFormatError) as info:
        read_cb513_csv(path)
    msg = str(info.value)
    assert f"{path} line {line}:" in msg and fragment in msg


@pytest.mark.parametrize("header", ["input,dssp8,dssp3,disorder,cb513_mask\n", "seq,q3\n", ""])
def test_cb513_csv_wrong_header(tmp_path, header):
    path = _write(tmp_path, "h.csv", header + (_csv_row() if header else ""))
    with pytest.raises(ProteinFormatError, match=r"line 1: header"):
        read_cb513_csv(path)


def test_load_cb513_missing(tmp_path):
    with pytest.raises(DataUnavailableError) as err:
        load_cb513(tmp_path, download=False)
    assert CB513_FILE.sha256s[0] in str(err.value) and CB513_FILE.url in str(err.value)


@needs_cb513
def test_cb513_shared_file_counts():
    before = tree_listing(ROOT / "protein_ss")
    records = load_cb513(ROOT, download=False)
    assert tree_listing(ROOT / "protein_ss") == before
    assert len(records) == 511
    lengths = [len(r.sequence) for r in records]
    assert sum(lengths) == 144011 and (min(lengths), max(lengths)) == (20, 874)
    assert sum(int(r.eval_mask.sum()) for r in records) == 83991
    assert Counter("".join(r.q3 for r in records)) == {"C": 63084, "H": 49006, "E": 31921}
    assert all(r.q3 == q8_to_q3(r.q8) for r in records)
    assert all(len(r.q8) == len(r.disorder) == len(r.eval_mask) == len(r.sequence) for r in records)
    # disordered residues (NetSurfP's 0 = disordered) are few and all coil
    disordered = sum(int(r.disorder.sum()) for r in records)
    assert disordered == 3525
    assert {r.q8[i] for r in records for i in np.flatnonzero(r.disorder)} == {"C"}
    # identical chains exist in CB513: folds never split them
    folds = sequence_folds(records, num_folds=5, seed=0)
    by_seq = {}
    for r, f in zip(records, folds):
        by_seq.setdefault(r.sequence, set()).add(int(f))
    assert len(by_seq) < len(records) and all(len(s) == 1 for s in by_seq.values())
    batches = protein_batches(records, 64, target="q3")
    assert sum(int(b.eval_mask.sum()) for b in batches) == 83991
    assert sum(int((b.y >= 0).sum()) for b in batches) == 144011


# --------------------------------------------------------------------------- Zhou & Troyanskaya

ZT_RES = "ACEDGFIHKMLNQPSRTWVYX"
ZT_SS = "LBEGIHST"


def _zt_array(seqs, labels, noseq_padding=(True,) * 10, rng=None):
    """A synthetic ``[N, 700, 57]`` float32 array in the Zhou & Troyanskaya layout."""
    rng = rng or np.random.default_rng(0)
    arr = np.zeros((len(seqs), 700, 57), dtype=np.float32)
    for i, (s, q) in enumerate(zip(seqs, labels)):
        for j, (c, l) in enumerate(zip(s, q)):
            arr[i, j, ZT_RES.index(c)] = 1
            if l != "?":
                arr[i, j, 22 + ZT_SS.index(l)] = 1
            arr[i, j, 35:57] = rng.random(22)
        if noseq_padding[i]:
            arr[i, len(s):, 21] = 1
            arr[i, len(s):, 30] = 1
        arr[i, 0, 31] = 1
        arr[i, len(s) - 1, 32] = 1
    return arr


def _zt_example():
    seqs = ["ACEDGFIHKMLNQPSRTWVYX", "MKV", "W" * 700]
    labels = ["LBEGIHSTLBEGIHSTLBEG?", "HHE", "E" * 700]
    return seqs, labels, _zt_array(seqs, labels, noseq_padding=(True, False, True))


@pytest.mark.parametrize("gz", [False, True])
def test_load_zhou_troyanskaya(tmp_path, gz):
    seqs, labels, arr = _zt_example()
    flat = arr.reshape(len(seqs), 700 * 57)
    path = tmp_path / ("zt.npy.gz" if gz else "zt.npy")
    if gz:
        with gzip.open(path, "wb") as f:
            np.save(f, flat)
    else:
        np.save(path, flat)
    data = load_zhou_troyanskaya(path)
    assert isinstance(data, ZhouTroyanskayaData)
    assert data.tokens.shape == (3, 700) and data.tokens.dtype == np.int64
    assert data.q8.shape == (3, 700) and data.mask.dtype == bool
    assert data.profiles.shape == (3, 700, 22) and data.profiles.dtype == np.float32
    assert data.lengths.tolist() == [21, 3, 700]
    for i, (s, q) in enumerate(zip(seqs, labels)):
        n = len(s)
        np.testing.assert_array_equal(data.tokens[i, :n], tokenize(s))
        assert (data.tokens[i, n:] == PAD).all()
        assert data.mask[i, :n].all() and not data.mask[i, n:].any()
        want = [-1 if c == "?" else SS8.index("C" if c == "L" else c) for c in q]
        assert data.q8[i, :n].tolist() == want and (data.q8[i, n:] == -1).all()
    np.testing.assert_array_equal(data.profiles, arr[:, :, 35:57])
    assert data.tokens[0, 20] == UNKNOWN  # X
    # per-residue batches straight from the arrays
    batches = protein_batches(data, 2)
    assert [b.tokens.shape[1] for b in batches] == [21, 700]
    first = batches[0]
    assert first.index.tolist() == [1, 0] and first.y[0, 3:].eq(-1).all()
    assert first.y[1, 20] == -1 and first.eval_mask is None and first.membrane is None
    q3 = protein_batches(data, 3, target="q3")[0]
    assert q3.y.max() <= 2 and q3.y[2].eq(SS3.index("E")).all()


def test_load_zhou_troyanskaya_accepts_3d(tmp_path):
    _, _, arr = _zt_example()
    np.save(tmp_path / "a.npy", arr.astype(np.float64))
    assert load_zhou_troyanskaya(tmp_path / "a.npy").lengths.tolist() == [21, 3, 700]


def _bad(arr, fn):
    arr = arr.copy()
    fn(arr)
    return arr


@pytest.mark.parametrize("make,fragment", [
    (lambda a: a.reshape(3, 700 * 57)[:, :-57], "shape"),
    (lambda a: a[:, :699], "shape"),
    (lambda a: a[:0], "shape"),
    (lambda a: _bad(a, lambda x: x.__setitem__((0, 0, 0), 0.5)), "0 or 1"),
    (lambda a: _bad(a, lambda x: x.__setitem__((0, 0, 5), 1)), "more than one residue"),
    (lambda a: _bad(a, lambda x: x.__setitem__((1, 1, 23), 1)), "more than one secondary"),
    (lambda a: _bad(a, lambda x: x.__setitem__((1, 1, slice(0, 22)), 0)), "not a prefix"),
    (lambda a: _bad(a, lambda x: x.__setitem__((1, slice(0, 3), slice(0, 21)), 0)), "no residues"),
    (lambda a: a.astype(np.complex64), "numeric"),
])
def test_load_zhou_troyanskaya_validation(tmp_path, make, fragment):
    _, _, arr = _zt_example()
    path = tmp_path / "bad.npy"
    np.save(path, make(arr))
    with pytest.raises(ProteinFormatError, match=fragment) as info:
        load_zhou_troyanskaya(path)
    assert str(path) in str(info.value)


def test_load_zhou_troyanskaya_never_unpickles(tmp_path):
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, None]
    path = tmp_path / "obj.npy"
    np.save(path, obj, allow_pickle=True)
    with pytest.raises(ProteinFormatError, match="without pickle"):
        load_zhou_troyanskaya(path)
    gz = tmp_path / "obj.npy.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(ProteinFormatError, match="gzipped"):
        load_zhou_troyanskaya(gz)
    npz = tmp_path / "x.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(ProteinFormatError, match="npz"):
        load_zhou_troyanskaya(npz)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not an array at all")
    with pytest.raises(ProteinFormatError):
        load_zhou_troyanskaya(junk)


# --------------------------------------------------------------------------- folds


def _grouped_sequences(rng):
    seqs = []
    for g in range(60):
        seqs += ["M" + "A" * g + "K"] * int(rng.integers(1, 6))
    return [seqs[i] for i in rng.permutation(len(seqs))]


def test_sequence_folds_keep_duplicates_together_and_balance():
    seqs = _grouped_sequences(np.random.default_rng(1))
    folds = sequence_folds(seqs, num_folds=5, seed=3)
    assert folds.shape == (len(seqs),) and folds.dtype == np.int64
    assert set(folds.tolist()) == set(range(5))
    by_seq = {}
    for s, f in zip(seqs, folds):
        by_seq.setdefault(s, set()).add(int(f))
    assert all(len(v) == 1 for v in by_seq.values())
    sizes = np.bincount(folds, minlength=5)
    largest = max(Counter(seqs).values())
    assert sizes.max() - sizes.min() <= largest
    np.testing.assert_array_equal(folds, sequence_folds(seqs, num_folds=5, seed=3))
    assert not np.array_equal(folds, sequence_folds(seqs, num_folds=5, seed=4))
    records = [ProteinRecord(f"P{i}", s, "Nucleus", "S", False, i) for i, s in enumerate(seqs)]
    np.testing.assert_array_equal(sequence_folds(records, 5, seed=3), folds)


def test_sequence_folds_errors():
    with pytest.raises(ValueError, match="num_folds"):
        sequence_folds(["AA", "CC"], num_folds=1)
    with pytest.raises(ValueError, match="2 distinct sequences"):
        sequence_folds(["AA", "CC", "AA"], num_folds=3)


# --------------------------------------------------------------------------- batches


def _records(rng, n=23):
    out = []
    codes = "SMU"
    for i in range(n):
        length = int(rng.integers(1, 60))
        seq = "".join(rng.choice(list(AMINO_ACIDS + "X"), size=length))
        out.append(ProteinRecord(f"P{i}", seq, LOCATIONS[i % 10], codes[i % 3], False, 2 * i + 1))
    return out


def test_protein_batches_localisation():
    records = _records(np.random.default_rng(0))
    batches = protein_batches(records, batch_size=5)
    assert [b.frames for b in batches] == [5, 5, 5, 5, 3]
    seen = []
    prev_max = 0
    for b in batches:
        assert isinstance(b, ProteinBatch)
        B, L = b.tokens.shape
        assert b.tokens.dtype == torch.long and b.mask.dtype == torch.bool and b.y.shape == (B,)
        assert b.membrane.shape == (B,) and b.eval_mask is None
        assert L == int(b.lengths.max())
        lengths = b.lengths.tolist()
        assert min(lengths) >= prev_max  # sorted by length across batches
        prev_max = max(lengths)
        for row, i in enumerate(b.index.tolist()):
            r = records[i]
            n = len(r.sequence)
            assert b.tokens[row, :n].tolist() == tokenize(r.sequence).tolist()
            assert (b.tokens[row, n:] == PAD).all()
            assert b.mask[row, :n].all() and not b.mask[row, n:].any()
            assert b.y[row] == LOCATIONS.index(r.location)
            assert b.membrane[row] == {"S": 0, "M": 1, "U": -1}[r.membrane]
        seen += b.index.tolist()
        args = b.args
        assert len(args) == 4 and args[0] is b.tokens and args[3] is b.membrane
    assert sorted(seen) == list(range(len(records)))


def test_protein_batches_reduce_padding_and_shuffle_deterministically():
    records = _records(np.random.default_rng(1), n=64)

    def padded(batches):
        return sum(b.tokens.numel() for b in batches)

    unsorted = protein_batches(records, 8, sort_by_length=False)
    assert padded(protein_batches(records, 8)) < padded(unsorted)
    a = protein_batches(records, 8, shuffle=True, seed=0, epoch=0)
    b = protein_batches(records, 8, shuffle=True, seed=0, epoch=0)
    c = protein_batches(records, 8, shuffle=True, seed=0, epoch=1)
    order = lambda bs: [x.index.tolist() for x in bs]  # noqa: E731
    assert order(a) == order(b) and order(a) != order(c)
    for x, y in zip(a, b):
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.y, y.y)
    assert sorted(i for x in c for i in x.index.tolist()) == list(range(64))
    # shuffled batches still group similar lengths (same padding as unshuffled up to ties)
    assert padded(a) <= padded(protein_batches(records, 8, sort_by_length=False, shuffle=True))
    unsorted = protein_batches(records, 8, sort_by_length=False)
    assert order(unsorted) == [list(range(i, i + 8)) for i in range(0, 64, 8)]


def test_protein_batches_secondary_structure(tmp_path):
    rows = _csv_row("MKVAA", "CHHEC", "CGHEC", "1 1 1 1 0", "0 1 1 1 0") + _csv_row()
    records = read_cb513_csv(_write(tmp_path, "c.csv", CSV_HEADER + rows))
    (batch,) = protein_batches(records, 4, sort_by_length=False)
    assert batch.tokens.shape == batch.y.shape == batch.eval_mask.shape == (2, 5)
    assert batch.y[0].tolist() == encode_structure("CGHEC", SS8).tolist()
    assert batch.y[1].tolist() == encode_structure("CHE", SS8).tolist() + [-1, -1]
    assert batch.eval_mask.tolist() == [
        [False, True, True, True, False],
        [False, True, True, False, False],
    ]
    assert len(batch.args) == 3 and batch.frames == 2.0
    (q3,) = protein_batches(records, 4, sort_by_length=False, target="q3")
    assert q3.y[0].tolist() == encode_structure("CHHEC", SS3).tolist()
    (capped,) = protein_batches(records, 4, sort_by_length=False, max_length=4)
    assert capped.tokens[0].tolist() == tokenize("MKAA").tolist()
    assert capped.y[0].tolist() == encode_structure("CGEC", SS8).tolist()
    assert capped.eval_mask[0].tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="target"):
        protein_batches(records, 4, target="q4")


def test_protein_batches_pairs_and_errors():
    pairs = [("MKV", 2), (np.array([0, 1]), 0), (torch.tensor([3, 4, 5, 6]), 1)]
    batches = protein_batches(pairs, 2)
    assert [b.index.tolist() for b in batches] == [[1, 0], [2]]
    assert batches[0].y.tolist() == [0, 2] and len(batches[0].args) == 3
    per_residue = protein_batches([("MK", [0, -1]), ("A", np.array([2]))], 2)[0]
    assert per_residue.y.tolist() == [[2, -1], [0, -1]]
    with pytest.raises(ValueError, match="item 1: empty sequence"):
        protein_batches([("MK", 0), ("", 1)], 2)
    empty = ProteinRecord("P9", "", "Nucleus", "S", False, 17)
    with pytest.raises(ValueError, match="P9, line 17.*empty sequence"):
        protein_batches([empty], 2)
    with pytest.raises(ValueError, match="at least one"):
        protein_batches([], 2)
    with pytest.raises(ValueError, match="mixed"):
        protein_batches([("MK", 0), ("MK", [0, 1])], 2)
    with pytest.raises(ValueError, match="labels for 2 residues"):
        protein_batches([("MK", [0, 1, 2])], 2)
    with pytest.raises(ValueError, match="token ids"):
        protein_batches([(np.array([0, PAD]), 0)], 2)
    with pytest.raises(ValueError, match="'k'"):
        protein_batches([("Mk", 0)], 2)
    with pytest.raises(TypeError):
        protein_batches([42], 2)
    record = ProteinRecord("P1", "MK", "Nucleus", "S", False, 1)
    with pytest.raises(ValueError, match="mixed input kinds"):
        protein_batches([record, ("MK", 0)], 2)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="batch_size"):
            protein_batches(pairs, bad)


def test_protein_batch_to_and_trainer_unpack():
    from pyro_seq.training.trainer import _unpack

    batch = protein_batches(_records(np.random.default_rng(2), n=4), 4)[0]
    moved = batch.to("cpu")
    assert isinstance(moved, ProteinBatch) and moved.eval_mask is None
    assert torch.equal(moved.tokens, batch.tokens) and torch.equal(moved.membrane, batch.membrane)
    args, frames = _unpack(batch)
    assert frames == 4.0 and len(args) == 4 and args[1].dtype == torch.bool


@pytest.mark.cuda
def test_protein_batch_pin_memory_and_cuda():
    batch = protein_batches(_records(np.random.default_rng(3), n=4), 4)[0]
    pinned = batch.pin_memory()
    assert pinned.tokens.is_pinned() and pinned.eval_mask is None
    on_gpu = pinned.to("cuda", non_blocking=True)
    assert on_gpu.tokens.is_cuda and on_gpu.y.is_cuda
    assert torch.equal(on_gpu.tokens.cpu(), batch.tokens)
