"""The protein protocol: splits, Gorodkin correlation, metrics and the train/evaluate commands."""

import json

import numpy as np
import pytest
import torch

from conftest import shared_data_root
from pyro_seq.contrib.protein.metrics import gorodkin_correlation, localization_splits, structure_splits

ROOT = shared_data_root()
needs_deeploc = pytest.mark.skipif(not (ROOT / "protein_localization" / "deeploc_test_set.fasta").is_file(), reason="DeepLoc files not under the data root")
needs_cb513 = pytest.mark.skipif(not (ROOT / "protein_ss" / "CB513.csv").is_file(), reason="CB513.csv not under the data root")


def test_gorodkin_equals_multiclass_mcc():
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 500)
    pred = np.where(rng.random(500) < 0.6, y, rng.integers(0, 5, 500))
    confusion = np.bincount(y * 5 + pred, minlength=25).reshape(5, 5)
    assert gorodkin_correlation(confusion) == pytest.approx(matthews_corrcoef(y, pred), abs=1e-12)
    assert gorodkin_correlation(np.eye(4) * 7) == pytest.approx(1.0)
    assert gorodkin_correlation(np.ones((3, 3))) == 0.0  # nothing learned: 0, not NaN
    with pytest.raises(ValueError, match="square"):
        gorodkin_correlation(np.ones((2, 3)))


@needs_deeploc
def test_localization_protocols_keep_identical_sequences_apart():
    train, valid, tests = localization_splits("deeploc", data_root=ROOT)
    assert len(train) + len(valid) == 1655 and set(tests) == {"deeploc_test", "setHARD"}
    assert len(tests["deeploc_test"]) == 2768 and len(tests["setHARD"]) == 490
    assert not {r.sequence for r in train} & {r.sequence for r in valid}
    train, valid, tests = localization_splits("cv", fold=2, num_folds=5, data_root=ROOT)
    (test,) = tests.values()
    seqs = [{r.sequence for r in part} for part in (train, valid, test)]
    assert not (seqs[0] & seqs[1] or seqs[0] & seqs[2] or seqs[1] & seqs[2])
    assert len(train) + len(valid) + len(test) == 1655 + 2768
    with pytest.raises(ValueError, match="fold"):
        localization_splits("cv", fold=5, num_folds=5, data_root=ROOT)


@needs_cb513
def test_structure_folds_partition_cb513():
    sizes = []
    for fold in range(5):
        train, valid, tests = structure_splits(fold, 5, data_root=ROOT)
        (test,) = tests.values()
        assert not {r.sequence for r in test} & ({r.sequence for r in train} | {r.sequence for r in valid})
        sizes.append(len(test))
    assert sum(sizes) == 511 and max(sizes) - min(sizes) <= 10


@needs_cb513
def test_secondary_structure_cli_trains_and_evaluates(tmp_path, monkeypatch):
    from pyro_seq.cli import main

    monkeypatch.setenv("PYRO_SEQ_DATA", str(ROOT))
    out = tmp_path / "ss"
    args = ["train", "secondary-structure", "--out", str(out), "--epochs", "1", "--filters", "2", "--hidden", "4",
            "--dense", "4", "--mc-samples", "2", "--num-folds", "10", "--no-progress"]
    assert main(args) == 0
    record = json.loads((out / "test.json").read_text())
    metrics = record["tests"]["cb513_fold0"]
    assert set(metrics) == {"deterministic", "mc_dropout"}
    for m in metrics.values():
        assert 0 <= m["q8"] <= 1 and 0 <= m["q3"] <= 1 and m["q3"] >= m["q8"] - 1e-9 and 0 <= m["ece"] <= 1
    assert (out / "reliability_cb513_fold0.png").stat().st_size > 0
    assert main(["evaluate", str(out / "best.pt"), "--num-samples", "2", "--output", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["tests"]["cb513_fold0"]["deterministic"]["q8"] == pytest.approx(metrics["deterministic"]["q8"])


@needs_deeploc
def test_localizer_bayesian_cli(tmp_path, monkeypatch):
    from pyro_seq.cli import main

    monkeypatch.setenv("PYRO_SEQ_DATA", str(ROOT))
    out = tmp_path / "loc"
    args = ["train", "localizer", "--out", str(out), "--epochs", "1", "--filters", "2", "--hidden", "4", "--dense", "4",
            "--max-length", "60", "--bayesian-last-layer", "--mc-samples", "2", "--no-progress"]
    assert main(args) == 0
    record = json.loads((out / "test.json").read_text())
    assert set(record["tests"]) == {"deeploc_test", "setHARD"}
    m = record["tests"]["deeploc_test"]["bayesian"]
    assert m["num_items"] == 2768 and 0 <= m["accuracy"] <= 1 and -1 <= m["gorodkin"] <= 1
    assert np.asarray(m["confusion"]).sum() == 2768
