"""
Training recipes: one :class:`Recipe` per model family (options, config -> model/guide/loss, data,
evaluation, sampling), the one :func:`train` recipe they all run, and :func:`load_model` to rebuild
any checkpoint. The ``pyro-seq`` command line is a thin layer over these.

Families: :mod:`~pyro_seq.recipes.sequence` (``srnn``, ``zforcing``, ``lvae``),
:mod:`~pyro_seq.recipes.semisupervised` (``m2``, ``adgm``, ``sdgm``),
:mod:`~pyro_seq.recipes.vaegan` (``vaegan``, ``vae``), :mod:`pyro_seq.contrib.protein.recipe`
(``localizer``, ``secondary-structure``) and :mod:`pyro_seq.contrib.spatial.recipe`
(``rnn-spn``, ``ffn-spn``, ``cnn``); the registry is :data:`~pyro_seq.recipes.registry.RECIPES`.
"""

from pyro_seq.recipes.base import Recipe, RunData, train

_REGISTRY_NAMES = ("FAMILIES", "RECIPES", "load_model")


def __getattr__(name):
    # the registry imports every family's recipe module, and those import pyro_seq.recipes.base:
    # loaded on first use, so that importing one family's recipe does not import them all first
    if name in _REGISTRY_NAMES:
        from pyro_seq.recipes import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["FAMILIES", "RECIPES", "Recipe", "RunData", "load_model", "train"]
