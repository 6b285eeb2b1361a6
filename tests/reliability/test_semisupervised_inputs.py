"""
Bad labels and images given to the semi-supervised models are named in the error.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from reliability_cases import D, BUILT, check_outcome, record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyro_seq

REPO = REPO_ROOT
PACKAGE = Path(pyro_seq.__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# semi-supervised models: labels and images
# --------------------------------------------------------------------------------------------

K = 3  # classes of the tiny semi-supervised models

#: kind -> (faulty argument or None, fn(draw, n) -> (x [n, D], y)); the unlabelled batch is valid
LABEL_CASES = {
    "valid_labels": (None, lambda draw, n: (_binary(draw, n), torch.tensor(draw(st.lists(st.integers(0, K - 1), min_size=n, max_size=n))))),
    "label_too_high": ("y", lambda draw, n: (_binary(draw, n), torch.full((n,), draw(st.integers(K, K + 50))))),
    "label_negative": ("y", lambda draw, n: (_binary(draw, n), torch.full((n,), draw(st.integers(-50, -1))))),
    "label_float_dtype": ("y", lambda draw, n: (_binary(draw, n), torch.zeros(n))),
    "label_bool_dtype": ("y", lambda draw, n: (_binary(draw, n), torch.zeros(n, dtype=torch.bool))),
    "label_count_differs_from_images": ("y", lambda draw, n: (_binary(draw, n), torch.zeros(n + draw(st.integers(1, 3)), dtype=torch.long))),
    "label_two_dimensional": ("y", lambda draw, n: (_binary(draw, n), torch.zeros(n, 1, dtype=torch.long))),
    "label_not_a_tensor": ("y", lambda draw, n: (_binary(draw, n), [0] * n)),
    "image_with_nan": ("x", lambda draw, n: (_binary(draw, n).index_put_((torch.tensor(0),), torch.tensor(float("nan"))), torch.zeros(n, dtype=torch.long))),
    "image_not_binary": ("x", lambda draw, n: (torch.full((n, D), draw(st.floats(0.01, 0.99))), torch.zeros(n, dtype=torch.long))),
    "image_wrong_size": ("x", lambda draw, n: (torch.zeros(n, D + 1), torch.zeros(n, dtype=torch.long))),
}


def _binary(draw, n):
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return torch.as_tensor((rng.random((n, D)) < 0.5).astype(np.float32))


def _semi_supervised(name):
    from pyro_seq.guides import SemiSupervisedGuide
    from pyro_seq.losses import SemiSupervised_ELBO
    from pyro_seq.models import ADGM, M2, SDGM

    if name not in BUILT:
        torch.manual_seed(0)
        model = {"m2": M2, "adgm": ADGM, "sdgm": SDGM}[name](x_dim=D, y_dim=K, z_dim=2, a_dim=2, hidden_dims=(4,))
        BUILT[name] = (model, SemiSupervisedGuide(model), SemiSupervised_ELBO(alpha=1.0))
    return BUILT[name]


@pytest.mark.parametrize("name,kind", [(n, k) for n in ("m2", "adgm", "sdgm") for k in LABEL_CASES])
@settings(max_examples=4, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_labels_and_images_of_semi_supervised_models_are_named(name, kind, data):
    model, guide, loss = _semi_supervised(name)
    fault, make = LABEL_CASES[kind]
    x, y = make(data.draw, data.draw(st.integers(1, 4)))
    unlabelled = torch.ones(2, D)
    points = {
        "model": lambda x_, m: model(x_, y),
        "guide": lambda x_, m: guide(x_, y),
        "SemiSupervised_ELBO.loss": lambda x_, m: loss.loss(model, guide, x_, y, unlabelled),
    }
    if fault != "y":
        points["SemiSupervisedGuide.predict"] = lambda x_, m: guide.predict(x_, num_samples=2).probs
    failures = []
    for entry, fn in points.items():
        handled, what = check_outcome(fn, x, None, fault, None)
        record("semi-supervised inputs", name, entry, kind, handled, valid=fault is None)
        if not handled:
            failures.append(f"{entry}: {what}")
    assert not failures, "\n".join(failures)


