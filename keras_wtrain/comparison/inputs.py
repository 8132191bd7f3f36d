"""The model and the data of a comparison, checked before any training (`InputError` names what is wrong)."""

import numpy as np

from keras_wtrain._core import data_adapters
from keras_wtrain.comparison.datasets import Splits
from keras_wtrain.comparison.settings import MODEL_KINDS

__all__ = ["InputError", "Inputs", "as_splits", "prepare"]

# Fractions of user data given as one `(x, y)` set: the embedded datasets' split.
SPLIT = {"train": 0.7, "validation": 0.1, "test": 0.2}


class InputError(ValueError):
    """A model or data that `compare` cannot use, found before any training.

    Example:

    ```python
    from keras_wtrain.comparison import InputError

    assert issubclass(InputError, ValueError)
    ```
    """


def _labels(y, name):
    """Integer class labels of targets `y` (ints, or one-hot rows), or an `InputError`."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1 and np.issubdtype(y.dtype, np.number):
        return np.argmax(y, axis=1), y.shape[1]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1 and y.size and np.issubdtype(y.dtype, np.number) and np.all(y == np.round(y)) and y.min() >= 0:
        return y.astype(np.int64), int(y.max()) + 1
    raise InputError(
        f"{name}: compare measures classification accuracy, so the targets must be class labels (non-negative ints) "
        f"or one-hot rows; received targets of shape {y.shape} and dtype {y.dtype}."
    )


def _stratified(labels, fractions, seed):
    """Deterministic class-stratified split of `range(len(labels))` into `len(fractions)` index arrays."""
    from keras_wtrain.comparison.datasets import _stratified_split  # the embedded datasets' split

    return _stratified_split(labels, list(fractions), seed)


def _take(x, idx):
    return data_adapters.take(x, idx)


def as_splits(data, name="data", train_size=None, seed=0):
    """Train/validation/test splits of `data`, deterministic for a given `seed`.

    Args:
        data: a `Splits` (used as it is), `(x, y)` arrays or a `tf.data.Dataset` / iterable of `(x, y)` batches
            (read to the end, split class-stratified 70 / 10 / 20 %).
        name: how to call `data` in error messages.
        train_size: keep this many (class-stratified) training examples; None keeps all.
        seed: seed of the split.

    Returns:
        A `Splits`.

    Raises:
        InputError: for data without targets, targets that are not class labels, or too few examples.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.comparison import as_splits

    x, y = np.random.rand(200, 6).astype("float32"), np.arange(200) % 4
    splits = as_splits((x, y))
    print(len(splits.x_train), len(splits.x_val), len(splits.x_test), splits.num_classes)  # 140 20 40 4
    ```
    """
    if isinstance(data, Splits):
        splits = data
        _labels(splits.y_train, name)
    else:
        try:
            x, y = data_adapters.collect(data, require_targets=True, name=name)
        except (TypeError, ValueError) as error:
            raise InputError(str(error)) from None
        labels, num_classes = _labels(y, name)
        if len(labels) < 10 or np.min(np.bincount(labels)[np.unique(labels)]) < 3:
            raise InputError(
                f"{name}: every class needs at least 3 examples (one per split) and the data at least 10; received "
                f"{len(labels)} examples, class counts {np.bincount(labels).tolist()}."
            )
        train, val, test = _stratified(labels, SPLIT.values(), seed)
        splits = Splits(
            _take(x, train), y[train], _take(x, val), y[val], _take(x, test), y[test], num_classes, "user data"
        )
    if train_size is not None and train_size < len(splits.y_train):
        labels, _ = _labels(splits.y_train, name)
        keep, _ = _stratified(labels, [train_size / len(labels), 1.0 - train_size / len(labels)], seed + 1)
        splits = splits._replace(x_train=_take(splits.x_train, keep), y_train=splits.y_train[keep])
    return splits


def _describe(obj):
    return type(obj).__name__


class Inputs:
    """The resolved model factory, data splits and loss of a comparison (see `prepare`).

    Attributes:
        splits: the `Splits`.
        model_name: a built-in kind or the user's function name.
        make_model: `f(wrap) -> uncompiled keras.Model` (`wrap` a layer wrapper or None).
        loss: the loss compiled into every run.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.comparison import prepare

    x, y = np.random.rand(100, 8, 8, 1).astype("float32"), np.arange(100) % 5
    inputs = prepare("mlp", (x, y))
    print(inputs.model_name, inputs.splits.num_classes, type(inputs.make_model(None)).__name__)
    ```
    """

    def __init__(self, splits, model_name, make_model, loss):
        self.splits, self.model_name, self.make_model, self.loss = splits, model_name, make_model, loss


def _user_factory(build_model):
    import keras

    from keras_wtrain._core._keras_private import Functional
    from keras_wtrain._core.model_wrapping import wrap_layers

    name = getattr(build_model, "__name__", type(build_model).__name__)

    def make_model(wrap):
        model = build_model()
        if not isinstance(model, keras.Model):
            raise InputError(f"model: {name}() must return a keras.Model; it returned {_describe(model)}.")
        if wrap is None:
            return model
        if not isinstance(model, (keras.Sequential, Functional)):
            raise TypeError(
                "a wrapping technique (weightnorm, shadow) rebuilds the model layer by layer, which needs a "
                f"functional or Sequential model; {name}() returned a subclassed {type(model).__name__}."
            )
        # Fresh weights, as every other run of the comparison starts from.
        return wrap_layers(model, wrap, copy_weights=False)

    return name, make_model


def _default_loss(model, x, labels_are_one_hot):
    """Cross-entropy on logits, or on probabilities when the model's outputs on `x` are rows summing to 1."""
    import keras

    outputs = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), dtype=np.float64)
    probabilities = bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3))
    kind = keras.losses.CategoricalCrossentropy if labels_are_one_hot else keras.losses.SparseCategoricalCrossentropy
    return kind(from_logits=not probabilities)


def prepare(model, data, train_size=None, loss=None, wrapping=False, seed=0):
    """Resolves and checks a comparison's model and data before any training.

    The model is built and called on two training examples (one output per class is required) and, with
    `wrapping`, rebuilt once with wrappers, so a bad model fails here rather than after other runs.

    Args:
        model: a built-in kind (`"cnn"`, `"mlp"`, `"resnet-small"`) or a function `build_model()`.
        data: a dataset name, a `Splits`, `(x, y)` arrays or a `tf.data.Dataset` (see `as_splits`).
        train_size: training examples kept (class-stratified); None keeps all.
        loss: the loss (default: cross-entropy, on logits unless the model outputs probabilities).
        wrapping: also check that the model can be rebuilt with wrapped layers.
        seed: seed of the data split.

    Returns:
        An `Inputs`.

    Raises:
        InputError: for a model or data that cannot be compared (the message says why).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.comparison import InputError, prepare

    x, y = np.random.rand(100, 6).astype("float32"), np.arange(100) % 5
    try:
        prepare(lambda: keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)]), (x, y))
    except InputError as error:
        print(error)  # model: <lambda>() outputs 3 values per example, but the data has 5 classes.
    ```
    """
    if isinstance(data, str):
        from keras_wtrain.comparison.datasets import load_dataset

        try:
            splits = load_dataset(data, train_size=train_size)
        except ValueError as error:
            raise InputError(str(error)) from None
    else:
        splits = as_splits(data, train_size=train_size, seed=seed)
    if isinstance(model, str):
        if model not in MODEL_KINDS:
            raise InputError(
                f"argument `model` must be one of {', '.join(MODEL_KINDS)} or a function; received {model!r}."
            )
        from keras_wtrain.comparison.models import build_model

        name = model
        shape, classes = tuple(splits.x_train.shape[1:]), splits.num_classes

        def make_model(wrap):
            return build_model(name, shape, classes, wrap=wrap)

    elif callable(model):
        name, make_model = _user_factory(model)
    else:
        raise InputError(f"argument `model` must be a model kind or a function; received {_describe(model)}.")
    x = data_adapters.take(splits.x_train, slice(0, 2))
    try:
        built = make_model(None)
        outputs = built(x, training=False)
    except InputError:
        raise
    except Exception as error:  # the user's model on the data: any failure is a mismatch to report in one line
        raise InputError(
            f"model {name}: calling it on the training inputs failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})."
        ) from None
    width = outputs.shape[-1] if len(outputs.shape) == 2 else None
    if width != splits.num_classes:
        raise InputError(
            f"model: {name}() outputs {width if width is not None else tuple(outputs.shape[1:])} values per example, "
            f"but the data has {splits.num_classes} classes."
        )
    if wrapping:
        try:
            make_model(lambda layer: layer)
        except TypeError as error:
            raise InputError(f"model: {error}") from None
    one_hot = np.asarray(splits.y_train).ndim == 2 and np.asarray(splits.y_train).shape[1] > 1
    loss = loss if loss is not None else _default_loss(built, data_adapters.take(splits.x_train, slice(0, 8)), one_hot)
    return Inputs(splits, name, make_model, loss)
