"""
Semi-supervised image data: a few labelled images per class, the rest unlabelled.

* :func:`load_digits` -- scikit-learn's bundled 8×8 handwritten digits (1,797 images, no
  download), split once into 1,200 train / 197 valid / 400 test images by a fixed permutation
  (``numpy.random.default_rng(0)``); pixels 0..16 scaled to [0, 1] grey levels. Training images
  are binarized per step like dynamically binarized MNIST; the valid and test images are
  binarized once (``u < grey``, ``u`` from ``default_rng([seed, 1 or 2])``), as in
  :func:`~pyro_seq.data.load_images`.
* :func:`choose_labelled` -- ``per_class`` labelled images per class, chosen by a seed.
* :func:`load_semi_supervised` -- train / valid / test for ``"digits"``, ``"dynamic_mnist"``
  (MNIST 50,000 / 10,000 / 10,000, grey training images binarized per step, evaluation
  splits binarized once).
* :class:`SemiSupervisedBatches` -- per step, a labelled mini-batch and an unlabelled one
  (:class:`SemiSupervisedBatch`), the unlabelled pool excluding the labelled images.

* :func:`binarized_mnist_labels` -- labels for Larochelle's fixed binarization
  (``"binarized_mnist"``), which ships without them and whose images are not in MNIST's order:
  each binary image gets the label of the MNIST grey image under which it is most likely
  (:func:`match_to_grey`), computed once (about 5 minutes on a busy core) and cached. On the
  shipped files the class counts this gives equal MNIST's exactly, split by split.
"""

import os
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch

from .download import DataError

__all__ = [
    "SEMI_SUPERVISED_DATASETS",
    "LabelledBatch",
    "SemiSupervisedBatch",
    "SemiSupervisedBatches",
    "SemiSupervisedData",
    "binarized_mnist_labels",
    "choose_labelled",
    "labelled_batches",
    "load_digits",
    "load_semi_supervised",
    "match_to_grey",
]

#: Data sets :func:`load_semi_supervised` serves.
SEMI_SUPERVISED_DATASETS = ("digits", "dynamic_mnist", "binarized_mnist")

_DIGITS_SPLIT = {"train": (0, 1200), "valid": (1200, 1397), "test": (1397, 1797)}
_EVAL_SPLIT_KEY = {"valid": 1, "test": 2}


class LabelledBatch(NamedTuple):
    """Labelled images: ``x [batch, x_dim]`` and ``y [batch]`` (int64)."""

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device, non_blocking=False):
        return LabelledBatch(*(t.to(device, non_blocking=non_blocking) for t in self))

    def pin_memory(self):
        return LabelledBatch(*(t.pin_memory() for t in self))


class SemiSupervisedBatch(NamedTuple):
    """
    One SVI step's data: labelled images ``x_labelled [n_l, x_dim]`` with labels
    ``y_labelled [n_l]`` and unlabelled images ``x_unlabelled [n_u, x_dim]``. ``args`` is what
    the trainer passes to the loss (``model(x_labelled, y_labelled)`` and
    ``model(x_unlabelled)``). ``frames`` is 1: :class:`~pyro_seq.losses.SemiSupervised_ELBO`
    is already a per-image mean, so the trainer's per-frame figures are per image.
    """

    x_labelled: torch.Tensor
    y_labelled: torch.Tensor
    x_unlabelled: torch.Tensor

    frames = 1.0

    @property
    def args(self):
        return (self.x_labelled, self.y_labelled, self.x_unlabelled)

    def to(self, device, non_blocking=False):
        return SemiSupervisedBatch(*(t.to(device, non_blocking=non_blocking) for t in self))

    def pin_memory(self):
        return SemiSupervisedBatch(*(t.pin_memory() for t in self))


def _check_split(split):
    if split not in _EVAL_SPLIT_KEY and split != "train":
        raise ValueError(f"Unknown split {split!r}; valid splits are: train, valid, test")


def _binarize_once(grey, split, seed):
    u = np.random.default_rng([seed, _EVAL_SPLIT_KEY[split]]).random(grey.shape)
    return (u < grey).astype(np.float32)


def load_digits(split, seed=0):
    """
    One split of scikit-learn's 8×8 digits (see the module docstring).

    :param str split: ``"train"`` (grey levels in [0, 1]), ``"valid"`` or ``"test"``
        (binarized once with ``seed``).
    :returns: ``(x, y)``: float32 ``[N, 64]`` and int64 ``[N]``.
    """
    _check_split(split)
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the digits data set needs scikit-learn: pip install scikit-learn") from e
    data = sklearn_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    start, stop = _DIGITS_SPLIT[split]
    keep = order[start:stop]
    grey = (data.data[keep] / 16.0).astype(np.float32)  # [N, 64]
    y = data.target[keep].astype(np.int64)
    x = grey if split == "train" else _binarize_once(grey, split, seed)
    return x, y


def choose_labelled(labels, per_class, seed=0, num_classes=None):
    """
    Indices of ``per_class`` labelled images per class, drawn without replacement by
    ``numpy.random.default_rng(seed)`` (one permutation per class, in class order), sorted.

    :param labels: int array ``[N]``.
    :raises ValueError: a class has fewer than ``per_class`` images.
    """
    labels = np.asarray(labels)
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} images, fewer than per_class={per_class}")
        chosen.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


def _batch_generator(seed, epoch, index):
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]))
    return g


class SemiSupervisedData:
    """
    A training split with a labelled subset.

    :param x: float32 ``[N, x_dim]``: grey levels in [0, 1] (``dynamic=True``, binarized per
        step) or binary.
    :param y: int64 ``[N]``: the labels (only those at ``labelled`` are ever used for training).
    :param labelled: indices of the labelled images.
    :param bool dynamic: binarize per step.
    """

    def __init__(self, x, y, labelled, dynamic, num_classes):
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        y = np.asarray(y, dtype=np.int64)
        self.labelled = np.asarray(labelled, dtype=np.int64)
        is_labelled = np.zeros(len(y), dtype=bool)
        is_labelled[self.labelled] = True
        self.unlabelled = np.flatnonzero(~is_labelled)
        self.y_labelled = torch.as_tensor(y[self.labelled])
        self.dynamic = bool(dynamic)
        self.num_classes = int(num_classes)

    @property
    def num_data(self):
        """:math:`N`: all training images."""
        return len(self.x)

    @property
    def num_labelled(self):
        return len(self.labelled)

    def batches(self, epoch, batch_size=100, labelled_batch_size=100, seed=0):
        """The steps of one epoch (see :class:`SemiSupervisedBatches`)."""
        return SemiSupervisedBatches(self, epoch, batch_size, labelled_batch_size, seed)


class SemiSupervisedBatches:
    """
    One epoch: a pass over the unlabelled pool (the training images that are not labelled) in
    mini-batches of ``batch_size``, shuffled by ``(seed, epoch)``, a last smaller batch
    included. Each step also takes ``labelled_batch_size`` labelled images drawn without
    replacement (all of them, in a new order, when there are no more than that). With grey
    training images both mini-batches are binarized (``u < x``) with a generator seeded by
    ``(seed, epoch, step)``. Deterministic in ``(seed, epoch)``.
    """

    def __init__(self, data, epoch, batch_size, labelled_batch_size, seed):
        for value, what in ((batch_size, "batch_size"), (labelled_batch_size, "labelled_batch_size")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        if len(data.unlabelled) == 0:
            raise ValueError("every training image is labelled: there is no unlabelled pool")
        self.data, self.epoch, self.seed = data, int(epoch), int(seed)
        self.batch_size, self.labelled_batch_size = batch_size, labelled_batch_size

    def __len__(self):
        return -(-len(self.data.unlabelled) // self.batch_size)

    def __iter__(self):
        data = self.data
        order = np.random.default_rng([self.seed, self.epoch]).permutation(data.unlabelled)
        n_l = min(self.labelled_batch_size, data.num_labelled)
        for i in range(len(self)):
            g = _batch_generator(self.seed, self.epoch, i)
            pick = torch.randperm(data.num_labelled, generator=g)[:n_l]
            x_l, y_l = data.x[torch.as_tensor(data.labelled)[pick]], data.y_labelled[pick]
            x_u = data.x[torch.as_tensor(order[i * self.batch_size : (i + 1) * self.batch_size])]
            if data.dynamic:
                x_l = (torch.rand(x_l.shape, generator=g) < x_l).to(x_l.dtype)
                x_u = (torch.rand(x_u.shape, generator=g) < x_u).to(x_u.dtype)
            yield SemiSupervisedBatch(x_l, y_l, x_u)


def match_to_grey(binary, grey, chunk=2000):
    r"""
    For each binary image the grey image under which it is most likely:
    :math:`\arg\max_j \sum_d \log \operatorname{Bernoulli}(b_d \mid g_{jd})`, grey levels
    clipped to [0.001, 0.999]; one matrix product per chunk of ``chunk`` binary images.

    :param binary: ``[N, D]`` 0/1 array.
    :param grey: ``[M, D]`` grey levels in [0, 1].
    :returns: ``(index [N] int64, margin [N] float32)``: the best grey image and how many nats
        more likely it is than the runner-up.
    """
    g = torch.as_tensor(np.asarray(grey, dtype=np.float32)).clamp(1e-3, 1 - 1e-3)  # [M, D]
    weight = (g.log() - torch.log1p(-g)).T.contiguous()  # [D, M]
    offset = torch.log1p(-g).sum(-1)  # [M]
    b = torch.as_tensor(np.asarray(binary, dtype=np.float32))  # [N, D]
    index, margin = [], []
    with torch.no_grad():
        for i in range(0, len(b), chunk):
            top = (b[i : i + chunk] @ weight + offset).topk(min(2, len(g)), dim=-1)  # [chunk, 2]
            index.append(top.indices[:, 0])
            margin.append(top.values[:, 0] - top.values[:, -1])
    return torch.cat(index).numpy().astype(np.int64), torch.cat(margin).numpy()


_MATCH_CACHE = "binarized_mnist_labels.npz"


def binarized_mnist_labels(data_root=None, download=True, cache_dir=None):
    """
    Labels of the fixed binarized MNIST (``load_binarized_mnist``), by matching each image to
    the 70,000 MNIST grey images (:func:`match_to_grey`) and taking that image's label.

    On the shipped files 99.9% of its train and valid images match MNIST training images and
    99.5% of its test images MNIST test images, shuffled. The result is cached in ``cache_dir``
    (default: the pyro_seq cache folder) as ``binarized_mnist_labels.npz`` (read with
    ``allow_pickle=False``) together with a sha256 of the binary images it was computed from; a
    cache that does not match them is recomputed.

    :returns: dict ``{split: (labels [N] int64, index [N] into MNIST's 60,000 + 10,000 images,
        margin [N] nats)}``.
    """
    import hashlib

    from .download import default_cache_dir
    from .images import load_mnist
    from .mnist import load_binarized_mnist

    binary = load_binarized_mnist(None, data_root=data_root, download=download)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(binary[s]).tobytes() for s in ("train", "valid", "test"))).hexdigest()
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / _MATCH_CACHE
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                if str(cached["sha256"]) == digest:
                    return {s: (cached[f"{s}_labels"], cached[f"{s}_index"], cached[f"{s}_margin"]) for s in ("train", "valid", "test")}
        except (OSError, ValueError, KeyError):
            pass  # unreadable or stale: recompute
    parts = [load_mnist(s, data_root=data_root, download=download) for s in ("train", "valid", "test")]
    grey = np.concatenate([p[0].reshape(len(p[0]), -1) for p in parts]).astype(np.float32) / 255.0  # [70000, 784]
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    result, arrays = {}, {"sha256": np.array(digest)}
    for s in ("train", "valid", "test"):
        index, margin = match_to_grey(binary[s].reshape(len(binary[s]), -1), grey)
        result[s] = (labels[index], index, margin)
        arrays.update({f"{s}_labels": labels[index], f"{s}_index": index, f"{s}_margin": margin})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: recompute next time
    return result


def labelled_batches(x, y, batch_size=1000):
    """Evaluation batches :class:`LabelledBatch` of ``x [N, x_dim]``, ``y [N]`` in order."""
    x, y = torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(np.asarray(y, dtype=np.int64))
    return [LabelledBatch(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


class SemiSupervisedSplits(NamedTuple):
    """What :func:`load_semi_supervised` returns."""

    train: SemiSupervisedData
    valid: tuple  # (x [N, x_dim] binary float32, y [N] int64)
    test: tuple
    image_shape: tuple


def load_semi_supervised(name, labels_per_class=10, label_seed=0, data_root=None, download=True, seed=0, limit: Optional[int] = None):
    """
    A semi-supervised task: ``labels_per_class`` labelled training images per class (chosen by
    ``label_seed``), the other training images unlabelled, and labelled valid and test
    images (binarized once with ``seed``).

    :param str name: ``"digits"`` (offline, 8×8), ``"dynamic_mnist"`` (MNIST from the
        data root, 28×28, binarized per step) or ``"binarized_mnist"`` (the fixed binarization,
        labels from :func:`binarized_mnist_labels`).
    :param int limit: keep only the first ``limit`` images of each split (quick runs).
    :rtype: SemiSupervisedSplits
    """
    if name not in SEMI_SUPERVISED_DATASETS:
        raise ValueError(
            f"Unknown semi-supervised data set {name!r}; valid names are: {', '.join(SEMI_SUPERVISED_DATASETS)}"
        )
    dynamic = True
    if name == "digits":
        splits = {s: load_digits(s, seed) for s in ("train", "valid", "test")}
        image_shape = (8, 8)
    elif name == "binarized_mnist":
        from .mnist import load_binarized_mnist

        labels = binarized_mnist_labels(data_root=data_root, download=download)
        binary = load_binarized_mnist(None, data_root=data_root, download=download)
        splits = {s: (binary[s].reshape(len(binary[s]), -1).astype(np.float32), labels[s][0]) for s in ("train", "valid", "test")}
        image_shape, dynamic = (28, 28), False
    else:
        from .images import load_images

        splits = {}
        for s in ("train", "valid", "test"):
            d = load_images(name, s, data_root=data_root, download=download, seed=seed)
            splits[s] = (np.stack(d.sequences)[:, 0], d.labels)  # [N, 784], [N]
        image_shape = (28, 28)
    if limit is not None:
        splits = {s: (x[:limit], y[:limit]) for s, (x, y) in splits.items()}
    x, y = splits["train"]
    labelled = choose_labelled(y, labels_per_class, label_seed, num_classes=10)
    train = SemiSupervisedData(x, y, labelled, dynamic=dynamic, num_classes=10)
    return SemiSupervisedSplits(train, splits["valid"], splits["test"], image_shape)
