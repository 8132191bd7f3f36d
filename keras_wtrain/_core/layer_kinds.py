"""Layer-kind predicates: the one answer to "which layers does this technique act on".

Which layers `WeightNormalization` and `ShadowWeights` wrap (and their kernels), which convolutions the WAS
authors augment by default (arXiv:2405.19590), and which layers optimum shifting solves for (`is_dense`).
"""

import inspect

import keras

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core._keras_private import BaseConv
from keras_wtrain._core._keras_private import BaseConvTranspose
from keras_wtrain._core._keras_private import BaseDepthwiseConv
from keras_wtrain._core._keras_private import BaseSeparableConv

__all__ = [
    "SHADOW_WEIGHTS_LAYERS",
    "WEIGHT_NORMALIZATION_LAYERS",
    "call_accepts",
    "is_augmentable_convolution",
    "is_convolution",
    "is_dense",
    "shadow_weights_kernel",
    "supports_shadow_weights",
    "supports_weight_normalization",
    "weight_normalization_kernels",
]

WEIGHT_NORMALIZATION_LAYERS = (
    "Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, "
    "SeparableConv1D/2D (pointwise kernel), SimpleRNN, GRU, LSTM"
)
SHADOW_WEIGHTS_LAYERS = (
    "Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D (depthwise kernel), "
    "and WeightNormalization wrapping one of these (its effective kernel g·v/||v|| is augmented)"
)

_KERNEL_LAYERS = (keras.layers.Dense, BaseConv, BaseConvTranspose, BaseDepthwiseConv, BaseSeparableConv)
_RECURRENT_CELLS = (keras.layers.SimpleRNNCell, keras.layers.GRUCell, keras.layers.LSTMCell)


def call_accepts(layer, argument):
    """Whether `layer.call` takes the keyword argument `argument` (by name or through `**kwargs`).

    Keras' `__call__` passes `training` and `mask` only to a `call` that takes them; code calling `call` itself
    (`stateless_call`) or re-calling a layer with recorded arguments (folding a functional model) must do the same.

    Args:
        layer: a Keras layer or model.
        argument: an argument name, e.g. `"training"`.

    Returns:
        A bool.

    Example:

    ```python
    import keras
    from keras_wtrain._core.layer_kinds import call_accepts

    assert call_accepts(keras.layers.Dropout(0.5), "training") and not call_accepts(keras.layers.Dense(2), "mask")
    ```
    """
    parameters = inspect.signature(layer.call).parameters
    return argument in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _weight_normalization_class():
    # Imported here: keras_wtrain.weight_normalization.wrapper imports this module.
    from keras_wtrain.weight_normalization.wrapper import WeightNormalization

    return WeightNormalization


def is_convolution(layer):
    """Whether `layer` is a Keras convolution of any kind (regular, transposed, depthwise, separable).

    Example:

    ```python
    import keras
    from keras_wtrain._core.layer_kinds import is_convolution

    assert is_convolution(keras.layers.SeparableConv1D(4, 3)) and not is_convolution(keras.layers.Dense(4))
    ```
    """
    return isinstance(layer, (BaseConv, BaseConvTranspose, BaseDepthwiseConv, BaseSeparableConv))


def is_dense(layer, weight_normalized=True):
    """Whether `layer` is a `keras.layers.Dense`, or a `WeightNormalization` wrapping one.

    Args:
        layer: any object.
        weight_normalized: whether a `WeightNormalization(Dense)` counts
            (`False`: only a plain `Dense`).

    Example:

    ```python
    import keras
    from keras_wtrain._core.layer_kinds import is_dense
    from keras_wtrain.layers import WeightNormalization

    wn = WeightNormalization(keras.layers.Dense(4))
    assert is_dense(wn) and not is_dense(wn, weight_normalized=False)
    ```
    """
    if isinstance(layer, keras.layers.Dense):
        return True
    return (
        weight_normalized
        and isinstance(layer, _weight_normalization_class())
        and isinstance(layer.layer, keras.layers.Dense)
    )


def supports_weight_normalization(layer):
    """Whether `WeightNormalization` can wrap `layer` (built or not).

    Supported: Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D,
    SeparableConv1D/2D and `keras.layers.RNN` layers with a SimpleRNN, GRU or
    LSTM cell.

    Example:

    ```python
    import keras
    from keras_wtrain._core.layer_kinds import supports_weight_normalization

    assert supports_weight_normalization(keras.layers.LSTM(4))
    assert not supports_weight_normalization(keras.layers.BatchNormalization())
    ```
    """
    if isinstance(layer, _KERNEL_LAYERS):
        return True
    return isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, _RECURRENT_CELLS)


def weight_normalization_kernels(layer):
    """The kernels `WeightNormalization` normalises in a built `layer`, with the axes each norm runs over.

    The norm runs over every kernel axis except the output-unit axes: Dense
    `(in, out)` over axis 0; ConvND `(*k, in, out)` over all but the last;
    ConvNDTranspose `(*k, out, in)` over all but axis -2; DepthwiseConv
    `(*k, in, mult)` over the spatial axes; SeparableConv its pointwise kernel
    like a ConvND; SimpleRNN, GRU and LSTM both the kernel and the recurrent
    kernel over axis 0.

    Args:
        layer: a built layer.

    Returns:
        A list of `(kernel_variable, reduce_axes)`, or None for an unsupported layer.

    Example:

    ```python
    import keras
    from keras_wtrain._core.layer_kinds import weight_normalization_kernels

    conv = keras.layers.Conv2DTranspose(4, 3)
    conv.build((None, 8, 8, 2))
    [(kernel, axes)] = weight_normalization_kernels(conv)
    assert axes == (0, 1, 3)
    ```
    """
    if isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, _RECURRENT_CELLS):
        return [(layer.cell.kernel, (0,)), (layer.cell.recurrent_kernel, (0,))]
    if isinstance(layer, BaseSeparableConv):
        kernel = layer.pointwise_kernel
        return [(kernel, tuple(range(len(kernel.shape) - 1)))]
    if isinstance(layer, BaseDepthwiseConv):
        kernel = layer.kernel
        return [(kernel, tuple(range(len(kernel.shape) - 2)))]
    if isinstance(layer, BaseConvTranspose):
        rank = len(layer.kernel.shape)
        return [(layer.kernel, tuple(i for i in range(rank) if i != rank - 2))]
    if isinstance(layer, (BaseConv, keras.layers.Dense)):
        kernel = layer.kernel
        return [(kernel, tuple(range(len(kernel.shape) - 1)))]
    return None


def supports_shadow_weights(layer):
    """Whether `ShadowWeights` can wrap `layer` (built or not).

    Supported: Dense and every convolution, and a `WeightNormalization` of one
    of these except SeparableConv (weight normalization acts on its pointwise
    kernel, shadow weights on its depthwise kernel).

    Example:

    ```python
    import keras
    from keras_wtrain._core.layer_kinds import supports_shadow_weights
    from keras_wtrain.layers import WeightNormalization

    assert supports_shadow_weights(WeightNormalization(keras.layers.Conv2D(4, 3)))
    assert not supports_shadow_weights(keras.layers.LSTM(4))
    ```
    """
    if isinstance(layer, _weight_normalization_class()):
        inner = layer.layer
        return isinstance(inner, _KERNEL_LAYERS) and not isinstance(inner, BaseSeparableConv)
    return isinstance(layer, _KERNEL_LAYERS)


def shadow_weights_kernel(layer):
    """The kernel `ShadowWeights` augments in a built (unwrapped) `layer`, and its spatial axes.

    SeparableConv: its depthwise kernel; every other convolution: its kernel,
    whose spatial axes are all but the last two; Dense: its kernel, with no
    spatial axes.

    Args:
        layer: a built Dense or convolution layer.

    Returns:
        `(kernel_variable, spatial_axes)`.

    Example:

    ```python
    import keras
    from keras_wtrain._core.layer_kinds import shadow_weights_kernel

    conv = keras.layers.Conv2D(4, 3)
    conv.build((None, 8, 8, 2))
    kernel, spatial_axes = shadow_weights_kernel(conv)
    assert spatial_axes == (0, 1)
    ```
    """
    kernel = layer.depthwise_kernel if isinstance(layer, BaseSeparableConv) else layer.kernel
    if isinstance(layer, keras.layers.Dense):
        return kernel, ()
    return kernel, tuple(range(len(kernel.shape) - 2))


def is_augmentable_convolution(layer, min_kernel_size=3):
    """Whether WAS augments `layer` by default: a convolution with every kernel size >= `min_kernel_size`.

    The authors of arXiv:2405.19590 (`zlearh/Weight-Augmentation-Technology`)
    augment k×k convolutions with k >= 3, regular and depthwise, never 1×1
    convolutions or dense layers. This rule extends it to every rank:
    `Conv1D/2D/3D` and `DepthwiseConv1D/2D` whose spatial kernel sizes are all
    >= `min_kernel_size`. Transposed and separable convolutions are left out
    (the authors' networks have none).

    Args:
        layer: any object.
        min_kernel_size: the smallest spatial kernel size that is augmented.

    Example:

    ```python
    import keras
    from keras_wtrain._core.layer_kinds import is_augmentable_convolution

    assert is_augmentable_convolution(keras.layers.DepthwiseConv2D(3))
    assert is_augmentable_convolution(keras.layers.Conv1D(4, 5))
    assert not is_augmentable_convolution(keras.layers.Conv2D(4, (1, 3)))
    assert not is_augmentable_convolution(keras.layers.Conv2DTranspose(4, 3))
    ```
    """
    if not isinstance(layer, (BaseConv, BaseDepthwiseConv)) or isinstance(
        layer, (BaseConvTranspose, BaseSeparableConv)
    ):
        return False
    sizes = tuple(getattr(layer, "kernel_size", None) or ())
    return bool(sizes) and min(sizes) >= min_kernel_size
