"""
Application families built on the :mod:`pyro_seq` core: sequence classifiers of the same research
line that are not latent-variable sequence models.

* :mod:`pyro_seq.contrib.protein` -- subcellular localisation and secondary structure of proteins
  (conv-BLSTM-attention, BLSTM), with calibrated uncertainty.
* :mod:`pyro_seq.contrib.spatial` -- digit-sequence classification on cluttered MNIST with
  recurrent spatial transformers (RNN-SPN).

Each sub-package holds its data layer, models, guides, metrics, plots and its training recipe;
it imports the core, and nothing in the core imports it (the command line registers its recipes).
"""
