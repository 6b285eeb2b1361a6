"""
Image tensors and their mini-batches for the image models (VAE/GAN, the plain VAE):
:func:`load_image_split` reads one split of an image data set as a ``[N, 1, H, W]`` tensor in
[0, 1], :func:`image_batches` cuts it into :class:`ImageBatch` mini-batches for the
:class:`~pyro_seq.training.Trainer`.
"""

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["IMAGE_DATA", "ImageBatch", "image_batches", "load_image_split"]

#: Image data sets of :func:`load_image_split` and their image side.
IMAGE_DATA = {"mnist": 28, "faces": 64}


class ImageBatch(NamedTuple):
    """A mini-batch of images ``x [batch, C, H, W]`` in [0, 1]; losses are sums over its images."""

    x: torch.Tensor

    @property
    def args(self):
        return (self.x,)

    @property
    def frames(self):
        return float(self.x.size(0))

    def to(self, device, non_blocking=False):
        return ImageBatch(self.x.to(device, non_blocking=non_blocking))

    def pin_memory(self):
        return ImageBatch(self.x.pin_memory())


def image_batches(images, batch_size, shuffle=False, seed=0, epoch=0):
    """
    Mini-batches of an image tensor ``[N, C, H, W]``; shuffled by ``(seed, epoch)`` when
    ``shuffle``. A last batch of one image is merged into the one before (batch norm needs two).

    :returns: list of :class:`ImageBatch`.
    """
    n = images.size(0)
    if n < 2:
        raise ValueError(f"need at least 2 images for a batch-normalised model, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)) if shuffle else torch.arange(n)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    ends = starts[1:] + [n]
    return [ImageBatch(images[order[s:e]]) for s, e in zip(starts, ends)]


def load_image_split(name, split, data_root=None, limit=None):
    """
    One split of an image data set as a float32 tensor ``[N, 1, H, W]`` in [0, 1] and the labels.

    * ``"mnist"``: grey-level MNIST (:func:`~pyro_seq.data.load_mnist`: 50,000 / 10,000 / 10,000),
      labels are digits.
    * ``"faces"``: the Olivetti faces (:func:`~pyro_seq.data.load_olivetti_faces`, split by
      person: 320 / 40 / 40 images of 32 / 4 / 4 people), labels are person ids.

    :param int limit: only the first ``limit`` images.
    """
    from .faces import load_olivetti_faces
    from .images import load_mnist

    if name == "mnist":
        images, labels = load_mnist(split, data_root=data_root)
        images = images.astype(np.float32) / 255.0
    elif name == "faces":
        images, labels = load_olivetti_faces(split=split, data_root=data_root)
    else:
        raise ValueError(f"unknown image data set {name!r}; choose one of {sorted(IMAGE_DATA)}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32).unsqueeze(1), torch.as_tensor(labels)
