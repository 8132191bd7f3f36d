"""Loss noise and gradient dropout maths (arXiv:2404.03992), in `keras.ops` for TensorFlow and JAX.

Random draws go through `keras_wtrain._core.rng`; `keras_wtrain.randomness.settings` holds the configuration.
"""

import math

import keras
from keras import ops

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core import rng
from keras_wtrain._core.validation import is_real

__all__ = ["drop_gradients", "gradient_keep_mask", "loss_noise_factors", "noisy_sample_weight", "quantize_rate"]

RATE_LEVELS = 256
"""Gradient-dropout rates are multiples of `1 / RATE_LEVELS` (one random byte per gradient entry)."""


def loss_noise_factors(batch_size, stddev, seed=None, dtype="float32"):
    """Per-example loss multipliers `xi ~ N(1, stddev^2)`; cost: one normal draw per example.

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
    from keras_wtrain.randomness.ops import loss_noise_factors

    xi = loss_noise_factors(8, 0.3, seed=keras.random.SeedGenerator(0))
    ```
    """
    z = rng.normal((batch_size,), seed=rng.as_seed(seed))
    return ops.cast(1.0 + ops.cast(stddev, "float32") * z, dtype)


def noisy_sample_weight(sample_weight, factors):
    """Multiplies per-example `factors` into a (possibly nested or None) `sample_weight`.

    Cost: one multiplication per weight.

    Args:
        sample_weight: None, an array of shape `(batch, ...)`, or a nested structure (one per output) of those.
        factors: tensor of shape `(batch,)`.

    Returns:
        `factors` where `sample_weight` is None, else `sample_weight * factors` broadcast over trailing axes.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.randomness.ops import noisy_sample_weight

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
    """The float32 reference keep mask `m = (u > rate)`, `u ~ U[0, 1)`, for analysis (training uses `drop_gradients`).

    Cost: one float32 uniform per entry.

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
    from keras_wtrain.randomness.ops import gradient_keep_mask

    m = gradient_keep_mask((3, 4), 0.25, seed=keras.random.SeedGenerator(0))
    ```
    """
    u = rng.uniform(shape, seed=rng.as_seed(seed))
    return ops.cast(ops.greater(u, ops.cast(rate, "float32")), dtype)


def quantize_rate(rate):
    """The 8-bit drop threshold `t = round(256 * rate)`: drop probability `t / 256`, within 1/512 of `rate`.

    Cost: constant.

    Args:
        rate: `p` in [0, 1] (a number, or a scalar tensor for scheduled rates).

    Returns:
        A Python int in [0, 256] for a number, an int32 scalar tensor otherwise.

    Example:

    ```python
    from keras_wtrain.randomness.ops import quantize_rate

    quantize_rate(0.1)  # 26: p = 26/256 = 0.1016
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
    else:  # JAX, the only other supported backend (keras_wtrain._core.backends)
        import jax

        flat = jax.lax.bitcast_convert_type(words, "uint8").reshape(-1)
    return ops.reshape(flat[:count], shape)


def drop_gradients(gradients, rate, seed=None, rescale=False):
    """Applies gradient dropout to a list of gradients (None entries pass through).

    Each gradient `g` becomes `g * m` (or `g * m / (1 - t/256)` with `rescale`), a fresh mask per gradient, keeping an
    entry when its random byte is `>= t = quantize_rate(rate)`. Non-finite values stay non-finite (the mask multiplies).
    Cost: `ceil(n / 4)` 32-bit Philox words and an `n`-entry mask per gradient of `n` entries.

    Args:
        gradients: list of gradient tensors (or None); shapes must be static.
        rate: drop probability `p` (number or scalar tensor).
        seed: a `keras.random.SeedGenerator` (advanced once per gradient), an int, or None.
        rescale: divide kept entries by `1 - t/256`.

    Returns:
        The list of dropped-out gradients.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.randomness.ops import drop_gradients

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
    seed = rng.as_seed(seed)  # an int becomes a sequence: one seed per gradient
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
