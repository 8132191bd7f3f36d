"""`compare` spread over processes with Keras Tuner's distributed mode (`keras_wtrain.comparison.distributed`).

Real processes on 127.0.0.1 (`_compare_worker.py`), configured with `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`
and `KERASTUNER_ORACLE_PORT`; the job is tiny (digits, 200 training examples, 2 epochs, no measurements).

Checked: a chief and two workers end with the same runs, run for run, as one process (timings aside), and both
workers trained; a worker killed with SIGKILL in the middle of a run loses it to the other worker once its lease (4 s
here) is over, and the job ends with every run; a worker whose `--model` cannot be imported stops the chief, which
exits 2 with one line naming the worker and the error; a worker whose chief never answers exits 2 with one line
naming `KERASTUNER_ORACLE_IP`/`PORT` after the connect timeout (3 s here).
"""

import json
import socket
import time

import pytest
from _subprocesses import free_ports
from _subprocesses import wait_for_file
from _subprocesses import worker_env

pytestmark = pytest.mark.tensorflow_only

TIMEOUT_S = 240
TIMINGS = ("wall_time_s", "step_time_s", "peak_rss_mib")
JOB = ["weightnorm,loss-noise", "2"]  # techniques (the baseline is added), seeds
SMALL_JOB = ["weightnorm", "1"]
SCRIPT = "_compare_worker.py"


def _env(tuner_id=None, port=None, **extra):
    if tuner_id is None:
        return worker_env(**extra)
    return worker_env(
        KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port), **extra
    )


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _without_timings(runs):
    return [{key: value for key, value in run.items() if key not in TIMINGS} for run in runs]


def _wait_for_port(port, process, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited ({process.proc.returncode}) first:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout}s:\n{process.log_tail()}")
        time.sleep(0.2)


def _cli(out, model):
    """Arguments of `_compare_worker.py cli`: `keras-wtrain compare` with the small job."""
    return [
        "cli",
        "compare",
        "--model",
        model,
        "--dataset",
        "digits",
        "--train-size",
        "200",
        "--epochs",
        "2",
        "--techniques",
        SMALL_JOB[0],
        "--seeds",
        SMALL_JOB[1],
        "--out",
        out,
        "--no-progress",
    ]


def _error_lines(log):
    return [line for line in log.splitlines() if "error" in line.lower()]


def test_chief_and_two_workers_match_one_process(processes, tmp_path):
    (port,) = free_ports(1)
    go = tmp_path / "go"
    chief = processes.start(SCRIPT, [tmp_path / "job", "mlp", *JOB], tmp_path / "chief.log", env=_env("chief", port))
    workers = [
        processes.start(
            SCRIPT,
            [tmp_path / "job", "mlp", *JOB],
            tmp_path / f"{tuner_id}.log",
            env=_env(tuner_id, port, READY_FILE=str(tmp_path / f"ready_{tuner_id}"), GO_FILE=str(go)),
        )
        for tuner_id in ("tuner0", "tuner1")
    ]
    alone = processes.start(SCRIPT, [tmp_path / "alone", "mlp", *JOB], tmp_path / "alone.log", env=_env())
    # Both workers start asking when the chief serves, so each gets a run whichever imported faster.
    for tuner_id, worker in zip(("tuner0", "tuner1"), workers):
        wait_for_file(str(tmp_path / f"ready_{tuner_id}"), worker, TIMEOUT_S)
    _wait_for_port(port, chief, TIMEOUT_S)
    go.touch()
    for process in (*workers, chief, alone):
        process.check(TIMEOUT_S)
    distributed = _read_json(tmp_path / "job" / "results.json")["runs"]
    single = _read_json(tmp_path / "alone" / "results.json")["runs"]
    assert [(run["technique"], run["seed"]) for run in distributed] == [
        (technique, seed) for seed in (0, 1) for technique in ("baseline", "weightnorm", "loss-noise")
    ]
    assert _without_timings(distributed) == _without_timings(single)
    record = _read_json(tmp_path / "job" / "distributed.json")
    assert sorted((entry["technique"], entry["seed"]) for entry in record["runs"]) == sorted(
        (run["technique"], run["seed"]) for run in distributed
    )
    assert {entry["worker"] for entry in record["runs"]} == {"tuner0", "tuner1"}
    assert record["lease_expired"] == [] and record["failure"] is None
    assert not (tmp_path / "job" / "errors").exists()


def test_a_killed_worker_loses_its_run_to_another(processes, tmp_path):
    (port,) = free_ports(1)
    out, marker, go = tmp_path / "job", tmp_path / "stalled", tmp_path / "go"
    lease = {"KERAS_WTRAIN_LEASE_S": "4"}
    args = [out, "instrumented_mlp", *SMALL_JOB]
    chief = processes.start(SCRIPT, args, tmp_path / "chief.log", env=_env("chief", port, **lease))
    stalled = processes.start(
        SCRIPT, args, tmp_path / "tuner0.log", env=_env("tuner0", port, STALL_MARKER=str(marker), **lease)
    )
    other = processes.start(  # imports meanwhile, starts its job when tuner0 is stalled in its first run
        SCRIPT,
        args,
        tmp_path / "tuner1.log",
        env=_env("tuner1", port, READY_FILE=str(tmp_path / "ready"), GO_FILE=str(go), **lease),
    )
    wait_for_file(str(marker), stalled, TIMEOUT_S)  # tuner0 is in its first run, heartbeating
    stalled.kill()
    go.touch()
    other.check(TIMEOUT_S)
    chief.check(TIMEOUT_S)
    runs = _read_json(out / "results.json")["runs"]
    assert [(run["technique"], run["seed"]) for run in runs] == [("baseline", 0), ("weightnorm", 0)]
    record = _read_json(out / "distributed.json")
    assert record["lease_expired"] == [{"technique": "baseline", "seed": 0, "worker": "tuner0"}]
    assert {entry["worker"] for entry in record["runs"]} == {"tuner1"}


@pytest.fixture(scope="module")
def failing_workers(processes, tmp_path_factory):
    """At the same time: a chief with a worker whose --model cannot be imported, a worker without a chief, and a chief
    with a worker whose first run raises."""
    workdir = tmp_path_factory.mktemp("failing")
    chief_port, lonely_port, raising_port = free_ports(3)  # nothing listens on the second
    out = str(workdir / "job")
    started = time.monotonic()
    chief = processes.start(SCRIPT, _cli(out, "mlp"), workdir / "chief.log", env=_env("chief", chief_port))
    bad = processes.start(
        SCRIPT, _cli(out, "no_such_module:build"), workdir / "bad.log", env=_env("tuner0", chief_port)
    )
    lonely = processes.start(
        SCRIPT,
        _cli(str(workdir / "lonely"), "mlp"),
        workdir / "lonely.log",
        env=_env("tuner0", lonely_port, KERAS_WTRAIN_CHIEF_TIMEOUT_S="3"),
    )
    args = [workdir / "raising", "instrumented_mlp", *SMALL_JOB]
    raising_chief = processes.start(SCRIPT, args, workdir / "raising_chief.log", env=_env("chief", raising_port))
    raising = processes.start(SCRIPT, args, workdir / "raising.log", env=_env("tuner0", raising_port, FAIL_IN_RUN="1"))
    named = {"lonely": lonely, "bad": bad, "chief": chief, "raising": raising, "raising_chief": raising_chief}
    codes = {name: process.wait(TIMEOUT_S) for name, process in named.items()}
    return {
        "workdir": workdir,
        "codes": codes,
        "logs": {name: process.log_tail() for name, process in named.items()},
        "lonely_s": time.monotonic() - started,
        "lonely_port": lonely_port,
    }


def test_a_worker_that_cannot_import_its_model_stops_the_chief(failing_workers):
    codes, logs, workdir = failing_workers["codes"], failing_workers["logs"], failing_workers["workdir"]
    assert codes["bad"] == 2, logs["bad"]
    assert codes["chief"] == 2, logs["chief"]
    cause = "--model 'no_such_module:build': cannot import 'no_such_module' (ModuleNotFoundError: No module named"
    lines = _error_lines(logs["chief"])
    assert len(lines) == 1 and lines[0].startswith("keras-wtrain: error: worker tuner0 could not start: "), lines
    assert cause in lines[0]
    assert cause in (workdir / "job" / "errors" / "worker_tuner0.txt").read_text()
    assert _read_json(workdir / "job" / "distributed.json")["failure"].startswith("worker tuner0 could not start")


def test_a_worker_without_a_chief_exits_2_with_one_line(failing_workers):
    logs, port = failing_workers["logs"], failing_workers["lonely_port"]
    assert failing_workers["codes"]["lonely"] == 2, logs["lonely"]
    # Start-up and data, then 3 s: not Keras Tuner's own wait for the chief's gRPC server (1 hour).
    assert failing_workers["lonely_s"] < 120
    lines = _error_lines(logs["lonely"])
    assert len(lines) == 1, lines
    assert lines[0].startswith("keras-wtrain: error: no chief answers at ")
    assert f"KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT={port} after 3 s" in lines[0]


def test_a_run_that_raises_stops_the_job(failing_workers):
    codes, logs, workdir = failing_workers["codes"], failing_workers["logs"], failing_workers["workdir"]
    traceback = workdir / "raising" / "errors" / "baseline__seed0.txt"
    assert codes["raising_chief"] == 3, logs["raising_chief"]  # _compare_worker.py's exit status for an exception
    assert codes["raising"] == 3, logs["raising"]
    chief_line = (
        "DistributedError: run baseline seed 0 failed on worker tuner0: ValueError: boom in the run's model "
        f"(traceback: {traceback})"
    )
    assert _error_lines(logs["raising_chief"]) == [chief_line]
    assert _error_lines(logs["raising"]) == [
        f"DistributedError: run baseline seed 0 failed on this worker: ValueError: boom in the run's model "
        f"(traceback: {traceback})"
    ]
    text = traceback.read_text()
    assert text.startswith("Traceback (most recent call last):") and "ValueError: boom in the run's model" in text
    assert not (workdir / "raising" / "results.json").exists()


def _fake_run(technique, seed):
    accuracy = 0.9 + 0.01 * seed + (0.02 if technique != "baseline" else 0.0)  # the same difference every seed
    return {
        "technique": technique,
        "seed": seed,
        "test_accuracy": accuracy,
        "test_loss": 0.3,
        "wall_time_s": 1.0,
        "step_time_s": 0.01,
        "peak_rss_mib": 100.0,
    }


def test_the_oracle_plans_resumes_leases_and_adds_seeds(tmp_path):
    """The chief's oracle alone, in this process (no training): the protocol a worker sees, request by request."""
    from keras_tuner.engine.trial import TrialStatus

    from keras_wtrain.comparison.distributed import _oracle_class
    from keras_wtrain.comparison.store import RunStore

    store = RunStore(tmp_path / "job", {"epochs": 1})
    store.save(_fake_run("baseline", 0))  # finished before: skipped
    oracle = _oracle_class()(store, ["baseline", "sewa"], 2, 0.5, 4, 60.0, False)
    oracle._set_project_dir(str(tmp_path / "oracle"), "oracle")

    def ask(tuner_id):
        trial = oracle.create_trial(tuner_id)
        values = trial.hyperparameters.values
        return trial, (values["technique"], values["seed"]) if trial.status == TrialStatus.RUNNING else trial.status

    def finish(trial, status=TrialStatus.COMPLETED):
        values = trial.hyperparameters.values
        if status == TrialStatus.COMPLETED:
            store.save(_fake_run(values["technique"], values["seed"]))
        trial.status = status
        oracle.end_trial(trial)

    assert oracle.has_work()
    first, run = ask("tuner0")
    assert run == ("sewa", 0)
    second, run = ask("tuner1")
    assert run == ("baseline", 1)
    third, run = ask("tuner2")
    assert run == ("sewa", 1)
    assert ask("tuner3")[1] == TrialStatus.IDLE  # all assigned, some running
    # tuner1 goes silent: after the lease its run goes to the next worker that asks, and the chief stops waiting for it.
    oracle.lease_s = 0.2
    oracle.beats[first.trial_id] = oracle.beats[third.trial_id] = time.monotonic() + 60
    time.sleep(0.3)
    assert not oracle.tick()
    assert "tuner1" not in oracle.tuner_ids and "tuner1" not in oracle.ongoing_trials
    again, run = ask("tuner3")
    assert run == ("baseline", 1)
    oracle.lease_s = 60.0
    for trial in (first, third, again):
        finish(trial)
    finish(second)  # the silent worker ends after all: a duplicate, harmless
    assert oracle.record["duplicates"] == [{"technique": "baseline", "seed": 1, "worker": "tuner1"}]
    # Seeds 0 and 1 are done; 2 paired seeds are fewer than needs_more_seeds' 3, so target_ci adds seed 2, then stops
    # (the differences are all 2 points: the interval has width 0).
    trial, run = ask("tuner0")
    assert run == ("baseline", 2)
    finish(trial)
    trial, run = ask("tuner0")
    assert run == ("sewa", 2)
    finish(trial)
    for tuner_id in ("tuner0", "tuner2", "tuner3"):
        assert ask(tuner_id)[1] == TrialStatus.STOPPED
    assert oracle.tick() and oracle.seeds == 3 and oracle.failure is None
    assert sorted(store.finished()) == sorted((t, s) for t in ("baseline", "sewa") for s in range(3))


def test_a_failed_run_stops_the_oracle(tmp_path):
    from keras_tuner.engine.trial import TrialStatus

    from keras_wtrain.comparison.distributed import _oracle_class
    from keras_wtrain.comparison.store import RunStore

    store = RunStore(tmp_path / "job", {"epochs": 1})
    oracle = _oracle_class()(store, ["baseline", "sewa"], 1, None, None, 60.0, False)
    oracle._set_project_dir(str(tmp_path / "oracle"), "oracle")
    failing, running = oracle.create_trial("tuner0"), oracle.create_trial("tuner1")
    failing.status = TrialStatus.FAILED
    failing.hyperparameters.values["error"] = "ValueError: boom"
    oracle.end_trial(failing)
    assert oracle.create_trial("tuner0").status == TrialStatus.STOPPED
    assert not oracle.tick()  # tuner1 still runs its run
    store.save(_fake_run("sewa", 0))
    running.status = TrialStatus.COMPLETED
    oracle.end_trial(running)
    assert oracle.create_trial("tuner1").status == TrialStatus.STOPPED
    assert oracle.tick()
    assert oracle.failure.startswith("run baseline seed 0 failed on worker tuner0: ValueError: boom (traceback: ")
