"""Process of test_distributed_compare.py: one `keras_wtrain.comparison.compare` call (chief, worker or alone).

    [KERASTUNER_TUNER_ID=chief|tuner0|... KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=PORT] \\
        python _compare_worker.py OUT MODEL TECHNIQUES SEEDS
    python _compare_worker.py cli ARGUMENTS...  (the `keras-wtrain` command line: `cli.main(ARGUMENTS)`)

MODEL is `mlp` or `instrumented_mlp`, the same network from a function that, when it builds the model of a run,
writes the file STALL_MARKER and sleeps (so the test can kill the process mid-run) if that variable is set, and
raises `ValueError` if FAIL_IN_RUN is set. The job: the digits dataset
(200 training examples), 2 epochs, no mechanism measurements. Exit status: 0, or 3 with the error's one line on
stderr when `compare` raises. With READY_FILE and GO_FILE set, the process writes READY_FILE once Keras is
imported, then waits for GO_FILE before calling `compare` (the test starts every worker's job at the same time).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

STALL_S = 600
GO_TIMEOUT_S = 180


def _in_a_run():
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "run_one":
            return True
        frame = frame.f_back
    return False


def instrumented_mlp():
    from keras_wtrain.comparison.models import build_model

    marker = os.environ.get("STALL_MARKER")
    if marker and _in_a_run():  # not while compare checks the model before the job
        _common.write_json(marker, {"pid": os.getpid()})
        time.sleep(STALL_S)
    if os.environ.get("FAIL_IN_RUN") and _in_a_run():
        raise ValueError("boom in the run's model")
    return build_model("mlp", (8, 8, 1), 10)


def _wait_for_go():
    ready, go = os.environ.get("READY_FILE"), os.environ.get("GO_FILE")
    if not ready:
        return
    _common.write_json(ready, {"pid": os.getpid()})
    deadline = time.monotonic() + GO_TIMEOUT_S
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise RuntimeError("no go signal")
        time.sleep(0.1)


def main(argv):
    _common.guard_worker()
    if argv[0] == "cli":
        from keras_wtrain.comparison.cli import main as cli_main

        sys.exit(cli_main(argv[1:]))
    out, model, techniques, seeds = argv[0], argv[1], argv[2].split(","), int(argv[3])
    _common.configure_tensorflow()
    from keras_wtrain.comparison import compare

    _wait_for_go()
    try:
        compare(
            model=instrumented_mlp if model == "instrumented_mlp" else model,
            data="digits",
            train_size=200,
            epochs=2,
            techniques=techniques,
            seeds=seeds,
            measure=False,
            progress=os.environ.get("COMPARE_PROGRESS") == "1",
            out=out,
        )
    except (RuntimeError, ValueError) as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1:])
