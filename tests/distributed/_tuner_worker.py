"""Worker of test_distributed_tuning.py: one process of a distributed Keras Tuner search with `keras_wtrain.tuning.PSO`.

    KERASTUNER_TUNER_ID=chief|tuner0|tuner1 KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=PORT \\
        python _tuner_worker.py ROLE WORKDIR

ROLE "chief" starts a new search (the oracle's gRPC server), "chief-resume" reloads it from WORKDIR/chief (a restarted
chief), "worker" runs trials. The search: `keras_wtrain.tuning.spaces.HyperModel` over every technique of `search_space`
but shadow weights (Dense model), `PSO(max_trials=MAX_TRIALS, swarm_size=3, seed=0)`, minimising `val_loss`.

Files written in WORKDIR: `chief_<pid>.json` (what a chief found when it started), `executions_<tuner id>.jsonl`
(one line per trial a worker ran), `idle_<tuner id>.json` (a worker waits before its next trial, after
PAUSE_AFTER_TRIALS trials, until WORKDIR/go exists: the test restarts the chief meanwhile).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

MAX_TRIALS = 8
SWARM_SIZE = 3
PAUSE_AFTER_TRIALS = 2
TECHNIQUES = ("loss-noise", "grad-dropout", "weightnorm", "sewa", "optimum-shift")
GO_TIMEOUT_S = 180


def build(hp, wrap=None):
    import keras

    inputs = keras.Input((_common.NUM_FEATURES,))
    hidden = wrap(keras.layers.Dense(32, activation="relu"))(inputs)
    model = keras.Model(inputs, wrap(keras.layers.Dense(_common.NUM_CLASSES))(hidden))
    return _common.compile_model(model)


def make_tuner(role, workdir, tuner_id):
    from keras_wtrain.tuning.pso import PSO
    from keras_wtrain.tuning.spaces import HyperModel

    class RecordingPSO(PSO):
        completed = 0
        paused = False

        def run_trial(self, trial, *args, **kwargs):
            record = {"trial_id": trial.trial_id, "values": trial.hyperparameters.values, "pid": os.getpid()}
            with open(os.path.join(workdir, f"executions_{tuner_id}.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
            return super().run_trial(trial, *args, **kwargs)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            self.completed += 1

        def pre_create_trial(self):
            # Between two trials: this worker has no trial at the oracle and no request in flight.
            if self.completed == PAUSE_AFTER_TRIALS and not self.paused:
                self.paused = True
                _common.write_json(os.path.join(workdir, f"idle_{tuner_id}.json"), {"completed": self.completed})
                deadline = time.monotonic() + GO_TIMEOUT_S
                while not os.path.exists(os.path.join(workdir, "go")):
                    if time.monotonic() > deadline:
                        raise RuntimeError("no go signal")
                    time.sleep(0.2)
            super().pre_create_trial()

    directory = os.path.join(workdir, "chief" if role.startswith("chief") else tuner_id)
    return RecordingPSO(
        HyperModel(build, techniques=TECHNIQUES, shifting_batch_size=256, seed=0),
        objective="val_loss",
        max_trials=MAX_TRIALS,
        swarm_size=SWARM_SIZE,
        seed=0,
        directory=directory,
        project_name="pso",
        overwrite=role != "chief-resume",
    )


def main(argv):
    _common.guard_worker()
    role, workdir = argv[0], argv[1]
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    _common.configure_tensorflow()
    x, y = _common.make_data()
    tuner = make_tuner(role, workdir, tuner_id)
    if role.startswith("chief"):
        oracle = tuner.oracle
        started = {"pid": os.getpid(), "trials": sorted(oracle.trials), "num_moves": oracle.swarm["num_moves"]}
        _common.write_json(os.path.join(workdir, f"chief_{os.getpid()}.json"), started)
    tuner.search(x[:384], y[:384], validation_data=(x[384:], y[384:]), epochs=2, batch_size=32, verbose=0)


if __name__ == "__main__":
    main(sys.argv[1:])
