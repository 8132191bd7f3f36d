"""Functions acting on every `ShadowWeights` layer of a model: list, switch mode, wrap, count DOM savings."""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core import layer_kinds
from keras_wtrain._core._keras_private import sublayers
from keras_wtrain._core.validation import check_choice
from keras_wtrain.shadow_weights import transforms as transforms_lib
from keras_wtrain.shadow_weights.wrapper import MODES
from keras_wtrain.shadow_weights.wrapper import ShadowWeights

__all__ = [
    "authors_wrap",
    "desire_sparsity",
    "inference_kernels_in_training",
    "set_weight_mode",
    "shadow_weight_layers",
]


def shadow_weight_layers(model):
    """Lists the `ShadowWeights` layers of `model` (or a layer), nested models included.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of `ShadowWeights` layers.

    Example:

    ```python
    from keras_wtrain.comparison.models import build_model
    from keras_wtrain.shadow_weights import authors_wrap, shadow_weight_layers

    assert len(shadow_weight_layers(build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap))) == 2
    ```
    """
    layers = sublayers(model, include_self=True)
    return [layer for layer in layers if isinstance(layer, ShadowWeights)]


@contextlib.contextmanager
def inference_kernels_in_training(model):
    """Context in which training-mode calls of every `ShadowWeights` in `model` use the inference kernels.

    For re-estimating batch-norm statistics with the kernels of inference (PW or the DOM kernel);
    `update_batchnorm_statistics` enters it. Eager calls only.

    Args:
        model: a Keras model or layer.

    Yields:
        The list of `ShadowWeights` layers switched (restored on exit).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.comparison.models import build_model
    from keras_wtrain.shadow_weights import authors_wrap, inference_kernels_in_training

    model = build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap)
    x = np.random.rand(2, 28, 28, 1).astype("float32")
    with inference_kernels_in_training(model):
        np.testing.assert_allclose(model(x, training=True), model(x, training=False), atol=1e-5)
    ```
    """
    layers = shadow_weight_layers(model)
    previous = [layer._inference_kernels_in_training for layer in layers]
    for layer in layers:
        layer._inference_kernels_in_training = True
    try:
        yield layers
    finally:
        for layer, value in zip(layers, previous):
            layer._inference_kernels_in_training = value


def set_weight_mode(model, mode):
    """Sets the inference mode of every `ShadowWeights` layer in `model`, nested ones included.

    Drops the compiled predict/evaluate functions so they retrace with the new mode. Training is unaffected.

    Args:
        model: a Keras model or layer.
        mode: `"accuracy"` (AOM, plain weights) or `"desire"` (DOM).

    Returns:
        The number of `ShadowWeights` layers set.

    Raises:
        ValueError: for an unknown mode.

    Example:

    ```python
    from keras_wtrain.comparison.models import build_model
    from keras_wtrain.shadow_weights import authors_wrap, set_weight_mode

    assert set_weight_mode(build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap), "desire") == 2
    ```
    """
    check_choice("mode", mode, MODES, owner="set_weight_mode")
    count = 0
    for layer in sublayers(model, include_self=True):
        if isinstance(layer, ShadowWeights):
            layer.mode = mode
            count += 1
        if isinstance(layer, keras.Model):
            for attribute in ("predict_function", "test_function"):
                if getattr(layer, attribute, None) is not None:
                    setattr(layer, attribute, None)
    return count


def authors_wrap(layer, transform=None, min_kernel_size=3, seed=None, probability=1.0):
    """Wraps a layer the way the WAS authors do; a `wrap=` function for `keras_wtrain.comparison.models.build_model`.

    `Conv1D/2D/3D` and `DepthwiseConv1D/2D` with every kernel size ≥ `min_kernel_size` get `ShadowWeights`
    with the crop-and-stretch `RandomResizedCrop()` (chosen by an ablation; see the technique page); other
    layers, Dense included, are returned unchanged.

    Args:
        layer: a Keras layer.
        transform: the transform (default `RandomResizedCrop()`).
        min_kernel_size: smallest spatial kernel size that is augmented.
        seed: int seed of the wrapper (None: random).
        probability: probability that a training step uses the shadow weights.

    Returns:
        `ShadowWeights(layer, ...)` or `layer` itself.

    Example:

    ```python
    import keras
    from keras_wtrain.shadow_weights import ShadowWeights, authors_wrap

    assert isinstance(authors_wrap(keras.layers.Conv2D(8, 3)), ShadowWeights)
    ```
    """
    if not layer_kinds.is_augmentable_convolution(layer, min_kernel_size):
        return layer
    if transform is None:
        transform = transforms_lib.RandomResizedCrop()
    return ShadowWeights(layer, transform=transform, seed=seed, probability=probability)


def desire_sparsity(model):
    """Counts the non-zero weights and multiply-adds per example of every built `ShadowWeights` layer in DOM.

    Layers in AOM are counted with the kernel DOM would use. Formulas: see the technique page.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of dicts, one per layer: `name`, `entries`, `nonzero_plain`, `nonzero_desire`, `macs_plain`,
        `macs_desire` (non-zeros), `macs_desire_executed` (what runs) and `desire_kernel_shape`.

    Example:

    ```python
    import keras
    from keras_wtrain.shadow_weights import ShadowWeights, desire_sparsity

    model = keras.Sequential([keras.Input((8, 8, 4)), ShadowWeights(keras.layers.Conv2D(16, 3, padding="same"))])
    assert desire_sparsity(model)[0]["desire_kernel_shape"] == (2, 2, 4, 16)  # runs as a 2x2 convolution
    ```
    """
    rows = []
    for layer in shadow_weight_layers(model):
        if not layer.built:
            continue
        plain = np.asarray(ops.convert_to_numpy(layer.plain_kernel()))
        if layer.desire_kernel is not None and layer.mode == "desire":
            shadow = np.asarray(ops.convert_to_numpy(layer.desire_kernel.value))
        elif layer.desire_fixed is not None:
            shadow = np.asarray(ops.convert_to_numpy(layer.desire_kernel_value()))
        else:
            shadow = np.asarray(ops.convert_to_numpy(layer.shadow_kernel(layer.desire_seed or 0)))
        output_shape = layer.compute_output_shape(layer.wrapped_input_shape)
        channels_first = getattr(layer.target_layer, "data_format", "channels_last") == "channels_first"
        positions_shape = output_shape[2:] if channels_first else output_shape[1:-1]
        positions = int(np.prod([d for d in positions_shape if d is not None])) if positions_shape else 1
        reduced = layer.desire_plan(layer.wrapped_input_shape)
        executed_shape = tuple(plain.shape)
        if reduced is not None:
            executed_shape = reduced.kernel_size + executed_shape[len(reduced.kernel_size) :]
        rows.append(
            {
                "name": layer.name,
                "entries": int(plain.size),
                "nonzero_plain": int(np.count_nonzero(plain)),
                "nonzero_desire": int(np.count_nonzero(shadow)),
                "macs_plain": int(plain.size) * positions,
                "macs_desire": int(np.count_nonzero(shadow)) * positions,
                "macs_desire_executed": int(np.prod(executed_shape)) * positions,
                "desire_kernel_shape": executed_shape,
            }
        )
    return rows
