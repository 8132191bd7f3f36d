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
`apply(kernel, sample(...))`. Seeds and draws come from `keras_wtrain.rng`: an
integer seed gives the same draws as a fresh `keras.random.SeedGenerator(seed)`.

The package's modules: `base` (`Transform`, `FunctionTransform`), `spatial`,
`noise`, `combinators` (`Compose`, `RandomChoice`), `fixed` (`FixedShift`,
`FixedMask`: the deterministic transforms of the desire-oriented mode, and the
padding arithmetic of the smaller convolution they run as) and `registry`
(`get`); every name is importable from `keras_wtrain.layers.transforms`.

Example:

```python
import numpy as np
from keras_wtrain.layers import transforms

t = transforms.get("random_translate")  # the authors' shift, max_shift=0.3
shadow = t(np.ones((3, 3, 2, 4), "float32"), seed=0)
```
"""

from keras_wtrain.layers.transforms.base import FunctionTransform
from keras_wtrain.layers.transforms.base import Transform
from keras_wtrain.layers.transforms.combinators import Compose
from keras_wtrain.layers.transforms.combinators import RandomChoice
from keras_wtrain.layers.transforms.fixed import FixedMask
from keras_wtrain.layers.transforms.fixed import FixedShift
from keras_wtrain.layers.transforms.fixed import FixedTransform
from keras_wtrain.layers.transforms.noise import DropConnect
from keras_wtrain.layers.transforms.noise import GaussianNoise
from keras_wtrain.layers.transforms.noise import MultiplicativeNoise
from keras_wtrain.layers.transforms.registry import get
from keras_wtrain.layers.transforms.spatial import RandomFlip
from keras_wtrain.layers.transforms.spatial import RandomResizedCrop
from keras_wtrain.layers.transforms.spatial import RandomRotate90
from keras_wtrain.layers.transforms.spatial import RandomTranslate

__all__ = [
    "Compose",
    "DropConnect",
    "FixedMask",
    "FixedShift",
    "FixedTransform",
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
