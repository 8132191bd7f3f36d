"""The paired-seed protocol: one run of one technique with one seed (see docs/tutorials/does_it_help.md)."""

import resource
import time

import keras
import numpy as np

from keras_wtrain.comparison import mechanisms
from keras_wtrain.comparison.techniques import build_technique

__all__ = ["StepTimer", "default_optimizer", "run_one"]

LEARNING_RATE = 1e-3


class StepTimer(keras.callbacks.Callback):
    """Records the wall time between consecutive ends of training batches, callbacks' work included.

    The first epoch (tracing/compilation) is excluded from `median_step_s`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.comparison import StepTimer

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    timer = StepTimer()
    model.fit(np.ones((32, 4)), np.ones((32, 1)), batch_size=8, epochs=2, verbose=0, callbacks=[timer])
    print(len(timer.intervals), timer.median_step_s)  # 4 intervals from the second epoch
    ```
    """

    def __init__(self):
        super().__init__()
        self.intervals = []
        self._last = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._epoch > 0 and self._last is not None:
            self.intervals.append(now - self._last)
        self._last = now

    @property
    def median_step_s(self):
        """Median interval in seconds (NaN before the second epoch)."""
        return float(np.median(self.intervals)) if self.intervals else float("nan")


class _Progress(keras.callbacks.Callback):
    """One progress bar per run: a tick per epoch with loss and validation accuracy."""

    def __init__(self, label, epochs, enabled):
        super().__init__()
        self.label, self.epochs, self.enabled = label, epochs, enabled
        self.bar = None

    def on_train_begin(self, logs=None):
        if self.enabled:
            print(self.label, flush=True)
            self.bar = keras.utils.Progbar(self.epochs, stateful_metrics=["loss", "val_accuracy"])

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            logs = logs or {}
            self.bar.update(epoch + 1, [(k, logs[k]) for k in ("loss", "val_accuracy") if k in logs])


def default_optimizer(total_steps):
    """Adam with the learning rate decayed from 1e-3 to 0 along a cosine, so every run ends at rest.

    Args:
        total_steps: optimizer steps of the run.

    Returns:
        A new `keras.optimizers.Adam`.

    Example:

    ```python
    from keras_wtrain.comparison import default_optimizer

    optimizer = default_optimizer(100)
    ```
    """
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(LEARNING_RATE, max(1, int(total_steps))))


def _evaluate(model, x, y):
    result = model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
    return float(result["loss"]), float(result["accuracy"])


def run_one(technique, inputs, seed, epochs, batch_size, progress=True, measure=True, optimizer=None):
    """Trains one technique with one seed and measures it; returns one row of `results.json`'s `runs`.

    Args:
        technique: a technique name (single or `+` combination).
        inputs: the comparison's `Inputs` (`keras_wtrain.comparison.prepare`).
        seed: the run's seed.
        epochs: training epochs.
        batch_size: training batch size.
        progress: print a progress bar.
        measure: measure the mechanism (flatness and the technique's own numbers).
        optimizer: `f(total_steps) -> optimizer` (default `default_optimizer`).

    Returns:
        A dict: `technique`, `seed`, test/train accuracy and loss, `final_val_accuracy`, accuracy curves,
        `wall_time_s`, `step_time_s`, `peak_rss_mib`, `mechanisms`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.comparison import prepare
    from keras_wtrain.comparison.runner import run_one

    x, y = np.random.rand(120, 8, 8, 1).astype("float32"), np.arange(120) % 3
    row = run_one("loss-noise", prepare("mlp", (x, y)), seed=0, epochs=1, batch_size=32, progress=False)
    print(row["test_accuracy"], row["mechanisms"]["loss_noise_stddev"])
    ```
    """
    data = inputs.splits
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    setup = build_technique(technique, inputs.make_model, (data.x_train, data.y_train), epochs, batch_size, seed)
    model = setup.model
    steps = epochs * -(-len(data.y_train) // batch_size)
    # A technique that comes with its own schedule (SWA's, LAWA's constant rate) uses it; the rest the harness's.
    model.compile((setup.optimizer or optimizer or default_optimizer)(steps), inputs.loss, metrics=["accuracy"])
    timer = StepTimer()
    history = model.fit(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[*setup.callbacks, timer, _Progress(f"[{technique} | seed {seed}]", epochs, progress)],
    )
    test_loss, test_accuracy = _evaluate(model, data.x_test, data.y_test)
    val_loss, val_accuracy = _evaluate(model, data.x_val, data.y_val)
    train_loss, train_accuracy = _evaluate(model, data.x_train, data.y_train)
    wall = time.perf_counter() - start
    found = dict(setup.info)
    if measure:
        found.update(mechanisms.flatness(model, (data.x_train, data.y_train), inputs.loss))
        if setup.averaging is not None:
            found.update(mechanisms.averaging_mechanism(setup.averaging, (data.x_train, data.y_train)))
        if setup.shifting is not None:
            found.update({f"shift_{k}": v for k, v in mechanisms.shifting_mechanism(setup.shifting).items()})
        if "shadow" in found.get("wrapped_layers", {}):
            dom = mechanisms.shadow_mechanism(
                model, (data.x_test, data.y_test), train=(data.x_train, data.y_train), batch_size=batch_size
            )
            if dom:
                found.update(aom_accuracy=test_accuracy, **dom)
    return {
        "technique": technique,
        "seed": seed,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "train_accuracy": train_accuracy,
        "train_loss": train_loss,
        "final_val_accuracy": val_accuracy,
        "val_accuracy_curve": [float(v) for v in history.history.get("val_accuracy", [])],
        "train_accuracy_curve": [float(v) for v in history.history.get("accuracy", [])],
        "wall_time_s": wall,
        "step_time_s": timer.median_step_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "mechanisms": found,
    }
