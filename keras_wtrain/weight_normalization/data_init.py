"""The data-dependent initialisation of weight normalization (Salimans & Kingma, arXiv:1602.07868).

A function (`initialize_weight_normalization`) and a `fit` callback (`WeightNormalizationInitializer`).
"""

import keras
import numpy as np

from keras_wtrain._core.data_adapters import check_finite
from keras_wtrain._core.data_adapters import check_not_empty
from keras_wtrain._core.data_adapters import first_batch
from keras_wtrain._core.kernel_reparametrization import KernelReparametrization
from keras_wtrain.weight_normalization.wrapper import weight_normalization_layers

__all__ = ["WeightNormalizationInitializer", "initialize_weight_normalization", "needs_data_init"]


class _Moments:
    """Per-channel count, sum and sum of squares of pre-activations, in float64."""

    def __init__(self):
        self.count = 0
        self.sum = 0.0
        self.sum_squares = 0.0

    def add(self, t):
        t = t.astype(np.float64)
        self.count += t.shape[0]
        self.sum = self.sum + t.sum(axis=0)
        self.sum_squares = self.sum_squares + np.square(t).sum(axis=0)

    def mean_std(self):
        mean = self.sum / self.count
        variance = np.maximum(self.sum_squares / self.count - np.square(mean), 0.0)
        return mean, np.sqrt(variance + 1e-10)


class _DataInitPass:
    """One eager model call of `initialize_weight_normalization`; pending layers route their calls here."""

    def __init__(self, accumulate=None):
        self.accumulate = accumulate
        self.moments = _Moments()
        self.calls = {}
        self.order = []

    def call(self, layer, inputs, training=None, mask=None, **kwargs):
        count = self.calls.get(id(layer), 0) + 1
        self.calls[id(layer)] = count
        if count == 1:
            self.order.append(layer)
        if layer is self.accumulate:
            self.moments.add(layer.direction_preactivations(inputs, training=training, mask=mask))
        elif self.accumulate is None and count == 1:
            if _is_recurrent(layer):
                layer.set_data_init()
            else:
                moments = _Moments()
                moments.add(layer.direction_preactivations(inputs, training=training, mask=mask))
                layer.set_data_init(*moments.mean_std())
        return KernelReparametrization.call(layer, inputs, training=training, mask=mask, **kwargs)

    def repeated(self):
        """The first pending layer (in call order) called more than once, recurrent layers aside, or None."""
        for layer in self.order:
            if self.calls[id(layer)] > 1 and not _is_recurrent(layer):
                return layer
        return None


def _is_recurrent(layer):
    return isinstance(layer.target_layer, keras.layers.RNN)


def _run(model, batch, layers, data_init_pass):
    for layer in layers:
        layer._data_init_pass = data_init_pass
    try:
        model(batch, training=False)
    finally:
        for layer in layers:
            layer._data_init_pass = None


def _check_batch(batch):
    """Refuses what is not one batch of model inputs: None or non-arrays, 0 examples, NaN or infinity."""
    leaves = keras.tree.flatten(batch)
    if not leaves or not all(hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in leaves):
        raise TypeError(
            "initialize_weight_normalization: argument `batch` must be the model inputs of one batch (an array or "
            f"tensor, or a list/dict of them; for `(x, y)` data pass `x`); received {type(batch).__name__}."
        )
    check_not_empty(batch, "batch", owner="initialize_weight_normalization")
    check_finite(batch, "batch", owner="initialize_weight_normalization")


def initialize_weight_normalization(model, batch, force=False):
    """Runs the data-dependent init of every pending `WeightNormalization` layer on one batch.

    In order from the input, each layer with `data_init=True` sets `g = 1/sigma`, `bias = -mu/sigma` from its
    pre-activations `t = v·x/||v||`, so they have per-unit mean 0 and std 1 on `batch`.
    Cost: one eager model call, plus two per layer called several times per model call (e.g. `TimeDistributed`).

    Args:
        model: a Keras model (any kind) containing `WeightNormalization` layers.
        batch: model inputs of one batch (array, or list/dict of arrays); for `(x, y)` data pass `x`.
        force: re-initialise layers that were initialised already.

    Returns:
        The number of layers initialised.

    Raises:
        TypeError: if `batch` is None or not arrays/tensors.
        ValueError: if `batch` holds no examples, or NaN or infinite values.

    Example:

    ```python
    import keras
    import numpy as np
    import keras_wtrain
    from keras_wtrain.layers import WeightNormalization

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))])
    assert keras_wtrain.initialize_weight_normalization(model, np.random.rand(32, 8).astype("float32")) == 1
    ```
    """
    _check_batch(batch)
    pending = [
        layer
        for layer in weight_normalization_layers(model)
        if layer.data_init and (force or not layer.built or not layer.is_initialized())
    ]
    done = []
    accumulate = None
    while pending:
        data_init_pass = _DataInitPass(accumulate)
        _run(model, batch, pending, data_init_pass)
        if accumulate is not None:
            if data_init_pass.moments.count:
                accumulate.set_data_init(*data_init_pass.moments.mean_std())
                done.append(accumulate)
            pending.remove(accumulate)
            accumulate = None
            continue
        repeated = data_init_pass.repeated()
        called = data_init_pass.order
        if repeated is None:
            done.extend(called)
            break
        # Layers called before `repeated` were initialised from final inputs; it and the later ones start over.
        first = called.index(repeated)
        done.extend(called[:first])
        pending = called[first:]
        for layer in pending:
            layer.initialized.assign(0.0)
            layer._data_init_done = False
        accumulate = repeated
    return len(done)


def needs_data_init(model):
    """Whether `model` has `WeightNormalization` layers waiting for data-dependent init.

    Args:
        model: a Keras model or layer.

    Example:

    ```python
    import keras
    from keras_wtrain.layers import WeightNormalization
    from keras_wtrain.weight_normalization.data_init import needs_data_init

    assert needs_data_init(keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))]))
    ```
    """
    return any(
        layer.data_init and (not layer.built or not layer.is_initialized())
        for layer in weight_normalization_layers(model)
    )


@keras.saving.register_keras_serializable(package="keras_wtrain")
class WeightNormalizationInitializer(keras.callbacks.Callback):
    """Callback running `initialize_weight_normalization` on the first batch of `data` at `fit` start.

    Initialised layers (the flag is saved with the model) are skipped, so resuming does not redo it.
    Cost: one eager model call per `fit`.

    Args:
        data: the training data, or data of the same kind (array, `(x, y)`, `tf.data.Dataset`, iterable).
        batch_size: number of examples used when `data` holds arrays.

    Raises:
        ValueError: if `data` is None or `batch_size` is not a positive int; at `fit` start, if the first
            batch is empty or holds NaN or infinite values.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.callbacks import WeightNormalizationInitializer
    from keras_wtrain.layers import WeightNormalization

    x = np.random.rand(64, 8).astype("float32")
    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(3))])
    model.compile("sgd", "mse")
    model.fit(x, x[:, :3], epochs=1, verbose=0, callbacks=[WeightNormalizationInitializer(x)])
    ```
    """

    def __init__(self, data, batch_size=256):
        super().__init__()
        if data is None:
            raise ValueError(
                "WeightNormalizationInitializer: argument `data` is required (the training data, or data of the "
                "same kind: a callback cannot see the data given to fit); received None."
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"argument `batch_size` must be a positive int, received {batch_size!r}.")
        self.data = data
        self.batch_size = batch_size
        self.initialized_layers = 0

    def on_train_begin(self, logs=None):
        batch = first_batch(self.data, self.batch_size)
        check_not_empty(batch, "data", owner="WeightNormalizationInitializer")
        check_finite(batch, "data", owner="WeightNormalizationInitializer")
        self.initialized_layers = initialize_weight_normalization(self.model, batch)

    def get_config(self):
        return {"batch_size": self.batch_size}
