"""Expected calibration error, reliability bins and diagrams (pyro_seq.diagnostics.calibration)."""

import math

import numpy as np
import pytest
import torch

from pyro_seq.diagnostics.calibration import expected_calibration_error, reliability_bins, reliability_diagram


def _inline_ece(probs, labels, num_bins=15):
    """The loop classification_metrics used before calibration.py (the reference numbers)."""
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, num_bins + 1, dtype=probs.dtype)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if bool(in_bin.any()):
            ece += float(in_bin.double().mean()) * abs(float(correct[in_bin].mean()) - float(confidence[in_bin].double().mean()))
    return ece


def _random_probs(n, k, seed, dtype=torch.float64, temperature=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g, dtype=dtype) * 3 / temperature).softmax(-1)


def test_perfectly_calibrated_labels_give_ece_near_zero():
    """Labels drawn from the predicted probabilities: the classifier is calibrated by construction."""
    probs = _random_probs(200_000, 5, seed=0)
    labels = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(1)).squeeze(-1)
    ece = expected_calibration_error(probs, labels)
    assert 0 <= ece < 0.02


def test_overconfident_case_by_hand():
    """Confidence 0.9 everywhere, 60% right: ECE = 0.3; two bins done by hand."""
    probs = torch.tensor([[0.9, 0.1]] * 10)
    labels = torch.tensor([0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3, abs=1e-6)
    # bin (0.6, 0.7]: 4 items at confidence 0.7, 1 right; bin (0.9, 1]: 4 items at 0.95, 4 right
    probs = torch.tensor([[0.7, 0.3]] * 4 + [[0.05, 0.95]] * 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1])
    expected = 0.5 * abs(0.25 - 0.7) + 0.5 * abs(1.0 - 0.95)
    assert expected_calibration_error(probs, labels, num_bins=10) == pytest.approx(expected, abs=1e-12)
    bins = reliability_bins(probs, labels, num_bins=10)
    assert bins["count"].tolist() == [0] * 6 + [4, 0, 0, 4]
    assert bins["confidence"][6] == pytest.approx(0.7) and bins["accuracy"][6] == pytest.approx(0.25)
    assert bins["confidence"][9] == pytest.approx(0.95) and bins["accuracy"][9] == 1.0
    assert np.isnan(bins["confidence"][0]) and np.isnan(bins["accuracy"][0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_bins", [1, 10, 15])
def test_same_numbers_as_the_former_inline_loop(dtype, num_bins):
    probs = _random_probs(3000, 10, seed=num_bins, dtype=dtype)
    labels = torch.randint(0, 10, (3000,), generator=torch.Generator().manual_seed(2))
    assert expected_calibration_error(probs, labels, num_bins) == pytest.approx(_inline_ece(probs, labels, num_bins), abs=1e-12)
    # confidences exactly on bin edges fall into the bin below, as in the loop
    edge_probs = torch.tensor([[0.6, 0.4], [0.4, 0.6], [0.8, 0.2], [1.0, 0.0], [0.5, 0.5]], dtype=dtype)
    edge_labels = torch.tensor([0, 0, 1, 0, 1])
    assert expected_calibration_error(edge_probs, edge_labels, 5) == pytest.approx(_inline_ece(edge_probs, edge_labels, 5), abs=1e-12)


def test_bins_sum_to_n_and_ece_matches():
    probs = _random_probs(777, 4, seed=3, dtype=torch.float32)
    labels = torch.randint(0, 4, (777,), generator=torch.Generator().manual_seed(4))
    bins = reliability_bins(probs, labels, num_bins=12)
    assert bins["count"].sum() == 777 == bins["num_items"] and bins["count"].shape == (12,)
    assert bins["edges"].shape == (13,) and bins["edges"][0] == 0 and bins["edges"][-1] == 1
    keep = bins["count"] > 0
    ece = float((bins["count"][keep] / 777 * np.abs(bins["accuracy"][keep] - bins["confidence"][keep])).sum())
    assert bins["ece"] == pytest.approx(ece, abs=1e-12) == expected_calibration_error(probs, labels, 12)
    assert np.all((bins["confidence"][keep] > bins["edges"][:-1][keep]) & (bins["confidence"][keep] <= bins["edges"][1:][keep] + 1e-7))
    assert 0 <= bins["ece"] <= 1
    # numpy inputs work too
    assert expected_calibration_error(probs.numpy(), labels.numpy(), 12) == pytest.approx(bins["ece"], abs=1e-12)


def test_ece_is_at_most_one():
    probs = torch.tensor([[1.0, 0.0]] * 5)
    labels = torch.ones(5, dtype=torch.long)
    assert expected_calibration_error(probs, labels) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "probs, labels, num_bins, message",
    [
        (torch.rand(5), torch.zeros(5, dtype=torch.long), 15, "shape \\[N, K\\]"),
        (torch.full((3, 2), 2.0), torch.zeros(3, dtype=torch.long), 15, "probabilities in \\[0, 1\\]"),
        (torch.tensor([[math.nan, 1.0]]), torch.zeros(1, dtype=torch.long), 15, "NaN"),
        (torch.ones(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long), 15, "floating point"),
        (torch.full((3, 2), 0.5), torch.zeros(4, dtype=torch.long), 15, "labels must have shape \\(3,\\)"),
        (torch.full((3, 2), 0.5), torch.tensor([0, 2, 1]), 15, "class indices in 0..1"),
        (torch.full((3, 2), 0.5), torch.zeros(3), 15, "integer class indices"),
        (torch.full((3, 2), 0.5), torch.zeros(3, dtype=torch.long), 0, "num_bins"),
    ],
)
def test_bad_inputs_are_named(probs, labels, num_bins, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(probs, labels, num_bins)


def test_reliability_diagram_writes_a_png(tmp_path):
    probs = _random_probs(500, 3, seed=5)
    labels = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(6))
    single = reliability_diagram(reliability_bins(probs, labels), tmp_path / "one.png", title="one")
    variants = {
        "point": reliability_bins(probs, labels),
        "sharper": reliability_bins(_random_probs(500, 3, seed=5, temperature=0.5), labels, num_bins=10),
    }
    several = reliability_diagram(variants, tmp_path / "sub" / "several.png")
    for path in (single, several):
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="reliability_bins dict"):
        reliability_diagram({"x": {"count": [1]}}, tmp_path / "bad.png")
