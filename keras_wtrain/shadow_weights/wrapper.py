"""The `ShadowWeights` layer of shadow-weight augmentation, WAS (Zhuang et al., arXiv:2405.19590).

Model-level functions (`set_weight_mode`, `authors_wrap`, ...) are in `keras_wtrain.shadow_weights.modes`.
"""

import keras
import numpy as np
from keras import ops

from keras_wtrain._core import layer_kinds
from keras_wtrain._core import rng
from keras_wtrain._core.kernel_reparametrization import KernelReparametrization
from keras_wtrain._core.kernel_reparametrization import read_float32
from keras_wtrain._core.validation import check_bool
from keras_wtrain._core.validation import check_choice
from keras_wtrain._core.validation import check_probability
from keras_wtrain._core.validation import check_seed
from keras_wtrain.shadow_weights import transforms as transforms_lib
from keras_wtrain.shadow_weights.transforms import reduced_convolution

__all__ = ["ShadowWeights"]

MODES = ("accuracy", "desire")
SUPPORTED_LAYERS = layer_kinds.SHADOW_WEIGHTS_LAYERS


def _check_mode(mode, owner=None):
    return check_choice("mode", mode, MODES, owner=owner)


def _check_transform(value):
    """`"auto"` (resolved per kernel at build) or anything `transforms.get` accepts."""
    if isinstance(value, str) and value == "auto":
        return value
    return transforms_lib.get(value)


def auto_transform(kernel_shape, spatial_axes):
    """The transform `transform="auto"` resolves to for a kernel of `kernel_shape`.

    The authors' crop-and-stretch `RandomResizedCrop()` (`authors_wrap`'s transform) when the kernel has a
    spatial axis of size ≥ 3; `GaussianNoise(0.1)` otherwise (Dense, 1×1 and 2×2 kernels, where a spatial
    transform cannot act or moves whole taps of a tiny kernel). Why these: docs/techniques/shadow_weights.md.

    Args:
        kernel_shape: the kernel's shape.
        spatial_axes: its spatial axes (a tuple, empty for a Dense kernel).

    Returns:
        A `transforms.Transform`.

    Example:

    ```python
    from keras_wtrain.shadow_weights.wrapper import auto_transform

    assert type(auto_transform((3, 3, 8, 16), (0, 1))).__name__ == "RandomResizedCrop"
    assert type(auto_transform((8, 16), ())).__name__ == "GaussianNoise"
    ```
    """
    sizes = [kernel_shape[a] for a in spatial_axes]
    if sizes and max(sizes) >= 3:
        return transforms_lib.RandomResizedCrop()
    return transforms_lib.GaussianNoise(0.1)


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

    The wrapped layer's kernel holds the plain weights PW. A training call draws fresh randomness and
    computes with the DOM kernel `D(PW)` with probability `desire_probability`, else with the shadow weights
    `SW = T(PW)` (with probability `probability`, else PW); the gradient flows through `D` or `T` to PW.
    Inference: `mode="accuracy"` (AOM) runs the plain layer, bit for bit; `mode="desire"` (DOM) computes
    with one fixed kernel (`desire_transform`; by default a convolution trained with a spatial transform
    gets `FixedShift(1)` and runs as a (k−1)×(k−1) convolution, other layers one draw with `desire_seed`).
    Switch with `layer.mode` or `set_weight_mode` (which re-estimates batch-norm statistics for the mode
    when given data). Wrapping a `WeightNormalization` augments `g·v/||v||`. `fold()` gives plain Keras
    layers. Details: technique page. Cost: one extra kernel copy (`desire_kernel`; none with
    `desire_seed=None`); a few kernel ops per step (with `desire_probability > 0` the DOM kernel too).

    Args:
        layer: the layer to wrap: Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D,
            SeparableConv1D/2D (depthwise kernel), or a `WeightNormalization` of one of these.
        transform: the transform `T`: `"auto"`, a `transforms.Transform`, a name, a config dict or a callable
            `f(kernel, seed) -> kernel` (see `transforms.get`). `"auto"` (default) resolves at build
            (`auto_transform`): the authors' crop-and-stretch `RandomResizedCrop()` for kernels with a spatial
            size ≥ 3, `GaussianNoise(0.1)` for Dense, 1×1 and 2×2 kernels.
        mode: inference mode, `"accuracy"` (AOM) or `"desire"` (DOM).
        seed: int seed of the training draws (None: random).
        desire_seed: int seed of a `"draw"` DOM kernel, or None to store no DOM kernel (redraw per call).
        learnable_scale: multiply SW by a learnable scalar `α ~ U[0, 1)`, as the authors do.
        desire_transform: the DOM kernel: `"auto"`, `"draw"`, or a fixed transform (`transforms.FixedShift`,
            `transforms.FixedMask`, `"fixed_shift"` or a config dict of one).
        probability: probability that a training call not drawn for the DOM kernel uses SW (else PW), in `[0, 1]`.
        desire_probability: probability that a training call computes with the DOM kernel (trains the weights
            DOM infers with), in `[0, 1]`; > 0 needs a fixed DOM kernel (`desire_transform` not resolving to
            `"draw"`).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Raises:
        TypeError: if `layer` is not a Keras layer or has no supported kernel, or `transform` is of a wrong type.
        ValueError: for an unknown mode or transform name, a `desire_transform` that is
            not fixed, `"auto"` or `"draw"`, a `probability` or `desire_probability` outside `[0, 1]`, or (at
            build) a spatial transform on a kernel without spatial axes or a `desire_probability > 0` without a
            fixed DOM kernel.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.shadow_weights import ShadowWeights

    layer = ShadowWeights(keras.layers.Conv2D(8, 3, padding="same"), seed=0, desire_probability=0.25)
    x = np.random.rand(2, 8, 8, 3).astype("float32")
    y_train, y_aom = layer(x, training=True), layer(x)  # D(PW) or T(PW) with a fresh draw; the plain layer
    layer.mode = "desire"  # DOM: a fixed one-tap shift, run as a 2x2 convolution
    np.testing.assert_allclose(layer.fold()(x), layer(x), atol=1e-5)
    ```
    """

    _paper_arxiv = "2405.19590"
    supports = staticmethod(layer_kinds.supports_shadow_weights)
    supported_layers = SUPPORTED_LAYERS

    def __init__(
        self,
        layer,
        transform="auto",
        mode="accuracy",
        seed=None,
        desire_seed=0,
        learnable_scale=False,
        desire_transform="auto",
        probability=1.0,
        desire_probability=0.0,
        **kwargs,
    ):
        self._check_layer(layer)
        seed = check_seed(seed, owner="ShadowWeights")
        desire_seed = check_seed(desire_seed, name="desire_seed", owner="ShadowWeights")
        learnable_scale = check_bool("learnable_scale", learnable_scale, owner="ShadowWeights")
        probability = check_probability("probability", probability, owner="ShadowWeights")
        desire_probability = check_probability("desire_probability", desire_probability, owner="ShadowWeights")
        desire_transform = _check_desire_transform(desire_transform)
        transform = _check_transform(transform)
        super().__init__(layer, **kwargs)
        self._transform_argument = transform
        # The transform `T`; `"auto"` resolves at build (None until then).
        self.transform = None if transform == "auto" else transform
        self._mode = _check_mode(mode, owner="ShadowWeights")
        self.seed = seed
        self.desire_seed = desire_seed
        self.learnable_scale = learnable_scale
        self.desire_transform = desire_transform
        self.probability = probability
        self.desire_probability = desire_probability
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Set by `shadow_weights_models.inference_kernels_in_training` while batch-norm statistics are
        # re-estimated: training-mode calls then compute with the inference kernels (PW, or the DOM kernel).
        self._inference_kernels_in_training = False

    @property
    def mode(self):
        """The inference mode, `"accuracy"` (AOM, plain weights) or `"desire"` (DOM)."""
        return self._mode

    @mode.setter
    def mode(self, value):
        self._mode = _check_mode(value)
        if value == "desire" and self.built:
            self.refresh_desire_kernel()

    @property
    def desire_fixed(self):
        """The fixed transform of the DOM kernel, or None for a draw (built layers)."""
        return self._desire_fixed

    @property
    def has_fixed_desire_kernel(self):
        """Whether DOM computes with one fixed kernel (a fixed transform, or a stored draw) rather than a per-call draw.

        Before build a `desire_transform="auto"` with `desire_seed=None` counts as not fixed.
        """
        if self.built:
            return self.desire_kernel is not None or self._desire_fixed is not None
        return self.desire_seed is not None or isinstance(self.desire_transform, transforms_lib.FixedTransform)

    def refresh_desire_kernel(self):
        """Recomputes the stored DOM kernel from the current PW; returns it (numpy), or None if none is stored."""
        if self.desire_kernel is None:
            return None
        value = self.desire_kernel_value()
        self.desire_kernel.assign(value)
        return np.asarray(ops.convert_to_numpy(value))

    def desire_kernel_value(self):
        """The DOM kernel from the current PW (float32); a ValueError for `"draw"` with `desire_seed=None`."""
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
        """How the DOM kernel runs on `input_shape`: a `reduced_convolution.ReducedConvolution`, or None."""
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
        if self._transform_argument == "auto":
            self.transform = auto_transform(kernel_shape, self._spatial_axes)
        try:
            self.transform.check(kernel_shape, self._spatial_axes)
        except ValueError as error:
            raise ValueError(
                f"ShadowWeights({type(self.target_layer).__name__} {self.layer.name!r}): argument `transform`: {error}"
            ) from None
        self._desire_fixed = self._resolve_desire_fixed(kernel_shape)
        if self.desire_probability > 0.0 and self._desire_fixed is None:
            raise ValueError(
                f"ShadowWeights({type(self.target_layer).__name__} {self.layer.name!r}): argument "
                f"`desire_probability` must be 0 when the DOM kernel is a random draw (desire_transform "
                f"{self.desire_transform!r} resolves to 'draw' for this kernel of shape {kernel_shape}); received "
                f"{self.desire_probability!r}. Training with the DOM kernel needs a fixed one: a convolution with "
                "a spatial kernel and desire_transform='auto', transforms.FixedShift or transforms.FixedMask."
            )
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
        """The plain weights PW, a float32 tensor (for a `WeightNormalization`, `g·v/||v||`)."""
        return self.wrapped_kernels()[0]

    def shadow_kernel(self, seed):
        """Returns `SW = T(PW)` (float32 tensor) for one draw from `seed` (a `SeedGenerator` or an int)."""
        sw = self.transform(self.plain_kernel(), seed, self._spatial_axes)
        if self.alpha is not None:
            sw = sw * read_float32(self.alpha)
        return sw

    def call_kernels(self, training=None):
        """Training: SW, a fresh draw (or PW). Inference: None (AOM) or the DOM kernel."""
        if training and not self._inference_kernels_in_training:
            if self.desire_probability == 1.0:
                return [self.desire_kernel_value()]
            if self.probability == 0.0 and self.desire_probability == 0.0:
                return None
            if self.probability == 0.0:
                kernel = self.plain_kernel()
            else:
                kernel = self.shadow_kernel(self.seed_generator)
                if self.probability < 1.0:
                    use_shadow = rng.uniform((), seed=self.seed_generator) < self.probability
                    kernel = ops.where(use_shadow, kernel, self.plain_kernel())
            if self.desire_probability > 0.0:
                # One more draw per call, after the shadow draws, so `desire_probability=0` keeps their stream.
                use_desire = rng.uniform((), seed=self.seed_generator) < self.desire_probability
                kernel = ops.where(use_desire, self.desire_kernel_value(), kernel)
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
        """The inference kernel, PW or the full-size DOM kernel; a ValueError for a per-call DOM draw."""
        if self._mode == "desire" and self.desire_kernel is None and self._desire_fixed is None:
            raise ValueError(
                f"ShadowWeights layer {self.name!r} has no fixed inference kernel: in desire mode with "
                "desire_seed=None it draws a new one at every call."
            )
        return super().inference_kernels()

    def fold(self):
        """Plain Keras layers computing what this wrapper computes at inference (in DOM a smaller convolution).

        Returns:
            A built Keras layer (or `keras.Sequential`).

        Raises:
            ValueError: if this layer is not built, or has no fixed DOM kernel.
        """
        if self.built and self._mode == "desire":
            reduced = self.desire_plan(self.wrapped_input_shape)
            if reduced is not None:
                kernel = ops.convert_to_numpy(self.inference_kernels()[0])
                folded = reduced_convolution.fold(
                    self.target_layer, kernel, reduced, self.wrapped_input_shape, self._kernel, name=self.name
                )
                if folded is not None:
                    return folded
        return super().fold()

    def get_config(self):
        config = super().get_config()
        desire_transform = self.desire_transform
        if isinstance(desire_transform, transforms_lib.Transform):
            desire_transform = keras.saving.serialize_keras_object(desire_transform)
        transform = self._transform_argument
        if transform != "auto":
            transform = keras.saving.serialize_keras_object(transform)
        config.update(
            {
                "transform": transform,
                "mode": self._mode,
                "seed": self.seed,
                "desire_seed": self.desire_seed,
                "learnable_scale": self.learnable_scale,
                "desire_transform": desire_transform,
                "probability": self.probability,
                "desire_probability": self.desire_probability,
            }
        )
        return config
