"""Data files as users have them: a WAV file cut short is named as truncated (not read short), and
a text file with a byte-order mark reads like the same file without one."""

import numpy as np
import pytest
from reliability_cases import record
from scipy.io import wavfile

from pyro_seq.contrib.protein.data import read_cb513_csv, read_deeploc_fasta
from pyro_seq.data import DataIntegrityError
from pyro_seq.data.wav import read_wav


def test_a_truncated_wav_file_is_an_error_naming_it(tmp_path):
    samples = (np.sin(np.arange(1000) / 10) * 10000).astype(np.int16)
    whole = tmp_path / "whole.wav"
    wavfile.write(whole, 16000, samples)
    rate, x = read_wav(whole)
    assert rate == 16000 and x.shape == (1000,)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:-500])
    with pytest.raises(DataIntegrityError, match=r"cut.wav is truncated"):
        read_wav(cut)
    record("data files", "wav", "read_wav", "truncated file", True)


FASTA = ">P1 Nucleus-S\nMKV\nLLA\n>P2 Cytoplasm-U test\nMSTN\n"
CSV_HEADER = "input,dssp3,dssp8,disorder,cb513_mask\n"
CSV_ROW = "MKV,CHE,CHE,1.0 1.0 0.0,0.0 1.0 1.0\n"


@pytest.mark.parametrize("kind", ["fasta", "csv"])
def test_a_byte_order_mark_is_read_as_the_same_file(tmp_path, kind):
    text = FASTA if kind == "fasta" else CSV_HEADER + CSV_ROW
    read = read_deeploc_fasta if kind == "fasta" else read_cb513_csv
    plain, marked = tmp_path / f"plain.{kind}", tmp_path / f"marked.{kind}"
    plain.write_text(text, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    expected = read(plain)
    assert len(expected) == (2 if kind == "fasta" else 1)
    got = read(marked)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):  # records (named tuples) with arrays in them
        for field_a, field_b in zip(a, b):
            assert np.array_equal(np.asarray(field_a), np.asarray(field_b)), (field_a, field_b)
    record("data files", kind, read.__name__, "byte-order mark", True)
