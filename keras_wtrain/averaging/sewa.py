"""SeWA, selective weight averaging (Wang et al. 2025): average the `k` of the last `T` checkpoints that a learned
mask selects, never worse on the training loss than LAWA, the whole window or random subsets."""

import time

import keras
import numpy as np

from keras_wtrain._core.data_adapters import check_finite
from keras_wtrain._core.data_adapters import check_fits_model
from keras_wtrain._core.data_adapters import collect
from keras_wtrain._core.validation import check_choice
from keras_wtrain._core.validation import check_int
from keras_wtrain._core.validation import check_positive
from keras_wtrain._core.validation import check_seed
from keras_wtrain.averaging.lawa import TrajectoryAveraging
from keras_wtrain.averaging.objective import FlatObjective
from keras_wtrain.averaging.objective import SelectionObjective
from keras_wtrain.averaging.rules import Average
from keras_wtrain.averaging.rules import AveragingContext
from keras_wtrain.averaging.rules import get_averaging_rule
from keras_wtrain.averaging.rules import uniform_average
from keras_wtrain.averaging.selection import select_checkpoints

__all__ = ["SeWA"]

_CONFIG_ATTRIBUTES = (
    "k num_checkpoints start every_n_steps checkpoint_dir temperature num_samples selection_steps "
    "selection_learning_rate selection_batch_size selection_size num_random_subsets max_evaluations seed verbose"
).split()


@keras.saving.register_keras_serializable(package="keras_wtrain")
class SeWA(TrajectoryAveraging):
    """Selective weight averaging (SeWA, Wang et al. 2025, arXiv:2502.10119).

    Every `every_n_steps` optimizer steps from step `start` on, the model's float weights are kept in a ring
    buffer of the last `T = num_checkpoints`. At the end of training (and for each validation with
    `swap_for_validation=True`) SeWA's selection (`select`) learns a Concrete-relaxed mask over them, evaluates
    LAWA, the whole window, `num_random_subsets` random `k`-subsets and the relaxed masks exactly on `F` (the
    training loss of `keras_wtrain._core.objective.loss_value` on the first `selection_size` examples of
    `selection_data`), improves the best by a swap search, and installs the subset with the lowest `F`:
    `F(SeWA) <= min(F(LAWA), F(window), F(best random subset))` by construction. `selection_report` records it.
    Cost: `T` host copies of the float weights (a memory map with `checkpoint_dir`) plus two while an average is
    swapped in; one host copy per checkpoint; the selection is about 40 evaluations of `F` on `selection_size`
    examples, a fixed cost that does not grow with the training set.

    Args:
        k: checkpoints averaged (`K`), an int ≤ `num_checkpoints`.
        num_checkpoints: checkpoints kept (`T`); defaults to `2 * k`.
        start: global optimizer step at which checkpointing starts (an int ≥ 0).
        every_n_steps: optimizer steps between checkpoints (an int ≥ 1).
        selection_data: training data with targets (`(x, y)`, a dataset, batches); required.
        selection_size: examples of `selection_data` used by `F` (the first ones).
        temperature: Concrete temperature (> 0).
        num_samples: relaxed masks per selection step.
        selection_steps: iterations of the relaxed phase.
        selection_learning_rate: Adam step size on the mask probabilities.
        selection_batch_size: examples per relaxed-mask loss evaluation.
        num_random_subsets: random `k`-subsets evaluated as baselines.
        max_evaluations: exact evaluations of `F` besides the baselines (relaxed checks and swap search).
        checkpoint_dir: a directory for a disk-backed, resumable buffer (`keras.callbacks.BackupAndRestore`).
        loss: loss of `F`; defaults to the model's compiled loss.
        seed: int seed of the Gumbel noise, the minibatch order and the random subsets.
        verbose: 0 or 1 (one line per selection).
        swap_for_validation: validate with SeWA's average (one selection per validation pass).
        install: install the average at the end of training (the raw weights stay in `raw_weights()`).
        batchnorm_data: data to re-estimate batch-norm statistics after installing; defaults to the inputs of
            `selection_data` when the model has batch normalization.
        batchnorm_batch_size: batch size of that re-estimation.

    Raises:
        ValueError: an argument outside its range (named in the message); `selection_data` missing, empty or
            not finite (at `fit` start); `T` copies beyond the available memory without `checkpoint_dir`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging import SeWA

    x, y = np.random.rand(256, 8).astype("float32"), np.random.randint(0, 3, 256)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sewa = SeWA(k=3, num_checkpoints=6, every_n_steps=4, selection_data=(x, y), seed=0)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[sewa])
    print(sewa.selected_steps, sewa.selection_report["objective"])
    ```
    """

    _paper_arxiv = "2502.10119"

    def __init__(
        self,
        k=10,
        num_checkpoints=None,
        start=0,
        every_n_steps=1,
        selection_data=None,
        selection_size=256,
        temperature=0.5,
        num_samples=2,
        selection_steps=16,
        selection_learning_rate=0.1,
        selection_batch_size=32,
        num_random_subsets=20,
        max_evaluations=16,
        checkpoint_dir=None,
        loss=None,
        seed=None,
        verbose=0,
        swap_for_validation=False,
        install=True,
        batchnorm_data=None,
        batchnorm_batch_size=128,
    ):
        k = check_int("k", k, minimum=1, owner="SeWA")
        super().__init__(
            num_checkpoints=2 * k if num_checkpoints is None else num_checkpoints,
            start=start,
            every_n_steps=every_n_steps,
            ema_decay=None,
            checkpoint_dir=checkpoint_dir,
            swap_for_validation=swap_for_validation,
            install=install,
            batchnorm_data=batchnorm_data,
            batchnorm_batch_size=batchnorm_batch_size,
        )
        if k > self.num_checkpoints:
            raise ValueError(
                f"SeWA: argument `k` must be <= `num_checkpoints` ({self.num_checkpoints}); received k={k}."
            )
        self.k = k
        self.temperature = check_positive("temperature", temperature, owner="SeWA")
        self.num_samples = check_int("num_samples", num_samples, minimum=1, owner="SeWA")
        self.selection_steps = check_int("selection_steps", selection_steps, minimum=1, owner="SeWA")
        self.selection_learning_rate = check_positive("selection_learning_rate", selection_learning_rate, owner="SeWA")
        self.selection_batch_size = check_int("selection_batch_size", selection_batch_size, minimum=1, owner="SeWA")
        self.selection_size = check_int("selection_size", selection_size, minimum=1, owner="SeWA")
        self.num_random_subsets = check_int("num_random_subsets", num_random_subsets, minimum=0, owner="SeWA")
        self.max_evaluations = check_int("max_evaluations", max_evaluations, minimum=0, owner="SeWA")
        self.selection_data = selection_data
        self.loss = loss
        self.seed = check_seed(seed, owner="SeWA")
        self.verbose = check_choice("verbose", verbose, (0, 1), owner="SeWA")
        self._objective = self._data_xy = None
        self.selected_indices = self.selected_steps = self.probabilities = None
        self.average_loss = self.selection_time_s = self.selection_report = None
        self.objective_history = []

    # ------------------------------------------------------------------ objective and averages
    def _data(self):
        if self._data_xy is None:
            if self.selection_data is None:
                raise ValueError(
                    "SeWA: argument `selection_data` is required (the data of its objective); received None."
                )
            data_xy = collect(
                self.selection_data, max_examples=self.selection_size, require_targets=True, name="selection_data"
            )
            self._data_xy = check_finite(data_xy, "selection_data", owner="SeWA")
        return self._data_xy

    def _get_objective(self):
        """`F` on the selection data at flat weights (compiled once per model and loss, see `SelectionObjective`)."""
        if self._objective is None or self._objective.model is not self.model:
            x, y = self._data()
            self._objective = FlatObjective(SelectionObjective(self.model, self.loss), self._weights(), x, y)
        return self._objective

    def weights_loss(self, flat_weights):
        """Training loss `F` (a float) at flat weights on the selection examples, model untouched.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging import SeWA

        data = (np.ones((8, 4)), np.zeros((8, 2)))
        sewa = SeWA(k=1, loss="mse", selection_data=data)
        sewa.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        print(sewa.weights_loss(sewa.current_weights()), sewa.weights_loss(0 * sewa.current_weights()))  # ..., 0.0
        ```
        """
        return self._get_objective().loss(flat_weights)

    def objective(self, indices, weights_matrix=None):
        """Training loss `F` (a float) of the uniform average of checkpoints `indices` (what SeWA minimises).

        Args:
            indices: positions in the kept buffer (0 = oldest), a sequence of ints.
            weights_matrix: optional `(T, P)` array of checkpoints (defaults to `checkpoints()`).

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging import SeWA

        data = (np.ones((8, 4)), np.zeros((8, 2)))
        sewa = SeWA(k=1, loss="mse", selection_data=data)
        sewa.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        w = sewa.current_weights()
        assert sewa.objective([0, 1], weights_matrix=np.stack([w, -w])) == 0.0   # the average is all zeros
        ```
        """
        w = self._ordered_checkpoints() if weights_matrix is None else np.asarray(weights_matrix, np.float32)
        return self.weights_loss(uniform_average(w, indices))

    def select(self, weights_matrix=None):
        """Runs SeWA's selection (`select_checkpoints`) on the kept checkpoints.

        The relaxed mask starts from LAWA's; the baselines (LAWA, the whole window, `num_random_subsets`
        random `k`-subsets) and the relaxed masks are evaluated exactly, a swap local search on the exact
        `F` follows, and the subset with the lowest `F` is returned: its `F` is never above LAWA's, the
        window's or the best random subset's. The record of the selection is `selection_report`.

        Args:
            weights_matrix: optional `(T, P)` array of checkpoints (defaults to `checkpoints()`).

        Returns:
            `(indices, probabilities)`: the chosen positions (sorted, 0 = oldest; `k` of them, or all `T`
            when the whole window has the lowest `F`) and the learned `s` (numpy float array of length `T`).

        Raises:
            ValueError: if fewer than `k` checkpoints are kept or `selection_data` is missing.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging import SeWA

        sewa = SeWA(k=1, loss="mse", selection_data=(np.ones((8, 4)), np.zeros((8, 2))), seed=0)
        sewa.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        w = sewa.current_weights()
        indices, s = sewa.select(np.stack([w, 0.1 * w, 2 * w]))
        assert indices.tolist() == [1]   # the weights nearest 0, with the lowest loss
        print(sewa.selection_report["objective"])   # F of SeWA's choice, LAWA, the window, the best random subset
        ```
        """
        w = self._ordered_checkpoints() if weights_matrix is None else np.asarray(weights_matrix, np.float32)
        if len(w) < self.k:
            raise ValueError(f"SeWA needs at least k={self.k} checkpoints; {len(w)} are kept.")
        objective = self._get_objective()
        options = dict(temperature=self.temperature, num_samples=self.num_samples, steps=self.selection_steps)
        options.update(learning_rate=self.selection_learning_rate, batch_size=self.selection_batch_size)
        options.update(num_random_subsets=self.num_random_subsets, max_evaluations=self.max_evaluations)
        result = select_checkpoints(
            w, objective.loss_and_grad, objective.num_examples, self.k, seed=self.seed, loss=objective.loss, **options
        )
        report = dict(result.report, objective_examples=int(objective.num_examples))
        if weights_matrix is None:
            steps = self.checkpoint_steps
            report["steps"] = {
                name: None if indices is None else [int(steps[i]) for i in indices]
                for name, indices in report["indices"].items()
            }
        self.objective_history, self.selection_report = result.history, report
        return result.indices, result.probabilities

    def average_weights(self, rule="sewa", indices=None):
        """An average of the kept checkpoints by a rule, for comparison (nothing is installed).

        Args:
            rule: "sewa" (the selection), "lawa" (the latest `k`), "swa" (the whole window), "random" (`k` at
                random), or a rule function `rule(checkpoints, context) -> Average`.
            indices: explicit positions to average uniformly (overrides `rule`).

        Returns:
            `(flat_weights, info)`: a `(P,)` float32 array and a dict with `indices`, `steps`, `probabilities`
            (SeWA only) and `selection_time_s`.

        Raises:
            ValueError: on an unknown rule, no checkpoint, or fewer than `k` for a `k`-subset rule.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging import SeWA

        x, y = np.random.rand(64, 4), np.random.rand(64, 2)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        sewa = SeWA(k=2, num_checkpoints=4, selection_data=(x, y), install=False)
        model.fit(x, y, batch_size=16, verbose=0, callbacks=[sewa])
        flat, info = sewa.average_weights("lawa")
        assert info["steps"] == [3, 4] and np.allclose(flat, sewa.checkpoints()[2:].mean(0))
        ```
        """
        if rule == "ema":
            raise ValueError("argument `rule`: SeWA keeps no EMA; use the EMA callback.")
        begin = time.perf_counter()
        if indices is not None:
            indices = [int(i) for i in np.asarray(indices, int)]
            result = Average(self._trajectory.buffer.mean(indices), indices)
        elif rule == "sewa":
            chosen, probabilities = self.select()
            result = Average(self._trajectory.buffer.mean(chosen), [int(i) for i in chosen], probabilities)
        else:
            w = self._ordered_checkpoints()
            if len(w) == 0:
                raise ValueError("no checkpoint has been kept yet (check `start` and `every_n_steps`).")
            result = Average(*get_averaging_rule(rule)(w, AveragingContext(self.k, self.seed, None, self.select)))
        steps = self.checkpoint_steps
        info = {
            "indices": result.indices,
            "steps": steps.tolist() if result.indices is None else steps[result.indices].tolist(),
            "probabilities": result.probabilities,
            "selection_time_s": time.perf_counter() - begin,
        }
        return result.weights, info

    def _ordered_checkpoints(self):
        """The kept checkpoints, oldest first, as a view of the ring buffer (reordered in place, no copy)."""
        if self._trajectory is None:
            return np.zeros((0, 0), np.float32)
        return self._trajectory.buffer.ordered_rows()

    def average(self):
        """SeWA's average of the kept checkpoints (runs the selection), a `(P,)` float32 array."""
        flat, info = self.average_weights("sewa")
        self.selected_indices, self.selected_steps = info["indices"], info["steps"]
        self.probabilities, self.selection_time_s = info["probabilities"], info["selection_time_s"]
        return flat

    def _needed(self):
        return self.k

    def _update_batchnorm(self):
        if self.batchnorm_data is None and self.selection_data is not None:
            from keras_wtrain._core.batchnorm import batchnorm_layers
            from keras_wtrain._core.batchnorm import update_batchnorm_statistics

            if not batchnorm_layers(self.model):
                return 0
            x, _ = self._data()
            return update_batchnorm_statistics(self.model, x, batch_size=self.batchnorm_batch_size)
        return super()._update_batchnorm()

    # ------------------------------------------------------------------ callback hooks
    def on_train_begin(self, logs=None):
        x, _ = self._data()  # read once (kept for the selection) and checked at fit start: missing, empty, NaN
        check_fits_model(self.model, x, "selection_data", owner="SeWA")
        super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if not self.installed:
            return
        self.average_loss = self.weights_loss(self._weights().read())
        if logs is not None:
            logs["averaged_loss"] = self.average_loss
            logs["averaging_selection_time_s"] = self.selection_time_s
            for name, value in self.selection_report["objective"].items():
                if value is not None:
                    logs[f"selection_objective_{name}"] = value
        if self.verbose:
            print(
                f"SeWA: steps {self.selected_steps}, loss {self.average_loss}, selection {self.selection_time_s:.2f}s"
            )

    # ------------------------------------------------------------------ serialization
    def get_config(self):
        """Constructor arguments, except data (`selection_data`, `batchnorm_data`).

        Example:

        ```python
        from keras_wtrain.averaging import SeWA

        cb = SeWA(k=3, num_checkpoints=5)
        assert SeWA.from_config(cb.get_config()).get_config() == cb.get_config()
        ```
        """
        loss = self.loss if isinstance(self.loss, str) or self.loss is None else keras.losses.serialize(self.loss)
        config = self._base_config()
        config.update({name: getattr(self, name) for name in _CONFIG_ATTRIBUTES})
        config.update(loss=loss)
        return config

    @classmethod
    def from_config(cls, config):
        """Builds the callback from `get_config()` output (data arguments must be set again).

        Example:

        ```python
        from keras_wtrain.averaging import SeWA

        cb = SeWA.from_config(SeWA(k=2).get_config())
        ```
        """
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)
