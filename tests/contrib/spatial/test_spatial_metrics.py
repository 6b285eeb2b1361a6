"""``digit_metrics`` (the per-digit, per-sequence and per-position errors, NLL and ECE of the
digit-sequence classifiers in BENCHMARKS) on hand-built predictions with known answers."""

import math
from types import SimpleNamespace

import pytest
import torch

from pyro_seq.contrib.spatial.metrics import digit_metrics


class FixedClassifier:
    """Predicts, for every digit, probability ``top`` on a given class and the rest spread evenly."""

    stochastic_attention = False

    def __init__(self, predicted, top=0.7):
        self.predicted, self.top = predicted, top

    def eval(self):
        pass

    def predict(self, x, guide=None, num_samples=1):
        probs = torch.full((*self.predicted.shape, 10), (1 - self.top) / 9, dtype=torch.float64)
        return probs.scatter(-1, self.predicted[..., None], self.top)  # [B, D, 10]


def test_digit_metrics_match_the_hand_computed_values():
    labels = torch.tensor([[1, 2], [3, 4], [5, 6]])
    predicted = torch.tensor([[1, 2], [0, 4], [0, 0]])  # image 0 right, image 1 one wrong, image 2 both wrong
    batch = SimpleNamespace(x=torch.zeros(3, 1, 4, 4), y=labels)
    metrics, bins = digit_metrics(FixedClassifier(predicted), None, [batch], num_samples=1, num_bins=15)
    assert metrics["digit_error"] == pytest.approx(100 * 3 / 6)
    assert metrics["sequence_error"] == pytest.approx(100 * 2 / 3)
    assert metrics["position_error"] == pytest.approx([100 * 2 / 3, 100 * 1 / 3])
    assert metrics["nll"] == pytest.approx(-(3 * math.log(0.7) + 3 * math.log(0.3 / 9)) / 6)
    # every digit has confidence 0.7 (one bin) and half of them are right
    assert metrics["ece"] == pytest.approx(100 * abs(0.5 - 0.7))
    assert metrics["num_images"] == 3 and metrics["num_digits"] == 6
    assert "posterior_scale" not in metrics
    assert sum(bins["count"]) == 6
