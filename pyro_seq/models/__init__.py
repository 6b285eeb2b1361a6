"""
Generative models of pyro_seq, written as Pyro models.

Each model is a :class:`~pyro.nn.PyroModule` whose ``forward(x, mask)`` is a
Pyro model over a padded batch of sequences ``x [batch, time, x_dim]`` with a
prefix ``mask [batch, time]`` (images, for :class:`LadderVAE`, are one-frame
sequences ``[batch, 1, x_dim]`` or plain ``[batch, x_dim]``; the protein models,
:class:`ProteinLocalizer` and :class:`SecondaryStructureBLSTM`, read token ids
``[batch, length]`` and are discriminative: ``Trace_ELBO`` with an empty guide is their
cross-entropy; so are the digit-sequence classifiers :class:`RecurrentSpatialTransformer`,
:class:`FeedForwardSpatialTransformer` and :class:`ConvDigitClassifier`, which read images
``[batch, 1, S, S]`` and digit labels ``[batch, D]``); pair it with a guide from :mod:`pyro_seq.guides`
and an ELBO from :mod:`pyro_seq.losses`::

    model = SRNN(x_dim=88)
    guide = SRNNGuide(model, kind="smoother", res_q=True)
    svi = SVI(model, guide, ClippedAdam({"lr": 1e-3}), WarmupTrace_ELBO())
    svi.step(x, mask)
"""

from pyro_seq.models.ladder import LadderVAE
from pyro_seq.models.lgssm import LinearGaussianSSM
from pyro_seq.models.semisupervised import ADGM, M2, SDGM, SemiSupervisedVAE
from pyro_seq.models.srnn import EMISSIONS, LIKELIHOODS, SRNN
from pyro_seq.models.vaegan import VAEGAN
from pyro_seq.models.zforcing import ZForcing

__all__ = ["ADGM", "EMISSIONS", "LIKELIHOODS", "LadderVAE", "LinearGaussianSSM", "M2", "SDGM", "SRNN", "SemiSupervisedVAE", "VAEGAN", "ZForcing"]
