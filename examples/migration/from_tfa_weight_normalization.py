"""From `tfa.layers.WeightNormalization(layer, data_init=True)` to `keras_wtrain.layers.WeightNormalization`.

Run: `python examples/migration/from_tfa_weight_normalization.py` (a few seconds on a CPU).
"""

import keras
import numpy as np

from keras_wtrain.callbacks import WeightNormalizationInitializer
from keras_wtrain.layers import WeightNormalization
from keras_wtrain.weight_normalization import fold_weight_normalization

keras.utils.set_random_seed(0)
x = np.random.rand(512, 8, 8, 1).astype("float32")
y = np.random.randint(0, 10, 512)

model = keras.Sequential(
    [
        keras.Input((8, 8, 1)),
        WeightNormalization(keras.layers.Conv2D(8, 3, activation="relu"), data_init=True),
        keras.layers.Flatten(),
        WeightNormalization(keras.layers.Dense(32, activation="relu"), data_init=True),
        WeightNormalization(keras.layers.Dense(10), data_init=True),
    ]
)
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
# tfa ran the data-dependent init inside the first training call; here a callback runs it, eagerly, on the
# first 256 examples of the data you give it, before the first step.
init = WeightNormalizationInitializer(x, batch_size=256)
model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[init])

# Each wrapped Dense computes with kernel g * v / ||v||, the norm over the input axis (one g per output unit).
dense = model.layers[-1]
v = keras.ops.convert_to_numpy(dense.target_layer.kernel)
g = keras.ops.convert_to_numpy(dense.g_weights[0])
kernel = g * v / np.sqrt(np.sum(v**2, axis=0, keepdims=True) + 1e-12)
hidden = keras.Sequential(model.layers[:-1])(x[:16])
by_hand = keras.ops.convert_to_numpy(hidden) @ kernel + keras.ops.convert_to_numpy(dense.target_layer.bias)
np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x[:16])), by_hand, rtol=1e-4, atol=1e-4)

# For serving (tfa had no equivalent): a plain Keras model with kernel = g * v / ||v||, same outputs.
served = fold_weight_normalization(model)
assert not any(isinstance(layer, WeightNormalization) for layer in served.layers)
np.testing.assert_allclose(served.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
print("WeightNormalization output equals g * v / ||v|| by hand; the folded model gives the same outputs")
