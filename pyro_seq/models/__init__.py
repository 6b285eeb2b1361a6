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

The sequence models and the Ladder VAE follow Pyro's habits: vectorised particles
(``Trace_ELBO(num_particles=K, vectorize_particles=True)``) and
``Predictive(..., parallel=True)``; the ``obs=None`` idiom, ``model(None,
num_steps=T, batch_size=B)`` (the Ladder VAE: ``model(None, batch_size=B)``) samples
new data, so ``Predictive(model, num_samples=S)(None, num_steps=T, batch_size=B)["x"]``
are prior-predictive draws and ``Predictive(model, guide=guide, num_samples=S)(x, mask,
predict=True)["x"]`` posterior-predictive ones (the guides accept and ignore
``predict``); under ``JitTrace_ELBO`` pass the batch shape as keywords,
``svi.step(x, mask, num_steps=x.shape[1], batch_size=x.shape[0])``.

**Saving and loading.** Each model instance has its own Pyro name (``"srnn"``, then
``"srnn_1"``, ... while another model's parameters hold the name in Pyro's param store;
a ``name`` given to the constructor is kept), and a guide takes its model's name plus
``"_guide"``; see :class:`pyro_seq.util.PyroNamed`. Two models in one process therefore
train side by side. Save and load either way:

- ``torch.save({"model": model.state_dict(), "guide": guide.state_dict()}, path)``, then
  ``load_state_dict`` into a model and guide rebuilt from ``model.config`` and
  ``guide.config`` (``torch.load(path, weights_only=True)`` reads it). The keys are
  relative to the module, so the Pyro name does not matter, and the state dict holds the
  buffers too (the Ladder VAE's batch-norm running statistics). This is what the
  checkpoints of :mod:`pyro_seq.training` hold.
- ``pyro.get_param_store().save(path)``, then, with a rebuilt model and guide,
  ``pyro.get_param_store().load(path)``: on its next run a model or guide copies the
  loaded values of its names into its parameters. The names must match: a model rebuilt
  in a fresh process, or after ``pyro.clear_param_store()``, takes the default name again,
  so give ``name=`` to a model saved under another one (``model._pyro_name``). The store
  holds parameters only: no buffers, so use the state dict for a Ladder VAE evaluated
  with batch-norm running statistics.
"""

from pyro_seq.models.ladder import LadderVAE
from pyro_seq.models.lgssm import LinearGaussianSSM
from pyro_seq.models.semisupervised import ADGM, M2, SDGM, SemiSupervisedVAE
from pyro_seq.models.srnn import EMISSIONS, LIKELIHOODS, SRNN
from pyro_seq.models.vaegan import VAEGAN
from pyro_seq.models.zforcing import ZForcing

__all__ = ["ADGM", "EMISSIONS", "LIKELIHOODS", "LadderVAE", "LinearGaussianSSM", "M2", "SDGM", "SRNN", "SemiSupervisedVAE", "VAEGAN", "ZForcing"]
