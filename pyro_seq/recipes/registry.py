"""
The registered model families: every ``pyro-seq`` kind and the :class:`~pyro_seq.recipes.Recipe`
that serves it. A new family adds its recipe module and one entry to :data:`FAMILIES`.
"""

from typing import Dict, Optional

from pyro_seq.contrib.protein.recipe import ProteinRecipe
from pyro_seq.contrib.spatial.recipe import SpatialRecipe
from pyro_seq.recipes.base import Recipe, restore
from pyro_seq.recipes.semisupervised import SemiSupervisedRecipe
from pyro_seq.recipes.sequence import SequenceRecipe
from pyro_seq.recipes.vaegan import ImageVAERecipe

__all__ = ["FAMILIES", "RECIPES", "load_model"]

#: One recipe per family, in the order ``pyro-seq train --help`` lists them.
FAMILIES = (SequenceRecipe(), SemiSupervisedRecipe(), ImageVAERecipe(), ProteinRecipe(), SpatialRecipe())

#: kind -> the recipe that serves it.
RECIPES: Dict[str, Recipe] = {kind: recipe for recipe in FAMILIES for kind in recipe.kinds}



def load_model(path, device="cpu", kind: Optional[str] = None):
    """
    Rebuild any registered family's checkpoint: ``(model, guide, loss, checkpoint)``, the modules in
    evaluation mode on ``device`` (see :func:`~pyro_seq.recipes.base.restore`).

    :param str kind: the kind the checkpoint must hold (any registered kind if ``None``).
    :raises ~pyro_seq.training.checkpoint.CheckpointError: bad file or unknown kind.
    """
    return restore(
        {k: recipe.build for k, recipe in RECIPES.items()}, path, device, kind, {k: recipe.config_schema(k) for k, recipe in RECIPES.items()}
    )
