"""Fixed (deterministic) transforms for the desire-oriented mode (DOM): `FixedShift`, `FixedMask`.

A DOM kernel must be chosen, not drawn: `FixedShift` (a fixed shift of the
taps, zero fill: one of the shifts `RandomTranslate` draws in training,
frozen) and `FixedMask` (a fixed 0/1 mask over the spatial taps). Both keep
only a box of taps (`kept_box`); every tap outside it is exactly zero, so a
convolution with such a kernel runs as a smaller convolution
(`keras_wtrain.layers.transforms.reduced_convolution`): a one-tap shift of a
3×3 kernel in both axes keeps a 2×2 block, 4/9 of the multiply-adds.

Example:

```python
import numpy as np
from keras_wtrain.layers.transforms.fixed import FixedShift

kernel = np.arange(9, dtype="float32").reshape(3, 3, 1, 1)
shifted = FixedShift(1)(kernel)  # taps move down/right by one; row 0 and column 0 are zero
assert FixedShift(1).kept_box((3, 3, 1, 1)) == ((1, 3), (1, 3))
```
"""

import keras
import numpy as np
from keras import ops

from keras_wtrain.layers.transforms.base import Transform
from keras_wtrain.layers.transforms.base import along_axis
from keras_wtrain.layers.transforms.base import default_spatial_axes
from keras_wtrain.validation import check_int
from keras_wtrain.validation import is_int

__all__ = ["FixedMask", "FixedShift", "FixedTransform"]


class FixedTransform(Transform):
    """Base class of deterministic transforms whose non-zero taps lie in a box (`kept_box`).

    A fixed transform draws nothing (`seed` is ignored), so the kernel it
    gives is the same on every call, backend and compilation: what a DOM
    kernel must be. `ShadowWeights(desire_transform=...)` accepts only these.

    Example:

    ```python
    from keras_wtrain.layers.transforms import FixedShift
    from keras_wtrain.layers.transforms.fixed import FixedTransform

    assert isinstance(FixedShift(), FixedTransform)
    ```
    """

    spatial = True

    def kept_box(self, kernel_shape, spatial_axes=None):
        """The `(start, stop)` range of taps, per spatial axis, outside which the transformed kernel is zero.

        Args:
            kernel_shape: the kernel's shape.
            spatial_axes: the kernel's spatial axes (default: all but the last two).

        Returns:
            A tuple of `(start, stop)` int pairs, one per spatial axis.
        """
        raise NotImplementedError


def _shifts_for(shift, sizes):
    if is_int(shift):
        return tuple(int(shift) if k > 1 else 0 for k in sizes)
    return tuple(int(s) for s in shift)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class FixedShift(FixedTransform):
    """A fixed shift of a convolution kernel's taps, zero fill: `out[i] = in[i − s]` on each spatial axis.

    The DOM kernel of `ShadowWeights` by default: one of the shifts
    `RandomTranslate` draws in training, frozen. With `shift=1` (default) a
    k×k kernel moves one tap down and right in both axes; its first row and
    column are zero and it keeps a (k−1)×(k−1) block of taps, `kernel[:k-1,
    :k-1]` placed at `[1:, 1:]`, so `ShadowWeights` runs it as a
    (k−1)×(k−1) convolution ((k−1)²/k² of the multiply-adds: 4/9 for 3×3).
    An int shift applies to every spatial axis of size > 1 (an axis of size
    1 is not shifted); a tuple gives one shift per spatial axis.

    Args:
        shift: int (every spatial axis of size > 1) or tuple of ints (one per
            spatial axis); each must satisfy `|shift| < kernel size` (checked
            at build). Positive moves taps to higher indices.

    Raises:
        TypeError: if `shift` is not an int or a tuple/list of ints.
        ValueError: (at build) if the tuple's length is not the number of
            spatial axes or a shift would push every tap out of the kernel.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import FixedShift

    kernel = np.arange(9, dtype="float32").reshape(3, 3, 1, 1)
    out = np.asarray(FixedShift(1)(kernel))[..., 0, 0]
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

    `out[taps, :, :] = in[taps, :, :] · mask[taps]`. The taps outside the
    bounding box of the kept ones (`kept_box`) are removed from the
    computation by `ShadowWeights`; zeros inside the box are multiplied as
    usual (and counted by `desire_sparsity`).

    Args:
        mask: nested list or array of 0/1 (or booleans) with the spatial
            kernel shape (e.g. 3×3), at least one non-zero.

    Raises:
        TypeError: if `mask` is not numbers or booleans (a string, None, a ragged list).
        ValueError: if `mask` holds values other than 0 and 1 or no 1, or (at
            build) if its shape is not the kernel's spatial shape.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import FixedMask

    mask = FixedMask([[1, 1, 0], [1, 1, 0], [0, 0, 0]])  # keep the top-left 2x2 taps
    assert mask.kept_box((3, 3, 2, 4)) == ((0, 2), (0, 2))
    out = mask(np.ones((3, 3, 2, 4), "float32"))
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
