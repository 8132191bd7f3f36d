"""From Keras' `optimizer(use_ema=True)` + `keras.callbacks.SwapEMAWeights` to `keras_wtrain.averaging.EMA`.

Run: `python examples/migration/from_keras_use_ema.py` (a few seconds on a CPU).
"""

import keras
import numpy as np

from keras_wtrain.averaging import EMA

keras.utils.set_random_seed(0)
x = np.random.rand(320, 8).astype("float32")
y = (x @ np.random.rand(8, 1)).astype("float32")


def build():
    keras.utils.set_random_seed(1)  # the same initial weights for both runs
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])


fit_args = dict(batch_size=32, epochs=4, validation_split=0.25, shuffle=False, verbose=0)

# Keras: the EMA lives in the optimizer; SwapEMAWeights validates with it; fit ends by writing it into the model.
keras_model = build()
keras_model.compile(keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.9), "mse")
keras_history = keras_model.fit(x, y, callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=False)], **fit_args)

# keras-wtrain: a plain optimizer and one callback.
model = build()
model.compile(keras.optimizers.SGD(0.05), "mse")
ema = EMA(decay=0.9, swap_for_validation=True)
history = model.fit(x, y, callbacks=[ema], **fit_args)

# Same validation losses (computed with the average) and the same final weights.
np.testing.assert_allclose(history.history["val_loss"], keras_history.history["val_loss"], rtol=1e-4)
np.testing.assert_allclose(history.history["loss"], keras_history.history["loss"], rtol=1e-4)
for ours, theirs in zip(model.get_weights(), keras_model.get_weights()):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
# What Keras cannot give back after fit: the raw (not averaged) weights.
assert ema.raw_weights() is not None
print("EMA(decay=0.9, swap_for_validation=True) reproduces use_ema=True + SwapEMAWeights")
