"""
Bad input to every model, guide, loss and bound gets a clear error naming the argument; valid input
gets a finite result (property-based, hypothesis, over the catalogue of case kinds in
``reliability_cases.py``).
"""

from pathlib import Path

import pytest
from conftest import REPO_ROOT
from reliability_cases import (
    CASE_KINDS,
    MODEL_CASES,
    PAIRS,
    VALID_FOR,
    cached_build,
    check_outcome,
    entry_points,
    record,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyro_seq

REPO = REPO_ROOT
PACKAGE = Path(pyro_seq.__file__).resolve().parent


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
    for entry, fn in entry_points(*cached_build(pair)).items():
        expected_fault = None if entry in VALID_FOR[kind] else fault
        handled, what = check_outcome(fn, x, mask, expected_fault, reference)
        record("model inputs", pair, entry, kind, handled, valid=expected_fault is None)
        if not handled:
            failures.append(f"{entry}: {what}")
    assert not failures, "\n".join(failures)


