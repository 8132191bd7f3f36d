"""The `OptimumShifting` callback (Zhou et al., arXiv:2405.14111): when to shift, on which batch, the loss guard.

One shift is `keras_wtrain.optimum_shifting.shift.optimum_shift`; the closed form is in
`keras_wtrain.optimum_shifting.least_norm`.
"""

import keras
import numpy as np

from keras_wtrain._core import data_adapters
from keras_wtrain._core import validation
from keras_wtrain.optimum_shifting.least_norm import _LAYER_MODES
from keras_wtrain.optimum_shifting.least_norm import _POOL
from keras_wtrain.optimum_shifting.least_norm import _sample
from keras_wtrain.optimum_shifting.least_norm import _to_arrays
from keras_wtrain.optimum_shifting.least_norm import resolve_layers
from keras_wtrain.optimum_shifting.shift import optimum_shift

__all__ = ["OptimumShifting"]


@keras.saving.register_keras_serializable(package="keras_wtrain")
class OptimumShifting(keras.callbacks.Callback):
    """Optimum shifting (Zhou et al., arXiv:2405.14111, AAAI 2025) as a Keras callback.

    After every `every_n_epochs`-th epoch and at the end of training, replaces each chosen Dense kernel `V` by the
    least-norm kernel with the same outputs on a class-stratified training batch (`optimum_shift`), and rolls the shift
    back when the loss on a held-apart guard slice rises by more than `max_loss_increase` plus `loss_atol`. Convolutions
    are not shifted; `WeightNormalization(Dense)` is, through its effective kernel. Cost: one host-side shift took
    0.2-1 training epoch in the benchmark (an SVD of the batch features in float64); memory: the data and guard arrays.

    Args:
        layers: `"last"` (default: the last Dense layer, the paper's setting), `"dense"` (every Dense layer), or a list
            of layers / layer names.
        every_n_epochs: shift after every `every_n_epochs`-th epoch (default 1); None for never.
        at_end: also shift when training ends (default True).
        batch_size: `"auto"` (default: half the live input rank, every class) or an int > the number of classes.
        data: `(x_train, y_train)` arrays, a dataset or an iterable of `(x, y)` batches (required: the callback cannot
            see `fit`'s data).
        sub_batch_size: examples per linear system for an int `batch_size` (None: automatic).
        seed: seed of the batch and guard choice (None: nondeterministic).
        rtol: relative singular-value cut-off of the least-norm solve.
        max_loss_increase: relative loss increase on the guard slice above which a shift is rolled back (default 0.02);
            None disables the guard.
        guard_size: training examples in the guard slice (default 512; at most a quarter of `data`).
        loss_atol: absolute slack of the guard in loss units (default 0.001).
        verbose: 1 prints each shift's norms, change and guard losses.

    Attributes:
        history: a list of `{"epoch": int or "end", "kept": bool, "loss_before", "loss_after", "layers": {name: info}}`,
            one per shift (see `optimum_shift` for `info`).

    Raises:
        ValueError: for out-of-range arguments; at `fit` start if `data` is None or empty or a layer cannot be shifted.
        TypeError: if `layers` is neither a string nor a list.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.optimum_shifting.callback import OptimumShifting
    from keras_wtrain.comparison.models import build_model

    x, y = np.random.rand(400, 28, 28, 1).astype("float32"), np.arange(400) % 10
    model = build_model("mlp", (28, 28, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    shifting = OptimumShifting(data=(x, y), seed=0)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[shifting])
    print([(h["epoch"], h["kept"]) for h in shifting.history])  # [(0, ...), (1, ...), ('end', ...)]
    ```
    """

    _paper_arxiv = "2405.14111"

    def __init__(
        self,
        layers="last",
        every_n_epochs=1,
        at_end=True,
        batch_size="auto",
        data=None,
        sub_batch_size=None,
        seed=None,
        rtol=1e-6,
        max_loss_increase=0.02,
        guard_size=512,
        loss_atol=1e-3,
        verbose=0,
    ):
        super().__init__()
        if isinstance(layers, str):
            if layers not in _LAYER_MODES:
                raise ValueError(f"argument `layers` must be 'last', 'dense' or a list of layers; received {layers!r}.")
        elif isinstance(layers, (list, tuple)):
            if not layers or not all(isinstance(v, (str, keras.layers.Layer)) for v in layers):
                raise ValueError(
                    f"argument `layers` must be a non-empty list of layers or layer names; received {layers!r}."
                )
            layers = list(layers)
        else:
            raise TypeError(
                f"argument `layers` must be 'last', 'dense' or a list of layers; received {layers!r} "
                f"of type {type(layers).__name__}."
            )
        validation.check_int("every_n_epochs", every_n_epochs, minimum=1, allow_none=True)
        validation.check_bool("at_end", at_end)
        if every_n_epochs is None and not at_end:
            raise ValueError("arguments `every_n_epochs`=None and `at_end`=False: the callback would never shift.")
        if batch_size != "auto":
            validation.check_int("batch_size", batch_size, minimum=2)
        validation.check_int("sub_batch_size", sub_batch_size, minimum=1, allow_none=True)
        validation.check_seed(seed)
        if not validation.is_real(rtol) or not 0.0 < rtol < 1.0:
            raise ValueError(f"argument `rtol` must be in (0, 1); received {rtol!r}.")
        if max_loss_increase is not None:
            validation.check_nonnegative("max_loss_increase", max_loss_increase)
        validation.check_int("guard_size", guard_size, minimum=1)
        validation.check_nonnegative("loss_atol", loss_atol)
        validation.check_choice("verbose", verbose, (0, 1))
        self.layers = layers
        self.every_n_epochs = every_n_epochs
        self.at_end = at_end
        self.batch_size = batch_size
        self.data = data
        self.sub_batch_size = sub_batch_size
        self.seed = seed
        self.rtol = float(rtol)
        self.max_loss_increase = None if max_loss_increase is None else float(max_loss_increase)
        self.guard_size = guard_size
        self.loss_atol = float(loss_atol)
        self.verbose = verbose
        self.history = []
        self._rng = np.random.default_rng(seed)
        self._arrays = None

    def _prepare(self):
        """Reads `data` once and fixes the guard slice (class-stratified, never shifted on)."""
        if self.data is None:
            raise ValueError(
                "OptimumShifting: argument `data` is None; pass the training data, e.g. data=(x_train, y_train) "
                "(a callback cannot see the data given to fit)."
            )
        x, y, labels = _to_arrays(self.data, pool_size=max(4 * self.guard_size, 4 * _POOL))
        data_adapters.check_finite((x, y), "data", owner="OptimumShifting")
        data_adapters.check_fits_model(self.model, x, "data", owner="OptimumShifting")
        n = data_adapters.num_examples(x)
        guard = np.zeros(0, dtype=np.int64)
        if self.max_loss_increase is not None:
            if y is None:
                raise ValueError("OptimumShifting: the loss guard needs targets; pass data=(x, y).")
            size = min(self.guard_size, n // 4)
            if size >= 1:
                rng = np.random.default_rng(None if self.seed is None else self.seed + 1)
                if labels is not None and size > len(np.unique(labels)):
                    guard = np.sort(_sample(labels, np.arange(n), size, rng, name="guard_size"))
                else:
                    guard = np.sort(rng.permutation(n)[:size])
        self._arrays = (x, y, guard)

    def on_train_begin(self, logs=None):
        self._prepare()
        resolve_layers(self.model, self.layers)  # fail early on layers that cannot be shifted

    def shift(self, epoch="end"):
        """Runs one optimum shift (with the loss guard) on the model now.

        Args:
            epoch: label stored in `history` (an epoch index or `"end"`).

        Returns:
            The per-layer info dict of `optimum_shift`.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.callbacks import OptimumShifting

        x, y = np.random.rand(64, 6).astype("float32"), np.arange(64) % 3
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        shifting = OptimumShifting(data=(x, y), seed=0)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[shifting])
        info = shifting.shift()  # one more shift on a fresh batch
        ```
        """
        if self._arrays is None:
            self._prepare()
        x, y, guard = self._arrays
        guard_data = None
        if self.max_loss_increase is not None and len(guard):
            guard_data = (data_adapters.take(x, guard), y[guard])
        info = optimum_shift(
            self.model,
            (x, y) if y is not None else x,
            layers=self.layers,
            batch_size=self.batch_size,
            sub_batch_size=self.sub_batch_size,
            seed=self._batch_rng(epoch),
            rtol=self.rtol,
            max_loss_increase=self.max_loss_increase if guard_data is not None else None,
            guard_data=guard_data,
            exclude=guard,
            loss_atol=self.loss_atol,
        )
        first = next(iter(info.values()), {})
        entry = {
            "epoch": epoch,
            "kept": first.get("kept", bool(first.get("systems"))),
            "loss_before": first.get("loss_before"),
            "loss_after": first.get("loss_after"),
            "layers": info,
        }
        self.history.append(entry)
        if self.verbose:
            for name, details in info.items():
                if not details.get("systems"):
                    print(f"OptimumShifting ({epoch}): {name}: skipped ({details.get('skipped')})")
                    continue
                print(
                    f"OptimumShifting ({epoch}): {name}: ‖V‖ {details['norm_before']:.4f} -> "
                    f"{details['norm_after']:.4f}, "
                    f"live change {details['relative_change_live']:.3f}, {details['examples_per_system']} examples, "
                    f"guard loss {entry['loss_before']} -> {entry['loss_after']}, kept {entry['kept']}"
                )
        return info

    def _batch_rng(self, epoch):
        """The batch choice of the shift after `epoch`: a function of (seed, epoch), so a training run resumed
        with `keras.callbacks.BackupAndRestore` draws the same batches as an uninterrupted one."""
        if self.seed is None:
            return self._rng
        return np.random.default_rng([self.seed, 0 if epoch == "end" else int(epoch) + 1])

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0:
            self.shift(epoch)

    def on_train_end(self, logs=None):
        if self.at_end:
            self.shift("end")

    def get_config(self):
        layers = self.layers
        if isinstance(layers, list):
            layers = [v if isinstance(v, str) else v.name for v in layers]
        return {
            "layers": layers,
            "every_n_epochs": self.every_n_epochs,
            "at_end": self.at_end,
            "batch_size": self.batch_size,
            "sub_batch_size": self.sub_batch_size,
            "seed": self.seed,
            "rtol": self.rtol,
            "max_loss_increase": self.max_loss_increase,
            "guard_size": self.guard_size,
            "loss_atol": self.loss_atol,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds the callback from `get_config()` (without `data`, which is not serialised).

        Args:
            config: the dict returned by `get_config()`.

        Returns:
            An `OptimumShifting`; set `.data` before training with it.

        Example:

        ```python
        from keras_wtrain.optimum_shifting.callback import OptimumShifting

        clone = OptimumShifting.from_config(OptimumShifting(batch_size=64).get_config())
        ```
        """
        return cls(**config)
