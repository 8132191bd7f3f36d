"""The one home for user data: every accepted form gives the same arrays."""

import numpy as np
import pytest

from keras_wtrain._core import data_adapters as da


def _xy(n=10):
    x = np.arange(n * 3, dtype="float32").reshape(n, 3)
    return x, np.arange(n) % 2


def test_collect_arrays_tuple_splits_and_caps():
    x, y = _xy()
    got_x, got_y = da.collect((x, y), max_examples=4)
    np.testing.assert_array_equal(got_x, x[:4])
    np.testing.assert_array_equal(got_y, y[:4])
    got_x, got_y = da.collect(x)
    np.testing.assert_array_equal(got_x, x)
    assert got_y is None
    from keras_wtrain.comparison.datasets import load_digits

    data = load_digits()
    got_x, got_y = da.collect(data, max_examples=7)
    np.testing.assert_array_equal(got_x, data.x_train[:7])
    np.testing.assert_array_equal(got_y, data.y_train[:7])


@pytest.mark.tensorflow_only
def test_collect_tf_dataset_with_dict_inputs_and_sample_weights():
    import tensorflow as tf

    x, y = _xy()
    ds = tf.data.Dataset.from_tensor_slices(({"a": x, "b": x[:, :1]}, y, np.ones(10))).batch(3)
    got_x, got_y = da.collect(ds, max_examples=7)
    np.testing.assert_array_equal(got_x["a"], x[:7])
    np.testing.assert_array_equal(got_x["b"], x[:7, :1])
    np.testing.assert_array_equal(got_y, y[:7])
    np.testing.assert_array_equal(da.first_batch(ds)["a"], x[:3])


def test_a_list_is_a_list_of_batches():
    x, _ = _xy()
    batches = [x[:4], x[4:8], x[8:]]
    assert [len(b) for b in da.iter_x_batches(batches)] == [4, 4, 2]
    got_x, got_y = da.collect(batches)
    np.testing.assert_array_equal(got_x, x)
    assert got_y is None
    assert [len(b) for b in da.iter_x_batches(batches, max_examples=6)] == [4, 2]


def test_iter_x_batches_of_arrays_and_tuples():
    x, y = _xy()
    assert [len(b) for b in da.iter_x_batches((x, y), batch_size=4)] == [4, 4, 2]
    assert [len(b) for b in da.iter_x_batches(x, batch_size=4, max_examples=5)] == [4, 1]
    out = np.concatenate(list(da.iter_x_batches(((a, b) for a, b in zip(np.split(x, 5), np.split(y, 5))))))
    np.testing.assert_array_equal(out, x)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="`selection_data` is empty"):
        da.collect([], name="selection_data")
    with pytest.raises(ValueError, match="`data` is required"):
        da.collect(None)
    with pytest.raises(ValueError, match="must hold targets"):
        da.collect(np.zeros((3, 2)), require_targets=True)
    with pytest.raises(TypeError, match="`data` must be arrays"):
        da.collect(3.5)
    with pytest.raises(ValueError, match="no examples"):
        da.collect(np.zeros((0, 2)))
