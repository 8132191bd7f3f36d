"""Fixed (deterministic) transforms for the desire-oriented mode (DOM): `FixedShift`, `FixedMask`.

Both keep a box of taps (`kept_box`), so `ShadowWeights` runs them as a smaller convolution.
"""

import keras
import numpy as np
from keras import ops

from keras_wtrain._core.validation import check_int
from keras_wtrain._core.validation import is_int
from keras_wtrain.shadow_weights.transforms.base import Transform
from keras_wtrain.shadow_weights.transforms.base import along_axis
from keras_wtrain.shadow_weights.transforms.base import default_spatial_axes

__all__ = ["FixedMask", "FixedShift", "FixedTransform"]


class FixedTransform(Transform):
    """Base class of deterministic transforms whose non-zero taps lie in a box; the only valid DOM kernels.

    Example:

    ```python
    from keras_wtrain.shadow_weights.transforms import FixedShift, FixedTransform

    assert isinstance(FixedShift(), FixedTransform)
    ```
    """

    spatial = True

    def kept_box(self, kernel_shape, spatial_axes=None):
        """The `(start, stop)` taps per spatial axis outside which the transformed kernel is zero."""
        raise NotImplementedError


def _shifts_for(shift, sizes):
    if is_int(shift):
        return tuple(int(shift) if k > 1 else 0 for k in sizes)
    return tuple(int(s) for s in shift)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class FixedShift(FixedTransform):
    """A fixed shift of a convolution kernel's taps, zero fill: `out[i] = in[i − s]` on each spatial axis.

    The default DOM kernel: with `shift=1` a k×k kernel keeps a (k−1)×(k−1) block, run as a smaller
    convolution (4/9 of the multiply-adds for 3×3). Cost: one small matrix product per spatial axis.

    Args:
        shift: int (every spatial axis of size > 1) or one int per spatial axis, `|shift| < kernel size`;
            positive moves taps to higher indices.

    Raises:
        TypeError: if `shift` is not an int or a tuple/list of ints.
        ValueError: (at build) for a wrong number of shifts or a shift pushing every tap out.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import FixedShift

    out = np.asarray(FixedShift(1)(np.arange(9, dtype="float32").reshape(3, 3, 1, 1)))[..., 0, 0]
    np.testing.assert_array_equal(out, [[0, 0, 0], [0, 0, 1], [0, 3, 4]])
    ```
    """

    def __init__(self, shift=1):
        if isinstance(shift, (list, tuple)):
            shift = tuple(check_int("shift", s, owner="FixedShift") for s in shift)
        else:
            shift = check_int("shift", shift, owner="FixedShift")
        self.shift = shift

    def shifts(self, kernel_shape, spatial_axes=None):
        """The shift of each spatial axis for a kernel of `kernel_shape` (a tuple of ints)."""
        axes = default_spatial_axes(kernel_shape) if spatial_axes is None else tuple(spatial_axes)
        return _shifts_for(self.shift, [int(kernel_shape[a]) for a in axes])

    def check(self, kernel_shape, spatial_axes=None):
        super().check(kernel_shape, spatial_axes)
        axes = default_spatial_axes(kernel_shape) if spatial_axes is None else tuple(spatial_axes)
        if isinstance(self.shift, tuple) and len(self.shift) != len(axes):
            raise ValueError(
                f"FixedShift: argument `shift` must hold one shift per spatial axis ({len(axes)} for kernel shape "
                f"{tuple(kernel_shape)}); received {self.shift!r}."
            )
        for axis, s in zip(axes, self.shifts(kernel_shape, axes)):
            if abs(s) >= kernel_shape[axis]:
                raise ValueError(
                    f"FixedShift: argument `shift` must satisfy |shift| < kernel size on every spatial axis; "
                    f"received shift {s} for size {kernel_shape[axis]} (kernel shape {tuple(kernel_shape)})."
                )

    def kept_box(self, kernel_shape, spatial_axes=None):
        axes = default_spatial_axes(kernel_shape) if spatial_axes is None else tuple(spatial_axes)
        box = []
        for axis, s in zip(axes, self.shifts(kernel_shape, axes)):
            k = int(kernel_shape[axis])
            box.append((s, k) if s >= 0 else (0, k + s))
        return tuple(box)

    def apply(self, kernel, params=None, spatial_axes=None):
        """Shifts `kernel` by the fixed shifts, zero fill (`params` is unused)."""
        axes = default_spatial_axes(kernel.shape) if spatial_axes is None else tuple(spatial_axes)
        for axis, s in zip(axes, self.shifts(kernel.shape, axes)):
            if s:
                k = kernel.shape[axis]
                matrix = np.eye(k, k, -s, dtype="float32")  # matrix[i, i - s] = 1
                kernel = along_axis(ops.cast(matrix, kernel.dtype), kernel, axis)
        return kernel

    def get_config(self):
        return {"shift": list(self.shift) if isinstance(self.shift, tuple) else self.shift}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class FixedMask(FixedTransform):
    """A fixed 0/1 mask over a convolution kernel's spatial taps, the same for every filter.

    Taps outside the box of kept ones are skipped in DOM; zeros inside it are multiplied.
    Cost: one element-wise product per call.

    Args:
        mask: nested list or array of 0/1 (or booleans) of the spatial kernel shape, at least one 1.

    Raises:
        TypeError: if `mask` is not numbers or booleans.
        ValueError: if `mask` holds values other than 0 and 1 or no 1, or (at build) has the wrong shape.

    Example:

    ```python
    from keras_wtrain.shadow_weights.transforms import FixedMask

    assert FixedMask([[1, 1, 0], [1, 1, 0], [0, 0, 0]]).kept_box((3, 3, 2, 4)) == ((0, 2), (0, 2))
    ```
    """

    def __init__(self, mask):
        try:
            values = np.asarray(mask)
        except ValueError:  # ragged nested lists
            values = None
        if values is None or values.dtype.kind not in "biuf":
            raise TypeError(
                "FixedMask: argument `mask` must be a nested list or array of 0/1 numbers or booleans; "
                f"received {mask!r}."
            )
        values = values.astype("float64")
        if values.ndim == 0 or not np.isin(values, (0.0, 1.0)).all() or not values.any():
            raise ValueError(
                "FixedMask: argument `mask` must be an array of 0/1 over the spatial taps with at least one 1; "
                f"received {mask!r}."
            )
        self.mask = values.astype("float32")

    def check(self, kernel_shape, spatial_axes=None):
        super().check(kernel_shape, spatial_axes)
        axes = default_spatial_axes(kernel_shape) if spatial_axes is None else tuple(spatial_axes)
        spatial = tuple(int(kernel_shape[a]) for a in axes)
        if self.mask.shape != spatial:
            raise ValueError(
                f"FixedMask: argument `mask` must have the kernel's spatial shape {spatial}; received a mask of "
                f"shape {self.mask.shape}."
            )

    def kept_box(self, kernel_shape, spatial_axes=None):
        kept = np.nonzero(self.mask)
        return tuple((int(index.min()), int(index.max()) + 1) for index in kept)

    def apply(self, kernel, params=None, spatial_axes=None):
        """Multiplies the kernel by the mask, broadcast over the non-spatial axes (`params` is unused)."""
        axes = default_spatial_axes(kernel.shape) if spatial_axes is None else tuple(spatial_axes)
        shape = [1] * len(kernel.shape)
        for axis in axes:
            shape[axis] = kernel.shape[axis]
        mask = self.mask.reshape(shape)  # spatial axes are ascending
        return kernel * ops.cast(mask, kernel.dtype)

    def get_config(self):
        return {"mask": self.mask.astype(int).tolist()}
