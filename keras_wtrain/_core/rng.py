"""Random helpers: seeds and the uniform / normal / bit draws of every random operation of the library.

`keras.random` on JAX; on TensorFlow `tf.random.stateless_*` with `alg="philox"` explicitly, since the auto-selected
algorithm is much slower under `jit_compile` on CPU (docs/techniques/loss_noise_gradient_dropout.md).
"""

import keras
from keras import ops

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core._keras_private import jax_draw_seed
from keras_wtrain._core._keras_private import random_seed_dtype

__all__ = ["SeedSequence", "as_seed", "normal", "random_bits", "uniform"]


class SeedSequence(keras.random.SeedGenerator):
    """A stateless stand-in for a `keras.random.SeedGenerator`: the i-th draw uses seed `[base, i]`.

    It creates no variable, so it can be made inside a jit-compiled call; its
    draws equal those of a fresh `SeedGenerator(base)`.

    Args:
        base: the int seed.

    Example:

    ```python
    from keras_wtrain._core.rng import SeedSequence

    seeds = SeedSequence(3)
    first, second = seeds.next(), seeds.next()   # [3, 0], [3, 1]
    ```
    """

    def __init__(self, base):  # deliberately no super().__init__: no state variable
        self.base = int(base)
        self.count = 0

    def next(self, ordered=True):
        """The next seed tensor `[base, i]` (in Keras' seed dtype)."""
        dtype = random_seed_dtype()
        base = self.base
        if dtype == "int32":
            base = (base & 0xFFFFFFFF ^ 0x80000000) - 0x80000000
        value = ops.convert_to_tensor([base, self.count], dtype=dtype)
        self.count += 1
        return value


class _FixedSeed(keras.random.SeedGenerator):
    """A seed tensor dressed as a seed generator (every draw uses that seed); no state variable."""

    def __init__(self, seed):  # deliberately no super().__init__: no state variable
        self.seed = seed

    def next(self, ordered=True):
        return self.seed


def as_seed(seed):
    """The one seed normaliser: None, an int (-> `SeedSequence`), a `SeedGenerator`, or a seed tensor of shape (2,).

    Args:
        seed: None, an int, a `keras.random.SeedGenerator`, or a seed tensor (as a traced train step passes it).

    Returns:
        None or a `keras.random.SeedGenerator` (a seed tensor becomes one whose every draw uses it).

    Raises:
        TypeError: for a bool, a float, a string or any other non-seed.

    Example:

    ```python
    from keras_wtrain._core.rng import as_seed

    as_seed(0).next()  # the seed tensor [0, 0]
    ```
    """
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    if isinstance(seed, int) and not isinstance(seed, bool):
        return SeedSequence(seed)
    if not isinstance(seed, (bool, float, str)) and tuple(getattr(seed, "shape", ())) == (2,):
        return _FixedSeed(seed)
    raise TypeError(
        f"argument `seed` must be an int, a keras.random.SeedGenerator or None; received {seed!r} "
        f"of type {type(seed).__name__}."
    )


def _tf_seed(seed):
    """A TensorFlow stateless seed (shape (2,), int32 or int64) from a seed argument."""
    import tensorflow as tf

    if isinstance(seed, int) and not isinstance(seed, bool):
        seed = SeedSequence(seed)
    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    return seed


def _use_tf(seed):
    return keras.backend.backend() == "tensorflow" and seed is not None


def uniform(shape, minval=0.0, maxval=1.0, seed=None, dtype="float32"):
    """`keras.random.uniform`, with Philox chosen explicitly on TensorFlow.

    Args:
        shape: the output shape.
        minval: lower bound (inclusive).
        maxval: upper bound (exclusive).
        seed: None, an int or a `keras.random.SeedGenerator`.
        dtype: float dtype of the result.

    Returns:
        A tensor of `shape`.

    Example:

    ```python
    from keras_wtrain._core.rng import uniform

    u = uniform((3,), seed=0)
    ```
    """
    seed = as_seed(seed)
    if _use_tf(seed):
        import tensorflow as tf

        return tf.random.stateless_uniform(
            shape, _tf_seed(seed), minval=minval, maxval=maxval, dtype=dtype, alg="philox"
        )
    return keras.random.uniform(shape, minval=minval, maxval=maxval, seed=seed, dtype=dtype)


def normal(shape, seed=None, dtype="float32"):
    """`keras.random.normal` (mean 0, stddev 1), with Philox chosen explicitly on TensorFlow.

    Args:
        shape: the output shape.
        seed: None, an int or a `keras.random.SeedGenerator`.
        dtype: float dtype of the result.

    Returns:
        A tensor of `shape`.

    Example:

    ```python
    from keras_wtrain._core.rng import normal

    z = normal((3,), seed=0)
    ```
    """
    seed = as_seed(seed)
    if _use_tf(seed):
        import tensorflow as tf

        return tf.random.stateless_normal(shape, _tf_seed(seed), dtype=dtype, alg="philox")
    return keras.random.normal(shape, seed=seed, dtype=dtype)


def random_bits(shape, seed=None):
    """Uniformly random 32-bit words, as a `uint32` tensor.

    Each word holds four independent 8-bit uniforms (`(bits >> 8k) & 255`),
    which is how gradient dropout draws four masks' worth of randomness per
    Philox output.

    Args:
        shape: the output shape.
        seed: None, an int or a `keras.random.SeedGenerator`.

    Returns:
        A tensor of `shape`.

    Example:

    ```python
    from keras_wtrain._core.rng import random_bits

    bits = random_bits((4,), seed=0)
    ```
    """
    seed = as_seed(seed)
    if keras.backend.backend() == "jax":  # the only supported backend besides TensorFlow (keras_wtrain._core.backends)
        import jax

        return jax.random.bits(jax_draw_seed(seed), tuple(shape), dtype="uint32")
    if seed is not None:
        import tensorflow as tf

        return tf.random.stateless_uniform(
            shape, _tf_seed(seed), minval=None, maxval=None, dtype=tf.uint32, alg="philox"
        )
    # TensorFlow without a seed: Keras' global seed generator, 32 bits from two int draws.
    bits = keras.random.randint(shape, 0, 2**31, dtype="int64") * 2 + keras.random.randint(shape, 0, 2, dtype="int64")
    return ops.cast(bits, "uint32")
