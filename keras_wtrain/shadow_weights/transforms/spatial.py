"""Spatial transforms of convolution kernels (one draw for every filter): shift, crop-and-stretch, flip, rotation."""

import math

import keras
import numpy as np
from keras import ops

from keras_wtrain._core.rng import as_seed
from keras_wtrain._core.rng import uniform
from keras_wtrain._core.validation import check_choice
from keras_wtrain._core.validation import check_probability
from keras_wtrain._core.validation import is_real
from keras_wtrain.shadow_weights.transforms.base import Transform
from keras_wtrain.shadow_weights.transforms.base import along_axis
from keras_wtrain.shadow_weights.transforms.base import default_spatial_axes

__all__ = ["RandomFlip", "RandomResizedCrop", "RandomRotate90", "RandomTranslate"]


@keras.saving.register_keras_serializable(package="keras_wtrain")
class RandomTranslate(Transform):
    """Random shift of a conv kernel's taps, zero fill: the WAS default (torchvision `RandomAffine(translate=)`).

    Per spatial axis of size `k`: `s = round(u)`, `u ~ U(-max_shift·k, max_shift·k)`, `out[i] = in[i - s]`.
    Cost (as every transform here): one small matrix product per spatial axis per call.

    Args:
        max_shift: largest shift as a fraction of the kernel size, in `[0, 1)`.

    Raises:
        ValueError: if `max_shift` is outside `[0, 1)`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import RandomTranslate

    shadow = RandomTranslate(0.3)(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    spatial = True

    def __init__(self, max_shift=0.3):
        self.max_shift = check_probability("max_shift", max_shift, high_inclusive=False, owner="RandomTranslate")

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws one integer shift per spatial axis: `{"shifts": int32 tensor (len(spatial_axes),)}`."""
        seed = as_seed(seed)
        axes = default_spatial_axes(shape) if spatial_axes is None else spatial_axes
        shifts = []
        for axis in axes:
            bound = self.max_shift * shape[axis]
            u = uniform((), minval=-bound, maxval=bound, seed=seed)
            shifts.append(ops.cast(ops.round(u), "int32"))
        return {"shifts": ops.stack(shifts)}

    def apply(self, kernel, params, spatial_axes=None):
        """Shifts `kernel` along each spatial axis by `params["shifts"]`, zero fill."""
        axes = default_spatial_axes(kernel.shape) if spatial_axes is None else spatial_axes
        for n, axis in enumerate(axes):
            k = kernel.shape[axis]
            i = ops.expand_dims(ops.arange(k, dtype="int32"), 1)
            j = ops.expand_dims(ops.arange(k, dtype="int32"), 0)
            matrix = ops.cast(ops.equal(j, i - params["shifts"][n]), kernel.dtype)
            kernel = along_axis(matrix, kernel, axis)
        return kernel

    def get_config(self):
        return {"max_shift": self.max_shift}


def _real_pair(name, value):
    """`value` as a `(low, high)` tuple of floats; a TypeError naming `name` unless it is two real numbers."""
    if not (isinstance(value, (list, tuple, np.ndarray)) and len(value) == 2 and all(is_real(v) for v in value)):
        raise TypeError(
            f"RandomResizedCrop: argument `{name}` must be a pair (low, high) of real numbers; received {value!r}."
        )
    return tuple(float(v) for v in value)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class RandomResizedCrop(Transform):
    """Random crop of the kernel's spatial taps, stretched back to full size (torchvision's `RandomResizedCrop`).

    Args:
        scale: `(low, high)` range of the kept area fraction, `0 < low <= high <= 1`.
        ratio: `(low, high)` range of the aspect ratio (2-D kernels), `0 < low <= high`.

    Raises:
        TypeError: if `scale` or `ratio` is not a pair of real numbers.
        ValueError: for ranges outside those bounds.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import RandomResizedCrop

    shadow = RandomResizedCrop(scale=(0.5, 1.0))(np.ones((5, 5, 2, 4), "float32"), seed=1)
    ```
    """

    spatial = True
    _ATTEMPTS = 10

    def __init__(self, scale=(0.8, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
        scale = _real_pair("scale", scale)
        ratio = _real_pair("ratio", ratio)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(
                "RandomResizedCrop: argument `scale` must be (low, high) with 0 < low <= high <= 1; "
                f"received {scale!r}."
            )
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(
                f"RandomResizedCrop: argument `ratio` must be (low, high) with 0 < low <= high; received {ratio!r}."
            )
        self.scale = scale
        self.ratio = ratio

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws the crop: `{"starts": int32 (n,), "lengths": int32 (n,)}` over the spatial axes."""
        seed = as_seed(seed)
        axes = default_spatial_axes(shape) if spatial_axes is None else spatial_axes
        sizes = [int(shape[a]) for a in axes]
        if len(axes) == 2:
            h_full, w_full = sizes
            area = float(h_full * w_full)
            s = uniform((self._ATTEMPTS,), self.scale[0], self.scale[1], seed=seed)
            log_r = uniform((self._ATTEMPTS,), math.log(self.ratio[0]), math.log(self.ratio[1]), seed=seed)
            r = ops.exp(log_r)
            w = ops.cast(ops.round(ops.sqrt(area * s * r)), "int32")
            h = ops.cast(ops.round(ops.sqrt(area * s / r)), "int32")
            valid = ops.logical_and(ops.logical_and(w > 0, w <= w_full), ops.logical_and(h > 0, h <= h_full))
            first = ops.argmax(ops.cast(valid, "int32"))
            found = ops.any(valid)
            lengths = [
                ops.where(found, ops.take(h, first), h_full),
                ops.where(found, ops.take(w, first), w_full),
            ]
        else:
            s = uniform((), self.scale[0], self.scale[1], seed=seed)
            frac = ops.power(s, 1.0 / len(axes))
            lengths = [ops.clip(ops.cast(ops.round(k * frac), "int32"), 1, k) for k in sizes]
        starts = []
        for k, length in zip(sizes, lengths):
            u = uniform((), seed=seed)
            room = ops.cast(k - length + 1, "float32")
            starts.append(ops.minimum(ops.cast(ops.floor(u * room), "int32"), k - length))
        return {"starts": ops.stack(starts), "lengths": ops.stack([ops.cast(v, "int32") for v in lengths])}

    def apply(self, kernel, params, spatial_axes=None):
        """Crops `[start, start+length)` on each spatial axis and resizes back bilinearly."""
        axes = default_spatial_axes(kernel.shape) if spatial_axes is None else spatial_axes
        for n, axis in enumerate(axes):
            k = kernel.shape[axis]
            start = ops.cast(params["starts"][n], "float32")
            length = ops.cast(params["lengths"][n], "float32")
            i = ops.arange(k, dtype="float32")
            src = ops.maximum((i + 0.5) * length / k - 0.5, 0.0)
            i0 = ops.floor(src)
            lam = src - i0
            i1 = ops.minimum(i0 + 1.0, length - 1.0)
            j = ops.expand_dims(ops.arange(k, dtype="float32"), 0)
            lo = ops.expand_dims(start + i0, 1)
            hi = ops.expand_dims(start + i1, 1)
            lam = ops.expand_dims(lam, 1)
            matrix = ops.cast(ops.equal(j, lo), "float32") * (1.0 - lam) + ops.cast(ops.equal(j, hi), "float32") * lam
            kernel = along_axis(ops.cast(matrix, kernel.dtype), kernel, axis)
        return kernel

    def get_config(self):
        return {"scale": list(self.scale), "ratio": list(self.ratio)}


_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


@keras.saving.register_keras_serializable(package="keras_wtrain")
class RandomFlip(Transform):
    """Random flip of a conv kernel: `"vertical"` the first spatial axis, `"horizontal"` the last.

    Args:
        mode: `"horizontal"`, `"vertical"` or `"horizontal_and_vertical"` (each axis independently).
        probability: probability of each flip, in `[0, 1]`.

    Raises:
        ValueError: for an unknown `mode` or a probability outside `[0, 1]`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import RandomFlip

    shadow = RandomFlip("horizontal")(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    spatial = True

    def __init__(self, mode="horizontal_and_vertical", probability=0.5):
        self.mode = check_choice("mode", mode, _FLIP_MODES, owner="RandomFlip")
        self.probability = check_probability("probability", probability, owner="RandomFlip")

    def _flip_axes(self, spatial_axes):
        axes = []
        if self.mode in ("vertical", "horizontal_and_vertical"):
            axes.append(spatial_axes[0])
        if self.mode in ("horizontal", "horizontal_and_vertical") and spatial_axes[-1] not in axes:
            axes.append(spatial_axes[-1])
        return axes

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws one flip decision per flipped axis: `{"flips": bool (n,)}`."""
        seed = as_seed(seed)
        axes = self._flip_axes(default_spatial_axes(shape) if spatial_axes is None else spatial_axes)
        return {"flips": uniform((len(axes),), seed=seed) < self.probability}

    def apply(self, kernel, params, spatial_axes=None):
        """Flips the kernel along the axes whose decision is True."""
        axes = self._flip_axes(default_spatial_axes(kernel.shape) if spatial_axes is None else spatial_axes)
        for n, axis in enumerate(axes):
            kernel = ops.where(params["flips"][n], ops.flip(kernel, axis=axis), kernel)
        return kernel

    def get_config(self):
        return {"mode": self.mode, "probability": self.probability}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class RandomRotate90(Transform):
    """Rotation of a conv kernel by a random multiple of 90° in its first two spatial axes.

    Raises:
        ValueError: (at use) if the kernel has fewer than two spatial axes or they differ in size.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import RandomRotate90

    shadow = RandomRotate90()(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    spatial = True

    def check(self, kernel_shape, spatial_axes=None):
        super().check(kernel_shape, spatial_axes)
        axes = default_spatial_axes(kernel_shape) if spatial_axes is None else tuple(spatial_axes)
        if len(axes) < 2 or kernel_shape[axes[0]] != kernel_shape[axes[1]]:
            raise ValueError(
                "RandomRotate90 needs a kernel with at least two spatial axes of equal size; received kernel "
                f"shape {tuple(kernel_shape)} with spatial axes {axes}."
            )

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws the number of quarter turns: `{"k": int32 scalar in [0, 4)}`."""
        seed = as_seed(seed)
        u = uniform((), seed=seed)
        return {"k": ops.minimum(ops.cast(ops.floor(u * 4.0), "int32"), 3)}

    def apply(self, kernel, params, spatial_axes=None):
        """Rotates by `params["k"]` quarter turns."""
        axes = default_spatial_axes(kernel.shape) if spatial_axes is None else spatial_axes
        plane = (axes[0], axes[1])
        candidates = ops.stack([ops.rot90(kernel, k=k, axes=plane) for k in range(4)])
        return ops.take(candidates, params["k"], axis=0)
