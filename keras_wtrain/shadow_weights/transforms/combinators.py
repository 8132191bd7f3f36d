"""Combinators of transforms: `Compose` (in order) and `RandomChoice` (one per call)."""

import keras
import numpy as np
from keras import ops

from keras_wtrain._core.rng import as_seed
from keras_wtrain._core.rng import uniform
from keras_wtrain._core.validation import is_real
from keras_wtrain.shadow_weights.transforms.base import Transform
from keras_wtrain.shadow_weights.transforms.base import default_spatial_axes
from keras_wtrain.shadow_weights.transforms.registry import get

__all__ = ["Compose", "RandomChoice"]


def _transform_list(owner, transforms):
    """The members of `owner`, each through `get`; a TypeError naming `transforms` unless a list or tuple."""
    if not isinstance(transforms, (list, tuple)):
        raise TypeError(
            f"{owner}: argument `transforms` must be a list or tuple of transforms (objects, names, configs or "
            f"callables); received {transforms!r}."
        )
    return [get(t) for t in transforms]


@keras.saving.register_keras_serializable(package="keras_wtrain")
class Compose(Transform):
    """Applies several transforms in order, `T_n(...T_1(PW))`, each with its own draws. Cost: the sum of its members'.

    Args:
        transforms: a list of transforms (objects, names, configs or callables; see `get`).

    Raises:
        TypeError: if `transforms` is not a transform, a list or a tuple.
        ValueError: if `transforms` is empty or holds an unknown transform.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import Compose

    shadow = Compose(["random_translate", "multiplicative_noise"])(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    def __init__(self, transforms):
        if isinstance(transforms, (str, dict, Transform)) or callable(transforms):
            transforms = [transforms]
        transforms = _transform_list("Compose", transforms)
        if not transforms:
            raise ValueError("Compose: argument `transforms` must hold at least one transform; received [].")
        self.transforms = transforms
        self.spatial = any(t.spatial for t in transforms)

    def check(self, kernel_shape, spatial_axes=None):
        for t in self.transforms:
            t.check(kernel_shape, spatial_axes)

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws each member's parameters in order: `{"members": [params, ...]}`."""
        seed = as_seed(seed)
        return {"members": [t.sample(shape, seed, spatial_axes) for t in self.transforms]}

    def apply(self, kernel, params, spatial_axes=None):
        """Applies each member with its drawn parameters."""
        for t, p in zip(self.transforms, params["members"]):
            kernel = t.apply(kernel, p, spatial_axes)
        return kernel

    def __call__(self, kernel, seed=None, spatial_axes=None):
        kernel = ops.convert_to_tensor(kernel)
        axes = default_spatial_axes(kernel.shape) if spatial_axes is None else tuple(spatial_axes)
        self.check(kernel.shape, axes)
        seed = as_seed(seed)
        for t in self.transforms:
            kernel = t(kernel, seed, axes)
        return kernel

    def get_config(self):
        return {"transforms": [keras.saving.serialize_keras_object(t) for t in self.transforms]}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class RandomChoice(Transform):
    """Applies one transform chosen at random per call (the authors' 50/50 shift or crop).

    Cost: evaluates every member and selects one (one traced graph under `jit_compile` and JAX).

    Args:
        transforms: a list of transforms (objects, names, configs or callables).
        probabilities: optional selection probabilities, one per transform (default uniform).

    Raises:
        TypeError: if `transforms` is not a list or tuple, or `probabilities` not a list of real numbers.
        ValueError: if `transforms` is empty, or `probabilities` mismatch it, are negative or sum to 0.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import RandomChoice

    shadow = RandomChoice(["random_translate", "random_resized_crop"])(np.ones((3, 3, 2, 4), "float32"), seed=1)
    ```
    """

    def __init__(self, transforms, probabilities=None):
        transforms = _transform_list("RandomChoice", transforms)
        if not transforms:
            raise ValueError("RandomChoice: argument `transforms` must hold at least one transform; received [].")
        if probabilities is None:
            probabilities = [1.0 / len(transforms)] * len(transforms)
        if not (isinstance(probabilities, (list, tuple, np.ndarray)) and all(is_real(p) for p in probabilities)):
            raise TypeError(
                "RandomChoice: argument `probabilities` must be a list of real numbers, one per transform; "
                f"received {probabilities!r}."
            )
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
        u = uniform((), seed=seed)
        edges = ops.convert_to_tensor([sum(self.probabilities[: i + 1]) for i in range(len(self.probabilities) - 1)])
        return ops.sum(ops.cast(u >= edges, "int32"))

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws `{"index": chosen member, "members": [params, ...]}`."""
        seed = as_seed(seed)
        index = self._index(seed)
        return {"index": index, "members": [t.sample(shape, seed, spatial_axes) for t in self.transforms]}

    def apply(self, kernel, params, spatial_axes=None):
        """Returns the chosen member's result."""
        results = [t.apply(kernel, p, spatial_axes) for t, p in zip(self.transforms, params["members"])]
        return ops.take(ops.stack(results), params["index"], axis=0)

    def __call__(self, kernel, seed=None, spatial_axes=None):
        kernel = ops.convert_to_tensor(kernel)
        axes = default_spatial_axes(kernel.shape) if spatial_axes is None else tuple(spatial_axes)
        self.check(kernel.shape, axes)
        seed = as_seed(seed)
        index = self._index(seed)
        results = [t(kernel, seed, axes) for t in self.transforms]
        return ops.take(ops.stack(results), index, axis=0)

    def get_config(self):
        return {
            "transforms": [keras.saving.serialize_keras_object(t) for t in self.transforms],
            "probabilities": list(self.probabilities),
        }
