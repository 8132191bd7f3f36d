"""A callback that records the weight trajectory of `fit`: the last `T` checkpoints and a running EMA.

`TrajectoryRecorder` copies the model's float weights to a `Trajectory` every `every_n_steps`
optimizer steps from global step `start` on. It is the recording half of
`LAWA` and `SeWA`, usable alone for post-hoc analysis of checkpoints.

- The step count has one source, `model.optimizer.iterations`, read after each batch: it is
  global across `fit` calls and resumption, and right with `steps_per_execution > 1`.
- The variable list is read once the model has variables: on TensorFlow a model without an
  `Input` (`keras.Sequential([keras.layers.Dense(2)])`) creates them in its first training step.
- Resumption (`keras.callbacks.BackupAndRestore`): at the first epoch of a `fit`, checkpoints
  taken after the restored optimizer step are dropped (a rolled-back segment). With
  `checkpoint_dir` the trajectory is on disk and a new process picks it up.

Example:

```python
import keras
import numpy as np
from keras_wtrain.averaging.recorder import TrajectoryRecorder

model = keras.Sequential([keras.layers.Dense(2)])          # no Input: built in the first step
model.compile("sgd", "mse")
recorder = TrajectoryRecorder(num_checkpoints=3, every_n_steps=2)
model.fit(np.ones((64, 4)), np.zeros((64, 2)), batch_size=8, verbose=0, callbacks=[recorder])
assert recorder.checkpoint_steps.tolist() == [4, 6, 8] and recorder.checkpoints().shape == (3, 10)
```
"""

import keras
import numpy as np

from keras_wtrain._core.validation import check_int
from keras_wtrain._core.validation import check_probability
from keras_wtrain.averaging.base import check_checkpoint_dir
from keras_wtrain.averaging.flat_weights import FlatWeights
from keras_wtrain.averaging.trajectory import Trajectory
from keras_wtrain.averaging.trajectory import checkpoint_due

__all__ = ["TrajectoryRecorder"]


@keras.saving.register_keras_serializable(package="keras_wtrain")
class TrajectoryRecorder(keras.callbacks.Callback):
    """Records the last `num_checkpoints` flat weight checkpoints of training and the EMA of all of them.

    Checkpoints are taken at global steps `start`, `start + every_n_steps`, ... (the optimizer's
    `iterations`). Each is the model's float weights, trainable then non-trainable, flattened (see
    `FlatWeights`); host memory is `num_checkpoints × P × 4` bytes for `P` float weights, or a
    memory-mapped file with `checkpoint_dir` (see `Trajectory` and `CheckpointBuffer`).

    Args:
        num_checkpoints: checkpoints kept (`T`), a positive int.
        start: global optimizer step at which checkpointing starts (an int ≥ 0).
        every_n_steps: optimizer steps between checkpoints, a positive int.
        ema_decay: decay per checkpoint of the running EMA, in [0, 1); None keeps no EMA.
        checkpoint_dir: optional directory of a disk-backed, resumable trajectory.

    Raises:
        TypeError: on an argument of the wrong type.
        ValueError: on an argument out of range.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging.recorder import TrajectoryRecorder

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    recorder = TrajectoryRecorder(num_checkpoints=4, start=2)
    model.fit(np.ones((64, 4)), np.zeros((64, 2)), batch_size=16, verbose=0, callbacks=[recorder])
    swa = recorder.checkpoints().mean(0)          # steps 2, 3, 4
    ```
    """

    def __init__(self, num_checkpoints, start=0, every_n_steps=1, ema_decay=0.9, checkpoint_dir=None, **kwargs):
        super().__init__(**kwargs)
        self.num_checkpoints = check_int("num_checkpoints", num_checkpoints, minimum=1)
        self.start = check_int("start", start, minimum=0)
        self.every_n_steps = check_int("every_n_steps", every_n_steps, minimum=1)
        self.ema_decay = None if ema_decay is None else check_probability("ema_decay", ema_decay, high_inclusive=False)
        self.checkpoint_dir = check_checkpoint_dir(checkpoint_dir, type(self).__name__)
        self._flat = None  # FlatWeights of the model, once it has variables
        self._trajectory = None
        self._ready = False  # trajectory matched to the model's variables in this fit
        self._step = None  # global optimizer step at the last batch end
        self._resume_step = None  # drop checkpoints after this step once the trajectory is ready

    def _weights(self):
        model = self.model  # on JAX, `Callback.model` syncs the training state into the variables first
        return self._flat if self._flat is not None else FlatWeights(model)

    def _ensure_trajectory(self):
        """Makes (or reloads) the trajectory once the model has variables, then applies a pending resume."""
        if not self._ready:
            flat = FlatWeights(self.model)
            if flat.size == 0:
                return False  # not built yet
            if self._trajectory is None or self._flat.layout != flat.layout:
                self._trajectory = Trajectory(self.num_checkpoints, flat.size, self.ema_decay, self.checkpoint_dir)
            self._flat, self._ready = flat, True
        if self._resume_step is not None:
            self._trajectory.drop_after(self._resume_step)
            self._resume_step = None
        return True

    def _optimizer_step(self):
        # The one source of the step count (`self.model` syncs the JAX training state first).
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        self._ready, self._step = False, None
        self._ensure_trajectory()
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self._step is None:
            # First epoch of this fit, after every on_train_begin (BackupAndRestore restores there):
            # checkpoints taken after the restored step belong to a rolled-back segment.
            self._step = self._resume_step = self._optimizer_step()
            self._ensure_trajectory()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        previous, self._step = self._step, self._optimizer_step()
        previous = self._step - 1 if previous is None else previous
        if checkpoint_due(previous, self._step, self.start, self.every_n_steps) and self._ensure_trajectory():
            # `_optimizer_step` read `self.model`, which on JAX synced the variables of this step.
            self._trajectory.record_weights(self._flat, self._step)

    def on_epoch_end(self, epoch, logs=None):
        # Where `BackupAndRestore` backs up: a run resumed from here restarts its EMA from this mark.
        if self._trajectory is not None and self._ready:
            self._trajectory.mark()
        super().on_epoch_end(epoch, logs)

    @property
    def model_size(self):
        """Number of float weights stored per checkpoint (`P`)."""
        return 0 if self._flat is None else self._flat.size

    @property
    def num_stored(self):
        """Number of checkpoints currently kept."""
        return 0 if self._trajectory is None else len(self._trajectory)

    @property
    def checkpoint_steps(self):
        """Global steps of the kept checkpoints, oldest first (numpy int array)."""
        return np.zeros(0, np.int64) if self._trajectory is None else self._trajectory.steps

    @property
    def ema_weights(self):
        """The running EMA of every checkpoint recorded (a `(P,)` float32 array), or None before the first."""
        return None if self._trajectory is None else self._trajectory.ema.average

    def checkpoints(self):
        """The kept checkpoints as a `(num_stored, P)` float32 array, oldest first (a copy).

        Row `i` is the flat float weights of checkpoint `i`, in the order of
        `model.trainable_variables + model.non_trainable_variables` (see `FlatWeights`).

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.recorder import TrajectoryRecorder

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        recorder = TrajectoryRecorder(num_checkpoints=3)
        model.fit(np.ones((64, 4)), np.zeros((64, 2)), batch_size=16, verbose=0, callbacks=[recorder])
        assert recorder.checkpoints().shape == (3, 10) and recorder.checkpoint_steps.tolist() == [2, 3, 4]
        ```
        """
        return np.zeros((0, 0), np.float32) if self._trajectory is None else self._trajectory.checkpoints()

    def current_weights(self):
        """The model's current float weights in the checkpoints' layout (a `(P,)` float32 array).

        Example:

        ```python
        import keras
        from keras_wtrain.averaging.recorder import TrajectoryRecorder

        recorder = TrajectoryRecorder(num_checkpoints=2)
        recorder.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        assert recorder.current_weights().shape == (10,)
        ```
        """
        return self._weights().read()

    def get_config(self):
        """Constructor arguments.

        Example:

        ```python
        from keras_wtrain.averaging.recorder import TrajectoryRecorder

        config = TrajectoryRecorder(num_checkpoints=5, start=100).get_config()
        assert TrajectoryRecorder.from_config(config).get_config() == config
        ```
        """
        return {
            "num_checkpoints": self.num_checkpoints,
            "start": self.start,
            "every_n_steps": self.every_n_steps,
            "ema_decay": self.ema_decay,
            "checkpoint_dir": self.checkpoint_dir,
        }

    @classmethod
    def from_config(cls, config):
        """Builds the recorder from `get_config()` output.

        Example:

        ```python
        from keras_wtrain.averaging.recorder import TrajectoryRecorder

        recorder = TrajectoryRecorder.from_config({"num_checkpoints": 3})
        ```
        """
        return cls(**config)
