"""LAWA: the uniform average of the `k` latest checkpoints (Kaddour et al. 2022)."""

import keras
import numpy as np

from keras_wtrain._core.validation import check_int
from keras_wtrain.averaging.base import WeightAveraging
from keras_wtrain.averaging.base import available_memory_bytes
from keras_wtrain.averaging.base import parse_start
from keras_wtrain.averaging.flat_weights import FlatWeights
from keras_wtrain.averaging.recorder import TrajectoryRecorder

__all__ = ["LAWA", "TrajectoryAveraging"]


class TrajectoryAveraging(TrajectoryRecorder, WeightAveraging):
    """The base of `LAWA` and `SeWA`: a ring buffer of the latest checkpoints on the host (or on disk).

    Memory: `T` host copies of the float weights in memory (a memory map with `checkpoint_dir`), plus one for the
    average and one for the raw weights while the average is swapped in.
    """

    def average(self):
        """The flat average this callback installs (subclasses), a `(P,)` float32 array."""
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        model = self.model
        size = FlatWeights(model).size
        if self.checkpoint_dir is None and size:
            needed = (self.num_checkpoints + 2) * size * 4
            available = available_memory_bytes()
            if available is not None and needed > available:
                raise ValueError(
                    f"{type(self).__name__}: keeping {self.num_checkpoints} checkpoints of {size:,} float32 weights in "
                    f"memory needs {needed / 2**30:.1f} GiB and {available / 2**30:.1f} GiB are available; pass "
                    "`checkpoint_dir` to keep them on disk (memory-mapped), or keep fewer."
                )
        super().on_train_begin(logs)

    def has_average(self):
        return self.num_stored >= self._needed()

    def _needed(self):
        return 1

    def install_weights(self, flat_weights):
        """Assigns flat weights (a `(P,)` array: `average_weights`, `current_weights`, a row of `checkpoints()`).

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging import LAWA

        lawa = LAWA(k=2)
        lawa.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        lawa.install_weights(np.zeros(10, "float32"))   # every weight 0
        ```
        """
        self._weights().assign(np.asarray(flat_weights, np.float32))

    def _swap_in(self):
        flats = self._weights()
        self._raw = flats.read()
        flats.assign(self.average())

    def _swap_out(self):
        self._weights().assign(self._raw)
        self._raw = None

    def raw_weights(self):
        if not self.installed:
            return None
        return [np.array(a) for a in self._weights().unflatten(self._raw)]


@keras.saving.register_keras_serializable(package="keras_wtrain")
class LAWA(TrajectoryAveraging):
    """Latest weight averaging (Kaddour et al. 2022, arXiv:2209.14981): the mean of the `k` latest checkpoints.

    A checkpoint of the model's float weights is kept at every epoch end (`every="epoch"`, as the paper) or every
    `every` optimizer steps, from `start` on, in a ring buffer of the `k` latest; the average is their uniform
    mean, computed in column chunks. Cost: `k` host copies of the float weights (a memory map with
    `checkpoint_dir`) plus two while the average is swapped in; one host copy per checkpoint.

    Args:
        k: checkpoints averaged (an int ≥ 1).
        every: `"epoch"` or a number of optimizer steps between checkpoints.
        start: the first epoch (an int) or `"<n>steps"` (the first optimizer step) recorded.
        checkpoint_dir: a directory for a disk-backed, resumable buffer (`keras.callbacks.BackupAndRestore`).
        swap_for_validation: validate with the average (so `val_*` in `History` is the averaged model's).
        install: install the average at the end of training (the raw weights stay in `raw_weights()`).
        batchnorm_data: data to re-estimate batch-norm statistics after installing.
        batchnorm_batch_size: batch size of that re-estimation.

    Raises:
        ValueError: `k` < 1, `every` < 1, a `start` past the end of the run (at `fit` start), an unwritable
            `checkpoint_dir`, or `k` copies beyond the available memory without `checkpoint_dir` (at `fit` start).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging import LAWA

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    lawa = LAWA(k=3)
    model.fit(np.random.rand(64, 4), np.random.rand(64, 1), epochs=5, verbose=0, callbacks=[lawa])
    assert lawa.checkpoint_steps.tolist() == [6, 8, 10]   # the ends of epochs 2, 3 and 4
    ```
    """

    _paper_arxiv = "2209.14981"

    def __init__(
        self,
        k=5,
        every="epoch",
        start=0,
        checkpoint_dir=None,
        swap_for_validation=False,
        install=True,
        batchnorm_data=None,
        batchnorm_batch_size=128,
    ):
        k = check_int("k", k, minimum=1, owner="LAWA")
        kind, value = parse_start(start, "LAWA")
        if kind == "fraction":
            raise ValueError(
                "LAWA: argument `start` must be an epoch (an int >= 0) or '<n>steps'; received a fraction."
            )
        if every != "epoch":
            every = check_int("every", every, minimum=1, owner="LAWA")
        super().__init__(
            num_checkpoints=k,
            start=value if kind == "step" else 0,
            every_n_steps=1 if every == "epoch" else every,
            ema_decay=None,
            checkpoint_dir=checkpoint_dir,
            swap_for_validation=swap_for_validation,
            install=install,
            batchnorm_data=batchnorm_data,
            batchnorm_batch_size=batchnorm_batch_size,
        )
        self.k, self.every, self.start_arg, self._start_kind = k, every, start, kind

    def average(self):
        """The mean of the kept checkpoints, a `(P,)` float32 array (streamed from the buffer)."""
        return self._trajectory.buffer.mean()

    def on_train_begin(self, logs=None):
        epochs = (self.params or {}).get("epochs")
        steps = (self.params or {}).get("steps")
        if self._start_kind == "epoch" and epochs is not None and self.start_arg >= int(epochs):
            raise ValueError(
                f"LAWA: argument `start`={self.start_arg} is past the end of the run ({epochs} epochs); no checkpoint "
                "would be kept."
            )
        if self._start_kind == "step" and epochs is not None and steps is not None and self.start > epochs * steps:
            raise ValueError(
                f"LAWA: argument `start`={self.start_arg!r} is past the end of the run ({epochs * steps} steps); no "
                "checkpoint would be kept."
            )
        super().on_train_begin(logs)

    def on_train_batch_end(self, batch, logs=None):
        if self.every == "epoch":
            return  # checkpoints at epoch ends only: no per-step read of the step count
        if self._start_kind == "epoch" and self._epoch < self.start_arg:
            self._step = self._optimizer_step()  # the step count only, for the first checkpoint after the start
            return
        super().on_train_batch_end(batch, logs)

    def _epoch_end(self, epoch):
        if self.every != "epoch" or epoch < (self.start_arg if self._start_kind == "epoch" else 0):
            return False
        step = self._optimizer_step()
        if step < self.start or not self._ensure_trajectory():
            return False
        self._trajectory.record_weights(self._flat, step)
        return True

    def get_config(self):
        config = self._base_config()
        config.update(k=self.k, every=self.every, start=self.start_arg, checkpoint_dir=self.checkpoint_dir)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
