"""The base of the four averaging callbacks: validate with the average, install it at the end, re-estimate BN."""

import os
import warnings

import keras
import numpy as np

from keras_wtrain._core.batchnorm import batchnorm_layers
from keras_wtrain._core.batchnorm import update_batchnorm_statistics
from keras_wtrain._core.data_adapters import check_finite
from keras_wtrain._core.data_adapters import check_not_empty
from keras_wtrain._core.data_adapters import first_batch
from keras_wtrain._core.validation import check_bool
from keras_wtrain._core.validation import check_int

__all__ = ["WeightAveraging", "available_memory_bytes", "averaged_variables", "check_checkpoint_dir", "parse_start"]


def averaged_variables(model):
    """The variables an average covers: the model's float weights, trainable then non-trainable (BN statistics).

    Example:

    ```python
    import keras
    from keras_wtrain.averaging.base import averaged_variables

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    assert len(averaged_variables(model)) == 6   # kernel, bias, gamma, beta, moving mean, moving variance
    ```
    """
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    return [v for v in variables if keras.backend.is_float_dtype(v.dtype)]


def available_memory_bytes():
    """The memory the system can still give this process (`MemAvailable` of /proc/meminfo), or None if unknown.

    Example:

    ```python
    from keras_wtrain.averaging.base import available_memory_bytes

    print(available_memory_bytes())
    ```
    """
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_checkpoint_dir(checkpoint_dir, owner):
    """`checkpoint_dir` made and checked writable at construction; a `ValueError` naming it otherwise.

    Example:

    ```python
    import tempfile
    from keras_wtrain.averaging.base import check_checkpoint_dir

    check_checkpoint_dir(tempfile.mkdtemp(), "SWA")
    ```
    """
    if checkpoint_dir is None:
        return None
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"{owner}: argument `checkpoint_dir` must be a path or None; received {checkpoint_dir!r}.")
    path = os.fspath(checkpoint_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{owner}: argument `checkpoint_dir` names an existing file, not a directory: {path!r}.")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".keras_wtrain_write_probe")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"{owner}: argument `checkpoint_dir` {path!r} is not writable ({error.strerror}).") from None
    return path


def parse_start(start, owner):
    """Checks `start`: an epoch (int ≥ 0), a fraction of the run (float in [0, 1)) or `"<n>steps"` (optimizer steps).

    Returns:
        `(kind, value)` with kind "epoch", "fraction" or "step".

    Example:

    ```python
    from keras_wtrain.averaging.base import parse_start

    assert parse_start(0.75, "SWA") == ("fraction", 0.75) and parse_start("500steps", "SWA") == ("step", 500)
    ```
    """
    message = (
        f"{owner}: argument `start` must be an epoch (an int >= 0), a fraction of the run (a float in [0, 1)) or "
        f"a number of optimizer steps ('500steps'); received {start!r}."
    )
    if isinstance(start, bool):
        raise TypeError(message)
    if isinstance(start, int):
        if start < 0:
            raise ValueError(message)
        return "epoch", start
    if isinstance(start, float):
        if not 0.0 <= start < 1.0:
            raise ValueError(message)
        return "fraction", start
    if isinstance(start, str) and start.endswith("steps") and start[:-5].strip().isdigit():
        return "step", int(start[:-5])
    raise (ValueError if isinstance(start, str) else TypeError)(message)


class WeightAveraging(keras.callbacks.Callback):
    """Base of `SWA`, `EMA`, `LAWA` and `SeWA`: what every weight average does around `fit`.

    A subclass keeps its average and implements `has_average()`, `_swap_in()` (put the average into the model,
    keep the raw weights) and `_swap_out()` (put the raw weights back). The base then:

    - with `swap_for_validation=True`, swaps the average in for each validation pass inside `fit` (so `val_*` in
      `History`, and every callback that reads it, see the averaged model) and the raw weights back after it;
    - with `install=True`, leaves the average in the model at the end of training (the raw weights stay
      available as `raw_weights()`), then re-estimates batch-normalization statistics on `batchnorm_data`.

    Args:
        swap_for_validation: validate with the averaged weights (a bool).
        install: install the average at the end of training (a bool).
        batchnorm_data: data to re-estimate batch-normalization statistics after installing (arrays, `(x, y)`,
            a dataset); None keeps the averaged statistics.
        batchnorm_batch_size: batch size of that re-estimation.

    Example:

    ```python
    from keras_wtrain.averaging import SWA, WeightAveraging

    assert issubclass(SWA, WeightAveraging)
    ```
    """

    def __init__(
        self, swap_for_validation=False, install=True, batchnorm_data=None, batchnorm_batch_size=128, **kwargs
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.swap_for_validation = check_bool("swap_for_validation", swap_for_validation, owner=owner)
        self.install = check_bool("install", install, owner=owner)
        self.batchnorm_data = batchnorm_data
        self.batchnorm_batch_size = check_int("batchnorm_batch_size", batchnorm_batch_size, minimum=1, owner=owner)
        self._in_fit = False
        self._swapped = False
        self._epoch = 0  # the epoch running now
        self._folded_epoch = None  # the epoch whose end `_epoch_end` already handled
        self.installed = False  # whether the model holds the average now

    # -------------------------------------------------------------- subclass interface
    def has_average(self):
        """Whether an average exists yet (training may end before `start`)."""
        raise NotImplementedError

    def _swap_in(self):
        raise NotImplementedError

    def _swap_out(self):
        raise NotImplementedError

    def raw_weights(self):
        """The raw (not averaged) float weights while the average is installed, else None (a list of arrays)."""
        raise NotImplementedError

    def _epoch_end(self, epoch):
        """What the end of `epoch` adds to the average (subclasses); returns whether it added anything."""
        return False

    def _fold_epoch_end(self, epoch):
        """Runs `_epoch_end(epoch)` once per epoch: before that epoch's validation, or at its end."""
        if self._folded_epoch != epoch and self._epoch_end(epoch):
            self._folded_epoch = epoch

    # -------------------------------------------------------------- hooks
    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.installed:  # a later fit continues from the raw weights, never silently from the average
            self.restore_raw_weights()
        self._in_fit = True
        self._folded_epoch = None
        if self.batchnorm_data is not None:
            batch = first_batch(self.batchnorm_data, self.batchnorm_batch_size)
            check_not_empty(batch, "batchnorm_data", owner=type(self).__name__)
            check_finite(batch, "batchnorm_data", owner=type(self).__name__)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._fold_epoch_end(epoch)
        super().on_epoch_end(epoch, logs)

    def on_test_begin(self, logs=None):
        super().on_test_begin(logs)
        if self._in_fit and self.swap_for_validation:
            # Keras validates before `on_epoch_end`: the epoch's own contribution joins the average first, so
            # `val_*` of an epoch is the average including that epoch.
            self._fold_epoch_end(self._epoch)
        if self._in_fit and self.swap_for_validation and not self._swapped and self.has_average():
            self._swap_in()
            self._swapped = True

    def on_test_end(self, logs=None):
        super().on_test_end(logs)
        if self._swapped:
            self._swap_out()
            self._swapped = False

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._in_fit = False
        if not self.install:
            return
        if not self.has_average():
            warnings.warn(
                f"{type(self).__name__}: no average was taken (training ended before `start`?); the model keeps its "
                "last weights.",
                stacklevel=2,
            )
            return
        self._swap_in()
        self.installed = True
        self.updated_batchnorm_layers = self._update_batchnorm()

    def restore_raw_weights(self):
        """Puts the raw weights back into the model after `install` (the average stays available).

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging import SWA

        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        swa = SWA(every=1)
        model.fit(np.ones((8, 2)), np.zeros((8, 1)), batch_size=4, epochs=2, verbose=0, callbacks=[swa])
        swa.restore_raw_weights()   # the model now holds its last trained weights
        ```
        """
        if self.installed:
            self._swap_out()
            self.installed = False

    def _update_batchnorm(self):
        if self.batchnorm_data is None or not batchnorm_layers(self.model):
            return 0
        return update_batchnorm_statistics(self.model, self.batchnorm_data, batch_size=self.batchnorm_batch_size)

    def _base_config(self):
        return {
            "swap_for_validation": self.swap_for_validation,
            "install": self.install,
            "batchnorm_batch_size": self.batchnorm_batch_size,
        }


def copy_values(variables):
    """Host copies of variable values (float32 numpy arrays)."""
    return [np.array(keras.ops.convert_to_numpy(v), dtype=np.float32) for v in variables]
