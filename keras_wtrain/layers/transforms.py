"""Random weight transforms for shadow-weight augmentation (WAS, arXiv:2405.19590).

A transform maps a kernel tensor (the plain weights, PW) and a seed to a new
kernel of the same shape (the shadow weights, SW). Every transform here is
written in `keras.ops`, is differentiable w.r.t. the kernel, draws its
randomness from a `keras.random.SeedGenerator` (so it works under
`jit_compile=True` and in JAX's stateless train step) and is a small
serialisable object (`get_config` / `from_config`, registered with Keras).

Spatial transforms act on the spatial axes of a convolution kernel, the same
draw for every filter, as in the authors' code: `RandomTranslate` (their
enabled default, torchvision `RandomAffine(translate=...)`, zero fill),
`RandomResizedCrop` (their crop-and-stretch), `RandomFlip`, `RandomRotate90`.
Weight-space transforms suit every kernel, Dense included: `GaussianNoise`,
`MultiplicativeNoise`, `DropConnect`. `Compose` and `RandomChoice` combine
them, and `FunctionTransform` wraps any callable `f(kernel, seed) -> kernel`.

Each built-in transform splits into `sample(shape, seed, spatial_axes)` (the
random draw, a dict of tensors) and `apply(kernel, params, spatial_axes)` (a
deterministic function of the draw); `transform(kernel, seed)` is
`apply(kernel, sample(...))`. An integer seed gives the same draws as a fresh
`keras.random.SeedGenerator(seed)`.

Example:

```python
import numpy as np
from keras_wtrain.layers import transforms

t = transforms.get("random_translate")  # the authors' shift, max_shift=0.3
shadow = t(np.ones((3, 3, 2, 4), "float32"), seed=0)
```
"""

import math

import keras
from keras import ops
from keras.src.backend import random_seed_dtype
from keras.src.random.seed_generator import SeedGenerator
from keras.src.random.seed_generator import draw_seed

__all__ = [
    "Compose",
    "DropConnect",
    "FunctionTransform",
    "GaussianNoise",
    "MultiplicativeNoise",
    "RandomChoice",
    "RandomFlip",
    "RandomResizedCrop",
    "RandomRotate90",
    "RandomTranslate",
    "Transform",
    "get",
]


class _SeedSequence(SeedGenerator):
    """A stateless stand-in for a `SeedGenerator`: the i-th draw uses seed `[base, i]`.

    It creates no variable, so it can be made inside a jit-compiled call; its
    draws equal those of a fresh `SeedGenerator(base)`.
    """

    def __init__(self, base):  # noqa: D107 - deliberately no super().__init__ (no state variable)
        self.base = int(base)
        self.count = 0

    def next(self, ordered=True):
        dtype = random_seed_dtype()
        base = self.base
        if dtype == "int32":
            base = (base & 0xFFFFFFFF ^ 0x80000000) - 0x80000000
        value = ops.convert_to_tensor([base, self.count], dtype=dtype)
        self.count += 1
        return value


def _as_seed(seed):
    if isinstance(seed, SeedGenerator):
        return seed
    if isinstance(seed, bool) or not (seed is None or isinstance(seed, int)):
        raise TypeError(
            f"argument `seed` must be an int, a keras.random.SeedGenerator or None; received {seed!r} "
            f"of type {type(seed).__name__}."
        )
    return None if seed is None else _SeedSequence(seed)


def _uniform(shape, minval=0.0, maxval=1.0, seed=None):
    """`keras.random.uniform`, except on TensorFlow: Philox explicitly (see `_normal`)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        seed = tf.cast(draw_seed(seed), "int64")
        return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval, dtype="float32", alg="philox")
    return keras.random.uniform(shape, minval=minval, maxval=maxval, seed=seed)


def _normal(shape, seed=None):
    """`keras.random.normal`, except on TensorFlow, where the Philox algorithm is chosen explicitly.

    Keras lets TensorFlow auto-select the algorithm, which under XLA on CPU
    was about 100-300x slower for kernel-sized tensors (170 ms for 784x512
    uniforms on our 2-core CPU, 0.5 ms with Philox) and, for a constant seed,
    drew other numbers than eagerly.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        seed = tf.cast(draw_seed(seed), "int64")
        return tf.random.stateless_normal(shape, seed, dtype="float32", alg="philox")
    return keras.random.normal(shape, seed=seed)


def _default_spatial_axes(shape):
    return tuple(range(max(len(shape) - 2, 0)))


def _check_probability(name, value, cls, high_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{cls}: argument `{name}` must be a number; received {value!r}.")
    ok = 0.0 <= value <= 1.0 if high_inclusive else 0.0 <= value < 1.0
    if not ok:
        bounds = "[0, 1]" if high_inclusive else "[0, 1)"
        raise ValueError(f"{cls}: argument `{name}` must be in {bounds}; received {value!r}.")
    return float(value)


def _check_nonnegative(name, value, cls):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{cls}: argument `{name}` must be a number; received {value!r}.")
    if not value >= 0.0 or math.isinf(value):
        raise ValueError(f"{cls}: argument `{name}` must be a finite number >= 0; received {value!r}.")
    return float(value)


def _along_axis(matrix, kernel, axis):
    """`out[..., i, ...] = sum_j matrix[i, j] kernel[..., j, ...]` along `axis`."""
    out = ops.tensordot(matrix, kernel, axes=[[1], [axis]])
    return ops.moveaxis(out, 0, axis)


class Transform:
    """Base class of weight transforms: `transform(kernel, seed, spatial_axes) -> kernel`.

    Subclasses implement `sample` (the random draw) and `apply` (deterministic
    given the draw), or override `__call__`. `spatial = True` marks transforms
    that need spatial kernel axes (convolution kernels).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import RandomTranslate

    kernel = np.arange(9, dtype="float32").reshape(3, 3, 1, 1)
    shadow = RandomTranslate(max_shift=0.3)(kernel, seed=0)
    ```
    """

    spatial = False

    def check(self, kernel_shape, spatial_axes=None):
        """Raises an error if this transform cannot act on a kernel of this shape.

        Args:
            kernel_shape: the kernel's shape.
            spatial_axes: the kernel's spatial axes (default: all but the last two).

        Raises:
            ValueError: if the transform needs spatial axes the kernel does not have.
        """
        axes = _default_spatial_axes(kernel_shape) if spatial_axes is None else tuple(spatial_axes)
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
        """Returns `T(kernel)` with randomness from `seed`.

        Args:
            kernel: the kernel tensor.
            seed: a `keras.random.SeedGenerator` (advanced by the draws), an int
                (same draws as a fresh `SeedGenerator(seed)`) or None (global).
            spatial_axes: the kernel's spatial axes (default: all but the last two).

        Returns:
            A tensor of the kernel's shape.
        """
        kernel = ops.convert_to_tensor(kernel)
        axes = _default_spatial_axes(kernel.shape) if spatial_axes is None else tuple(spatial_axes)
        self.check(kernel.shape, axes)
        seed = _as_seed(seed)
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
class RandomTranslate(Transform):
    """Random translation of a conv kernel's taps with zero fill (the WAS default shift).

    For each spatial axis of size `k`, an offset `s = round(u)`, `u ~ U(-max_shift·k,
    max_shift·k)`, is drawn and `out[i] = in[i - s]` (taps pushed out are dropped,
    the vacated ones are zero). One draw per call, shared by all filters. This is
    torchvision's `RandomAffine(degrees=0, translate=(max_shift, max_shift))` as the
    authors of arXiv:2405.19590 apply it to a `(out, in, k, k)` weight: on a 3×3
    kernel with `max_shift=0.3`, each axis shifts by −1/0/+1 with probability
    ≈ 0.22/0.56/0.22.

    Args:
        max_shift: largest shift as a fraction of the kernel size, in `[0, 1)`.

    Raises:
        ValueError: if `max_shift` is outside `[0, 1)`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import RandomTranslate

    shadow = RandomTranslate(0.3)(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    spatial = True

    def __init__(self, max_shift=0.3):
        self.max_shift = _check_probability("max_shift", max_shift, "RandomTranslate", high_inclusive=False)

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws one integer shift per spatial axis: `{"shifts": int32 tensor (len(spatial_axes),)}`."""
        seed = _as_seed(seed)
        axes = _default_spatial_axes(shape) if spatial_axes is None else spatial_axes
        shifts = []
        for axis in axes:
            bound = self.max_shift * shape[axis]
            u = _uniform((), minval=-bound, maxval=bound, seed=seed)
            shifts.append(ops.cast(ops.round(u), "int32"))
        return {"shifts": ops.stack(shifts)}

    def apply(self, kernel, params, spatial_axes=None):
        """Shifts `kernel` along each spatial axis by `params["shifts"]`, zero fill."""
        axes = _default_spatial_axes(kernel.shape) if spatial_axes is None else spatial_axes
        for n, axis in enumerate(axes):
            k = kernel.shape[axis]
            i = ops.expand_dims(ops.arange(k, dtype="int32"), 1)
            j = ops.expand_dims(ops.arange(k, dtype="int32"), 0)
            matrix = ops.cast(ops.equal(j, i - params["shifts"][n]), kernel.dtype)
            kernel = _along_axis(matrix, kernel, axis)
        return kernel

    def get_config(self):
        return {"max_shift": self.max_shift}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class RandomResizedCrop(Transform):
    """Random crop of the kernel's spatial taps, stretched back to full size (bilinear).

    The authors' second transform, torchvision's `RandomResizedCrop((k, k),
    scale=(0.8, 1.0))` applied to the kernel. For two spatial axes the crop is
    drawn as torchvision does (area fraction `s ~ U(scale)`, log aspect ratio
    `~ U(log ratio)`, `w = round(sqrt(s·A·r))`, `h = round(sqrt(s·A/r))`, first
    of 10 valid attempts, else the whole kernel; offsets uniform), then resized
    back with bilinear interpolation (`align_corners=False`, edge clamp). On a
    3×3 kernel most draws are the identity; the others stretch a 2×3 or 3×2 crop.
    For 1 or 3 spatial axes each axis keeps `round(k·s^(1/n))` taps (no ratio).

    Args:
        scale: `(low, high)` range of the kept area fraction, `0 < low <= high <= 1`.
        ratio: `(low, high)` range of the aspect ratio (2-D kernels), `0 < low <= high`.

    Raises:
        ValueError: for ranges outside those bounds.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import RandomResizedCrop

    shadow = RandomResizedCrop(scale=(0.5, 1.0))(np.ones((5, 5, 2, 4), "float32"), seed=1)
    ```
    """

    spatial = True
    _ATTEMPTS = 10

    def __init__(self, scale=(0.8, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
        scale = tuple(float(v) for v in scale)
        ratio = tuple(float(v) for v in ratio)
        if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(
                "RandomResizedCrop: argument `scale` must be (low, high) with 0 < low <= high <= 1; "
                f"received {scale!r}."
            )
        if len(ratio) != 2 or not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(
                f"RandomResizedCrop: argument `ratio` must be (low, high) with 0 < low <= high; received {ratio!r}."
            )
        self.scale = scale
        self.ratio = ratio

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws the crop: `{"starts": int32 (n,), "lengths": int32 (n,)}` over the spatial axes."""
        seed = _as_seed(seed)
        axes = _default_spatial_axes(shape) if spatial_axes is None else spatial_axes
        sizes = [int(shape[a]) for a in axes]
        if len(axes) == 2:
            h_full, w_full = sizes
            area = float(h_full * w_full)
            s = _uniform((self._ATTEMPTS,), self.scale[0], self.scale[1], seed=seed)
            log_r = _uniform((self._ATTEMPTS,), math.log(self.ratio[0]), math.log(self.ratio[1]), seed=seed)
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
            s = _uniform((), self.scale[0], self.scale[1], seed=seed)
            frac = ops.power(s, 1.0 / len(axes))
            lengths = [ops.clip(ops.cast(ops.round(k * frac), "int32"), 1, k) for k in sizes]
        starts = []
        for k, length in zip(sizes, lengths):
            u = _uniform((), seed=seed)
            room = ops.cast(k - length + 1, "float32")
            starts.append(ops.minimum(ops.cast(ops.floor(u * room), "int32"), k - length))
        return {"starts": ops.stack(starts), "lengths": ops.stack([ops.cast(v, "int32") for v in lengths])}

    def apply(self, kernel, params, spatial_axes=None):
        """Crops `[start, start+length)` on each spatial axis and resizes back bilinearly."""
        axes = _default_spatial_axes(kernel.shape) if spatial_axes is None else spatial_axes
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
            kernel = _along_axis(ops.cast(matrix, kernel.dtype), kernel, axis)
        return kernel

    def get_config(self):
        return {"scale": list(self.scale), "ratio": list(self.ratio)}


_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


@keras.saving.register_keras_serializable(package="keras_wtrain")
class RandomFlip(Transform):
    """Random flip of a conv kernel along its spatial axes.

    `"horizontal"` flips the last spatial axis (width), `"vertical"` the first
    (height), `"horizontal_and_vertical"` each independently; each flip happens
    with probability `probability`. (Present but disabled in the authors' code.)

    Args:
        mode: `"horizontal"`, `"vertical"` or `"horizontal_and_vertical"`.
        probability: probability of each flip, in `[0, 1]`.

    Raises:
        ValueError: for an unknown `mode` or a probability outside `[0, 1]`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import RandomFlip

    shadow = RandomFlip("horizontal")(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    spatial = True

    def __init__(self, mode="horizontal_and_vertical", probability=0.5):
        if mode not in _FLIP_MODES:
            raise ValueError(f"RandomFlip: argument `mode` must be one of {_FLIP_MODES}; received {mode!r}.")
        self.mode = mode
        self.probability = _check_probability("probability", probability, "RandomFlip")

    def _flip_axes(self, spatial_axes):
        axes = []
        if self.mode in ("vertical", "horizontal_and_vertical"):
            axes.append(spatial_axes[0])
        if self.mode in ("horizontal", "horizontal_and_vertical") and spatial_axes[-1] not in axes:
            axes.append(spatial_axes[-1])
        return axes

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws one flip decision per flipped axis: `{"flips": bool (n,)}`."""
        seed = _as_seed(seed)
        axes = self._flip_axes(_default_spatial_axes(shape) if spatial_axes is None else spatial_axes)
        return {"flips": _uniform((len(axes),), seed=seed) < self.probability}

    def apply(self, kernel, params, spatial_axes=None):
        """Flips the kernel along the axes whose decision is True."""
        axes = self._flip_axes(_default_spatial_axes(kernel.shape) if spatial_axes is None else spatial_axes)
        for n, axis in enumerate(axes):
            kernel = ops.where(params["flips"][n], ops.flip(kernel, axis=axis), kernel)
        return kernel

    def get_config(self):
        return {"mode": self.mode, "probability": self.probability}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class RandomRotate90(Transform):
    """Rotation of a conv kernel by a random multiple of 90° in its first two spatial axes.

    `k ~ U{0, 1, 2, 3}` quarter turns (`numpy.rot90(kernel, k, axes)`). Needs at
    least two spatial axes of equal size. (Disabled in the authors' code.)

    Raises:
        ValueError: (at use) if the kernel has fewer than two spatial axes or they differ in size.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import RandomRotate90

    shadow = RandomRotate90()(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    spatial = True

    def check(self, kernel_shape, spatial_axes=None):
        super().check(kernel_shape, spatial_axes)
        axes = _default_spatial_axes(kernel_shape) if spatial_axes is None else tuple(spatial_axes)
        if len(axes) < 2 or kernel_shape[axes[0]] != kernel_shape[axes[1]]:
            raise ValueError(
                "RandomRotate90 needs a kernel with at least two spatial axes of equal size; received kernel "
                f"shape {tuple(kernel_shape)} with spatial axes {axes}."
            )

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws the number of quarter turns: `{"k": int32 scalar in [0, 4)}`."""
        seed = _as_seed(seed)
        u = _uniform((), seed=seed)
        return {"k": ops.minimum(ops.cast(ops.floor(u * 4.0), "int32"), 3)}

    def apply(self, kernel, params, spatial_axes=None):
        """Rotates by `params["k"]` quarter turns."""
        axes = _default_spatial_axes(kernel.shape) if spatial_axes is None else spatial_axes
        plane = (axes[0], axes[1])
        candidates = ops.stack([ops.rot90(kernel, k=k, axes=plane) for k in range(4)])
        return ops.take(candidates, params["k"], axis=0)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class GaussianNoise(Transform):
    """Additive gaussian noise scaled to the kernel's own spread: `SW = PW + stddev·σ(PW)·ε`.

    `ε ~ N(0, 1)` element-wise, `σ(PW)` the standard deviation of all kernel
    entries, treated as a constant for the gradient (so `∂SW/∂PW = I`).

    Args:
        stddev: noise standard deviation relative to `σ(PW)`, `>= 0`.

    Raises:
        ValueError: if `stddev` is negative or not finite.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import GaussianNoise

    shadow = GaussianNoise(0.1)(np.random.rand(8, 4).astype("float32"), seed=1)
    ```
    """

    def __init__(self, stddev=0.1):
        self.stddev = _check_nonnegative("stddev", stddev, "GaussianNoise")

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws `{"noise": N(0, 1) of the kernel's shape}`."""
        seed = _as_seed(seed)
        return {"noise": _normal(tuple(shape), seed=seed)}

    def apply(self, kernel, params, spatial_axes=None):
        """Returns `kernel + stddev · std(kernel) · noise`."""
        spread = ops.stop_gradient(ops.std(ops.cast(kernel, "float32")))
        noise = ops.cast(params["noise"], "float32") * (self.stddev * spread)
        return kernel + ops.cast(noise, kernel.dtype)

    def get_config(self):
        return {"stddev": self.stddev}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class MultiplicativeNoise(Transform):
    """Multiplicative gaussian noise: `SW = PW · (1 + stddev·ε)`, `ε ~ N(0, 1)` element-wise.

    Args:
        stddev: noise standard deviation, `>= 0`.

    Raises:
        ValueError: if `stddev` is negative or not finite.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import MultiplicativeNoise

    shadow = MultiplicativeNoise(0.1)(np.random.rand(8, 4).astype("float32"), seed=1)
    ```
    """

    def __init__(self, stddev=0.1):
        self.stddev = _check_nonnegative("stddev", stddev, "MultiplicativeNoise")

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws `{"noise": N(0, 1) of the kernel's shape}`."""
        seed = _as_seed(seed)
        return {"noise": _normal(tuple(shape), seed=seed)}

    def apply(self, kernel, params, spatial_axes=None):
        """Returns `kernel · (1 + stddev · noise)`."""
        return kernel * ops.cast(1.0 + self.stddev * params["noise"], kernel.dtype)

    def get_config(self):
        return {"stddev": self.stddev}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class DropConnect(Transform):
    """DropConnect-style mask: each kernel entry is zeroed with probability `rate`.

    `SW = PW · m / (1 - rate)` (or `PW · m` with `rescale=False`), `m_ij ~
    Bernoulli(1 - rate)`. In desire mode (DOM) the mask is fixed, so the kernel
    really has about `rate` of its entries at exactly zero.

    Args:
        rate: drop probability, in `[0, 1)`.
        rescale: divide by `1 - rate` so that `E[SW] = PW` (the AOM kernel).

    Raises:
        ValueError: if `rate` is outside `[0, 1)`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import DropConnect

    shadow = DropConnect(0.5)(np.ones((8, 4), "float32"), seed=1)
    ```
    """

    def __init__(self, rate=0.5, rescale=True):
        self.rate = _check_probability("rate", rate, "DropConnect", high_inclusive=False)
        if not isinstance(rescale, bool):
            raise TypeError(f"DropConnect: argument `rescale` must be a bool; received {rescale!r}.")
        self.rescale = rescale

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws `{"keep": bool mask of the kernel's shape}` (True with probability 1 - rate)."""
        seed = _as_seed(seed)
        return {"keep": _uniform(tuple(shape), seed=seed) >= self.rate}

    def apply(self, kernel, params, spatial_axes=None):
        """Zeroes the dropped entries (and rescales the kept ones if `rescale`)."""
        scale = 1.0 / (1.0 - self.rate) if self.rescale else 1.0
        return ops.where(params["keep"], kernel * ops.cast(scale, kernel.dtype), ops.zeros_like(kernel))

    def get_config(self):
        return {"rate": self.rate, "rescale": self.rescale}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class Compose(Transform):
    """Applies several transforms in order: `T_n(...T_2(T_1(PW)))`, each with its own draws.

    Args:
        transforms: a list of transforms (objects, names, configs or callables; see `get`).

    Raises:
        ValueError: if `transforms` is empty or holds an unknown transform.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import Compose

    t = Compose(["random_translate", "multiplicative_noise"])
    shadow = t(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    def __init__(self, transforms):
        if isinstance(transforms, (str, dict, Transform)) or callable(transforms):
            transforms = [transforms]
        transforms = [get(t) for t in transforms]
        if not transforms:
            raise ValueError("Compose: argument `transforms` must hold at least one transform; received [].")
        self.transforms = transforms
        self.spatial = any(t.spatial for t in transforms)

    def check(self, kernel_shape, spatial_axes=None):
        for t in self.transforms:
            t.check(kernel_shape, spatial_axes)

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws each member's parameters in order: `{"members": [params, ...]}`."""
        seed = _as_seed(seed)
        return {"members": [t.sample(shape, seed, spatial_axes) for t in self.transforms]}

    def apply(self, kernel, params, spatial_axes=None):
        """Applies each member with its drawn parameters."""
        for t, p in zip(self.transforms, params["members"]):
            kernel = t.apply(kernel, p, spatial_axes)
        return kernel

    def __call__(self, kernel, seed=None, spatial_axes=None):
        kernel = ops.convert_to_tensor(kernel)
        axes = _default_spatial_axes(kernel.shape) if spatial_axes is None else tuple(spatial_axes)
        self.check(kernel.shape, axes)
        seed = _as_seed(seed)
        for t in self.transforms:
            kernel = t(kernel, seed, axes)
        return kernel

    def get_config(self):
        return {"transforms": [keras.saving.serialize_keras_object(t) for t in self.transforms]}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class RandomChoice(Transform):
    """Applies one transform chosen at random per call (the authors' 50/50 shift or crop).

    Every member is evaluated and one result is selected (`ops.take`), so it
    stays a single traced graph under `jit_compile` and in JAX; the kernels are
    small, so the extra work is minor.

    Args:
        transforms: a list of transforms (objects, names, configs or callables).
        probabilities: optional list of selection probabilities (default uniform).

    Raises:
        ValueError: if `transforms` is empty or `probabilities` do not match it,
            are negative or do not sum to a positive number.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.transforms import RandomChoice

    t = RandomChoice(["random_translate", "random_resized_crop"])  # the authors' ResNet setting
    shadow = t(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    def __init__(self, transforms, probabilities=None):
        transforms = [get(t) for t in transforms]
        if not transforms:
            raise ValueError("RandomChoice: argument `transforms` must hold at least one transform; received [].")
        if probabilities is None:
            probabilities = [1.0 / len(transforms)] * len(transforms)
        probabilities = [float(p) for p in probabilities]
        if len(probabilities) != len(transforms) or min(probabilities) < 0 or sum(probabilities) <= 0:
            raise ValueError(
                "RandomChoice: argument `probabilities` must hold one non-negative number per transform with a "
                f"positive sum; received {probabilities!r} for {len(transforms)} transforms."
            )
        total = sum(probabilities)
        self.transforms = transforms
        self.probabilities = [p / total for p in probabilities]
        self.spatial = any(t.spatial for t in transforms)

    def check(self, kernel_shape, spatial_axes=None):
        for t in self.transforms:
            t.check(kernel_shape, spatial_axes)

    def _index(self, seed):
        u = _uniform((), seed=seed)
        edges = ops.convert_to_tensor([sum(self.probabilities[: i + 1]) for i in range(len(self.probabilities) - 1)])
        return ops.sum(ops.cast(u >= edges, "int32"))

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws `{"index": chosen member, "members": [params, ...]}`."""
        seed = _as_seed(seed)
        index = self._index(seed)
        return {"index": index, "members": [t.sample(shape, seed, spatial_axes) for t in self.transforms]}

    def apply(self, kernel, params, spatial_axes=None):
        """Returns the chosen member's result."""
        results = [t.apply(kernel, p, spatial_axes) for t, p in zip(self.transforms, params["members"])]
        return ops.take(ops.stack(results), params["index"], axis=0)

    def __call__(self, kernel, seed=None, spatial_axes=None):
        kernel = ops.convert_to_tensor(kernel)
        axes = _default_spatial_axes(kernel.shape) if spatial_axes is None else tuple(spatial_axes)
        self.check(kernel.shape, axes)
        seed = _as_seed(seed)
        index = self._index(seed)
        results = [t(kernel, seed, axes) for t in self.transforms]
        return ops.take(ops.stack(results), index, axis=0)

    def get_config(self):
        return {
            "transforms": [keras.saving.serialize_keras_object(t) for t in self.transforms],
            "probabilities": list(self.probabilities),
        }


@keras.saving.register_keras_serializable(package="keras_wtrain")
class FunctionTransform(Transform):
    """Wraps a user callable `fn(kernel, seed) -> kernel` as a transform.

    `seed` is a `keras.random.SeedGenerator`: pass it to `keras.random.*` as
    `seed=` so the function works under `jit_compile` and in JAX. The function
    must return a tensor of the kernel's shape and be differentiable if the
    gradient is to reach the plain weights. To save a model in the `.keras`
    format, register the function with `keras.saving.register_keras_serializable`
    (lambdas only load with `safe_mode=False`).

    Args:
        fn: the callable.
        spatial: whether `fn` needs spatial kernel axes (checked at build).

    Raises:
        TypeError: if `fn` is not callable.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers.transforms import FunctionTransform

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
        self.spatial = bool(spatial)

    def __call__(self, kernel, seed=None, spatial_axes=None):
        kernel = ops.convert_to_tensor(kernel)
        self.check(kernel.shape, spatial_axes)
        seed = _as_seed(seed)
        out = self.fn(kernel, seed)
        if tuple(out.shape) != tuple(kernel.shape):
            raise ValueError(
                f"FunctionTransform: {self.fn!r} returned shape {tuple(out.shape)}; it must keep the kernel "
                f"shape {tuple(kernel.shape)}."
            )
        return out

    def get_config(self):
        return {"fn": keras.saving.serialize_keras_object(self.fn), "spatial": self.spatial}


_NAMES = {
    "random_translate": RandomTranslate,
    "translate": RandomTranslate,
    "shift": RandomTranslate,
    "random_resized_crop": RandomResizedCrop,
    "random_scale": RandomResizedCrop,
    "crop": RandomResizedCrop,
    "random_flip": RandomFlip,
    "flip": RandomFlip,
    "random_rotate90": RandomRotate90,
    "rotate90": RandomRotate90,
    "gaussian_noise": GaussianNoise,
    "multiplicative_noise": MultiplicativeNoise,
    "dropconnect": DropConnect,
    "drop_connect": DropConnect,
}


def get(identifier):
    """Returns a transform from an object, a name, a config dict or a callable.

    Args:
        identifier: a `Transform`; a name (`"random_translate"`/`"shift"`,
            `"random_resized_crop"`/`"random_scale"`, `"random_flip"`,
            `"random_rotate90"`, `"gaussian_noise"`, `"multiplicative_noise"`,
            `"dropconnect"`), giving that transform with its defaults; a dict
            from `keras.saving.serialize_keras_object`; or a callable
            `f(kernel, seed) -> kernel` (wrapped in `FunctionTransform`).

    Returns:
        A `Transform`.

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything else.

    Example:

    ```python
    import keras
    from keras_wtrain.layers import transforms

    t = transforms.get("random_translate")
    same = transforms.get(keras.saving.serialize_keras_object(t))
    ```
    """
    if isinstance(identifier, Transform):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _NAMES:
            raise ValueError(
                f"argument `transform`: unknown transform name {identifier!r}; known names: {sorted(_NAMES)}."
            )
        return _NAMES[key]()
    if isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
        if not isinstance(obj, Transform):
            raise TypeError(f"argument `transform`: config {identifier!r} does not describe a transform.")
        return obj
    if callable(identifier) and not isinstance(identifier, type):
        return FunctionTransform(identifier)
    raise TypeError(
        "argument `transform` must be a Transform, a transform name, a config dict or a callable "
        f"f(kernel, seed) -> kernel; received {identifier!r} of type {type(identifier).__name__}."
    )
