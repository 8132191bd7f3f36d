"""ShadowWeights on the JAX backend (run with KERAS_BACKEND=jax; see .ci/run)."""

import keras
import numpy as np
import pytest

from keras_wtrain.shadow_weights import transforms as T
from keras_wtrain.shadow_weights.modes import set_weight_mode
from keras_wtrain.shadow_weights.wrapper import ShadowWeights

pytestmark = pytest.mark.jax


def test_stateless_jit_fit_draws_fresh_and_aom_equals_plain(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            ShadowWeights(keras.layers.Conv2D(4, 3, activation="relu"), transform="random_translate", seed=0),
            keras.layers.Flatten(),
            ShadowWeights(keras.layers.Dense(10), transform=T.DropConnect(0.3), seed=1),
        ]
    )
    x = digits.x_test[:16]
    a, b = model(x, training=True), model(x, training=True)
    assert not np.allclose(np.asarray(a), np.asarray(b))
    state = np.asarray(model.layers[0].seed_generator.state.value).copy()
    kernel = np.asarray(model.layers[0].layer.kernel.value).copy()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    history = model.fit(digits.x_train[:512], digits.y_train[:512], epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.array_equal(state, np.asarray(model.layers[0].seed_generator.state.value))
    assert not np.allclose(kernel, np.asarray(model.layers[0].layer.kernel.value))  # gradient reached PW
    conv = model.layers[0]
    plain = keras.layers.Conv2D(4, 3, activation="relu")
    plain.build(x.shape)
    plain.set_weights(conv.layer.get_weights())
    np.testing.assert_array_equal(np.asarray(conv(x)), np.asarray(plain(x)))
    aom = model.predict(x, verbose=0)
    set_weight_mode(model, "desire")
    dom = model.predict(x, verbose=0)
    assert not np.allclose(aom, dom)
    np.testing.assert_allclose(dom, np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_desire_training_under_jax_jit(digits):
    keras.utils.set_random_seed(0)
    conv = ShadowWeights(keras.layers.Conv2D(4, 3, padding="same", activation="relu"), seed=0, desire_probability=0.5)
    model = keras.Sequential([keras.Input((8, 8, 1)), conv, keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    kernel = np.asarray(conv.layer.kernel.value).copy()
    history = model.fit(digits.x_train[:512], digits.y_train[:512], epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(kernel, np.asarray(conv.layer.kernel.value))
    x = digits.x_test[:16]
    conv.desire_probability = 1.0  # every training call computes with the DOM kernel
    train_out = np.asarray(conv(x, training=True))
    conv.mode = "desire"
    np.testing.assert_allclose(train_out, np.asarray(conv(x)), rtol=1e-5, atol=1e-5)
