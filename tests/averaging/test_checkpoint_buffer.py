"""CheckpointBuffer (ring buffer, disk spill, resumption) and Trajectory (buffer + EMA + rollback)."""

import json
import os

import numpy as np
import pytest

from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer
from keras_wtrain.averaging.trajectory import Trajectory
from keras_wtrain.averaging.trajectory import checkpoint_due


def _row(step, size=4):
    return np.arange(size, dtype=np.float32) + step


def test_ring_buffer_keeps_the_latest_oldest_first():
    buffer = CheckpointBuffer(capacity=3, size=4)
    assert len(buffer) == 0 and buffer.checkpoints().shape == (0, 4)
    for step in (2, 4, 6, 8, 10):
        buffer.append(_row(step), step)
    assert buffer.steps.tolist() == [6, 8, 10]
    np.testing.assert_array_equal(buffer.checkpoints(), np.stack([_row(6), _row(8), _row(10)]))
    assert buffer.drop_after(7) == 2 and buffer.steps.tolist() == [6]
    buffer.append(_row(8), 8)
    buffer.append(_row(9), 9)
    buffer.append(_row(10), 10)  # full again: overwrites step 6
    assert buffer.steps.tolist() == [8, 9, 10]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="`capacity`"):
        CheckpointBuffer(capacity=0, size=3)
    with pytest.raises(TypeError, match="`size`"):
        CheckpointBuffer(capacity=2, size=3.0)
    with pytest.raises(ValueError, match="`flat`"):
        CheckpointBuffer(capacity=2, size=3).append(np.zeros(4), 1)


def test_disk_buffer_is_memory_mapped_and_resumes(tmp_path):
    directory = str(tmp_path / "buffer")
    buffer = CheckpointBuffer(capacity=3, size=4, directory=directory)
    assert not buffer.resumed
    for step in (1, 2, 3, 4):
        buffer.append(_row(step), step)
    buffer.save(arrays={"ema": np.full(4, 0.5, np.float32)}, metadata={"ema_count": 4, "ema_step": 4})
    on_disk = np.load(os.path.join(directory, "sewa_buffer.npy"), mmap_mode="r")
    assert on_disk.shape == (3, 4)
    reopened = CheckpointBuffer(capacity=3, size=4, directory=directory)
    assert reopened.resumed and reopened.steps.tolist() == [2, 3, 4]
    np.testing.assert_array_equal(reopened.checkpoints(), buffer.checkpoints())
    assert reopened.metadata == {"ema_count": 4, "ema_step": 4}
    np.testing.assert_array_equal(reopened.arrays["ema"], np.full(4, 0.5))


def test_disk_buffer_of_another_shape_starts_new(tmp_path):
    directory = str(tmp_path / "buffer")
    buffer = CheckpointBuffer(capacity=3, size=4, directory=directory)
    buffer.append(_row(1), 1)
    buffer.save()
    with pytest.warns(UserWarning, match="starting a new buffer"):
        other = CheckpointBuffer(capacity=3, size=5, directory=directory)
    assert not other.resumed and len(other) == 0


def test_checkpoint_due_schedule():
    # Checkpoints due at 3, 5, 7, ...: one step per batch end ...
    due = [s for s in range(1, 12) if checkpoint_due(s - 1, s, start=3, every_n_steps=2)]
    assert due == [3, 5, 7, 9, 11]
    # ... and with several steps per batch end (steps_per_execution=3): 3 crosses 3, 6 crosses 5, 9 crosses 7 and 9.
    due = [s for s in (3, 6, 9, 12) if checkpoint_due(s - 3, s, start=3, every_n_steps=2)]
    assert due == [3, 6, 9, 12]
    assert not checkpoint_due(0, 2, start=3, every_n_steps=2)


def test_trajectory_ema_and_rollback_match_numpy(tmp_path):
    rows = {step: _row(step) * (-1) ** step for step in range(1, 7)}
    trajectory = Trajectory(capacity=3, size=4, ema_decay=0.6, directory=str(tmp_path / "t"))
    for step, row in rows.items():
        trajectory.record(row, step)

    def numpy_ema(steps):
        ema = rows[steps[0]].astype(np.float64)
        for s in steps[1:]:
            ema = 0.6 * ema + 0.4 * rows[s]
        return ema

    np.testing.assert_allclose(trajectory.ema.average, numpy_ema([1, 2, 3, 4, 5, 6]), rtol=1e-5, atol=1e-6)
    # A new process resumes buffer and EMA from the directory.
    reopened = Trajectory(capacity=3, size=4, ema_decay=0.6, directory=str(tmp_path / "t"))
    assert reopened.steps.tolist() == [4, 5, 6] and reopened.ema.count == 6 and reopened.ema.step == 6
    np.testing.assert_allclose(reopened.ema.average, trajectory.ema.average)
    # Rolling back to step 4 drops 5 and 6; the EMA saw them, so it is rebuilt from the kept checkpoint.
    assert reopened.drop_after(4) == 2
    assert reopened.steps.tolist() == [4] and reopened.ema.step == 4 and reopened.ema.count == 1
    np.testing.assert_allclose(reopened.ema.average, numpy_ema([4]))
    assert reopened.drop_after(4) == 0


def test_trajectory_rollback_restarts_the_ema_from_its_mark_in_a_new_process(tmp_path):
    rows = {step: _row(step) * (-1) ** step for step in range(1, 10)}

    def numpy_ema(steps):
        ema = rows[steps[0]].astype(np.float64)
        for s in steps[1:]:
            ema = 0.6 * ema + 0.4 * rows[s]
        return ema

    directory = str(tmp_path / "t")
    trajectory = Trajectory(capacity=2, size=4, ema_decay=0.6, directory=directory)
    for step in range(1, 5):
        trajectory.record(rows[step], step)
    trajectory.mark()  # an epoch end at step 4 (a backup)
    mark_file = os.path.join(directory, "sewa_ema_mark.npy")
    written = os.stat(mark_file).st_mtime_ns
    for step in range(5, 9):  # the 2-slot ring buffer overwrites every checkpoint up to step 6
        trajectory.record(rows[step], step)
    assert os.stat(mark_file).st_mtime_ns == written  # the copy is written once per mark, not per checkpoint
    # A new process resumes from the backup at step 4: the EMA is the one of steps 1-4, though the buffer no
    # longer holds any of them.
    reopened = Trajectory(capacity=2, size=4, ema_decay=0.6, directory=directory)
    assert reopened.ema_mark.step == 4 and reopened.ema_mark.count == 4
    assert reopened.drop_after(4) == 2 and len(reopened) == 0
    assert reopened.ema.step == 4 and reopened.ema.count == 4
    np.testing.assert_allclose(reopened.ema.average, numpy_ema([1, 2, 3, 4]), rtol=1e-5, atol=1e-6)
    # Training goes on from step 4, with an epoch end (mark) at step 6, and is rolled back there once more.
    for step in (5, 6):
        reopened.record(rows[step], step)
    reopened.mark()
    for step in (7, 8):
        reopened.record(rows[step], step)
    assert reopened.drop_after(6) == 2 and len(reopened) == 0  # steps 5 and 6 were overwritten too
    np.testing.assert_allclose(reopened.ema.average, numpy_ema([1, 2, 3, 4, 5, 6]), rtol=1e-5, atol=1e-6)
    # A mark taken after the resumed step belongs to the rolled-back segment: dropped, also from the disk, and
    # the EMA is rebuilt from the kept checkpoints.
    other = str(tmp_path / "other")
    trajectory = Trajectory(capacity=3, size=4, ema_decay=0.6, directory=other)
    for step in (1, 2, 3):
        trajectory.record(rows[step], step)
    trajectory.mark()
    assert trajectory.drop_after(2) == 1 and trajectory.ema_mark is None and trajectory.steps.tolist() == [1, 2]
    np.testing.assert_allclose(trajectory.ema.average, numpy_ema([1, 2]), rtol=1e-5, atol=1e-6)
    assert Trajectory(capacity=3, size=4, ema_decay=0.6, directory=other).ema_mark is None


def test_trajectory_reads_a_directory_written_by_the_previous_version(tmp_path):
    # The layout written before the split: sewa_buffer.npy, sewa_ema.npy and a flat sewa_state.json.
    directory = tmp_path / "old"
    directory.mkdir()
    rows = np.lib.format.open_memmap(directory / "sewa_buffer.npy", mode="w+", dtype=np.float32, shape=(3, 2))
    rows[:] = [[1, 1], [2, 2], [0, 0]]
    rows.flush()
    np.save(directory / "sewa_ema.npy", np.array([1.5, 1.5], np.float32))
    state = {"shape": [3, 2], "slot_steps": [10, 20, -1], "ema_count": 2, "ema_step": 20}
    (directory / "sewa_state.json").write_text(json.dumps(state))
    trajectory = Trajectory(capacity=3, size=2, ema_decay=0.5, directory=str(directory))
    assert trajectory.steps.tolist() == [10, 20]
    assert trajectory.ema.average.tolist() == [1.5, 1.5] and trajectory.ema.count == 2 and trajectory.ema.step == 20
