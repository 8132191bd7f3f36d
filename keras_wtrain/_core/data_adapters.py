"""Data adapters: the one place that reads the data a user hands to a callback or utility.

Accepted forms: `(x, y[, sample_weight])` arrays; `x` alone (an array, tensor, or dict / list of arrays); a
`keras_wtrain.comparison.datasets.Splits` (its training split); an iterable of batches (`tf.data.Dataset`,
`keras.utils.PyDataset`, a generator, a Python list). A Python *list* is always a list of batches: pass
multi-input `x` as a dict or inside `(x, y)`.
"""

import numpy as np

__all__ = [
    "check_finite",
    "check_fits_model",
    "check_not_empty",
    "collect",
    "first_batch",
    "in_memory",
    "is_array_like",
    "iter_x_batches",
    "num_examples",
    "split_batch",
    "take",
]


def is_array_like(x):
    """Whether `x` is an array-like of model inputs: an array/tensor, or a dict or list of them.

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import is_array_like

    assert is_array_like({"a": np.zeros(3)}) and not is_array_like(iter([]))
    ```
    """
    if isinstance(x, dict):
        return bool(x) and all(is_array_like(v) for v in x.values())
    if isinstance(x, list):
        return bool(x) and all(_is_tensor(v) for v in x)
    return _is_tensor(x)


def _is_tensor(x):
    return hasattr(x, "shape") and hasattr(x, "__getitem__") and hasattr(x, "dtype")


def _is_splits(data):
    return hasattr(data, "x_train") and hasattr(data, "y_train")


def split_batch(batch):
    """`(x, y_or_None)` of one batch or of in-memory data: `(x, y[, w])` or `x`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import split_batch

    x, y = split_batch((np.zeros((2, 3)), np.ones(2)))
    ```
    """
    if isinstance(batch, tuple):
        if not batch:
            raise ValueError("received an empty tuple where a batch `(x, y[, sample_weight])` was expected.")
        return batch[0], batch[1] if len(batch) > 1 else None
    return batch, None


def num_examples(x):
    """The number of examples (first dimension) of array-like inputs `x` (nested structures too).

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import num_examples

    assert num_examples({"a": np.zeros((5, 2))}) == 5
    ```
    """
    import keras

    leaves = keras.tree.flatten(x)
    if not leaves:
        raise ValueError("received inputs with no arrays.")
    return int(leaves[0].shape[0])


def _prefix(owner):
    return f"{owner}: " if owner else ""


def _is_inexact(dtype):
    """Whether `dtype` holds floating-point (or complex) values, bfloat16 and other ml_dtypes floats included."""
    return np.issubdtype(dtype, np.inexact) or "float" in dtype.name


def check_finite(x, name="data", owner=None):
    """Checks that the floating-point arrays of `x` hold no NaN or infinity; returns `x` unchanged.

    Non-float arrays and `None` leaves are skipped.

    Args:
        x: an array or tensor, or a nested structure of them.
        name: the argument name used in the error message.
        owner: optional class or function name prefixed to the message.

    Returns:
        `x`.

    Raises:
        ValueError: if a floating-point leaf of `x` holds NaN or an infinite value.

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import check_finite

    x = np.ones((4, 2), "float32")
    x[0, 0] = np.nan
    try:
        check_finite((x, np.arange(4)), name="data")
    except ValueError as error:
        print(error)  # argument `data` holds NaN or infinite values (at [0]); it must be finite.
    ```
    """
    import keras

    leaves = keras.tree.flatten_with_path(x)
    for path, leaf in leaves:
        if leaf is None:
            continue
        values = leaf if isinstance(leaf, np.ndarray) else np.asarray(keras.ops.convert_to_numpy(leaf))
        if _is_inexact(values.dtype) and not np.isfinite(values).all():
            where = f" (at {''.join(f'[{key!r}]' for key in path)})" if len(leaves) > 1 else ""
            raise ValueError(
                f"{_prefix(owner)}argument `{name}` holds NaN or infinite values{where}; it must be finite."
            )
    return x


def check_not_empty(x, name="data", owner=None):
    """Checks that array-like inputs `x` (nested structures too) hold at least one example; returns `x`.

    Args:
        x: an array or tensor, or a nested structure of them.
        name: the argument name used in the error message.
        owner: optional class or function name prefixed to the message.

    Returns:
        `x`.

    Raises:
        ValueError: if `x` holds no arrays or its first dimension is 0.

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import check_not_empty

    try:
        check_not_empty(np.zeros((0, 2)), name="batch")
    except ValueError as error:
        print(error)  # argument `batch` is empty: it holds no examples.
    ```
    """
    import keras

    leaves = [leaf for leaf in keras.tree.flatten(x) if leaf is not None]
    shape = tuple(getattr(leaves[0], "shape", ())) if leaves else ()
    if not shape or shape[0] == 0:
        raise ValueError(f"{_prefix(owner)}argument `{name}` is empty: it holds no examples.")
    return x


def take(x, index):
    """Rows `index` (a slice or an index array) of array-like inputs `x`, nested structures too.

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import take

    take({"a": np.arange(5)}, slice(0, 2))  # {'a': array([0, 1])}
    ```
    """
    import keras

    return keras.tree.map_structure(lambda a: a[index], x)


def _to_numpy(x):
    import keras

    return keras.tree.map_structure(lambda a: np.asarray(keras.ops.convert_to_numpy(a)), x)


def in_memory(data):
    """`(x, y_or_None)` if `data` is held in memory (arrays, a tuple of arrays, a `Splits`), else None.

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import in_memory

    x, y = in_memory((np.zeros((4, 2)), np.ones(4)))
    assert in_memory([np.zeros((2, 2))]) is None      # a list is a list of batches
    ```
    """
    if _is_splits(data):
        return data.x_train, data.y_train
    if isinstance(data, tuple) and data and is_array_like(data[0]):
        return split_batch(data)
    if is_array_like(data) and not isinstance(data, list):
        return data, None
    return None


def collect(data, max_examples=None, require_targets=False, name="data"):
    """Reads up to `max_examples` examples of `data` into numpy `(x, y)` (y None when absent).

    Args:
        data: any of the forms in the module docstring.
        max_examples: cap on the number of examples (None: all; an iterable is read to its end).
        require_targets: raise when `data` has no targets.
        name: the argument name used in error messages.

    Returns:
        `(x, y)` numpy arrays (`x` may be a dict / list of them; `y` None without targets).

    Raises:
        ValueError: if `data` is empty, or has no targets and `require_targets`.
        TypeError: if `data` is none of the accepted forms.

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import collect

    batches = [(np.ones((2, 3)), np.zeros(2)), (np.ones((2, 3)), np.ones(2))]
    x, y = collect(batches)
    assert x.shape == (4, 3) and y.tolist() == [0, 0, 1, 1]
    ```
    """
    import keras

    if data is None:
        raise ValueError(f"argument `{name}` is required; received None.")
    arrays = in_memory(data)
    if arrays is not None:
        x, y = arrays
        n = num_examples(x)
        stop = n if max_examples is None else min(n, max_examples)
        x = take(_to_numpy(x), slice(0, stop))
        y = None if y is None else _to_numpy(y)[:stop]
    else:
        if not hasattr(data, "__iter__"):
            raise TypeError(
                f"argument `{name}` must be arrays, an `(x, y)` tuple, a keras_wtrain.comparison.datasets split, "
                "a tf.data.Dataset "
                f"or an iterable of batches; received {type(data).__name__}."
            )
        xs, ys, count = [], [], 0
        for batch in data:
            bx, by = split_batch(batch)
            xs.append(_to_numpy(bx))
            ys.append(None if by is None else _to_numpy(by))
            count += num_examples(xs[-1])
            if max_examples is not None and count >= max_examples:
                break
        if not xs:
            raise ValueError(f"argument `{name}` is empty: it yielded no batches.")
        x = keras.tree.map_structure(lambda *parts: np.concatenate(parts), *xs)
        y = None if any(v is None for v in ys) else np.concatenate(ys)
        if max_examples is not None:
            x = take(x, slice(0, max_examples))
            y = None if y is None else y[:max_examples]
    check_not_empty(x, name)
    if y is not None and num_examples(y) != num_examples(x):
        raise ValueError(
            f"argument `{name}`: its inputs have {num_examples(x)} examples but its targets have {num_examples(y)}; "
            "pass `(x, y)` with one target per example."
        )
    if require_targets and y is None:
        raise ValueError(f"argument `{name}` must hold targets: `(x, y)` arrays or batches; received inputs only.")
    return x, y


def check_fits_model(model, x, name="data", owner=None):
    """Raises a `ValueError` naming `name` if `model` cannot be called on the inputs `x` (checked on 2 examples).

    Called at `fit` start by callbacks holding their own data, so inputs of the wrong shape fail there with the
    argument's name instead of in a traced function later.

    Args:
        model: a Keras model.
        x: numpy inputs (arrays, a dict or list of them), as `collect` returns them.
        name: the argument name used in the message.
        owner: the class or function named first in the message.

    Raises:
        ValueError: if calling `model` on the first examples of `x` fails.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain._core.data_adapters import check_fits_model

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    check_fits_model(model, np.zeros((4, 3), "float32"))  # fits
    ```
    """
    import keras

    from keras_wtrain._core import layer_kinds

    head = take(x, slice(0, 2))
    kwargs = {"training": False} if layer_kinds.call_accepts(model, "training") else {}
    try:
        model(keras.tree.map_structure(keras.ops.convert_to_tensor, head), **kwargs)
    except Exception as error:  # any backend error: the inputs do not fit the model
        shapes = keras.tree.map_structure(lambda a: tuple(a.shape[1:]), head)
        try:  # functional and Sequential models know their input shapes; a subclassed one may not
            expected = f"; the model takes inputs of shape {[tuple(i.shape[1:]) for i in model.inputs]}"
        except (AttributeError, TypeError, ValueError):
            expected = ""
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{_prefix(owner)}argument `{name}` does not fit the model: its examples have shape {shapes}{expected} "
            f"(calling the model on them raised {type(error).__name__}: {message})."
        ) from None


def first_batch(data, batch_size=32):
    """The model inputs `x` of the first batch of `data` (at most `batch_size` rows for in-memory data).

    Args:
        data: any of the forms in the module docstring.
        batch_size: batch size used when `data` holds arrays.

    Returns:
        The inputs of one batch.

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import first_batch

    x = first_batch((np.zeros((100, 4)), np.zeros(100)), batch_size=8)
    print(x.shape)  # (8, 4)
    ```
    """
    arrays = in_memory(data)
    if arrays is not None:
        return take(arrays[0], slice(0, batch_size))
    for batch in data:
        return split_batch(batch)[0]
    raise ValueError("argument `data` is empty: it yielded no batches.")


def iter_x_batches(data, batch_size=128, max_examples=None):
    """Yields the inputs `x` of `data` batch by batch, at most `max_examples` examples in all.

    Args:
        data: any of the forms in the module docstring.
        batch_size: batch size used when `data` holds arrays.
        max_examples: optional cap on the number of examples.

    Yields:
        The inputs of each batch.

    Example:

    ```python
    import numpy as np
    from keras_wtrain._core.data_adapters import iter_x_batches

    batches = [np.zeros((3, 2)), np.ones((3, 2))]   # a list of x batches
    assert len(list(iter_x_batches(batches))) == 2
    ```
    """
    arrays = in_memory(data)
    seen = 0
    if arrays is not None:
        x = arrays[0]
        n = num_examples(x)
        stop = n if max_examples is None else min(n, max_examples)
        for start in range(0, stop, batch_size):
            yield take(x, slice(start, min(start + batch_size, stop)))
        return
    for batch in data:
        x = split_batch(batch)[0]
        if max_examples is not None and seen + num_examples(x) > max_examples:
            x = take(x, slice(0, max_examples - seen))
        if num_examples(x) == 0:
            return
        yield x
        seen += num_examples(x)
        if max_examples is not None and seen >= max_examples:
            return
