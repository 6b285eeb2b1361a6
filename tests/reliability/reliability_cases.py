"""
The reliability suite's shared pieces: the counting of every case (read by ``test_report.py``),
the tiny model/guide pairs and their entry points, the catalogue of bad-input case kinds, and the
outcome checks.
"""

import math
import re
import warnings
from collections import defaultdict
from pathlib import Path

import pyro
import torch
from conftest import REPO_ROOT
from hypothesis import strategies as st
from pyro.infer import Trace_ELBO

import pyro_seq
from pyro_seq.losses import IWAE_ELBO
from pyro_seq.bounds import importance_bounds
from pyro_seq.cli import main
from pyro_seq.fivo import fivo_log_likelihood
from pyro_seq.guides import BottomUpGuide, LadderGuide, LinearGaussianSSMGuide, SRNNGuide, ZForcingGuide
from pyro_seq.losses import LinearSchedule, WarmupTrace_ELBO, WarmupTraceMeanField_ELBO, ZForcingTrace_ELBO
from pyro_seq.models import SRNN, LadderVAE, LinearGaussianSSM, ZForcing

REPO = REPO_ROOT
PACKAGE = Path(pyro_seq.__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------------

#: ``{(group, subject, entry point, case kind): [examples tried, examples handled]}``
RESULTS = defaultdict(lambda: [0, 0])
#: free-form records for the report (kill-and-resume trials)
NOTES = defaultdict(list)


#: the cases of ``RESULTS`` whose input is valid (a finite result is the right outcome)
VALID = set()


def record(group, subject, entry, kind, handled, valid=False):
    counts = RESULTS[(group, subject, entry, kind)]
    counts[0] += 1
    counts[1] += int(bool(handled))
    if valid:
        VALID.add((group, subject, entry, kind))


# --------------------------------------------------------------------------------------------
# models and entry points
# --------------------------------------------------------------------------------------------

D = 4  # frame size (pixels per image) of every tiny model
SCHEDULE = dict(start=0.5, end=1.0, steps=10)
# model/guide pair -> (images [batch, 1, D] rather than sequences, Bernoulli rather than Gaussian frames)
PAIRS = {
    "srnn": (False, True),
    "zforcing": (False, True),
    "lgssm": (False, False),
    "ladder": (True, True),
    "ladder_bottom_up": (True, True),
}


def build(name):
    """A tiny ``(model, guide, package loss)`` for ``name``."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    if name == "srnn":
        model = SRNN(x_dim=D, d_dim=3, z_dim=2, hidden_dim=4)
        return model, SRNNGuide(model, kind="smoother", a_dim=3, hidden_dim=4), WarmupTraceMeanField_ELBO(LinearSchedule(**SCHEDULE))
    if name == "zforcing":
        model = ZForcing(x_dim=D, emb_dim=3, h_dim=3, z_dim=2, hidden_dim=4)
        guide = ZForcingGuide(model, auxiliary="z", backward_prediction=True)
        return model, guide, ZForcingTrace_ELBO(LinearSchedule(**SCHEDULE), aux_schedule=0.5, backward_weight=1.0)
    if name == "lgssm":
        model = LinearGaussianSSM(x_dim=D, z_dim=2)
        return model, LinearGaussianSSMGuide(model, kind="smoother", horizon=2), WarmupTraceMeanField_ELBO(LinearSchedule(**SCHEDULE))
    model = LadderVAE(x_dim=D, z_dims=(3, 2), hidden_dims=(4, 4))
    if name == "ladder":
        return model, LadderGuide(model), WarmupTraceMeanField_ELBO(LinearSchedule(**SCHEDULE))
    return model, BottomUpGuide(model), WarmupTrace_ELBO(LinearSchedule(**SCHEDULE))


def entry_points(model, guide, loss):
    """``{name: fn(x, mask)}``: every public way a batch reaches the model."""
    fns = {
        "model": lambda x, m: model(x, m),
        "guide": lambda x, m: guide(x, m),
        "Trace_ELBO.loss": lambda x, m: Trace_ELBO().loss(model, guide, x, m),
        "package_loss": lambda x, m: loss.differentiable_loss(model, guide, x, m),
        "importance_bounds": lambda x, m: importance_bounds(model, guide, x, m, num_samples=2),
        "IWAE_ELBO.loss": lambda x, m: IWAE_ELBO(2).loss(model, guide, x, m),
    }
    if hasattr(model, "filter_context"):
        fns["fivo_log_likelihood"] = lambda x, m: fivo_log_likelihood(model, guide, x, m, num_particles=2)
    return fns


# --------------------------------------------------------------------------------------------
# the catalogue of case kinds
# --------------------------------------------------------------------------------------------


def _is_prefix(row):
    n = sum(row)
    return list(row) == [True] * n + [False] * (len(row) - n)


@st.composite
def base_batch(draw, images, binary, min_time=1, min_batch=1):
    """A valid padded batch ``(x [b, t, D], bool prefix mask [b, t])``; images have ``t = 1``."""
    b = draw(st.integers(max(min_batch, 2 if images else 1), 3))  # batch norm needs 2 images
    t = 1 if images else draw(st.integers(min_time, 4))
    lengths = torch.tensor([draw(st.integers(1, t)) for _ in range(b)])
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = (torch.rand(b, t, D, generator=g) < 0.4).float() if binary else torch.randn(b, t, D, generator=g)
    mask = torch.arange(t) < lengths[:, None]  # [b, t]
    return x * mask[..., None], mask


def _position(draw, x):
    return tuple(draw(st.integers(0, n - 1)) for n in x.shape)


def _set(x, pos, value):
    x = x.clone()
    x[pos] = value
    return x


def _ones(x):
    return torch.ones(x.shape[:2], dtype=torch.bool)


# Each case kind: (argument at fault or None for a valid input, applies(images, binary),
# make(draw, images, binary) -> (x, mask, reference)); ``reference`` is an equivalent
# canonical ``(x, mask)`` whose results must be equal (same random numbers), or None.
CASE_KINDS = {}


#: entry points for which a case kind is a valid input after all: ``{kind: {entry point}}``
VALID_FOR = {}


def case(name, fault, applies=lambda images, binary: True, valid_for=()):
    def register(fn):
        CASE_KINDS[name] = (fault, applies, fn)
        VALID_FOR[name] = set(valid_for)
        return fn

    return register


SEQUENCES_ONLY = lambda images, binary: not images  # noqa: E731
IMAGES_ONLY = lambda images, binary: images  # noqa: E731
BERNOULLI_ONLY = lambda images, binary: binary  # noqa: E731
GAUSSIAN_ONLY = lambda images, binary: not binary  # noqa: E731


@case("valid_ragged_batch", None)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x, mask, None


@case("valid_without_mask", None)
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    return x, None, (x, _ones(x))


@case("valid_0_1_numeric_mask", None)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    dtype = draw(st.sampled_from([torch.float32, torch.int64, torch.uint8]))
    return x, mask.to(dtype), (x, mask)


@case("valid_real_valued_frames", None, GAUSSIAN_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    scale = draw(st.floats(1e-3, 1e3))
    return x * scale, mask, None


@case("valid_2d_images", None, IMAGES_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    mask2d = draw(st.sampled_from([None, mask[:, 0], mask]))
    return x[:, 0], mask2d, (x, mask)


@case("x_not_a_tensor", "x")
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    return draw(st.sampled_from([x.tolist(), x.numpy(), float(x[0, 0, 0])])), None, None


@case("x_rank_too_low", "x")
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    low = [x.reshape(-1), x[0, 0]] + ([] if images else [x[:, 0], x[0]])
    return draw(st.sampled_from(low)), None, None


@case("x_rank_too_high", "x")
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    return x.unsqueeze(draw(st.integers(0, 3))), None, None


@case("x_wrong_frame_size", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    extra = draw(st.sampled_from([-3, -1, 1, 5]))
    x = x[..., : D + extra] if extra < 0 else torch.cat([x, torch.zeros(*x.shape[:2], extra)], -1)
    return x, mask, None


@case("x_time_axis_not_1_for_images", "x", IMAGES_ONLY)
def _(draw, images, binary):
    x, _ = draw(base_batch(images, binary))
    return x.expand(-1, draw(st.integers(2, 4)), -1), None, None


@case("x_integer_or_bool_dtype", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x.to(draw(st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.bool]))), mask, None


@case("x_float_dtype_other_than_the_models", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x.to(draw(st.sampled_from([torch.float64, torch.float16, torch.bfloat16]))), mask, None


@case("x_empty_batch", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x[:0], mask[:0], None


@case("x_empty_time_axis", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x[:, :0], (None if images else mask[:, :0]), None


# the particle bounds repeat the batch (K = 2 here), which batch normalisation can use
@case("x_single_image_in_batch_norm_training", "x", IMAGES_ONLY, valid_for=("importance_bounds", "IWAE_ELBO.loss"))
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x[:1], draw(st.sampled_from([None, mask[:1]])), None


@case("x_nan", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return _set(x, _position(draw, x), float("nan")), mask, None


@case("x_pos_inf", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return _set(x, _position(draw, x), float("inf")), mask, None


@case("x_neg_inf", "x")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return _set(x, _position(draw, x), -float("inf")), mask, None


@case("x_non_binary_for_bernoulli", "x", BERNOULLI_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    value = draw(st.floats(-10, 10, allow_nan=False, width=32).filter(lambda v: v not in (0.0, 1.0)))
    return _set(x, _position(draw, x), value), mask, None


@case("x_too_large_for_its_dtype", "x", GAUSSIAN_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    value = draw(st.floats(1e10, 3e38)) * draw(st.sampled_from([1, -1]))
    return _set(x, _position(draw, x), value), mask, None


@case("mask_not_a_tensor", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x, draw(st.sampled_from([mask.tolist(), mask.numpy(), True])), None


@case("mask_batch_size_mismatch", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    if mask.shape[0] > 1 and draw(st.booleans()):
        return x, mask[:-1], None
    return x, torch.cat([mask, mask[:1]]), None


@case("mask_longer_than_time_axis", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    extra = torch.full((mask.shape[0], draw(st.integers(1, 3))), draw(st.booleans()))
    return x, torch.cat([mask, extra], 1), None


@case("mask_shorter_than_time_axis", "mask", SEQUENCES_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary, min_time=2))
    return x, mask[:, : draw(st.integers(0, mask.shape[1] - 1))], None


@case("mask_wrong_rank", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    return x, draw(st.sampled_from([mask[..., None], mask[None], mask.reshape(-1)[:0]])), None


@case("mask_not_a_prefix", "mask", SEQUENCES_ONLY)
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary, min_time=2))
    t = mask.shape[1]
    row = draw(st.lists(st.booleans(), min_size=t, max_size=t).filter(lambda r: any(r) and not _is_prefix(r)))
    mask = mask.clone()
    mask[draw(st.integers(0, mask.shape[0] - 1))] = torch.tensor(row)
    return x, mask, None


@case("mask_zero_length_row", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    mask = mask.clone()
    mask[draw(st.integers(0, mask.shape[0] - 1))] = False
    return x, mask, None


@case("mask_values_not_0_1", "mask")
def _(draw, images, binary):
    x, mask = draw(base_batch(images, binary))
    value = draw(st.sampled_from([2, -1, 0.5, float("nan"), float("inf")]))
    mask = mask.to(torch.int64 if isinstance(value, int) else torch.float32)
    return x, _set(mask, _position(draw, mask), value), None


# --------------------------------------------------------------------------------------------
# the property-based suite
# --------------------------------------------------------------------------------------------


def _root_cause(error):
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def raised_in(error):
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve()


def _finite(result):
    if isinstance(result, dict):
        return all(_finite(v) for v in result.values())
    if isinstance(result, (tuple, list)):
        return all(_finite(v) for v in result)
    if torch.is_tensor(result):
        return bool(torch.isfinite(result).all())
    if isinstance(result, float):
        return math.isfinite(result)
    return True


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    if torch.is_tensor(a):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)
    return True


def _call(fn, x, mask, seed):
    pyro.set_rng_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(x, mask)


def check_outcome(fn, x, mask, fault, reference, seed=0):
    """``(handled, description)`` of one call of an entry point on one input."""
    try:
        result = _call(fn, x, mask, seed)
    except (ValueError, TypeError) as error:
        cause = _root_cause(error)
        message = str(cause).splitlines()[0] if str(cause) else ""
        where = raised_in(cause)
        if fault is None:
            return False, f"valid input raised {type(cause).__name__}: {message}"
        if PACKAGE not in where.parents:
            return False, f"{type(cause).__name__} raised in {where}, not in pyro_seq: {message}"
        if not re.search(rf"\b{fault}\b", message):
            return False, f"message does not name {fault!r}: {message}"
        return True, message
    except Exception as error:  # anything else is a crash
        cause = _root_cause(error)
        return False, f"crash: {type(cause).__name__} in {raised_in(cause)}: {str(cause).splitlines()[:1]}"
    if fault is not None:
        return False, f"bad {fault} accepted, returned {type(result).__name__}"
    if not _finite(result):
        return False, "non-finite result for a valid input"
    if reference is not None:
        expected = _call(fn, *reference, seed)
        if not _same(result, expected):
            return False, "result differs from that of the canonical form of the input"
    return True, "finite result"


MODEL_CASES = [
    (pair, kind)
    for pair, (images, binary) in PAIRS.items()
    for kind, (_, applies, _) in CASE_KINDS.items()
    if applies(images, binary)
]


BUILT = {}


def cached_build(pair):
    # one model per pair for the whole suite (building costs more than a bad-input call); the
    # PyroModules re-register their parameters after conftest clears the parameter store
    if pair not in BUILT:
        BUILT[pair] = build(pair)
    return BUILT[pair]



def cli_error(argv, capsys):
    """
    Run ``main(argv)``; return its exit status and the lines it wrote to stderr, less the progress
    log's INFO and WARNING lines (so an extra ERROR line or a traceback counts against one line).
    """
    capsys.readouterr()
    status = main(argv)
    progress = re.compile(r"^\d\d:\d\d:\d\d (INFO|WARNING) ")
    return status, [line for line in capsys.readouterr().err.splitlines() if line.strip() and not progress.match(line)]


def assert_same(a, b, where=""):
    """Assert two checkpoint states (nested dicts, lists, tensors, numbers) are equal, naming the first difference."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def tiny_srnn_train(data_root):
    """The arguments of a ``pyro-seq train srnn`` run on 4 JSB pieces that takes about a second an epoch."""
    return [
        "train", "srnn", "--data", "jsb", "--data-root", str(data_root), "--max-train-sequences", "4",
        "--max-eval-sequences", "2", "--max-length", "20", "--batch-size", "4", "--d-dim", "4", "--z-dim", "2",
        "--a-dim", "4", "--hidden-dim", "4", "--eval-samples", "0", "--device", "cpu", "--no-progress",
    ]  # fmt: skip
