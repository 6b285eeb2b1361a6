"""
Schedules of a weight over SVI steps: :math:`\\beta` of the warm-up ELBOs, the Z-Forcing weight.
"""

import math

from pyro_seq.util import check_int, check_real

def linear_schedule(step, start=0.0, end=1.0, steps=1000):
    """Linear from ``start`` at step 0 to ``end`` at ``steps``, then constant.

    :raises ValueError: ``start`` or ``end`` not finite, ``steps`` not an integer, ``step`` NaN.
    """
    start, end, steps, step = _check_ramp(start, end, steps, step)
    if steps <= 0:
        return float(end)
    frac = min(max(step, 0) / steps, 1.0)
    return float(start + (end - start) * frac)


def cosine_schedule(step, start=0.0, end=1.0, steps=1000):
    """Half-cosine from ``start`` to ``end`` over ``steps``, then constant (arguments as :func:`linear_schedule`)."""
    start, end, steps, step = _check_ramp(start, end, steps, step)
    if steps <= 0:
        return float(end)
    frac = min(max(step, 0) / steps, 1.0)
    return float(end + (start - end) * 0.5 * (1 + math.cos(math.pi * frac)))


def _check_ramp(start, end, steps, step=0):
    return (
        check_real("start", start),
        check_real("end", end),
        check_int("steps", steps),  # <= 0: no ramp
        check_real("step", step, allow_inf=True),
    )


class Schedule:
    """
    A schedule ``step -> value``; callable, JSON-describable (``config``).

    :param str kind: ``"linear"``, ``"cosine"`` or ``"constant"``.
    :param float start: value at step 0.
    :param float end: value after ``steps``.
    :param int steps: length of the ramp in SVI steps.
    """

    KINDS = {"linear": linear_schedule, "cosine": cosine_schedule}

    def __init__(self, kind="linear", start=0.0, end=1.0, steps=1000):
        if kind != "constant" and kind not in self.KINDS:
            raise ValueError(
                f"schedule kind must be one of {sorted(self.KINDS) + ['constant']}, got {kind!r}"
            )
        start, end = check_real("start", start), check_real("end", end)
        steps = check_int("steps", steps, 0)
        self.kind, self.start, self.end, self.steps = kind, start, end, steps

    @property
    def config(self):
        return dict(kind=self.kind, start=self.start, end=self.end, steps=self.steps)

    def __call__(self, step):
        if self.kind == "constant":
            return float(self.end)
        return self.KINDS[self.kind](step, self.start, self.end, self.steps)

    def __repr__(self):
        return f"Schedule({self.kind!r}, start={self.start}, end={self.end}, steps={self.steps})"


def LinearSchedule(start=0.0, end=1.0, steps=1000):
    """A linear warm-up :class:`Schedule`."""
    return Schedule("linear", start, end, steps)


def ConstantSchedule(value=1.0):
    """A constant :class:`Schedule`."""
    return Schedule("constant", value, value, 0)


# ------------------------------------------------------------------ warm-up
