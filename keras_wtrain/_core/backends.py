"""The Keras backends keras-wtrain supports (TensorFlow, JAX) and the import-time check that refuses the others.

PyTorch and NumPy are refused: the selection objective, the diagnostics and the Philox random bits exist for
TensorFlow and JAX only, so importing a module that needs a backend raises an `ImportError` that says what to do.
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
    from keras_wtrain._core.backends import check_backend

    assert check_backend("jax") == "jax"
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
