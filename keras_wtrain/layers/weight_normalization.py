"""Weight normalization (Salimans & Kingma, arXiv:1602.07868).

`WeightNormalization` reparameterises every output unit's weight vector of a
wrapped layer as `w = g * v / ||v||`. Its companions live next door:
`keras_wtrain.layers.weight_normalization_init` runs the paper's
data-dependent initialisation (`initialize_weight_normalization`),
`keras_wtrain.layers.mean_only_batch_normalization` holds the paper's
`MeanOnlyBatchNormalization`; `fold_weight_normalization` turns a trained
model back into plain Keras layers for export and serving. Every name stays
importable from this module.
"""

import importlib
import warnings

import keras
import numpy as np
from keras import ops

from keras_wtrain import layer_kinds
from keras_wtrain.layers.kernel_reparametrization import KernelReparametrization
from keras_wtrain.layers.kernel_reparametrization import fold_model
from keras_wtrain.layers.kernel_reparametrization import read_float32
from keras_wtrain.layers.mean_only_batch_normalization import MeanOnlyBatchNormalization  # noqa: F401 (old path)
from keras_wtrain.validation import check_bool

__all__ = [
    "MeanOnlyBatchNormalization",
    "WeightNormalization",
    "fold_weight_normalization",
    "weight_normalization_layers",
]

_EPSILON = 1e-12
SUPPORTED_LAYERS = layer_kinds.WEIGHT_NORMALIZATION_LAYERS

# Names that moved to their own module, still importable from here (loaded on first use: that module imports
# this one).
_MOVED = {
    "initialize_weight_normalization": "keras_wtrain.layers.weight_normalization_init",
    "needs_data_init": "keras_wtrain.layers.weight_normalization_init",
}

_NOT_INITIALIZED_WARNING = (
    "WeightNormalization layers with data_init=True are training before their data-dependent initialisation "
    "ran, so they start from g = ||v|| and the initial bias. Initialise them on one batch before fit: call "
    "keras_wtrain.initialize_weight_normalization(model, x_batch), pass the "
    "keras_wtrain.callbacks.WeightNormalizationInitializer(data) callback to fit, or train a keras_wtrain.Model "
    "(its fit does it); pass data_init=False to train without it."
)


def __getattr__(name):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _KernelNorm(keras.initializers.Initializer):
    """Initial value of `g`: the norm of the kernel, read when the variable is initialised.

    Inside a symbolic build (a subclassed model's first call, `compute_output_spec`)
    Keras defers variable initialisation until the build is over and then runs
    the initializers eagerly, after the kernel's own; a tensor computed in
    `build` would belong to the discarded scratch graph.
    """

    def __init__(self, kernel, axes):
        self.kernel = kernel
        self.axes = axes

    def __call__(self, shape, dtype=None):
        v = read_float32(self.kernel)
        norm = ops.sqrt(ops.sum(ops.square(v), axis=self.axes) + _EPSILON)
        return ops.cast(ops.reshape(norm, shape), dtype or "float32")


@keras.saving.register_keras_serializable(package="keras_wtrain")
class WeightNormalization(KernelReparametrization):
    """Weight normalization wrapper (Salimans & Kingma, arXiv:1602.07868).

    Each output unit's weight vector of the wrapped layer is reparameterised as
    `w = g * v / ||v||`: `v` (the wrapped layer's own kernel variable) holds the
    direction and a new variable `g` the length. Gradient descent runs on `g`
    and `v`; the effective kernel is recomputed, in float32, at every call and
    the wrapped layer computes with it (its bias and activation are kept).

    The norm runs over every kernel axis except the output-unit axes: Dense
    `(in, out)` over axis 0; ConvND `(*k, in, out)` over all but the last;
    ConvNDTranspose `(*k, out, in)` over all but axis -2; DepthwiseConv
    `(*k, in, mult)` over the spatial axes (one `g` per `(in, mult)` pair);
    SeparableConv normalises its pointwise kernel; SimpleRNN, GRU and LSTM
    normalise both the kernel and the recurrent kernel per gate unit (see
    `keras_wtrain.layer_kinds.weight_normalization_kernels`).

    `g` starts at `||v||`, so a freshly wrapped layer computes exactly what the
    plain layer did. With `data_init=True`, the paper's data-dependent
    initialisation (`g = 1/sigma`, `b = -mu/sigma` from one real batch) runs
    once, eagerly, before training: call
    `keras_wtrain.initialize_weight_normalization(model, x_batch)`, pass the
    `keras_wtrain.callbacks.WeightNormalizationInitializer(data)` callback to
    `fit`, or train a `keras_wtrain.Model`, whose `fit` does it on the first
    batch. A layer that starts training without it warns once. It is not
    defined for recurrent layers, which keep `g = ||v||`.

    Use `fold()` (one layer) or `keras_wtrain.fold_weight_normalization(model)`
    (a whole model) to get plain Keras layers with `kernel = g * v / ||v||`.

    Args:
        layer: the layer to wrap. Supported: Dense, Conv1D/2D/3D,
            Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D,
            SimpleRNN, GRU, LSTM.
        data_init: whether the data-dependent initialisation should run before
            training (it sets `g` and the bias from the first batch).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Raises:
        TypeError: if `layer` is not a Keras layer.
        ValueError: if `layer` has no supported kernel.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers import WeightNormalization

    model = keras.Sequential([
        keras.Input((8,)),
        WeightNormalization(keras.layers.Dense(16, activation="relu")),
        WeightNormalization(keras.layers.Dense(3)),
    ])
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
        """The pre-activations `t = v·x/||v||` (no bias, no activation) of `inputs`, eagerly, channels last.

        The data-dependent init standardises them (`g = 1/std(t)`, `b = -mean(t)/std(t)`).
        Not defined for recurrent layers.

        Returns:
            A 2-D float32 numpy array `(positions, channels)`.
        """
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
        """Sets `g = 1/std` and `bias = -mean/std` (per output unit) and marks the layer initialised.

        With `mean`/`std` None (recurrent layers) only the mark is set.
        """
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
        self.is_initialized()

    def get_config(self):
        config = super().get_config()
        config["data_init"] = self.data_init
        return config


def weight_normalization_layers(model):
    """Lists the `WeightNormalization` layers of `model`, nested models included.

    Example:

    ```python
    import keras
    from keras_wtrain.layers import WeightNormalization
    from keras_wtrain.layers.weight_normalization import weight_normalization_layers

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))])
    assert len(weight_normalization_layers(model)) == 1
    ```
    """
    layers = [model, *model._flatten_layers(include_self=False, recursive=True)]
    return [layer for layer in layers if isinstance(layer, WeightNormalization)]


def fold_weight_normalization(model):
    """Returns a copy of `model` with every `WeightNormalization` folded away.

    Each wrapper is replaced by its plain wrapped layer with
    `kernel = g * v / ||v||`; every other layer is copied with its weights. The
    new model's outputs equal the original's and, unless it holds other
    keras_wtrain layers, it can be exported and served with plain Keras.

    Args:
        model: a functional or Sequential Keras model.

    Returns:
        A new functional or Sequential model.

    Raises:
        TypeError: if `model` is a subclassed model (fold its layers with
            `WeightNormalization.fold()` instead).

    Example:

    ```python
    import keras
    import numpy as np
    import keras_wtrain
    from keras_wtrain.layers import WeightNormalization

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))])
    plain = keras_wtrain.fold_weight_normalization(model)
    x = np.ones((2, 8), "float32")
    np.testing.assert_allclose(model(x), plain(x), atol=1e-5)
    ```
    """
    return fold_model(model, WeightNormalization, caller="fold_weight_normalization")
