"""
Reliability (issue 11): bad input to every public entry point gets a clear error.

* A property-based suite (hypothesis) draws inputs from a catalogue of named *case kinds*
  (:data:`CASE_KINDS`: wrong rank, batch and time mismatches between ``x`` and ``mask``,
  zero-length rows, NaN/inf, non-binary data for a Bernoulli model, ...) for each model and
  guide pair, calls the model, the guide, ``Trace_ELBO``, the package's own loss, the
  importance-sampled bounds, the IWAE loss and (models with the step protocol) FIVO, and
  checks that a bad input raises a ``ValueError``/``TypeError`` *raised in pyro_seq* whose
  message names the faulty argument, and that a valid input gives a finite result (equal to
  that of its canonical form where there is one) -- never an exception from deep inside torch,
  never a silent NaN.
* Data loaders and the command line get the same treatment with enumerated cases.
* Untrusted files: tampered downloads and cached files are rejected before any parser runs,
  pickles are never unpickled (a payload that would create a file is loaded and the file is
  checked to be absent), and every ``np.load``/``torch.load`` of the package is safe.
* Interrupted runs (slow): a tiny ``pyro-seq train`` is SIGKILLed at three seeded random
  points, one of them half-way through writing a checkpoint, resumed each time, and ends with
  exactly the parameters of an uninterrupted run.

Every case is counted (:func:`_record`); :func:`test_reliability_report`, the last test of
this file, writes the counts to ``reliability_report.json`` in pytest's base temporary
directory (and to ``$PYRO_SEQ_RELIABILITY_REPORT`` if set), prints them, and asserts that
every case tried was handled. NaN injection into training is tested in ``test_trainer.py``.
"""

import ast
import hashlib
import io
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from conftest import jsb_available, shared_data_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyro.infer import Trace_ELBO

import pyro_seq
from pyro_seq.bounds import IWAELoss, importance_bounds
from pyro_seq.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_seq.cli import MODELS, main
from pyro_seq.data import (
    DataIntegrityError,
    load_sequences,
    make_batches,
    pad_batch,
)
from pyro_seq.data import download as download_module
from pyro_seq.data import images as images_module
from pyro_seq.data import mnist as mnist_module
from pyro_seq.data import music as music_module
from pyro_seq.fivo import fivo_log_likelihood
from pyro_seq.guides import BottomUpGuide, LadderGuide, LinearGaussianSSMGuide, SRNNGuide, ZForcingGuide
from pyro_seq.losses import LinearSchedule, WarmupTrace_ELBO, WarmupTraceMeanField_ELBO, ZForcingTrace_ELBO
from pyro_seq.models import SRNN, LadderVAE, LinearGaussianSSM, ZForcing

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(pyro_seq.__file__).resolve().parent

# --------------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------------

#: ``{(group, subject, entry point, case kind): [examples tried, examples handled]}``
_RESULTS = defaultdict(lambda: [0, 0])
#: free-form records for the report (kill-and-resume trials)
_NOTES = defaultdict(list)


#: the cases of ``_RESULTS`` whose input is valid (a finite result is the right outcome)
_VALID = set()


def _record(group, subject, entry, kind, handled, valid=False):
    counts = _RESULTS[(group, subject, entry, kind)]
    counts[0] += 1
    counts[1] += int(bool(handled))
    if valid:
        _VALID.add((group, subject, entry, kind))


# --------------------------------------------------------------------------------------------
# models and entry points
# --------------------------------------------------------------------------------------------

D = 4  # frame size (pixels per image) of every tiny model
SCHEDULE = dict(start=0.5, end=1.0, steps=10)
# model/guide pair -> (images [batch, 1, D] rather than sequences, Bernoulli rather than Gaussian frames)
PAIRS = {
    "srnn": (False, True),
    "zforcing": (False, True),
    "lgssm": (False, False),
    "ladder": (True, True),
    "ladder_bottom_up": (True, True),
}


def build(name):
    """A tiny ``(model, guide, package loss)`` for ``name``."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    if name == "srnn":
        model = SRNN(x_dim=D, d_dim=3, z_dim=2, hidden_dim=4)
        return model, SRNNGuide(model, kind="smoother", a_dim=3, hidden_dim=4), WarmupTraceMeanField_ELBO(LinearSchedule(**SCHEDULE))
    if name == "zforcing":
        model = ZForcing(x_dim=D, emb_dim=3, h_dim=3, z_dim=2, hidden_dim=4)
        guide = ZForcingGuide(model, auxiliary="z", backward_prediction=True)
        return model, guide, ZForcingTrace_ELBO(LinearSchedule(**SCHEDULE), aux_schedule=0.5, backward_weight=1.0)
    if name == "lgssm":
        model = LinearGaussianSSM(x_dim=D, z_dim=2)
        return model, LinearGaussianSSMGuide(model, kind="smoother", horizon=2), WarmupTraceMeanField_ELBO(LinearSchedule(**SCHEDULE))
    model = LadderVAE(x_dim=D, z_dims=(3, 2), hidden_dims=(4, 4))
    if name == "ladder":
        return model, LadderGuide(model), WarmupTraceMeanField_ELBO(LinearSchedule(**SCHEDULE))
    return model, BottomUpGuide(model), WarmupTrace_ELBO(LinearSchedule(**SCHEDULE))


def entry_points(model, guide, loss):
    """``{name: fn(x, mask)}``: every public way a batch reaches the model."""
    fns = {
        "model": lambda x, m: model(x, m),
        "guide": lambda x, m: guide(x, m),
        "Trace_ELBO.loss": lambda x, m: Trace_ELBO().loss(model, guide, x, m),
        "package_loss": lambda x, m: loss.differentiable_loss(model, guide, x, m),
        "importance_bounds": lambda x, m: importance_bounds(model, guide, x, m, num_samples=2),
        "IWAELoss.loss": lambda x, m: IWAELoss(2).loss(model, guide, x, m),
    }
    if hasattr(model, "filter_context"):
        fns["fivo_log_likelihood"] = lambda x, m: fivo_log_likelihood(model, guide, x, m, num_particles=2)
    return fns


# --------------------------------------------------------------------------------------------
# the catalogue of case kinds
# --------------------------------------------------------------------------------------------


def _is_prefix(row):
    n = sum(row)
    return list(row) == [True] * n + [False] * (len(row) - n)


@st.composite
def base_batch(draw, images, binary, min_time=1, min_batch=1):
    """A valid padded batch ``(x [b, t, D], bool prefix mask [b, t])``; images have ``t = 1``."""
    b = draw(st.integers(max(min_batch, 2 if images else 1), 3))  # batch norm needs 2 images
    t = 1 if images else draw(st.integers(min_time, 4))
    lengths = torch.tensor([draw(st.integers(1, t)) for _ in range(b)])
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = (torch.rand(b, t, D, generator=g) < 0.4).float() if binary else torch.randn(b, t, D, generator=g)
    mask = torch.arange(t) < lengths[:, None]  # [b, t]
    return x * mask[..., None], mask


def _position(draw, x):
    return tuple(draw(st.integers(0, n - 1)) for n in x.shape)


def _set(x, pos, value):
    x = x.clone()
    x[pos] = value
    return x


def _ones(x):
    return torch.ones(x.shape[:2], dtype=torch.bool)


# Each case kind: (argument at fault or None for a valid input, applies(images, binary),
# make(draw, images, binary) -> (x, mask, reference)); ``reference`` is an equivalent
# canonical ``(x, mask)`` whose results must be equal (same random numbers), or None.
CASE_KINDS = {}


#: entry points for which a case kind is a valid input after all: ``{kind: {entry point}}``
VALID_FOR = {}


def case(name, fault, applies=lambda images, binary: True, valid_for=()):
    def register(fn):
        CASE_KINDS[name] = (fault, applies, fn)
        VALID_FOR[name] = set(valid_for)
        return fn

    return register


SEQUENCES_ONLY = lambda images, binary: not images  # noqa: E731
IMAGES_ONLY = lambda images, binary: images  # noqa: E731
BERNOULLI_ONLY = lambda images, binary: binary  # noqa: E731
GAUSSIAN_ONLY = lambda images, binary: not binary  # noqa: E731


@case("valid_ragged_batch", None)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x, mask, None


@case("valid_without_mask", None)
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    return x, None, (x, _ones(x))


@case("valid_0_1_numeric_mask", None)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    dtype = draw(st.sampled_from([torch.float32, torch.int64, torch.uint8]))
    return x, mask.to(dtype), (x, mask)


@case("valid_real_valued_frames", None, GAUSSIAN_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    scale = draw(st.floats(1e-3, 1e3))
    return x * scale, mask, None


@case("valid_2d_images", None, IMAGES_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    mask2d = draw(st.sampled_from([None, mask[:, 0], mask]))
    return x[:, 0], mask2d, (x, mask)


@case("x_not_a_tensor", "x")
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    return draw(st.sampled_from([x.tolist(), x.numpy(), float(x[0, 0, 0])])), None, None


@case("x_rank_too_low", "x")
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    low = [x.reshape(-1), x[0, 0]] + ([] if images else [x[:, 0], x[0]])
    return draw(st.sampled_from(low)), None, None


@case("x_rank_too_high", "x")
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    return x.unsqueeze(draw(st.integers(0, 3))), None, None


@case("x_wrong_frame_size", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    extra = draw(st.sampled_from([-3, -1, 1, 5]))
    x = x[..., : D + extra] if extra < 0 else torch.cat([x, torch.zeros(*x.shape[:2], extra)], -1)
    return x, mask, None


@case("x_time_axis_not_1_for_images", "x", IMAGES_ONLY)
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    return x.expand(-1, draw(st.integers(2, 4)), -1), None, None


@case("x_integer_or_bool_dtype", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x.to(draw(st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.bool]))), mask, None


@case("x_float_dtype_other_than_the_models", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x.to(draw(st.sampled_from([torch.float64, torch.float16, torch.bfloat16]))), mask, None


@case("x_empty_batch", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x[:0], mask[:0], None


@case("x_empty_time_axis", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x[:, :0], (None if images else mask[:, :0]), None


# the particle bounds repeat the batch (K = 2 here), which batch normalisation can use
@case("x_single_image_in_batch_norm_training", "x", IMAGES_ONLY, valid_for=("importance_bounds", "IWAELoss.loss"))
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x[:1], draw(st.sampled_from([None, mask[:1]])), None


@case("x_nan", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return _set(x, _position(draw, x), float("nan")), mask, None


@case("x_pos_inf", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return _set(x, _position(draw, x), float("inf")), mask, None


@case("x_neg_inf", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return _set(x, _position(draw, x), -float("inf")), mask, None


@case("x_non_binary_for_bernoulli", "x", BERNOULLI_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    value = draw(st.floats(-10, 10, allow_nan=False, width=32).filter(lambda v: v not in (0.0, 1.0)))
    return _set(x, _position(draw, x), value), mask, None


@case("x_too_large_for_its_dtype", "x", GAUSSIAN_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    value = draw(st.floats(1e10, 3e38)) * draw(st.sampled_from([1, -1]))
    return _set(x, _position(draw, x), value), mask, None


@case("mask_not_a_tensor", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x, draw(st.sampled_from([mask.tolist(), mask.numpy(), True])), None


@case("mask_batch_size_mismatch", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    if mask.shape[0] > 1 and draw(st.booleans()):
        return x, mask[:-1], None
    return x, torch.cat([mask, mask[:1]]), None


@case("mask_longer_than_time_axis", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    extra = torch.full((mask.shape[0], draw(st.integers(1, 3))), draw(st.booleans()))
    return x, torch.cat([mask, extra], 1), None


@case("mask_shorter_than_time_axis", "mask", SEQUENCES_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary, min_time=2))
    return x, mask[:, : draw(st.integers(0, mask.shape[1] - 1))], None


@case("mask_wrong_rank", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x, draw(st.sampled_from([mask[..., None], mask[None], mask.reshape(-1)[:0]])), None


@case("mask_not_a_prefix", "mask", SEQUENCES_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary, min_time=2))
    t = mask.shape[1]
    row = draw(st.lists(st.booleans(), min_size=t, max_size=t).filter(lambda r: any(r) and not _is_prefix(r)))
    mask = mask.clone()
    mask[draw(st.integers(0, mask.shape[0] - 1))] = torch.tensor(row)
    return x, mask, None


@case("mask_zero_length_row", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    mask = mask.clone()
    mask[draw(st.integers(0, mask.shape[0] - 1))] = False
    return x, mask, None


@case("mask_values_not_0_1", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    value = draw(st.sampled_from([2, -1, 0.5, float("nan"), float("inf")]))
    mask = mask.to(torch.int64 if isinstance(value, int) else torch.float32)
    return x, _set(mask, _position(draw, mask), value), None


# --------------------------------------------------------------------------------------------
# the property-based suite
# --------------------------------------------------------------------------------------------


def _root_cause(error):
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _raised_in(error):
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve()


def _finite(result):
    if isinstance(result, dict):
        return all(_finite(v) for v in result.values())
    if isinstance(result, (tuple, list)):
        return all(_finite(v) for v in result)
    if torch.is_tensor(result):
        return bool(torch.isfinite(result).all())
    if isinstance(result, float):
        return math.isfinite(result)
    return True


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    if torch.is_tensor(a):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)
    return True


def _call(fn, x, mask, seed):
    pyro.set_rng_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(x, mask)


def check_outcome(fn, x, mask, fault, reference, seed=0):
    """``(handled, description)`` of one call of an entry point on one input."""
    try:
        result = _call(fn, x, mask, seed)
    except (ValueError, TypeError) as error:
        cause = _root_cause(error)
        message = str(cause).splitlines()[0] if str(cause) else ""
        where = _raised_in(cause)
        if fault is None:
            return False, f"valid input raised {type(cause).__name__}: {message}"
        if PACKAGE not in where.parents:
            return False, f"{type(cause).__name__} raised in {where}, not in pyro_seq: {message}"
        if not re.search(rf"\b{fault}\b", message):
            return False, f"message does not name {fault!r}: {message}"
        return True, message
    except Exception as error:  # anything else is a crash
        cause = _root_cause(error)
        return False, f"crash: {type(cause).__name__} in {_raised_in(cause)}: {str(cause).splitlines()[:1]}"
    if fault is not None:
        return False, f"bad {fault} accepted, returned {type(result).__name__}"
    if not _finite(result):
        return False, "non-finite result for a valid input"
    if reference is not None:
        expected = _call(fn, *reference, seed)
        if not _same(result, expected):
            return False, "result differs from that of the canonical form of the input"
    return True, "finite result"


MODEL_CASES = [
    (pair, kind)
    for pair, (images, binary) in PAIRS.items()
    for kind, (_, applies, _) in CASE_KINDS.items()
    if applies(images, binary)
]


@pytest.mark.parametrize("pair,kind", MODEL_CASES, ids=[f"{p}-{k}" for p, k in MODEL_CASES])
@settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_bad_input_gets_a_clear_error_and_valid_input_a_finite_result(pair, kind, data):
    images, binary = PAIRS[pair]
    fault, _, make = CASE_KINDS[kind]
    x, mask, reference = make(data.draw, images, binary)
    failures = []
    for entry, fn in entry_points(*_cached_build(pair)).items():
        expected_fault = None if entry in VALID_FOR[kind] else fault
        handled, what = check_outcome(fn, x, mask, expected_fault, reference)
        _record("model inputs", pair, entry, kind, handled, valid=expected_fault is None)
        if not handled:
            failures.append(f"{entry}: {what}")
    assert not failures, "\n".join(failures)


_BUILT = {}


def _cached_build(pair):
    # one model per pair for the whole suite (building costs more than a bad-input call); the
    # PyroModules re-register their parameters after conftest clears the parameter store
    if pair not in _BUILT:
        _BUILT[pair] = build(pair)
    return _BUILT[pair]


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
    from pyro_seq.guides import AuxiliaryGuide
    from pyro_seq.losses import SemiSupervisedELBO
    from pyro_seq.models import ADGM, M2, SDGM

    if name not in _BUILT:
        torch.manual_seed(0)
        model = {"m2": M2, "adgm": ADGM, "sdgm": SDGM}[name](x_dim=D, y_dim=K, z_dim=2, a_dim=2, hidden_dims=(4,))
        _BUILT[name] = (model, AuxiliaryGuide(model), SemiSupervisedELBO(alpha=1.0))
    return _BUILT[name]


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
        "SemiSupervisedELBO.loss": lambda x_, m: loss.loss(model, guide, x_, y, unlabelled),
    }
    if fault != "y":
        points["AuxiliaryGuide.predict"] = lambda x_, m: guide.predict(x_, num_samples=2).probs
    failures = []
    for entry, fn in points.items():
        handled, what = check_outcome(fn, x, None, fault, None)
        _record("semi-supervised inputs", name, entry, kind, handled, valid=fault is None)
        if not handled:
            failures.append(f"{entry}: {what}")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------------------------
# data loaders
# --------------------------------------------------------------------------------------------


def _good_sequences(draw, n=None):
    n = draw(st.integers(1, 4)) if n is None else n
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return [(rng.random((int(rng.integers(1, 6)), 5)) < 0.5).astype(np.float32) for _ in range(n)]


def _with(s, draw, value):
    s = s.astype(np.float32)  # a copy
    s[draw(st.integers(0, s.shape[0] - 1)), draw(st.integers(0, s.shape[1] - 1))] = value
    return s


# kind -> fn(sequence, draw) -> the sequence made bad
SEQUENCE_FAULTS = {
    "sequence_with_nan": lambda s, draw: _with(s, draw, np.nan),
    "sequence_with_inf": lambda s, draw: _with(s, draw, draw(st.sampled_from([np.inf, -np.inf]))),
    "empty_sequence": lambda s, draw: s[:0],
    "other_frame_size": lambda s, draw: np.zeros((len(s), draw(st.sampled_from([1, 4, 6]))), np.float32),
    "one_dimensional_sequence": lambda s, draw: s[:, 0],
    "three_dimensional_sequence": lambda s, draw: s[..., None],
    "string_array": lambda s, draw: np.full(s.shape, "a"),
    "none_item": lambda s, draw: None,
    "object_array": lambda s, draw: np.array([[None] * s.shape[1]] * len(s), dtype=object),
    "complex_array": lambda s, draw: s.astype(np.complex64),
}


@pytest.mark.parametrize("kind", sorted(SEQUENCE_FAULTS))
@settings(max_examples=3, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_sequences_get_a_clear_error_from_the_batching_functions(kind, data):
    # another frame size is only wrong next to an earlier sequence that fixes x_dim
    first = 1 if kind == "other_frame_size" else 0
    seqs = _good_sequences(data.draw, data.draw(st.integers(first + 1, 4)))
    i = data.draw(st.integers(first, len(seqs) - 1))
    seqs[i] = SEQUENCE_FAULTS[kind](seqs[i], data.draw)
    for entry, fn in (("pad_batch", lambda: pad_batch(seqs)), ("make_batches", lambda: list(make_batches(seqs, 2)))):
        with pytest.raises(ValueError, match=rf"[Ss]equence {i}\b") as info:
            fn()
        _record("data loaders", "batching", entry, kind, PACKAGE in _raised_in(info.value).parents)
        assert PACKAGE in _raised_in(info.value).parents


BATCHING_ARGUMENTS = {
    "batch_size_zero": ("batch_size", 0, "batch_size"),
    "batch_size_negative": ("batch_size", -2, "batch_size"),
    "batch_size_float": ("batch_size", 1.5, "batch_size"),
    "batch_size_bool": ("batch_size", True, "batch_size"),
    "batch_size_string": ("batch_size", "4", "batch_size"),
    "max_length_zero": ("max_length", 0, "max_length"),
    "max_length_float": ("max_length", 2.5, "max_length"),
    "no_sequences": ("sequences", [], "empty list"),
    "one_array_instead_of_a_list": ("sequences", np.zeros((3, 4, 5)), "single array"),
}


@pytest.mark.parametrize("kind", list(BATCHING_ARGUMENTS))
def test_bad_batching_arguments_are_clear_errors(kind):
    argument, value, match = BATCHING_ARGUMENTS[kind]
    kwargs = {"sequences": [np.zeros((3, 5), np.float32)], "batch_size": 2, argument: value}
    with pytest.raises(ValueError, match=match):
        list(make_batches(**kwargs))
    _record("data loaders", "batching", "make_batches", kind, True)


LOAD_ARGUMENTS = {
    "unknown_name": (dict(name="timit", split="train"), r"Unknown data set 'timit'; valid names are: .*jsb.*mnist.*omniglot"),
    "name_in_other_case": (dict(name="JSB", split="train"), "valid names are"),
    "name_none": (dict(name=None, split="train"), "valid names are"),
    "name_not_a_string": (dict(name=3, split="train"), "valid names are"),
    "unknown_split": (dict(name="jsb", split="training"), r"Unknown split 'training'; valid splits are: train, valid, test"),
    "split_none": (dict(name="mnist", split=None), "valid splits are"),
    "limit_zero": (dict(name="jsb", split="test", limit=0), "limit must be a positive integer"),
    "limit_negative": (dict(name="jsb", split="test", limit=-3), "limit must be a positive integer"),
    "limit_float": (dict(name="jsb", split="test", limit=2.5), "limit must be a positive integer"),
    "limit_bool": (dict(name="jsb", split="test", limit=True), "limit must be a positive integer"),
    "limit_string": (dict(name="jsb", split="test", limit="10"), "limit must be a positive integer"),
}


@pytest.mark.parametrize("kind", list(LOAD_ARGUMENTS))
def test_load_sequences_bad_arguments_name_the_valid_values(tmp_path, kind):
    # checked before any file is looked at: an empty data root and no network
    kwargs, match = LOAD_ARGUMENTS[kind]
    with pytest.raises(ValueError, match=match):
        load_sequences(data_root=tmp_path, download=False, **kwargs)
    assert list(tmp_path.iterdir()) == []
    _record("data loaders", "load_sequences", "load_sequences", kind, True)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _cli_error(argv, capsys):
    """Run ``main(argv)``; return its exit status and the lines it wrote to stderr."""
    capsys.readouterr()
    status = main(argv)
    return status, [line for line in capsys.readouterr().err.splitlines() if line.startswith("pyro-seq")]


BAD_COMMAND_LINES = {
    "unknown_model": (["train", "transformer", "--out", "OUT"], r"argument MODEL: invalid choice: 'transformer'"),
    "unknown_dataset": (["train", "srnn", "--data", "timit", "--out", "OUT"], r"argument --data: invalid choice: 'timit'"),
    "batch_size_zero": (["train", "srnn", "--out", "OUT", "--batch-size", "0"], r"argument --batch-size: must be >= 1, got 0"),
    "epochs_not_a_number": (["train", "srnn", "--out", "OUT", "--epochs", "ten"], r"argument --epochs"),
    "unknown_elbo": (["train", "srnn", "--out", "OUT", "--elbo", "vimco"], r"argument --elbo: invalid choice"),
    "bad_layer_sizes": (["train", "lvae", "--out", "OUT", "--z-dims", "4,x"], r"argument --z-dims"),
    "missing_out": (["train", "srnn"], r"the following arguments are required: --out"),
    "unknown_split": (["evaluate", "CKPT", "--split", "dev"], r"argument --split: invalid choice: 'dev'"),
    "unknown_dataset_to_evaluate": (["evaluate", "CKPT", "--data", "cifar"], r"argument --data: invalid choice: 'cifar'"),
    "negative_num_samples": (["evaluate", "CKPT", "--num-samples", "-5"], r"argument --num-samples"),
    "zero_samples_to_draw": (["sample", "CKPT", "--out", "OUT", "--num", "0"], r"argument --num"),
    "unknown_command": (["frobnicate"], r"argument command: invalid choice"),
}


@pytest.mark.parametrize("kind", list(BAD_COMMAND_LINES))
def test_bad_command_line_is_one_error_line_and_status_1(tmp_path, capsys, kind):
    argv, match = BAD_COMMAND_LINES[kind]
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("CKPT", str(tmp_path / "c.pt")) for a in argv]
    status, lines = _cli_error(argv, capsys)
    assert status == 1 and len(lines) == 1, lines
    assert lines[0].startswith("pyro-seq: error: ") and re.search(match, lines[0]), lines
    assert not (tmp_path / "out").exists()  # nothing was started
    _record("command line", argv[0] if argv[0] in ("train", "evaluate", "sample") else "pyro-seq", "main", kind, True)


def _tiny_srnn_checkpoint(path, kind="srnn", state_from=None):
    """A checkpoint as the trainer writes it, for a tiny SRNN (or with another model's weights)."""
    config = {
        "model": {"x_dim": 88, "d_dim": 4, "z_dim": 2, "hidden_dim": 4},
        "guide": {"kind": "filter", "res_q": False, "a_dim": 3, "hidden_dim": 4},
        "loss": {"elbo": "trace", "warmup_start": 0.5, "warmup_steps": 10},
        "data": {"name": "jsb"},
    }
    model, guide, _ = MODELS["srnn"](config)
    if state_from is not None:
        model, guide = state_from
    state = {"kind": kind, "config": config, "model": model.state_dict(), "guide": guide.state_dict(), "epoch": 1}
    return save_checkpoint(path, state)


def test_evaluate_on_a_checkpoint_of_another_model_is_one_error_line(tmp_path, capsys):
    # a checkpoint of a kind the command line does not know
    unknown = _tiny_srnn_checkpoint(tmp_path / "toy.pt", kind="toy")
    status, lines = _cli_error(["evaluate", str(unknown), "--device", "cpu"], capsys)
    assert status == 1 and len(lines) == 1 and "holds a model of kind 'toy'; known kinds" in lines[0], lines
    _record("command line", "evaluate", "main", "checkpoint of an unknown model kind", True)
    # a checkpoint whose weights belong to another model than the one its config describes
    other = ZForcing(x_dim=88, emb_dim=3, h_dim=3, z_dim=2, hidden_dim=4)
    mixed = _tiny_srnn_checkpoint(tmp_path / "mixed.pt", state_from=(other, ZForcingGuide(other)))
    status, lines = _cli_error(["evaluate", str(mixed), "--device", "cpu"], capsys)
    assert status == 1 and len(lines) == 1 and "does not match the model rebuilt from its config" in lines[0], lines
    _record("command line", "evaluate", "main", "checkpoint with another model's weights", True)
    # a truncated checkpoint (a half-written file; see test_checkpoint.py for every cut)
    data = mixed.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    status, lines = _cli_error(["evaluate", str(cut), "--device", "cpu"], capsys)
    assert status == 1 and len(lines) == 1 and "truncated or corrupt" in lines[0], lines
    _record("command line", "evaluate", "main", "truncated checkpoint", True)
    # a garbage file: tests/test_cli.py::test_bad_checkpoint_is_a_clear_error


@pytest.mark.skipif(not jsb_available(), reason="JSB Chorales not under the shared data root")
def test_resuming_a_run_of_another_model_kind_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "run"
    _tiny_srnn_checkpoint(out / "last.pt")
    argv = ["train", "zforcing", "--data", "jsb", "--data-root", str(shared_data_root()), "--max-train-sequences", "4",
            "--max-eval-sequences", "2", "--out", str(out), "--resume", "--device", "cpu", "--no-progress"]  # fmt: skip
    status, lines = _cli_error(argv, capsys)
    assert status == 1 and len(lines) == 1 and "holds a model of kind 'srnn', expected 'zforcing'" in lines[0], lines
    _record("command line", "train", "main", "--resume from a run of another model kind", True)


# --------------------------------------------------------------------------------------------
# untrusted files
# --------------------------------------------------------------------------------------------


def _parser_called(*args, **kwargs):
    raise AssertionError("a parser ran on a file whose sha256 had not matched")


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file shows code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _serve(payload, calls):
    def urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(payload)

    return urlopen


def _forged_mat(path):
    """A well-formed TCN-layout .mat (it would parse) that is not the published file."""
    from scipy.io import savemat

    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = np.zeros((3, 88), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"traindata": cells, "validdata": cells, "testdata": cells})


@pytest.mark.parametrize("how", ["forged_file", "flipped_byte"])
def test_tampered_music_mat_is_rejected_before_parsing(tmp_path, monkeypatch, how):
    import scipy.io

    info = music_module.DATASETS["jsb"]
    target = tmp_path / info.relpath
    if how == "forged_file":
        _forged_mat(target)
    else:
        shared = shared_data_root() / info.relpath
        if not shared.is_file():
            pytest.skip(f"{info.relpath} not under {shared_data_root()}")
        data = bytearray(shared.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.parent.mkdir(parents=True)
        target.write_bytes(bytes(data))
    before = target.read_bytes()
    monkeypatch.setattr(music_module, "load_mat", _parser_called)
    monkeypatch.setattr(scipy.io, "loadmat", _parser_called)
    with pytest.raises(DataIntegrityError, match="sha256") as info_error:
        load_sequences("jsb", "train", data_root=tmp_path, download=True)
    assert info.sha256 in str(info_error.value) and hashlib.sha256(before).hexdigest() in str(info_error.value)
    assert target.read_bytes() == before  # the user's file is left alone
    _record("tampered files", "music .mat", "load_sequences", how, True)


def _tampered_download_cases():
    mat = music_module.DATASETS["jsb"]
    amat = mnist_module.BINARIZED_MNIST_FILES["train"]
    zips = images_module.OMNIGLOT_FILES
    return {
        "music .mat": (lambda root: load_sequences("jsb", "train", data_root=root), [(music_module, "load_mat")], mat.relpath),
        "binarized MNIST .amat": (lambda root: load_sequences("mnist", "train", data_root=root), [(mnist_module, "_parse_amat"), (mnist_module, "_read_npz")], amat.relpath),
        "MNIST .gz": (lambda root: load_sequences("dynamic_mnist", "test", data_root=root), [(images_module, "_read_idx")], None),
        "Omniglot .zip": (lambda root: load_sequences("omniglot", "test", data_root=root), [(images_module, "_process_omniglot"), (images_module.zipfile, "ZipFile")], zips[0].relpath),
    }


@pytest.mark.parametrize("fmt", list(_tampered_download_cases()))
def test_tampered_download_is_rejected_before_parsing_and_not_kept(tmp_path, monkeypatch, fmt):
    """Every downloadable format: a download whose sha256 does not match is never parsed or kept."""
    load, parsers, relpath = _tampered_download_cases()[fmt]
    calls = []
    monkeypatch.setattr(download_module, "URLOPEN", _serve(b"tampered bytes, not the published file", calls))
    for module, attr in parsers:
        monkeypatch.setattr(module, attr, _parser_called)
    with pytest.raises(DataIntegrityError, match="sha256"):
        load(tmp_path)
    assert len(calls) == 1  # the first download was refused; nothing else was fetched
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [], files  # neither the download nor a temporary file is kept
    if relpath is not None:
        assert not (tmp_path / relpath).exists()
    _record("tampered files", fmt, "download", "served tampered bytes", True)


@pytest.mark.skipif(
    not all((shared_data_root() / f.relpath).is_file() for f in images_module.OMNIGLOT_FILES),
    reason="Omniglot zips not under the shared data root",
)
def test_tampered_omniglot_zip_is_rejected_before_it_is_opened(tmp_path, monkeypatch):
    for f in images_module.OMNIGLOT_FILES:
        (tmp_path / f.relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f.relpath).write_bytes((shared_data_root() / f.relpath).read_bytes())
    target = tmp_path / images_module.OMNIGLOT_FILES[0].relpath
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x01
    target.write_bytes(bytes(data))
    monkeypatch.setattr(images_module, "_process_omniglot", _parser_called)
    monkeypatch.setattr(images_module.zipfile, "ZipFile", _parser_called)
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_sequences("omniglot", "valid", data_root=tmp_path, download=False)
    _record("tampered files", "Omniglot .zip", "load_sequences", "flipped bit in a cached zip", True)


def test_chorales_cache_carrying_a_pickle_is_rejected_without_unpickling(tmp_path):
    from pyro_seq.data.chorales import CHORALES_RELPATH

    marker = tmp_path / "code_ran"
    path = tmp_path / CHORALES_RELPATH
    path.parent.mkdir(parents=True)
    payload = np.array([_Payload(marker)], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, version=payload, meta=payload)  # object arrays are pickled
    with pytest.raises(DataIntegrityError, match="chorales cache"):
        load_sequences("chorales", "train", data_root=tmp_path, download=False)
    assert not marker.exists()
    _record("tampered files", "chorales .npz cache", "load_sequences", "pickle payload", True)


def test_binarized_mnist_npz_carrying_a_pickle_is_rejected_without_unpickling(tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    path = tmp_path / mnist_module.BINARIZED_MNIST_FILES["npz"].relpath
    path.parent.mkdir(parents=True)
    payload = np.array([_Payload(marker)], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, train=payload, valid=payload, test=payload)
    monkeypatch.setattr(mnist_module, "_parse_amat", _parser_called)
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_sequences("mnist", "train", data_root=tmp_path, download=False)
    assert not marker.exists()
    # even with a matching checksum the reader refuses object arrays (allow_pickle=False)
    with pytest.raises(DataIntegrityError, match="allow_pickle"):
        mnist_module._read_npz(path)
    assert not marker.exists()
    _record("tampered files", "binarized MNIST .npz", "load_sequences", "pickle payload", True)


def test_checkpoint_carrying_code_is_rejected_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"pyro_seq_checkpoint": True, "format_version": 1, "kind": "srnn", "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    status, lines = _cli_error(["evaluate", str(path), "--device", "cpu"], capsys)
    assert status == 1 and len(lines) == 1 and "weights_only" in lines[0]
    assert not marker.exists()
    _record("tampered files", "checkpoint .pt", "load_checkpoint", "pickle payload", True)


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = ast.unparse(func)
            keywords = {k.arg: k.value for k in node.keywords}
            yield name, keywords, node.lineno


def _is_const(node, value):
    return isinstance(node, ast.Constant) and node.value is value


def test_every_load_in_the_package_is_pickle_free():
    """``np.load`` always with ``allow_pickle=False``, ``torch.load`` always with ``weights_only=True``,
    and no unpickling at all (``pickle``/``joblib``/``dill`` loads)."""
    bad, seen = [], defaultdict(int)
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                for n in names:
                    if n.split(".")[0] in ("joblib", "dill", "cloudpickle", "shelve"):
                        bad.append(f"{path.name}:{node.lineno} imports {n}")
                if isinstance(node, ast.ImportFrom) and node.module in ("numpy", "torch", "pickle") and {"load", "loads", "Unpickler"} & {a.name for a in node.names}:
                    bad.append(f"{path.name}:{node.lineno} imports a bare load from {node.module}")
        for name, keywords, line in _calls(tree):
            where = f"{path.relative_to(PACKAGE)}:{line}"
            if name in ("np.load", "numpy.load"):
                seen[name] += 1
                if not _is_const(keywords.get("allow_pickle"), False):
                    bad.append(f"{where}: {name} without allow_pickle=False")
            elif name == "torch.load":
                seen[name] += 1
                if not _is_const(keywords.get("weights_only"), True):
                    bad.append(f"{where}: torch.load without weights_only=True")
            elif name.split(".")[-1] in ("load", "loads", "Unpickler") and name.split(".")[0] in ("pickle", "_pickle", "cPickle"):
                bad.append(f"{where}: {name}")
    assert not bad, bad
    assert seen["np.load"] >= 2 and seen["torch.load"] >= 1, dict(seen)  # the scan does see them
    _record("tampered files", "package source", "ast scan", f"{sum(seen.values())} load calls checked", True)


# --------------------------------------------------------------------------------------------
# interrupted runs
# --------------------------------------------------------------------------------------------

KILL_RUN = [
    "--log-level", "WARNING", "train", "srnn", "--data", "jsb", "--data-root", str(shared_data_root()),
    "--max-train-sequences", "8", "--max-eval-sequences", "4", "--max-length", "40", "--batch-size", "4",
    "--d-dim", "6", "--z-dim", "3", "--a-dim", "6", "--hidden-dim", "8", "--warmup-steps", "5", "--lr", "3e-3",
    "--eval-samples", "0", "--device", "cpu", "--no-progress", "--seed", "1",
]  # fmt: skip
KILL_EPOCHS = 12

# Runs the command line in a subprocess; with RELIABILITY_SLOW_SAVE_EPOCH=k, the first checkpoint
# of epoch k is written half-way, a marker file is created, and the process sleeps until it is
# killed: a SIGKILL during a checkpoint write, with a half-written temporary file on disk. The
# patch of torch.save lives only in this subprocess; the library has no test hook.
WRAPPER = '''
import io, os, sys, time
import torch

_save = torch.save
_epoch = int(os.environ.get("RELIABILITY_SLOW_SAVE_EPOCH", "0"))
_marker = os.environ.get("RELIABILITY_SLOW_SAVE_MARKER", "")


def _slow_save(obj, f, *args, **kwargs):
    if _epoch and isinstance(obj, dict) and obj.get("pyro_seq_checkpoint") and obj.get("epoch") == _epoch:
        buf = io.BytesIO()
        _save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        open(_marker, "w").close()
        time.sleep(600)  # killed here
    return _save(obj, f, *args, **kwargs)


torch.save = _slow_save
from pyro_seq.cli import main

sys.exit(main(sys.argv[1:]))
'''


def _launch(wrapper, out, tmp_path, tag, slow_epoch=0):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["RELIABILITY_SLOW_SAVE_EPOCH"] = str(slow_epoch)
    env["RELIABILITY_SLOW_SAVE_MARKER"] = str(tmp_path / f"saving_{tag}")
    argv = [sys.executable, str(wrapper), *KILL_RUN, "--out", str(out), "--epochs", str(KILL_EPOCHS)]
    if out.exists():
        argv.append("--resume")
    log = open(tmp_path / f"stderr_{tag}.txt", "wb")
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def _wait(proc, condition, what, tmp_path, tag, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    tail = (tmp_path / f"stderr_{tag}.txt").read_bytes()[-2000:].decode(errors="replace")
    pytest.fail(f"{tag}: {what} did not happen (exit status {proc.returncode}):\n{tail}")


def _compare(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _compare(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _compare(u, v, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.slow
@pytest.mark.skipif(not jsb_available(), reason="JSB Chorales not under the shared data root")
def test_run_sigkilled_at_random_points_resumes_to_the_uninterrupted_result(tmp_path):
    """
    SIGKILL a tiny ``pyro-seq train srnn`` three times at seeded random points (two at random
    times, one half-way through writing a checkpoint), resume with ``--resume`` after each, and
    compare the end of the run with an uninterrupted one: same parameters, optimiser state and
    counters, bit for bit. A kill during a write leaves only a temporary file that the loader
    refuses (a truncated checkpoint raises CheckpointError: ``test_checkpoint.py``
    ``test_truncated_checkpoint_is_a_clear_error``); the resumed run starts from the last
    complete checkpoint.
    """
    wrapper = tmp_path / "run_cli.py"
    wrapper.write_text(WRAPPER)
    rng = random.Random(20261123)
    out = tmp_path / "killed"
    trials = []

    def last_epoch():
        return load_checkpoint(out / "last.pt")["epoch"] if (out / "last.pt").exists() else 0

    for trial in range(3):
        done = last_epoch()
        tag = f"kill{trial}"
        if trial < 2:  # at a random time: a random delay after the checkpoint of a random epoch
            target = done + rng.randint(1, 3)
            delay = rng.uniform(0.0, 0.3)
            proc = _launch(wrapper, out, tmp_path, tag)
            _wait(proc, lambda: last_epoch() >= target, f"checkpoint of epoch {target}", tmp_path, tag)
            time.sleep(delay)
            point = f"{delay:.3f} s after the epoch-{target} checkpoint"
        else:  # half-way through writing the first checkpoint of a random epoch
            target = done + rng.randint(1, 3)
            proc = _launch(wrapper, out, tmp_path, tag, slow_epoch=target)
            _wait(proc, lambda: (tmp_path / f"saving_{tag}").exists(), f"checkpoint write of epoch {target}", tmp_path, tag)
            point = f"half-way through writing the epoch-{target} checkpoint"
        assert proc.poll() is None, f"{tag}: the run ended before it was killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        partial = sorted(p.name for p in out.glob(".*.tmp"))
        if trial == 2:
            assert partial, "no half-written temporary file was left by the kill during the write"
            for name in partial:  # what the kill left is never a loadable checkpoint
                with pytest.raises(CheckpointError, match="truncated|corrupt"):
                    load_checkpoint(out / name)
            assert last_epoch() == target - 1  # the last *complete* checkpoint
        trials.append({"trial": trial + 1, "killed": point, "last_complete_checkpoint_epoch": last_epoch(), "partial_files_left": partial})

    # resume to the end, then the same run without interruption
    proc = _launch(wrapper, out, tmp_path, "final")
    assert proc.wait(timeout=300) == 0, (tmp_path / "stderr_final.txt").read_text()[-2000:]
    assert not list(out.glob(".*.tmp")), "the resumed run did not remove the half-written files"
    straight = tmp_path / "straight"
    proc = _launch(wrapper, straight, tmp_path, "straight")
    assert proc.wait(timeout=300) == 0, (tmp_path / "stderr_straight.txt").read_text()[-2000:]
    resumed, expected = load_checkpoint(out / "last.pt", kind="srnn"), load_checkpoint(straight / "last.pt", kind="srnn")
    for key in ("epoch", "global_step", "model", "guide", "optim", "best_valid", "best_epoch"):
        _compare(resumed[key], expected[key], key)
    assert resumed["epoch"] == KILL_EPOCHS
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["event"] == "epoch"] == list(range(1, KILL_EPOCHS + 1))
    _NOTES["kill_and_resume"].append({"trials": trials, "final_epoch": resumed["epoch"], "identical_to_uninterrupted_run": True})
    for t in trials:
        _record("kill and resume", "srnn", "pyro-seq train", f"trial {t['trial']}: killed {t['killed']}", True)


# --------------------------------------------------------------------------------------------
# the report (keep last)
# --------------------------------------------------------------------------------------------


def test_reliability_report(tmp_path_factory, capsys):
    """Write and print the counts of every case above; every case tried must have been handled."""
    if not _RESULTS:
        pytest.skip("no reliability case ran in this session")
    report = {"groups": {}, "notes": dict(_NOTES)}
    for (group, subject, entry, kind), (tried, handled) in sorted(_RESULTS.items()):
        s = report["groups"].setdefault(group, {}).setdefault(subject, {
            "cases_tried": 0, "cases_handled": 0, "bad_input_cases": 0, "bad_input_cases_clear_error": 0,
            "valid_input_cases": 0, "valid_input_cases_finite": 0, "examples_tried": 0, "examples_handled": 0,
            "entry_points": set(), "kinds": set(),
        })  # fmt: skip
        ok = handled == tried
        valid = (group, subject, entry, kind) in _VALID
        s["cases_tried"] += 1
        s["cases_handled"] += ok
        s["valid_input_cases" if valid else "bad_input_cases"] += 1
        s["valid_input_cases_finite" if valid else "bad_input_cases_clear_error"] += ok
        s["examples_tried"] += tried
        s["examples_handled"] += handled
        s["entry_points"].add(entry)
        s["kinds"].add(kind)
    lines = ["reliability report: distinct (subject, entry point, case kind) cases"]
    total = [0, 0]
    for group, subjects in report["groups"].items():
        for subject, s in subjects.items():
            s["entry_points"], s["kinds"] = sorted(s["entry_points"]), sorted(s["kinds"])
            total[0] += s["cases_tried"]
            total[1] += s["cases_handled"]
            valid = f", valid input finite {s['valid_input_cases_finite']} / {s['valid_input_cases']}" if s["valid_input_cases"] else ""
            label = {"kill and resume": "trials ending identical to an uninterrupted run", "tampered files": "rejected before parsing"}
            lines.append(
                f"  {group:15s} {subject:21s} {label.get(group, 'bad input with a clear error')} {s['bad_input_cases_clear_error']:3d} / "
                f"{s['bad_input_cases']:3d}{valid} ({len(s['entry_points'])} entry points x {len(s['kinds'])} kinds, "
                f"{s['examples_handled']} / {s['examples_tried']} calls)"
            )
    for trial in report["notes"].get("kill_and_resume", []):
        lines.append(f"  kill and resume: {json.dumps(trial)}")
    lines.append(f"  total: {total[1]} / {total[0]} cases handled")
    report["total"] = {"cases_tried": total[0], "cases_handled": total[1]}
    text = json.dumps(report, indent=1, default=sorted)
    path = tmp_path_factory.getbasetemp() / "reliability_report.json"
    path.write_text(text)
    if os.environ.get("PYRO_SEQ_RELIABILITY_REPORT"):
        Path(os.environ["PYRO_SEQ_RELIABILITY_REPORT"]).write_text(text)
    with capsys.disabled():
        print("\n" + "\n".join(lines) + f"\n  written to {path}")
    unhandled = [k for k, (tried, handled) in _RESULTS.items() if handled != tried]
    assert total[0] == total[1], unhandled
