"""Batch-normalization statistics: re-estimate the moving mean and variance of a model on data.

After weights are averaged or replaced, the moving statistics no longer match the new weights'
activations; `update_batchnorm_statistics` (like `torch.optim.swa_utils.update_bn`) is the one place that fixes them.
"""

import keras

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core._keras_private import sublayers
from keras_wtrain._core.data_adapters import check_finite
from keras_wtrain._core.data_adapters import check_not_empty
from keras_wtrain._core.data_adapters import first_batch
from keras_wtrain._core.data_adapters import iter_x_batches
from keras_wtrain._core.validation import check_int

__all__ = ["BatchNormStatisticsUpdate", "batchnorm_layers", "update_batchnorm_statistics"]


def batchnorm_layers(model):
    """Every `keras.layers.BatchNormalization` layer of `model`, nested layers and sub-models included.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of layers, in the order Keras tracks them.

    Example:

    ```python
    import keras
    from keras_wtrain._core.batchnorm import batchnorm_layers

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization()])
    assert len(batchnorm_layers(model)) == 1
    ```
    """
    return [layer for layer in sublayers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def update_batchnorm_statistics(model, data, batch_size=128, max_examples=None):
    """Recomputes the moving statistics of every `BatchNormalization` layer of `model` on `data`.

    Like `torch.optim.swa_utils.update_bn`: the statistics are reset, then set to the plain average over the
    batches of `data` of each batch's mean and (biased) variance, by eager forward passes in training mode
    (momentum `n / (n + 1)` for the `n`-th batch, restored afterwards). `ShadowWeights` layers compute with
    their inference kernels during the pass. Only the moving statistics change.
    Cost: one forward pass over `data` (at most `max_examples` examples).

    Args:
        model: a built Keras model.
        data: `x` or `(x, y)` arrays, a `tf.data.Dataset`, or an iterable of batches; targets are ignored.
        batch_size: batch size used when `data` holds arrays; a positive int.
        max_examples: optional cap on the number of examples used (a positive int or None).

    Returns:
        The number of batch-normalization layers updated (0 if the model has none).

    Raises:
        TypeError: if `batch_size` or `max_examples` is not an int.
        ValueError: if `batch_size` or `max_examples` is < 1.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain._core.batchnorm import update_batchnorm_statistics

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization()])
    batches = [np.random.rand(32, 4).astype("float32") for _ in range(3)]  # a list of x batches
    update_batchnorm_statistics(model, batches)
    ```
    """
    check_int("batch_size", batch_size, minimum=1)
    check_int("max_examples", max_examples, minimum=1, allow_none=True)
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        for variable, fill in ((layer.moving_mean, keras.ops.zeros), (layer.moving_variance, keras.ops.ones)):
            variable.assign(fill(tuple(variable.shape), dtype=variable.dtype))
    # Imported here: keras_wtrain.layers is the heavier package, and nothing else here needs it.
    from keras_wtrain.shadow_weights.modes import inference_kernels_in_training

    try:
        with inference_kernels_in_training(model):
            for n, x in enumerate(iter_x_batches(data, batch_size=batch_size, max_examples=max_examples)):
                for layer in layers:
                    layer.momentum = n / (n + 1.0)
                model(keras.tree.map_structure(keras.ops.convert_to_tensor, x), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class BatchNormStatisticsUpdate(keras.callbacks.Callback):
    """Re-estimates the `BatchNormalization` statistics at the end of `fit` (`update_batchnorm_statistics`).

    For `ShadowWeights` models, whose training statistics come from shadow-weight activations, not the
    weights inference uses (see docs/techniques/shadow_weights.md). List it after callbacks that change the
    weights at the end of training. Cost: one forward pass over `data` after training.

    Args:
        data: training data (or data like it), as `update_batchnorm_statistics` reads it.
        batch_size: batch size when `data` holds arrays; a positive int.
        max_examples: optional cap on the examples used (a positive int or None).

    Raises:
        TypeError: if `batch_size` or `max_examples` is not an int.
        ValueError: if `data` is None or `batch_size` / `max_examples` is below 1; at `fit` start, if the
            first batch of `data` is empty or not finite.

    Attributes:
        updated_layers: the number of batch-normalization layers re-estimated by the last `fit`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.callbacks import BatchNormStatisticsUpdate
    from keras_wtrain.shadow_weights.modes import authors_wrap
    from keras_wtrain.comparison.models import build_model

    x, y = np.random.rand(64, 28, 28, 1).astype("float32"), np.arange(64) % 10
    model = build_model("resnet-small", (28, 28, 1), 10, wrap=authors_wrap)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = BatchNormStatisticsUpdate((x, y), batch_size=32)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[update])
    assert update.updated_layers > 0
    ```
    """

    def __init__(self, data, batch_size=128, max_examples=None):
        super().__init__()
        if data is None:
            raise ValueError(
                "BatchNormStatisticsUpdate: argument `data` is required (the training data, or data like it: a "
                "callback cannot see the data given to fit); received None."
            )
        self.data = data
        self.batch_size = check_int("batch_size", batch_size, minimum=1, owner="BatchNormStatisticsUpdate")
        self.max_examples = check_int(
            "max_examples", max_examples, minimum=1, allow_none=True, owner="BatchNormStatisticsUpdate"
        )
        self.updated_layers = 0

    def on_train_begin(self, logs=None):
        batch = first_batch(self.data, self.batch_size)  # bad data is refused at fit start, not after training
        check_not_empty(batch, "data", owner="BatchNormStatisticsUpdate")
        check_finite(batch, "data", owner="BatchNormStatisticsUpdate")

    def on_train_end(self, logs=None):
        self.updated_layers = update_batchnorm_statistics(
            self.model, self.data, batch_size=self.batch_size, max_examples=self.max_examples
        )

    def get_config(self):
        return {"batch_size": self.batch_size, "max_examples": self.max_examples}
