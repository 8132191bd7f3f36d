"""Model-level shadow-weight utilities: functions that act on every `ShadowWeights` layer of a model.

`authors_wrap` wraps the layers the WAS authors augment (a `wrap=` function
for `keras_wtrain.models.build_model`); `shadow_weight_layers` lists a
model's `ShadowWeights` layers, `set_weight_mode` switches all of them between
the accuracy- and desire-oriented modes, and `desire_sparsity` counts their
non-zero weights and multiply-adds in desire mode. The layer itself is
`keras_wtrain.layers.shadow_weights.ShadowWeights`; these names are also
importable from that module and from `keras_wtrain.layers`.

Example:

```python
from keras_wtrain.layers.shadow_weights_models import authors_wrap
from keras_wtrain.layers.shadow_weights_models import desire_sparsity
from keras_wtrain.layers.shadow_weights_models import set_weight_mode
from keras_wtrain.models import build_model

model = build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap)
set_weight_mode(model, "desire")
assert len(desire_sparsity(model)) == 2
```
"""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain import layer_kinds
from keras_wtrain.layers import transforms as transforms_lib
from keras_wtrain.layers.shadow_weights import MODES
from keras_wtrain.layers.shadow_weights import ShadowWeights
from keras_wtrain.validation import check_choice

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
    from keras_wtrain.layers.shadow_weights_models import authors_wrap
    from keras_wtrain.layers.shadow_weights_models import shadow_weight_layers
    from keras_wtrain.models import build_model

    assert len(shadow_weight_layers(build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap))) == 2
    ```
    """
    layers = [model, *model._flatten_layers(include_self=False, recursive=True)]
    return [layer for layer in layers if isinstance(layer, ShadowWeights)]


@contextlib.contextmanager
def inference_kernels_in_training(model):
    """Within this context, training-mode calls of every `ShadowWeights` in `model` use the inference kernels.

    The kernels are those the model infers with: the plain weights PW (AOM) or the fixed DOM kernel
    (`"desire"` mode), not fresh shadow weights. Batch-norm statistics re-estimated inside it
    (`keras_wtrain.batchnorm.update_batchnorm_statistics` enters it) then describe the activations
    of inference: training collected them from shadow-weight activations, which AOM never sees.
    Eager calls only (a traced function keeps the kernels it was traced with).

    Args:
        model: a Keras model or layer.

    Yields:
        The list of `ShadowWeights` layers switched (restored on exit).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.layers.shadow_weights_models import authors_wrap, inference_kernels_in_training
    from keras_wtrain.models import build_model

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
    """Sets the inference mode of every `ShadowWeights` layer in `model`.

    Nested models and layers are included. The compiled predict and evaluate
    functions of every model found are dropped, so `predict`/`evaluate` retrace
    with the new mode (a mode is a Python switch, baked in when a function is
    traced). Training is not affected: it always uses shadow weights.

    Args:
        model: a Keras model or layer.
        mode: `"accuracy"` (AOM, plain weights) or `"desire"` (DOM, shadow weights).

    Returns:
        The number of `ShadowWeights` layers set (0 if there are none).

    Raises:
        ValueError: for an unknown mode.

    Example:

    ```python
    from keras_wtrain.layers.shadow_weights_models import authors_wrap
    from keras_wtrain.layers.shadow_weights_models import set_weight_mode
    from keras_wtrain.models import build_model

    model = build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap)
    assert set_weight_mode(model, "desire") == 2
    ```
    """
    check_choice("mode", mode, MODES, owner="set_weight_mode")
    count = 0
    for layer in [model, *model._flatten_layers(include_self=False, recursive=True)]:
        if isinstance(layer, ShadowWeights):
            layer.mode = mode
            count += 1
        if isinstance(layer, keras.Model):
            for attribute in ("predict_function", "test_function"):
                if getattr(layer, attribute, None) is not None:
                    setattr(layer, attribute, None)
    return count


def authors_wrap(layer, transform=None, min_kernel_size=3, seed=None, probability=1.0):
    """The authors' default WAS setting as a `wrap=` function for `keras_wtrain.models.build_model`.

    In the authors' code (`zlearh/Weight-Augmentation-Technology`) only k×k
    convolutions with k ≥ 3 are augmented (regular and depthwise), never 1×1
    convolutions or dense layers. Their ResNet, MobileNetV2, EfficientNet-Lite
    and GoogLeNet pick, per layer and step, 50/50 between the shift
    `RandomAffine(translate=(0.3, 0.3))` and the crop-and-stretch
    `RandomResizedCrop((k, k), scale=(0.8, 1.0))`; one VGG variant uses only the
    shift, their default VGG only the crop. This function uses the crop alone
    (`RandomResizedCrop()`), chosen by the ablation of
    `benchmarks/shadow_ablation.py` (MNIST-5k; the CNN and `resnet-small`;
    1,000 and 250 examples; 3 seeds): it was the only setting that never
    lowered test accuracy significantly, and on `resnet-small` with 250
    examples it raised it by 13 points (with BatchNorm statistics re-estimated),
    while the shift alone hurt most everywhere and the 50/50 choice (the
    former default) hurt `resnet-small` on 1,000 examples. It wraps `Conv1D/2D/3D` and
    `DepthwiseConv1D/2D` layers whose kernel sizes are all ≥ `min_kernel_size`
    in `ShadowWeights` and returns every other layer (Dense included)
    unchanged. It cannot tell a network's stem from other convolutions (the
    authors leave ResNet stems plain). The learnable scale `α` is left off
    (see `ShadowWeights`).

    Args:
        layer: a Keras layer.
        transform: the transform (default: `RandomResizedCrop()`); e.g.
            `RandomTranslate(0.3)` for the shift alone, or
            `RandomChoice([RandomTranslate(0.3), RandomResizedCrop()])` for the
            authors' 50/50 choice.
        min_kernel_size: smallest spatial kernel size that is augmented.
        seed: int seed of the wrapper (None: random).
        probability: probability that a training step uses the shadow weights (`ShadowWeights(probability=)`).

    Returns:
        `ShadowWeights(layer, ...)` or `layer` itself.

    Example:

    ```python
    from keras_wtrain.layers.shadow_weights_models import authors_wrap
    from keras_wtrain.models import build_model

    model = build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap)
    ```
    """
    if not layer_kinds.is_augmentable_convolution(layer, min_kernel_size):
        return layer
    if transform is None:
        transform = transforms_lib.RandomResizedCrop()
    return ShadowWeights(layer, transform=transform, seed=seed, probability=probability)


def desire_sparsity(model):
    """Counts the non-zero weights and the multiply-adds of every `ShadowWeights` layer in DOM.

    For each built wrapped layer, the DOM kernel (the stored `desire_kernel`
    of a layer in DOM; for a layer in AOM, the kernel DOM would use, computed
    from the current plain weights) is compared with the plain kernel. Counts
    are per example: multiply-adds of a layer are `kernel entries × output
    positions` (for a convolution, `output_h · output_w · taps · cin · cout`
    with `cin` per group; a depthwise one `taps · cin · multiplier`), the
    plain layer's for `macs_plain`. `macs_desire_executed` counts what DOM
    really computes: the kept box of taps when the DOM kernel runs as a
    smaller convolution (`ShadowWeights.desire_plan`), else the full kernel
    (Keras multiplies the zeros of a masked kernel). `macs_desire` counts the
    non-zero DOM weights: what a sparse kernel would need.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of dicts, one per layer: `name`, `entries`, `nonzero_plain`,
        `nonzero_desire`, `macs_plain`, `macs_desire`, `macs_desire_executed`
        (ints, per example) and `desire_kernel_shape` (the kernel shape DOM
        executes).

    Example:

    ```python
    import keras
    from keras_wtrain.layers.shadow_weights import ShadowWeights
    from keras_wtrain.layers.shadow_weights_models import desire_sparsity

    model = keras.Sequential([keras.Input((8, 8, 4)), ShadowWeights(keras.layers.Conv2D(16, 3, padding="same"))])
    [row] = desire_sparsity(model)
    assert row["desire_kernel_shape"] == (2, 2, 4, 16)  # a one-tap shift runs as a 2x2 convolution
    assert row["macs_desire_executed"] * 9 == row["macs_plain"] * 4
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
        output_shape = layer.compute_output_shape(layer._build_input_shape)
        channels_first = getattr(layer.target_layer, "data_format", "channels_last") == "channels_first"
        positions_shape = output_shape[2:] if channels_first else output_shape[1:-1]
        positions = int(np.prod([d for d in positions_shape if d is not None])) if positions_shape else 1
        reduced = layer.desire_plan(layer._build_input_shape)
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
