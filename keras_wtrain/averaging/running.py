"""SWA and EMA: running averages of the weights, one extra copy of them, as torch's `AveragedModel` keeps."""

import glob
import json
import os
import warnings

import keras
import numpy as np

from keras_wtrain._core.validation import check_bool
from keras_wtrain._core.validation import check_int
from keras_wtrain._core.validation import check_number
from keras_wtrain._core.validation import check_positive
from keras_wtrain.averaging.base import WeightAveraging
from keras_wtrain.averaging.base import averaged_variables
from keras_wtrain.averaging.base import check_checkpoint_dir
from keras_wtrain.averaging.base import copy_values
from keras_wtrain.averaging.base import parse_start

__all__ = ["EMA", "SWA"]

_STATE = "average_epoch{:06d}"


class _RunningAverage(WeightAveraging):
    """One running average of the model's float weights, kept in Keras variables beside the model's.

    Memory: one extra copy of the float weights, on the device that holds the model (the host on a CPU).
    Updates are in place (`assign`), a few element-wise ops per weight; swapping the average in or out moves each
    weight once through a temporary of its own size.
    """

    def __init__(self, start, every, checkpoint_dir, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self._start = parse_start(start, owner)
        self.start = start
        if every != "epoch":
            every = check_int("every", every, minimum=1, owner=owner)
        self.every = every
        self.checkpoint_dir = check_checkpoint_dir(checkpoint_dir, owner)
        self.num_averaged = 0  # updates folded into the average
        self._average = None  # Keras variables, one per averaged model variable
        self._variables = None
        self._start_step = None
        self._resume_pending = False

    # -------------------------------------------------------------- the average
    def has_average(self):
        return self.num_averaged > 0

    def _decay(self):
        """Weight of the old average in the next update (subclasses)."""
        raise NotImplementedError

    def _ensure_variables(self):
        model = self.model  # on JAX, reading `model` syncs the training state into the variables
        if self._variables is None:
            self._variables = averaged_variables(model)
        if self._average is None:
            self._average = [
                keras.Variable(np.zeros(tuple(v.shape), "float32"), dtype=v.dtype, trainable=False, name="average")
                for v in self._variables
            ]
        return self._variables

    def update(self):
        """Folds the model's current weights into the average (the first update copies them).

        Example:

        ```python
        import keras
        from keras_wtrain.averaging import SWA

        swa = SWA()
        swa.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
        swa.update()
        assert swa.num_averaged == 1
        ```
        """
        variables = self._ensure_variables()
        decay = 0.0 if self.num_averaged == 0 else float(self._decay())
        tensorflow = keras.backend.backend() == "tensorflow"
        for average, variable in zip(self._average, variables):
            if decay == 0.0:
                average.assign(keras.ops.copy(variable.value))  # a copy: JAX may donate the variable's buffer
            elif tensorflow:
                # avg <- avg - (1 - d) (avg - w), in place: one temporary of the variable's size.
                import tensorflow as tf

                delta = average.value - keras.ops.cast(variable.value, average.dtype)
                tf.raw_ops.ResourceApplyGradientDescent(
                    var=average.handle, alpha=tf.constant(1.0 - decay, average.dtype), delta=delta
                )
                del delta
            else:
                average.assign(
                    average.value + (1.0 - decay) * (keras.ops.cast(variable.value, average.dtype) - average.value)
                )
        self.num_averaged += 1

    def averaged_weights(self):
        """The averaged float weights (host copies, in the order of `averaged_variables(model)`), or None."""
        if not self.has_average():
            return None
        if self.installed:
            return copy_values(self._variables)
        return copy_values(self._average)

    def raw_weights(self):
        if not self.installed:
            return None
        return copy_values(self._average)  # the model's raw weights wait in the average's variables

    def _swap(self):
        for variable, average in zip(self._variables, self._average):
            # A host copy of one variable at a time: a backend tensor read from a variable may alias its buffer,
            # so `assign` would change it too.
            raw = np.array(keras.ops.convert_to_numpy(variable.value), copy=True)
            variable.assign(average.value)
            average.assign(raw)

    _swap_in = _swap
    _swap_out = _swap

    # -------------------------------------------------------------- schedule
    def _check_start(self):
        """Refuses a `start` past the end of the run, and resolves a fraction to an optimizer step."""
        kind, value = self._start
        epochs, steps_per_epoch = (self.params or {}).get("epochs"), (self.params or {}).get("steps")
        total = None if epochs is None or steps_per_epoch is None else int(epochs) * int(steps_per_epoch)
        owner = type(self).__name__
        if kind == "fraction":
            if total is None:
                raise ValueError(
                    f"{owner}: argument `start`={value!r} is a fraction of the run, but `fit` did not say how many "
                    "steps it runs (give `epochs` and data of known length, or `steps_per_epoch`)."
                )
            return max(1, int(round(value * total)))
        if kind == "epoch" and epochs is not None and value >= int(epochs):
            raise ValueError(
                f"{owner}: argument `start`={value} is past the end of the run ({epochs} epochs: epochs 0 to "
                f"{int(epochs) - 1}); no average would be taken."
            )
        if kind == "step" and total is not None and value > total:
            raise ValueError(f"{owner}: argument `start`={value} steps is past the end of the run ({total} steps).")
        return max(1, value) if kind == "step" else None

    def _started(self, epoch, step):
        kind, value = self._start
        return epoch >= value if kind == "epoch" else step >= self._start_step

    def _optimizer_step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    # -------------------------------------------------------------- hooks
    def on_train_begin(self, logs=None):
        self._start_step = self._check_start()
        super().on_train_begin(logs)
        self._resume_pending = True

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self._resume_pending:
            # First epoch of this fit, after every on_train_begin (BackupAndRestore restores there).
            self._resume_pending = False
            if self.checkpoint_dir is not None:
                self._resume(epoch)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self.every == "epoch":
            return
        step = self._optimizer_step()
        if step % self.every == 0 and self._started(self._epoch, step):
            self.update()

    def _epoch_end(self, epoch):
        if self.every == "epoch" and self._started(epoch, self._optimizer_step()):
            self.update()
            return True
        return False

    def on_epoch_end(self, epoch, logs=None):
        self._fold_epoch_end(epoch)  # before the save: the saved average includes this epoch
        if self.checkpoint_dir is not None:
            self._save(epoch)
        super().on_epoch_end(epoch, logs)

    # -------------------------------------------------------------- resume
    def _state_files(self):
        return sorted(glob.glob(os.path.join(self.checkpoint_dir, "average_epoch*.json")))

    def _save(self, epoch):
        """Saves the average as it is at the end of `epoch` (where `BackupAndRestore` backs up); keeps two."""
        name = os.path.join(self.checkpoint_dir, _STATE.format(epoch))
        arrays = {} if not self.has_average() else {f"v{i}": a for i, a in enumerate(copy_values(self._average))}
        np.savez(name + ".tmp.npz", **arrays)
        os.replace(name + ".tmp.npz", name + ".npz")
        meta = {"epoch": epoch, "num_averaged": self.num_averaged, "extra": self._extra_state()}
        with open(name + ".json.tmp", "w") as handle:
            json.dump(meta, handle)
        os.replace(name + ".json.tmp", name + ".json")
        for old in self._state_files()[:-2]:  # the previous epoch's stays: a kill may come before the backup
            os.remove(old)
            if os.path.exists(old[:-5] + ".npz"):
                os.remove(old[:-5] + ".npz")

    def _resume(self, epoch):
        if epoch == 0:
            for old in self._state_files():
                os.remove(old)
                if os.path.exists(old[:-5] + ".npz"):
                    os.remove(old[:-5] + ".npz")
            return
        name = os.path.join(self.checkpoint_dir, _STATE.format(epoch - 1))
        if not os.path.exists(name + ".json"):
            warnings.warn(
                f"{type(self).__name__}: resuming at epoch {epoch} but `checkpoint_dir` holds no average saved at the "
                f"end of epoch {epoch - 1}; the average restarts from here.",
                stacklevel=2,
            )
            self.num_averaged = 0
            return
        with open(name + ".json") as handle:
            meta = json.load(handle)
        self.num_averaged = int(meta["num_averaged"])
        self._load_extra_state(meta.get("extra", {}))
        if self.num_averaged:
            self._ensure_variables()
            with np.load(name + ".npz") as arrays:
                for i, average in enumerate(self._average):
                    average.assign(arrays[f"v{i}"])

    def _extra_state(self):
        return {}

    def _load_extra_state(self, state):
        pass

    def get_config(self):
        config = self._base_config()
        config.update(start=self.start, every=self.every, checkpoint_dir=self.checkpoint_dir)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class SWA(_RunningAverage):
    """Stochastic weight averaging (Izmailov et al. 2018, arXiv:1803.05407): the running mean of the weights.

    From `start` on, the model's float weights (trainable and batch-norm statistics) are folded into a running
    mean `w_swa <- w_swa + (w - w_swa) / (n + 1)` at the end of every epoch (`every="epoch"`, as torch's
    `AveragedModel` is used) or every `every` optimizer steps. Pair it with `SWASchedule` for the SWA learning
    rate, and with `batchnorm_data` to recompute batch-norm statistics for the average (torch's `update_bn`).
    Cost: one extra copy of the float weights (on the model's device); one in-place update per average.

    Args:
        start: the first epoch averaged (an int), a fraction of the run (a float in [0, 1), e.g. 0.75), or
            `"<n>steps"` (the first optimizer step averaged).
        every: `"epoch"` or a number of optimizer steps between updates.
        checkpoint_dir: a directory where the average is saved at every epoch end, so a run killed and resumed
            with `keras.callbacks.BackupAndRestore(save_freq="epoch")` continues the same average.
        swap_for_validation: validate with the average (so `val_*` in `History` is the averaged model's).
        install: install the average at the end of training (the raw weights stay in `raw_weights()`).
        batchnorm_data: data to re-estimate batch-norm statistics after installing.
        batchnorm_batch_size: batch size of that re-estimation.

    Raises:
        ValueError: a `start` past the end of the run (at `fit` start), `every` < 1, an unwritable
            `checkpoint_dir`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging import SWA

    x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    swa = SWA(start=2, swap_for_validation=True)
    history = model.fit(x, y, epochs=4, validation_split=0.25, verbose=0, callbacks=[swa])
    assert swa.num_averaged == 2   # epochs 2 and 3; the model now holds their mean
    ```
    """

    _paper_arxiv = "1803.05407"

    def __init__(
        self,
        start=0,
        every="epoch",
        checkpoint_dir=None,
        swap_for_validation=False,
        install=True,
        batchnorm_data=None,
        batchnorm_batch_size=128,
    ):
        super().__init__(
            start,
            every,
            checkpoint_dir,
            swap_for_validation=swap_for_validation,
            install=install,
            batchnorm_data=batchnorm_data,
            batchnorm_batch_size=batchnorm_batch_size,
        )

    def _decay(self):
        return self.num_averaged / (self.num_averaged + 1.0)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class EMA(_RunningAverage):
    """Exponential moving average of the weights, with timm's optional warmup.

    Every `every` optimizer steps from `start` on: `w_ema <- d * w_ema + (1 - d) * w` (the first update copies
    the weights, as Keras' `use_ema` and torch's `AveragedModel` do). With `warmup=True` the decay of the `t`-th
    update is `min(decay, 1 - (1 + t / warmup_gamma) ** -warmup_power)` (timm's `ModelEmaV3`), so early
    averages forget the random initialisation quickly.
    Cost: one extra copy of the float weights (on the model's device); one in-place update per average.

    Args:
        decay: the decay `d`, in (0, 1).
        warmup: use the warmup above (a bool).
        warmup_gamma: its `gamma` (> 0).
        warmup_power: its `power` (> 0).
        every: optimizer steps between updates (an int ≥ 1) or `"epoch"`.
        start: as for `SWA` (default 0: from the first step).
        checkpoint_dir: as for `SWA`.
        swap_for_validation: validate with the average (Keras' `SwapEMAWeights`).
        install: install the average at the end of training.
        batchnorm_data: data to re-estimate batch-norm statistics after installing.
        batchnorm_batch_size: batch size of that re-estimation.

    Raises:
        ValueError: `decay` outside (0, 1), `warmup_gamma` or `warmup_power` ≤ 0, and the errors of `SWA`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging import EMA

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    ema = EMA(decay=0.9, warmup=True)
    model.fit(np.random.rand(64, 4), np.random.rand(64, 1), batch_size=8, epochs=2, verbose=0, callbacks=[ema])
    assert ema.num_averaged == 16
    ```
    """

    def __init__(
        self,
        decay=0.999,
        warmup=False,
        warmup_gamma=1.0,
        warmup_power=0.75,
        every=1,
        start=0,
        checkpoint_dir=None,
        swap_for_validation=False,
        install=True,
        batchnorm_data=None,
        batchnorm_batch_size=128,
    ):
        super().__init__(
            start,
            every,
            checkpoint_dir,
            swap_for_validation=swap_for_validation,
            install=install,
            batchnorm_data=batchnorm_data,
            batchnorm_batch_size=batchnorm_batch_size,
        )
        self.decay = check_number("decay", decay, owner="EMA")
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"EMA: argument `decay` must be in (0, 1); received {decay!r}.")
        self.warmup = check_bool("warmup", warmup, owner="EMA")
        self.warmup_gamma = check_positive("warmup_gamma", warmup_gamma, owner="EMA")
        self.warmup_power = check_positive("warmup_power", warmup_power, owner="EMA")

    def current_decay(self):
        """The decay the next update uses (warmup included).

        Example:

        ```python
        from keras_wtrain.averaging import EMA

        assert EMA(decay=0.99).current_decay() == 0.99
        ```
        """
        if not self.warmup:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + self.num_averaged / self.warmup_gamma) ** -self.warmup_power)

    def _decay(self):
        return self.current_decay()

    def get_config(self):
        config = super().get_config()
        config.update(
            decay=self.decay, warmup=self.warmup, warmup_gamma=self.warmup_gamma, warmup_power=self.warmup_power
        )
        return config
