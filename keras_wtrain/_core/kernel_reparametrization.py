"""Base class of wrappers (`WeightNormalization`, `ShadowWeights`) making a layer compute with a reparametrised kernel.

A subclass names the kernels (`kernel_variables`) and what replaces them (`call_kernels`); the base class does
the layer check, the kernel swap (gradients reach the stored variables, unlike Keras' `SpectralNormalization`),
shape delegation, config, nesting and folding (`fold`, `fold_layers`), like `torch.nn.utils.parametrize`.
"""

import keras
from keras import ops

from keras_wtrain._core import layer_kinds
from keras_wtrain._core._keras_private import AutocastScope
from keras_wtrain._core._keras_private import Functional
from keras_wtrain._core._keras_private import sublayers
from keras_wtrain._core.kernel_swap import call_with_replaced_variables

__all__ = ["KernelReparametrization", "fold_layers", "read_float32"]


def read_float32(variable):
    """The value of a Keras variable as a float32 tensor, never autocast (mixed precision).

    Example:

    ```python
    import keras
    from keras_wtrain._core.kernel_reparametrization import read_float32

    assert read_float32(keras.Variable([1.0, 2.0])).dtype == "float32"
    ```
    """
    with AutocastScope(None):
        return ops.cast(variable.value, "float32")


class KernelReparametrization(keras.layers.Wrapper):
    """Base class of wrappers that make the wrapped layer compute with an effective kernel.

    At every call, `call_kernels(training)` returns the tensors that replace
    the kernel variables listed by `kernel_variables()` for that call (or None
    to run the wrapped layer unchanged); the wrapped layer's own maths, bias,
    activation and other variables are untouched, and the gradient flows
    through the effective kernels to the variables they are computed from.

    Subclasses set `supports` (a predicate `layer -> bool`, usually from
    `keras_wtrain._core.layer_kinds`) and `supported_layers` (a description for
    error messages), implement `kernel_variables` and `call_kernels`, and
    create their own variables in `build` after calling `super().build`.

    Args:
        layer: the layer to wrap.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Raises:
        TypeError: if `layer` is not a Keras layer, or `supports(layer)` is false.

    Example:

    ```python
    import keras
    from keras_wtrain.layers import KernelReparametrization
    from keras_wtrain.layers import WeightNormalization

    assert issubclass(WeightNormalization, KernelReparametrization)
    layer = WeightNormalization(keras.layers.Dense(4), data_init=False)
    layer.build((None, 3))
    assert layer.target_layer is layer.layer and layer.kernel_variables() == [layer.layer.kernel]
    ```
    """

    supports = staticmethod(lambda layer: False)
    supported_layers = ""

    def __init__(self, layer, **kwargs):
        self._check_layer(layer)
        super().__init__(layer, **kwargs)
        self.supports_masking = getattr(layer, "supports_masking", False)

    @classmethod
    def _check_layer(cls, layer):
        name = cls.__name__
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"{name}: argument `layer` must be a Keras layer, received {layer!r} of type "
                f"{type(layer).__name__}. Supported layers: {cls.supported_layers}."
            )
        if not cls.supports(layer):
            wrapping = f" (wrapping {type(layer.layer).__name__})" if isinstance(layer, keras.layers.Wrapper) else ""
            raise TypeError(
                f"{name} cannot wrap layer {layer.name!r} of type {type(layer).__name__}{wrapping}: it has no "
                f"supported kernel. Supported layers: {cls.supported_layers}."
            )

    # ----------------------------------------------------------------- recurrent layers (Bidirectional)

    # `keras.layers.Bidirectional` reads these attributes of the layer it is given and builds its backward copy
    # from that layer's config with `go_backwards` flipped; a wrapper of an RNN reads and takes them from the RNN.
    _RECURRENT_ATTRIBUTES = ("go_backwards", "return_sequences", "return_state", "stateful")

    def __getattr__(self, name):
        # Called only when normal lookup fails: delegates the recurrent attributes to a wrapped RNN.
        if name in KernelReparametrization._RECURRENT_ATTRIBUTES or name == "zero_output_for_mask":
            layer = self.__dict__.get("layer")
            if isinstance(layer, keras.layers.RNN) or isinstance(layer, KernelReparametrization):
                return getattr(layer, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name == "zero_output_for_mask" and isinstance(self.__dict__.get("layer"), keras.layers.RNN):
            setattr(self.layer, name, value)  # Bidirectional sets it on the layer it runs
            return
        super().__setattr__(name, value)

    @property
    def states(self):
        """The states of a wrapped stateful RNN (what `Bidirectional` and `reset_state` read)."""
        return self.layer.states

    def reset_state(self):
        """Resets the states of a wrapped stateful RNN."""
        self.layer.reset_state()

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # `Bidirectional` sets `go_backwards` in the config of the layer it is given: it belongs to the wrapped RNN.
        if "go_backwards" in config:
            go_backwards = config.pop("go_backwards")
            layer = dict(config["layer"])
            layer["config"] = {**layer["config"], "go_backwards": go_backwards}  # a nested wrapper passes it on
            config["layer"] = layer
        return super().from_config(config)

    @property
    def target_layer(self):
        """The layer whose kernel variables are replaced: the wrapped layer, unwrapped from nested wrappers."""
        layer = self.layer
        while isinstance(layer, KernelReparametrization):
            layer = layer.layer
        return layer

    # ----------------------------------------------------------------- subclass interface

    def kernel_variables(self):
        """The kernel variables of `target_layer` this wrapper replaces (called once the layer is built).

        Returns:
            A list of Keras variables.
        """
        raise NotImplementedError

    def call_kernels(self, training=None):
        """The tensors that replace `kernel_variables()` for one call.

        Args:
            training: the call's `training` argument.

        Returns:
            A list of tensors (one per kernel variable, of its shape), or None
            to call the wrapped layer unchanged.
        """
        raise NotImplementedError

    def inference_kernels(self):
        """The kernels this wrapper computes with at inference, float32 tensors, one per kernel variable.

        `fold()` builds its plain layer from them and an outer wrapper starts
        from them. Default: `call_kernels(training=False)`, or
        `wrapped_kernels()` when that is None.
        """
        kernels = self.call_kernels(training=False)
        return self.wrapped_kernels() if kernels is None else kernels

    # ----------------------------------------------------------------- shared machinery

    def wrapped_kernels(self):
        """The kernels the wrapped layer computes with, float32 tensors, one per kernel variable.

        For a plain wrapped layer these are its kernel variables' values; for a
        nested wrapper, its `inference_kernels()` (differentiable w.r.t. its
        variables).
        """
        if isinstance(self.layer, KernelReparametrization):
            inner = dict(zip((id(v) for v in self.layer._kernels), self.layer.inference_kernels()))
            return [inner[id(v)] if id(v) in inner else read_float32(v) for v in self._kernels]
        return [read_float32(v) for v in self._kernels]

    def build(self, input_shape=None):
        super().build(input_shape)
        self.wrapped_input_shape = input_shape
        self._kernels = list(self.kernel_variables())

    def call(self, inputs, training=None, mask=None, **kwargs):
        kernels = self.call_kernels(training)
        layer = self.layer if kernels is None else self.target_layer
        if training is not None:
            kwargs["training"] = training
        if mask is not None and getattr(layer, "_call_has_mask_arg", False):
            kwargs["mask"] = mask
        if kernels is None:
            return self.layer(inputs, **kwargs)
        return self.call_target_layer(inputs, list(zip(self._kernels, kernels)), **kwargs)

    def call_target_layer(self, inputs, replacements, **kwargs):
        """Calls `target_layer(inputs, **kwargs)` with the `(variable, tensor)` pairs of `replacements` swapped in."""
        return call_with_replaced_variables(self, self.target_layer, replacements, inputs, **kwargs)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return self.layer.compute_output_shape(input_shape, *args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        kwargs.pop("training", None)
        if not getattr(self.layer, "_call_has_mask_arg", False):
            kwargs.pop("mask", None)
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def fold(self):
        """Returns a plain copy of the wrapped layer that computes what this wrapper computes at inference.

        The copy is a new, built instance of `target_layer`'s class with the
        same config and weights, and `inference_kernels()` as its kernels.

        Returns:
            A built Keras layer.

        Raises:
            ValueError: if this layer is not built.
        """
        if not self.built:
            raise ValueError(f"{type(self).__name__} layer {self.name!r} must be built before `fold()`.")
        target = self.target_layer
        folded = dict(zip((id(v) for v in self._kernels), self.inference_kernels()))
        layer = target.__class__.from_config(target.get_config())
        layer.build(self.wrapped_input_shape)
        values = []
        for variable in target.weights:
            value = folded.get(id(variable))
            values.append(ops.convert_to_numpy(variable.value if value is None else value))
        layer.set_weights(values)
        return layer


def _all_layers(model):
    return sublayers(model, include_self=True)


def _copy_layer(layer):
    clone = layer.__class__.from_config(layer.get_config())
    if isinstance(layer, keras.layers.InputLayer):
        return clone
    build_config = layer.get_build_config()
    if build_config:
        clone.build_from_config(build_config)
    clone.set_weights(layer.get_weights())
    return clone


def _fold_keras_wrapper(layer, fold_or_copy):
    """A copy of a `Bidirectional` or `TimeDistributed` layer whose inner layers are folded (`fold_or_copy`)."""
    if isinstance(layer, keras.layers.Bidirectional):
        forward, backward = fold_or_copy(layer.forward_layer), fold_or_copy(layer.backward_layer)
        folded = keras.layers.Bidirectional(
            forward, backward_layer=backward, merge_mode=layer.merge_mode, name=layer.name
        )
        inner = [(folded.forward_layer, forward), (folded.backward_layer, backward)]
    else:
        inner_layer = fold_or_copy(layer.layer)
        folded = keras.layers.TimeDistributed(inner_layer, name=layer.name)
        inner = [(folded.layer, inner_layer)]
    folded.build_from_config(layer.get_build_config())
    for new, source in inner:  # Bidirectional rebuilds its forward layer from the config: weights set again
        new.set_weights(source.get_weights())
    return folded


def _call_with_accepted_arguments(layer, *args, **kwargs):
    """`layer(*args, **kwargs)` without the `mask`/`training` its `call` does not take.

    A functional model records the `mask` its wrapper layers' `call` takes; the plain layer a wrapper folds into
    may not take it (`Dense.call` has no `mask`), so it is dropped, as Keras' own `Layer.__call__` does.
    """
    for name in ("mask", "training"):
        if name in kwargs and not layer_kinds.call_accepts(layer, name):
            kwargs.pop(name)
    return layer(*args, **kwargs)


def fold_layers(model, kinds=KernelReparametrization):
    """Returns a copy of `model` with every wrapper of `kinds` replaced by its `fold()`.

    Every other layer is copied with its weights; nested models holding such
    wrappers are folded too. The new model computes what `model` computes at
    inference.

    Args:
        model: a functional or Sequential Keras model.
        kinds: a `KernelReparametrization` subclass (or a tuple of them) to fold.

    Returns:
        A new functional or Sequential model.

    Raises:
        TypeError: if `model` is a subclassed model (fold its layers with
            `fold()` instead).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.layers import ShadowWeights
    from keras_wtrain._core.kernel_reparametrization import fold_layers

    model = keras.Sequential([keras.Input((8,)), ShadowWeights(keras.layers.Dense(4), "dropconnect", mode="desire")])
    plain = fold_layers(model)  # a plain Dense holding the fixed desire-mode kernel
    x = np.ones((2, 8), "float32")
    np.testing.assert_allclose(model(x), plain(x), atol=1e-5)
    ```
    """
    return fold_model(model, kinds, caller="fold_layers")


def fold_model(model, kinds, caller):
    """`fold_layers` with the name of the public function (`caller`) in its error message."""
    # `Functional` is not exported by Keras; it is the class of every functional model.

    if not isinstance(model, (keras.Sequential, Functional)):
        raise TypeError(
            f"{caller}: argument `model` must be a functional or Sequential model, received a subclassed "
            f"{type(model).__name__}; call `fold()` on its wrapper layers instead."
        )

    def holds(layer):
        return any(isinstance(inner, kinds) for inner in _all_layers(layer))

    def fold_or_copy(layer):
        if isinstance(layer, kinds):
            return layer.fold()
        if isinstance(layer, keras.Model) and holds(layer):
            return fold_model(layer, kinds, caller)
        if isinstance(layer, (keras.layers.Bidirectional, keras.layers.TimeDistributed)) and holds(layer):
            return _fold_keras_wrapper(layer, fold_or_copy)
        return _copy_layer(layer)

    if isinstance(model, keras.Sequential):
        folded = keras.Sequential(name=model.name)
        if model.inputs:
            folded.add(keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype))
        for layer in model.layers:
            folded.add(fold_or_copy(layer))
        return folded
    return keras.models.clone_model(model, clone_function=fold_or_copy, call_function=_call_with_accepted_arguments)
