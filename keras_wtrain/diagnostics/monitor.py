"""`FlatnessMonitor`: a callback that logs the flatness diagnostics into `History` every N epochs."""

import keras

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core import validation
from keras_wtrain._core.objective import _read
from keras_wtrain.diagnostics.hessian import hessian_trace
from keras_wtrain.diagnostics.hessian import top_hessian_eigenvalue
from keras_wtrain.diagnostics.perturbation import sharpness

__all__ = ["FlatnessMonitor"]


@keras.saving.register_keras_serializable(package="keras_wtrain")
class FlatnessMonitor(keras.callbacks.Callback):
    """Logs the Hessian trace, top eigenvalue and sharpness every `every_n_epochs` epochs into `History`.

    Logged keys: `hessian_trace`, `hessian_trace_ci95`, `top_eigenvalue`, `sharpness_mean`, `sharpness_max`
    (also after the last epoch), on a fixed slice of `data` with fixed seeds so epochs are comparable.
    Cost: one `measure()` (the three diagnostics on `max_examples` examples) per measured epoch.

    Args:
        data: `(x, y)` training data, required at `fit` start (a callback cannot see fit's data; not serialised).
        every_n_epochs: measure every this many epochs, an int >= 1.
        variables: as for `hessian_trace`.
        num_probes: Hutchinson probes, an int >= 1.
        top_eigenvalue: also run the power iteration.
        sharpness_radius: perturbation radius (> 0), or None to skip sharpness.
        num_samples: sharpness directions, an int >= 1.
        max_examples: examples of `data` used, an int >= 1.
        seed: int seed of probes and directions.

    Raises:
        ValueError, TypeError: for bad arguments; at `fit` start, ValueError for missing, empty or non-finite `data`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.diagnostics import FlatnessMonitor

    x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[FlatnessMonitor((x, y), num_probes=4, seed=0)])
    print(history.history["hessian_trace"])
    ```
    """

    def __init__(
        self,
        data=None,
        every_n_epochs=1,
        variables=None,
        num_probes=20,
        top_eigenvalue=True,
        sharpness_radius=0.05,
        num_samples=10,
        max_examples=512,
        seed=0,
    ):
        super().__init__()
        self.data = data
        self.every_n_epochs = validation.check_int("every_n_epochs", every_n_epochs, minimum=1)
        self.variables = variables
        self.num_probes = validation.check_int("num_probes", num_probes, minimum=1)
        self.top_eigenvalue = validation.check_bool("top_eigenvalue", top_eigenvalue)
        self.sharpness_radius = (
            None if sharpness_radius is None else validation.check_positive("sharpness_radius", sharpness_radius)
        )
        self.num_samples = validation.check_int("num_samples", num_samples, minimum=1)
        self.max_examples = validation.check_int("max_examples", max_examples, minimum=1)
        self.seed = validation.check_seed(seed)
        self._epochs = None

    def on_train_begin(self, logs=None):
        self._epochs = self.params.get("epochs") if self.params else None
        if self.data is None:
            raise ValueError("FlatnessMonitor: argument `data` is required (a callback cannot see fit's data).")
        _read(self.data, self.max_examples, owner="FlatnessMonitor")  # the examples measured: refused at fit start

    def measure(self):
        """Measures now; returns the dict of values that `on_epoch_end` logs.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.diagnostics import FlatnessMonitor

        x, y = np.random.rand(32, 3).astype("float32"), np.random.rand(32, 1).astype("float32")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        monitor = FlatnessMonitor((x, y), num_probes=2, top_eigenvalue=False, sharpness_radius=None)
        monitor.set_model(model)
        model.compile("sgd", "mse")
        print(monitor.measure())  # {'hessian_trace': ..., 'hessian_trace_ci95': ...}
        ```
        """
        common = {"variables": self.variables, "seed": self.seed, "max_examples": self.max_examples}
        trace = hessian_trace(self.model, self.data, num_probes=self.num_probes, **common)
        out = {"hessian_trace": trace["trace"], "hessian_trace_ci95": trace["ci95"]}
        if self.top_eigenvalue:
            out["top_eigenvalue"] = top_hessian_eigenvalue(self.model, self.data, max_iterations=50, **common)[
                "eigenvalue"
            ]
        if self.sharpness_radius is not None:
            sharp = sharpness(
                self.model, self.data, radius=self.sharpness_radius, num_samples=self.num_samples, **common
            )
            out["sharpness_mean"], out["sharpness_max"] = sharp["mean"], sharp["max"]
        return out

    def on_epoch_end(self, epoch, logs=None):
        last = self._epochs is not None and epoch + 1 == self._epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        if logs is not None:
            logs.update(self.measure())

    @classmethod
    def from_config(cls, config):
        """Rebuilds the callback from `get_config()` (without `data`: set `callback.data` again)."""
        return cls(**config)

    def get_config(self):
        """The constructor arguments but `data` and `variables`."""
        return {
            "every_n_epochs": self.every_n_epochs,
            "num_probes": self.num_probes,
            "top_eigenvalue": self.top_eigenvalue,
            "sharpness_radius": self.sharpness_radius,
            "num_samples": self.num_samples,
            "max_examples": self.max_examples,
            "seed": self.seed,
        }
