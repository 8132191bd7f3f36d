"""Functions acting on every `ShadowWeights` layer of a model: list, switch mode, wrap, count DOM savings."""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core import layer_kinds
from keras_wtrain._core._keras_private import sublayers
from keras_wtrain._core.batchnorm import batchnorm_layers
from keras_wtrain._core.batchnorm import update_batchnorm_statistics
from keras_wtrain._core.validation import check_bool
from keras_wtrain._core.validation import check_choice
from keras_wtrain._core.validation import check_int
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


def set_weight_mode(model, mode, data=None, batch_size=128, max_examples=None, reestimate_batchnorm=None):
    """Sets the inference mode of every `ShadowWeights` layer in `model`, nested ones included.

    Drops the compiled predict/evaluate functions so they retrace with the new mode. Training is unaffected.
    With `data`, then re-estimates the moving statistics of every `BatchNormalization` layer on it with the
    chosen mode's inference kernels (PW in AOM, the DOM kernel in DOM; `update_batchnorm_statistics`, one
    forward pass). The statistics are shared by both modes: they serve the mode last re-estimated for, so
    switch back with `set_weight_mode(model, "accuracy", data)` (or restore saved statistics) before serving
    AOM again. Without `data` the statistics are left as they are.

    Args:
        model: a Keras model or layer.
        mode: `"accuracy"` (AOM, plain weights) or `"desire"` (DOM).
        data: optional `x` or `(x, y)` arrays, a `tf.data.Dataset` or an iterable of batches (the training
            data, or data like it) to re-estimate the batch-norm statistics on; targets are ignored.
        batch_size: batch size when `data` holds arrays; a positive int.
        max_examples: optional cap on the examples used for re-estimation (a positive int or None).
        reestimate_batchnorm: whether to re-estimate the batch-norm statistics; None (default) means "when
            `data` is given". True without `data` on a model with batch normalization is an error.

    Returns:
        The number of `ShadowWeights` layers set.

    Raises:
        ValueError: for an unknown mode; for `mode="desire"` on a model without a `ShadowWeights` layer that
            has a fixed DOM kernel (argument `mode`); for `reestimate_batchnorm=True` without `data` on a model
            with batch normalization (argument `data`); for `reestimate_batchnorm=False` with `data`.
        TypeError: if `reestimate_batchnorm` is not a bool or None, or `batch_size`/`max_examples` not an int.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.comparison.models import build_model
    from keras_wtrain.shadow_weights import authors_wrap, set_weight_mode

    model = build_model("resnet-small", (28, 28, 1), 10, wrap=authors_wrap)
    x = np.random.rand(64, 28, 28, 1).astype("float32")
    model(x[:1])  # builds the layers
    assert set_weight_mode(model, "desire", data=x, batch_size=32) == 7  # DOM, BN statistics for DOM
    set_weight_mode(model, "accuracy", data=x, batch_size=32)  # back to AOM, BN statistics for AOM
    ```
    """
    check_choice("mode", mode, MODES, owner="set_weight_mode")
    if reestimate_batchnorm is not None:
        check_bool("reestimate_batchnorm", reestimate_batchnorm, owner="set_weight_mode")
    check_int("batch_size", batch_size, minimum=1, owner="set_weight_mode")
    check_int("max_examples", max_examples, minimum=1, allow_none=True, owner="set_weight_mode")
    if reestimate_batchnorm is None:
        reestimate_batchnorm = data is not None
    if reestimate_batchnorm and data is None and batchnorm_layers(model):
        raise ValueError(
            "set_weight_mode: argument `data` is required to re-estimate the batch-norm statistics "
            f"(reestimate_batchnorm=True) of a model with {len(batchnorm_layers(model))} BatchNormalization "
            "layer(s); received None. Pass the training data (or data like it)."
        )
    if not reestimate_batchnorm and data is not None:
        raise ValueError(
            "set_weight_mode: argument `data` is given but `reestimate_batchnorm=False`: data is only used to "
            "re-estimate the batch-norm statistics; pass one or the other."
        )
    layers = shadow_weight_layers(model)
    if mode == "desire" and not any(layer.has_fixed_desire_kernel for layer in layers):
        found = (
            "no ShadowWeights layer"
            if not layers
            else f"{len(layers)} ShadowWeights layer(s), none with a fixed DOM kernel (desire_seed=None with a "
            "per-call draw)"
        )
        raise ValueError(
            f"set_weight_mode: argument `mode`='desire' needs a ShadowWeights layer with a fixed DOM kernel; the "
            f"model has {found}."
        )
    for layer in layers:
        layer.mode = mode
    for layer in sublayers(model, include_self=True):
        if isinstance(layer, keras.Model):
            for attribute in ("predict_function", "test_function"):
                if getattr(layer, attribute, None) is not None:
                    setattr(layer, attribute, None)
    if reestimate_batchnorm and data is not None:
        update_batchnorm_statistics(model, data, batch_size=batch_size, max_examples=max_examples)
    return len(layers)


def authors_wrap(layer, transform=None, min_kernel_size=3, seed=None, probability=1.0, desire_probability=0.0):
    """Wraps a layer the way the WAS authors do; a `wrap=` function for `keras_wtrain.comparison.models.build_model`.

    `Conv1D/2D/3D` and `DepthwiseConv1D/2D` with every kernel size ≥ `min_kernel_size` get `ShadowWeights`
    with the crop-and-stretch `RandomResizedCrop()` (chosen by an ablation; see the technique page); other
    layers, Dense included, are returned unchanged.

    Args:
        layer: a Keras layer.
        transform: the transform (default `RandomResizedCrop()`).
        min_kernel_size: smallest spatial kernel size that is augmented.
        seed: int seed of the wrapper (None: random).
        probability: probability that a training step not drawn for the DOM kernel uses the shadow weights.
        desire_probability: probability that a training step computes with the DOM kernel (`ShadowWeights`).

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
    return ShadowWeights(
        layer, transform=transform, seed=seed, probability=probability, desire_probability=desire_probability
    )


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
