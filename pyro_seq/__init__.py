"""
pyro_seq: deep latent-variable sequence models, structured guides and
warm-up objectives for Pyro.

Public paths: :mod:`pyro_seq.models`, :mod:`pyro_seq.guides`,
:mod:`pyro_seq.losses`, :mod:`pyro_seq.data`, :mod:`pyro_seq.bounds`.
"""

__version__ = "0.1.0"
