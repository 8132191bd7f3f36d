"""Fault tolerance: a `fit` killed with SIGKILL mid-epoch and resumed with `keras.callbacks.BackupAndRestore`.

For each callback, a worker process (`_fault_worker.py`) trains 3 epochs of 16 steps (Adam, no shuffling, a
Dense(32)-Dense(4) model) with `BackupAndRestore(save_freq="epoch")` and the callback; after optimizer step 26 (epoch
1, batch 9: ten steps past the epoch-0 backup at step 16) it writes a marker and the test sends it SIGKILL. A second
process resumes from the backup (and the callback's own files) to the end; in the same process the same training
runs uninterrupted in fresh directories. The final weights (for weight averaging: the installed average, the raw
weights kept beside it and, for LAWA and SeWA, the recorded trajectory) of the resumed and uninterrupted runs must
agree to `ATOL` (float32; they are in fact bit-identical).

`save_freq="epoch"` on purpose: Keras 3 `BackupAndRestore` with an integer `save_freq` restores mid-epoch weights
but restarts the epoch at its first batch (only the epoch is read back from `training_metadata.json`), so even a
plain `keras.Model` would then not resume to the uninterrupted weights.
"""

import json
import os
import signal

import numpy as np
import pytest
from _subprocesses import wait_for_file

pytestmark = pytest.mark.tensorflow_only

KILL_STEP = 26  # epoch 1, batch 9 (16 steps per epoch)
BACKUP_EPOCH = 1  # the backup holds the state after epoch 0 (step 16)
ATOL = 1e-6
START_TIMEOUT_S = 180  # import + training up to the kill step, with every worker sharing two cores
FINISH_TIMEOUT_S = 240

CASES = {
    "swa": None,
    "ema": None,
    "lawa": None,
    "sewa": None,
    "optimum_shifting": None,
    "optimum_shifting_after_backup": (
        "callback order: with BackupAndRestore listed before OptimumShifting the epoch-end backup is written before "
        "the shift (Keras runs callbacks in list order), so the resumed run starts epoch 1 from unshifted weights"
    ),
    "weight_normalization_init": None,
}


class HarnessError(RuntimeError):
    """The kill/resume machinery did not do what the test needs (never an expected failure)."""


@pytest.fixture(scope="module")
def fault_runs(processes, tmp_path_factory):
    """Kills every case mid-epoch (all workers at once), then resumes and reruns them all in one worker."""
    workdir = tmp_path_factory.mktemp("faults")
    killed = {
        case: processes.start("_fault_worker.py", ["kill", case, workdir, KILL_STEP], workdir / f"{case}.log")
        for case in CASES
    }
    results = {}
    for case, worker in killed.items():
        directory = workdir / case
        try:
            wait_for_file(str(directory / "killpoint.json"), worker, START_TIMEOUT_S)
            os.kill(worker.pid, signal.SIGKILL)
            code = worker.wait(30)
            marker = json.loads((directory / "killpoint.json").read_text())
            metadata = json.loads((directory / "backup" / "training_metadata.json").read_text())
            state_file = directory / "averaging" / "sewa_state.json"  # the ring buffer of LAWA and SeWA
            slot_steps = json.loads(state_file.read_text())["slot_steps"] if state_file.exists() else None
            averages = sorted(path.name for path in (directory / "averaging").glob("average_epoch*.json"))  # SWA, EMA
            results[case] = {
                "code": code,
                "marker": marker,
                "backup": metadata,
                "slot_steps_at_kill": slot_steps,
                "averages_at_kill": averages,
            }
        except (RuntimeError, OSError, ValueError) as error:
            worker.kill()
            results[case] = {"error": f"kill phase: {error}"}
    ready = [case for case in CASES if "error" not in results[case]]
    if ready:
        finisher = processes.start("_fault_worker.py", ["finish", workdir, *ready], workdir / "finish.log")
        try:
            finisher.check(FINISH_TIMEOUT_S)
        except RuntimeError as error:
            for case in ready:
                results[case]["finish_error"] = str(error)
    for case in ready:
        directory = workdir / case
        if (directory / "info.json").exists():
            results[case]["info"] = json.loads((directory / "info.json").read_text())
            results[case]["resumed"] = dict(np.load(directory / "resumed.npz"))
            results[case]["reference"] = dict(np.load(directory / "reference.npz"))
    return results


def _checked(result):
    """The case's results once the harness is known to have killed mid-epoch and resumed from the backup."""
    if "error" in result or "info" not in result:
        raise HarnessError(result.get("error") or result.get("finish_error") or "no results")
    if result["code"] != -signal.SIGKILL:
        raise HarnessError(f"the worker was not killed by SIGKILL: exit status {result['code']}")
    if result["marker"]["step"] != KILL_STEP or result["backup"]["epoch"] != BACKUP_EPOCH:
        raise HarnessError(f"not killed mid-epoch after the epoch-0 backup: {result['marker']}, {result['backup']}")
    resumed, reference = result["info"]["resumed"], result["info"]["reference"]
    if resumed["epochs_run"] != [1, 2] or reference["epochs_run"] != [0, 1, 2]:
        raise HarnessError(f"epochs run: resumed {resumed['epochs_run']}, uninterrupted {reference['epochs_run']}")
    if (resumed["final_step"], reference["final_step"]) != (48, 48):
        raise HarnessError(f"final steps: {resumed['final_step']} and {reference['final_step']}")
    return result


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason))
        if reason
        else case
        for case, reason in CASES.items()
    ],
)
def test_killed_mid_epoch_and_resumed_matches_uninterrupted(fault_runs, case):
    result = _checked(fault_runs[case])
    if case in ("lawa", "sewa"):
        # The kill came after checkpoints past the backup step had been written to disk: the resumed run had to
        # drop them (a rolled-back segment) and keep the earlier ones.
        if not any(step > 16 for step in result["slot_steps_at_kill"] or []):
            raise HarnessError(
                f"no checkpoint after the backup step on disk at the kill: {result['slot_steps_at_kill']}"
            )
    if case in ("swa", "ema"):
        # The kill came after the average of epoch 0 was saved and before epoch 1's: the resumed run must start
        # from the epoch-0 average, not from the updates of epoch 1 that the killed process had made in memory.
        if result["averages_at_kill"] != ["average_epoch000000.json"]:
            raise HarnessError(f"averages on disk at the kill: {result['averages_at_kill']}")
    if case.startswith("optimum_shifting"):
        # Every shift was kept by the loss guard (so each one changed the weights), the epoch-0 one included.
        expected = [["0", True], ["1", True], ["2", True], ["end", True]]
        if result["info"]["reference"]["shifts"] != expected:
            raise HarnessError(f"shifts of the uninterrupted run: {result['info']['reference']['shifts']}")
        if case == "optimum_shifting":
            assert result["info"]["resumed"]["shifts"] == expected[1:]
    resumed, reference = result["resumed"], result["reference"]
    assert sorted(resumed) == sorted(reference)
    for key in sorted(reference):
        np.testing.assert_allclose(resumed[key], reference[key], rtol=0, atol=ATOL, err_msg=f"{case}: {key}")
    if case == "weight_normalization_init":
        assert result["info"]["reference"]["initialized_layers"] == 2
        assert result["info"]["resumed"]["initialized_layers"] == 0  # restored flags: no second data init
    if case in ("swa", "ema", "lawa", "sewa"):
        assert result["info"]["resumed"]["installed"] and result["info"]["reference"]["installed"]
        assert any(key.startswith("raw") for key in reference)  # the raw weights were compared too
    if case in ("swa", "ema"):
        expected = {"swa": 24, "ema": 48}[case]  # every 2nd step / every step of 48
        assert result["info"]["resumed"]["num_averaged"] == result["info"]["reference"]["num_averaged"] == expected
    if case in ("lawa", "sewa"):
        expected = {"lawa": [44, 46, 48], "sewa": list(range(10, 49, 2))}[case]
        assert reference["buffer_steps"].tolist() == expected
    if case == "sewa":
        assert result["info"]["resumed"]["selected_steps"] == result["info"]["reference"]["selected_steps"]
