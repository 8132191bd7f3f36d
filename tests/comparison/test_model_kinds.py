"""Every wrapper and callback with the three ways Keras models are written.

Sequential without `Input` (on TensorFlow its variables appear in the first training step, as Keras' own
callback tests write models), functional, and subclassed. Each case trains, then checks that the
technique's mechanism happened on that model (not only that `fit` ran).
"""

import keras
import numpy as np
import pytest

from keras_wtrain.callbacks import OptimumShifting
from keras_wtrain.callbacks import WeightNormalizationInitializer
from keras_wtrain.diagnostics import FlatnessMonitor
from keras_wtrain.layers import ShadowWeights
from keras_wtrain.layers import WeightNormalization
from keras_wtrain.weight_normalization.data_init import needs_data_init

KINDS = ["sequential_without_input", "functional", "subclassed"]


class Subclassed(keras.Model):
    def __init__(self, hidden, head):
        super().__init__()
        self.hidden, self.head = hidden, head

    def call(self, inputs, training=None):
        return self.head(self.hidden(inputs, training=training), training=training)


def _model(kind, wrap=lambda layer: layer):
    keras.utils.set_random_seed(0)
    hidden, head = wrap(keras.layers.Dense(48, activation="relu")), wrap(keras.layers.Dense(10))
    if kind == "sequential_without_input":
        model = keras.Sequential([hidden, head])
    elif kind == "functional":
        inputs = keras.Input((64,))
        model = keras.Model(inputs, head(hidden(inputs)))
    else:
        model = Subclassed(hidden, head)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _layers(model):
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


@pytest.fixture(scope="module")
def data(digits):
    return digits.x_train[:384].reshape(384, -1).astype("float32"), digits.y_train[:384]


@pytest.mark.parametrize("kind", KINDS)
def test_weight_normalization_with_its_initializer(kind, data):
    x, y = data
    model = _model(kind, lambda layer: WeightNormalization(layer))
    # A negligible learning rate keeps the data-dependent init visible after the training steps.
    model.compile(keras.optimizers.SGD(1e-9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    init = WeightNormalizationInitializer(x[:128])
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[init])
    assert not needs_data_init(model)
    hidden = _layers(model)[0]
    assert isinstance(hidden, WeightNormalization)
    # Data init: the first layer's pre-activations on the init batch have mean 0 and std 1 per unit.
    kernel = keras.ops.convert_to_numpy(hidden.effective_kernels()[0])
    pre = x[:128] @ kernel + keras.ops.convert_to_numpy(hidden.layer.bias)
    live = pre.std(0) > 0
    np.testing.assert_allclose(pre.mean(0)[live], 0.0, atol=1e-3)
    np.testing.assert_allclose(pre.std(0)[live], 1.0, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_shadow_weights(kind, data):
    x, y = data
    model = _model(kind, lambda layer: ShadowWeights(layer, transform="dropconnect", seed=0))
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    hidden = _layers(model)[0]
    assert isinstance(hidden, ShadowWeights)
    # Training calls compute with a fresh DropConnect kernel; AOM inference is the plain layer, bit for bit.
    plain = np.maximum(
        x[:8] @ keras.ops.convert_to_numpy(hidden.layer.kernel) + keras.ops.convert_to_numpy(hidden.layer.bias), 0
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(hidden(x[:8], training=False)), plain, rtol=1e-6, atol=1e-6)
    assert not np.allclose(keras.ops.convert_to_numpy(hidden(x[:8], training=True)), plain, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_optimum_shifting(kind, data):
    x, y = data
    model = _model(kind)
    shifting = OptimumShifting(data=(x, y), seed=0, max_loss_increase=0.5)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[shifting])
    kept = [entry for entry in shifting.history if entry["kept"]]
    assert [entry["epoch"] for entry in shifting.history] == [0, 1, "end"] and kept
    head = _layers(model)[-1].name
    assert all(entry["layers"][head]["relative_change_live"] > 1e-4 for entry in kept)
    assert all(entry["layers"][head]["norm_after"] < entry["layers"][head]["norm_before"] for entry in kept)


@pytest.mark.parametrize("kind", KINDS)
def test_flatness_monitor(kind, data):
    x, y = data
    model = _model(kind)
    monitor = FlatnessMonitor((x, y), num_probes=4, sharpness_radius=0.05, num_samples=2, max_examples=128, seed=0)
    history = model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[monitor])
    traces = history.history["hessian_trace"]
    assert len(traces) == 2 and all(np.isfinite(traces)) and all(t > 0 for t in traces)
    assert all(np.isfinite(history.history["sharpness_mean"]))
