"""OptimumShifting on the JAX backend (run with KERAS_BACKEND=jax pytest -m jax)."""

import keras
import numpy as np
import pytest

from keras_wtrain.comparison.models import build_model
from keras_wtrain.optimum_shifting.callback import OptimumShifting

pytestmark = pytest.mark.jax


def test_shift_inside_jax_fit(digits):
    x, y = digits.x_train, digits.y_train
    idx = np.concatenate([np.flatnonzero(y == c)[:6] for c in range(10)])
    keras.utils.set_random_seed(0)
    model = build_model("mlp", x.shape[1:], 10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), loss, jit_compile=True)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    last = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel = np.asarray(keras.ops.convert_to_numpy(last.kernel), dtype=np.float64)
    out = model.predict(x[idx], verbose=0)
    a = np.asarray(keras.Model(model.inputs, last.input).predict(x[idx], verbose=0), dtype=np.float64)
    # A zero learning rate keeps training from moving the weights, so only the shift changes them.
    model.compile(keras.optimizers.SGD(0.0), loss, jit_compile=True)
    # No loss guard: it would hold a slice of the 60 examples out of the shifting batch.
    shifting = OptimumShifting(
        every_n_epochs=1, at_end=False, batch_size=60, data=(x[idx], y[idx]), seed=0, max_loss_increase=None
    )
    model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[shifting])
    assert [h["epoch"] for h in shifting.history] == [0, 1]
    shifted = keras.ops.convert_to_numpy(last.kernel)
    np.testing.assert_allclose(shifted, np.linalg.lstsq(a, a @ kernel, rcond=None)[0], atol=1e-4)
    assert np.linalg.norm(shifted) < 0.95 * np.linalg.norm(kernel)
    np.testing.assert_allclose(model.predict(x[idx], verbose=0), out, atol=1e-4 * np.max(np.abs(out)))
