"""
Numbers given to the library and to the command line, drawn by hypothesis (any float, NaN and
infinities included): a library constructor or function either accepts the value and gives a
finite result, or raises ``ValueError`` naming the argument and its range; a ``pyro-seq train``
option out of its range is one line naming the option and exit status 2, with no traceback.
"""

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_cases import D, cli_error, record

from pyro_seq.bounds import importance_bounds
from pyro_seq.fivo import fivo_log_likelihood
from pyro_seq.guides import LinearGaussianSSMGuide, SRNNGuide, ZForcingGuide
from pyro_seq.losses import (
    FIVO_ELBO,
    IWAE_ELBO,
    LinearSchedule,
    Schedule,
    WarmupTrace_ELBO,
    ZForcingTrace_ELBO,
    linear_schedule,
)
from pyro_seq.models import SRNN, LadderVAE, LinearGaussianSSM, ZForcing

FAST = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

#: any number a user may pass: floats of every kind (NaN, infinities, huge, tiny) and ints
ANY_NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10), st.sampled_from([0, 0.0, -0.0, 1, 0.5, True]))

_LGSSM = LinearGaussianSSM(x_dim=D, z_dim=2)
_LGSSM_GUIDE = LinearGaussianSSMGuide(_LGSSM, kind="filter")
_X = torch.randn(2, 3, D)


def _finite(value):
    if torch.is_tensor(value):
        return bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, float):
        return math.isfinite(value)
    return True


#: subject -> {argument: fn(value) -> result}; each argument of each subject is one case
SUBJECTS = {
    "schedules": {
        "start": lambda v: Schedule("linear", start=v, end=1.0, steps=10)(3),
        "end": lambda v: LinearSchedule(0.0, v, 10)(3),
        "steps": lambda v: LinearSchedule(0.0, 1.0, v)(3),
        "step": lambda v: linear_schedule(v, 0.0, 1.0, 10),
    },
    "warm-up losses": {
        "schedule": lambda v: WarmupTrace_ELBO(v).beta,
        "aux_schedule": lambda v: ZForcingTrace_ELBO(1.0, aux_schedule=v).aux_weight,
        "backward_weight": lambda v: ZForcingTrace_ELBO(1.0, backward_weight=v).backward_weight,
    },
    "particle bounds": {
        "num_particles": lambda v: IWAE_ELBO(num_particles=v).num_particles,
        "threshold": lambda v: FIVO_ELBO(num_particles=2, threshold=v).threshold,
        "num_samples": lambda v: importance_bounds(_LGSSM, _LGSSM_GUIDE, _X, num_samples=v),
        "fivo threshold": lambda v: fivo_log_likelihood(_LGSSM, _LGSSM_GUIDE, _X, num_particles=2, threshold=v),
        "fivo num_particles": lambda v: fivo_log_likelihood(_LGSSM, _LGSSM_GUIDE, _X, num_particles=v),
    },
    "models and guides": {
        "z_dim": lambda v: SRNN(x_dim=D, d_dim=3, z_dim=v, hidden_dim=4),
        "hidden_dim": lambda v: ZForcing(x_dim=D, emb_dim=3, h_dim=3, z_dim=2, hidden_dim=v),
        "dropout": lambda v: SRNN(x_dim=D, d_dim=3, z_dim=2, hidden_dim=4, dropout=v),
        "min_scale": lambda v: LinearGaussianSSM(x_dim=D, z_dim=2, min_scale=v),
        "z_dims": lambda v: LadderVAE(x_dim=D, z_dims=(3, v), hidden_dims=(4, 4)),
        "a_dim": lambda v: SRNNGuide(SRNN(x_dim=D, d_dim=3, z_dim=2, hidden_dim=4), a_dim=v),
        "b_dim": lambda v: ZForcingGuide(ZForcing(x_dim=D, emb_dim=3, h_dim=3, z_dim=2, hidden_dim=4), b_dim=v),
        "horizon": lambda v: LinearGaussianSSMGuide(_LGSSM, horizon=v),
    },
}
CASES = [(subject, arg) for subject, args in SUBJECTS.items() for arg in args]


@pytest.mark.parametrize("subject,arg", CASES, ids=[f"{s}-{a}" for s, a in CASES])
def test_a_number_is_accepted_with_a_finite_result_or_refused_naming_the_argument(subject, arg):
    fn = SUBJECTS[subject][arg]
    name = arg.split()[-1]
    outcomes = []

    @FAST
    @given(ANY_NUMBER)
    def check(value):
        try:
            result = fn(value)
        except ValueError as e:
            message = str(e)
            assert "\n" not in message and re.search(rf"\b{re.escape(name)}\b", message), message
            outcomes.append("refused")
            return
        if isinstance(value, float) and not math.isfinite(value) and arg != "step":
            raise AssertionError(f"{arg}={value!r} was accepted")
        assert _finite(result), f"{arg}={value!r} gave a non-finite result"
        outcomes.append("accepted")

    check()
    assert "refused" in outcomes  # the strategy reaches the invalid values
    record("numeric arguments", subject, arg, "any number (NaN, inf, <= 0 included)", True)


# --------------------------------------------------------------------------------------------
# the command line: values outside an option's range, drawn around and beyond its bounds
# --------------------------------------------------------------------------------------------

OPTIONS = {  # option -> (kind, low, high, low_open)
    "--lr": (float, 0.0, None, True),
    "--warmup-start": (float, 0.0, 1.0, False),
    "--dropout": (float, 0.0, 1.0, False),
    "--batch-size": (int, 1, None, False),
    "--warmup-steps": (int, 0, None, False),
    "--num-particles": (int, 1, None, False),
}


def _outside(kind, low, high, low_open):
    if kind is int:
        below = st.integers(max_value=low - 1).map(str)
        return below if high is None else st.one_of(below, st.integers(min_value=high + 1).map(str))
    below = st.floats(max_value=low, exclude_max=not low_open, allow_nan=False)
    out = st.one_of(below, st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")))
    if high is not None:
        out = st.one_of(out, st.floats(min_value=high, exclude_min=True))
    return out.map(repr)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_an_option_outside_its_range_is_one_line_and_status_2(tmp_path, capsys, option):
    out = tmp_path / "out"

    @settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(_outside(*OPTIONS[option]))
    def check(value):
        status, lines = cli_error(["train", "srnn", "--out", str(out), option, value], capsys)
        assert status == 2 and len(lines) == 1 and f"argument {option}" in lines[0], (value, lines)
        assert not out.exists()

    check()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    record("option ranges", "srnn", option, "hypothesis: values outside the range", True)
