"""WeightNormalization on the JAX backend (run with KERAS_BACKEND=jax; see .ci/run)."""

import keras
import numpy as np
import pytest

import keras_wtrain
from keras_wtrain.layers import WeightNormalization

pytestmark = pytest.mark.jax


def test_forward_matches_numpy_and_fit_trains_g_and_v(digits):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            WeightNormalization(keras.layers.Conv2D(4, 3, activation="relu")),
            keras.layers.Flatten(),
            WeightNormalization(keras.layers.Dense(10)),
        ]
    )
    keras_wtrain.initialize_weight_normalization(model, digits.x_train[:128])
    dense = model.layers[-1]
    v, g, b = dense.layer.kernel.numpy(), dense.g_weights[0].numpy(), dense.layer.bias.numpy()
    features = keras.Sequential(model.layers[:-1])(digits.x_test[:16])
    expected = np.asarray(features) @ (g * v / np.linalg.norm(v, axis=0)) + b
    np.testing.assert_allclose(np.asarray(model(digits.x_test[:16])), expected, atol=1e-4)

    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    history = model.fit(digits.x_train[:512], digits.y_train[:512], epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(v, dense.layer.kernel.numpy()) and not np.allclose(g, dense.g_weights[0].numpy())
    folded = keras_wtrain.fold_weight_normalization(model)
    np.testing.assert_allclose(
        folded.predict(digits.x_test, verbose=0), model.predict(digits.x_test, verbose=0), atol=1e-5
    )


def test_data_parallel_two_host_devices(digits):
    import jax

    if len(jax.devices()) < 2:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=2")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()[:2]))
    try:
        model = keras.Sequential(
            [keras.Input((8, 8, 1)), keras.layers.Flatten(), WeightNormalization(keras.layers.Dense(10))]
        )
        keras_wtrain.initialize_weight_normalization(model, digits.x_train[:128])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(digits.x_train[:512], digits.y_train[:512], epochs=3, batch_size=64, verbose=0)
        assert history.history["loss"][-1] < history.history["loss"][0]
    finally:
        keras.distribution.set_distribution(None)


def test_subclassed_model_trains_and_time_distributed_init_uses_every_timestep(rng):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = WeightNormalization(keras.layers.Dense(4, activation="relu"), data_init=False)
            self.head = WeightNormalization(keras.layers.Dense(2), data_init=False)

        def call(self, x):
            return self.head(self.dense(x))

    x = rng.normal(size=(16, 3)).astype("float32")
    model = Net()
    model.compile("sgd", "mse")
    history = model.fit(x, np.zeros((16, 2), "float32"), batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))

    steps = np.arange(4, dtype="float32")[None, :, None]
    sequences = (rng.normal(size=(32, 4, 3)) * (1 + steps) + steps).astype("float32")
    td = keras.Sequential(
        [keras.Input((4, 3)), keras.layers.TimeDistributed(WeightNormalization(keras.layers.Dense(2)))]
    )
    assert keras_wtrain.initialize_weight_normalization(td, sequences) == 1
    out = np.asarray(td(sequences)).reshape(-1, 2)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-3)
