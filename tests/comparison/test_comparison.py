"""keras_wtrain.comparison.compare in Python: the user's model and data, the old call style, the measurements."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_wtrain import diagnostics
from keras_wtrain.comparison import InputError
from keras_wtrain.comparison import NotConvergedWarning
from keras_wtrain.comparison import as_splits
from keras_wtrain.comparison import compare
from keras_wtrain.comparison import prepare
from keras_wtrain.comparison.datasets import Splits
from keras_wtrain.comparison.mechanisms import flatness
from keras_wtrain.comparison.mechanisms import shadow_mechanism
from keras_wtrain.layers import ShadowWeights
from keras_wtrain.layers import WeightNormalization
from keras_wtrain.weight_normalization.wrapper import fold_weight_normalization


def _features(n=240, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 12)).astype("float32") + 1.5 * np.eye(classes, 12, dtype="float32")[y]
    return x, y


def build_mlp():
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4)(hidden))


# ----------------------------------------------------------------------------- data in every form


def test_arrays_are_split_deterministically_and_class_stratified():
    x, y = _features()
    first, second = as_splits((x, y)), as_splits((x, y))
    np.testing.assert_array_equal(first.x_test, second.x_test)
    assert (len(first.y_train), len(first.y_val), len(first.y_test)) == (168, 24, 48)
    for part in (first.y_train, first.y_val, first.y_test):
        counts = np.bincount(part, minlength=4)
        assert counts.max() - counts.min() == 0  # 60 examples per class: 42 / 6 / 12
    rows = {row.tobytes() for part in (first.x_train, first.x_val, first.x_test) for row in part}
    assert len(rows) == len(x)  # a partition: every example once
    assert first.num_classes == 4 and first.name == "user data"
    small = as_splits((x, y), train_size=40)
    assert len(small.y_train) == 40 and set(np.bincount(small.y_train)) == {10}


def test_a_dataset_and_one_hot_targets_are_read_like_arrays():
    x, y = _features()
    from_dataset = as_splits(tf.data.Dataset.from_tensor_slices((x, y)).batch(32))
    from_arrays = as_splits((x, y))
    np.testing.assert_array_equal(from_dataset.x_train, from_arrays.x_train)
    one_hot = as_splits((x, np.eye(4, dtype="float32")[y]))
    assert one_hot.num_classes == 4 and one_hot.y_train.shape == (168, 4)
    np.testing.assert_array_equal(one_hot.y_train.argmax(axis=1), from_arrays.y_train)


def test_splits_are_used_as_given():
    x, y = _features()
    splits = Splits(x[:100], y[:100], x[100:150], y[100:150], x[150:], y[150:], 4, "mine")
    assert as_splits(splits) is splits


@pytest.mark.parametrize(
    "data, fragment",
    [
        ((np.zeros((50, 3)), np.linspace(0, 1, 50)), "must be class labels"),
        (np.zeros((50, 3)), "must hold targets"),
        ((np.zeros((8, 3)), np.arange(8) % 2), "at least 10"),
        ("imagenet", "argument `dataset` must be one of"),
    ],
)
def test_data_that_cannot_be_compared(data, fragment):
    with pytest.raises(InputError) as error:
        prepare("mlp", data)
    assert fragment in str(error.value)


# ----------------------------------------------------------------------------- the user's model


def test_prepare_checks_the_model_against_the_data():
    x, y = _features()
    with pytest.raises(InputError, match=r"<lambda>\(\) outputs 3 values per example, but the data has 4 classes"):
        prepare(lambda: keras.Sequential([keras.Input((12,)), keras.layers.Dense(3)]), (x, y))
    with pytest.raises(InputError, match=r"must return a keras.Model; it returned dict"):
        prepare(lambda: {}, (x, y))
    with pytest.raises(InputError, match="model cnn: calling it on the training inputs failed"):
        prepare("cnn", (x, y))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.out = keras.layers.Dense(4)

        def call(self, inputs):
            return self.out(inputs)

    prepare(Subclassed, (x, y))  # fine without a wrapping technique
    with pytest.raises(InputError, match="needs a functional or Sequential model"):
        prepare(Subclassed, (x, y), wrapping=True)


def test_default_loss_follows_the_model_output():
    x, y = _features()
    logits = prepare(build_mlp, (x, y)).loss
    assert isinstance(logits, keras.losses.SparseCategoricalCrossentropy) and logits.get_config()["from_logits"]

    def softmax_model():
        return keras.Sequential([keras.Input((12,)), keras.layers.Dense(4, activation="softmax")])

    assert not prepare(softmax_model, (x, y)).loss.get_config()["from_logits"]
    one_hot = prepare(build_mlp, (x, np.eye(4, dtype="float32")[y])).loss
    assert isinstance(one_hot, keras.losses.CategoricalCrossentropy)


def test_compare_on_the_users_model_and_arrays(tmp_path):
    x, y = _features()
    with pytest.warns(NotConvergedWarning, match="did not converge"):
        results = compare(
            build_mlp,
            (x, y),
            techniques=["weightnorm", "sewa", "weightnorm+sewa"],
            seeds=2,
            epochs=2,
            out=tmp_path,
            progress=False,
        )
    assert results["config"]["model"] == "build_mlp" and results["config"]["train_size"] == 168
    assert [r["technique"] for r in results["runs"]][:4] == ["baseline", "weightnorm", "sewa", "weightnorm+sewa"]
    combined = [r for r in results["runs"] if r["technique"] == "weightnorm+sewa"]
    assert all(r["mechanisms"]["wrapped_layers"] == {"weightnorm": 2} for r in combined)
    # paired by seed against the baseline and both parts
    assert set(results["summary"]["weightnorm+sewa"]["accuracy_diff_vs_parts"]) == {"weightnorm", "sewa"}
    assert results["verdicts"]["weightnorm+sewa"]["vs_best_part"]["part"] in ("weightnorm", "sewa")
    # the same seed gives the baseline the same initial weights and batches: identical runs
    again = compare(
        build_mlp,
        (x, y),
        techniques=["baseline"],
        seeds=1,
        epochs=2,
        out=tmp_path / "again",
        progress=False,
        measure=False,
    )
    assert again["runs"][0]["test_accuracy"] == results["runs"][0]["test_accuracy"]
    assert (
        json.loads((tmp_path / "results.json").read_text())["config"]["techniques"] == results["config"]["techniques"]
    )


def test_keyword_call_style(tmp_path):
    results = compare(
        data="digits",
        model="mlp",
        techniques=["baseline"],
        seeds=1,
        epochs=1,
        train_size=200,
        out=tmp_path,
        progress=False,
        measure=False,
    )
    assert results["config"]["dataset"] == "digits" and results["config"]["train_size"] == 200


def test_flatness_is_measured_in_the_plain_parametrisation():
    x, y = _features()
    model = keras.Sequential(
        [keras.Input((12,)), WeightNormalization(keras.layers.Dense(16, activation="tanh")), keras.layers.Dense(4)]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    settings = {"examples": 64, "probes": 4, "sharpness_samples": 3}
    measured = flatness(model, (x, y), loss, settings)
    plain = fold_weight_normalization(model)
    below_last = plain.layers[0]
    expected = diagnostics.hessian_trace(plain, (x[:64], y[:64]), variables=below_last, num_probes=4, seed=0, loss=loss)
    assert measured["hessian_trace"] == pytest.approx(expected["trace"], rel=1e-5)
    assert measured["hessian_trace_layer"] == below_last.name
    sharp = diagnostics.sharpness(plain, (x[:64], y[:64]), radius=0.05, num_samples=3, seed=0, loss=loss)
    assert measured["sharpness"] == pytest.approx(sharp["mean"], rel=1e-5, abs=1e-9)


def test_shadow_mechanism_measures_dom_and_leaves_the_model_in_aom():
    x, y = _features()
    model = keras.Sequential(
        [keras.Input((12,)), ShadowWeights(keras.layers.Dense(4), "dropconnect", seed=0, desire_seed=0)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    aom = model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    dom = shadow_mechanism(model, (x, y))["dom_accuracy"]
    layer = model.layers[0]
    logits = x @ keras.ops.convert_to_numpy(layer.shadow_kernel(0)) + keras.ops.convert_to_numpy(layer.layer.bias)
    assert dom == pytest.approx(np.mean(np.argmax(logits, axis=1) == y))
    assert model.layers[0].mode == "accuracy"
    assert model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] == pytest.approx(aom)
