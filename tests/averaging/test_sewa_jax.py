"""SeWA and the EMA callback on the JAX backend (run with KERAS_BACKEND=jax pytest -m jax)."""

import keras
import numpy as np
import pytest

from keras_wtrain.averaging import EMA
from keras_wtrain.averaging import SeWA

pytestmark = pytest.mark.jax


def _flat(model):
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    return np.concatenate(
        [np.asarray(keras.ops.convert_to_numpy(v), np.float32).ravel() for v in variables if "float" in str(v.dtype)]
    )


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights, self.step = {}, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.model.jax_state_sync()  # JAX keeps the training state outside the variables during an epoch
        self.weights[self.step] = _flat(self.model)


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True
    )
    return model


def test_checkpoints_are_the_live_weights_and_swa_is_their_mean(digits):
    x, y = digits.x_train[:256].reshape(256, -1), digits.y_train[:256]
    model, recorder = _model(), _Recorder()
    cb = SeWA(k=2, num_checkpoints=4, every_n_steps=3, selection_data=(x, y), install=False)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[recorder, cb])
    np.testing.assert_array_equal(cb.checkpoint_steps, [6, 9, 12, 15])
    expected = np.stack([recorder.weights[s] for s in cb.checkpoint_steps])
    np.testing.assert_array_equal(cb.checkpoints(), expected)
    swa, info = cb.average_weights("swa")
    assert info["steps"] == [6, 9, 12, 15]
    np.testing.assert_allclose(swa, expected.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_flat(model), recorder.weights[16])  # install=False: the live weights stay
    cb.install_weights(swa)
    np.testing.assert_allclose(_flat(model), expected.mean(0), rtol=1e-5, atol=1e-6)


def test_sewa_selection_runs_on_jax(digits):
    x, y = digits.x_train[:256].reshape(256, -1), digits.y_train[:256]
    model = _model()
    cb = SeWA(k=2, num_checkpoints=5, every_n_steps=2, selection_data=(x, y), seed=0)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    assert len(cb.selected_indices) == 2 and cb.probabilities.sum() == pytest.approx(2, abs=1e-6)
    assert np.isfinite(cb.average_loss)
    # The selected average is installed, then its batch-norm statistics are re-estimated on the selection inputs
    # (SeWA's default `batchnorm_data`); `average_loss` is F of the installed model.
    assert cb.updated_batchnorm_layers == 1
    expected = cb.checkpoints()[cb.selected_indices].mean(0)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    np.testing.assert_allclose(_flat(model)[:trainable], expected[:trainable], rtol=1e-5, atol=1e-6)
    assert not np.allclose(_flat(model)[trainable:], expected[trainable:])
    assert cb.average_loss == pytest.approx(cb.weights_loss(cb.current_weights()), rel=1e-5)


def test_ema_on_a_sequential_without_input_matches_numpy(digits):
    x, y = digits.x_train[:192].reshape(192, -1), digits.y_train[:192]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    recorder = _Recorder()
    cb = EMA(decay=0.7, start="2steps")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False, callbacks=[recorder, cb])  # 12 steps
    ema = recorder.weights[2].astype(np.float64)
    for step in range(3, 13):
        ema = 0.7 * ema + 0.3 * recorder.weights[step]
    assert cb.num_averaged == 11 and cb.installed
    np.testing.assert_allclose(_flat(model), ema, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in cb.raw_weights()]), recorder.weights[12])


def test_dict_inputs_objective_equals_evaluate_on_jax(digits):
    x, y = digits.x_train[:128].reshape(128, -1), digits.y_train[:128]
    inputs = {"left": keras.Input((32,), name="left"), "right": keras.Input((32,), name="right")}
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([inputs["left"], inputs["right"]]))
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = ({"left": x[:, :32], "right": x[:, 32:]}, y)
    cb = SeWA(k=2, num_checkpoints=4, selection_data=data, selection_steps=3, seed=0)
    model.fit(*data, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    assert len(cb.selected_indices) == 2
    assert cb.average_loss == pytest.approx(model.evaluate(*data, verbose=0), rel=1e-5)
