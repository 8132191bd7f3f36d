"""From `torch.optim.swa_utils` (`AveragedModel`, `SWALR`, `update_bn`) to `SWA` + `SWASchedule`.

Run: `python examples/migration/from_torch_swa_utils.py` (a few seconds on a CPU).
"""

import keras
import numpy as np

from keras_wtrain.averaging import SWA
from keras_wtrain.averaging import SWASchedule

keras.utils.set_random_seed(0)
x = np.random.normal(2.0, 3.0, (320, 8)).astype("float32")
y = (x @ np.random.rand(8, 1) / 10).astype("float32")
steps_per_epoch, epochs, swa_start_epoch, anneal_epochs = 10, 8, 4, 2  # batch size 32

model = keras.Sequential(
    [
        keras.Input((8,)),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ]
)
# torch: SWALR(optimizer, swa_lr=0.005, anneal_epochs=2) stepped once per epoch from epoch 4 on. Per step:
lr = SWASchedule(
    0.05,
    swa_lr=0.005,
    swa_start=swa_start_epoch * steps_per_epoch,
    anneal_steps=anneal_epochs * steps_per_epoch,
)
model.compile(keras.optimizers.SGD(lr, momentum=0.9), "mse")
# torch: AveragedModel(model), update_parameters(model) at the end of each epoch >= 4, then update_bn(loader, ...)
swa = SWA(start=swa_start_epoch, batchnorm_data=x, batchnorm_batch_size=32)


def trainable_values(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]


class Record(keras.callbacks.Callback):  # only to check the result below
    epochs = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= swa_start_epoch:
            self.epochs.append(trainable_values(self.model))


model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0, callbacks=[swa, Record()])

# The installed trainable weights are the mean of the epoch-end weights of epochs 4..7 ...
assert swa.num_averaged == len(Record.epochs) == epochs - swa_start_epoch
for got, *seen in zip(trainable_values(model), *Record.epochs):
    np.testing.assert_allclose(got, np.mean(seen, axis=0), rtol=1e-5, atol=1e-6)
# ... and the batch-norm statistics were recomputed on the data, as update_bn does: the moving mean is the
# mean of the batch means, the moving variance the mean of the (biased) batch variances.
bn = model.layers[0]
batches = x.reshape(steps_per_epoch, 32, 8)
np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), batches.mean(axis=1).mean(0), rtol=1e-4)
np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), batches.var(axis=1).mean(0), rtol=1e-4)

# Optional: SWASchedule gives the learning rates torch's SGD sees when SWALR is built as optimizer step S begins
# and stepped after every optimizer step.
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    start, anneal = 5, 4
    for strategy in ("cos", "linear"):
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=0.05)
        swalr, torch_lrs = None, []
        for step in range(12):
            if step == start:
                swalr = torch.optim.swa_utils.SWALR(
                    optimizer, swa_lr=0.005, anneal_epochs=anneal, anneal_strategy=strategy
                )
            torch_lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if swalr is not None:
                swalr.step()
        ours = SWASchedule(0.05, swa_lr=0.005, swa_start=start, anneal_steps=anneal, anneal_strategy=strategy)
        np.testing.assert_allclose([float(ours(s)) for s in range(12)], torch_lrs, rtol=1e-6)
    print("SWASchedule matches torch's SWALR step for step")
print("SWA installed: mean of 4 epoch-end weights, batch-norm statistics recomputed")
