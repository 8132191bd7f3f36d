"""Shadow-weight augmentation, WAS (Zhuang et al., arXiv:2405.19590).

`ShadowWeights` wraps a layer whose kernel variable holds the *plain weights*
(PW). In training every call draws fresh randomness and the layer computes with
*shadow weights* `SW = T(PW)`; the gradient flows through `T` back to PW, which
the optimizer updates. At inference the *accuracy-oriented mode* (AOM) computes
with PW (exactly the plain layer) and the *desire-oriented mode* (DOM) with a
fixed shadow kernel (e.g. a sparse masked one). `set_weight_mode` switches a
whole model; `authors_wrap` wraps the layers the authors augment.

Example:

```python
from keras_wtrain.layers.shadow_weights import authors_wrap
from keras_wtrain.layers.shadow_weights import set_weight_mode
from keras_wtrain.models import build_model

model = build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap)
set_weight_mode(model, "desire")
```
"""

import keras
import numpy as np
from keras import ops

from keras_wtrain import layer_kinds
from keras_wtrain.layers import transforms as transforms_lib
from keras_wtrain.layers.kernel_reparametrization import KernelReparametrization
from keras_wtrain.layers.kernel_reparametrization import read_float32
from keras_wtrain.validation import check_bool
from keras_wtrain.validation import check_choice
from keras_wtrain.validation import check_seed

__all__ = ["ShadowWeights", "authors_wrap", "desire_sparsity", "set_weight_mode", "shadow_weight_layers"]

MODES = ("accuracy", "desire")
SUPPORTED_LAYERS = layer_kinds.SHADOW_WEIGHTS_LAYERS


def _check_mode(mode, owner=None):
    return check_choice("mode", mode, MODES, owner=owner)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class ShadowWeights(KernelReparametrization):
    """Shadow-weight augmentation wrapper, WAS (Zhuang et al., arXiv:2405.19590).

    The wrapped layer's kernel variable holds the plain weights (PW). When
    called with `training=True`, each call draws fresh randomness `ξ` from the
    layer's `keras.random.SeedGenerator` and the layer computes with the shadow
    weights `SW = T(PW; ξ)` (times a learnable scalar `α` if
    `learnable_scale=True`, as in the authors' code); the loss gradient flows
    through `T` to PW. Bias, activation and everything else of the wrapped layer
    are unchanged. When called with `training=False`:

    - `mode="accuracy"` (AOM, default): the plain layer itself runs, so the
      outputs equal an unwrapped layer's bit for bit;
    - `mode="desire"` (DOM): the layer computes with one fixed shadow kernel,
      `T(PW)` drawn with the fixed seed `desire_seed` and stored in the
      non-trainable variable `desire_kernel` (so it is the same eagerly, under
      XLA, where TensorFlow's stateless RNG draws differently, and after
      `.keras` loading). It is (re)computed from the current PW when the mode is
      set to `"desire"` (or by `refresh_desire_kernel()`); with
      `desire_seed=None` a fresh draw is made at every call instead (the
      authors' test mode "1") and no kernel is stored. With a mask transform
      (`DropConnect`) the DOM kernel has exact zeros; see `desire_sparsity`.

    The mode can be changed at any time (`layer.mode = "desire"`, or
    `set_weight_mode(model, "desire")`, which also drops a model's compiled
    predict/evaluate functions so the change takes effect) and is saved in the
    config. `T` is computed in float32 (mixed precision casts the result).

    Wrapping `WeightNormalization(layer)` augments its effective kernel
    `g·v/||v||` (the gradient reaches `g` and `v`). `fold()` returns the plain
    layer computing with the inference kernel (PW in AOM, the stored DOM kernel
    in DOM).

    Args:
        layer: the layer to wrap; one of: Dense, Conv1D/2D/3D,
            Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D
            (depthwise kernel), or a `WeightNormalization` of one of these.
        transform: the weight transform `T`: a
            `keras_wtrain.layers.transforms.Transform`, a name, a config dict or
            a callable `f(kernel, seed) -> kernel` (see `transforms.get`).
            Default `RandomTranslate(0.3)`, the authors' shift. Spatial
            transforms need a convolution kernel.
        mode: inference mode, `"accuracy"` (AOM) or `"desire"` (DOM).
        seed: int seed of the training draws (None: random).
        desire_seed: int seed of the fixed DOM kernel, or None to redraw it at
            every inference call.
        learnable_scale: multiply SW by a learnable scalar `α` (initialised
            uniformly in [0, 1) as the authors do). Off by default: AOM then
            computes with PW while training saw `α·T(PW)`, a scale mismatch
            that the authors' code hides by never using BatchNorm's inference mode.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Raises:
        TypeError: if `layer` is not a Keras layer or `transform` is of a wrong type.
        ValueError: for an unsupported layer, unknown mode or transform name, or
            (at build) a spatial transform on a kernel without spatial axes.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers.shadow_weights import ShadowWeights

    layer = ShadowWeights(keras.layers.Conv2D(8, 3), transform="random_translate", seed=0)
    x = np.random.rand(2, 8, 8, 3).astype("float32")
    y_train = layer(x, training=True)   # computes with T(PW), fresh draw each call
    y_infer = layer(x, training=False)  # AOM: the plain layer's output
    layer.mode = "desire"               # DOM: a fixed shadow kernel
    ```
    """

    _paper_arxiv = "2405.19590"
    supports = staticmethod(layer_kinds.supports_shadow_weights)
    supported_layers = SUPPORTED_LAYERS

    def __init__(
        self,
        layer,
        transform="random_translate",
        mode="accuracy",
        seed=None,
        desire_seed=0,
        learnable_scale=False,
        **kwargs,
    ):
        self._check_layer(layer)
        seed = check_seed(seed, owner="ShadowWeights")
        desire_seed = check_seed(desire_seed, name="desire_seed", owner="ShadowWeights")
        learnable_scale = check_bool("learnable_scale", learnable_scale, owner="ShadowWeights")
        super().__init__(layer, **kwargs)
        self.transform = transforms_lib.get(transform)
        self._mode = _check_mode(mode, owner="ShadowWeights")
        self.seed = seed
        self.desire_seed = desire_seed
        self.learnable_scale = learnable_scale
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def mode(self):
        """The inference mode, `"accuracy"` (AOM, plain weights) or `"desire"` (DOM, shadow weights)."""
        return self._mode

    @mode.setter
    def mode(self, value):
        self._mode = _check_mode(value)
        if value == "desire" and self.built:
            self.refresh_desire_kernel()

    def refresh_desire_kernel(self):
        """Recomputes the stored DOM kernel `T(PW)` (fixed draw `desire_seed`) from the current PW.

        Runs eagerly. Setting `mode = "desire"` (or `set_weight_mode`) calls it;
        call it again if PW changed since (more training).

        Returns:
            The DOM kernel as a numpy array (None when `desire_seed` is None).
        """
        if self.desire_kernel is None:
            return None
        value = self.shadow_kernel(self.desire_seed)
        self.desire_kernel.assign(value)
        return np.asarray(ops.convert_to_numpy(value))

    def kernel_variables(self):
        self._kernel, self._spatial_axes = layer_kinds.shadow_weights_kernel(self.target_layer)
        return [self._kernel]

    def build(self, input_shape=None):
        super().build(input_shape)
        try:
            self.transform.check(tuple(self._kernel.shape), self._spatial_axes)
        except ValueError as error:
            raise ValueError(
                f"ShadowWeights({type(self.target_layer).__name__} {self.layer.name!r}): argument `transform`: {error}"
            ) from None
        self.desire_kernel = None
        if self.desire_seed is not None:
            self.desire_kernel = self.add_weight(
                name="desire_kernel",
                shape=tuple(self._kernel.shape),
                initializer="zeros",
                trainable=False,
                autocast=False,
            )
        self.alpha = None
        if self.learnable_scale:
            self.alpha = self.add_weight(
                name="alpha",
                shape=(),
                initializer=keras.initializers.RandomUniform(0.0, 1.0, seed=self.seed),
                trainable=True,
                autocast=False,
            )
        self.built = True
        if self._mode == "desire":
            self.refresh_desire_kernel()

    def plain_kernel(self):
        """The plain weights PW the transform acts on, a float32 tensor.

        Returns:
            The wrapped layer's kernel (for a `WeightNormalization`, `g·v/||v||`).
        """
        return self.wrapped_kernels()[0]

    def shadow_kernel(self, seed):
        """Returns a shadow kernel `SW = T(PW)` (float32 tensor) for one draw.

        Args:
            seed: a `keras.random.SeedGenerator` (advanced) or an int.

        Returns:
            The shadow kernel, of the kernel's shape.
        """
        sw = self.transform(self.plain_kernel(), seed, self._spatial_axes)
        if self.alpha is not None:
            sw = sw * read_float32(self.alpha)
        return sw

    def call_kernels(self, training=None):
        """SW with a fresh draw in training; at inference None (AOM: the plain layer runs) or the DOM kernel."""
        if not training and self._mode == "accuracy":
            return None
        if training or self.desire_kernel is None:
            return [self.shadow_kernel(self.seed_generator)]
        return [read_float32(self.desire_kernel)]

    def inference_kernels(self):
        """The kernel used at inference: PW (AOM) or the stored DOM kernel.

        Raises:
            ValueError: in desire mode with `desire_seed=None`, which redraws at every call.
        """
        if self._mode == "desire" and self.desire_kernel is None:
            raise ValueError(
                f"ShadowWeights layer {self.name!r} has no fixed inference kernel: in desire mode with "
                "desire_seed=None it draws a new one at every call."
            )
        return super().inference_kernels()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "transform": keras.saving.serialize_keras_object(self.transform),
                "mode": self._mode,
                "seed": self.seed,
                "desire_seed": self.desire_seed,
                "learnable_scale": self.learnable_scale,
            }
        )
        return config


def shadow_weight_layers(model):
    """Lists the `ShadowWeights` layers of `model` (or a layer), nested models included.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of `ShadowWeights` layers.

    Example:

    ```python
    from keras_wtrain.layers.shadow_weights import authors_wrap
    from keras_wtrain.layers.shadow_weights import shadow_weight_layers
    from keras_wtrain.models import build_model

    assert len(shadow_weight_layers(build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap))) == 2
    ```
    """
    layers = [model, *model._flatten_layers(include_self=False, recursive=True)]
    return [layer for layer in layers if isinstance(layer, ShadowWeights)]


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
    from keras_wtrain.layers.shadow_weights import authors_wrap
    from keras_wtrain.layers.shadow_weights import set_weight_mode
    from keras_wtrain.models import build_model

    model = build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap)
    assert set_weight_mode(model, "desire") == 2
    ```
    """
    _check_mode(mode, owner="set_weight_mode")
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


def authors_wrap(layer, transform=None, min_kernel_size=3, seed=None):
    """The authors' default WAS setting as a `wrap=` function for `keras_wtrain.models.build_model`.

    In the authors' code (`zlearh/Weight-Augmentation-Technology`) only k×k
    convolutions with k ≥ 3 are augmented (regular and depthwise), never 1×1
    convolutions or dense layers. Their ResNet, MobileNetV2, EfficientNet-Lite
    and GoogLeNet pick, per layer and step, 50/50 between the shift
    `RandomAffine(translate=(0.3, 0.3))` and the crop-and-stretch
    `RandomResizedCrop((k, k), scale=(0.8, 1.0))`; one VGG variant uses only the
    shift, their default VGG only the crop. This function uses the 50/50 choice
    (`RandomChoice([RandomTranslate(0.3), RandomResizedCrop()])`): on the MNIST
    CNN it trained better than the shift alone (see
    `benchmarks/results/shadow_weights.md`). It wraps `Conv1D/2D/3D` and
    `DepthwiseConv1D/2D` layers whose kernel sizes are all ≥ `min_kernel_size`
    in `ShadowWeights` and returns every other layer (Dense included)
    unchanged. It cannot tell a network's stem from other convolutions (the
    authors leave ResNet stems plain). The learnable scale `α` is left off
    (see `ShadowWeights`).

    Args:
        layer: a Keras layer.
        transform: the transform (default: 50/50 `RandomTranslate(0.3)` or
            `RandomResizedCrop()`); e.g. `RandomTranslate(0.3)` for the shift alone.
        min_kernel_size: smallest spatial kernel size that is augmented.
        seed: int seed of the wrapper (None: random).

    Returns:
        `ShadowWeights(layer, ...)` or `layer` itself.

    Example:

    ```python
    from keras_wtrain.layers.shadow_weights import authors_wrap
    from keras_wtrain.models import build_model

    model = build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap)
    ```
    """
    if not layer_kinds.is_augmentable_convolution(layer, min_kernel_size):
        return layer
    if transform is None:
        transform = transforms_lib.RandomChoice(
            [transforms_lib.RandomTranslate(0.3), transforms_lib.RandomResizedCrop()]
        )
    return ShadowWeights(layer, transform=transform, seed=seed)


def desire_sparsity(model):
    """Counts the non-zero weights and multiply-adds of every `ShadowWeights` kernel in DOM.

    For each wrapped layer (built), the DOM kernel (the stored `desire_kernel`
    of a layer in DOM; for a layer in AOM, the draw `desire_seed` would give
    from the current plain weights) is compared
    with the plain kernel: number of entries, number of non-zeros, and
    multiply-adds per example (`non-zeros × output positions`; for a Dense
    layer on 2-D input, one position). Keras executes dense kernels, so the
    zeros are counted, not skipped: the saving is what a sparse kernel would
    give.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of dicts, one per layer: `name`, `entries`, `nonzero_plain`,
        `nonzero_desire`, `macs_plain`, `macs_desire` (per example).

    Example:

    ```python
    import keras
    from keras_wtrain.layers.shadow_weights import ShadowWeights
    from keras_wtrain.layers.shadow_weights import desire_sparsity

    model = keras.Sequential([keras.Input((16,)), ShadowWeights(keras.layers.Dense(8), "dropconnect")])
    print(desire_sparsity(model))
    ```
    """
    rows = []
    for layer in shadow_weight_layers(model):
        if not layer.built:
            continue
        plain = np.asarray(ops.convert_to_numpy(layer.plain_kernel()))
        if layer.desire_kernel is not None and layer.mode == "desire":
            shadow = np.asarray(ops.convert_to_numpy(layer.desire_kernel.value))
        else:
            shadow = np.asarray(ops.convert_to_numpy(layer.shadow_kernel(layer.desire_seed or 0)))
        output_shape = layer.compute_output_shape(layer._build_input_shape)
        channels_first = getattr(layer.target_layer, "data_format", "channels_last") == "channels_first"
        positions_shape = output_shape[2:] if channels_first else output_shape[1:-1]
        positions = int(np.prod([d for d in positions_shape if d is not None])) if positions_shape else 1
        rows.append(
            {
                "name": layer.name,
                "entries": int(plain.size),
                "nonzero_plain": int(np.count_nonzero(plain)),
                "nonzero_desire": int(np.count_nonzero(shadow)),
                "macs_plain": int(np.count_nonzero(plain)) * positions,
                "macs_desire": int(np.count_nonzero(shadow)) * positions,
            }
        )
    return rows
