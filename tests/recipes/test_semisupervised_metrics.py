"""``classification_metrics`` (the semi-supervised error, NLL, entropy, ECE and spread that BENCHMARKS
reports) on hand-built predictions with answers worked out by hand."""

import math
from types import SimpleNamespace

import pytest
import torch

from pyro_seq.guides.semisupervised import Prediction
from pyro_seq.recipes.semisupervised import classification_metrics


class FixedGuide:
    """A guide whose ``predict`` returns given probabilities and spreads, in turn per batch."""

    training = True

    def __init__(self, predictions):
        self.predictions = list(predictions)
        self.modes = []

    def eval(self):
        self.training = False
        self.modes.append("eval")

    def train(self, mode=True):
        self.training = mode

    def predict(self, x, num_samples=1):
        assert not self.training  # evaluated in eval mode
        probs, std = self.predictions.pop(0)
        entropy = -(probs * probs.log()).sum(-1)
        return Prediction(probs, std, entropy)


def test_classification_metrics_match_the_hand_computed_values():
    probs = torch.tensor([[0.9, 0.1], [0.25, 0.75], [0.62, 0.38]], dtype=torch.float64)
    std = torch.tensor([[0.01, 0.01], [0.02, 0.03], [0.05, 0.04]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    batches = [SimpleNamespace(x=None, y=labels[:2]), SimpleNamespace(x=None, y=labels[2:])]
    guide = FixedGuide([(probs[:2], std[:2]), (probs[2:], std[2:])])
    m = classification_metrics(guide, batches, num_samples=7, num_bins=15)
    # predicted 0, 1, 0 against 0, 0, 1: one right of three
    assert m["error"] == pytest.approx(100 * 2 / 3)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.25) + math.log(0.38)) / 3)
    entropy = lambda p: -sum(q * math.log(q) for q in p)  # noqa: E731
    assert m["entropy"] == pytest.approx((entropy([0.9, 0.1]) + entropy([0.25, 0.75]) + entropy([0.62, 0.38])) / 3)
    # confidences 0.9, 0.75, 0.62 fall in three different of 15 bins; accuracy 1, 0, 0 there
    assert m["ece"] == pytest.approx(100 * (abs(1 - 0.9) + abs(0 - 0.75) + abs(0 - 0.62)) / 3)
    # spread of the predicted class: 0.01, 0.03, 0.05
    assert m["mean_std"] == pytest.approx((0.01 + 0.03 + 0.05) / 3)
    assert m["num_items"] == 3
    assert guide.training  # mode restored


def test_classification_metrics_refuses_no_batches():
    with pytest.raises(ValueError, match="no labelled batches"):
        classification_metrics(FixedGuide([]), [])
