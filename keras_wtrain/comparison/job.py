"""What a comparison job is: the settings its runs depend on (`job_settings`) and its progress line."""

import time

__all__ = ["OPTION_NAMES", "JobProgress", "job_settings"]


class JobProgress:
    """One line for the whole job above each run's own bar: runs done / total, elapsed, estimated time left.

    Elapsed is the wall time since this process started the job; the estimate is the mean wall time of the runs
    this process trained times the runs left (runs read back from a resumed job count as done, not in the mean).

    Args:
        total: runs in the job.
        done: runs already finished (read back).
        enabled: print the line (False for `--no-progress`).

    Example:

    ```python
    from keras_wtrain.comparison.job import JobProgress

    job = JobProgress(total=4, done=1, enabled=False)
    job.finished(12.0)
    assert job.line().startswith("[job] 2/4 runs done,") and job.line().endswith("about 0:00:24 left")
    ```
    """

    def __init__(self, total, done, enabled):
        self.total, self.done, self.enabled = total, done, enabled
        self.trained, self.trained_s = 0, 0.0
        self.started = time.perf_counter()

    @staticmethod
    def _clock(seconds):
        seconds = int(round(seconds))
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    def finished(self, wall_s):
        """Counts one run trained by this process in `wall_s` seconds."""
        self.done += 1
        self.trained += 1
        self.trained_s += wall_s

    def line(self):
        """The job's progress line."""
        left = "time left unknown until a run ends"
        if self.trained:
            left = f"about {self._clock(self.trained_s / self.trained * (self.total - self.done))} left"
        elapsed = self._clock(time.perf_counter() - self.started)
        return f"[job] {self.done}/{self.total} runs done, {elapsed} elapsed, {left}"

    def show(self):
        """Prints the line (when enabled)."""
        if self.enabled:
            print(self.line(), flush=True)


def job_settings(inputs, epochs, batch_size, regime, optimizer, measure):
    """The settings every run of a job depends on (what `RunStore` compares when a job is resumed).

    The model is identified by its name and layer structure, the data by a digest of its splits; techniques and
    seeds are not settings (adding either reuses the finished runs).

    Args:
        inputs: the comparison's `Inputs`.
        epochs: epochs per run.
        batch_size: training batch size.
        regime: the regime name.
        optimizer: the user's optimizer factory or None.
        measure: whether mechanisms are measured.

    Returns:
        A JSON-serialisable dict.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.comparison import prepare
    from keras_wtrain.comparison.job import job_settings

    x, y = np.random.rand(60, 8, 8, 1).astype("float32"), np.arange(60) % 3
    settings = job_settings(prepare("mlp", (x, y)), 2, 32, "converged", None, True)
    print(settings["model"], settings["data_digest"])
    ```
    """
    import keras

    import keras_wtrain
    from keras_wtrain._core._keras_private import sublayers
    from keras_wtrain.comparison.store import fingerprint_arrays

    splits = inputs.splits
    model = inputs.make_model(None)
    structure = [f"{type(layer).__name__}:{layer.count_params() if layer.built else '?'}" for layer in sublayers(model)]
    loss = inputs.loss
    return {
        "model": inputs.model_name,
        "model_layers": _digest_text("|".join(structure)),
        "data": splits.name,
        "data_digest": fingerprint_arrays(
            splits.x_train, splits.y_train, splits.x_val, splits.y_val, splits.x_test, splits.y_test
        ),
        "regime": regime,
        "epochs": epochs,
        "batch_size": batch_size,
        "loss": f"{type(loss).__name__}{loss.get_config() if hasattr(loss, 'get_config') else ''}",
        "optimizer": "default" if optimizer is None else getattr(optimizer, "__qualname__", type(optimizer).__name__),
        "measure": measure,
        "keras_wtrain": keras_wtrain.__version__,
        "backend": keras.backend.backend(),
    }


def _digest_text(text):
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


OPTION_NAMES = {
    "model": "--model",
    "model_layers": "the model's layers",
    "data": "--data/--dataset",
    "data_digest": "the data (its splits)",
    "regime": "--regime",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "loss": "the loss",
    "optimizer": "the optimizer",
    "measure": "measure",
    "keras_wtrain": "the keras-wtrain version",
    "backend": "the Keras backend",
}
