"""`get`: a transform from an object, a name, a config dict or a callable."""

import keras

from keras_wtrain.shadow_weights.transforms.base import FunctionTransform
from keras_wtrain.shadow_weights.transforms.base import Transform
from keras_wtrain.shadow_weights.transforms.fixed import FixedShift
from keras_wtrain.shadow_weights.transforms.noise import DropConnect
from keras_wtrain.shadow_weights.transforms.noise import GaussianNoise
from keras_wtrain.shadow_weights.transforms.noise import MultiplicativeNoise
from keras_wtrain.shadow_weights.transforms.spatial import RandomFlip
from keras_wtrain.shadow_weights.transforms.spatial import RandomResizedCrop
from keras_wtrain.shadow_weights.transforms.spatial import RandomRotate90
from keras_wtrain.shadow_weights.transforms.spatial import RandomTranslate

__all__ = ["get"]

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
    "fixed_shift": FixedShift,
}


def get(identifier):
    """Returns a transform from an object, a name, a config dict or a callable.

    Args:
        identifier: a `Transform`; a name (`"random_translate"`/`"shift"`, `"random_resized_crop"`/`"crop"`,
            `"random_flip"`, `"random_rotate90"`, `"gaussian_noise"`, `"multiplicative_noise"`,
            `"dropconnect"`, `"fixed_shift"`) with defaults; a config dict; or a callable `f(kernel, seed)`.

    Returns:
        A `Transform`.

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything else.

    Example:

    ```python
    import keras
    from keras_wtrain.shadow_weights import transforms

    same = transforms.get(keras.saving.serialize_keras_object(transforms.get("shift")))
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
