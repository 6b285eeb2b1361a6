"""
Protein sequence classifiers with calibrated uncertainty.

* :mod:`~pyro_seq.contrib.protein.data` -- DeepLoc FASTA and CB513 CSV readers, the 700×57 arrays,
  encodings (one-hot, BLOSUM62), folds and padded length-grouped batches.
* :mod:`~pyro_seq.contrib.protein.models` -- :class:`ProteinLocalizer` (conv-BLSTM-attention
  subcellular localisation) and :class:`SecondaryStructureBLSTM` (8-class secondary structure),
  Pyro models whose labels are Categorical sample sites.
* :mod:`~pyro_seq.contrib.protein.guides` -- :class:`LastLayerGuide`, the mean-field guide of a
  Bayesian output layer.
* :mod:`~pyro_seq.contrib.protein.metrics` -- the evaluation protocol and its metrics;
  :mod:`~pyro_seq.contrib.protein.plots` -- attention, filter logos, structure strips;
  :mod:`~pyro_seq.contrib.protein.recipe` -- ``pyro-seq train localizer|secondary-structure``.

**References**

[1] Søren Kaae Sønderby, Casper Kaae Sønderby, Henrik Nielsen, Ole Winther, "Convolutional LSTM
    Networks for Subcellular Localization of Proteins", AlCoB 2015, arXiv:1503.01919.
[2] Søren Kaae Sønderby, Ole Winther, "Protein Secondary Structure Prediction with Long Short
    Term Memory Networks", arXiv:1412.7828.
"""

from pyro_seq.contrib.protein.data import (
    LOCATIONS,
    ProteinBatch,
    ProteinFormatError,
    ProteinRecord,
    SecondaryStructureRecord,
    encoding_matrix,
    load_cb513,
    load_deeploc,
    load_zhou_troyanskaya,
    protein_batches,
    q8_to_q3,
    read_cb513_csv,
    read_deeploc_fasta,
    sequence_folds,
    tokenize,
)
from pyro_seq.contrib.protein.guides import LastLayerGuide
from pyro_seq.contrib.protein.models import ProteinLocalizer, SecondaryStructureBLSTM, q8_probs_to_q3

__all__ = [
    "LOCATIONS",
    "LastLayerGuide",
    "ProteinBatch",
    "ProteinFormatError",
    "ProteinLocalizer",
    "ProteinRecord",
    "SecondaryStructureBLSTM",
    "SecondaryStructureRecord",
    "encoding_matrix",
    "load_cb513",
    "load_deeploc",
    "load_zhou_troyanskaya",
    "protein_batches",
    "q8_probs_to_q3",
    "q8_to_q3",
    "read_cb513_csv",
    "read_deeploc_fasta",
    "sequence_folds",
    "tokenize",
]
