"""A convolution whose kernel is zero outside a box of taps, run as the smaller convolution of that box.

A fixed DOM kernel (`FixedShift`, `FixedMask`) keeps a box of taps; every tap
outside it is exactly zero. Multiplying those zeros is wasted work, so
`ShadowWeights` in desire mode runs a regular or depthwise convolution
(Conv1D/2D/3D, DepthwiseConv1D/2D) as a `"valid"` convolution with only the
kept taps, of the input padded or cropped so that the outputs are the full
convolution's (`plan`, `call`), and `fold` turns that into plain Keras layers
for serving.

Padding arithmetic, per spatial axis of input size `n`, kernel size `k`,
stride `s` and dilation `d` (Keras, TensorFlow and JAX agree on it): the full
convolution pads `p` on the low side and has `n_out` outputs,
`y[o] = Σ_i x[o·s + i·d − p] K[i]`; `"valid"`: `p = 0`,
`n_out = ⌊(n − d(k−1) − 1)/s⌋ + 1`; `"same"`: `n_out = ⌈n/s⌉`,
`p = ⌊max((n_out−1)s + d(k−1) + 1 − n, 0)/2⌋`; `"causal"`: `p = d(k−1)`,
`n_out = ⌊(n−1)/s⌋ + 1`. If only the taps `a ≤ i < a + m` are non-zero,
`y[o] = Σ_j x[o·s + j·d − (p − a·d)] K[a + j]`: a `"valid"` convolution with
the `m` kept taps of the input padded by `p − a·d` below and
`(n_out−1)s + d(m−1) + 1 − n − (p − a·d)` above (a negative pad is a crop).
With stride 1 neither depends on `n`; with a larger stride the input size
must be known (else the layer runs its full kernel).

Example:

```python
import keras
import numpy as np
from keras_wtrain.layers.transforms import reduced_convolution

conv = keras.layers.Conv2D(4, 3, padding="same")
x = np.random.rand(2, 9, 9, 3).astype("float32")
conv.build(x.shape)
kernel = np.zeros((3, 3, 3, 4), "float32")
kernel[1:, 1:] = np.random.rand(2, 2, 3, 4)  # a one-tap shift in both axes: a 2x2 block
conv.kernel.assign(kernel)
plan = reduced_convolution.plan(conv, x.shape, ((1, 3), (1, 3)))
assert plan.kernel_size == (2, 2) and plan.padding == "same"  # a plain 2x2 "same" convolution
np.testing.assert_allclose(reduced_convolution.call(conv, x, kernel, plan), conv(x), atol=1e-5)
```
"""

import collections
import math

import keras
import numpy as np
from keras import ops

from keras_wtrain import layer_kinds
from keras_wtrain.validation import check_choice

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
        size: input size along the axis (an int; None only with `stride=1`,
            where the padding does not depend on it).
        kernel_size: the kernel's size along the axis.
        stride: the stride.
        dilation: the dilation rate.
        padding: `"valid"`, `"same"` or `"causal"`.

    Returns:
        `(low_padding, output_size)`; `output_size` is None when `size` is None.

    Raises:
        ValueError: for an unknown `padding`, or `size=None` with `stride > 1`.

    Example:

    ```python
    from keras_wtrain.layers.transforms.reduced_convolution import full_padding

    assert full_padding(28, 3, padding="same") == (1, 28)
    assert full_padding(28, 3, stride=2, padding="same") == (0, 14)  # the extra row is padded below
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
    """Padding that makes a `"valid"` convolution with only the taps `box` equal the full one, along one axis.

    The full convolution (kernel size `kernel_size`, `padding`) of a kernel
    whose taps outside `box = (start, stop)` are zero equals a `"valid"`
    convolution with the `stop − start` kept taps of the input padded by
    `low` below and `high` above (negative: cropped); see the module
    docstring for the arithmetic.

    Args:
        size: input size along the axis (None only with `stride=1`).
        kernel_size: the full kernel's size.
        box: `(start, stop)`, `0 <= start < stop <= kernel_size`.
        stride: the stride.
        dilation: the dilation rate.
        padding: `"valid"`, `"same"` or `"causal"`.

    Returns:
        `(low, high, output_size)`; `output_size` is None when `size` is None
        (then `low` and `high` do not depend on it).

    Raises:
        ValueError: for a box outside the kernel, an unknown `padding`, or
            `size=None` with `stride > 1`.

    Example:

    ```python
    from keras_wtrain.layers.transforms.reduced_convolution import reduced_padding

    assert reduced_padding(28, 3, (1, 3), padding="same") == (0, 1, 28)  # a 2x2 "same" convolution
    assert reduced_padding(10, 3, (1, 3), padding="valid") == (-1, 0, 8)  # crop one row below, 2-tap "valid"
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
        input_shape: the shape of its input (batch axis included; spatial
            sizes may be None where the stride is 1).
        box: the kept `(start, stop)` taps per spatial axis.

    Returns:
        A `ReducedConvolution`, or None when nothing is removed: `layer` is
        not a Conv1D/2D/3D or DepthwiseConv1D/2D (transposed and separable
        convolutions run their full kernel), the box is the whole kernel, or
        a spatial input size is unknown on an axis with stride > 1.

    Example:

    ```python
    import keras
    from keras_wtrain.layers.transforms.reduced_convolution import plan

    conv = keras.layers.Conv2D(4, 3, strides=2, padding="same")
    conv.build((None, 28, 28, 3))
    print(plan(conv, (None, 28, 28, 3), ((1, 3), (1, 3))))  # pads ((-1, 1), (-1, 1)): crop one, pad one
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
    """Runs `layer` on `inputs` with the full-size `kernel`, computing only the kept box of taps.

    Pads or crops the input, runs a `"valid"` convolution (`keras.ops.conv`
    or `keras.ops.depthwise_conv`) with the kept taps and the layer's strides
    and dilation, then adds the layer's bias and applies its activation, as
    the layer's own `call` does. The outputs equal `layer(inputs)` with
    `kernel` (whose taps outside the box must be zero).

    Args:
        layer: the built convolution layer (its bias and activation are used).
        inputs: the input tensor.
        kernel: the full kernel (float32 tensor or array), zero outside the box.
        reduced: a `ReducedConvolution` from `plan`.

    Returns:
        The output tensor.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers.transforms import reduced_convolution

    conv = keras.layers.Conv1D(2, 3, padding="causal")
    x = np.random.rand(1, 6, 2).astype("float32")
    conv.build(x.shape)
    kernel = np.asarray(conv.kernel) * np.array([0, 1, 1], "float32")[:, None, None]
    reduced = reduced_convolution.plan(conv, x.shape, ((1, 3),))
    y = reduced_convolution.call(conv, x, kernel, reduced)  # a 2-tap causal convolution
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
        layer: the built convolution layer (its config and other weights are copied).
        kernel: the full kernel (array), zero outside the box.
        reduced: a `ReducedConvolution` from `plan`.
        input_shape: the input shape (batch axis included).
        kernel_variable: the variable of `layer` that `kernel` replaces (default `layer.kernel`).
        name: name of the `keras.Sequential` returned when padding layers are needed.

    Returns:
        One built convolution layer of the same class with `reduced.kernel_size` when a Keras padding mode
        matches (`reduced.padding`), else a built `keras.Sequential` of `ZeroPadding`/`Cropping` layers and a
        `"valid"` convolution; None when that cannot be expressed (a channels-first Conv1D needing a crop:
        `Cropping1D` is channels-last only).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers.transforms import reduced_convolution

    conv = keras.layers.Conv2D(4, 3)  # "valid": the kept 2x2 block needs a crop first
    x = np.random.rand(2, 9, 9, 3).astype("float32")
    conv.build(x.shape)
    kernel = np.asarray(conv.kernel) * np.pad(np.ones((2, 2)), ((1, 0), (1, 0)))[:, :, None, None]
    reduced = reduced_convolution.plan(conv, x.shape, ((1, 3), (1, 3)))
    folded = reduced_convolution.fold(conv, kernel, reduced, x.shape)  # Sequential: Cropping2D, Conv2D 2x2
    np.testing.assert_allclose(folded(x), reduced_convolution.call(conv, x, kernel, reduced), atol=1e-5)
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
