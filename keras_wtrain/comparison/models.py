"""Small reference models used by the examples, benchmarks and `keras-wtrain compare`."""

import functools

import keras

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.comparison.settings import MODEL_KINDS

__all__ = ["MODEL_KINDS", "build_model"]


def _identity(layer):
    return layer


def build_model(kind, input_shape, num_classes, wrap=None, name=None):
    """Builds one of the reference classifiers (logits output).

    Args:
        kind: `"cnn"` (two conv blocks + dense head), `"mlp"` (two 512-unit layers), or `"resnet-small"`
            (three stages of residual blocks with batch normalization).
        input_shape: shape of one example, e.g. `(28, 28, 1)`.
        num_classes: number of output logits.
        wrap: optional `f(layer) -> layer` applied to every Dense and Conv2D layer (e.g. `WeightNormalization`).
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` returning logits.

    Raises:
        ValueError: for an unknown `kind`.

    Example:

    ```python
    from keras_wtrain.comparison.models import build_model

    model = build_model("cnn", (28, 28, 1), 10)
    ```
    """
    wrap = wrap or _identity
    inputs = keras.Input(input_shape)
    if kind == "mlp":
        x = keras.layers.Flatten()(inputs)
        x = wrap(keras.layers.Dense(512, activation="relu"))(x)
        x = wrap(keras.layers.Dense(512, activation="relu"))(x)
        outputs = wrap(keras.layers.Dense(num_classes))(x)
    elif kind == "cnn":
        x = wrap(keras.layers.Conv2D(32, 3, padding="same", activation="relu"))(inputs)
        x = keras.layers.MaxPooling2D()(x)
        x = wrap(keras.layers.Conv2D(64, 3, padding="same", activation="relu"))(x)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Flatten()(x)
        x = wrap(keras.layers.Dense(128, activation="relu"))(x)
        outputs = wrap(keras.layers.Dense(num_classes))(x)
    elif kind == "resnet-small":
        # Momentum 0.9, not Keras' 0.99: the runs here are a few hundred steps, and a moving average over the
        # last ~100 steps still holds the statistics of much earlier weights (inference accuracy near chance).
        batch_norm = functools.partial(keras.layers.BatchNormalization, momentum=0.9)
        x = wrap(keras.layers.Conv2D(16, 3, padding="same", use_bias=False))(inputs)
        x = batch_norm()(x)
        x = keras.layers.Activation("relu")(x)
        for stage, filters in enumerate((16, 32, 64)):
            strides = 1 if stage == 0 else 2
            shortcut = x
            y = wrap(keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False))(x)
            y = batch_norm()(y)
            y = keras.layers.Activation("relu")(y)
            y = wrap(keras.layers.Conv2D(filters, 3, padding="same", use_bias=False))(y)
            y = batch_norm()(y)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False)(shortcut)
                shortcut = batch_norm()(shortcut)
            x = keras.layers.Activation("relu")(keras.layers.Add()([y, shortcut]))
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = wrap(keras.layers.Dense(num_classes))(x)
    else:
        raise ValueError(f"argument `kind` must be one of {', '.join(MODEL_KINDS)}; received {kind!r}.")
    return keras.Model(inputs, outputs, name=name or kind.replace("-", "_"))
