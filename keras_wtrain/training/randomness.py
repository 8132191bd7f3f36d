"""Loss noise and gradient dropout: the randomness maths, backend-free.

Altarabichi et al., "Rolling the dice for better deep learning performance"
(Information Sciences 667, 2024; arXiv:2404.03992) propose two kinds of
randomness in the training step. This module holds their maths as small
functions of `keras.ops` and `keras.random` (so it runs on TensorFlow, JAX and
PyTorch, under `jit_compile=True` and inside JAX's stateless train step), plus
the configuration objects `LossNoise` and `GradientDropout` and the schedules
that set their strength over training. `keras_wtrain.training.Model` applies
them in `train_step`.

What is computed (the authors' code, `Ghaith81/Radnomness_in_Neural_Network`):

- loss noise: every step, each example's loss is multiplied by its own
  `xi_i ~ N(1, sigma^2)`. Here `xi` multiplies Keras' per-example
  `sample_weight`, so the differentiated loss is Keras' usual reduction of
  `w_i * xi_i * l_i` (with the default `"sum_over_batch_size"` reduction:
  `(1/N) * sum_i w_i xi_i l_i`).
- gradient dropout: every step, each entry of each trainable variable's
  gradient is kept when `u > p` with `u ~ U[0, 1)` and set to zero otherwise;
  no `1/(1-p)` rescaling unless asked for.
"""

import math
import numbers

import keras
from keras import ops

__all__ = [
    "Constant",
    "GradientDropout",
    "LinearDecay",
    "LossNoise",
    "drop_gradients",
    "gradient_keep_mask",
    "loss_noise_factors",
    "noisy_sample_weight",
]

_PAPER = "2404.03992"


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class Constant:
    """A constant schedule: the same value at every training step.

    Args:
        value: the value (a real number).

    Raises:
        TypeError: if `value` is not a real number.
        ValueError: if `value` is not finite.

    Example:

    ```python
    from keras_wtrain.training.randomness import Constant

    Constant(0.1)(500)  # 0.1
    ```
    """

    def __init__(self, value):
        if not _is_real(value):
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

    `value(step) = final + (initial - final) * max(0, 1 - step / decay_steps)`.
    The step is the number of training batches the model has trained on
    (`keras_wtrain.training.Model.randomness_step`).

    Args:
        initial: value at step 0.
        final: value from step `decay_steps` on (may be larger than `initial`,
            which gives a linear increase).
        decay_steps: number of steps of the linear part, a positive int.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if `decay_steps < 1` or a value is not finite.

    Example:

    ```python
    from keras_wtrain.training.randomness import LinearDecay

    schedule = LinearDecay(0.5, 0.0, decay_steps=1000)
    schedule(250)  # 0.375
    ```
    """

    def __init__(self, initial, final=0.0, decay_steps=1000):
        for name, value in (("initial", initial), ("final", final)):
            if not _is_real(value):
                raise TypeError(f"LinearDecay: argument `{name}` must be a real number; received {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"LinearDecay: argument `{name}` must be finite; received {value!r}.")
        if not isinstance(decay_steps, numbers.Integral) or isinstance(decay_steps, bool) or decay_steps < 1:
            raise ValueError(f"LinearDecay: argument `decay_steps` must be an int >= 1; received {decay_steps!r}.")
        self.initial = float(initial)
        self.final = float(final)
        self.decay_steps = int(decay_steps)

    def __call__(self, step):
        if _is_real(step):
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
    if _is_real(value):
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

    Every training step each example's loss `l_i` is multiplied by a fresh
    `xi_i ~ N(1, sigma^2)`, as in the authors' code
    (`l * tf.random.normal(tf.shape(l), 1.0, sigma)`). `keras_wtrain.training.Model`
    does this by multiplying `xi` into Keras' per-example `sample_weight`, so the
    loss that is differentiated is the compiled loss reduced as usual (mean
    over the batch for the default reduction, `sample_weight` and
    `class_weight` respected) of `w_i * xi_i * l_i`; regularisation losses are
    not noised. `xi_i` can be negative for large `sigma`: that example is then
    ascended, not descended, for one step.

    An additive constant on the scalar loss does not change any gradient, so
    only the multiplicative kind exists (`kind="additive"` is refused).

    Args:
        stddev: `sigma`, a number >= 0, or a schedule (`Constant`, `LinearDecay`
            or any callable `step -> sigma`; `step` is the number of training
            batches seen). Default 0.3, the order of the values that helped the
            study's MLP on MNIST; a small CNN trains as well as without it.
        kind: `"multiplicative"` (the only kind).

    Raises:
        TypeError: if `stddev` is neither a number nor callable.
        ValueError: if `stddev` is negative or not finite, or `kind` is not
            `"multiplicative"`.

    Example:

    ```python
    from keras_wtrain.training.randomness import LinearDecay
    from keras_wtrain.training.randomness import LossNoise

    LossNoise()                                   # sigma = 0.3
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

    Every training step, each entry of each trainable variable's gradient is
    multiplied by `m = (u > p)`, `u ~ U[0, 1)` drawn fresh, before the
    optimizer sees it. The authors' code does not rescale the kept entries;
    `rescale=True` divides them by `1 - p` so the expected gradient is
    unchanged. With momentum or Adam a dropped entry still moves on its
    optimizer state; only plain SGD leaves it unchanged for that step.

    Args:
        rate: `p`, in [0, 1), or a schedule (`Constant`, `LinearDecay` or any
            callable `step -> p`). Default 0.1, in the middle of the rates
            (0.04-0.19) common in the study's best CNN configurations.
        rescale: divide kept entries by `1 - p` (default False, as the authors).

    Raises:
        TypeError: if `rate` is neither a number nor callable, or `rescale` is
            not a bool.
        ValueError: if `rate` is outside [0, 1).

    Example:

    ```python
    from keras_wtrain.training.randomness import GradientDropout

    GradientDropout()             # p = 0.1, no rescaling
    GradientDropout(0.2, rescale=True)
    ```
    """

    _paper_arxiv = _PAPER

    def __init__(self, rate=0.1, rescale=False):
        if not isinstance(rescale, bool):
            raise TypeError(f"GradientDropout: argument `rescale` must be a bool; received {rescale!r}.")
        self.rate = _as_schedule("GradientDropout", "rate", rate, 0.0, 1.0, False, "[0, 1)")
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


def _tf_seed(seed):
    import tensorflow as tf

    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    elif isinstance(seed, int):
        seed = [seed, 0]
    seed = tf.convert_to_tensor(seed)
    if seed.dtype != tf.int32:
        seed = tf.cast(tf.math.floormod(tf.cast(seed, tf.int64), tf.int32.max - 1), tf.int32)
    return seed


def _standard(kind, shape, seed):
    """Standard normal or U[0, 1) float32 draws.

    On TensorFlow this calls `tf.random.stateless_*` with `alg="philox"`: the
    default algorithm Keras uses compiles, under `jit_compile=True` on CPU, to
    code 25-50x slower (140-225 ms vs 3-9 ms for 400k numbers, TF 2.21). Other
    backends use `keras.random`. The seed is drawn from `seed` the same way.
    """
    if keras.backend.backend() == "tensorflow" and seed is not None:
        import tensorflow as tf

        fn = tf.random.stateless_normal if kind == "normal" else tf.random.stateless_uniform
        return fn(shape, seed=_tf_seed(seed), dtype=tf.float32, alg="philox")
    fn = keras.random.normal if kind == "normal" else keras.random.uniform
    return fn(shape, seed=seed, dtype="float32")


def loss_noise_factors(batch_size, stddev, seed=None, dtype="float32"):
    """Per-example loss multipliers `xi ~ N(1, stddev^2)`.

    Args:
        batch_size: number of examples (int or scalar tensor).
        stddev: `sigma` (number or scalar tensor).
        seed: a `keras.random.SeedGenerator`, an int, or a seed tensor.
        dtype: dtype of the result.

    Returns:
        A tensor of shape `(batch_size,)`.

    Example:

    ```python
    import keras
    from keras_wtrain.training.randomness import loss_noise_factors

    xi = loss_noise_factors(8, 0.3, seed=keras.random.SeedGenerator(0))
    ```
    """
    z = _standard("normal", (batch_size,), seed)
    return ops.cast(1.0 + ops.cast(stddev, "float32") * z, dtype)


def noisy_sample_weight(sample_weight, factors):
    """Multiplies per-example `factors` into a (possibly nested or None) `sample_weight`.

    Args:
        sample_weight: None, one array of shape `(batch, ...)`, or a nested
            structure (one per output) of those / None.
        factors: tensor of shape `(batch,)`.

    Returns:
        The new sample weights: `factors` where `sample_weight` is None,
        otherwise `sample_weight * factors` broadcast over trailing axes.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.training.randomness import noisy_sample_weight

    noisy_sample_weight(np.array([1.0, 2.0]), np.array([0.5, 1.5]))  # [0.5, 3.0]
    ```
    """

    def one(weight):
        if weight is None:
            return factors
        weight = ops.convert_to_tensor(weight)
        f = ops.cast(factors, weight.dtype)
        extra = len(weight.shape) - 1
        if extra > 0:
            f = ops.reshape(f, (-1,) + (1,) * extra)
        return weight * f

    if sample_weight is None:
        return factors
    return keras.tree.map_structure(one, sample_weight, none_is_leaf=True)


def gradient_keep_mask(shape, rate, seed=None, dtype="float32"):
    """The gradient-dropout keep mask `m = (u > rate)`, `u ~ U[0, 1)`.

    Args:
        shape: shape of the gradient.
        rate: drop probability `p` (number or scalar tensor).
        seed: a `keras.random.SeedGenerator`, an int, or a seed tensor.
        dtype: dtype of the mask.

    Returns:
        A 0/1 tensor of `shape`.

    Example:

    ```python
    import keras
    from keras_wtrain.training.randomness import gradient_keep_mask

    m = gradient_keep_mask((3, 4), 0.25, seed=keras.random.SeedGenerator(0))
    ```
    """
    u = _standard("uniform", shape, seed)
    return ops.cast(ops.greater(u, ops.cast(rate, "float32")), dtype)


def drop_gradients(gradients, rate, seed=None, rescale=False):
    """Applies gradient dropout to a list of gradients (None entries pass through).

    Each gradient `g` becomes `g * m` (or `g * m / (1 - rate)` with `rescale`),
    with its own fresh mask `m = (u > rate)`. Multiplication (not selection)
    keeps non-finite values non-finite, so mixed-precision loss scaling still
    sees overflowing steps.

    Args:
        gradients: list of gradient tensors (or None).
        rate: drop probability `p` (number or scalar tensor).
        seed: a `keras.random.SeedGenerator` (one draw per gradient), or None.
        rescale: divide kept entries by `1 - rate`.

    Returns:
        The list of dropped-out gradients.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.training.randomness import drop_gradients

    grads = [np.ones((100, 10), "float32"), None]
    dropped = drop_gradients(grads, 0.5, seed=keras.random.SeedGenerator(0))
    ```
    """
    out = []
    for g in gradients:
        if g is None:
            out.append(None)
            continue
        g = ops.convert_to_tensor(g)
        mask = gradient_keep_mask(ops.shape(g), rate, seed=seed, dtype=g.dtype)
        if rescale:
            mask = mask / ops.cast(1.0 - ops.cast(rate, "float32"), g.dtype)
        out.append(g * mask)
    return out
