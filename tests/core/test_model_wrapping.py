"""`wrap_layers`: an existing model's layers wrapped in a copy of the model, from its weights or fresh ones."""

import keras
import numpy as np
import pytest

import keras_wtrain
from keras_wtrain._core._keras_private import sublayers
from keras_wtrain.layers import ShadowWeights
from keras_wtrain.layers import WeightNormalization
from keras_wtrain.layers import wrap_layers
from keras_wtrain.shadow_weights.modes import shadow_weight_layers
from keras_wtrain.weight_normalization.wrapper import weight_normalization_layers

WRAPPERS = [WeightNormalization, ShadowWeights]


def _images(n=4, size=8):
    return np.random.default_rng(0).random((n, size, size, 3)).astype("float32")


def _functional():
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    hidden = keras.layers.DepthwiseConv2D(3, padding="same")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden), name="functional")


def _sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ],
        name="sequential",
    )


def _nested():
    backbone = _functional()
    inputs = keras.Input((8, 8, 3))
    features = backbone(inputs)
    head = keras.Sequential([keras.layers.Dense(5, activation="relu"), keras.layers.Dense(2)], name="head")
    return keras.Model(inputs, head(features), name="classifier")


def _assert_same_predictions(a, b, x, atol=1e-5):
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), rtol=1e-5, atol=atol)


def _randomise_batchnorm(model):
    # Non-trivial moving statistics, so a copy that lost them would compute something else.
    for layer in sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.random.default_rng(1).normal(size=layer.moving_mean.shape))
            layer.moving_variance.assign(np.random.default_rng(2).uniform(0.5, 2.0, size=layer.moving_variance.shape))


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
@pytest.mark.parametrize("build", [_functional, _sequential, _nested], ids=lambda f: f.__name__.strip("_"))
def test_copied_weights_compute_what_the_original_computes(build, wrapper):
    model = build()
    _randomise_batchnorm(model)
    original_weights = [w.copy() for w in model.get_weights()]
    wrapped = wrap_layers(model, wrapper)
    assert type(wrapped) is type(model) and wrapped.name == model.name
    x = _images()
    _assert_same_predictions(wrapped, model, x)
    kernels = {id(v) for v in model.weights}
    assert not any(id(v) in kernels for v in wrapped.weights), "the new model must not share the original's variables"
    for before, after in zip(original_weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    found = weight_normalization_layers(wrapped) if wrapper is WeightNormalization else shadow_weight_layers(wrapped)
    expected = [layer for layer in sublayers(model) if wrapper.supports(layer)]
    assert len(found) == len(expected) > 0


def test_nested_models_are_rebuilt_and_stay_nested():
    model = _nested()
    wrapped = wrap_layers(model, WeightNormalization)
    backbone, head = wrapped.layers[1], wrapped.layers[2]
    assert isinstance(backbone, keras.Model) and backbone is not model.layers[1]
    assert isinstance(head, keras.Sequential)
    assert [type(layer).__name__ for layer in head.layers] == ["WeightNormalization"] * 2
    assert isinstance(backbone.get_layer(index=1), WeightNormalization)


def test_mobilenet_v2_with_depthwise_convolutions():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classifier_activation=None)
    x = _images(2, 32)
    expected = model.predict(x, verbose=0)
    wrapped = wrap_layers(model, WeightNormalization)
    depthwise = [
        layer for layer in weight_normalization_layers(wrapped) if isinstance(layer.layer, keras.layers.DepthwiseConv2D)
    ]
    assert len(depthwise) == 17
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_the_layers_inside_bidirectional_and_time_distributed_are_wrapped():
    inputs = keras.Input((None,), dtype="int32")
    hidden = keras.layers.Embedding(50, 8)(inputs)
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=True))(hidden)
    hidden = keras.layers.TimeDistributed(keras.layers.Dense(4))(hidden)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(hidden))
    model = keras.Model(inputs, outputs)
    wrapped = wrap_layers(model, WeightNormalization)
    bidirectional, time_distributed = wrapped.layers[2], wrapped.layers[3]
    assert isinstance(bidirectional, keras.layers.Bidirectional)
    assert isinstance(bidirectional.forward_layer, WeightNormalization)
    assert isinstance(bidirectional.backward_layer, WeightNormalization) and bidirectional.backward_layer.go_backwards
    assert isinstance(time_distributed.layer, WeightNormalization)
    x = np.random.default_rng(0).integers(0, 50, (3, 7))
    _assert_same_predictions(wrapped, model, x)


def test_a_weight_normalized_model_gets_shadow_weights_over_its_wrappers():
    weight_normalized = wrap_layers(_sequential(), WeightNormalization)
    both = wrap_layers(weight_normalized, ShadowWeights, seed=0)
    assert isinstance(both.layers[0], ShadowWeights) and isinstance(both.layers[0].layer, WeightNormalization)
    _assert_same_predictions(both, weight_normalized, _images())


def test_the_filter_picks_the_layers_and_other_layers_are_copied_unchanged():
    model = _functional()
    is_dense = lambda layer: isinstance(layer, keras.layers.Dense)
    only_dense = wrap_layers(model, WeightNormalization, layer_filter=is_dense)
    kinds = [type(layer).__name__ for layer in only_dense.layers]
    assert kinds == [
        "InputLayer",
        "Conv2D",
        "BatchNormalization",
        "DepthwiseConv2D",
        "GlobalAveragePooling2D",
        "WeightNormalization",
    ]
    by_name = wrap_layers(model, ShadowWeights, layer_filter=lambda layer: layer.name == model.layers[1].name)
    assert [type(layer).__name__ for layer in by_name.layers][1:3] == ["ShadowWeights", "BatchNormalization"]
    with pytest.raises((TypeError, ValueError), match="WeightNormalization cannot wrap layer .* BatchNormalization"):
        wrap_layers(model, WeightNormalization, layer_filter=lambda layer: True)


def test_a_function_wrapper_sees_copies_and_receives_the_keyword_arguments():
    model = _sequential()
    seen = []

    def wrapper(layer, seed):
        seen.append(layer)
        if isinstance(layer, keras.layers.Conv2D):
            return ShadowWeights(layer, seed=seed)
        return layer

    wrapped = wrap_layers(model, wrapper, seed=3)
    assert len(seen) == len(model.layers) and not any(layer in model.layers for layer in seen)
    assert isinstance(wrapped.layers[0], ShadowWeights) and wrapped.layers[0].seed == 3
    _assert_same_predictions(wrapped, model, _images())
    with pytest.raises(TypeError, match=r"argument `wrapper`: .* must return a Keras layer"):
        wrap_layers(model, lambda layer: None)


def test_weight_normalization_data_init_follows_copy_weights():
    model = _sequential()
    copied = weight_normalization_layers(wrap_layers(model, WeightNormalization))
    assert copied and not any(layer.data_init for layer in copied)
    fresh = weight_normalization_layers(wrap_layers(model, WeightNormalization, copy_weights=False))
    assert all(layer.data_init for layer in fresh)
    asked = weight_normalization_layers(wrap_layers(model, WeightNormalization, data_init=True))
    assert all(layer.data_init for layer in asked)


def test_fresh_weights_differ_from_the_original():
    model = _sequential()
    wrapped = wrap_layers(model, WeightNormalization, copy_weights=False)
    x = _images()
    assert not np.allclose(wrapped.predict(x, verbose=0), model.predict(x, verbose=0))


def test_a_sequential_built_without_an_input_and_a_shared_layer():
    sequential = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(2)])
    sequential.build((None, 3))
    x = np.random.default_rng(0).random((2, 3)).astype("float32")
    _assert_same_predictions(wrap_layers(sequential, WeightNormalization), sequential, x)

    shared = keras.layers.Dense(3)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, shared(shared(inputs)))
    wrapped = wrap_layers(model, WeightNormalization)
    assert len(weight_normalization_layers(wrapped)) == 1
    _assert_same_predictions(wrapped, model, x)


def test_bad_arguments_name_the_argument():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(TypeError, match=r"wrap_layers: argument `model`: .* subclassed Subclassed"):
        wrap_layers(Subclassed(), WeightNormalization)
    with pytest.raises(TypeError, match="argument `model` must be a functional or Sequential Keras model"):
        wrap_layers(keras.layers.Dense(3), WeightNormalization)
    model = _sequential()
    with pytest.raises(TypeError, match="argument `wrapper`"):
        wrap_layers(model, "weightnorm")
    with pytest.raises(TypeError, match="argument `layer_filter`"):
        wrap_layers(model, WeightNormalization, layer_filter=["dense"])
    with pytest.raises(TypeError, match="argument `copy_weights`"):
        wrap_layers(model, WeightNormalization, copy_weights="yes")


def test_a_nested_subclassed_model_is_copied_with_a_warning():
    class Block(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    inputs = keras.Input((4,))
    block = Block()
    model = keras.Model(inputs, keras.layers.Dense(2)(block(inputs)))
    with pytest.warns(UserWarning, match="subclassed Block; its layers cannot be replaced"):
        wrapped = wrap_layers(model, WeightNormalization, copy_weights=False)
    assert isinstance(wrapped.layers[2], WeightNormalization)


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
def test_the_wrapped_model_trains_and_round_trips_through_a_keras_file(tmp_path, wrapper):
    model = _functional()
    wrapped = keras_wtrain.wrap_layers(model, wrapper, **({"seed": 0} if wrapper is ShadowWeights else {}))
    wrapped.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = _images(), np.random.default_rng(3).random((4, 3)).astype("float32")
    before = wrapped.predict(x, verbose=0)
    wrapped.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = wrapped.predict(x, verbose=0)
    assert not np.allclose(before, after), "one SGD step must change the outputs"
    path = str(tmp_path / "wrapped.keras")
    wrapped.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[1], wrapper)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), after)
