"""A ring buffer of the last `T` flat weight checkpoints on the host, in memory or memory-mapped on disk.

Each checkpoint is a flat float32 vector (see `FlatWeights`) recorded with its global step. When the
buffer is full a new checkpoint overwrites the oldest one. With a `directory`, the rows live in a
memory-mapped `.npy` file (streamed by the operating system) and `save()` writes the step table,
plus any arrays and metadata its owner adds (e.g. a running EMA), so a new process reopens the
buffer where it was.

Example:

```python
import numpy as np
from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer

buffer = CheckpointBuffer(capacity=3, size=2)
for step in (10, 20, 30, 40):                      # the fourth overwrites step 10
    buffer.append(np.full(2, step, "float32"), step)
assert buffer.steps.tolist() == [20, 30, 40]
assert buffer.checkpoints()[:, 0].tolist() == [20.0, 30.0, 40.0]
```
"""

import glob
import json
import os
import warnings

import numpy as np

from keras_wtrain._core.validation import check_int

__all__ = ["CheckpointBuffer"]

_BUFFER_FILE = "sewa_buffer.npy"
_STATE_FILE = "sewa_state.json"
_ARRAY_FILE = "sewa_{}.npy"  # sewa_ema.npy for the running EMA of SelectiveWeightAveraging


class CheckpointBuffer:
    """The last `capacity` flat checkpoints and their global steps, oldest first.

    Host memory (or disk, with `directory`) is `capacity × size × 4` bytes. On disk the directory
    holds `sewa_buffer.npy` (the rows, memory-mapped), `sewa_state.json` (shape, steps per slot,
    metadata) and one `sewa_<name>.npy` per entry of `arrays`. Opening a directory that holds a
    buffer of the same shape resumes it (`resumed` is True); another shape starts a new buffer
    (with a warning).

    Rows are written through the memory map by `append`; the step table, `arrays` and `metadata`
    reach the disk at `save()`.

    Args:
        capacity: number of checkpoints kept (`T`), a positive int.
        size: floats per checkpoint (`P`), an int >= 0.
        directory: optional directory for a disk-backed, resumable buffer.

    Attributes:
        arrays: dict of extra numpy arrays saved with the buffer (loaded back when resuming).
        metadata: dict of extra JSON values saved with the buffer (loaded back when resuming).
        resumed: whether the buffer was reloaded from `directory`.

    Example:

    ```python
    import tempfile

    import numpy as np
    from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer

    directory = tempfile.mkdtemp()
    buffer = CheckpointBuffer(capacity=4, size=3, directory=directory)
    buffer.append(np.ones(3, "float32"), step=5)
    buffer.save(metadata={"note": "after step 5"})
    reopened = CheckpointBuffer(capacity=4, size=3, directory=directory)   # e.g. in a new process
    assert reopened.resumed and reopened.steps.tolist() == [5] and reopened.metadata["note"] == "after step 5"
    ```
    """

    def __init__(self, capacity, size, directory=None):
        self.capacity = check_int("capacity", capacity, minimum=1)
        self.size = check_int("size", size, minimum=0)
        self.directory = directory
        self.arrays = {}
        self.metadata = {}
        self.resumed = False
        shape = (self.capacity, self.size)
        if directory:
            os.makedirs(directory, exist_ok=True)
            self.resumed = self._load(shape)
            if not self.resumed:
                self._rows = np.lib.format.open_memmap(
                    os.path.join(directory, _BUFFER_FILE), mode="w+", dtype=np.float32, shape=shape
                )
        else:
            self._rows = np.zeros(shape, np.float32)
        if not self.resumed:
            self._slot_steps = np.full(self.capacity, -1, np.int64)  # -1 = empty slot

    def _load(self, shape):
        state_path = os.path.join(self.directory, _STATE_FILE)
        rows_path = os.path.join(self.directory, _BUFFER_FILE)
        if not (os.path.exists(state_path) and os.path.exists(rows_path)):
            return False
        with open(state_path) as f:
            state = json.load(f)
        if tuple(state["shape"]) != shape:
            warnings.warn(
                f"CheckpointBuffer: {self.directory} holds a buffer of shape {tuple(state['shape'])}, "
                f"{shape} is needed; starting a new buffer.",
                stacklevel=3,
            )
            return False
        self._rows = np.lib.format.open_memmap(rows_path, mode="r+")
        self._slot_steps = np.asarray(state["slot_steps"], np.int64)
        self.metadata = {key: value for key, value in state.items() if key not in ("shape", "slot_steps")}
        prefix, suffix = _ARRAY_FILE.split("{}")
        for path in glob.glob(os.path.join(self.directory, _ARRAY_FILE.format("*"))):
            name = os.path.basename(path)[len(prefix) : -len(suffix)]
            if name != "buffer":
                self.arrays[name] = np.load(path)
        return True

    def __len__(self):
        return int((self._slot_steps >= 0).sum())

    def _ordered_slots(self):
        filled = np.flatnonzero(self._slot_steps >= 0)
        return filled[np.argsort(self._slot_steps[filled], kind="stable")]

    @property
    def steps(self):
        """Global steps of the kept checkpoints, oldest first (a numpy int64 array, a copy)."""
        return self._slot_steps[self._ordered_slots()].copy()

    def checkpoints(self):
        """The kept checkpoints as a `(len(self), size)` float32 array, oldest first (a copy).

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer

        buffer = CheckpointBuffer(capacity=2, size=1)
        buffer.append(np.array([7.0], "float32"), step=1)
        assert buffer.checkpoints().tolist() == [[7.0]]
        ```
        """
        return np.asarray(self._rows[self._ordered_slots()], np.float32)

    def append(self, flat, step):
        """Records checkpoint `flat` (a `(size,)` vector) taken at global `step`, replacing the oldest when full.

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer

        buffer = CheckpointBuffer(capacity=2, size=1)
        buffer.append(np.zeros(1, "float32"), step=3)
        assert len(buffer) == 1
        ```
        """
        flat = np.asarray(flat, np.float32).reshape(-1)
        if flat.shape != (self.size,):
            raise ValueError(f"argument `flat` must have shape ({self.size},); received shape {flat.shape}.")
        empty = np.flatnonzero(self._slot_steps < 0)
        slot = int(empty[0]) if len(empty) else int(np.argmin(self._slot_steps))
        self._rows[slot] = flat
        self._slot_steps[slot] = int(step)

    def drop_after(self, step):
        """Forgets the checkpoints taken after global `step` (a rolled-back segment); returns how many.

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer

        buffer = CheckpointBuffer(capacity=3, size=1)
        for step in (1, 2, 3):
            buffer.append(np.zeros(1, "float32"), step)
        assert buffer.drop_after(1) == 2 and buffer.steps.tolist() == [1]
        ```
        """
        future = self._slot_steps > step
        self._slot_steps[future] = -1
        return int(future.sum())

    def save(self, arrays=None, metadata=None):
        """Updates `arrays` / `metadata` and, with a `directory`, writes the buffer's state to disk.

        The state file is replaced atomically, so an interruption leaves the previous state readable.
        Only the arrays given in this call are written (the others were written when they were given).

        Args:
            arrays: optional dict of numpy arrays to keep with the buffer (merged into `arrays`).
            metadata: optional dict of JSON values to keep with the buffer (merged into `metadata`).

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer

        buffer = CheckpointBuffer(capacity=2, size=1)   # in memory: save() only updates the dicts
        buffer.save(arrays={"ema": np.zeros(1)}, metadata={"ema_count": 0})
        ```
        """
        self.arrays.update(arrays or {})
        self.metadata.update(metadata or {})
        if not self.directory:
            return
        self._rows.flush()
        for name, value in (arrays or {}).items():
            np.save(os.path.join(self.directory, _ARRAY_FILE.format(name)), value)
        state = {"shape": [self.capacity, self.size], "slot_steps": self._slot_steps.tolist(), **self.metadata}
        path = os.path.join(self.directory, _STATE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)
