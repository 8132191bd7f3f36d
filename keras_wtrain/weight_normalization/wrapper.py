"""Weight normalization (Salimans & Kingma, arXiv:1602.07868): the `WeightNormalization` wrapper and its folding.

Data-dependent init lives in `data_init`, `MeanOnlyBatchNormalization` in `mean_only_batch_normalization`.
"""

import warnings

import keras
import numpy as np
from keras import ops

from keras_wtrain._core import layer_kinds
from keras_wtrain._core._keras_private import sublayers
from keras_wtrain._core.kernel_reparametrization import KernelReparametrization
from keras_wtrain._core.kernel_reparametrization import fold_model
from keras_wtrain._core.kernel_reparametrization import read_float32
from keras_wtrain._core.validation import check_bool

__all__ = [
    "WeightNormalization",
    "fold_weight_normalization",
    "weight_normalization_layers",
]

_EPSILON = 1e-12
SUPPORTED_LAYERS = layer_kinds.WEIGHT_NORMALIZATION_LAYERS

_NOT_INITIALIZED_WARNING = (
    "WeightNormalization layers with data_init=True are training before their data-dependent initialisation "
    "ran, so they start from g = ||v|| and the initial bias. Initialise them on one batch before fit: call "
    "keras_wtrain.initialize_weight_normalization(model, x_batch), pass the "
    "keras_wtrain.callbacks.WeightNormalizationInitializer(data) callback to fit, or train a keras_wtrain.Model "
    "(its fit does it); pass data_init=False to train without it."
)


class _KernelNorm(keras.initializers.Initializer):
    """Initial value of `g`: the kernel's norm, read when the variable is initialised (works in a symbolic build)."""

    def __init__(self, kernel, axes):
        self.kernel = kernel
        self.axes = axes

    def __call__(self, shape, dtype=None):
        v = read_float32(self.kernel)
        norm = ops.sqrt(ops.sum(ops.square(v), axis=self.axes) + _EPSILON)
        return ops.cast(ops.reshape(norm, shape), dtype or "float32")


@keras.saving.register_keras_serializable(package="keras_wtrain")
class WeightNormalization(KernelReparametrization):
    """Weight normalization wrapper (Salimans & Kingma, arXiv:1602.07868): `w = g * v / ||v||` per output unit.

    `v` is the wrapped layer's kernel (direction), `g` a new variable (length) starting at `||v||`, so a fresh
    wrapper computes what the plain layer did; bias and activation are kept. Norm axes per layer: see the
    technique page. With `data_init=True`, run `keras_wtrain.initialize_weight_normalization(model, x)` (or
    the `WeightNormalizationInitializer` callback) before training. `fold()` gives a plain Keras layer.
    Cost: one `g` per output unit; one kernel-sized norm and product per call, in float32.

    Args:
        layer: the layer to wrap: Dense, Conv1D/2D/3D(Transpose), DepthwiseConv1D/2D, SeparableConv1D/2D,
            SimpleRNN, GRU or LSTM.
        data_init: whether the data-dependent init (`g`, bias from one batch) should run before training.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Raises:
        TypeError: if `layer` is not a Keras layer or has no supported kernel.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers import WeightNormalization

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(3))])
    y = model(np.ones((2, 8), "float32"))
    ```
    """

    supports = staticmethod(layer_kinds.supports_weight_normalization)
    supported_layers = SUPPORTED_LAYERS

    def __init__(self, layer, data_init=True, **kwargs):
        super().__init__(layer, **kwargs)
        self.data_init = check_bool("data_init", data_init, owner="WeightNormalization")
        # Set by `initialize_weight_normalization` while it runs the model (see weight_normalization_init).
        self._data_init_pass = None
        # Whether the data-dependent init is known to have run (mirrors the `initialized` variable, which a
        # traced training step cannot read); a training call warns once while it is False.
        self._data_init_done = not data_init
        self._warned_not_initialized = False

    def kernel_variables(self):
        self._specs = layer_kinds.weight_normalization_kernels(self.target_layer)
        return [kernel for kernel, _ in self._specs]

    def build(self, input_shape=None):
        super().build(input_shape)
        self.g_weights = []
        for kernel, axes in self._specs:
            self.g_weights.append(
                self.add_weight(
                    name=f"{kernel.name}_g",
                    shape=tuple(d for i, d in enumerate(kernel.shape) if i not in axes),
                    initializer=_KernelNorm(kernel, axes),
                    trainable=True,
                    autocast=False,
                )
            )
        self.initialized = self.add_weight(
            name="data_initialized",
            shape=(),
            initializer="zeros",
            trainable=False,
            autocast=False,
        )
        self.built = True

    def _norm(self, v, axes):
        return ops.sqrt(ops.sum(ops.square(v), axis=axes, keepdims=True) + _EPSILON)

    @staticmethod
    def _keepdims_shape(kernel, axes):
        return tuple(1 if i in axes else d for i, d in enumerate(kernel.shape))

    def effective_kernels(self):
        """The effective kernels `g * v / ||v||`, float32 tensors, one per normalised kernel."""
        kernels = []
        for (kernel, axes), v, g in zip(self._specs, self.wrapped_kernels(), self.g_weights):
            g32 = ops.reshape(read_float32(g), self._keepdims_shape(kernel, axes))
            kernels.append(v * (g32 / self._norm(v, axes)))
        return kernels

    def call_kernels(self, training=None):
        return self.effective_kernels()

    def call(self, inputs, training=None, mask=None, **kwargs):
        if self._data_init_pass is not None:
            return self._data_init_pass.call(self, inputs, training=training, mask=mask, **kwargs)
        if training and not self._data_init_done and not self._warned_not_initialized:
            self._warned_not_initialized = True
            warnings.warn(_NOT_INITIALIZED_WARNING, UserWarning, stacklevel=2)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    # ----------------------------------------------------------------- data-dependent init (driven from outside)

    def direction_preactivations(self, inputs, training=None, mask=None):
        """Pre-activations `t = v·x/||v||` of `inputs` (no bias, activation): float32 `(positions, channels)`."""
        (kernel, axes), v = self._specs[0], self.wrapped_kernels()[0]
        replacements = [(kernel, v / self._norm(v, axes))]
        target = self.target_layer
        kwargs = {}
        if training is not None:
            kwargs["training"] = training
        if mask is not None and getattr(target, "_call_has_mask_arg", False):
            kwargs["mask"] = mask
        bias = getattr(target, "bias", None)
        if bias is not None:
            replacements.append((bias, ops.zeros(bias.shape, bias.dtype)))
        activation = target.activation
        target.activation = keras.activations.linear
        try:
            t = self.call_target_layer(inputs, replacements, **kwargs)
        finally:
            target.activation = activation
        t = np.asarray(ops.convert_to_numpy(ops.cast(t, "float32")))
        channels_first = getattr(target, "data_format", "channels_last") == "channels_first"
        t = np.moveaxis(t, 1, -1) if channels_first else t
        return t.reshape(-1, t.shape[-1])

    def set_data_init(self, mean=None, std=None):
        """Sets `g = 1/std`, `bias = -mean/std` per output unit (unless None) and marks the layer initialised."""
        if mean is not None:
            g = self.g_weights[0]
            g.assign(np.reshape(1.0 / std, g.shape).astype(g.dtype))
            bias = getattr(self.target_layer, "bias", None)
            if bias is not None:
                bias.assign((-mean / std).astype(bias.dtype))
        self.initialized.assign(1.0)
        self._data_init_done = True

    def is_initialized(self):
        """Whether the data-dependent init has run (reads the `initialized` flag; eager only)."""
        done = float(ops.convert_to_numpy(self.initialized)) == 1.0
        self._data_init_done = done or not self.data_init
        return done

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:  # a model saved before it was built loads unbuilt and builds on its first call
            self.is_initialized()

    def get_config(self):
        config = super().get_config()
        config["data_init"] = self.data_init
        return config


def weight_normalization_layers(model):
    """Lists the `WeightNormalization` layers of `model`, nested models included.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of `WeightNormalization` layers.

    Example:

    ```python
    import keras
    from keras_wtrain.layers import WeightNormalization
    from keras_wtrain.weight_normalization.wrapper import weight_normalization_layers

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))])
    assert len(weight_normalization_layers(model)) == 1
    ```
    """
    layers = sublayers(model, include_self=True)
    return [layer for layer in layers if isinstance(layer, WeightNormalization)]


def fold_weight_normalization(model):
    """Returns a copy of `model` with every `WeightNormalization` replaced by its plain layer (`kernel = g*v/||v||`).

    Outputs are unchanged; other layers are copied with their weights. Cost: one copy of the model's weights.

    Args:
        model: a functional or Sequential Keras model.

    Returns:
        A new functional or Sequential model.

    Raises:
        TypeError: if `model` is subclassed (fold its layers with `WeightNormalization.fold()`).

    Example:

    ```python
    import keras
    import numpy as np
    import keras_wtrain
    from keras_wtrain.layers import WeightNormalization

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))])
    x = np.ones((2, 8), "float32")
    np.testing.assert_allclose(model(x), keras_wtrain.fold_weight_normalization(model)(x), atol=1e-5)
    ```
    """
    return fold_model(model, WeightNormalization, caller="fold_weight_normalization")
