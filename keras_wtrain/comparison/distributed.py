"""Spreading a comparison job over worker processes with Keras Tuner's distributed mode.

Every `(technique, seed)` run of `compare` is one Keras Tuner trial. The chief (`KERASTUNER_TUNER_ID=chief`) holds
the plan in a `RunOracle` and serves it over gRPC at `KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`; it trains
nothing. Each worker (any other `KERASTUNER_TUNER_ID`) asks for the next run, trains it with `runner.run_one` and
writes it to the job's `RunStore`, so the output directory must be the same directory for the chief and every
worker (one machine, or a shared file system). The chief then returns every run and `compare` writes the results
as in a single process: a run depends only on its technique, its seed and the job's settings, not on the process
that trained it.

Runs already in the store are skipped (a killed job resumes). A worker sends a heartbeat every
`min(10, lease / 4)` seconds while it trains; a run whose worker has been silent for the lease
(`KERAS_WTRAIN_LEASE_S`, default 120 s) goes to the next worker that asks. A run that raises stops the job: its
traceback is written to `out/errors/<technique>__seed<k>.txt` and the chief raises `DistributedError` naming the run,
the worker and the error. Guide: docs/scaling.md.
"""

import json
import os
import pathlib
import re
import socket
import threading
import time
import traceback

__all__ = ["DistributedError", "DistributedSetupError", "report_worker_error", "role", "train"]

LEASE_ENV = "KERAS_WTRAIN_LEASE_S"
CHIEF_TIMEOUT_ENV = "KERAS_WTRAIN_CHIEF_TIMEOUT_S"
DEFAULT_LEASE_S = 120.0
DEFAULT_CHIEF_TIMEOUT_S = 60.0
HEARTBEAT_S = 10.0  # at most; a quarter of the lease when the lease is shorter
IDLE_WAIT_S = 1.0  # a worker told to wait (every run assigned) asks again after this
SHARED_GRACE_S = 30.0  # how long the chief waits to see a run file a worker says it wrote
ERRORS_DIR = "errors"
RECORD_FILE = "distributed.json"
_REPORT_SUFFIX = "#could-not-start"  # the tuner id of a worker's "I cannot start" report
_ERROR_VALUE = "error"  # Keras Tuner's Trial.to_proto drops `message`: the error line travels as a trial value


class DistributedError(RuntimeError):
    """A distributed comparison job stopped: a run raised on a worker, a worker could not start, or the chief
    cannot read a run a worker wrote. The message is one line naming the run, the worker and the error.

    Example:

    ```python
    from keras_wtrain.comparison.distributed import DistributedError

    assert issubclass(DistributedError, RuntimeError)
    ```
    """


class DistributedSetupError(ValueError):
    """A chief or worker cannot take part in a job: the chief is unreachable, its port is taken, or a
    `KERASTUNER_*` / `KERAS_WTRAIN_*` environment variable is missing or malformed. `keras-wtrain compare` exits 2.

    Example:

    ```python
    from keras_wtrain.comparison.distributed import DistributedSetupError

    assert issubclass(DistributedSetupError, ValueError)
    ```
    """


def role():
    """`"chief"`, `"worker"` or None (not distributed), from Keras Tuner's `KERASTUNER_*` environment variables.

    As in Keras Tuner, a process is the chief when its `KERASTUNER_TUNER_ID` contains `"chief"`.

    Example:

    ```python
    from keras_wtrain.comparison.distributed import role

    print(role())  # None unless KERASTUNER_ORACLE_IP is set
    ```
    """
    if not os.environ.get("KERASTUNER_ORACLE_IP"):
        return None
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _address():
    """`(ip, port, tuner_id)` from the environment, or a one-line `DistributedSetupError`."""
    ip = os.environ.get("KERASTUNER_ORACLE_IP", "")
    port = os.environ.get("KERASTUNER_ORACLE_PORT", "")
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    for name, value in (("KERASTUNER_ORACLE_PORT", port), ("KERASTUNER_TUNER_ID", tuner_id)):
        if not value:
            raise DistributedSetupError(
                f"KERASTUNER_ORACLE_IP is set ({ip!r}) but {name} is not: a distributed job needs "
                "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID (chief, tuner0, tuner1, ...)"
            )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedSetupError(f"KERASTUNER_ORACLE_PORT must be a TCP port number, received {port!r}")
    return ip, int(port), tuner_id


def _seconds(name, default):
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise DistributedSetupError(f"{name} must be a positive number of seconds, received {text!r}")
    return value


def _safe_name(text):
    return re.sub(r"[^\w.-]", "_", text)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _wait_for_chief(ip, port, timeout):
    """Returns once a TCP connection to the chief succeeds; raises `DistributedSetupError` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((ip, port), timeout=max(0.1, min(5.0, left))):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                reason = error.strerror or str(error) or type(error).__name__
                raise DistributedSetupError(
                    f"no chief answers at KERASTUNER_ORACLE_IP={ip} KERASTUNER_ORACLE_PORT={port} after "
                    f"{timeout:g} s ({reason}): start the chief (KERASTUNER_TUNER_ID=chief) first, or check the "
                    f"address, the port and the firewall ({CHIEF_TIMEOUT_ENV} sets the wait)"
                ) from None
        time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))


def _errors_dir(out):
    path = pathlib.Path(out) / ERRORS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_label(technique, seed):
    return f"{technique} seed {seed}"


class _Progress:
    """The chief's job line: `job.JobProgress` with the time left from the job's throughput (runs in parallel)."""

    def __init__(self, total, done, enabled):
        from keras_wtrain.comparison.job import JobProgress

        self.job = JobProgress(total=total, done=done, enabled=enabled)

    def finished(self):
        self.job.done += 1
        self.job.trained += 1
        self.job.trained_s = time.perf_counter() - self.job.started  # wall time per run, all workers together

    def show(self):
        self.job.show()


_CLASSES = {}


def _oracle_class():
    """`RunOracle`, defined on first use (Keras Tuner is imported only by distributed jobs)."""
    if "oracle" in _CLASSES:
        return _CLASSES["oracle"]
    import keras_tuner
    from keras_tuner.engine.trial import Trial
    from keras_tuner.engine.trial import TrialStatus

    class RunOracle(keras_tuner.Oracle):
        """The chief's plan: one trial per `(technique, seed)` run not in the store, seed by seed."""

        def __init__(self, store, techniques, seeds, target_ci, max_seeds, lease_s, progress):
            space = keras_tuner.HyperParameters()
            space.Choice("technique", list(techniques))
            space.Int("seed", 0, max(1, (max_seeds if target_ci is not None else seeds) - 1))
            super().__init__(
                hyperparameters=space, seed=0, max_retries_per_trial=0, max_consecutive_failed_trials=2**31
            )
            self.verbose = 0  # the chief prints the job line instead of Keras Tuner's trial tables
            self.store, self.techniques, self.target_ci, self.max_seeds = store, list(techniques), target_ci, max_seeds
            self.lease_s, self.progress = lease_s, progress
            self.seeds = seeds
            self.plan = [(t, s) for s in range(seeds) for t in self.techniques]
            self.done = {run for run in self.plan if store.load(*run) is not None}
            self.assigned = {}  # run -> trial id of the worker running it
            self.run_of, self.tuner_of = {}, {}  # trial id -> run, worker
            self.beats, self.contact = {}, {}  # trial id -> last heartbeat, tuner id -> last request (monotonic)
            self.unseen = {}  # run -> (time, worker): completed on a worker, not yet readable here
            self.failure = None
            self.stopped = False  # the plan is done (and target_ci adds no seed)
            self.record = {"runs": [], "lease_expired": [], "duplicates": []}
            self.job = _Progress(len(self.plan), len(self.done), progress)

        def _say(self, text):
            if self.progress:
                print(text, flush=True)

        def _add_seed(self):
            """With `target_ci`, adds the next seed to a finished plan while the intervals ask for one."""
            from keras_wtrain.comparison.report import summarize
            from keras_wtrain.comparison.seeds import needs_more_seeds

            if self.target_ci is None or self.seeds >= self.max_seeds:
                return False
            runs = [self.store.load(*run) for run in self.plan]
            if not needs_more_seeds(summarize(runs, self.techniques), self.target_ci):
                return False
            new = [(t, self.seeds) for t in self.techniques]
            self.seeds += 1
            self.plan += new
            found = {run for run in new if self.store.load(*run) is not None}
            self.done |= found
            self.job.job.total += len(new)
            self.job.job.done += len(found)
            return True

        def _next_status(self, trial_id=None):
            if self.failure is not None:
                return {"status": TrialStatus.STOPPED}
            while True:
                for run in self.plan:
                    if run not in self.done and run not in self.assigned and run not in self.unseen:
                        if trial_id is None:
                            return {"status": TrialStatus.RUNNING}
                        self.assigned[run] = trial_id
                        self.run_of[trial_id] = run
                        return {"status": TrialStatus.RUNNING, "values": {"technique": run[0], "seed": run[1]}}
                if self.assigned or self.unseen:
                    return {"status": TrialStatus.IDLE}
                if not self._add_seed():
                    self.stopped = True
                    return {"status": TrialStatus.STOPPED}

        def populate_space(self, trial_id):
            return self._next_status(trial_id)

        @keras_tuner.synchronized
        def has_work(self):
            """Whether any run is left (adds the seeds `target_ci` asks for when the plan is done)."""
            return self._next_status()["status"] != TrialStatus.STOPPED

        @keras_tuner.synchronized
        def create_trial(self, tuner_id):
            now = time.monotonic()
            if tuner_id.endswith(_REPORT_SUFFIX):  # a worker that cannot start reports it (report_worker_error)
                return Trial(self.get_space(), trial_id=f"report-{tuner_id}", status=TrialStatus.RUNNING)
            self.contact[tuner_id] = now
            trial = super().create_trial(tuner_id)
            if trial.status == TrialStatus.RUNNING and trial.trial_id in self.run_of:
                self.tuner_of[trial.trial_id] = tuner_id
                self.beats[trial.trial_id] = now
            return trial

        @keras_tuner.synchronized
        def update_trial(self, trial_id, metrics, step=0):
            now = time.monotonic()
            if trial_id in self.tuner_of:
                self.contact[self.tuner_of[trial_id]] = now
            if "heartbeat" in metrics:  # only the time: a heartbeat is not a metric of the trial
                if trial_id in self.beats:
                    self.beats[trial_id] = now
                return self.trials[trial_id]
            return super().update_trial(trial_id, metrics, step=step)

        def score_trial(self, trial):
            trial.score, trial.best_step = 0.0, 0  # runs are not ranked; a NaN score would mark the trial invalid

        @keras_tuner.synchronized
        def end_trial(self, trial):
            error = trial.hyperparameters.values.pop(_ERROR_VALUE, None)
            if trial.trial_id.startswith("report-"):
                worker = trial.trial_id[len("report-") : -len(_REPORT_SUFFIX)]
                self._fail(f"worker {worker} could not start: {error or 'see its log'}")
                return
            run, worker = self.run_of.get(trial.trial_id), self.tuner_of.get(trial.trial_id, "?")
            super().end_trial(trial)
            self.beats.pop(trial.trial_id, None)
            if run is None:
                return
            if self.assigned.get(run) == trial.trial_id:
                del self.assigned[run]
            if self.trials[trial.trial_id].status == TrialStatus.COMPLETED:
                self._saved(run, worker)
                return
            errors = pathlib.Path(self.store.out) / ERRORS_DIR / f"{run[0]}__seed{run[1]}.txt"
            self._fail(
                f"run {_run_label(*run)} failed on worker {worker}: {error or 'see its log'} (traceback: {errors})"
            )

        def _fail(self, message):
            if self.failure is None:
                self.failure = message
                running = len(self.ongoing_trials)
                self._say(f"[job] stopping: {message}" + (f"; waiting for {running} running run(s)" if running else ""))

        def _saved(self, run, worker):
            if self.store.load(*run) is None:
                self.unseen.setdefault(run, (time.monotonic(), worker))
                return
            self.unseen.pop(run, None)
            entry = {"technique": run[0], "seed": run[1], "worker": worker}
            if run in self.done:
                self.record["duplicates"].append(entry)
                return
            self.done.add(run)
            self.record["runs"].append(entry)
            self.job.finished()
            self.job.show()

        @keras_tuner.synchronized
        def tick(self):
            """Ends the leases of silent workers; returns True when the chief may stop serving."""
            now = time.monotonic()
            for tuner_id, trial in list(self.ongoing_trials.items()):
                if now - self.beats.get(trial.trial_id, now) <= self.lease_s:
                    continue
                # The worker is gone (or cut off): the run goes to the next worker that asks, and the chief no
                # longer waits for this worker (Keras Tuner's server loop waits for every ongoing trial and tuner).
                del self.ongoing_trials[tuner_id]
                self.tuner_ids.discard(tuner_id)
                self.beats.pop(trial.trial_id, None)
                run = self.run_of.get(trial.trial_id)
                if run is not None and self.assigned.get(run) == trial.trial_id:
                    del self.assigned[run]
                    self.record["lease_expired"].append({"technique": run[0], "seed": run[1], "worker": tuner_id})
                    self._say(
                        f"[job] worker {tuner_id}: no heartbeat for {self.lease_s:g} s, {_run_label(*run)} goes to "
                        "the next worker"
                    )
            for tuner_id in list(self.tuner_ids):
                if tuner_id not in self.ongoing_trials and now - self.contact.get(tuner_id, now) > self.lease_s:
                    self.tuner_ids.discard(tuner_id)  # an idle worker asks every second: this one is gone
            for run, (since, worker) in list(self.unseen.items()):
                self._saved(run, worker)
                if run in self.unseen and now - since > SHARED_GRACE_S:
                    del self.unseen[run]
                    path = pathlib.Path(self.store.out) / "runs" / f"{run[0]}__seed{run[1]}.json"
                    self._fail(
                        f"worker {worker} finished {_run_label(*run)} but the chief cannot read {path}: the chief "
                        "and the workers must share the output directory (one machine, or a shared file system)"
                    )
            return (self.failure is not None or self.stopped) and not self.ongoing_trials and not self.tuner_ids

    _CLASSES["oracle"] = RunOracle
    return RunOracle


def _worker_class():
    """`RunWorker`, defined on first use."""
    if "worker" in _CLASSES:
        return _CLASSES["worker"]
    from keras_tuner.engine.base_tuner import BaseTuner
    from keras_tuner.errors import FailedTrialError

    class RunWorker(BaseTuner):
        """Runs the trials the chief hands out: one `run_one` per trial, saved to the shared store."""

        def __init__(self, oracle, store, inputs, progress, options, heartbeat_s, directory):
            super().__init__(oracle, directory=directory, project_name="worker", overwrite=True)
            self.store, self.inputs, self.progress, self.options = store, inputs, progress, options
            self.heartbeat_s = heartbeat_s
            self.failure = None
            self._ended = True  # no wait before the first request, nor after a trial

        def pre_create_trial(self):
            # Keras Tuner asks again at once after an IDLE answer (every run assigned): wait a little.
            if not self._ended:
                time.sleep(IDLE_WAIT_S)
            self._ended = False

        def _beat(self, trial_id, stop):
            count = 0
            while not stop.wait(self.heartbeat_s):
                count += 1
                try:
                    self.oracle.update_trial(trial_id, {"heartbeat": float(count)})
                except Exception:  # the chief is busy or gone: the next beat tries again
                    pass

        def run_trial(self, trial, *args, **kwargs):
            from keras_wtrain.comparison.runner import run_one

            values = trial.hyperparameters.values
            technique, seed = values["technique"], int(values["seed"])
            stop = threading.Event()
            beat = threading.Thread(target=self._beat, args=(trial.trial_id, stop), daemon=True)
            beat.start()
            try:
                options = self.options
                run = run_one(
                    technique,
                    self.inputs,
                    seed,
                    options["epochs"],
                    options["batch_size"],
                    self.progress,
                    options["measure"],
                    options["optimizer"],
                )
                self.store.save(run)
            except Exception as error:
                path = _errors_dir(self.store.out) / f"{technique}__seed{seed}.txt"
                path.write_text(traceback.format_exc())
                line = _first_line(error)
                self.failure = f"run {_run_label(technique, seed)} failed on this worker: {line} (traceback: {path})"
                values[_ERROR_VALUE] = line
                raise FailedTrialError(line) from None
            finally:
                stop.set()
                beat.join(timeout=1.0)
            return 0.0

        def on_trial_end(self, trial):
            self._ended = True
            super().on_trial_end(trial)

    _CLASSES["worker"] = RunWorker
    return RunWorker


def _serve(oracle, ip, port):
    """Serves `oracle` at `ip:port` until `oracle.tick()` says the job is over (every worker told to stop)."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    # Keras Tuner's own `oracle_chief.start_server` polls for the end every 20 s and has no hook for leases.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    protos.get_service_grpc().add_OracleServicer_to_server(OracleServicer(oracle), server)
    try:
        bound = server.add_insecure_port(f"{ip}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise DistributedSetupError(
            f"the chief cannot listen on KERASTUNER_ORACLE_IP={ip} KERASTUNER_ORACLE_PORT={port}: is the port in "
            "use (another chief?) or the address not one of this machine's?"
        )
    server.start()
    try:
        while not oracle.tick():
            time.sleep(0.5)
    finally:
        server.stop(grace=2).wait()


def _train_chief(store, techniques, seeds, target_ci, max_seeds, progress, ip, port):
    import tempfile

    oracle = _oracle_class()(
        store, techniques, seeds, target_ci, max_seeds, _seconds(LEASE_ENV, DEFAULT_LEASE_S), progress
    )
    with tempfile.TemporaryDirectory(prefix="keras-wtrain-chief-") as directory:
        oracle._set_project_dir(directory, "oracle")  # Keras Tuner writes its trial files there
        if oracle.has_work():
            oracle.job.show()
            _serve(oracle, ip, port)
    record = dict(oracle.record, lease_s=oracle.lease_s, failure=oracle.failure)
    (pathlib.Path(store.out) / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if oracle.failure is not None:
        raise DistributedError(oracle.failure)
    oracle.job.show()
    runs = [store.load(t, s) for s in range(oracle.seeds) for t in oracle.techniques]
    missing = [(t, s) for (t, s), run in zip(oracle.plan, runs) if run is None]
    if missing:  # cannot happen unless files were deleted while the job ran
        raise DistributedError(f"run {_run_label(*missing[0])} is missing from {store.runs_dir} after the job")
    return runs


def _train_worker(store, inputs, progress, options, ip, port):
    import tempfile

    import keras_tuner

    _wait_for_chief(ip, port, _seconds(CHIEF_TIMEOUT_ENV, DEFAULT_CHIEF_TIMEOUT_S))
    heartbeat_s = min(HEARTBEAT_S, _seconds(LEASE_ENV, DEFAULT_LEASE_S) / 4)
    with tempfile.TemporaryDirectory(prefix="keras-wtrain-worker-") as directory:
        # The local oracle only stands in for the chief's: BaseTuner sends every request to the chief.
        worker = _worker_class()(keras_tuner.Oracle(seed=0), store, inputs, progress, options, heartbeat_s, directory)
        from keras_tuner.src import config as tuner_config

        # Keras Tuner would print the traceback of its FailedTrialError; the run's own is in out/errors.
        debug, tuner_config.DEBUG = tuner_config.DEBUG, False
        try:
            worker.search()
        finally:
            tuner_config.DEBUG = debug
    if worker.failure is not None:
        raise DistributedError(worker.failure)
    return None


def train(store, inputs, techniques, seeds, target_ci, max_seeds, progress, options):
    """Runs a comparison job's runs on the workers of a Keras Tuner distributed job (called by `compare`).

    The chief serves the plan (`seeds` seeds × `techniques`, seed by seed, skipping the runs in `store`; with
    `target_ci`, one more seed at a time while the intervals ask for it, up to `max_seeds`) and returns every run;
    a worker trains the runs it is given and returns None. Chief and workers must be started with the same
    `compare` arguments (`store` refuses a worker with other settings) and the same output directory.

    Args:
        store: the job's `RunStore` (shared by chief and workers).
        inputs: the comparison's `Inputs`.
        techniques: the techniques, baseline first.
        seeds: the first number of seeds.
        target_ci: see `compare`, or None.
        max_seeds: the most seeds `target_ci` may reach.
        progress: the chief prints the job line, a worker each run's progress bar.
        options: `dict(epochs, batch_size, measure, optimizer)` for `runner.run_one`.

    Returns:
        On the chief, every run (dicts of `run_one`), seed by seed; on a worker, None.

    Raises:
        DistributedError: on the chief, when a run raised on a worker, a worker could not start or a worker's run
            is not readable by the chief; on a worker, when a run it trained raised.
        DistributedSetupError: when the chief is unreachable (a worker waits `KERAS_WTRAIN_CHIEF_TIMEOUT_S`,
            default 60 s), the chief's port is taken, or an environment variable is missing.

    Example:

    ```python
    from keras_wtrain.comparison import distributed

    if distributed.role() is None:  # no KERASTUNER_* variables: `compare` trains in this process
        print("single process")
    ```
    """
    ip, port, tuner_id = _address()
    if role() == "chief":
        return _train_chief(store, techniques, seeds, target_ci, max_seeds, progress, ip, port)
    return _train_worker(store, inputs, progress, options, ip, port)


def report_worker_error(out, message):
    """Tells the chief that this worker cannot start, so that the job stops with `message` instead of waiting.

    Writes `message` to `out/errors/worker_<tuner id>.txt`, then (when the chief answers within
    `KERAS_WTRAIN_CHIEF_TIMEOUT_S`) ends a report trial FAILED at the chief, which stops the job and raises
    `DistributedError` with `worker <tuner id> could not start: <message>`. `keras-wtrain compare` calls it on a
    worker whose `--model` or `--data` cannot be loaded.

    Args:
        out: the job's output directory.
        message: one line saying what failed.

    Returns:
        True if the chief was told, False if it could not be reached.

    Example:

    ```python
    from keras_wtrain.comparison.distributed import report_worker_error, role

    if role() == "worker":  # only a worker of a distributed job reports to its chief
        report_worker_error("runs/compare", "--model 'my.module:build': cannot import 'my.module'")
    ```
    """
    from keras_tuner.engine.trial import TrialStatus

    ip, port, tuner_id = _address()
    (_errors_dir(out) / f"worker_{_safe_name(tuner_id)}.txt").write_text(message + "\n")
    try:
        _wait_for_chief(ip, port, _seconds(CHIEF_TIMEOUT_ENV, DEFAULT_CHIEF_TIMEOUT_S))
    except DistributedSetupError:
        return False
    import keras_tuner
    from keras_tuner.src.distribute.oracle_client import OracleClient

    client = OracleClient(keras_tuner.Oracle(seed=0))
    trial = client.create_trial(tuner_id + _REPORT_SUFFIX)
    trial.status = TrialStatus.FAILED
    trial.hyperparameters.values[_ERROR_VALUE] = message
    client.end_trial(trial)
    return True
