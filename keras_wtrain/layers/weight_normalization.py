"""Weight normalization (Salimans & Kingma, arXiv:1602.07868).

`WeightNormalization` reparameterises every output unit's weight vector of a
wrapped layer as `w = g * v / ||v||`; `MeanOnlyBatchNormalization` is the
paper's companion normaliser; `initialize_weight_normalization` runs the
paper's data-dependent initialisation; `fold_weight_normalization` turns a
trained model back into plain Keras layers for export and serving.
"""

import keras
from keras import ops
from keras.src.backend import AutocastScope
from keras.src.layers.convolutional.base_conv import BaseConv
from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
from keras.src.layers.convolutional.base_separable_conv import BaseSeparableConv

from keras_wtrain.layers.kernel_swap import call_with_replaced_variables

_EPSILON = 1e-12

SUPPORTED_LAYERS = (
    "Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, "
    "SeparableConv1D/2D (pointwise kernel), SimpleRNN, GRU, LSTM"
)


def _kernel_specs(layer):
    """Returns `[(variable, reduce_axes, output_axis_of_kernel)]` for `layer`.

    `reduce_axes` are the kernel axes the norm runs over; the remaining axes
    index output units (one `g` each).
    """
    if isinstance(layer, keras.layers.RNN) and hasattr(layer.cell, "recurrent_kernel"):
        cell = layer.cell
        return [(cell.kernel, (0,)), (cell.recurrent_kernel, (0,))]
    if isinstance(layer, BaseSeparableConv):
        kernel = layer.pointwise_kernel
        return [(kernel, tuple(range(len(kernel.shape) - 1)))]
    if isinstance(layer, BaseDepthwiseConv):
        kernel = layer.kernel
        return [(kernel, tuple(range(len(kernel.shape) - 2)))]
    if isinstance(layer, BaseConvTranspose):
        kernel = layer.kernel
        rank = len(kernel.shape)
        return [(kernel, tuple(i for i in range(rank) if i != rank - 2))]
    if isinstance(layer, (BaseConv, keras.layers.Dense)):
        kernel = layer.kernel
        return [(kernel, tuple(range(len(kernel.shape) - 1)))]
    return None


def _check_layer(layer):
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "WeightNormalization: argument `layer` must be a Keras layer, "
            f"received {layer!r} of type {type(layer).__name__}. "
            f"Supported layers: {SUPPORTED_LAYERS}."
        )
    supported = isinstance(
        layer, (keras.layers.Dense, BaseConv, BaseConvTranspose, BaseDepthwiseConv, BaseSeparableConv)
    ) or (
        isinstance(layer, keras.layers.RNN)
        and isinstance(layer.cell, (keras.layers.SimpleRNNCell, keras.layers.GRUCell, keras.layers.LSTMCell))
    )
    if not supported:
        raise ValueError(
            f"WeightNormalization cannot wrap layer {layer.name!r} of type "
            f"{type(layer).__name__}: it has no supported kernel. "
            f"Supported layers: {SUPPORTED_LAYERS}."
        )


@keras.saving.register_keras_serializable(package="keras_wtrain")
class WeightNormalization(keras.layers.Wrapper):
    """Weight normalization wrapper (Salimans & Kingma, arXiv:1602.07868).

    Each output unit's weight vector of the wrapped layer is reparameterised as
    `w = g * v / ||v||`: `v` (the wrapped layer's own kernel variable) holds the
    direction and a new variable `g` the length. Gradient descent runs on `g`
    and `v`; the effective kernel is recomputed, in float32, at every call and
    the wrapped layer computes with it (its bias and activation are kept).

    The norm runs over every kernel axis except the output-unit axes: Dense
    `(in, out)` over axis 0; ConvND `(*k, in, out)` over all but the last;
    ConvNDTranspose `(*k, out, in)` over all but axis -2; DepthwiseConv
    `(*k, in, mult)` over the spatial axes (one `g` per `(in, mult)` pair);
    SeparableConv normalises its pointwise kernel; SimpleRNN, GRU and LSTM
    normalise both the kernel and the recurrent kernel per gate unit.

    `g` starts at `||v||`, so a freshly wrapped layer computes exactly what the
    plain layer did. With `data_init=True`, the paper's data-dependent
    initialisation (`g = 1/sigma`, `b = -mu/sigma` from one real batch) runs
    once, eagerly, before training: call
    `keras_wtrain.initialize_weight_normalization(model, x_batch)`, pass the
    `keras_wtrain.callbacks.WeightNormalizationInitializer(data)` callback to
    `fit`, or train a `keras_wtrain.Model`, whose `fit` does it on the first
    batch. It is not defined for recurrent layers, which keep `g = ||v||`.

    Use `fold()` (one layer) or `keras_wtrain.fold_weight_normalization(model)`
    (a whole model) to get plain Keras layers with `kernel = g * v / ||v||`.

    Args:
        layer: the layer to wrap. Supported: Dense, Conv1D/2D/3D,
            Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D,
            SimpleRNN, GRU, LSTM.
        data_init: whether the data-dependent initialisation should run before
            training (it sets `g` and the bias from the first batch).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Raises:
        TypeError: if `layer` is not a Keras layer.
        ValueError: if `layer` has no supported kernel.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers import WeightNormalization

    model = keras.Sequential([
        keras.Input((8,)),
        WeightNormalization(keras.layers.Dense(16, activation="relu")),
        WeightNormalization(keras.layers.Dense(3)),
    ])
    y = model(np.ones((2, 8), "float32"))
    ```
    """

    def __init__(self, layer, data_init=True, **kwargs):
        _check_layer(layer)
        if not isinstance(data_init, bool):
            raise TypeError(f"WeightNormalization: argument `data_init` must be a bool, received {data_init!r}.")
        super().__init__(layer, **kwargs)
        self.data_init = data_init
        self.supports_masking = getattr(layer, "supports_masking", False)
        self._init_pending = False

    def build(self, input_shape=None):
        super().build(input_shape)
        self._fold_input_shape = input_shape
        self._specs = _kernel_specs(self.layer)
        self.g_weights = []
        for kernel, axes in self._specs:
            g_shape = tuple(d for i, d in enumerate(kernel.shape) if i not in axes)
            norm = ops.reshape(self._norm(kernel, axes), g_shape)
            g = self.add_weight(
                name=f"{kernel.name}_g",
                shape=g_shape,
                initializer=lambda shape, dtype=None, norm=norm: ops.cast(norm, dtype or "float32"),
                trainable=True,
                autocast=False,
            )
            self.g_weights.append(g)
        self.initialized = self.add_weight(
            name="data_initialized",
            shape=(),
            initializer="zeros",
            trainable=False,
            autocast=False,
        )
        self.built = True

    @staticmethod
    def _read(variable):
        with AutocastScope(None):
            return ops.cast(variable.value, "float32")

    def _norm(self, kernel, axes=None):
        if axes is None:
            axes = dict((id(k), a) for k, a in self._specs)[id(kernel)]
        v = self._read(kernel)
        return ops.sqrt(ops.sum(ops.square(v), axis=axes, keepdims=True) + _EPSILON)

    def _keepdims_shape(self, kernel, axes):
        return tuple(1 if i in axes else d for i, d in enumerate(kernel.shape))

    def effective_kernels(self):
        """The effective kernels `g * v / ||v||`, float32 tensors, one per normalised kernel."""
        kernels = []
        for (kernel, axes), g in zip(self._specs, self.g_weights):
            v = self._read(kernel)
            norm = self._norm(kernel, axes)
            g32 = ops.reshape(self._read(g), self._keepdims_shape(kernel, axes))
            kernels.append(v * (g32 / norm))
        return kernels

    def call(self, inputs, training=None, **kwargs):
        if training is not None:
            kwargs["training"] = training
        if self._init_pending:
            return self._data_dependent_init(inputs, **kwargs)
        replacements = list(zip([k for k, _ in self._specs], self.effective_kernels()))
        return call_with_replaced_variables(self, self.layer, replacements, inputs, **kwargs)

    def _output_channel_axis(self):
        data_format = getattr(self.layer, "data_format", "channels_last")
        return 1 if data_format == "channels_first" else -1

    def _data_dependent_init(self, inputs, **kwargs):
        """Eager, once: sets `g = 1/sigma` and `b = -mu/sigma` from `inputs`."""
        self._init_pending = False
        if isinstance(self.layer, keras.layers.RNN):
            self.initialized.assign(1.0)
            return self.call(inputs, **kwargs)
        (kernel, axes), g = self._specs[0], self.g_weights[0]
        direction = self._read(kernel) / self._norm(kernel, axes)
        replacements = [(kernel, direction)]
        bias = getattr(self.layer, "bias", None)
        if bias is not None:
            replacements.append((bias, ops.zeros(bias.shape, bias.dtype)))
        activation = self.layer.activation
        self.layer.activation = keras.activations.linear
        try:
            t = call_with_replaced_variables(self, self.layer, replacements, inputs, **kwargs)
        finally:
            self.layer.activation = activation
        t = ops.cast(t, "float32")
        channel_axis = self._output_channel_axis() % len(t.shape)
        reduce_axes = tuple(i for i in range(len(t.shape)) if i != channel_axis)
        mean = ops.mean(t, axis=reduce_axes)
        std = ops.sqrt(ops.var(t, axis=reduce_axes) + 1e-10)
        g.assign(ops.reshape(1.0 / std, g.shape))
        if bias is not None:
            bias.assign(ops.cast(-mean / std, bias.dtype))
        self.initialized.assign(1.0)
        return self.call(inputs, **kwargs)

    def fold(self):
        """Returns the plain wrapped layer with `kernel = g * v / ||v||`.

        The returned layer is a new, built instance of the wrapped layer's
        class with the same config and weights, and the effective kernels.

        Returns:
            A Keras layer computing exactly what this wrapper computes.
        """
        if not self.built:
            raise ValueError(f"WeightNormalization layer {self.name!r} must be built before `fold()`.")
        layer = self.layer.__class__.from_config(self.layer.get_config())
        layer.build(self._fold_input_shape)
        effective = dict(zip([id(k) for k, _ in self._specs], self.effective_kernels()))
        values = []
        for variable in self.layer.weights:
            value = effective.get(id(variable))
            values.append(ops.convert_to_numpy(variable.value if value is None else value))
        layer.set_weights(values)
        return layer

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return self.layer.compute_output_shape(input_shape, *args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(*args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["data_init"] = self.data_init
        return config


@keras.saving.register_keras_serializable(package="keras_wtrain")
class MeanOnlyBatchNormalization(keras.layers.Layer):
    """Mean-only batch normalization (Salimans & Kingma, arXiv:1602.07868, §4).

    Subtracts the minibatch mean of each channel (no division by the standard
    deviation) and adds a learned bias; the paper pairs it with weight
    normalization. A moving mean is kept for inference, as in
    `keras.layers.BatchNormalization`. Statistics are computed in float32.

    Args:
        axis: the channel axis (default `-1`).
        momentum: momentum of the moving mean, in `[0, 1)`.
        center: whether to add a learned bias `beta`.
        beta_initializer: initializer of `beta`.
        moving_mean_initializer: initializer of the moving mean.
        **kwargs: base layer keyword arguments.

    Raises:
        ValueError: if `momentum` is outside `[0, 1)`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers import MeanOnlyBatchNormalization

    layer = MeanOnlyBatchNormalization()
    y = layer(np.random.rand(4, 3).astype("float32"), training=True)
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
        if not isinstance(axis, int):
            raise TypeError(f"MeanOnlyBatchNormalization: argument `axis` must be an int, received {axis!r}.")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(
                f"MeanOnlyBatchNormalization: argument `momentum` must be in [0, 1), received {momentum!r}."
            )
        self.axis = axis
        self.momentum = float(momentum)
        self.center = bool(center)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        axis = self.axis % len(input_shape)
        channels = input_shape[axis]
        if channels is None:
            raise ValueError(
                f"MeanOnlyBatchNormalization: the channel axis {self.axis} of input shape "
                f"{input_shape} must be known."
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

    def call(self, inputs, training=False):
        x = ops.cast(inputs, "float32")
        if training:
            mean = ops.mean(x, axis=self._reduce_axes)
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


def _iter_layers(model):
    return [model, *model._flatten_layers(include_self=False, recursive=True)]


def weight_normalization_layers(model):
    """Lists the `WeightNormalization` layers of `model`, nested models included."""
    return [layer for layer in _iter_layers(model) if isinstance(layer, WeightNormalization)]


def initialize_weight_normalization(model, batch, force=False):
    """Runs the data-dependent initialisation of every `WeightNormalization` layer.

    Eagerly calls `model` once on `batch` (inference mode); each wrapped layer
    with `data_init=True` that was not initialised yet sets, in order from the
    input, `g = 1/sigma` and `bias = -mu/sigma` from the statistics of its own
    pre-activations `t = v.x/||v||`, so that its first-batch pre-activations
    have per-unit mean 0 and standard deviation 1.

    Args:
        model: a Keras model (any kind) containing `WeightNormalization` layers.
        batch: model inputs of one batch (array, or list/dict of arrays); for a
            `(x, y)` or `(x, y, sample_weight)` tuple pass `x` only.
        force: re-initialise layers that were initialised already.

    Returns:
        The number of layers initialised.

    Example:

    ```python
    import keras
    import numpy as np
    import keras_wtrain
    from keras_wtrain.layers import WeightNormalization

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))])
    keras_wtrain.initialize_weight_normalization(model, np.random.rand(32, 8).astype("float32"))
    ```
    """
    pending = [
        layer
        for layer in weight_normalization_layers(model)
        if layer.data_init and (force or not layer.built or float(ops.convert_to_numpy(layer.initialized)) == 0.0)
    ]
    if not pending:
        return 0
    for layer in pending:
        layer._init_pending = True
    try:
        model(batch, training=False)
    finally:
        for layer in pending:
            layer._init_pending = False
    return len(pending)


def needs_data_init(model):
    """Whether `model` has `WeightNormalization` layers waiting for data-dependent init."""
    return any(
        layer.data_init and (not layer.built or float(ops.convert_to_numpy(layer.initialized)) == 0.0)
        for layer in weight_normalization_layers(model)
    )


def _fold_or_copy(layer):
    if isinstance(layer, WeightNormalization):
        return layer.fold()
    if isinstance(layer, keras.Model) and weight_normalization_layers(layer):
        return fold_weight_normalization(layer)
    if isinstance(layer, keras.layers.InputLayer):
        return layer.__class__.from_config(layer.get_config())
    clone = layer.__class__.from_config(layer.get_config())
    build_config = layer.get_build_config()
    if build_config:
        clone.build_from_config(build_config)
    clone.set_weights(layer.get_weights())
    return clone


def fold_weight_normalization(model):
    """Returns a copy of `model` with every `WeightNormalization` folded away.

    Each wrapper is replaced by its plain wrapped layer with
    `kernel = g * v / ||v||`; every other layer is copied with its weights. The
    new model's outputs equal the original's and it holds no keras_wtrain layer,
    so it can be exported and served with plain Keras.

    Args:
        model: a functional or Sequential Keras model.

    Returns:
        A new functional or Sequential model.

    Raises:
        TypeError: if `model` is a subclassed model (fold its layers with
            `WeightNormalization.fold()` instead).

    Example:

    ```python
    import keras
    import numpy as np
    import keras_wtrain
    from keras_wtrain.layers import WeightNormalization

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))])
    plain = keras_wtrain.fold_weight_normalization(model)
    x = np.ones((2, 8), "float32")
    np.testing.assert_allclose(model(x), plain(x), atol=1e-5)
    ```
    """
    from keras.src.models.functional import Functional

    if not isinstance(model, (keras.Sequential, Functional)):
        raise TypeError(
            "fold_weight_normalization: argument `model` must be a functional or Sequential "
            f"model, received a subclassed {type(model).__name__}; call `fold()` on its "
            "WeightNormalization layers instead."
        )
    if isinstance(model, keras.Sequential):
        layers = [_fold_or_copy(layer) for layer in model.layers]
        folded = keras.Sequential(name=model.name)
        if model.inputs:
            folded.add(keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype))
        for layer in layers:
            folded.add(layer)
        return folded
    return keras.models.clone_model(model, clone_function=_fold_or_copy)
