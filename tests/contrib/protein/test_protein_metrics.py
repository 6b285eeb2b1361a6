"""The protein metrics of BENCHMARKS (localisation accuracy and Gorodkin correlation, Q8 and Q3
per residue) on hand-built predictions with known answers."""

import math
from types import SimpleNamespace

import pytest
import torch

from pyro_seq.contrib.protein.data import SS8
from pyro_seq.contrib.protein.metrics import gorodkin_correlation, localization_metrics, structure_metrics


class FixedPredictor:
    """``predict`` returns the given probabilities, batch after batch."""

    def __init__(self, probs):
        self.probs = list(probs)

    def predict(self, tokens, mask, **kwargs):
        return self.probs.pop(0)


def test_localization_accuracy_and_gorodkin_match_the_hand_computed_values():
    # five proteins, one without a single location (y = -1: left out); truth 0, 0, 0, 1, predicted 0, 0, 1, 1
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9], [0.5, 0.5]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, -1])
    batch = SimpleNamespace(tokens=None, mask=None, y=y)
    metrics, _ = localization_metrics(FixedPredictor([probs]), None, [batch])
    assert metrics["num_items"] == 4
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    # two classes: the Gorodkin correlation is Matthews': TP 1, TN 2, FP 1, FN 0
    assert metrics["gorodkin"] == pytest.approx((1 * 2 - 1 * 0) / math.sqrt((1 + 1) * (1 + 0) * (2 + 1) * (2 + 0)))
    assert metrics["confusion"] == [[2, 1], [0, 1]]
    assert metrics["nll"] == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.3) + math.log(0.9)) / 4)


def test_gorodkin_of_a_perfect_and_of_a_constant_prediction():
    assert gorodkin_correlation([[3, 0, 0], [0, 2, 0], [0, 0, 4]]) == pytest.approx(1.0)
    assert gorodkin_correlation([[3, 0, 0], [2, 0, 0], [4, 0, 0]]) == pytest.approx(0.0)


def test_q8_and_q3_per_residue_match_the_hand_computed_values():
    ids = {c: SS8.index(c) for c in SS8}
    # one protein of 5 residues (+1 padding); residue 4 is outside the evaluation mask
    truth = torch.tensor([[ids["H"], ids["E"], ids["C"], ids["G"], ids["T"], -1]])
    guess = [ids["H"], ids["B"], ids["S"], ids["E"], ids["C"], ids["C"]]  # Q8: right, E->B, C->S, G->E, (masked), pad
    probs = torch.full((1, 6, 8), 0.3 / 7, dtype=torch.float64)
    probs[0, torch.arange(6), torch.tensor(guess)] = 0.7
    mask = torch.tensor([[True] * 5 + [False]])
    eval_mask = torch.tensor([[True, True, True, True, False, False]])
    batch = SimpleNamespace(tokens=None, mask=mask, y=truth, eval_mask=eval_mask)
    metrics, _ = structure_metrics(FixedPredictor([probs]), None, [batch])
    assert metrics["num_items"] == 4
    assert metrics["q8"] == pytest.approx(1 / 4)  # only H is right in 8 classes
    # in 3 classes: H->H right, E vs B (both E) right, C vs S (both C) right, G (H) vs E wrong
    assert metrics["q3"] == pytest.approx(3 / 4)
