"""Every technique on the architectures users bring: the Keras examples' models and two `keras.applications`.

Each case builds the model as the Keras example writes it (sizes shrunk for speed), applies one technique as a
user would, trains two steps on random data, saves to `.keras` and reloads (the same predictions), and folds the
wrapper layers back to plain Keras layers where there are any (the same inference outputs).

- convnet: "Simple MNIST convnet" (Sequential, Conv2D + MaxPooling + Dropout + softmax Dense);
- bilstm: "Bidirectional LSTM on IMDB" (Embedding, two `Bidirectional(LSTM)`, sigmoid Dense);
- conv1d: "Timeseries classification from scratch" (three Conv1D + BatchNormalization + ReLU blocks);
- subclassed / subclassed_training: the `keras.Model` subclassing examples, `call(self, x)` and
  `call(self, x, training=None)` (with Dropout);
- resnet50 / mobilenetv2: `keras.applications` at 32x32, `weights=None` (MobileNetV2: depthwise convolutions).
"""

import keras
import numpy as np
import pytest
from keras import layers

import keras_wtrain
from keras_wtrain._core._keras_private import sublayers
from keras_wtrain._core.kernel_reparametrization import fold_layers
from keras_wtrain.callbacks import EMA
from keras_wtrain.callbacks import SWA
from keras_wtrain.callbacks import OptimumShifting
from keras_wtrain.layers import ShadowWeights
from keras_wtrain.layers import WeightNormalization
from keras_wtrain.layers import wrap_layers

BATCH = 4  # two optimizer steps of 4 examples; ResNet50 and MobileNetV2: one step of 2, run eagerly (see BIG)


@keras.saving.register_keras_serializable(package="test_real_architectures")
class SubclassedModel(keras.Model):
    """The `keras.Model` docstring's subclassing example: `call(self, inputs)` without `training`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense1 = layers.Dense(32, activation="relu")
        self.dense2 = layers.Dense(5, activation="softmax")

    def call(self, inputs):
        x = self.dense1(inputs)
        return self.dense2(x)


@keras.saving.register_keras_serializable(package="test_real_architectures")
class SubclassedTrainingModel(keras.Model):
    """The same example with Dropout, whose `call` takes `training`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense1 = layers.Dense(32, activation="relu")
        self.dropout = layers.Dropout(0.5)
        self.dense2 = layers.Dense(5, activation="softmax")

    def call(self, inputs, training=None):
        x = self.dense1(inputs)
        x = self.dropout(x, training=training)
        return self.dense2(x)


def _convnet():
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(8, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(16, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    return model, (28, 28, 1), 10, "sparse_categorical_crossentropy"


def _bilstm():
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = layers.Embedding(200, 16)(inputs)
    x = layers.Bidirectional(layers.LSTM(8, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(8))(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs), "tokens", 2, "binary_crossentropy"


def _conv1d():
    input_layer = keras.Input((32, 1))
    conv1 = layers.Conv1D(filters=16, kernel_size=3, padding="same")(input_layer)
    conv1 = layers.BatchNormalization()(conv1)
    conv1 = layers.ReLU()(conv1)
    conv2 = layers.Conv1D(filters=16, kernel_size=3, padding="same")(conv1)
    conv2 = layers.BatchNormalization()(conv2)
    conv2 = layers.ReLU()(conv2)
    conv3 = layers.Conv1D(filters=16, kernel_size=3, padding="same")(conv2)
    conv3 = layers.BatchNormalization()(conv3)
    conv3 = layers.ReLU()(conv3)
    gap = layers.GlobalAveragePooling1D()(conv3)
    output_layer = layers.Dense(2, activation="softmax")(gap)
    return keras.Model(inputs=input_layer, outputs=output_layer), (32, 1), 2, "sparse_categorical_crossentropy"


def _subclassed():
    return SubclassedModel(), (12,), 5, "sparse_categorical_crossentropy"


def _subclassed_training():
    return SubclassedTrainingModel(), (12,), 5, "sparse_categorical_crossentropy"


def _resnet50():
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=4)
    return model, (32, 32, 3), 4, "sparse_categorical_crossentropy"


def _mobilenetv2():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=4)
    return model, (32, 32, 3), 4, "sparse_categorical_crossentropy"


ARCHITECTURES = {
    "convnet": _convnet,
    "bilstm": _bilstm,
    "conv1d": _conv1d,
    "subclassed": _subclassed,
    "subclassed_training": _subclassed_training,
    "resnet50": _resnet50,
    "mobilenetv2": _mobilenetv2,
}
# Tracing a keras.applications network's train step took minutes on CI-sized CPUs (ResNet50: 2 min, with or without
# a wrapper), so these run eagerly, one step; their averaging and shifting cases skip the `.keras` round trip, which
# the small models cover (the callbacks leave the model's classes as they are). See also LEFT_OUT.
BIG = ("resnet50", "mobilenetv2")
SUBCLASSED = ("subclassed", "subclassed_training")
TECHNIQUES = ("weightnorm", "shadow", "noise", "swa", "ema", "optimum-shift")


def _data(input_shape, classes, n, seed=0):
    """`n` random inputs and labels, the classes in turn (optimum shifting draws a class-stratified batch)."""
    rng = np.random.default_rng(seed)
    if input_shape == "tokens":
        x = rng.integers(1, 200, size=(n, 10)).astype("int32")
    else:
        x = rng.random((n, *input_shape)).astype("float32")
    y = np.arange(n) % classes
    return x, (y.astype("float32") if classes == 2 and input_shape == "tokens" else y)


def _predict(model, x, eager=False):
    outputs = model(x, training=False) if eager else model.predict(x, batch_size=len(x), verbose=0)
    return np.asarray(keras.ops.convert_to_numpy(outputs))


def _assert_round_trip(model, x, tmp_path, eager):
    path = str(tmp_path / "model.keras")
    expected = _predict(model, x, eager)
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_predict(loaded, x, eager), expected, rtol=1e-6, atol=1e-6)
    return loaded


def _assert_folds(model, folded, x, eager):
    assert not any(isinstance(layer, (WeightNormalization, ShadowWeights)) for layer in sublayers(folded))
    np.testing.assert_allclose(_predict(folded, x, eager), _predict(model, x, eager), rtol=1e-4, atol=1e-5)


# The callbacks only read and write weights, so one averaging (EMA) and optimum shifting run on MobileNetV2, and
# neither on ResNet50 (the slowest model): the small models cover them, with the `.keras` round trip.
LEFT_OUT = {("mobilenetv2", "swa"), ("resnet50", "swa"), ("resnet50", "ema"), ("resnet50", "optimum-shift")}
CASES = [(name, technique) for name in ARCHITECTURES for technique in TECHNIQUES if (name, technique) not in LEFT_OUT]


@pytest.mark.parametrize("name, technique", CASES, ids=[f"{name}-{technique}" for name, technique in CASES])
def test_technique_on_architecture(name, technique, tmp_path):
    model, input_shape, classes, loss = ARCHITECTURES[name]()
    eager = name in BIG
    batch = 2 if eager else BATCH
    x, y = _data(input_shape, classes, batch if eager else 2 * batch)
    callbacks = []
    if technique in ("weightnorm", "shadow"):
        wrapper = WeightNormalization if technique == "weightnorm" else ShadowWeights
        kwargs = {"seed": 0} if wrapper is ShadowWeights else {}
        if name in SUBCLASSED:
            with pytest.raises(TypeError, match="argument `model`: .* subclassed"):
                wrap_layers(model, wrapper, **kwargs)
            return
        original = _predict(model, x, eager)
        model = wrap_layers(model, wrapper, **kwargs)
        assert any(isinstance(layer, wrapper) for layer in sublayers(model))
        np.testing.assert_allclose(_predict(model, x, eager), original, rtol=1e-4, atol=1e-5)
    elif technique == "noise":
        model = keras_wtrain.wrap(model, loss_noise=0.3, gradient_dropout=0.1, seed=0)
    elif technique in ("swa", "ema"):
        callbacks.append(SWA(every=1) if technique == "swa" else EMA(decay=0.5, every=1))
    else:
        # Its own data (the callback cannot see fit's): enough examples of every class for its batch and guard.
        callbacks.append(OptimumShifting(data=_data(input_shape, classes, 48, seed=1), seed=0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, run_eagerly=eager)
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)

    if technique in ("swa", "ema"):
        averaging = callbacks[0]
        assert averaging.installed and averaging.num_averaged == len(x) // batch
        if averaging.num_averaged > 1:  # the model holds the mean of two steps' weights, not the last ones
            pairs = zip(averaging.raw_weights(), averaging.averaged_weights(), strict=True)
            assert any(not np.array_equal(raw, average) for raw, average in pairs)
    if technique == "optimum-shift":
        assert callbacks[0].history and callbacks[0].history[-1]["epoch"] == "end"
    if not eager or technique in ("weightnorm", "shadow", "noise"):
        _assert_round_trip(model, x, tmp_path, eager)
    if technique == "weightnorm":
        _assert_folds(model, keras_wtrain.fold_weight_normalization(model), x, eager)
    if technique == "shadow":
        _assert_folds(model, fold_layers(model), x, eager)
        keras_wtrain.set_weight_mode(model, "desire")  # DOM: one fixed kernel per layer, folded as well
        _assert_folds(model, fold_layers(model), x, eager)
