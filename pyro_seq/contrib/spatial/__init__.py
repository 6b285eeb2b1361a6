"""
Digit-sequence classification with spatial transformers on cluttered MNIST.

* :mod:`~pyro_seq.contrib.spatial.data` -- the seeded, cached cluttered-MNIST generator
  (:func:`load_cluttered_mnist`) and its batches.
* :mod:`~pyro_seq.contrib.spatial.models` -- :class:`RecurrentSpatialTransformer` (RNN-SPN: one
  affine glimpse per digit), :class:`FeedForwardSpatialTransformer` and the
  :class:`ConvDigitClassifier` baseline; labels are Categorical sample sites under ``pyro.markov``,
  and ``stochastic_attention=True`` makes the glimpse parameters latent.
* :mod:`~pyro_seq.contrib.spatial.guides` -- :class:`SpatialAttentionGuide`, the amortised guide of
  stochastic attention.
* :mod:`~pyro_seq.contrib.spatial.metrics` -- digit and sequence error, glimpse pictures;
  :mod:`~pyro_seq.contrib.spatial.recipe` -- ``pyro-seq train rnn-spn|ffn-spn|cnn``.

**References**

[1] Søren Kaae Sønderby, Casper Kaae Sønderby, Lars Maaløe, Ole Winther, "Recurrent Spatial
    Transformer Networks", arXiv:1509.05329.
"""

from pyro_seq.contrib.spatial.data import (
    CLUTTERED_VARIANTS,
    ClutteredBatch,
    ClutteredBatches,
    ClutteredMNIST,
    generate_cluttered,
    load_cluttered_mnist,
)
from pyro_seq.contrib.spatial.guides import SpatialAttentionGuide
from pyro_seq.contrib.spatial.models import (
    ConvDigitClassifier,
    FeedForwardSpatialTransformer,
    RecurrentSpatialTransformer,
)

__all__ = [
    "CLUTTERED_VARIANTS",
    "ClutteredBatch",
    "ClutteredBatches",
    "ClutteredMNIST",
    "ConvDigitClassifier",
    "FeedForwardSpatialTransformer",
    "RecurrentSpatialTransformer",
    "SpatialAttentionGuide",
    "generate_cluttered",
    "load_cluttered_mnist",
]
