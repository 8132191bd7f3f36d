"""From timm's `ModelEmaV3(model, decay, use_warmup=True, ...)` to `keras_wtrain.averaging.EMA(warmup=True)`.

Run: `python examples/migration/from_timm_model_ema.py` (a few seconds on a CPU).
"""

import keras
import numpy as np

from keras_wtrain.averaging import EMA
from keras_wtrain.averaging.base import averaged_variables

keras.utils.set_random_seed(0)
x = np.random.rand(256, 8).astype("float32")
y = (x @ np.random.rand(8, 1)).astype("float32")

model = keras.Sequential(
    [keras.Input((8,)), keras.layers.Dense(16), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
)
model.compile(keras.optimizers.SGD(0.05), "mse")
# timm: ModelEmaV3(model, decay=0.999, use_warmup=True, warmup_gamma=1.0, warmup_power=2/3) with
# model_ema.update(model, step=num_updates) after every optimizer step. Its default power is 2/3, ours 3/4.
ema = EMA(decay=0.999, warmup=True, warmup_gamma=1.0, warmup_power=2 / 3)


def values(model):  # what both average: the float weights, batch-norm statistics included
    return [keras.ops.convert_to_numpy(v).copy() for v in averaged_variables(model)]


class Record(keras.callbacks.Callback):  # only to check the result below
    steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(values(self.model))


model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0, callbacks=[ema, Record()])


def timm_get_decay(step, decay=0.999, min_decay=0.0, update_after_step=0, gamma=1.0, power=2 / 3):
    """timm's ModelEmaV3.get_decay, use_warmup=True."""
    step = max(0, step - update_after_step - 1)
    if step <= 0:
        return 0.0
    return max(min(1 - (1 + step / gamma) ** -power, decay), min_decay)


expected = None
for num_updates, weights in enumerate(Record.steps, start=1):
    d = timm_get_decay(num_updates)
    expected = weights if expected is None else [d * e + (1 - d) * w for e, w in zip(expected, weights)]
assert ema.num_averaged == len(Record.steps) == 32
for got, want in zip(values(model), expected):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
print("EMA with warmup equals timm's ModelEmaV3 recurrence, batch-norm statistics included")
