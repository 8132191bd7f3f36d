"""Worker of test_fault_tolerance.py: trains a case with `keras.callbacks.BackupAndRestore`, or is killed mid-epoch.

    python _fault_worker.py kill CASE WORKDIR KILL_STEP
        trains CASE in WORKDIR/CASE; after optimizer step KILL_STEP (every callback has run for that batch) writes
        WORKDIR/CASE/killpoint.json and sleeps until the parent sends SIGKILL.
    python _fault_worker.py finish WORKDIR CASE [CASE ...]
        for each CASE: resumes WORKDIR/CASE to the end (same backup and callback directories) and writes
        resumed.npz, then trains the same case uninterrupted in fresh directories and writes reference.npz;
        info.json holds what each run did (epochs run, updates averaged, SeWA's selected steps, the optimum shifts).

Callback order follows Keras: callbacks run in list order, so a callback listed before `BackupAndRestore` has
changed the weights before the epoch-end backup is written.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

EPOCHS = 3


def make_callbacks(case, directory, data, marker=None):
    import keras

    from keras_wtrain.callbacks import EMA
    from keras_wtrain.callbacks import LAWA
    from keras_wtrain.callbacks import SWA
    from keras_wtrain.callbacks import OptimumShifting
    from keras_wtrain.callbacks import SeWA
    from keras_wtrain.callbacks import WeightNormalizationInitializer

    backup = keras.callbacks.BackupAndRestore(os.path.join(directory, "backup"), save_freq="epoch")
    averaging_dir = os.path.join(directory, "averaging")
    if case == "swa":
        # The running mean of steps 2, 4, ..., 48: the 8 updates of epoch 0 come back from the average saved at
        # the end of epoch 0; the 5 of epoch 1 before the kill (steps 18..26) must not be counted twice.
        technique = SWA(start=0, every=2, checkpoint_dir=averaging_dir)
        callbacks = [backup, technique]
    elif case == "ema":
        # An EMA of every step with decay 0.9: the state of epoch 0 still weighs 0.9**32 = 0.03 at the end.
        technique = EMA(decay=0.9, checkpoint_dir=averaging_dir)
        callbacks = [backup, technique]
    elif case == "lawa":
        # 3 checkpoints every 2 steps: at the kill (step 26) the ring buffer holds steps 22, 24, 26, all after the
        # backup step (16); the resumed run must drop them and record them again.
        technique = LAWA(k=3, every=2, checkpoint_dir=averaging_dir)
        callbacks = [backup, technique]
    elif case == "sewa":
        # 20 checkpoints every 2 steps: the final window (steps 10..48) reaches back before the epoch-1 backup
        # (step 16), so part of it must come back from the disk buffer of the killed process.
        technique = SeWA(
            k=4,
            num_checkpoints=20,
            every_n_steps=2,
            selection_data=data,
            selection_size=256,
            selection_steps=4,
            num_random_subsets=4,
            max_evaluations=4,
            checkpoint_dir=averaging_dir,
            seed=0,
        )
        callbacks = [backup, technique]
    elif case == "optimum_shifting":
        # A guard of 10 % keeps every shift here, after retries with larger batches at epochs 1 and 2.
        technique = OptimumShifting(data=data, seed=0, max_loss_increase=0.1)
        callbacks = [technique, backup]  # the epoch-end backup holds the shifted weights
    elif case == "optimum_shifting_after_backup":
        technique = OptimumShifting(data=data, seed=0, max_loss_increase=0.1)
        callbacks = [backup, technique]  # the epoch-end backup holds the weights before the shift
    elif case == "weight_normalization_init":
        technique = WeightNormalizationInitializer(data[0], batch_size=256)
        callbacks = [backup, technique]  # restored `initialized` flags must stop a second data init
    else:
        raise ValueError(f"unknown case {case!r}")
    if marker is not None:
        callbacks.append(marker)
    return callbacks, technique


def train(case, directory, marker=None):
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    data = _common.make_data()
    model = _common.compile_model(_common.build_model(weight_normalization=case == "weight_normalization_init"))
    callbacks, technique = make_callbacks(case, directory, data, marker)
    history = model.fit(
        *data, batch_size=_common.BATCH_SIZE, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks
    )
    info = {"epochs_run": list(history.epoch), "final_step": int(model.optimizer.iterations.numpy())}
    arrays = {}
    if hasattr(technique, "installed"):  # weight averaging: the model holds the average, the raw weights wait
        info["installed"] = bool(technique.installed)
        arrays.update({f"raw{i}": w for i, w in enumerate(technique.raw_weights())})
    if hasattr(technique, "num_averaged"):
        info["num_averaged"] = int(technique.num_averaged)
    if hasattr(technique, "checkpoint_steps"):
        # The recorded trajectory itself, not only the average installed from it.
        arrays.update(buffer=technique.checkpoints(), buffer_steps=technique.checkpoint_steps)
    if hasattr(technique, "selected_steps"):
        info["selected_steps"] = None if technique.selected_steps is None else list(technique.selected_steps)
    if hasattr(technique, "history") and isinstance(technique.history, list):
        info["shifts"] = [[str(entry["epoch"]), bool(entry["kept"])] for entry in technique.history]
    if hasattr(technique, "initialized_layers"):
        info["initialized_layers"] = int(technique.initialized_layers)
    return model, info, arrays


def kill_marker(path, kill_step):
    import keras

    class KillPoint(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step == kill_step:
                _common.write_json(path, {"step": step, "batch": int(batch), "pid": os.getpid()})
                time.sleep(600)  # the parent kills this process with SIGKILL now

    return KillPoint()


def main(argv):
    _common.guard_worker()
    _common.configure_tensorflow()
    mode = argv[0]
    if mode == "kill":
        case, workdir, kill_step = argv[1], argv[2], int(argv[3])
        directory = os.path.join(workdir, case)
        os.makedirs(directory, exist_ok=True)
        train(case, directory, kill_marker(os.path.join(directory, "killpoint.json"), kill_step))
        raise SystemExit("training ended without reaching the kill step")
    if mode == "finish":
        workdir, cases = argv[1], argv[2:]
        for case in cases:
            directory = os.path.join(workdir, case)
            info = {}
            model, info["resumed"], arrays = train(case, directory)
            _common.save_weights(model, os.path.join(directory, "resumed.npz"), **arrays)
            model, info["reference"], arrays = train(case, os.path.join(directory, "reference"))
            _common.save_weights(model, os.path.join(directory, "reference.npz"), **arrays)
            _common.write_json(os.path.join(directory, "info.json"), info)
        return
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
