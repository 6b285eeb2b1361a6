"""
Every numeric option of every ``pyro-seq train`` kind is checked by the parser: a value out of its
range, NaN or infinity is one error line naming the option and the range, and exit status 2 (a
usage error), before any data is read or any folder made. The cases are generated from the parser itself, so a new option is covered.
"""

import argparse

import pytest
from reliability_cases import cli_error, record

from pyro_seq.cli import build_parser
from pyro_seq.recipes import RECIPES


def train_parsers():
    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    return next(a for a in train._actions if isinstance(a, argparse._SubParsersAction)).choices


def bad_values(bounds):
    kind, low, high, low_open, high_open = bounds
    values = []
    if kind is float:
        values += ["nan", "inf"]
    if low is not None:
        values.append(str(low) if low_open else str(low - (1 if kind is int else 0.5)))
    if high is not None:
        values.append(str(high) if high_open else str(high + (1 if kind is int else 0.5)))
    return values


def cases():
    """(kind, option, bad value, nargs), each option of each family once (at its first kind)."""
    seen, found = set(), []
    for kind, parser in train_parsers().items():
        family = type(RECIPES[kind]).__name__
        for action in parser._actions:
            if hasattr(action.type, "bounds") and (family, action.option_strings[0]) not in seen:
                seen.add((family, action.option_strings[0]))
                nargs = action.nargs if isinstance(action.nargs, int) else 1
                found += [(kind, action.option_strings[0], value, nargs) for value in bad_values(action.type.bounds)]
    return found


CASES = cases()


def test_every_numeric_option_has_a_range_checked_type():
    unchecked = sorted(
        (kind, a.option_strings[0])
        for kind, parser in train_parsers().items()
        for a in parser._actions
        if a.type in (int, float)
    )
    assert not unchecked, f"options parsed without a range check: {unchecked}"
    assert len(CASES) > 80


@pytest.mark.parametrize("kind,option,value,nargs", CASES, ids=[f"{k}{o}={v}" for k, o, v, _ in CASES])
def test_out_of_range_option_is_one_line_before_anything_runs(tmp_path, capsys, kind, option, value, nargs):
    out = tmp_path / "out"
    status, lines = cli_error(["train", kind, "--out", str(out), option, *[value] * nargs], capsys)
    assert status == 2 and len(lines) == 1, lines
    assert f"argument {option}" in lines[0] and "must be" in lines[0], lines
    assert not out.exists()
    record("option ranges", kind, option, value, True)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_an_unknown_device_is_one_line(tmp_path, capsys, device):
    status, lines = cli_error(["train", "srnn", "--out", str(tmp_path / "out"), "--device", device], capsys)
    assert status == 2 and len(lines) == 1 and "argument --device" in lines[0], lines
    record("option ranges", "srnn", "--device", device, True)
