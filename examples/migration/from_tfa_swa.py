"""From `tfa.optimizers.SWA(opt, start_averaging, average_period)` to `keras_wtrain.averaging.SWA`.

Run: `python examples/migration/from_tfa_swa.py` (a few seconds on a CPU).
"""

import keras
import numpy as np

from keras_wtrain.averaging import SWA
from keras_wtrain.averaging import SWASchedule

keras.utils.set_random_seed(0)
x = np.random.rand(256, 8).astype("float32")
y = (x @ np.random.rand(8, 1) + 0.1 * np.random.rand(256, 1)).astype("float32")

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
# tfa: SWA(SGD(0.05), start_averaging=m, average_period=k). Here the optimizer stays a plain one, the learning
# rate drops to swa_lr when averaging starts (optional), and the average is a callback.
model.compile(keras.optimizers.SGD(SWASchedule(0.05, swa_lr=0.01, swa_start=40)), "mse")
swa = SWA(start="40steps", every=10)  # average the weights after optimizer steps 40, 50, 60, ...


class Record(keras.callbacks.Callback):  # only to check the result below
    snapshots = []

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations)
        if step >= 40 and step % 10 == 0:
            self.snapshots.append([w.copy() for w in self.model.get_weights()])


model.fit(x, y, batch_size=32, epochs=10, shuffle=False, verbose=0, callbacks=[swa, Record()])  # 80 steps

# tfa needed `opt.assign_average_vars(model.variables)` here; the callback has already installed the average.
assert swa.installed and swa.num_averaged == len(Record.snapshots) == 5
for got, *seen in zip(model.get_weights(), *Record.snapshots):
    np.testing.assert_allclose(got, np.mean(seen, axis=0), rtol=1e-5, atol=1e-6)
swa.restore_raw_weights()  # the last trained weights, if you want to keep training from them
np.testing.assert_allclose(model.get_weights()[0], Record.snapshots[-1][0])
print("SWA of 5 snapshots installed; equals their numpy mean")
