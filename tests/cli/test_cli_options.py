"""
Every ``pyro-seq train KIND`` parser is built the same way: the shared options are declared once
(:data:`~pyro_seq.recipes.options.SHARED_OPTIONS`) and keep one meaning in every family; a family
adds only options of its own.
"""

import argparse
import re

import pytest

from pyro_seq.cli import build_parser
from pyro_seq.recipes import FAMILIES, RECIPES
from pyro_seq.recipes.options import OWN_MEANINGS, SHARED_OPTIONS
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "pyro_seq"
EXPECTED_KINDS = {
    "srnn", "zforcing", "lvae", "m2", "adgm", "sdgm", "vaegan", "vae",
    "localizer", "secondary-structure", "rnn-spn", "ffn-spn", "cnn",
}


def train_parsers():
    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    kinds = next(a for a in train._actions if isinstance(a, argparse._SubParsersAction))
    return kinds.choices


def options_of(parser):
    return {flag: action for action in parser._actions for flag in action.option_strings if flag.startswith("--")}


def test_every_kind_has_one_recipe_and_one_train_parser():
    assert set(RECIPES) == EXPECTED_KINDS
    assert set(train_parsers()) == EXPECTED_KINDS
    assert sum(len(r.kinds) for r in FAMILIES) == len(EXPECTED_KINDS)  # no kind served twice


def test_options_in_several_families_are_the_shared_ones_with_one_meaning():
    shared_flags = {flags[0]: (dest, kwargs) for dest, (_, flags, kwargs) in SHARED_OPTIONS.items()}
    seen = {}
    for kind, parser in train_parsers().items():
        for flag, action in options_of(parser).items():
            seen.setdefault(flag, {})[kind] = action
    for flag, by_kind in seen.items():
        families = {type(RECIPES[k]).__name__ for k in by_kind}
        if flag in shared_flags:
            dest, kwargs = shared_flags[flag]
            for kind, action in by_kind.items():
                assert action.dest == dest and action.help == kwargs["help"], (flag, kind)
                assert action.type is kwargs.get("type"), (flag, kind)
        else:
            assert len(families) == 1 or flag in OWN_MEANINGS or flag == "--help", f"{flag} is declared by several families: {sorted(families)}"


def test_shared_options_are_declared_nowhere_else():
    declared = re.compile(r"add_argument\(\s*\"(--[a-z-]+)\"")
    shared_flags = {flags[0] for _, flags, _ in SHARED_OPTIONS.values()}
    for path in list((PACKAGE / "recipes").glob("*.py")) + list((PACKAGE / "contrib").rglob("*.py")):
        again = shared_flags & set(declared.findall(path.read_text()))
        assert not again, f"{path.name} declares shared options again: {sorted(again)}"


@pytest.mark.parametrize("kind", sorted(EXPECTED_KINDS))
def test_family_defaults_only_change_defaults(kind):
    recipe = RECIPES[kind]
    defaults = recipe.defaults_for(kind)
    assert set(defaults) <= set(recipe.options_for(kind))
    parser = train_parsers()[kind]
    for dest, value in defaults.items():
        assert parser.get_default(dest) == value
