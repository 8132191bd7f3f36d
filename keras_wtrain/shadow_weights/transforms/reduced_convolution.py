"""A convolution whose kernel is zero outside a box of taps, run as the smaller convolution of that box.

`plan` finds the padding, `call` runs it, `fold` turns it into plain Keras layers; the padding
arithmetic is on the shadow-weights technique page.
"""

import collections
import math

import keras
import numpy as np
from keras import ops

from keras_wtrain._core import layer_kinds
from keras_wtrain._core.validation import check_choice

__all__ = ["ReducedConvolution", "call", "fold", "full_padding", "plan", "reduced_padding"]

PADDINGS = ("valid", "same", "causal")

ReducedConvolution = collections.namedtuple("ReducedConvolution", ["box", "pads", "kernel_size", "padding"])
ReducedConvolution.__doc__ = """How a convolution with a box of non-zero taps runs as a smaller one (from `plan`).

Fields: `box`, the kept `(start, stop)` taps per spatial axis; `pads`, the
`(low, high)` padding of the input per spatial axis (negative: cropping)
before a `"valid"` convolution with the kept taps; `kernel_size`, the kept
kernel size; `padding`, a Keras padding mode (`"same"`, `"valid"`,
`"causal"`) with which one plain convolution of `kernel_size` gives the same
outputs from the unpadded input, or None if none does.
"""


def full_padding(size, kernel_size, stride=1, dilation=1, padding="valid"):
    """The low-side padding and output size of a Keras convolution along one axis.

    Args:
        size, kernel_size, stride, dilation: of the convolution along this axis (`size` None only if `stride=1`).
        padding: `"valid"`, `"same"` or `"causal"`.

    Returns:
        `(low_padding, output_size)`; `output_size` is None when `size` is None.

    Raises:
        ValueError: for an unknown `padding`, or `size=None` with `stride > 1`.

    Example:

    ```python
    from keras_wtrain.shadow_weights.transforms.reduced_convolution import full_padding

    assert full_padding(28, 3, stride=2, padding="same") == (0, 14)
    ```
    """
    padding = check_choice("padding", padding, PADDINGS, owner="full_padding")
    extent = dilation * (kernel_size - 1)
    if size is None:
        if stride != 1:
            raise ValueError(
                f"full_padding: a stride of {stride} needs a known input size (argument `size`); received None."
            )
        return {"valid": 0, "same": extent // 2, "causal": extent}[padding], None
    if padding == "valid":
        return 0, (size - extent - 1) // stride + 1
    if padding == "causal":
        return extent, (size - 1) // stride + 1
    out = math.ceil(size / stride)
    return max((out - 1) * stride + extent + 1 - size, 0) // 2, out


def reduced_padding(size, kernel_size, box, stride=1, dilation=1, padding="valid"):
    """Padding making a `"valid"` convolution with only the taps `box` equal the full one, along one axis.

    Args:
        size, kernel_size, stride, dilation, padding: the full convolution, as in `full_padding`.
        box: the kept taps `(start, stop)`, `0 <= start < stop <= kernel_size`.

    Returns:
        `(low, high, output_size)`; negative pads are crops; `output_size` is None when `size` is None.

    Raises:
        ValueError: for a box outside the kernel, an unknown `padding`, or `size=None` with `stride > 1`.

    Example:

    ```python
    from keras_wtrain.shadow_weights.transforms.reduced_convolution import reduced_padding

    assert reduced_padding(28, 3, (1, 3), padding="same") == (0, 1, 28)  # a 2x2 "same" convolution
    ```
    """
    start, stop = box
    if not 0 <= start < stop <= kernel_size:
        raise ValueError(
            f"reduced_padding: argument `box` must satisfy 0 <= start < stop <= kernel_size ({kernel_size}); "
            f"received {tuple(box)!r}."
        )
    low_full, out = full_padding(size, kernel_size, stride, dilation, padding)
    kept = stop - start
    low = low_full - start * dilation
    if size is None:  # stride 1: n_out = n - d(k - 1) ("valid") or n, so the size cancels out
        high = dilation * (kept - 1) - low - (dilation * (kernel_size - 1) if padding == "valid" else 0)
        return low, high, None
    high = (out - 1) * stride + dilation * (kept - 1) + 1 - size - low
    return low, high, out


def _is_depthwise(layer):
    return isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D))


def _spatial_input_axes(layer, rank):
    first = 1 if layer.data_format == "channels_last" else 2
    return tuple(range(first, first + rank))


def plan(layer, input_shape, box):
    """How `layer` (a regular or depthwise convolution) runs when its kernel is zero outside `box`.

    Args:
        layer: a built Keras layer.
        input_shape: its input shape (spatial sizes may be None where the stride is 1).
        box: the kept `(start, stop)` taps per spatial axis.

    Returns:
        A `ReducedConvolution`, or None when nothing is removed (other layer kinds, a box that is the
        whole kernel, an unknown size where the stride is > 1).

    Example:

    ```python
    import keras
    from keras_wtrain.shadow_weights.transforms.reduced_convolution import plan

    conv = keras.layers.Conv2D(4, 3, padding="same")
    conv.build((None, 28, 28, 3))
    assert plan(conv, (None, 28, 28, 3), ((1, 3), (1, 3))).padding == "same"
    ```
    """
    if not layer_kinds.is_augmentable_convolution(layer, 1):
        return None
    sizes = tuple(layer.kernel_size)
    box = tuple((int(a), int(b)) for a, b in box)
    if all(b - a == k for (a, b), k in zip(box, sizes)):
        return None
    axes = _spatial_input_axes(layer, len(sizes))
    pads, kept, matches = [], [], {mode: True for mode in PADDINGS}
    for n, (k, (a, b), s, d, axis) in enumerate(zip(sizes, box, layer.strides, layer.dilation_rate, axes)):
        size = input_shape[axis]
        if size is None:
            if s != 1:
                return None
            size = 4 * d * k + 1  # stride 1: pads and the output-size match do not depend on the size
        low, high, out = reduced_padding(size, k, (a, b), s, d, layer.padding)
        pads.append((low, high))
        kept.append(b - a)
        for mode in PADDINGS:
            if mode == "causal" and len(sizes) != 1:
                matches[mode] = False
                continue
            plain_low, plain_out = full_padding(size, b - a, s, d, mode)
            matches[mode] = matches[mode] and plain_low == low and plain_out == out
    order = (layer.padding, *(mode for mode in PADDINGS if mode != layer.padding))
    padding = next((mode for mode in order if matches[mode]), None)
    return ReducedConvolution(box, tuple(pads), tuple(kept), padding)


def _box_slices(box, kernel_rank):
    return tuple(slice(a, b) for a, b in box) + (slice(None),) * (kernel_rank - len(box))


def _pad_or_crop(x, pads, axes):
    widths = [(0, 0)] * len(x.shape)
    crops = [slice(None)] * len(x.shape)
    for (low, high), axis in zip(pads, axes):
        widths[axis] = (max(low, 0), max(high, 0))
        crops[axis] = slice(max(-low, 0), high if high < 0 else None)
    if any(w != (0, 0) for w in widths):
        x = ops.pad(x, widths)
    return x[tuple(crops)]


def call(layer, inputs, kernel, reduced):
    """Runs `layer` on `inputs` with the full-size `kernel` (zero outside the box), computing only the kept taps.

    Cost: the multiply-adds of the kept box only.

    Args:
        layer: the built convolution layer (its bias and activation are used).
        inputs: the input tensor.
        kernel: the full kernel (float32 tensor or array), zero outside the box.
        reduced: a `ReducedConvolution` from `plan`.

    Returns:
        The output tensor, equal to `layer(inputs)` with `kernel`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import reduced_convolution

    conv = keras.layers.Conv1D(2, 3, padding="causal")
    x = np.random.rand(1, 6, 2).astype("float32")
    conv.build(x.shape)
    kernel = np.asarray(conv.kernel) * np.array([0, 1, 1], "float32")[:, None, None]
    y = reduced_convolution.call(conv, x, kernel, reduced_convolution.plan(conv, x.shape, ((1, 3),)))
    ```
    """
    kernel = ops.convert_to_tensor(kernel)
    kernel = kernel[_box_slices(reduced.box, len(kernel.shape))]
    x = _pad_or_crop(inputs, reduced.pads, _spatial_input_axes(layer, len(reduced.box)))
    kernel = ops.cast(kernel, x.dtype)
    arguments = dict(strides=layer.strides, padding="valid", data_format=layer.data_format)
    if _is_depthwise(layer):
        y = ops.depthwise_conv(x, kernel, dilation_rate=layer.dilation_rate, **arguments)
    else:
        y = ops.conv(x, kernel, dilation_rate=layer.dilation_rate, **arguments)
    if layer.use_bias:
        rank = len(reduced.box)
        shape = (1,) * (rank + 1) + (-1,) if layer.data_format == "channels_last" else (1, -1) + (1,) * rank
        y = ops.add(y, ops.reshape(ops.cast(layer.bias, y.dtype), shape))
    if layer.activation is not None:
        y = layer.activation(y)
    return y


_PADDING_LAYERS = {1: keras.layers.ZeroPadding1D, 2: keras.layers.ZeroPadding2D, 3: keras.layers.ZeroPadding3D}
_CROPPING_LAYERS = {1: keras.layers.Cropping1D, 2: keras.layers.Cropping2D, 3: keras.layers.Cropping3D}


def fold(layer, kernel, reduced, input_shape, kernel_variable=None, name=None):
    """Plain Keras layers computing `call(layer, ·, kernel, reduced)`: a smaller convolution, padded if needed.

    Args:
        layer, kernel, reduced: as in `call`.
        input_shape: the input shape (batch axis included).
        kernel_variable: the variable of `layer` that `kernel` replaces (default `layer.kernel`).
        name: name of the `keras.Sequential` returned when padding layers are needed.

    Returns:
        A built convolution layer, or a `keras.Sequential` with `ZeroPadding`/`Cropping` layers; None when
        not expressible (a channels-first Conv1D needing a crop).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import reduced_convolution

    conv = keras.layers.Conv2D(4, 3)  # "valid": the kept 2x2 block needs a crop first
    x = np.random.rand(2, 9, 9, 3).astype("float32")
    conv.build(x.shape)
    kernel = np.asarray(conv.kernel) * np.pad(np.ones((2, 2)), ((1, 0), (1, 0)))[:, :, None, None]
    conv.kernel.assign(kernel)
    reduced = reduced_convolution.plan(conv, x.shape, ((1, 3), (1, 3)))
    np.testing.assert_allclose(reduced_convolution.fold(conv, kernel, reduced, x.shape)(x), conv(x), atol=1e-5)
    ```
    """
    rank = len(reduced.box)
    kernel_variable = layer.kernel if kernel_variable is None else kernel_variable
    kernel = np.asarray(kernel)[_box_slices(reduced.box, np.ndim(kernel))]
    config = layer.get_config()
    config["kernel_size"] = reduced.kernel_size
    config["padding"] = reduced.padding or "valid"
    conv = layer.__class__.from_config(config)
    input_shape = tuple(input_shape)
    if reduced.padding is not None:
        conv.build(input_shape)
        folded = conv
    else:
        pads = [(max(low, 0), max(high, 0)) for low, high in reduced.pads]
        crops = [(max(-low, 0), max(-high, 0)) for low, high in reduced.pads]
        layers = [keras.Input(batch_shape=input_shape)]
        if any(p != (0, 0) for p in pads):
            layers.append(_PADDING_LAYERS[rank](pads[0] if rank == 1 else pads, data_format=layer.data_format))
        if any(c != (0, 0) for c in crops):
            if rank == 1:
                if layer.data_format != "channels_last":
                    return None
                layers.append(keras.layers.Cropping1D(crops[0]))
            else:
                layers.append(_CROPPING_LAYERS[rank](crops, data_format=layer.data_format))
        folded = keras.Sequential([*layers, conv], name=name)
    conv.set_weights(
        [kernel if variable is kernel_variable else ops.convert_to_numpy(variable.value) for variable in layer.weights]
    )
    return folded
