"""Batch-normalization statistics: re-estimate the moving mean and variance of a model on data.

After weights are averaged (SWA, SeWA, EMA) or otherwise replaced, the moving statistics of
`BatchNormalization` layers no longer match the activations the new weights produce.
`update_batchnorm_statistics` recomputes them from data, like `torch.optim.swa_utils.update_bn`.
It is the one home for this re-estimation: `SelectiveWeightAveraging` calls it, and so can any
callback that installs new weights.

Example:

```python
import keras
import numpy as np
from keras_wtrain.batchnorm import update_batchnorm_statistics

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization()])
update_batchnorm_statistics(model, np.random.rand(64, 4).astype("float32"), batch_size=32)  # 1 layer updated
```
"""

import keras

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.data_adapters import iter_x_batches
from keras_wtrain.validation import check_int

__all__ = ["batchnorm_layers", "update_batchnorm_statistics"]


def batchnorm_layers(model):
    """Every `keras.layers.BatchNormalization` layer of `model`, nested layers and sub-models included.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of layers, in the order Keras tracks them.

    Example:

    ```python
    import keras
    from keras_wtrain.batchnorm import batchnorm_layers

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization()])
    assert len(batchnorm_layers(model)) == 1
    ```
    """
    # `_flatten_layers` (private) is the one Keras walk that reaches layers nested inside custom
    # layers and sub-models; the public `model.layers` stops at the first level.
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def update_batchnorm_statistics(model, data, batch_size=128, max_examples=None):
    """Recomputes the moving statistics of every `BatchNormalization` layer of `model` on `data`.

    Like `torch.optim.swa_utils.update_bn`: the moving mean and variance are reset and replaced by
    the plain average, over the batches of `data`, of each batch's mean and variance of the layer's
    inputs, computed by forward passes in training mode (`model(x, training=True)`, eagerly). During
    the pass each layer's `momentum` is set to `n / (n + 1)` for the `n`-th batch (0-based), which
    turns Keras' exponential update into a cumulative mean; it is restored afterwards. `ShadowWeights`
    layers compute with the kernels the model infers with during the pass (plain weights in AOM, the
    DOM kernel in `"desire"` mode; `layers.inference_kernels_in_training`), not with fresh shadow
    weights, so the statistics match inference. Nothing but
    the moving statistics changes (no optimizer step). Dropout layers run in training mode during
    the pass, as in PyTorch. Keras uses the biased batch variance (PyTorch the unbiased one).

    Args:
        model: a built Keras model.
        data: any form read by `keras_wtrain.data_adapters.iter_x_batches`: `(x, y)` or `x` arrays
            (a dict of arrays for several inputs), a `tf.data.Dataset`, or an iterable (a list
            included) of `(x, ...)` / `x` batches. Targets are ignored.
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
    from keras_wtrain.batchnorm import update_batchnorm_statistics

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
    from keras_wtrain.layers.shadow_weights_models import inference_kernels_in_training

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
