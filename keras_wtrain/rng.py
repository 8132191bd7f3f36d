"""Random helpers: one home for seeds and the uniform / normal / bit draws of the library.

Every random draw of keras-wtrain (shadow-weight transforms, loss noise,
gradient dropout) goes through this module, so there is one answer to "which
algorithm, which seed":

- `as_seed(seed)`: an int becomes a variable-free `SeedSequence` whose draws
  equal those of a fresh `keras.random.SeedGenerator(seed)`; a
  `SeedGenerator` passes through; None stays None (Keras' global seed).
- `uniform`, `normal` and `random_bits`: `keras.random` on JAX.
  On TensorFlow they call `tf.random.stateless_*` with `alg="philox"`
  explicitly. Keras leaves the algorithm to TensorFlow's auto-selection,
  which under `jit_compile=True` on CPU compiles to a much slower kernel
  (measured on TF 2.21, 2 CPU cores: 140-225 ms instead of 3-9 ms for 400k
  uniforms, about 25-50x; `benchmarks/randomness.py`) and, for a constant
  seed, draws other numbers than eagerly.

Example:

```python
import keras
from keras_wtrain import rng

u = rng.uniform((2, 3), seed=0)                      # same as SeedGenerator(0)'s first draw
z = rng.normal((4,), seed=keras.random.SeedGenerator(1))
bits = rng.random_bits((5,), seed=0)                 # uint32 random bits
```
"""

import keras
from keras import ops

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)

__all__ = ["SeedSequence", "as_seed", "normal", "random_bits", "uniform"]


class SeedSequence(keras.random.SeedGenerator):
    """A stateless stand-in for a `keras.random.SeedGenerator`: the i-th draw uses seed `[base, i]`.

    It creates no variable, so it can be made inside a jit-compiled call; its
    draws equal those of a fresh `SeedGenerator(base)`.

    Args:
        base: the int seed.

    Example:

    ```python
    from keras_wtrain.rng import SeedSequence

    seeds = SeedSequence(3)
    first, second = seeds.next(), seeds.next()   # [3, 0], [3, 1]
    ```
    """

    def __init__(self, base):  # deliberately no super().__init__: no state variable
        self.base = int(base)
        self.count = 0

    def next(self, ordered=True):
        """The next seed tensor `[base, i]` (in Keras' seed dtype)."""
        # `random_seed_dtype` is not public API; it is the dtype SeedGenerator states use.
        from keras.src.backend import random_seed_dtype

        dtype = random_seed_dtype()
        base = self.base
        if dtype == "int32":
            base = (base & 0xFFFFFFFF ^ 0x80000000) - 0x80000000
        value = ops.convert_to_tensor([base, self.count], dtype=dtype)
        self.count += 1
        return value


def as_seed(seed):
    """Normalises a seed argument: None, an int (-> `SeedSequence`) or a `keras.random.SeedGenerator`.

    Raises:
        TypeError: for anything else (a bool included).

    Example:

    ```python
    from keras_wtrain.rng import as_seed

    as_seed(0).next()  # the seed tensor [0, 0]
    ```
    """
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(
            f"argument `seed` must be an int, a keras.random.SeedGenerator or None; received {seed!r} "
            f"of type {type(seed).__name__}."
        )
    return SeedSequence(seed)


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
    from keras_wtrain.rng import uniform

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
    from keras_wtrain.rng import normal

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
    from keras_wtrain.rng import random_bits

    bits = random_bits((4,), seed=0)
    ```
    """
    seed = as_seed(seed)
    if keras.backend.backend() == "jax":  # the only supported backend besides TensorFlow (keras_wtrain.backends)
        import jax

        # Keras' JAX backend turns a SeedGenerator's next() into a PRNG key the same way (`jax_draw_seed`).
        from keras.src.backend.jax.random import jax_draw_seed

        return jax.random.bits(jax_draw_seed(seed), tuple(shape), dtype="uint32")
    if seed is not None:
        import tensorflow as tf

        return tf.random.stateless_uniform(
            shape, _tf_seed(seed), minval=None, maxval=None, dtype=tf.uint32, alg="philox"
        )
    # TensorFlow without a seed: Keras' global seed generator, 32 bits from two int draws.
    bits = keras.random.randint(shape, 0, 2**31, dtype="int64") * 2 + keras.random.randint(shape, 0, 2, dtype="int64")
    return ops.cast(bits, "uint32")
