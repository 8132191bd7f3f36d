"""The recorded training trajectory of weight averaging: kept checkpoints, running EMA, rollback.

`Trajectory` pairs a `CheckpointBuffer` (the last `T` checkpoints) with the EMA of every checkpoint
recorded since the start (`averaging.ema_accumulate`), saves both together (so a disk-backed
trajectory resumes in a new process), and rolls both back when training resumes from an earlier
step: the EMA from the copy `mark()` saved (the recorders mark it at every epoch end, where
`keras.callbacks.BackupAndRestore` backs up), so checkpoints the ring buffer has overwritten still
count. `checkpoint_due` is the schedule: which global steps are checkpointed.

Example:

```python
import numpy as np
from keras_wtrain.averaging.trajectory import Trajectory, checkpoint_due

trajectory = Trajectory(capacity=2, size=1, ema_decay=0.5)
for step in range(1, 8):
    if checkpoint_due(step - 1, step, start=3, every_n_steps=2):   # steps 3, 5, 7
        trajectory.record(np.array([float(step)], "float32"), step)
assert trajectory.steps.tolist() == [5, 7] and trajectory.ema.average.tolist() == [5.5]
```
"""

import numpy as np

from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer
from keras_wtrain.averaging.rules import EmaState
from keras_wtrain.averaging.rules import ema_accumulate

__all__ = ["Trajectory", "checkpoint_due"]


def checkpoint_due(previous_step, step, start, every_n_steps):
    """Whether a checkpoint is due after moving from global `previous_step` to `step`.

    Checkpoints are due at steps `start`, `start + every_n_steps`, ...; with `steps_per_execution > 1`
    several steps pass between two batch ends, and one checkpoint is due if a due step was crossed.

    Example:

    ```python
    from keras_wtrain.averaging.trajectory import checkpoint_due

    assert checkpoint_due(4, 5, start=3, every_n_steps=2)
    assert not checkpoint_due(5, 6, start=3, every_n_steps=2)
    assert checkpoint_due(2, 6, start=3, every_n_steps=2)   # 4 steps at once cross steps 3 and 5
    ```
    """
    if step < start:
        return False
    due_before = (previous_step - start) // every_n_steps if previous_step >= start else -1
    return (step - start) // every_n_steps > due_before


class Trajectory:
    """The last `capacity` checkpoints of a run and the EMA of all its checkpoints, saved together.

    Args:
        capacity: checkpoints kept (`T`), a positive int.
        size: floats per checkpoint (`P`).
        ema_decay: EMA decay per checkpoint, in [0, 1); None keeps no EMA.
        directory: optional directory of a disk-backed, resumable buffer (see `CheckpointBuffer`);
            the EMA is saved there as `sewa_ema.npy` with its count and last step in the state file, its
            last `mark()` as `sewa_ema_mark.npy`.

    Attributes:
        buffer: the `CheckpointBuffer`.
        ema: the `EmaState` of every checkpoint recorded (and not rolled back).
        ema_mark: the `EmaState` saved by the last `mark()` (None before one), where a rollback restarts the EMA.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.trajectory import Trajectory

    trajectory = Trajectory(capacity=3, size=2, ema_decay=0.9)
    trajectory.record(np.ones(2, "float32"), step=10)
    assert len(trajectory) == 1 and trajectory.ema.step == 10
    ```
    """

    def __init__(self, capacity, size, ema_decay, directory=None):
        self.ema_decay = ema_decay
        self.buffer = CheckpointBuffer(capacity, size, directory=directory)
        count = int(self.buffer.metadata.get("ema_count", 0))
        average = self.buffer.arrays.get("ema") if count else None
        step = int(self.buffer.metadata.get("ema_step", -1))
        self.ema = EmaState(average, count, step) if average is not None else EmaState()
        mark = self.buffer.arrays.get("ema_mark")
        metadata = self.buffer.metadata
        self.ema_mark = (
            EmaState(np.array(mark), int(metadata["ema_mark_count"]), int(metadata["ema_mark_step"]))
            if mark is not None and "ema_mark_count" in metadata
            else None
        )

    def __len__(self):
        return len(self.buffer)

    @property
    def steps(self):
        """Global steps of the kept checkpoints, oldest first."""
        return self.buffer.steps

    def checkpoints(self):
        """The kept checkpoints, a `(len(self), size)` float32 array, oldest first.

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.trajectory import Trajectory

        trajectory = Trajectory(capacity=2, size=1, ema_decay=0.0)
        trajectory.record(np.zeros(1, "float32"), step=1)
        assert trajectory.checkpoints().shape == (1, 1)
        ```
        """
        return self.buffer.checkpoints()

    def _save(self, mark_changed=False):
        arrays = {} if self.ema.average is None else {"ema": self.ema.average}
        metadata = {"ema_count": self.ema.count, "ema_step": self.ema.step}
        if self.ema_mark is not None:
            if mark_changed:  # written once per mark, not at every checkpoint
                arrays["ema_mark"] = self.ema_mark.average
            metadata.update(ema_mark_count=self.ema_mark.count, ema_mark_step=self.ema_mark.step)
        else:  # no mark, or one dropped with a rolled-back segment: a reopened buffer must not find it
            self.buffer.metadata.pop("ema_mark_count", None)
            self.buffer.metadata.pop("ema_mark_step", None)
        self.buffer.save(arrays=arrays, metadata=metadata)

    def mark(self):
        """Saves a copy of the EMA as it is now: a later `drop_after` at or after its step restarts from it.

        Marked where training may later resume (the recorders call it at every epoch end, where
        `keras.callbacks.BackupAndRestore` backs up), so the EMA of a rolled-back run counts every
        checkpoint before the resumed step, also those the ring buffer no longer holds.

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.trajectory import Trajectory

        trajectory = Trajectory(capacity=1, size=1, ema_decay=0.5)
        for step in (1, 2):
            trajectory.record(np.array([float(step)], "float32"), step)
        trajectory.mark()                                    # EMA of steps 1 and 2: 1.5
        trajectory.record(np.array([3.0], "float32"), 3)     # overwrites step 2 in the 1-slot buffer
        trajectory.drop_after(2)                             # resume from step 2
        assert trajectory.ema.average.tolist() == [1.5]      # not rebuilt from the kept checkpoints
        ```
        """
        if self.ema.average is None:
            return
        self.ema_mark = EmaState(np.array(self.ema.average, np.float32), self.ema.count, self.ema.step)
        self._save(mark_changed=True)

    def record(self, flat, step):
        """Keeps checkpoint `flat` of global `step` and folds it into the EMA; saves both.

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.trajectory import Trajectory

        trajectory = Trajectory(capacity=2, size=1, ema_decay=0.5)
        trajectory.record(np.zeros(1, "float32"), step=1)
        trajectory.record(np.ones(1, "float32"), step=2)
        assert trajectory.ema.average.tolist() == [0.5]
        ```
        """
        flat = np.asarray(flat, np.float32)
        self.buffer.append(flat, step)
        if self.ema_decay is not None:  # None: no EMA kept (one copy of the weights less)
            self.ema = ema_accumulate(self.ema, flat, step, self.ema_decay)
        self._save()

    def record_weights(self, flat_weights, step):
        """Keeps the current weights of a `FlatWeights` at global `step`, read straight into the buffer's row.

        Example:

        ```python
        import keras
        from keras_wtrain.averaging.flat_weights import FlatWeights
        from keras_wtrain.averaging.trajectory import Trajectory

        flats = FlatWeights(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        trajectory = Trajectory(capacity=2, size=flats.size, ema_decay=None)
        trajectory.record_weights(flats, step=1)
        assert len(trajectory) == 1
        ```
        """
        if self.ema_decay is not None:
            self.record(flat_weights.read(), step)
            return
        self.buffer.append_with(flat_weights.read_into, step)
        self._save()

    def drop_after(self, step):
        """Forgets checkpoints taken after global `step` (a rolled-back segment); returns how many.

        If the EMA saw a dropped checkpoint it restarts from the last `mark()` at or before `step` and
        folds in the kept checkpoints after the mark; without such a mark it is rebuilt from the kept
        checkpoints only (those the ring buffer overwrote are then missing from it).

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.trajectory import Trajectory

        trajectory = Trajectory(capacity=3, size=1, ema_decay=0.5)
        for step in (1, 2, 3):
            trajectory.record(np.array([float(step)], "float32"), step)
        assert trajectory.drop_after(1) == 2 and trajectory.ema.average.tolist() == [1.0]
        ```
        """
        dropped = self.buffer.drop_after(step)
        if not dropped:
            return 0
        if self.ema_mark is not None and self.ema_mark.step > step:
            self.ema_mark = None  # marked in the rolled-back segment
        if self.ema_decay is not None and self.ema.step > step:
            self.ema = EmaState() if self.ema_mark is None else self.ema_mark
            for row, kept_step in zip(self.buffer.checkpoints(), self.buffer.steps):
                if kept_step > self.ema.step:
                    self.ema = ema_accumulate(self.ema, row, kept_step, self.ema_decay)
        self._save(mark_changed=True)
        return dropped
