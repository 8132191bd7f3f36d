"""From `tfa.optimizers.MovingAverage(opt, average_decay)` to `keras_wtrain.averaging.EMA`.

Run: `python examples/migration/from_tfa_moving_average.py` (a few seconds on a CPU).
"""

import keras
import numpy as np

from keras_wtrain.averaging import EMA

keras.utils.set_random_seed(0)
x = np.random.rand(256, 8).astype("float32")
y = (x @ np.random.rand(8, 1)).astype("float32")

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
model.compile(keras.optimizers.SGD(0.05), "mse")  # tfa: MovingAverage(SGD(0.05), average_decay=0.99)
ema = EMA(decay=0.99)  # updated after every optimizer step, installed at the end of fit


class Record(keras.callbacks.Callback):  # only to check the result below
    steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([w.copy() for w in self.model.get_weights()])


model.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0, callbacks=[ema, Record()])

# The same average by hand: the first update copies the weights, then w_ema <- 0.99 w_ema + 0.01 w.
expected = Record.steps[0]
for weights in Record.steps[1:]:
    expected = [0.99 * e + 0.01 * w for e, w in zip(expected, weights)]
assert ema.installed and ema.num_averaged == len(Record.steps) == 40
for got, want in zip(model.get_weights(), expected):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

# tfa's `assign_average_vars` overwrote the trained weights; here they stay available.
raw = ema.raw_weights()
ema.restore_raw_weights()
np.testing.assert_allclose(model.get_weights()[0], Record.steps[-1][0])
np.testing.assert_allclose(raw[0], Record.steps[-1][0])
print("EMA(0.99) over 40 steps installed; equals the recurrence computed by hand")
