"""
Bad sequences and arguments given to the data loaders and batching functions are clear errors.
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from reliability_cases import raised_in, record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyro_seq
from pyro_seq.data import (
    load_sequences,
    make_batches,
    pad_batch,
)

REPO = REPO_ROOT
PACKAGE = Path(pyro_seq.__file__).resolve().parent


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
        record("data loaders", "batching", entry, kind, PACKAGE in raised_in(info.value).parents)
        assert PACKAGE in raised_in(info.value).parents


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
    record("data loaders", "batching", "make_batches", kind, True)


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
    record("data loaders", "load_sequences", "load_sequences", kind, True)


