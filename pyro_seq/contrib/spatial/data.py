# Copyright Contributors to the pyro_seq project.
# SPDX-License-Identifier: Apache-2.0
"""
Cluttered MNIST sequences (Sønderby et al. 2015): images of MNIST digits in a row, on a canvas
strewn with fragments of other digits, generated from the checksummed MNIST files and cached.

Two variants (:data:`CLUTTERED_VARIANTS`, every parameter in :class:`ClutterConfig`):

* ``"sequence3"``: the RNN-SPN paper's task. A 100×100 canvas holds three 28×28 digits side by
  side, left to right, with no gap between them. Their common horizontal offset is uniform in
  ``0 .. 2·m - 1`` with ``m = (100 - 3·28) // 2 = 8``. The first digit's top row is uniform in
  ``0 .. 72``; digit ``i`` sits ``floor(i · slope)`` rows lower, with ``slope`` uniform in
  ``-14 .. 13`` (half a digit), and is clamped into the canvas. Eight 9×9 clutter patches, each
  cut at a uniform offset (``0 .. 18`` in both axes) out of a uniformly drawn digit of the same
  split, are put at uniform positions (``0 .. 91``); a later patch overwrites an earlier one.
  The image is ``clip(clutter + digits, 0, 1)``, stored as uint8 (``255 ·`` that value, exact).
* ``"single40"``: one digit on a 40×40 canvas, its offsets uniform in ``0 .. 11`` and four
  9×9 clutter patches, the same rules otherwise.

Digits are drawn with replacement from the split's own MNIST digits
(:func:`~pyro_seq.data.load_mnist`): ``"train"`` from the first 50,000 MNIST training digits,
``"valid"`` from the last 10,000 and ``"test"`` from the 10,000 test digits, so no test digit
(as a digit or as clutter) appears in a training image. The default sizes are the paper's
60,000 / 10,000 / 10,000 images (:data:`CLUTTERED_SPLIT_SIZES`).

Two departures from the reference generator (github.com/skaae/recurrent-spatial-transformer-code,
``MNIST_SEQUENCE/create_mnist_sequence.py``), which is otherwise followed: the first row is
drawn over the rows where a digit fits (the reference draws it over the whole canvas and clamps,
which piles a quarter of the first digits onto the bottom edge), and clutter comes from the same
split (the reference cuts all clutter from training digits).

**Determinism.** Images are made in chunks of :data:`CHUNK` with
``numpy.random.default_rng([seed, split_code, chunk])`` (``split_code`` 0 / 1 / 2 for train /
valid / test), so the first ``n`` images are the same whatever ``num_images`` is asked for.

**Cache.** The arrays are written atomically to ``<cache_dir>/<variant>_<split>_s<seed>_n<N>.npz``
(default cache dir ``default_cache_dir()/cluttered_mnist``; ``cache_dir=False`` for none) with
their recipe (variant, parameters, seed, split, count, generator version and the MNIST files'
sha256). A cache file is loaded without pickle and used only when its recipe, shapes and dtypes
match; otherwise it is rebuilt (a warning says why).
"""

import dataclasses
import json
import logging
from pathlib import Path
from typing import Dict, Iterator, NamedTuple

import numpy as np
import torch

from pyro_seq.data.download import atomic_savez, default_cache_dir

__all__ = [
    "CHUNK",
    "CLUTTERED_SPLIT_SIZES",
    "CLUTTERED_VARIANTS",
    "ClutterConfig",
    "ClutteredBatch",
    "ClutteredBatches",
    "ClutteredMNIST",
    "generate_cluttered",
    "load_cluttered_mnist",
]

logger = logging.getLogger(__name__)

#: Version of the generator; part of every cache file's recipe.
GENERATOR_VERSION = 1
#: Images per random-number chunk (see the module docstring).
CHUNK = 1000
_SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
_DIGIT = 28


@dataclasses.dataclass(frozen=True)
class ClutterConfig:
    """
    Parameters of a cluttered-MNIST variant.

    :param int canvas: side of the square canvas, pixels.
    :param int num_digits: digits per image, side by side left to right.
    :param int num_clutter: clutter patches per image.
    :param int clutter_size: side of a square clutter patch, pixels.
    :param int max_slope: the vertical step from one digit to the next is uniform in
        ``-max_slope .. max_slope - 1`` rows (0: all digits on one row).
    """

    canvas: int = 100
    num_digits: int = 3
    num_clutter: int = 8
    clutter_size: int = 9
    max_slope: int = 14

    def __post_init__(self):
        for name in ("canvas", "num_digits", "clutter_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClutterConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_clutter < 0 or self.max_slope < 0:
            raise ValueError(f"ClutterConfig.num_clutter and max_slope must be >= 0, got {self.num_clutter}, {self.max_slope}")
        if self.canvas < self.num_digits * _DIGIT:
            raise ValueError(f"a {self.canvas}-pixel canvas cannot hold {self.num_digits} digits of {_DIGIT} pixels side by side")
        if self.clutter_size > min(self.canvas, _DIGIT):
            raise ValueError(f"clutter patches of {self.clutter_size} pixels do not fit a digit or the canvas")


#: The named variants.
CLUTTERED_VARIANTS: Dict[str, ClutterConfig] = {
    "sequence3": ClutterConfig(canvas=100, num_digits=3, num_clutter=8, clutter_size=9, max_slope=14),
    "single40": ClutterConfig(canvas=40, num_digits=1, num_clutter=4, clutter_size=9, max_slope=0),
}
#: Default number of images per split (the paper's).
CLUTTERED_SPLIT_SIZES = {"train": 60000, "valid": 10000, "test": 10000}


class ClutteredMNIST(NamedTuple):
    """
    One split of a cluttered-MNIST variant.

    :ivar images: uint8 ``[N, canvas, canvas]`` (0 background, 255 ink).
    :ivar labels: int64 ``[N, num_digits]``, left to right.
    :ivar boxes: int64 ``[N, num_digits, 2]``: the (top row, left column) of each 28×28 digit.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    variant: str
    split: str

    def tensors(self):
        """``(x float32 [N, 1, S, S] in [0, 1], y int64 [N, D])``."""
        return torch.from_numpy(self.images).unsqueeze(1).float().div_(255.0), torch.from_numpy(self.labels)


def _draw_chunk(rng, config, num_pool):
    """All random numbers of :data:`CHUNK` images (drawn for a whole chunk, used as a prefix)."""
    n, d, k, c = CHUNK, config.num_digits, config.num_clutter, config.canvas
    margin = (c - d * _DIGIT) // 2
    return {
        "digits": rng.integers(num_pool, size=(n, d)),
        "x": rng.integers(0, max(2 * margin, 1), size=n),
        "y": rng.integers(0, c - _DIGIT + 1, size=n),
        "slope": rng.integers(-config.max_slope, max(config.max_slope, 1), size=n) if config.max_slope else np.zeros(n, np.int64),
        "source": rng.integers(num_pool, size=(n, k)),
        "cut": rng.integers(0, _DIGIT - config.clutter_size + 1, size=(n, k, 2)),
        "place": rng.integers(0, c - config.clutter_size + 1, size=(n, k, 2)),
    }


def generate_cluttered(digits, digit_labels, config, num_images, seed=0, split_code=0):
    """
    Render ``num_images`` cluttered images from a pool of MNIST digits (no cache, no files).

    :param digits: uint8 ``[M, 28, 28]`` digit pool.
    :param digit_labels: int ``[M]`` their classes.
    :param ClutterConfig config: the variant's parameters.
    :param int num_images: images to make.
    :param int seed: seed; with ``split_code`` it fixes every image.
    :param int split_code: keeps the splits' random streams apart.
    :returns: ``(images uint8 [N, S, S], labels int64 [N, D], boxes int64 [N, D, 2])``.
    """
    digits = np.asarray(digits)
    if digits.ndim != 3 or digits.shape[1:] != (_DIGIT, _DIGIT) or digits.dtype != np.uint8 or len(digits) == 0:
        raise ValueError(f"digits must be a non-empty uint8 [M, 28, 28] array, got {digits.dtype} {digits.shape}")
    digit_labels = np.asarray(digit_labels, dtype=np.int64)
    if digit_labels.shape != (len(digits),):
        raise ValueError(f"digit_labels must have shape ({len(digits)},), got {digit_labels.shape}")
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    c, d, s = config.canvas, config.num_digits, config.clutter_size
    images = np.zeros((num_images, c, c), np.uint8)
    labels = np.zeros((num_images, d), np.int64)
    boxes = np.zeros((num_images, d, 2), np.int64)
    clutter = np.zeros((c, c), np.uint8)
    ink = np.zeros((c, c), np.uint8)
    for chunk_index, start in enumerate(range(0, num_images, CHUNK)):
        draw = _draw_chunk(np.random.default_rng([seed, split_code, chunk_index]), config, len(digits))
        for j in range(min(CHUNK, num_images - start)):
            i = start + j
            clutter[:] = 0
            for (cut_r, cut_c), (row, col), src in zip(draw["cut"][j], draw["place"][j], draw["source"][j]):
                clutter[row : row + s, col : col + s] = digits[src, cut_r : cut_r + s, cut_c : cut_c + s]
            ink[:] = 0
            for t, src in enumerate(draw["digits"][j]):
                row = int(np.clip(draw["y"][j] + np.floor(t * draw["slope"][j]), 0, c - _DIGIT))
                col = int(draw["x"][j]) + t * _DIGIT
                ink[row : row + _DIGIT, col : col + _DIGIT] = digits[src]
                boxes[i, t] = (row, col)
                labels[i, t] = digit_labels[src]
            np.minimum(clutter.astype(np.uint16) + ink, 255, out=images[i], casting="unsafe")
    return images, labels, boxes


def _recipe(variant, config, split, seed, num_images, mnist_sha256):
    return {"generator_version": GENERATOR_VERSION, "variant": variant, "config": dataclasses.asdict(config),
            "split": split, "seed": int(seed), "num_images": int(num_images), "mnist_sha256": mnist_sha256}


def _read_cache(path, recipe, config):
    """The cached arrays at ``path`` if their recipe, shapes and dtypes match; else ``None`` (logged)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["recipe"]))
            arrays = {k: z[k] for k in ("images", "labels", "boxes")}
    except Exception as e:  # a truncated or foreign file: rebuild it
        logger.warning("ignoring the cluttered-MNIST cache %s (%s: %s); regenerating", path, type(e).__name__, e)
        return None
    n, c, d = recipe["num_images"], config.canvas, config.num_digits
    expected = {"images": ((n, c, c), np.uint8), "labels": ((n, d), np.int64), "boxes": ((n, d, 2), np.int64)}
    if stored != recipe:
        logger.warning("the cluttered-MNIST cache %s was made from another recipe; regenerating", path)
        return None
    for key, (shape, dtype) in expected.items():
        if arrays[key].shape != shape or arrays[key].dtype != dtype:
            logger.warning("the cluttered-MNIST cache %s holds %s %s %s, expected %s %s; regenerating",
                           path, key, arrays[key].dtype, arrays[key].shape, dtype.__name__, shape)
            return None
    return arrays


def load_cluttered_mnist(split, variant="sequence3", num_images=None, seed=0, data_root=None, cache_dir=None, download=True):
    """
    One split of a cluttered-MNIST variant, generated from MNIST on first use and cached.

    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    :param str variant: a key of :data:`CLUTTERED_VARIANTS`.
    :param int num_images: images to make (default :data:`CLUTTERED_SPLIT_SIZES`).
    :param int seed: generator seed.
    :param data_root: where the MNIST files are (see :func:`~pyro_seq.data.resolve_data_root`).
    :param cache_dir: cache folder (default ``default_cache_dir()/cluttered_mnist``); ``False``
        for no cache.
    :param bool download: whether missing MNIST files may be downloaded.
    :rtype: ClutteredMNIST
    :raises ValueError: unknown split or variant, bad ``num_images``.
    """
    from pyro_seq.data.images import MNIST_FILES, load_mnist

    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(_SPLIT_CODES)}")
    if variant not in CLUTTERED_VARIANTS:
        raise ValueError(f"unknown cluttered-MNIST variant {variant!r}; choose one of {sorted(CLUTTERED_VARIANTS)}")
    num_images = CLUTTERED_SPLIT_SIZES[split] if num_images is None else num_images
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    config = CLUTTERED_VARIANTS[variant]
    part = "test" if split == "test" else "train"
    mnist_sha256 = {k: list(v.sha256s) for k, v in MNIST_FILES.items() if k.startswith(part)}  # accepted files
    recipe = _recipe(variant, config, split, seed, num_images, mnist_sha256)
    path = None
    if cache_dir is not False:
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "cluttered_mnist"
        path = folder / f"{variant}_{split}_s{seed}_n{num_images}.npz"
        arrays = _read_cache(path, recipe, config) if path.exists() else None
        if arrays is not None:
            return ClutteredMNIST(arrays["images"], arrays["labels"], arrays["boxes"], variant, split)
    digits, digit_labels = load_mnist(split, data_root=data_root, download=download)
    logger.info("generating %d %s cluttered-MNIST images (%s, seed %d)", num_images, split, variant, seed)
    images, labels, boxes = generate_cluttered(digits, digit_labels, config, num_images, seed, _SPLIT_CODES[split])
    if path is not None:
        try:
            atomic_savez(path, {"images": images, "labels": labels, "boxes": boxes, "recipe": np.array(json.dumps(recipe))})
        except OSError as e:
            logger.warning("could not write the cluttered-MNIST cache %s (%s); it will be regenerated next time", path, e)
    return ClutteredMNIST(images, labels, boxes, variant, split)


class ClutteredBatch(NamedTuple):
    """Images ``x [batch, 1, S, S]`` in [0, 1] and their digit labels ``y [batch, D]``; losses sum over digits."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def args(self):
        return (self.x, self.y)

    @property
    def frames(self):
        return float(self.y.numel())

    def to(self, device, non_blocking=False):
        return ClutteredBatch(self.x.to(device, non_blocking=non_blocking), self.y.to(device, non_blocking=non_blocking))

    def pin_memory(self):
        return ClutteredBatch(self.x.pin_memory(), self.y.pin_memory())


class ClutteredBatches:
    """
    Mini-batches of a :class:`ClutteredMNIST` split, converted to float one batch at a time (the
    uint8 array stays the only full copy). The order comes from
    :func:`~pyro_seq.data.batching.batch_order` (``default_rng([seed, epoch])``).
    """

    def __init__(self, data, batch_size, shuffle=False, seed=0, epoch=0, limit=None):
        from pyro_seq.data.batching import check_int, batch_order

        check_int("batch_size", batch_size, 1)
        self.images, self.labels = data.images, data.labels
        n = len(self.images) if limit is None else min(check_int("limit", limit, 1), len(self.images))
        self.order = batch_order(np.zeros(n, np.int64), batch_size, shuffle=shuffle, seed=seed, epoch=epoch, group_by_length=False)

    def __len__(self):
        return len(self.order)

    def __iter__(self) -> Iterator[ClutteredBatch]:
        for index in self.order:
            x = torch.from_numpy(self.images[index]).unsqueeze(1).float().div_(255.0)  # [B, 1, S, S]
            yield ClutteredBatch(x, torch.from_numpy(self.labels[index]))
