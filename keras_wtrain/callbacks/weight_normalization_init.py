"""A callback running weight normalization's data-dependent init before `fit`."""

import keras

from keras_wtrain.data_adapters import check_finite
from keras_wtrain.data_adapters import check_not_empty
from keras_wtrain.data_adapters import first_batch
from keras_wtrain.layers.weight_normalization_init import initialize_weight_normalization


@keras.saving.register_keras_serializable(package="keras_wtrain")
class WeightNormalizationInitializer(keras.callbacks.Callback):
    """Runs the data-dependent init of `WeightNormalization` layers at `fit` start.

    At `on_train_begin` it takes the first batch of `data` and calls
    `keras_wtrain.initialize_weight_normalization(model, x)`, eagerly and once:
    layers already initialised (their `initialized` flag is saved with the
    model) are left alone, so resuming training does not re-initialise.

    Args:
        data: the training data, or any data of the same kind (array, `(x, y)`
            tuple, `tf.data.Dataset`, iterable of batches).
        batch_size: number of examples used when `data` holds arrays; the
            paper uses one minibatch (a few hundred examples are plenty).

    Raises:
        ValueError: if `data` is None or `batch_size` is not a positive int; at `fit` start, if the first
            batch of `data` is empty or holds NaN or infinite values.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.callbacks import WeightNormalizationInitializer
    from keras_wtrain.layers import WeightNormalization

    x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, 64)
    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(3))])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[WeightNormalizationInitializer(x)])
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
