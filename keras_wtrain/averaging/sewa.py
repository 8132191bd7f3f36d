"""Selective weight averaging (SeWA, Wang et al., arXiv:2502.10119) and its baselines SWA, LAWA, EMA.

The callback keeps the last `T` checkpoints of training on the host and, at the end of training,
installs an average of them. It composes small pieces, one job each:

- `trajectory_recorder.TrajectoryRecorder` (the base class): records the trajectory during `fit`
  into a `trajectory.Trajectory` (the kept checkpoints in a `checkpoint_buffer.CheckpointBuffer`,
  in memory or on disk, and the running EMA), counting steps with `model.optimizer.iterations`;
- `flat_weights.FlatWeights`: the model's float variables as one flat vector;
- `averaging`: the averaging rules ("sewa", "swa", "lawa", "ema", "random") and the EMA update;
- `selection_objective.SelectionObjective`: the training loss at given weights, model untouched;
- `selection.select_checkpoints`: SeWA's relaxed-mask optimisation;
- `keras_wtrain._core.batchnorm.update_batchnorm_statistics`: batch-norm re-estimation after averaging.
"""

import time
import warnings

import keras
import numpy as np

from keras_wtrain._core.batchnorm import batchnorm_layers
from keras_wtrain._core.batchnorm import update_batchnorm_statistics
from keras_wtrain._core.data_adapters import check_finite
from keras_wtrain._core.data_adapters import collect
from keras_wtrain._core.validation import check_bool
from keras_wtrain._core.validation import check_choice
from keras_wtrain._core.validation import check_int
from keras_wtrain._core.validation import check_positive
from keras_wtrain._core.validation import check_seed
from keras_wtrain.averaging.objective import FlatObjective
from keras_wtrain.averaging.objective import SelectionObjective
from keras_wtrain.averaging.recorder import TrajectoryRecorder
from keras_wtrain.averaging.rules import AVERAGING_RULES
from keras_wtrain.averaging.rules import Average
from keras_wtrain.averaging.rules import AveragingContext
from keras_wtrain.averaging.rules import checkpoints_needed
from keras_wtrain.averaging.rules import get_averaging_rule
from keras_wtrain.averaging.rules import uniform_average
from keras_wtrain.averaging.selection import select_checkpoints

# `update_batchnorm_statistics` moved to keras_wtrain._core.batchnorm; importing it from here keeps working.
__all__ = ["SeWA", "SelectiveWeightAveraging", "update_batchnorm_statistics"]

STRATEGIES = tuple(AVERAGING_RULES)
_CONFIG_ATTRIBUTES = (  # besides the base class's, strategy and loss
    "k temperature num_samples selection_steps selection_learning_rate selection_batch_size selection_size "
    "num_random_subsets max_evaluations update_batchnorm install seed verbose"
).split()


@keras.saving.register_keras_serializable(package="keras_wtrain")
class SelectiveWeightAveraging(TrajectoryRecorder):
    """Selective weight averaging (SeWA, arXiv:2502.10119) with SWA, LAWA, EMA and random baselines.

    Paper: P. Wang, S. Hu, Z. Tao, G. Wang, D. Yu, L. Shen, Q. Zheng, D. Tao, "SeWA: Selective Weight
    Average via Probabilistic Masking", arXiv:2502.10119 (2025).

    **Trajectory** (`TrajectoryRecorder`, the base class): every `every_n_steps` optimizer steps from
    global step `start` on (`model.optimizer.iterations`), the model's float weights are copied to a
    host ring buffer of the last `T = num_checkpoints` checkpoints (`T × P × 4` bytes for `P` float
    weights; a memory-mapped file with `checkpoint_dir`), and folded into an EMA of all of them.

    **Averages** (`strategy`, or `average_weights(strategy)` after training, all from the same
    buffer): "swa" all kept checkpoints, "lawa" the latest `K`, "random" `K` drawn at random, "ema"
    the EMA, "sewa" the `K` chosen by SeWA's mask learning (`select`, see
    `keras_wtrain.averaging.selection`), or any rule function `rule(checkpoints, context) -> Average`
    (see `keras_wtrain.averaging.rules`). The selection objective `F` is the compiled loss plus
    regularisation losses, in inference mode, on the first `selection_size` examples of
    `selection_data` (`SelectionObjective`).

    **SeWA's selection** (`select`, `keras_wtrain.averaging.selection.select_checkpoints`): the relaxed
    mask starts from LAWA's; LAWA, the whole window, `num_random_subsets` random `k`-subsets and the
    relaxed masks are evaluated exactly on `F`; a swap local search on the exact `F` (at most
    `max_evaluations` evaluations besides the baselines) follows; the subset with the lowest `F` is
    chosen, so `F(SeWA) <= min(F(LAWA), F(window), F(best random subset))` by construction (when the
    whole window is best, all `T` checkpoints are averaged). `selection_report` records it all.

    **After training** the average is installed into the model (so a `.keras` file saved after
    `fit` holds it) and, with `update_batchnorm=True`, batch-norm statistics are recomputed on
    `selection_data` (`update_batchnorm_statistics`). Results: `selected_indices` (0 = oldest kept),
    `selected_steps`, `probabilities` (SeWA's `s`), `average_loss` (`F` of the installed average,
    before the batch-norm update), `selection_time_s`, `objective_history`, `selection_report` (SeWA:
    a JSON-serialisable dict with `F` of its choice and of each baseline, see `select_checkpoints`);
    the `on_train_end` logs get `averaged_loss`, `averaging_selection_time_s` and (SeWA)
    `selection_objective_<sewa|lawa|window|random>`; with `evaluate_every_epoch`,
    `averaged_val_<metric>` per epoch.

    **Resumption** (`keras.callbacks.BackupAndRestore`): checkpoints taken after the restored step
    are dropped; with `checkpoint_dir` a new process reloads the buffer and the EMA.

    Args:
        k: checkpoints averaged by "sewa", "lawa" and "random" (`K`), a positive int ≤ `num_checkpoints`.
        num_checkpoints: checkpoints kept (`T`), a positive int; defaults to `2 * k`.
        start: global optimizer step at which checkpointing starts (an int ≥ 0).
        every_n_steps: optimizer steps between checkpoints, a positive int.
        strategy: "sewa", "swa", "lawa", "ema", "random", or a rule function.
        temperature: Concrete temperature `t` > 0.
        num_samples: relaxed masks per selection step (`M`), a positive int.
        selection_steps: iterations of the relaxed phase, a positive int.
        selection_learning_rate: Adam step size on `s`, > 0.
        selection_batch_size: examples per relaxed-mask loss evaluation, a positive int.
        selection_size: number of `selection_data` examples used (the first ones): `F` is their mean
            loss; also the data of the batch-norm update. A positive int; the default 256 bounds the
            selection's cost (about 40 evaluations of `F`), whatever the size of the training set.
        selection_data: training data with targets in any form of `keras_wtrain._core.data_adapters`
            (`(x, y)` arrays, dict inputs included, a `tf.data.Dataset`, batches); required by
            "sewa" and for the batch-norm update.
        num_random_subsets: random `k`-subsets among SeWA's candidates, an int >= 0.
        max_evaluations: SeWA's bound on exact evaluations of `F` besides the `2 + num_random_subsets`
            baselines (relaxed-phase checks and swap search), an int >= 0.
        update_batchnorm: recompute batch-norm statistics after installing an average.
        ema_decay: EMA decay per checkpoint in [0, 1); defaults to `1 − 2 / (k + 1)`.
        evaluate_every_epoch: at each epoch end, evaluate the current average on
            `validation_data` (installed temporarily, then the training weights are restored).
        validation_data: `(x, y)` data for `evaluate_every_epoch`.
        checkpoint_dir: directory for a disk-backed, resumable buffer.
        install: install the average at the end of training.
        loss: loss of the selection objective; defaults to the model's compiled loss.
        seed: int seed of the Gumbel noise, the minibatch order and the "random" strategy.
        verbose: 0 or 1 (print a line per selection).

    Raises:
        ValueError: on an argument outside its range (named in the message).
        TypeError: on an argument of the wrong type.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging.sewa import SelectiveWeightAveraging

    x, y = np.random.rand(256, 8).astype("float32"), np.random.randint(0, 3, 256)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sewa = SelectiveWeightAveraging(k=3, num_checkpoints=6, every_n_steps=4, selection_data=(x, y), seed=0)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[sewa])
    print(sewa.selected_steps, sewa.probabilities, sewa.average_loss)
    ```
    """

    _paper_arxiv = "2502.10119"

    def __init__(
        self,
        k=10,
        num_checkpoints=None,
        start=0,
        every_n_steps=1,
        strategy="sewa",
        temperature=0.5,
        num_samples=2,
        selection_steps=16,
        selection_learning_rate=0.1,
        selection_batch_size=32,
        selection_size=256,
        selection_data=None,
        num_random_subsets=20,
        max_evaluations=16,
        update_batchnorm=True,
        ema_decay=None,
        evaluate_every_epoch=False,
        validation_data=None,
        checkpoint_dir=None,
        install=True,
        loss=None,
        seed=None,
        verbose=0,
    ):
        k = check_int("k", k, minimum=1)
        super().__init__(
            num_checkpoints=2 * k if num_checkpoints is None else num_checkpoints,
            start=start,
            every_n_steps=every_n_steps,
            ema_decay=1.0 - 2.0 / (k + 1.0) if ema_decay is None else ema_decay,
            checkpoint_dir=checkpoint_dir,
        )
        if k > self.num_checkpoints:
            raise ValueError(f"argument `k` must be <= `num_checkpoints` ({self.num_checkpoints}); received k={k}.")
        self.k = k
        get_averaging_rule(strategy)  # raises on an unknown strategy
        self.strategy = strategy
        self.temperature = check_positive("temperature", temperature)
        self.num_samples = check_int("num_samples", num_samples, minimum=1)
        self.selection_steps = check_int("selection_steps", selection_steps, minimum=1)
        self.selection_learning_rate = check_positive("selection_learning_rate", selection_learning_rate)
        self.selection_batch_size = check_int("selection_batch_size", selection_batch_size, minimum=1)
        self.selection_size = check_int("selection_size", selection_size, minimum=1)
        self.num_random_subsets = check_int("num_random_subsets", num_random_subsets, minimum=0)
        self.max_evaluations = check_int("max_evaluations", max_evaluations, minimum=0)
        self.selection_data = selection_data
        self.update_batchnorm = check_bool("update_batchnorm", update_batchnorm)
        self.evaluate_every_epoch = check_bool("evaluate_every_epoch", evaluate_every_epoch)
        if evaluate_every_epoch and validation_data is None:
            raise ValueError("argument `validation_data` is required when `evaluate_every_epoch=True`; received None.")
        self.validation_data = validation_data
        self.install = check_bool("install", install)
        self.loss = loss
        self.seed = check_seed(seed)
        self.verbose = check_choice("verbose", verbose, (0, 1))
        self._objective = self._data_xy = self._validation_xy = None
        self.selected_indices = self.selected_steps = self.probabilities = None
        self.average_loss = self.selection_time_s = self.selection_report = None
        self.objective_history = []

    # ------------------------------------------------------------------ objective and averages
    def _data(self):
        if self._data_xy is None:
            if self.selection_data is None:
                raise ValueError(
                    "argument `selection_data` is required by strategy 'sewa' and for `average_loss`; received None."
                )
            data_xy = collect(
                self.selection_data, max_examples=self.selection_size, require_targets=True, name="selection_data"
            )
            self._data_xy = check_finite(data_xy, "selection_data", owner="SelectiveWeightAveraging")
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
        from keras_wtrain.callbacks import SelectiveWeightAveraging

        data = (np.ones((8, 4)), np.zeros((8, 2)))
        sewa = SelectiveWeightAveraging(k=1, strategy="swa", loss="mse", selection_data=data)
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
        from keras_wtrain.callbacks import SelectiveWeightAveraging

        data = (np.ones((8, 4)), np.zeros((8, 2)))
        sewa = SelectiveWeightAveraging(k=1, strategy="swa", loss="mse", selection_data=data)
        sewa.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        w = sewa.current_weights()
        assert sewa.objective([0, 1], weights_matrix=np.stack([w, -w])) == 0.0   # the average is all zeros
        ```
        """
        w = self.checkpoints() if weights_matrix is None else np.asarray(weights_matrix, np.float32)
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
        from keras_wtrain.callbacks import SelectiveWeightAveraging

        sewa = SelectiveWeightAveraging(k=1, loss="mse", selection_data=(np.ones((8, 4)), np.zeros((8, 2))), seed=0)
        sewa.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        w = sewa.current_weights()
        indices, s = sewa.select(np.stack([w, 0.1 * w, 2 * w]))
        assert indices.tolist() == [1]   # the weights nearest 0, with the lowest loss
        print(sewa.selection_report["objective"])   # F of SeWA's choice, LAWA, the window, the best random subset
        ```
        """
        w = self.checkpoints() if weights_matrix is None else np.asarray(weights_matrix, np.float32)
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

    def average_weights(self, strategy=None, indices=None):
        """The averaged float weights for a strategy, from the kept checkpoints (nothing is installed).

        Args:
            strategy: a strategy name or rule function; defaults to the callback's `strategy`.
            indices: optional explicit positions to average uniformly (overrides `strategy`).

        Returns:
            `(flat_weights, info)`: a `(P,)` float32 array and a dict with `indices` (None for
            "ema"), `steps`, `probabilities` (SeWA only) and `selection_time_s`.

        Raises:
            ValueError: on an unknown strategy, no checkpoint, or fewer than `k` for a `K`-subset rule.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.callbacks import SelectiveWeightAveraging

        x, y = np.random.rand(64, 4), np.random.rand(64, 2)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        sewa = SelectiveWeightAveraging(k=2, num_checkpoints=4, strategy="swa", install=False)
        model.fit(x, y, batch_size=16, verbose=0, callbacks=[sewa])
        flat, info = sewa.average_weights("lawa")
        assert info["steps"] == [3, 4] and np.allclose(flat, sewa.checkpoints()[2:].mean(0))
        ```
        """
        rule = get_averaging_rule(self.strategy if strategy is None else strategy)
        w = self.checkpoints()
        if len(w) == 0:
            raise ValueError("no checkpoint has been kept yet (check `start` and `every_n_steps`).")
        begin = time.perf_counter()
        if indices is None:
            result = Average(*rule(w, AveragingContext(self.k, self.seed, self.ema_weights, self.select)))
        else:
            indices = [int(i) for i in np.asarray(indices, int)]
            result = Average(uniform_average(w, indices), indices)
        steps = self.checkpoint_steps
        info = {
            "indices": result.indices,
            "steps": steps.tolist() if result.indices is None else steps[result.indices].tolist(),
            "probabilities": result.probabilities,
            "selection_time_s": time.perf_counter() - begin,
        }
        return result.weights, info

    def install_weights(self, flat_weights, update_batchnorm=None):
        """Assigns flat averaged weights to the model, then (optionally) recomputes batch-norm statistics.

        Args:
            flat_weights: a `(P,)` array from `average_weights`, `current_weights` or `checkpoints()`.
            update_batchnorm: defaults to the callback's `update_batchnorm`.

        Returns:
            The number of batch-normalization layers updated.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.callbacks import SelectiveWeightAveraging

        sewa = SelectiveWeightAveraging(k=1, strategy="swa")
        sewa.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        sewa.install_weights(np.zeros(10, "float32"))   # every weight 0; returns 0 (no batch normalization)
        ```
        """
        self._weights().assign(np.asarray(flat_weights, np.float32))
        update_batchnorm = self.update_batchnorm if update_batchnorm is None else update_batchnorm
        if not update_batchnorm or not batchnorm_layers(self.model):
            return 0
        if self.selection_data is None:
            warnings.warn(
                "SelectiveWeightAveraging: the model has BatchNormalization layers but no `selection_data` was "
                "given, so their statistics were not recomputed for the averaged weights.",
                stacklevel=2,
            )
            return 0
        x, _ = self._data()
        return update_batchnorm_statistics(self.model, x, batch_size=max(self.selection_batch_size, 32))

    # ------------------------------------------------------------------ callback hooks
    def on_train_begin(self, logs=None):
        if get_averaging_rule(self.strategy) is AVERAGING_RULES["sewa"] and self.selection_data is None:
            raise ValueError("argument `selection_data` is required by strategy 'sewa'; received None.")
        if self.selection_data is not None:
            self._data()  # read (once, kept for the selection) and checked at fit start: empty or NaN data is refused
        super().on_train_begin(logs)

    def _needed(self):
        return checkpoints_needed(get_averaging_rule(self.strategy), self.k)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if not self.evaluate_every_epoch or logs is None or self.num_stored < self._needed():
            return
        saved = self.current_weights()
        if self._validation_xy is None:
            self._validation_xy = collect(self.validation_data, require_targets=True, name="validation_data")
        try:
            self.install_weights(self.average_weights()[0])
            results = self.model.evaluate(*self._validation_xy, verbose=0, return_dict=True)
            for name, value in results.items():
                logs[f"averaged_val_{name}"] = float(value)
        finally:
            self._weights().assign(saved)

    def on_train_end(self, logs=None):
        if self.num_stored == 0:
            warnings.warn(
                "SelectiveWeightAveraging: no checkpoint was taken (training ended before `start`?); "
                "the model keeps its last weights.",
                stacklevel=2,
            )
            return
        if not self.install:
            return
        if self.num_stored < self._needed():
            warnings.warn(
                f"SelectiveWeightAveraging: only {self.num_stored} checkpoints kept, strategy "
                f"{self._strategy_name()!r} needs {self._needed()}; the model keeps its last weights.",
                stacklevel=2,
            )
            return
        flat, info = self.average_weights()
        self.selected_indices, self.selected_steps = info["indices"], info["steps"]
        self.probabilities, self.selection_time_s = info["probabilities"], info["selection_time_s"]
        if self.selection_data is not None:
            self.average_loss = self.weights_loss(flat)
        self.install_weights(flat)
        if logs is not None:
            if self.average_loss is not None:
                logs["averaged_loss"] = self.average_loss
            logs["averaging_selection_time_s"] = self.selection_time_s
            if get_averaging_rule(self.strategy) is AVERAGING_RULES["sewa"]:
                for name, value in self.selection_report["objective"].items():
                    if value is not None:
                        logs[f"selection_objective_{name}"] = value
        if self.verbose:
            print(
                f"SelectiveWeightAveraging[{self._strategy_name()}]: steps {self.selected_steps}, "
                f"loss {self.average_loss}, selection {self.selection_time_s:.2f}s"
            )

    # ------------------------------------------------------------------ serialization
    def _strategy_name(self):
        if isinstance(self.strategy, str):
            return self.strategy
        names = [name for name, rule in AVERAGING_RULES.items() if rule is self.strategy]
        return names[0] if names else getattr(self.strategy, "__name__", repr(self.strategy))

    def get_config(self):
        """Constructor arguments, except data (`selection_data`, `validation_data`).

        A rule function given as `strategy` is stored by name if it is a built-in rule, else
        serialized with `keras.saving.serialize_keras_object` (register it to load it back).

        Returns:
            A JSON-serialisable dict.

        Example:

        ```python
        from keras_wtrain.averaging.sewa import SelectiveWeightAveraging

        cb = SelectiveWeightAveraging(k=3, num_checkpoints=5)
        assert SelectiveWeightAveraging.from_config(cb.get_config()).get_config() == cb.get_config()
        ```
        """
        strategy = self._strategy_name()
        if strategy not in AVERAGING_RULES:
            strategy = keras.saving.serialize_keras_object(self.strategy)
        loss = self.loss if isinstance(self.loss, str) or self.loss is None else keras.losses.serialize(self.loss)
        config = super().get_config()  # num_checkpoints, start, every_n_steps, ema_decay, checkpoint_dir
        config.update({name: getattr(self, name) for name in _CONFIG_ATTRIBUTES})
        config.update(strategy=strategy, loss=loss, evaluate_every_epoch=False)  # the data is not serialized
        return config

    @classmethod
    def from_config(cls, config):
        """Builds the callback from `get_config()` output (data arguments must be set again).

        Example:

        ```python
        from keras_wtrain.averaging.sewa import SelectiveWeightAveraging

        cb = SelectiveWeightAveraging.from_config(SelectiveWeightAveraging(k=2).get_config())
        ```
        """
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.losses.deserialize(config["loss"])
        if isinstance(config.get("strategy"), dict):
            config["strategy"] = keras.saving.deserialize_keras_object(config["strategy"])
        return cls(**config)


SeWA = SelectiveWeightAveraging
