# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Sample-quality metrics for generative models of 28x28 digit images that need
no download: a small convolutional classifier trained on MNIST by this project
(:class:`MnistClassifier`, :func:`train_mnist_classifier`,
:func:`load_or_train_classifier`) stands in for the Inception network that the
inception score and the Fréchet Inception distance are defined with.

Let :math:`p(y \\mid x)` be the classifier's class probabilities for a sample
:math:`x` and :math:`p(y) = \\frac{1}{N} \\sum_i p(y \\mid x_i)` their mean over
the :math:`N` samples. :func:`sample_quality` reports:

- ``mean_confidence``: :math:`\\frac{1}{N} \\sum_i \\max_y p(y \\mid x_i)`,
  high when samples are unambiguous digits. Not a detector of images that are
  no digit at all: like most discriminative classifiers, this one is
  over-confident far from the data (one trained for 3 epochs on all 50,000
  training images gave uniform noise a mean confidence of 0.96 against 0.98
  for real test digits, putting nearly all of it in one class), so read it together with the
  class coverage and the Fréchet distance, which do separate noise from digits;
- ``inception_score``: :math:`\\exp\\big(\\frac{1}{N} \\sum_i
  \\mathrm{KL}(p(y \\mid x_i) \\,\\|\\, p(y))\\big)` [1], between 1 and the
  number of classes (10); high when each sample is confidently one class and
  the classes are balanced. Computed on the whole set (no splits);
- ``entropy_of_mean``, ``num_classes_seen``, ``class_histogram``: the class
  coverage of the samples (see :func:`class_diversity`); the entropy of
  :math:`p(y)` is at most :math:`\\log 10` nats;
- ``frechet_distance`` (when reference images are given): the squared
  Fréchet distance [2] between Gaussians fitted (:func:`gaussian_stats`) to the
  classifier's 128-d penultimate features of the samples and of the reference
  images (:func:`frechet_distance`); 0 for identical statistics, lower is better.

.. warning:: These are **MNIST-classifier analogues** of the inception score
    and FID, not the metrics themselves: the numbers depend on this classifier
    (its architecture, training run and feature layer) and are **not
    comparable to Inception-based IS/FID values** reported in papers, nor to
    values from another classifier checkpoint. Compare models only with the
    same classifier file, the same reference set and similar sample counts
    (both the inception score and the Fréchet distance are biased in
    :math:`N`).

Example::

    from pyro_seq.diagnostics.image_metrics import load_or_train_classifier, sample_quality
    from pyro_seq.data import load_mnist

    classifier, info = load_or_train_classifier("runs/mnist_classifier.pt")
    reference, _ = load_mnist("test")                       # uint8 [10000, 28, 28]
    metrics = sample_quality(classifier, samples, reference=reference[:5000])

**References**

[1] Tim Salimans, Ian Goodfellow, Wojciech Zaremba, Vicki Cheung, Alec Radford,
    Xi Chen, "Improved Techniques for Training GANs", NeurIPS 2016,
    arXiv:1606.03498.

[2] Martin Heusel, Hubert Ramsauer, Thomas Unterthiner, Bernhard Nessler,
    Sepp Hochreiter, "GANs Trained by a Two Time-Scale Update Rule Converge to
    a Local Nash Equilibrium", NeurIPS 2017, arXiv:1706.08500.
"""

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from pyro_seq.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "CHECKPOINT_KIND",
    "MnistClassifier",
    "train_mnist_classifier",
    "load_or_train_classifier",
    "frechet_distance",
    "gaussian_stats",
    "class_diversity",
    "sample_quality",
]

logger = logging.getLogger(__name__)

#: ``kind`` of the checkpoints written by :func:`load_or_train_classifier`.
CHECKPOINT_KIND = "mnist_classifier"

#: Fraction of the samples a class must be the argmax of to count in ``num_classes_seen``.
SEEN_FRACTION = 0.01

#: How far outside [0, 1] image values may lie (rounding) before they are rejected.
RANGE_TOLERANCE = 1e-3

# MNIST pixel mean / std (of the [0, 1] training images), used to standardise inputs.
_MNIST_MEAN = 0.1307
_MNIST_STD = 0.3081


# --------------------------------------------------------------------------------------------
# Classifier
# --------------------------------------------------------------------------------------------


class MnistClassifier(nn.Module):
    """
    A small CNN for 28x28 digits::

        conv 3x3 (32) -> ReLU -> maxpool 2 -> conv 3x3 (64) -> ReLU
        -> conv 3x3 stride 2 (128) -> ReLU -> FC (128) -> ReLU  = features
        -> FC (10)                                              = logits

    (Pooling after the first convolution rather than the second makes it about 2.3 times
    cheaper to train on a CPU, at no cost in test error worth noting on MNIST.)

    :param tuple channels: output channels of the three convolutions.
    :param int hidden: size of the penultimate (feature) layer.
    :param int num_classes: number of classes.
    """

    def __init__(self, channels=(32, 64, 128), hidden=128, num_classes=10):
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.channels = (c1, c2, c3)
        self.hidden = int(hidden)
        self.num_classes = int(num_classes)
        self.conv1 = nn.Conv2d(1, c1, 3)  # 28 -> 26, pooled to 13
        self.conv2 = nn.Conv2d(c1, c2, 3)  # 13 -> 11
        self.conv3 = nn.Conv2d(c2, c3, 3, stride=2)  # 11 -> 5
        self.fc1 = nn.Linear(c3 * 5 * 5, self.hidden)
        self.fc2 = nn.Linear(self.hidden, self.num_classes)

    def config(self):
        """The keyword arguments that rebuild this architecture (JSON- and checkpoint-safe)."""
        return {"channels": list(self.channels), "hidden": self.hidden, "num_classes": self.num_classes}

    def features(self, x):
        """
        :param torch.Tensor x: images ``[N, 1, 28, 28]`` in [0, 1].
        :returns: penultimate features (after ReLU) ``[N, hidden]``.
        """
        h = (x - _MNIST_MEAN) / _MNIST_STD  # [N, 1, 28, 28]
        h = F.relu(self.conv1(h))  # [N, 32, 26, 26]
        h = F.max_pool2d(h, 2)  # [N, 32, 13, 13]
        h = F.relu(self.conv2(h))  # [N, 64, 11, 11]
        h = F.relu(self.conv3(h))  # [N, 128, 5, 5]
        h = h.flatten(1)  # [N, 3200]
        return F.relu(self.fc1(h))  # [N, 128]

    def forward(self, x):
        """
        :param torch.Tensor x: images ``[N, 1, 28, 28]`` in [0, 1].
        :returns: class logits ``[N, 10]``.
        """
        return self.fc2(self.features(x))  # [N, 10]


def _images_to_tensor(images):
    """uint8 ``[N, 28, 28]`` -> float32 ``[N, 1, 28, 28]`` in [0, 1]."""
    return torch.from_numpy(np.array(images, dtype=np.float32)).div(255.0).unsqueeze(1)  # [N, 1, 28, 28]


@torch.no_grad()
def _error_percent(classifier, x, y, batch_size=1000):
    """Classification error (%) of ``classifier`` on images ``x [N, 1, 28, 28]``, labels ``y [N]``."""
    device = next(classifier.parameters()).device
    wrong = 0
    for start in range(0, len(x), batch_size):
        logits = classifier(x[start : start + batch_size].to(device))  # [B, 10]
        wrong += int((logits.argmax(-1).cpu() != y[start : start + batch_size]).sum())
    return 100.0 * wrong / len(x)


def train_mnist_classifier(
    data_root=None,
    epochs=2,
    batch_size=128,
    lr=1e-3,
    seed=0,
    progress=None,
    limit=None,
    device=None,
    download=True,
):
    """
    Train an :class:`MnistClassifier` with Adam on the MNIST ``"train"`` split
    (the first 50,000 training images) and measure its test error.

    The run is seeded (initialisation and shuffling) without disturbing the
    caller's global torch RNG state.

    :param data_root: see :func:`~pyro_seq.data.load_mnist`.
    :param int epochs: passes over the training images.
    :param int batch_size: minibatch size.
    :param float lr: Adam learning rate.
    :param int seed: random seed.
    :param bool progress: show a tqdm progress bar; ``None`` shows it only when stderr is a tty.
    :param int limit: if given, train on only the first ``limit`` training images and
        measure the test error on the first 1,000 test images (for quick runs).
    :param device: torch device to train on (default CPU).
    :param bool download: whether missing MNIST files may be downloaded.
    :returns: ``(classifier, summary)``: the trained classifier in eval mode and a dict with
        ``test_error`` (%), ``num_test``, ``epochs``, ``num_train``, ``final_train_loss``
        (mean over the last epoch) and ``seconds`` (wall time of training and evaluation).
    """
    from pyro_seq.data import load_mnist

    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive or None, got {limit}")
    device = torch.device("cpu" if device is None else device)
    progress = sys.stderr.isatty() if progress is None else bool(progress)

    t0 = time.perf_counter()
    train_images, train_labels = load_mnist("train", data_root, download=download)
    test_images, test_labels = load_mnist("test", data_root, download=download)
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
        test_images, test_labels = test_images[:1000], test_labels[:1000]
    x_train = _images_to_tensor(train_images)  # [N, 1, 28, 28]
    y_train = torch.as_tensor(train_labels, dtype=torch.long)  # [N]
    x_test = _images_to_tensor(test_images)  # [M, 1, 28, 28]
    y_test = torch.as_tensor(test_labels, dtype=torch.long)  # [M]
    num_train = len(x_train)
    logger.info("training MnistClassifier on %d images for %d epoch(s) on %s", num_train, epochs, device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = MnistClassifier().to(device)
        generator = torch.Generator().manual_seed(seed)
        optim = torch.optim.Adam(classifier.parameters(), lr=lr)
        classifier.train()
        epoch_loss = float("nan")
        for epoch in range(epochs):
            order = torch.randperm(num_train, generator=generator)  # [N]
            starts = range(0, num_train, batch_size)
            desc = f"classifier epoch {epoch + 1}/{epochs}"
            bar = tqdm(starts, desc=desc, disable=not progress, leave=False)
            total, count = 0.0, 0
            for start in bar:
                index = order[start : start + batch_size]  # [B]
                x = x_train[index].to(device)  # [B, 1, 28, 28]
                y = y_train[index].to(device)  # [B]
                loss = F.cross_entropy(classifier(x), y)
                optim.zero_grad()
                loss.backward()
                optim.step()
                total += float(loss.detach()) * len(index)
                count += len(index)
                bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
            bar.close()
            epoch_loss = total / count
            logger.info(
                "classifier epoch %d/%d: train loss %.4f (%.1f s)",
                epoch + 1, epochs, epoch_loss, time.perf_counter() - t0,
            )

    classifier.eval()
    test_error = _error_percent(classifier, x_test, y_test)
    seconds = time.perf_counter() - t0
    logger.info(
        "classifier test error %.2f%% on %d images (%.1f s in all)", test_error, len(x_test), seconds
    )
    summary = {
        "test_error": float(test_error),
        "num_test": int(len(x_test)),
        "epochs": int(epochs),
        "num_train": int(num_train),
        "final_train_loss": float(epoch_loss),
        "seconds": float(seconds),
    }
    return classifier, summary


def load_or_train_classifier(path, data_root=None, map_location="cpu", **train_kwargs):
    """
    Load the classifier saved at ``path``; if there is no file there, train one with
    :func:`train_mnist_classifier` and save it (atomically, with
    :func:`~pyro_seq.training.checkpoint.save_checkpoint`) so that later runs reuse it.

    An existing file is always reused, whatever ``train_kwargs`` say (a warning is logged
    when they differ from those it was trained with); delete it to retrain.

    The checkpoint (kind :data:`CHECKPOINT_KIND`) holds ``state_dict``, ``summary`` (the
    training summary) and ``config`` = ``{"model": <architecture kwargs>, "train": <training
    kwargs>}``; it is read with :func:`~pyro_seq.training.checkpoint.load_checkpoint` (``weights_only``).

    :param path: checkpoint file.
    :param data_root: see :func:`~pyro_seq.data.load_mnist` (used only when training).
    :param map_location: device the loaded classifier is put on.
    :param train_kwargs: passed to :func:`train_mnist_classifier`.
    :returns: ``(classifier, info)``: the classifier in eval mode and the training summary
        plus ``loaded`` (True if read from ``path``, False if trained now) and ``path``.
    :raises ~pyro_seq.training.checkpoint.CheckpointError: if ``path`` exists but is corrupt, not a
        ``pyro_seq`` checkpoint, of another kind, or does not match :class:`MnistClassifier`.
    """
    path = Path(path)
    train_config = {k: v for k, v in train_kwargs.items() if k not in ("progress", "device", "download")}
    if path.exists():
        state = load_checkpoint(path, map_location=map_location, kind=CHECKPOINT_KIND)
        try:
            config = state["config"]
            classifier = MnistClassifier(**config["model"])
            classifier.load_state_dict(state["state_dict"])
            summary = dict(state["summary"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"checkpoint {path} does not hold a usable MnistClassifier ({type(e).__name__}: {e})"
            ) from e
        saved = config.get("train", {})
        differing = {k: (saved.get(k), v) for k, v in train_config.items() if saved.get(k) != v}
        if differing:
            logger.warning(
                "reusing %s although it was trained with other settings (saved, asked): %s", path, differing
            )
        error = summary.get("test_error", float("nan"))
        logger.info("loaded MnistClassifier from %s (test error %.2f%%)", path, error)
        classifier.to(map_location).eval()
        return classifier, dict(summary, loaded=True, path=str(path))

    classifier, summary = train_mnist_classifier(data_root=data_root, **train_kwargs)
    state = {
        "kind": CHECKPOINT_KIND,
        "config": {"model": classifier.config(), "train": train_config},
        "state_dict": {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
        "summary": summary,
    }
    save_checkpoint(path, state)
    logger.info("saved MnistClassifier to %s", path)
    classifier.to(map_location).eval()
    return classifier, dict(summary, loaded=False, path=str(path))


# --------------------------------------------------------------------------------------------
# Pure metric functions
# --------------------------------------------------------------------------------------------


def _as_float64(x, name):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _sqrt_psd(cov):
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues from rounding set to 0)."""
    eigvals, eigvecs = np.linalg.eigh(cov)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1, cov1, mu2, cov2):
    """
    Squared Fréchet (2-Wasserstein) distance between the Gaussians
    :math:`\\mathcal{N}(\\mu_1, \\Sigma_1)` and :math:`\\mathcal{N}(\\mu_2, \\Sigma_2)`:

    .. math::

        \\|\\mu_1 - \\mu_2\\|^2 + \\mathrm{tr}\\,\\Sigma_1 + \\mathrm{tr}\\,\\Sigma_2
        - 2\\, \\mathrm{tr}\\big((\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2})^{1/2}\\big).

    Computed in float64 without :func:`scipy.linalg.sqrtm`: :math:`\\Sigma_1^{1/2}` comes from
    the eigendecomposition of the symmetric :math:`\\Sigma_1`, and the trace term is the sum of
    the square roots of the eigenvalues of the symmetric PSD matrix
    :math:`\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}` (which has the same eigenvalues as
    :math:`\\Sigma_1 \\Sigma_2`, the matrix FID implementations take ``sqrtm`` of), so no
    complex parts arise. Eigenvalues below 0 from rounding are set to 0, the covariances are
    symmetrised first, and the result is clipped at 0.

    :param mu1: mean ``[D]`` (numpy array, tensor or sequence).
    :param cov1: covariance ``[D, D]``.
    :param mu2: mean ``[D]``.
    :param cov2: covariance ``[D, D]``.
    :returns: the squared distance.
    :rtype: float
    :raises ValueError: on mismatched shapes or non-finite values.
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    cov1, cov2 = _as_float64(cov1, "cov1"), _as_float64(cov2, "cov2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be vectors of the same length, got shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, cov in (("cov1", cov1), ("cov2", cov2)):
        if cov.shape != (d, d):
            raise ValueError(f"{name} must have shape {(d, d)} to match the means, got {cov.shape}")
    cov1 = 0.5 * (cov1 + cov1.T)
    cov2 = 0.5 * (cov2 + cov2.T)
    sqrt1 = _sqrt_psd(cov1)  # [D, D]
    middle = sqrt1 @ cov2 @ sqrt1  # [D, D]
    middle = 0.5 * (middle + middle.T)
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum()
    diff = mu1 - mu2  # [D]
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt
    return float(max(value, 0.0))


def gaussian_stats(features):
    """
    Mean and (unbiased, like :func:`numpy.cov`) covariance of a set of feature vectors, in float64.

    :param features: ``[N, D]`` numpy array or tensor, ``N >= 2``.
    :returns: ``(mean [D], cov [D, D])`` as float64 numpy arrays.
    :raises ValueError: if ``features`` is not 2-D, has fewer than 2 rows, or is not finite.
    """
    features = _as_float64(features, "features")
    if features.ndim != 2:
        raise ValueError(f"features must have shape [N, D], got {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    mean = features.mean(axis=0)  # [D]
    centred = features - mean  # [N, D]
    cov = centred.T @ centred / (features.shape[0] - 1)  # [D, D]
    return mean, cov


def class_diversity(probs):
    """
    Class coverage of a set of samples from their class probabilities.

    :param probs: ``[N, C]`` rows of class probabilities (numpy array or tensor).
    :returns: dict with ``entropy_of_mean`` (entropy in nats of the mean class distribution, at
        most :math:`\\log C`), ``num_classes_seen`` (classes that are the argmax of at least 1%
        of the samples) and ``class_histogram`` (list of the ``C`` fractions of samples whose
        argmax is each class).
    :raises ValueError: if ``probs`` is empty, not 2-D, not finite, negative, or its rows do not
        sum to 1 (within 1e-3).
    """
    probs = _as_float64(probs, "probs")
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must have shape [N, C] with N, C > 0, got {probs.shape}")
    if (probs < 0).any() or np.abs(probs.sum(axis=1) - 1.0).max() > 1e-3:
        raise ValueError("probs rows must be non-negative and sum to 1")
    n, c = probs.shape
    mean = probs.mean(axis=0)  # [C]
    positive = mean[mean > 0]
    entropy = float(-(positive * np.log(positive)).sum())
    histogram = np.bincount(probs.argmax(axis=1), minlength=c) / n  # [C]
    return {
        "entropy_of_mean": max(entropy, 0.0),
        "num_classes_seen": int((histogram >= SEEN_FRACTION).sum()),
        "class_histogram": [float(h) for h in histogram],
    }


# --------------------------------------------------------------------------------------------
# Sample quality
# --------------------------------------------------------------------------------------------


def _as_images(images, name):
    """
    Validate a set of images and return float32 ``[N, 1, 28, 28]`` in [0, 1]. Accepts
    ``[N, 1, 28, 28]``, ``[N, 28, 28]`` or ``[N, 784]``; uint8 is scaled by 1/255, bool taken as 0/1.
    """
    if not isinstance(images, torch.Tensor):
        images = torch.from_numpy(np.array(images))
    images = images.detach()
    if images.dtype == torch.uint8:
        images = images.to(torch.float32) / 255.0
    elif images.dtype == torch.bool or not images.is_floating_point():
        images = images.to(torch.float32)
    shape = tuple(images.shape)
    if len(shape) == 4 and shape[1:] == (1, 28, 28):
        pass
    elif len(shape) == 3 and shape[1:] == (28, 28):
        images = images.unsqueeze(1)
    elif len(shape) == 2 and shape[1] == 784:
        images = images.reshape(-1, 1, 28, 28)
    else:
        raise ValueError(
            f"{name} must have shape [N, 1, 28, 28], [N, 28, 28] or [N, 784], got {list(shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 images)")
    images = images.to(torch.float32)  # [N, 1, 28, 28]
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise ValueError(f"{name} values must lie in [0, 1], got range [{low:.4g}, {high:.4g}]")
    return images.clamp(0.0, 1.0)  # [N, 1, 28, 28]


def _classify(classifier, images, batch_size):
    """Log class probabilities ``[N, C]`` and features ``[N, H]`` (float64) of ``[N, 1, 28, 28]`` images."""
    device = next(classifier.parameters()).device
    log_probs, features = [], []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)  # [B, 1, 28, 28]
        h = classifier.features(x)  # [B, 128]
        logits = classifier.fc2(h)  # [B, 10]
        log_probs.append(torch.log_softmax(logits.double(), dim=-1).cpu())  # [B, 10]
        features.append(h.double().cpu())  # [B, 128]
    return torch.cat(log_probs).numpy(), torch.cat(features).numpy()  # [N, 10], [N, 128]


def sample_quality(classifier, samples, reference=None, batch_size=500):
    """
    Classifier-based quality and diversity of a set of generated digit images (see the module
    docstring; these are MNIST-classifier analogues of IS/FID, not comparable to
    Inception-based values).

    :param MnistClassifier classifier: e.g. from :func:`load_or_train_classifier`.
    :param samples: images ``[N, 1, 28, 28]``, ``[N, 28, 28]`` or ``[N, 784]`` in [0, 1]
        (tensor or numpy array; uint8 arrays are scaled by 1/255, bool taken as 0/1).
    :param reference: optional real images in the same formats; if given, the Fréchet
        distance between the features of ``samples`` and ``reference`` is reported.
    :param int batch_size: images per classifier pass.
    :returns: dict with ``num_samples``, ``mean_confidence``, ``inception_score``,
        ``entropy_of_mean``, ``num_classes_seen``, ``class_histogram`` and, with ``reference``,
        ``frechet_distance`` and ``num_reference``.
    :raises ValueError: if ``samples`` or ``reference`` has the wrong shape, is empty,
        contains NaN/inf or values outside [0, 1] (beyond a 1e-3 tolerance), or if a Fréchet
        distance is asked for with fewer than 2 images on either side.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    samples = _as_images(samples, "samples")  # [N, 1, 28, 28]
    if reference is not None:
        reference = _as_images(reference, "reference")  # [M, 1, 28, 28]
        for name, images in (("samples", samples), ("reference", reference)):
            if images.shape[0] < 2:
                raise ValueError(
                    f"the Fréchet distance needs at least 2 {name} images, got {images.shape[0]}"
                )

    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            log_probs, features = _classify(classifier, samples, batch_size)  # [N, 10], [N, 128]
            ref_features = None
            if reference is not None:
                ref_features = _classify(classifier, reference, batch_size)[1]  # [M, 128]
    finally:
        classifier.train(was_training)

    probs = np.exp(log_probs)  # [N, 10]
    mean_probs = probs.mean(axis=0)  # [10]
    log_mean = np.log(np.clip(mean_probs, np.finfo(np.float64).tiny, None))  # [10]
    kl = (probs * (log_probs - log_mean)).sum(axis=1)  # [N]
    result = {
        "num_samples": int(samples.shape[0]),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "inception_score": float(math.exp(max(float(kl.mean()), 0.0))),
    }
    result.update(class_diversity(probs))
    if ref_features is not None:
        if min(len(features), len(ref_features)) <= features.shape[1]:
            logger.warning(
                "Fréchet distance from %d samples and %d reference images of %d-d features: the covariance "
                "estimates are singular and the distance is strongly biased; use more images",
                len(features), len(ref_features), features.shape[1],
            )
        mu1, cov1 = gaussian_stats(features)
        mu2, cov2 = gaussian_stats(ref_features)
        result["frechet_distance"] = frechet_distance(mu1, cov1, mu2, cov2)
        result["num_reference"] = int(len(ref_features))
    return result
