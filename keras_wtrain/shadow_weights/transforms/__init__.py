"""Random weight transforms `T(kernel, seed) -> kernel` for shadow-weight augmentation (WAS, arXiv:2405.19590).

Spatial (`spatial`), weight-space (`noise`), combinators, fixed DOM transforms (`fixed`), `get`; all
differentiable, seeded by `keras.random.SeedGenerator` and serialisable. Every name is importable from here.
"""

from keras_wtrain.shadow_weights.transforms.base import FunctionTransform
from keras_wtrain.shadow_weights.transforms.base import Transform
from keras_wtrain.shadow_weights.transforms.combinators import Compose
from keras_wtrain.shadow_weights.transforms.combinators import RandomChoice
from keras_wtrain.shadow_weights.transforms.fixed import FixedMask
from keras_wtrain.shadow_weights.transforms.fixed import FixedShift
from keras_wtrain.shadow_weights.transforms.fixed import FixedTransform
from keras_wtrain.shadow_weights.transforms.noise import DropConnect
from keras_wtrain.shadow_weights.transforms.noise import GaussianNoise
from keras_wtrain.shadow_weights.transforms.noise import MultiplicativeNoise
from keras_wtrain.shadow_weights.transforms.registry import get
from keras_wtrain.shadow_weights.transforms.spatial import RandomFlip
from keras_wtrain.shadow_weights.transforms.spatial import RandomResizedCrop
from keras_wtrain.shadow_weights.transforms.spatial import RandomRotate90
from keras_wtrain.shadow_weights.transforms.spatial import RandomTranslate

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
