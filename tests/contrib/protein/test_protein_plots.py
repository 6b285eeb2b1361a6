import math

import numpy as np
import pytest
import torch

from pyro_seq.contrib.protein.data import AMINO_ACIDS, SS8, protein_batches, tokenize
from pyro_seq.contrib.protein.models import ProteinLocalizer, SecondaryStructureBLSTM
from pyro_seq.contrib.protein.plots import KYTE_DOOLITTLE, attention_position_profile, attention_profile, attention_track, filter_logos, information_content, kyte_doolittle, pfm_from_windows, structure_strip, top_filter_windows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = open(path, "rb").read()
    return len(data) > 100 and data[:8] == PNG_MAGIC


def _random_sequence(rng, n):
    return "".join(rng.choice(list(AMINO_ACIDS), size=n))


@pytest.fixture
def localizer():
    torch.manual_seed(0)
    return ProteinLocalizer(filters=2, hidden=4, attention_dim=4, dense=4)


@pytest.fixture
def ss_model():
    torch.manual_seed(0)
    return SecondaryStructureBLSTM(filters=2, hidden=4, ff_dim=4, dense=4)


@pytest.fixture
def loc_batches():
    rng = np.random.default_rng(0)
    items = [(_random_sequence(rng, int(n)), k % 10) for k, n in enumerate(rng.integers(12, 60, size=11))]
    items.append((_random_sequence(rng, 30), -1))  # no single location: skipped
    return protein_batches(items, 4)


# ---------------------------------------------------------------------------
# attention profile


def test_attention_profile_png(localizer, loc_batches, tmp_path):
    out = attention_profile(localizer, loc_batches, tmp_path / "sub" / "profile.png", window=20, title="t")
    assert _is_png(out)


def test_attention_position_profile_normalisation(localizer):
    seqs = [("MKVLAAGIRRST", 3), ("MKTAYIAKQRQISFVKSHFSRQ", 3), ("ACDEFGHIK", 5), ("ACDEFGHIKLMN", -1)]
    prof = attention_position_profile(localizer, protein_batches(seqs, 2), window=15)
    assert prof["proteins"].tolist() == [0, 0, 0, 2, 0, 1, 0, 0, 0, 0]
    # class 5: one protein of 9 residues, shorter than the window: weight x length sums to 9
    assert np.nansum(prof["n_term"][5]) == pytest.approx(9.0, rel=1e-5)
    assert np.isnan(prof["n_term"][5, 9:]).all() and prof["counts_n"][5, :9].tolist() == [1] * 9
    # the C-terminal profile is the reversed N-terminal one for a protein within the window
    np.testing.assert_allclose(prof["c_term"][5, :9], prof["n_term"][5, :9][::-1], rtol=1e-6)
    # class 3: the 12-residue protein counts at positions 0..11, the 22-residue one everywhere
    assert prof["counts_n"][3, :12].tolist() == [2] * 12 and prof["counts_n"][3, 12:].tolist() == [1] * 3
    tokens = torch.as_tensor(tokenize("ACDEFGHIK")).unsqueeze(0)
    alpha = localizer.attention(tokens)[0].double().numpy()
    np.testing.assert_allclose(prof["n_term"][5, :9], 9 * alpha, rtol=1e-5)
    assert np.isnan(prof["n_term"][0]).all()


def test_attention_profile_bad_inputs(localizer, ss_model, loc_batches, tmp_path):
    with pytest.raises(ValueError, match="ProteinLocalizer"):
        attention_profile(ss_model, loc_batches, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no protein"):
        attention_profile(localizer, [], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no protein"):
        attention_profile(localizer, protein_batches([("ACDEFG", -1)], 2), tmp_path / "x.png")
    with pytest.raises(ValueError, match="per-protein"):
        attention_profile(localizer, protein_batches([("ACDEFG", [0] * 6)], 2), tmp_path / "x.png")
    with pytest.raises(ValueError, match="ProteinBatch"):
        attention_profile(localizer, [(1, 2, 3)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="window"):
        attention_profile(localizer, loc_batches, tmp_path / "x.png", window=0)
    # one batch on its own is accepted (a ProteinBatch is itself a tuple)
    assert _is_png(attention_profile(localizer, loc_batches[0], tmp_path / "one.png", window=5))


# ---------------------------------------------------------------------------
# attention track and hydropathy


def test_kyte_doolittle_values():
    kd = kyte_doolittle("AIK", window=3)
    assert kd.shape == (3,) and np.isnan(kd[0]) and np.isnan(kd[2])
    assert kd[1] == pytest.approx((1.8 + 4.5 - 3.9) / 3)
    np.testing.assert_allclose(kyte_doolittle("ARND", window=1), [1.8, -4.5, -3.5, -3.5])
    assert kyte_doolittle("AXK", window=3)[1] == pytest.approx((1.8 - 3.9) / 2)  # X left out
    assert np.isnan(kyte_doolittle("AIK", window=9)).all()  # window longer than the protein
    seq = "MKKLLILAVLAVSASA"
    kd9 = kyte_doolittle(seq)
    assert np.isnan(kd9[:4]).all() and np.isnan(kd9[-4:]).all()
    assert kd9[4] == pytest.approx(np.mean([KYTE_DOOLITTLE[a] for a in seq[:9]]))
    assert len(KYTE_DOOLITTLE) == 20 and set(KYTE_DOOLITTLE) == set(AMINO_ACIDS)


@pytest.mark.parametrize("bad", [dict(sequence="AIK", window=2), dict(sequence="AIK", window=0),
                                 dict(sequence="", window=3), dict(sequence="aik", window=3)])
def test_kyte_doolittle_bad(bad):
    with pytest.raises(ValueError):
        kyte_doolittle(**bad)


def test_attention_track_png(localizer, tmp_path):
    rng = np.random.default_rng(1)
    seq = "MKKLLILAVLAVSASA" + _random_sequence(rng, 40) + "SKL"
    n = len(seq)
    out = attention_track(localizer, seq, tmp_path / "track.png", title="toy",
                          regions=[(1, 16, "signal peptide"), (n - 2, n, "PTS1"), (20, 25, None)])
    assert _is_png(out)
    assert _is_png(attention_track(localizer, "ACD", tmp_path / "short.png"))  # shorter than the KD window


def test_attention_track_bad_inputs(localizer, ss_model, tmp_path):
    with pytest.raises(ValueError, match="ProteinLocalizer"):
        attention_track(ss_model, "ACDEFG", tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        attention_track(localizer, "", tmp_path / "x.png")
    with pytest.raises(ValueError, match="invalid character"):
        attention_track(localizer, "ACD-EF", tmp_path / "x.png")
    with pytest.raises(ValueError, match="start <= end"):
        attention_track(localizer, "ACDEFG", tmp_path / "x.png", regions=[(3, 10, "x")])
    with pytest.raises(ValueError, match="regions"):
        attention_track(localizer, "ACDEFG", tmp_path / "x.png", regions=[5])


# ---------------------------------------------------------------------------
# filter logos


def test_information_content():
    one_hot = np.zeros((1, 20))
    one_hot[0, 3] = 1.0
    uniform = np.full((1, 20), 1 / 20)
    ic = information_content(np.concatenate([one_hot, uniform]))
    np.testing.assert_allclose(ic, [math.log2(20), 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        information_content(np.ones((3, 4)) / 4)
    with pytest.raises(ValueError, match="sum"):
        information_content(np.ones((2, 20)))


def test_pfm_from_windows():
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 20, size=(50, 7))
    pfm = pfm_from_windows(windows)
    assert pfm.shape == (7, 20)
    np.testing.assert_allclose(pfm.sum(-1), 1.0)
    np.testing.assert_allclose(pfm[0], np.bincount(windows[:, 0], minlength=20) / 50)
    strings = pfm_from_windows(["ACD", "ACE", "XCE"])  # X is not counted
    assert strings[0, AMINO_ACIDS.index("A")] == 1.0
    assert strings[2, AMINO_ACIDS.index("E")] == pytest.approx(2 / 3)
    np.testing.assert_allclose(pfm_from_windows(windows[:1], pseudocount=1.0).sum(-1), 1.0)
    for bad in (np.zeros((0, 3), dtype=np.int64), np.full((2, 3), 22), np.ones((2, 3)), ["AC", "ACD"]):
        with pytest.raises(ValueError):
            pfm_from_windows(bad)
    with pytest.raises(ValueError, match="no standard amino acid"):
        pfm_from_windows(np.full((2, 3), 20))


def test_top_filter_windows_activations(localizer, loc_batches):
    width = 5
    found = top_filter_windows(localizer, loc_batches, width=width, num_filters=6, top=7)
    assert [f["filter"] for f in found] == [0, 1]  # num_filters is capped at model.filters
    i = localizer.widths.index(width)
    conv = localizer.conv.convs[i]
    table = np.asarray(localizer.encoding_table, dtype=np.float64)  # [22, F]
    for item in found:
        acts, wins = item["activations"], item["windows"]
        assert wins.shape == (7, width) and (wins < 20).all()
        assert np.all(np.diff(acts) <= 1e-12)
        # the activation is the pre-ReLU filter response to exactly that window
        w = conv.weight[item["filter"]].detach().double().numpy()  # [F, width]
        b = float(conv.bias[item["filter"]].detach())
        for a, win in zip(acts, wins):
            assert a == pytest.approx(b + float(np.sum(w * table[win].T)), abs=1e-5)
    # the best windows occur in the proteins
    seqs = {"".join(AMINO_ACIDS[t] for t in batch.tokens[r, : int(batch.lengths[r])]) for batch in loc_batches
            for r in range(batch.tokens.size(0))}
    for win in found[0]["windows"]:
        assert any("".join(AMINO_ACIDS[t] for t in win) in s for s in seqs)
    best = top_filter_windows(localizer, loc_batches, width=width, num_filters=2, top=3, select="max")
    assert best[0]["activations"][0] >= best[1]["activations"][0]


def test_filter_logos_png(localizer, loc_batches, tmp_path):
    out = filter_logos(localizer, loc_batches, tmp_path / "logos.png", width=9, num_filters=6, top=20, title="w9")
    assert _is_png(out)


def test_filter_logos_bad_inputs(localizer, ss_model, loc_batches, tmp_path):
    with pytest.raises(ValueError, match="ProteinLocalizer"):
        filter_logos(ss_model, loc_batches, tmp_path / "x.png")
    with pytest.raises(ValueError, match="widths"):
        filter_logos(localizer, loc_batches, tmp_path / "x.png", width=7)
    with pytest.raises(ValueError, match="empty"):
        filter_logos(localizer, [], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no window"):
        filter_logos(localizer, protein_batches([("ACDEF", 0)], 2), tmp_path / "x.png", width=9)
    with pytest.raises(ValueError, match="select"):
        filter_logos(localizer, loc_batches, tmp_path / "x.png", select="best")


# ---------------------------------------------------------------------------
# secondary structure strip


def _ss_batch(lengths, seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for n in lengths:
        y = rng.integers(0, len(SS8), size=n)
        y[rng.random(n) < 0.1] = -1  # unlabelled residues
        items.append((_random_sequence(rng, n), y))
    return protein_batches(items, len(lengths), sort_by_length=False)[0]


def test_structure_strip_png(ss_model, tmp_path):
    batch = _ss_batch([230, 40])
    out = structure_strip(ss_model, batch.tokens, batch.mask, batch.y, tmp_path / "strip.png", index=0)
    assert _is_png(out)  # wrapped into two lines
    out = structure_strip(ss_model, batch.tokens, batch.mask, batch.y, tmp_path / "capped.png", index=0,
                          title="capped", max_residues=60, line_length=50)
    assert _is_png(out)
    assert _is_png(structure_strip(ss_model, batch.tokens, None, None, tmp_path / "pred.png", index=1))


def test_structure_strip_bayesian_last_layer(tmp_path):
    from pyro_seq.contrib.protein.guides import LastLayerGuide

    torch.manual_seed(0)
    model = SecondaryStructureBLSTM(filters=2, hidden=4, ff_dim=4, dense=4, bayesian_last_layer=True)
    batch = _ss_batch([30])
    out = structure_strip(model, batch.tokens, batch.mask, batch.y, tmp_path / "bll.png",
                          guide=LastLayerGuide(model), num_samples=3)
    assert _is_png(out)


def test_structure_strip_bad_inputs(localizer, ss_model, tmp_path):
    batch = _ss_batch([20, 10])
    with pytest.raises(ValueError, match="SecondaryStructureBLSTM"):
        structure_strip(localizer, batch.tokens, batch.mask, batch.y, tmp_path / "x.png")
    with pytest.raises(ValueError, match="index"):
        structure_strip(ss_model, batch.tokens, batch.mask, batch.y, tmp_path / "x.png", index=2)
    with pytest.raises(ValueError, match="shape"):
        structure_strip(ss_model, batch.tokens, batch.mask, batch.y[:, :5], tmp_path / "x.png")
    with pytest.raises(ValueError, match="class indices"):
        structure_strip(ss_model, batch.tokens, batch.mask, batch.y.clamp_min(0) + 8, tmp_path / "x.png")
    with pytest.raises(ValueError, match="max_residues"):
        structure_strip(ss_model, batch.tokens, batch.mask, batch.y, tmp_path / "x.png", max_residues=0)
