"""Mean-only batch normalization (Salimans & Kingma, arXiv:1602.07868, §4), weight normalization's companion."""

import keras
from keras import ops

from keras_wtrain._core.validation import check_bool
from keras_wtrain._core.validation import check_int
from keras_wtrain._core.validation import check_probability

__all__ = ["MeanOnlyBatchNormalization"]


@keras.saving.register_keras_serializable(package="keras_wtrain")
class MeanOnlyBatchNormalization(keras.layers.Layer):
    """Mean-only batch normalization (Salimans & Kingma, arXiv:1602.07868, §4).

    Subtracts the minibatch mean per channel (no division by the std) and adds a learned bias; infers with a
    moving mean. Follows `keras.layers.BatchNormalization` for masks (mean over unmasked positions) and
    frozen layers (inference mode). Statistics in float32. Cost: two per-channel vectors; one mean per call.

    Args:
        axis: the channel axis.
        momentum: momentum of the moving mean, in `[0, 1)`.
        center: whether to add a learned bias `beta`.
        beta_initializer: initializer of `beta`.
        moving_mean_initializer: initializer of the moving mean.
        **kwargs: base layer keyword arguments.

    Raises:
        TypeError: if `axis` is not an int or `center` not a bool.
        ValueError: if `momentum` is outside `[0, 1)`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers import MeanOnlyBatchNormalization

    y = MeanOnlyBatchNormalization()(np.random.rand(4, 3).astype("float32"), training=True)
    ```
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        center=True,
        beta_initializer="zeros",
        moving_mean_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = check_int("axis", axis, owner="MeanOnlyBatchNormalization")
        self.momentum = check_probability(
            "momentum", momentum, high_inclusive=False, owner="MeanOnlyBatchNormalization"
        )
        self.center = check_bool("center", center, owner="MeanOnlyBatchNormalization")
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        axis = self.axis % len(input_shape)
        channels = input_shape[axis]
        if channels is None:
            raise ValueError(
                f"MeanOnlyBatchNormalization: the channel axis {self.axis} of input shape {input_shape} must be known."
            )
        self._axis = axis
        self._reduce_axes = tuple(i for i in range(len(input_shape)) if i != axis)
        self._broadcast = tuple(channels if i == axis else 1 for i in range(len(input_shape)))
        self.beta = None
        if self.center:
            self.beta = self.add_weight(
                name="beta", shape=(channels,), initializer=self.beta_initializer, autocast=False
            )
        self.moving_mean = self.add_weight(
            name="moving_mean",
            shape=(channels,),
            initializer=self.moving_mean_initializer,
            trainable=False,
            autocast=False,
        )
        self.built = True

    def _mean(self, x, mask):
        if mask is None:
            return ops.mean(x, axis=self._reduce_axes)
        if len(mask.shape) != len(x.shape) - 1:
            raise ValueError(
                "MeanOnlyBatchNormalization: the mask must have one dimension less than the inputs (no channel "
                f"axis); received mask shape {mask.shape} for inputs of shape {x.shape}."
            )
        weights = ops.broadcast_to(ops.expand_dims(ops.cast(mask, x.dtype), self._axis), ops.shape(x))
        total = ops.sum(x * weights, axis=self._reduce_axes)
        count = ops.sum(weights, axis=self._reduce_axes)
        return total / (count + keras.config.epsilon())

    def call(self, inputs, training=None, mask=None):
        x = ops.cast(inputs, "float32")
        if training and self.trainable:
            mean = self._mean(x, mask)
            self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
        else:
            mean = self.moving_mean
        y = x - ops.reshape(mean, self._broadcast)
        if self.beta is not None:
            y = y + ops.reshape(self.beta, self._broadcast)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "axis": self.axis,
                "momentum": self.momentum,
                "center": self.center,
                "beta_initializer": keras.initializers.serialize(self.beta_initializer),
                "moving_mean_initializer": keras.initializers.serialize(self.moving_mean_initializer),
            }
        )
        return config
