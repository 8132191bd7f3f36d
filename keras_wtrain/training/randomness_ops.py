"""Loss noise and gradient dropout maths: small functions of `keras.ops` and `keras.random`.

The computations behind `keras_wtrain.training.randomness.LossNoise` and
`GradientDropout` (Altarabichi et al., arXiv:2404.03992), written with
`keras.ops` so they run on TensorFlow and JAX, under `jit_compile=True` and
inside JAX's stateless train step. Random draws go through
`keras_wtrain.rng` (Philox chosen explicitly on TensorFlow). The
configuration objects and schedules live in
`keras_wtrain.training.randomness`, which re-exports these functions.

What is computed (the authors' code, `Ghaith81/Radnomness_in_Neural_Network`):

- loss noise: every step, each example's loss is multiplied by its own
  `xi_i ~ N(1, sigma^2)` (`loss_noise_factors`). Here `xi` multiplies Keras'
  per-example `sample_weight` (`noisy_sample_weight`), so the differentiated
  loss is Keras' usual reduction of `w_i * xi_i * l_i` (with the default
  `"sum_over_batch_size"` reduction: `(1/N) * sum_i w_i xi_i l_i`).
- gradient dropout: every step, each entry of each trainable variable's
  gradient is kept with probability `1 - p` and set to zero otherwise; no
  `1/(1-p)` rescaling unless asked for. `drop_gradients` (what the optimizer
  wrapper uses) draws one random byte per entry, four per 32-bit Philox word,
  and keeps the entry when `byte >= round(256 p)`: `p` is quantised to a
  multiple of 1/256 (`quantize_rate`), within 1/512 of the `p` asked for.
  `gradient_keep_mask` is the float32 reference `u > p`, `u ~ U[0, 1)`.

Example:

```python
import keras
import numpy as np
from keras_wtrain.training.randomness_ops import drop_gradients
from keras_wtrain.training.randomness_ops import loss_noise_factors
from keras_wtrain.training.randomness_ops import noisy_sample_weight

xi = loss_noise_factors(4, 0.3, seed=keras.random.SeedGenerator(0))
weights = noisy_sample_weight(np.ones(4, "float32"), xi)  # xi, since every weight is 1
[dropped] = drop_gradients([np.ones((8, 8), "float32")], 0.25, seed=0)
```
"""

import math

import keras
from keras import ops

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain import rng
from keras_wtrain.validation import is_real

__all__ = ["drop_gradients", "gradient_keep_mask", "loss_noise_factors", "noisy_sample_weight", "quantize_rate"]

RATE_LEVELS = 256
"""Gradient-dropout rates are multiples of `1 / RATE_LEVELS` (one random byte per gradient entry)."""


class _FixedSeed(keras.random.SeedGenerator):
    """A seed tensor dressed as a seed generator (every draw uses that seed); no state variable."""

    def __init__(self, seed):  # deliberately no super().__init__: no state variable
        self.seed = seed

    def next(self, ordered=True):
        return self.seed


def _as_seed(seed):
    """None, an int, a `keras.random.SeedGenerator`, or a seed tensor (shape (2,)) for `keras_wtrain.rng`."""
    if seed is None or isinstance(seed, (int, keras.random.SeedGenerator)):
        return seed
    return _FixedSeed(seed)


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
    from keras_wtrain.training.randomness_ops import loss_noise_factors

    xi = loss_noise_factors(8, 0.3, seed=keras.random.SeedGenerator(0))
    ```
    """
    z = rng.normal((batch_size,), seed=_as_seed(seed))
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
    from keras_wtrain.training.randomness_ops import noisy_sample_weight

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
    """The float32 reference keep mask `m = (u > rate)`, `u ~ U[0, 1)` (exact `rate`, one uniform per entry).

    `drop_gradients` (what training uses) draws 8-bit masks instead, four
    entries per random 32-bit word; this function keeps the exact-`p`
    definition for reference and analysis.

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
    from keras_wtrain.training.randomness_ops import gradient_keep_mask

    m = gradient_keep_mask((3, 4), 0.25, seed=keras.random.SeedGenerator(0))
    ```
    """
    u = rng.uniform(shape, seed=_as_seed(seed))
    return ops.cast(ops.greater(u, ops.cast(rate, "float32")), dtype)


def quantize_rate(rate):
    """The 8-bit drop threshold `t = round(256 * rate)`: an entry is dropped when its random byte is `< t`.

    The drop probability is then `t / 256`, within 1/512 of `rate`.

    Args:
        rate: `p` in [0, 1] (a number, or a scalar tensor for scheduled rates).

    Returns:
        A Python int in [0, 256] for a number, an int32 scalar tensor otherwise.

    Example:

    ```python
    from keras_wtrain.training.randomness_ops import quantize_rate

    quantize_rate(0.1)   # 26: p = 26/256 = 0.1016
    quantize_rate(0.25)  # 64: exact
    ```
    """
    if is_real(rate):
        return int(min(max(math.floor(rate * RATE_LEVELS + 0.5), 0), RATE_LEVELS))
    scaled = ops.floor(ops.cast(rate, "float32") * float(RATE_LEVELS) + 0.5)
    return ops.cast(ops.clip(scaled, 0.0, float(RATE_LEVELS)), "int32")


def _random_bytes(shape, seed):
    """Uniform random bytes of `shape` (uint8 on TensorFlow / JAX) from `ceil(n / 4)` 32-bit Philox words."""
    count = math.prod(shape)
    words = rng.random_bits((max(1, -(-count // 4)),), seed=seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        flat = tf.reshape(tf.bitcast(words, tf.uint8), [-1])
    else:  # JAX, the only other supported backend (keras_wtrain.backends)
        import jax

        flat = jax.lax.bitcast_convert_type(words, "uint8").reshape(-1)
    return ops.reshape(flat[:count], shape)


def drop_gradients(gradients, rate, seed=None, rescale=False):
    """Applies gradient dropout to a list of gradients (None entries pass through).

    Each gradient `g` becomes `g * m` (or `g * m / (1 - p_q)` with `rescale`),
    with its own fresh mask `m`: a gradient of `n` entries gets one Philox
    draw of `ceil(n / 4)` 32-bit words (`keras_wtrain.rng.random_bits`), each
    word gives four random bytes `b`, and an entry is kept when
    `b >= t = round(256 * rate)`. The drop probability is `p_q = t / 256`,
    within 1/512 of `rate` (`quantize_rate`); that costs a quarter of the
    random numbers of one float32 uniform per entry. Multiplication (not
    selection) keeps non-finite values non-finite, so mixed-precision loss
    scaling still sees overflowing steps.

    Args:
        gradients: list of gradient tensors (or None); shapes must be static.
        rate: drop probability `p` (number or scalar tensor).
        seed: a `keras.random.SeedGenerator` (advanced once per gradient), an
            int, or None.
        rescale: divide kept entries by `1 - p_q`.

    Returns:
        The list of dropped-out gradients.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.training.randomness_ops import drop_gradients

    grads = [np.ones((100, 10), "float32"), None]
    dropped = drop_gradients(grads, 0.5, seed=keras.random.SeedGenerator(0))
    ```
    """
    gradients = [None if g is None else ops.convert_to_tensor(g) for g in gradients]
    threshold = quantize_rate(rate)
    constant = isinstance(threshold, int)
    if constant and threshold == 0:
        return gradients  # nothing is ever dropped at p_q = 0 (no draw: the seed state is not advanced)
    if constant:
        scale = RATE_LEVELS / max(RATE_LEVELS - threshold, 1)
    else:
        scale = float(RATE_LEVELS) / ops.maximum(float(RATE_LEVELS) - ops.cast(threshold, "float32"), 1.0)
    seed = rng.as_seed(_as_seed(seed))  # an int becomes a sequence: one seed per gradient
    out = []
    for g in gradients:
        if g is None or math.prod(g.shape) == 0:
            out.append(g)
            continue
        entries = _random_bytes(tuple(g.shape), seed)
        if not constant:
            keep = ops.greater_equal(ops.cast(entries, "int32"), threshold)  # thresholds go up to 256
        elif threshold < RATE_LEVELS:
            keep = ops.greater_equal(entries, ops.convert_to_tensor(threshold, dtype=entries.dtype))
        else:  # t = 256: everything is dropped
            keep = ops.zeros(g.shape, dtype="bool")
        keep = ops.cast(keep, g.dtype)
        if rescale:
            keep = keep * ops.cast(scale, g.dtype)
        out.append(g * keep)
    return out
