"""Weight-space transforms for every kernel, Dense included: additive and multiplicative noise, DropConnect."""

import keras
from keras import ops

from keras_wtrain._core.rng import as_seed
from keras_wtrain._core.rng import normal
from keras_wtrain._core.rng import uniform
from keras_wtrain._core.validation import check_bool
from keras_wtrain._core.validation import check_nonnegative
from keras_wtrain._core.validation import check_probability
from keras_wtrain.shadow_weights.transforms.base import Transform

__all__ = ["DropConnect", "GaussianNoise", "MultiplicativeNoise"]


@keras.saving.register_keras_serializable(package="keras_wtrain")
class GaussianNoise(Transform):
    """Additive noise scaled to the kernel's spread: `SW = PW + stddev·σ(PW)·ε`, `σ` held constant for the gradient.

    Cost (as every transform here): a few element-wise ops on the kernel per call.

    Args:
        stddev: noise standard deviation relative to `σ(PW)`, `>= 0`.

    Raises:
        ValueError: if `stddev` is negative or not finite.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import GaussianNoise

    shadow = GaussianNoise(0.1)(np.random.rand(8, 4).astype("float32"), seed=1)
    ```
    """

    def __init__(self, stddev=0.1):
        self.stddev = check_nonnegative("stddev", stddev, owner="GaussianNoise")

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws `{"noise": N(0, 1) of the kernel's shape}`."""
        seed = as_seed(seed)
        return {"noise": normal(tuple(shape), seed=seed)}

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
    from keras_wtrain.shadow_weights.transforms import MultiplicativeNoise

    shadow = MultiplicativeNoise(0.1)(np.random.rand(8, 4).astype("float32"), seed=1)
    ```
    """

    def __init__(self, stddev=0.1):
        self.stddev = check_nonnegative("stddev", stddev, owner="MultiplicativeNoise")

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws `{"noise": N(0, 1) of the kernel's shape}`."""
        seed = as_seed(seed)
        return {"noise": normal(tuple(shape), seed=seed)}

    def apply(self, kernel, params, spatial_axes=None):
        """Returns `kernel · (1 + stddev · noise)`."""
        return kernel * ops.cast(1.0 + self.stddev * params["noise"], kernel.dtype)

    def get_config(self):
        return {"stddev": self.stddev}


@keras.saving.register_keras_serializable(package="keras_wtrain")
class DropConnect(Transform):
    """DropConnect mask: `SW = PW · m / (1 - rate)`, `m ~ Bernoulli(1 - rate)` element-wise.

    Args:
        rate: drop probability, in `[0, 1)`.
        rescale: divide by `1 - rate` so that `E[SW] = PW`.

    Raises:
        ValueError: if `rate` is outside `[0, 1)`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.shadow_weights.transforms import DropConnect

    shadow = DropConnect(0.5)(np.ones((8, 4), "float32"), seed=1)
    ```
    """

    def __init__(self, rate=0.5, rescale=True):
        self.rate = check_probability("rate", rate, high_inclusive=False, owner="DropConnect")
        self.rescale = check_bool("rescale", rescale, owner="DropConnect")

    def sample(self, shape, seed=None, spatial_axes=None):
        """Draws `{"keep": bool mask of the kernel's shape}` (True with probability 1 - rate)."""
        seed = as_seed(seed)
        return {"keep": uniform(tuple(shape), seed=seed) >= self.rate}

    def apply(self, kernel, params, spatial_axes=None):
        """Zeroes the dropped entries (and rescales the kept ones if `rescale`)."""
        scale = 1.0 / (1.0 - self.rate) if self.rescale else 1.0
        return ops.where(params["keep"], kernel * ops.cast(scale, kernel.dtype), ops.zeros_like(kernel))

    def get_config(self):
        return {"rate": self.rate, "rescale": self.rescale}
