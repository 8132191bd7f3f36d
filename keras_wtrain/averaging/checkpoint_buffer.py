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

import ctypes
import ctypes.util
import glob
import json
import mmap
import os
import warnings

import numpy as np

from keras_wtrain._core.validation import check_int

__all__ = ["CheckpointBuffer", "release_pages", "rows_dot_vector", "weighted_rows_sum"]

_BUFFER_FILE = "sewa_buffer.npy"
_STATE_FILE = "sewa_state.json"
_ARRAY_FILE = "sewa_{}.npy"  # one file per entry of `arrays`


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
        if state.get("reordering"):
            warnings.warn(
                f"CheckpointBuffer: {self.directory} was being reordered when its process stopped; starting a new "
                "buffer.",
                stacklevel=3,
            )
            return False
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

    def ordered_rows(self):
        """The kept checkpoints, oldest first, as a view of the buffer's own rows (no copy).

        The rows are permuted in place into chronological order first (one row of temporary memory), so the
        selection reads the `T` checkpoints without a second `(T, size)` copy; on disk the memory map is reordered.

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer

        buffer = CheckpointBuffer(capacity=2, size=1)
        for step in (1, 2, 3):                      # step 3 overwrites step 1: slots hold [3, 2]
            buffer.append(np.array([float(step)], "float32"), step)
        assert buffer.ordered_rows().tolist() == [[2.0], [3.0]]
        ```
        """
        order = [int(slot) for slot in self._ordered_slots()]
        n = len(order)
        taken = set(order)
        permutation = order + [slot for slot in range(self.capacity) if slot not in taken]  # new[i] = old[perm[i]]
        if permutation == list(range(self.capacity)):
            return self._rows[:n]
        if self.directory:  # a process killed while rows move must not reopen rows that disagree with their steps
            self.save(metadata={"reordering": True})
        done = [False] * self.capacity
        for first in range(self.capacity):  # cycle by cycle, with one row of temporary memory
            if done[first] or permutation[first] == first:
                done[first] = True
                continue
            saved_row, saved_step = np.array(self._rows[first]), self._slot_steps[first]
            slot = first
            while True:
                done[slot] = True
                source = permutation[slot]
                if source == first:
                    self._rows[slot], self._slot_steps[slot] = saved_row, saved_step
                    release_pages(self._rows[slot])
                    break
                self._rows[slot], self._slot_steps[slot] = self._rows[source], self._slot_steps[source]
                release_pages(self._rows[slot])  # on disk: two rows resident at a time, not all T
                slot = source
        if self.directory:
            self.metadata.pop("reordering", None)
            self.save()
        return self._rows[:n]

    def mean(self, positions=None, chunk_size=1 << 20):
        """The uniform average of the kept checkpoints at `positions` (0 = oldest; None: all), streamed.

        Computed `chunk_size` columns at a time, so it needs one `(size,)` float32 output and a `(T, chunk)`
        temporary, never a `(T, size)` copy (the rows stay in the memory map with `directory`).

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer

        buffer = CheckpointBuffer(capacity=3, size=2)
        for step in (1, 2, 3):
            buffer.append(np.full(2, float(step), "float32"), step)
        assert buffer.mean([1, 2]).tolist() == [2.5, 2.5]
        ```
        """
        slots = self._ordered_slots()
        if positions is not None:
            slots = slots[np.asarray(positions, dtype=np.int64)]
        if len(slots) == 0:
            raise ValueError("no checkpoint is kept; there is nothing to average.")
        out = np.empty(self.size, np.float32)
        for begin in range(0, self.size, chunk_size):
            block = self._rows[slots, begin : begin + chunk_size]
            out[begin : begin + chunk_size] = block.mean(axis=0, dtype=np.float32)
            release_pages(self._rows[:, begin : begin + chunk_size])  # on disk: one block resident at a time
        return out

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
        self.append_with(lambda row: row.__setitem__(slice(None), flat), step)

    def append_with(self, write, step):
        """Records a checkpoint written by `write(row)` straight into the buffer's row (no intermediate copy).

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer

        buffer = CheckpointBuffer(capacity=2, size=2)
        buffer.append_with(lambda row: row.fill(3.0), step=1)
        assert buffer.checkpoints().tolist() == [[3.0, 3.0]]
        ```
        """
        empty = np.flatnonzero(self._slot_steps < 0)
        slot = int(empty[0]) if len(empty) else int(np.argmin(self._slot_steps))
        write(self._rows[slot])
        self._slot_steps[slot] = int(step)
        release_pages(self._rows[slot])  # on disk: the row reaches the file, not the resident set

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


# ---------------------------------------------------------------------------------------------- streaming
# A memory-mapped buffer's pages count in the process's resident set (VmRSS) once touched, until the kernel
# reclaims them. The helpers below read and write the rows of a memory-mapped buffer a column block at a time
# and drop each block's pages from the process's mappings afterwards (`madvise(MADV_DONTNEED)` on a shared file
# mapping: the data stays in the page cache and in the file, dirty pages are still written back), so going
# through the `T` rows costs one block of resident memory, not `T` rows. Arrays in memory are left alone.

_STREAM_COLUMNS = 1 << 20  # columns per block: T × 4 MiB of float32 rows
_SHARED_MODES = ("r", "r+", "w+", "readonly", "readwrite", "write")
_LIBC = None


def _shared_mapping(array):
    """The `np.memmap` (shared file mapping) under `array`, following `.base`; None for memory arrays."""
    while array is not None:
        if isinstance(array, np.memmap):
            return array if array._mmap is not None and array.mode in _SHARED_MODES else None
        array = getattr(array, "base", None)
    return None


def release_pages(array):
    """Drops the pages of a shared memory-mapped `array` (or a view of one) from the resident set; no-op otherwise.

    Only whole pages inside the array's bytes are released (its first and last partial pages stay). The data
    is kept: the mapping is a shared file mapping, so the pages stay in the page cache (and reach the file).

    Example:

    ```python
    import tempfile

    import numpy as np
    from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer, release_pages

    buffer = CheckpointBuffer(capacity=2, size=4096, directory=tempfile.mkdtemp())
    buffer.append(np.ones(4096, "float32"), step=1)
    release_pages(buffer.ordered_rows())           # out of the resident set, still on disk
    assert buffer.mean().tolist() == [1.0] * 4096
    ```
    """
    global _LIBC
    if _shared_mapping(array) is None or array.size == 0:
        return
    if not array.flags.c_contiguous:
        if array.ndim > 1:
            for row in array:
                release_pages(row)
        return
    page = mmap.PAGESIZE
    address = array.__array_interface__["data"][0]
    begin, end = -(-address // page) * page, (address + array.nbytes) // page * page
    if end <= begin:
        return
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _LIBC.madvise(ctypes.c_void_p(begin), ctypes.c_size_t(end - begin), mmap.MADV_DONTNEED)


def weighted_rows_sum(weights, rows):
    """`weights @ rows` as float32, `(T,)` weights and `(T, P)` rows; memory-mapped rows are streamed.

    In memory this is the float32 product itself. On a memory map it is computed a column block at a time
    (each output element is the same dot product over the `T` rows) and every block's pages are released, so
    the `T` rows never become resident together.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.checkpoint_buffer import weighted_rows_sum

    rows = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    assert weighted_rows_sum(np.array([0.5, 0.5], "float32"), rows).tolist() == [2.0, 3.0]
    ```
    """
    weights = np.asarray(weights, np.float32)
    if _shared_mapping(rows) is None:
        return weights @ rows
    out = np.empty(rows.shape[1], np.float32)
    for begin in range(0, rows.shape[1], _STREAM_COLUMNS):
        block = rows[:, begin : begin + _STREAM_COLUMNS]
        out[begin : begin + _STREAM_COLUMNS] = weights @ block
        release_pages(block)
    return out


def rows_dot_vector(rows, vector, dtype=np.float32):
    """`rows @ vector` (length `T`) computed in `dtype`, a column block at a time (no `(T, P)` temporary).

    The rows are cast to `dtype` one `(T, block)` slice at a time (a float64 product of float32 rows needs no
    float64 copy of all of them), and memory-mapped rows are released block by block.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.checkpoint_buffer import rows_dot_vector

    rows = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    assert rows_dot_vector(rows, np.array([1.0, 1.0]), np.float64).tolist() == [3.0, 7.0]
    ```
    """
    vector = np.asarray(vector, dtype)
    out = np.zeros(rows.shape[0], dtype)
    for begin in range(0, rows.shape[1], _STREAM_COLUMNS):
        block = rows[:, begin : begin + _STREAM_COLUMNS]
        out += block.astype(dtype, copy=False) @ vector[begin : begin + _STREAM_COLUMNS]
        release_pages(block)
    return out
