"""SelectiveWeightAveraging on the JAX backend (run with KERAS_BACKEND=jax pytest -m jax)."""

import keras
import numpy as np
import pytest

from keras_wtrain.callbacks.weight_averaging import SelectiveWeightAveraging

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
    cb = SelectiveWeightAveraging(
        k=2, num_checkpoints=4, every_n_steps=3, strategy="swa", selection_data=(x, y), update_batchnorm=False
    )
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[recorder, cb])
    expected = np.stack([recorder.weights[s] for s in cb.checkpoint_steps])
    np.testing.assert_array_equal(cb.checkpoints(), expected)
    np.testing.assert_allclose(_flat(model), expected.mean(0), rtol=1e-5, atol=1e-6)


def test_sewa_selection_runs_on_jax(digits):
    x, y = digits.x_train[:256].reshape(256, -1), digits.y_train[:256]
    model = _model()
    cb = SelectiveWeightAveraging(k=2, num_checkpoints=5, every_n_steps=2, selection_data=(x, y), seed=0)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    assert len(cb.selected_indices) == 2 and cb.probabilities.sum() == pytest.approx(2, abs=1e-6)
    assert np.isfinite(cb.average_loss)
    assert cb.average_loss == pytest.approx(cb.objective(cb.selected_indices), rel=1e-5)
