"""Shadow-weight augmentation, WAS (Zhuang et al., arXiv:2405.19590).

`ShadowWeights` wraps a layer whose kernel variable holds the *plain weights*
(PW). In training every call draws fresh randomness and the layer computes with
*shadow weights* `SW = T(PW)`; the gradient flows through `T` back to PW, which
the optimizer updates. At inference the *accuracy-oriented mode* (AOM) computes
with PW (exactly the plain layer) and the *desire-oriented mode* (DOM) with a
fixed shadow kernel (e.g. a sparse masked one). The functions that act on a
whole model's `ShadowWeights` layers (`set_weight_mode` switches a model,
`authors_wrap` wraps the layers the authors augment, `shadow_weight_layers`,
`desire_sparsity`) live in `keras_wtrain.layers.shadow_weights_models` and are
re-exported here.

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
from keras_wtrain import rng
from keras_wtrain.layers import transforms as transforms_lib
from keras_wtrain.layers.kernel_reparametrization import KernelReparametrization
from keras_wtrain.layers.kernel_reparametrization import read_float32
from keras_wtrain.layers.transforms import reduced_convolution
from keras_wtrain.validation import check_bool
from keras_wtrain.validation import check_choice
from keras_wtrain.validation import check_probability
from keras_wtrain.validation import check_seed

# The four functions are lazy re-exports from `shadow_weights_models` (see `__getattr__` at the bottom).
__all__ = ["ShadowWeights", "authors_wrap", "desire_sparsity", "set_weight_mode", "shadow_weight_layers"]  # noqa: F822

MODES = ("accuracy", "desire")
SUPPORTED_LAYERS = layer_kinds.SHADOW_WEIGHTS_LAYERS


def _check_mode(mode, owner=None):
    return check_choice("mode", mode, MODES, owner=owner)


def _check_desire_transform(value):
    """`"auto"`, `"draw"` or a fixed transform (object, name or config); anything else is a ValueError."""
    if isinstance(value, str) and value in ("auto", "draw"):
        return value
    try:
        transform = transforms_lib.get(value)
    except (TypeError, ValueError):
        transform = None
    if not isinstance(transform, transforms_lib.FixedTransform):
        raise ValueError(
            "ShadowWeights: argument `desire_transform` must be a fixed shift or mask (transforms.FixedShift, "
            "transforms.FixedMask, the name 'fixed_shift' or a config dict of one), 'auto' or 'draw'; received "
            f"{value!r}: a DOM kernel must not depend on a random draw."
        )
    return transform


@keras.saving.register_keras_serializable(package="keras_wtrain")
class ShadowWeights(KernelReparametrization):
    """Shadow-weight augmentation wrapper, WAS (Zhuang et al., arXiv:2405.19590).

    The wrapped layer's kernel variable holds the plain weights (PW). When
    called with `training=True`, each call draws fresh randomness `ξ` from the
    layer's `keras.random.SeedGenerator` and the layer computes with the shadow
    weights `SW = T(PW; ξ)` (times a learnable scalar `α` if
    `learnable_scale=True`, as in the authors' code); the loss gradient flows
    through `T` to PW. With `probability < 1` a training call uses SW only with
    that probability (one draw per call, i.e. per step for a layer called once
    per step, independently per layer) and PW otherwise. Bias, activation and
    everything else of the wrapped layer are unchanged. When called with
    `training=False`:

    - `mode="accuracy"` (AOM, default): the plain layer itself runs, so the
      outputs equal an unwrapped layer's bit for bit;
    - `mode="desire"` (DOM): the layer computes with one fixed shadow kernel,
      chosen by `desire_transform`. By default (`"auto"`), a layer trained
      with a spatial transform (shift, crop) gets `FixedShift(1)`: its
      kernel's taps move one step down/right on every spatial axis, so a k×k
      kernel keeps a (k−1)×(k−1) block and the rest is zero. A regular or
      depthwise convolution (Conv1D/2D/3D, DepthwiseConv1D/2D) then *runs* as
      a (k−1)×(k−1) convolution of the padded or cropped input (outputs equal
      the full convolution's, strides and dilation included): 4/9 of the
      multiply-adds of a 3×3 layer. Any other layer (Dense, transposed or
      separable convolutions), or a layer trained with a weight-space
      transform, gets `"draw"`: the training transform drawn once with
      `desire_seed` (a DropConnect mask, ...), computed as a dense kernel.
      The DOM kernel is stored in the non-trainable variable `desire_kernel`
      (refreshed from the current PW when the mode is set to `"desire"`, or
      by `refresh_desire_kernel()`); with `desire_seed=None` nothing is
      stored: a fixed transform is recomputed at every call and `"draw"`
      redraws at every call (the authors' test mode "1").

    The mode can be changed at any time (`layer.mode = "desire"`, or
    `set_weight_mode(model, "desire")`, which also drops a model's compiled
    predict/evaluate functions so the change takes effect) and is saved in the
    config. `T` is computed in float32 (mixed precision casts the result).

    Wrapping `WeightNormalization(layer)` augments its effective kernel
    `g·v/||v||` (the gradient reaches `g` and `v`). `fold()` returns plain
    Keras layers computing what the wrapper computes at inference: the plain
    layer with PW in AOM; in DOM with a removed block of taps, a smaller
    convolution (with the padding that matches, or after a `ZeroPadding` /
    `Cropping` layer, in a `keras.Sequential`), else the plain layer with the
    DOM kernel.

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
        desire_seed: int seed of the `"draw"` DOM kernel, or None to store no
            DOM kernel (see above).
        learnable_scale: multiply SW by a learnable scalar `α` (initialised
            uniformly in [0, 1) as the authors do). Off by default: AOM then
            computes with PW while training saw `α·T(PW)`, a scale mismatch
            that the authors' code hides by never using BatchNorm's inference mode.
        desire_transform: the DOM kernel: `"auto"` (default, see above), a
            fixed transform (`transforms.FixedShift`, `transforms.FixedMask`,
            the name `"fixed_shift"` or a config dict of one), or `"draw"`
            (the training transform drawn once with `desire_seed`, the
            behaviour of earlier versions; `.keras` files saved without this
            key load with it).
        probability: probability that a training call computes with SW
            (otherwise PW), in `[0, 1]`; 1 (default) augments every step.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Raises:
        TypeError: if `layer` is not a Keras layer or `transform` is of a wrong type.
        ValueError: for an unsupported layer, unknown mode or transform name, a
            `desire_transform` that is not a fixed shift or mask (or `"auto"`,
            `"draw"`), a `probability` outside `[0, 1]`, or (at build) a
            spatial transform on a kernel without spatial axes.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers.shadow_weights import ShadowWeights

    layer = ShadowWeights(keras.layers.Conv2D(8, 3, padding="same"), transform="random_translate", seed=0)
    x = np.random.rand(2, 8, 8, 3).astype("float32")
    y_train = layer(x, training=True)   # computes with T(PW), fresh draw each call
    y_infer = layer(x, training=False)  # AOM: the plain layer's output
    layer.mode = "desire"               # DOM: the fixed one-tap shift, run as a 2x2 convolution
    folded = layer.fold()               # a plain Conv2D with kernel_size (2, 2), padding "same"
    np.testing.assert_allclose(folded(x), layer(x), atol=1e-5)
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
        desire_transform="auto",
        probability=1.0,
        **kwargs,
    ):
        self._check_layer(layer)
        seed = check_seed(seed, owner="ShadowWeights")
        desire_seed = check_seed(desire_seed, name="desire_seed", owner="ShadowWeights")
        learnable_scale = check_bool("learnable_scale", learnable_scale, owner="ShadowWeights")
        probability = check_probability("probability", probability, owner="ShadowWeights")
        desire_transform = _check_desire_transform(desire_transform)
        super().__init__(layer, **kwargs)
        self.transform = transforms_lib.get(transform)
        self._mode = _check_mode(mode, owner="ShadowWeights")
        self.seed = seed
        self.desire_seed = desire_seed
        self.learnable_scale = learnable_scale
        self.desire_transform = desire_transform
        self.probability = probability
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Set by `shadow_weights_models.inference_kernels_in_training` while batch-norm statistics are
        # re-estimated: training-mode calls then compute with the inference kernels (PW, or the DOM kernel).
        self._inference_kernels_in_training = False

    @classmethod
    def from_config(cls, config):
        # A config without `desire_transform` comes from a version whose DOM kernel was always a draw.
        config = {"desire_transform": "draw", **config}
        return super().from_config(config)

    @property
    def mode(self):
        """The inference mode, `"accuracy"` (AOM, plain weights) or `"desire"` (DOM, shadow weights)."""
        return self._mode

    @mode.setter
    def mode(self, value):
        self._mode = _check_mode(value)
        if value == "desire" and self.built:
            self.refresh_desire_kernel()

    @property
    def desire_fixed(self):
        """The fixed transform of the DOM kernel (`FixedShift`, `FixedMask`), or None for a draw (built layers)."""
        return self._desire_fixed

    def refresh_desire_kernel(self):
        """Recomputes the stored DOM kernel from the current PW.

        Runs eagerly. Setting `mode = "desire"` (or `set_weight_mode`) calls it;
        call it again if PW changed since (more training).

        Returns:
            The DOM kernel as a numpy array (None when `desire_seed` is None: nothing is stored).
        """
        if self.desire_kernel is None:
            return None
        value = self.desire_kernel_value()
        self.desire_kernel.assign(value)
        return np.asarray(ops.convert_to_numpy(value))

    def desire_kernel_value(self):
        """The DOM kernel computed from the current PW (float32 tensor): the fixed transform, or the `desire_seed` draw.

        Raises:
            ValueError: for a `"draw"` with `desire_seed=None` (a new draw at every call, no fixed kernel).
        """
        if self._desire_fixed is not None:
            value = self._desire_fixed.apply(self.plain_kernel(), None, self._spatial_axes)
            return value if self.alpha is None else value * read_float32(self.alpha)
        if self.desire_seed is None:
            raise ValueError(
                f"ShadowWeights layer {self.name!r} has no fixed inference kernel: in desire mode with "
                "desire_transform='draw' and desire_seed=None it draws a new one at every call."
            )
        return self.shadow_kernel(self.desire_seed)

    def desire_plan(self, input_shape):
        """How the DOM kernel runs on inputs of `input_shape`: a `reduced_convolution.ReducedConvolution`, or None.

        None when the DOM kernel is a `"draw"`, the wrapped layer is not a
        regular or depthwise convolution, the fixed transform keeps every tap,
        or a spatial input size is unknown where the stride is > 1: the layer
        then computes with its full DOM kernel (zeros multiplied).
        """
        if not self.built or self._desire_fixed is None:
            return None
        box = self._desire_fixed.kept_box(tuple(self._kernel.shape), self._spatial_axes)
        return reduced_convolution.plan(self.target_layer, input_shape, box)

    def kernel_variables(self):
        self._kernel, self._spatial_axes = layer_kinds.shadow_weights_kernel(self.target_layer)
        return [self._kernel]

    def build(self, input_shape=None):
        super().build(input_shape)
        kernel_shape = tuple(self._kernel.shape)
        try:
            self.transform.check(kernel_shape, self._spatial_axes)
        except ValueError as error:
            raise ValueError(
                f"ShadowWeights({type(self.target_layer).__name__} {self.layer.name!r}): argument `transform`: {error}"
            ) from None
        self._desire_fixed = self._resolve_desire_fixed(kernel_shape)
        self.desire_kernel = None
        if self.desire_seed is not None:
            self.desire_kernel = self.add_weight(
                name="desire_kernel",
                shape=kernel_shape,
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

    def _resolve_desire_fixed(self, kernel_shape):
        if self.desire_transform == "draw":
            return None
        if self.desire_transform == "auto":
            sizes = [kernel_shape[a] for a in self._spatial_axes]
            if self.transform.spatial and sizes and max(sizes) > 1:
                return transforms_lib.FixedShift(1)
            return None
        try:
            self.desire_transform.check(kernel_shape, self._spatial_axes)
        except ValueError as error:
            raise ValueError(
                f"ShadowWeights({type(self.target_layer).__name__} {self.layer.name!r}): argument "
                f"`desire_transform`: {error}"
            ) from None
        return self.desire_transform

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
        """Training: SW, a fresh draw (PW with probability `1 − probability`). Inference: None (AOM) or DOM kernel."""
        if training and not self._inference_kernels_in_training:
            if self.probability == 0.0:
                return None
            kernel = self.shadow_kernel(self.seed_generator)
            if self.probability < 1.0:
                use_shadow = rng.uniform((), seed=self.seed_generator) < self.probability
                kernel = ops.where(use_shadow, kernel, self.plain_kernel())
            return [kernel]
        if self._mode == "accuracy":
            return None
        if self.desire_kernel is not None:
            return [read_float32(self.desire_kernel)]
        if self._desire_fixed is not None:
            return [self.desire_kernel_value()]
        return [self.shadow_kernel(self.seed_generator)]

    def call(self, inputs, training=None, **kwargs):
        # No `mask` parameter: none of the wrapped layers takes one in `call` (Keras propagates their masks
        # through `compute_mask`), and without it Keras records no `mask=None` in a functional model's nodes,
        # which the plain layers of `fold_layers` could not accept. An explicit `mask=` still reaches `kwargs`.
        if not training and self._mode == "desire":
            reduced = self.desire_plan(inputs.shape)
            if reduced is not None:
                return reduced_convolution.call(self.target_layer, inputs, self.call_kernels(False)[0], reduced)
        return super().call(inputs, training=training, **kwargs)

    def inference_kernels(self):
        """The kernel used at inference: PW (AOM) or the DOM kernel (full size, zeros included).

        Raises:
            ValueError: in desire mode with `desire_transform="draw"` and `desire_seed=None`, which redraws at
                every call.
        """
        if self._mode == "desire" and self.desire_kernel is None and self._desire_fixed is None:
            raise ValueError(
                f"ShadowWeights layer {self.name!r} has no fixed inference kernel: in desire mode with "
                "desire_seed=None it draws a new one at every call."
            )
        return super().inference_kernels()

    def fold(self):
        """Plain Keras layers computing what this wrapper computes at inference.

        AOM: the plain layer with PW. DOM whose kernel keeps a box of taps of
        a regular or depthwise convolution: a smaller convolution with the
        same outputs: one plain `Conv`/`DepthwiseConv` layer when a Keras
        padding mode matches (a one-tap shift of a "same", stride-1 layer:
        a (k−1)×(k−1) "same" convolution), else a `keras.Sequential` of
        `ZeroPadding`/`Cropping` and a "valid" convolution. Other DOM layers:
        the plain layer with the DOM kernel.

        Returns:
            A built Keras layer (or `keras.Sequential`).

        Raises:
            ValueError: if this layer is not built, or has no fixed DOM kernel.
        """
        if self.built and self._mode == "desire":
            reduced = self.desire_plan(self._build_input_shape)
            if reduced is not None:
                kernel = ops.convert_to_numpy(self.inference_kernels()[0])
                folded = reduced_convolution.fold(
                    self.target_layer, kernel, reduced, self._build_input_shape, self._kernel, name=self.name
                )
                if folded is not None:
                    return folded
        return super().fold()

    def get_config(self):
        config = super().get_config()
        desire_transform = self.desire_transform
        if isinstance(desire_transform, transforms_lib.Transform):
            desire_transform = keras.saving.serialize_keras_object(desire_transform)
        config.update(
            {
                "transform": keras.saving.serialize_keras_object(self.transform),
                "mode": self._mode,
                "seed": self.seed,
                "desire_seed": self.desire_seed,
                "learnable_scale": self.learnable_scale,
                "desire_transform": desire_transform,
                "probability": self.probability,
            }
        )
        return config


# The model-level functions live in `shadow_weights_models`, which imports `ShadowWeights` from here; they are
# re-exported lazily (PEP 562) so `from keras_wtrain.layers.shadow_weights import set_weight_mode` keeps working
# whichever of the two modules is imported first.
_MODEL_FUNCTIONS = ("authors_wrap", "desire_sparsity", "set_weight_mode", "shadow_weight_layers")


def __getattr__(name):
    if name in _MODEL_FUNCTIONS:
        from keras_wtrain.layers import shadow_weights_models

        return getattr(shadow_weights_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
