"""
Structured guides (variational posteriors) for the models in :mod:`pyro_seq.models`.

A guide takes the model it serves as its first argument, as Pyro's autoguides
do, and shares the model's deterministic layers with it rather than
duplicating them. The model is *not* registered as a submodule of the guide,
so every parameter keeps exactly one Pyro name.
"""

from pyro_seq.guides.autoguide import AutoSequenceFilter, AutoSequenceGuide, AutoSequenceSmoother
from pyro_seq.guides.auxiliary import (
    AuxiliaryLatentGuide,
    AuxiliaryModel,
    SequenceAuxiliaryGuide,
    SequenceAuxiliaryModel,
    add_auxiliary,
)
from pyro_seq.guides.ladder import BottomUpGuide, LadderGuide
from pyro_seq.guides.lgssm import LinearGaussianSSMGuide
from pyro_seq.guides.point import PointEstimateGuide
from pyro_seq.guides.semisupervised import SemiSupervisedGuide, Prediction
from pyro_seq.guides.srnn import GUIDE_KINDS, SRNNGuide
from pyro_seq.guides.vaegan import VAEGANGuide
from pyro_seq.guides.zforcing import AUXILIARY_KINDS, ZForcingGuide

__all__ = [
    "AUXILIARY_KINDS", "AutoSequenceFilter", "AutoSequenceGuide", "AutoSequenceSmoother", "AuxiliaryLatentGuide",
    "AuxiliaryModel", "BottomUpGuide", "GUIDE_KINDS", "LadderGuide", "LinearGaussianSSMGuide", "PointEstimateGuide",
    "Prediction", "SRNNGuide", "SemiSupervisedGuide", "SequenceAuxiliaryGuide", "SequenceAuxiliaryModel",
    "VAEGANGuide", "ZForcingGuide", "add_auxiliary",
]
