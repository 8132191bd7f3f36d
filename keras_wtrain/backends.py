"""The Keras backends keras-wtrain supports, and the import-time check that refuses the others.

keras-wtrain runs on the TensorFlow backend (CPU, GPU, TPU, `tf.distribute`)
and on JAX (`keras.distribution`). PyTorch and NumPy are not supported: the
selection objective, the flatness diagnostics and the Philox-based random
bits have TensorFlow and JAX implementations only, and no PyTorch path is
tested. Rather than fail deep inside a training step, importing any module
that needs a backend raises an `ImportError` that names the backend and what
to do.

Example:

```python
from keras_wtrain.backends import SUPPORTED_BACKENDS, check_backend

assert check_backend("jax") == "jax"
try:
    check_backend("torch")
except ImportError as error:
    print(error)  # keras-wtrain supports the Keras backends 'tensorflow', 'jax'; ...
```
"""

__all__ = ["SUPPORTED_BACKENDS", "check_backend"]

SUPPORTED_BACKENDS = ("tensorflow", "jax")


def check_backend(backend=None):
    """Returns `backend` (default: Keras' current backend) if keras-wtrain supports it, else raises.

    Args:
        backend: a backend name, or None for `keras.backend.backend()`.

    Returns:
        The backend name.

    Raises:
        ImportError: for a backend other than `"tensorflow"` and `"jax"`.

    Example:

    ```python
    from keras_wtrain.backends import check_backend

    print(check_backend())  # "tensorflow" or "jax"
    ```
    """
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise ImportError(
            f"keras-wtrain supports the Keras backends {', '.join(repr(b) for b in SUPPORTED_BACKENDS)}; "
            f"the current backend is {backend!r}. Set KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax before "
            "importing Keras (PyTorch is not supported: no PyTorch code path is tested)."
        )
    return backend
