"""Loss noise and gradient dropout (arXiv:2404.03992): the configuration objects and their schedules.

`LossNoise` and `GradientDropout` are validated and serialisable with Keras; `Constant` and `LinearDecay` set their
strength over training. The maths is in `keras_wtrain.randomness.ops`.
"""

import math
import numbers
import warnings

import keras
from keras import ops

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core.validation import is_real
from keras_wtrain.randomness.ops import RATE_LEVELS

__all__ = ["Constant", "GradientDropout", "LinearDecay", "LossNoise"]

_PAPER = "2404.03992"


@keras.saving.register_keras_serializable(package="keras_wtrain")
class Constant:
    """A constant schedule: the same value at every training step; cost: none (a Python float).

    Args:
        value: the value (a real number).

    Raises:
        TypeError: if `value` is not a real number.
        ValueError: if `value` is not finite.

    Example:

    ```python
    from keras_wtrain.randomness.settings import Constant

    Constant(0.1)(500)  # 0.1
    ```
    """

    def __init__(self, value):
        if not is_real(value):
            raise TypeError(f"Constant: argument `value` must be a real number; received {value!r}.")
        if not math.isfinite(value):
            raise ValueError(f"Constant: argument `value` must be finite; received {value!r}.")
        self.value = float(value)

    def __call__(self, step):
        return self.value

    @property
    def value_range(self):
        """`(min, max)` of the values the schedule takes."""
        return (self.value, self.value)

    def get_config(self):
        return {"value": self.value}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"Constant({self.value!r})"


@keras.saving.register_keras_serializable(package="keras_wtrain")
class LinearDecay:
    """Linear decay from `initial` to `final` over `decay_steps` steps, then constant.

    `value(step) = final + (initial - final) * max(0, 1 - step / decay_steps)`; the step is the optimizer's
    `iterations` for gradient dropout, the model's count of training batches for loss noise. Cost: one scalar per step.

    Args:
        initial: value at step 0.
        final: value from step `decay_steps` on (may exceed `initial`: a linear increase).
        decay_steps: number of steps of the linear part, a positive int.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if `decay_steps < 1` or a value is not finite.

    Example:

    ```python
    from keras_wtrain.randomness.settings import LinearDecay

    schedule = LinearDecay(0.5, 0.0, decay_steps=1000)
    schedule(250)  # 0.375
    ```
    """

    def __init__(self, initial, final=0.0, decay_steps=1000):
        for name, value in (("initial", initial), ("final", final)):
            if not is_real(value):
                raise TypeError(f"LinearDecay: argument `{name}` must be a real number; received {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"LinearDecay: argument `{name}` must be finite; received {value!r}.")
        if not isinstance(decay_steps, numbers.Integral) or isinstance(decay_steps, bool) or decay_steps < 1:
            raise ValueError(f"LinearDecay: argument `decay_steps` must be an int >= 1; received {decay_steps!r}.")
        self.initial = float(initial)
        self.final = float(final)
        self.decay_steps = int(decay_steps)

    def __call__(self, step):
        if is_real(step):
            fraction = max(0.0, 1.0 - float(step) / self.decay_steps)
            return self.final + (self.initial - self.final) * fraction
        step = ops.cast(step, "float32")
        fraction = ops.maximum(0.0, 1.0 - step / float(self.decay_steps))
        return self.final + (self.initial - self.final) * fraction

    @property
    def value_range(self):
        """`(min, max)` of the values the schedule takes."""
        return (min(self.initial, self.final), max(self.initial, self.final))

    def get_config(self):
        return {"initial": self.initial, "final": self.final, "decay_steps": self.decay_steps}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"LinearDecay({self.initial!r}, {self.final!r}, decay_steps={self.decay_steps})"


def _as_schedule(owner, name, value, low, high, high_inclusive, allowed):
    """Validates `value` (a number or a schedule) and returns a schedule."""
    if is_real(value):
        if not math.isfinite(value):
            raise ValueError(f"{owner}: argument `{name}` must be in {allowed}; received {value!r}.")
        value = Constant(value)
    elif isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if not callable(value):
        raise TypeError(
            f"{owner}: argument `{name}` must be a number, `Constant`, `LinearDecay` or a callable "
            f"step -> value; received {value!r}."
        )

    def check(v, what):
        ok = low <= v and (v <= high if high_inclusive else v < high)
        if not (math.isfinite(v) and ok):
            raise ValueError(f"{owner}: argument `{name}` must be in {allowed}; received {what}.")

    if isinstance(value, (Constant, LinearDecay)):
        lo, hi = value.value_range
        check(lo, f"{value!r}" if lo == hi else f"{value!r} (min {lo})")
        check(hi, f"{value!r} (max {hi})")
    else:
        # Any other callable: check the value at step 0 when it can be computed on a Python int.
        try:
            first = value(0)
            first = float(first)
        except Exception:  # noqa: BLE001 (a schedule that only takes tensors is checked at run time by nobody)
            first = None
        if first is not None:
            check(first, f"{first!r} at step 0 from {value!r}")
    return value


def _serialize_schedule(schedule):
    if isinstance(schedule, Constant):
        return schedule.value
    return keras.saving.serialize_keras_object(schedule)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class LossNoise:
    """Multiplicative per-example loss noise (Altarabichi et al., arXiv:2404.03992).

    Every training step each example's loss is multiplied by a fresh `xi ~ N(1, sigma^2)` (through its sample weight,
    see `keras_wtrain.randomness.Model`). Only the multiplicative kind exists: an additive constant changes no gradient.
    Cost: one normal draw per example per step; no memory.

    Args:
        stddev: `sigma`, a number >= 0, or a schedule (`Constant`, `LinearDecay` or any callable `step -> sigma`).
            Default 0.3.
        kind: `"multiplicative"` (the only kind).

    Raises:
        TypeError: if `stddev` is neither a number nor callable.
        ValueError: if `stddev` is negative or not finite, or `kind` is not `"multiplicative"`.

    Example:

    ```python
    from keras_wtrain.randomness.settings import LinearDecay
    from keras_wtrain.randomness.settings import LossNoise

    LossNoise()  # sigma = 0.3
    LossNoise(LinearDecay(0.5, 0.0, decay_steps=2000))
    ```
    """

    _paper_arxiv = _PAPER

    def __init__(self, stddev=0.3, kind="multiplicative"):
        if kind != "multiplicative":
            extra = (
                " An additive constant on the loss leaves every gradient unchanged, so it is not offered."
                if kind == "additive"
                else ""
            )
            raise ValueError(f"LossNoise: argument `kind` must be 'multiplicative'; received {kind!r}.{extra}")
        self.kind = kind
        self.stddev = _as_schedule("LossNoise", "stddev", stddev, 0.0, math.inf, False, "[0, inf)")

    @property
    def is_off(self):
        """True when the noise is a constant 0 (then it is skipped: an exact no-op)."""
        return isinstance(self.stddev, Constant) and self.stddev.value == 0.0

    def get_config(self):
        return {"stddev": _serialize_schedule(self.stddev), "kind": self.kind}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"LossNoise(stddev={self.stddev!r})"


@keras.saving.register_keras_serializable(package="keras_wtrain")
class GradientDropout:
    """Element-wise gradient dropout (Altarabichi et al., arXiv:2404.03992).

    Every training step each gradient entry is kept with probability `1 - p`, else zeroed, before the optimizer
    (`keras_wtrain.randomness.gradient_dropout.GradientDropoutOptimizer` applies it). `p` is rounded to a multiple of
    1/256 (8-bit masks, `quantize_rate`). Cost: one random byte per gradient entry per step.

    Args:
        rate: `p` in [0, 1) (0 or at least 1/512), or a schedule (`Constant`, `LinearDecay`, a
            `keras.optimizers.schedules.LearningRateSchedule` or any callable `step -> p`). Default 0.1.
        rescale: divide kept entries by `1 - p` (default False, as the authors).

    Raises:
        TypeError: if `rate` is neither a number nor callable, or `rescale` is not a bool.
        ValueError: if `rate` is outside [0, 1), or a constant in (0, 1/512).

    Example:

    ```python
    from keras_wtrain.randomness.settings import GradientDropout

    GradientDropout(0.2, rescale=True)
    ```
    """

    _paper_arxiv = _PAPER

    def __init__(self, rate=0.1, rescale=False):
        if not isinstance(rescale, bool):
            raise TypeError(f"GradientDropout: argument `rescale` must be a bool; received {rescale!r}.")
        self.rate = _as_schedule("GradientDropout", "rate", rate, 0.0, 1.0, False, "[0, 1)")
        _check_resolution(self.rate)
        self.rescale = rescale

    @property
    def is_off(self):
        """True when the rate is a constant 0 (then it is skipped: an exact no-op)."""
        return isinstance(self.rate, Constant) and self.rate.value == 0.0

    def get_config(self):
        return {"rate": _serialize_schedule(self.rate), "rescale": self.rescale}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"GradientDropout(rate={self.rate!r}, rescale={self.rescale})"


def _check_resolution(schedule):
    """Refuses a constant rate that 8-bit masks would round to 0; warns for such schedule end points."""
    smallest = 1.0 / (2 * RATE_LEVELS)

    def too_small(value):
        return 0.0 < value < smallest

    message = (
        "argument `rate` must be 0 or at least 1/512 = 0.001953125: gradient-dropout masks are drawn with 8-bit "
        "resolution, so p is rounded to a multiple of 1/256 and a smaller p would drop nothing; received {}."
    )
    if isinstance(schedule, Constant):
        if too_small(schedule.value):
            raise ValueError("GradientDropout: " + message.format(repr(schedule.value)))
        return
    if isinstance(schedule, LinearDecay):
        ends = (schedule.initial, schedule.final)
    else:
        try:
            ends = (float(schedule(0)),)
        except Exception:  # noqa: BLE001 (a schedule that only takes tensors is not checked)
            ends = ()
    if any(too_small(value) for value in ends):
        warnings.warn(
            f"GradientDropout: the schedule {schedule!r} reaches rates in (0, 1/512), which round to 0 "
            "(masks have 8-bit resolution): no gradient entry is dropped there.",
            stacklevel=3,
        )
