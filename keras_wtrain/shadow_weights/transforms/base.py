"""The transform protocol: `Transform`, its adapter for callables `FunctionTransform`, and axis helpers."""

import keras
from keras import ops

from keras_wtrain._core.rng import as_seed
from keras_wtrain._core.validation import check_bool

__all__ = ["FunctionTransform", "Transform", "along_axis", "default_spatial_axes"]


def default_spatial_axes(shape):
    """The spatial axes of a kernel of `shape` when none are given: all but the last two.

    Example:

    ```python
    from keras_wtrain.shadow_weights.transforms.base import default_spatial_axes

    assert default_spatial_axes((3, 3, 2, 4)) == (0, 1) and default_spatial_axes((8, 4)) == ()
    ```
    """
    return tuple(range(max(len(shape) - 2, 0)))


def along_axis(matrix, kernel, axis):
    """`out[..., i, ...] = sum_j matrix[i, j] kernel[..., j, ...]` along `axis`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms.base import along_axis

    flipped = along_axis(np.eye(3, dtype="float32")[::-1], np.arange(6, dtype="float32").reshape(3, 2), 0)
    ```
    """
    out = ops.tensordot(matrix, kernel, axes=[[1], [axis]])
    return ops.moveaxis(out, 0, axis)


class Transform:
    """Base class of weight transforms: `transform(kernel, seed, spatial_axes) -> kernel`.

    Subclasses implement `sample` (the random draw, a dict of tensors) and `apply` (deterministic given the
    draw), or override `__call__`. `spatial = True` marks transforms that need a convolution kernel.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import Transform


    class Negate(Transform):
        def apply(self, kernel, params, spatial_axes=None):
            return -kernel


    shadow = Negate()(np.ones((3, 3, 2, 4), "float32"), seed=0)
    ```
    """

    spatial = False

    def check(self, kernel_shape, spatial_axes=None):
        """Raises a ValueError if this transform cannot act on a kernel of `kernel_shape` (e.g. spatial on Dense)."""
        axes = default_spatial_axes(kernel_shape) if spatial_axes is None else tuple(spatial_axes)
        if self.spatial and not axes:
            raise ValueError(
                f"{type(self).__name__} is a spatial transform and needs a kernel with spatial axes "
                f"(a convolution kernel); received a kernel of shape {tuple(kernel_shape)} with no spatial "
                "axes (e.g. a Dense kernel). Use a weight-space transform instead: GaussianNoise, "
                "MultiplicativeNoise or DropConnect."
            )

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws the random parameters of one application (a dict of tensors)."""
        return {}

    def apply(self, kernel, params, spatial_axes=None):
        """Applies the transform with the given draw `params`."""
        raise NotImplementedError

    def __call__(self, kernel, seed=None, spatial_axes=None):
        """Returns `T(kernel)`, a tensor of the kernel's shape.

        Args:
            kernel: the kernel tensor.
            seed: a `keras.random.SeedGenerator` (advanced), an int (as a fresh `SeedGenerator(seed)`) or None.
            spatial_axes: the kernel's spatial axes (default: all but the last two).
        """
        kernel = ops.convert_to_tensor(kernel)
        axes = default_spatial_axes(kernel.shape) if spatial_axes is None else tuple(spatial_axes)
        self.check(kernel.shape, axes)
        seed = as_seed(seed)
        return self.apply(kernel, self.sample(kernel.shape, seed, axes), axes)

    def get_config(self):
        """Returns the constructor arguments of this transform."""
        return {}

    @classmethod
    def from_config(cls, config):
        """Builds a transform from `get_config()` output."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_wtrain")
class FunctionTransform(Transform):
    """Wraps a callable `fn(kernel, seed) -> kernel` as a transform; `seed` is a `keras.random.SeedGenerator`.

    To save it in a `.keras` file, register `fn` with `keras.saving.register_keras_serializable`.

    Args:
        fn: the callable; it must keep the kernel's shape (and be differentiable to train PW).
        spatial: whether `fn` needs spatial kernel axes (checked at build).

    Raises:
        TypeError: if `fn` is not callable or `spatial` not a bool.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import FunctionTransform

    def sign_flip(kernel, seed):
        return kernel * keras.ops.sign(keras.random.uniform(kernel.shape, -1.0, 1.0, seed=seed))

    shadow = FunctionTransform(sign_flip)(np.ones((8, 4), "float32"), seed=1)
    ```
    """

    def __init__(self, fn, spatial=False):
        if isinstance(fn, dict):
            fn = keras.saving.deserialize_keras_object(fn)
        if not callable(fn):
            raise TypeError(f"FunctionTransform: argument `fn` must be callable; received {fn!r}.")
        self.fn = fn
        self.spatial = check_bool("spatial", spatial, owner="FunctionTransform")

    def __call__(self, kernel, seed=None, spatial_axes=None):
        kernel = ops.convert_to_tensor(kernel)
        self.check(kernel.shape, spatial_axes)
        seed = as_seed(seed)
        out = self.fn(kernel, seed)
        if tuple(out.shape) != tuple(kernel.shape):
            raise ValueError(
                f"FunctionTransform: {self.fn!r} returned shape {tuple(out.shape)}; it must keep the kernel "
                f"shape {tuple(kernel.shape)}."
            )
        return out

    def get_config(self):
        return {"fn": keras.saving.serialize_keras_object(self.fn), "spatial": self.spatial}
