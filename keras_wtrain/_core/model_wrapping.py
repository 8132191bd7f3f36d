"""`wrap_layers`: a copy of an existing functional or Sequential model with wrapper layers around chosen layers."""

import warnings

import keras

from keras_wtrain._core._keras_private import Functional
from keras_wtrain._core._keras_private import sublayers
from keras_wtrain._core.validation import check_bool

__all__ = ["wrap_layers"]

# Keras wrappers whose inner layers `wrap_layers` offers to the filter (as `fold_layers` folds them).
_KERAS_WRAPPERS = (keras.layers.Bidirectional, keras.layers.TimeDistributed)


def _is_rebuildable(model):
    return isinstance(model, (keras.Sequential, Functional))


def _copy_layer(layer, copy_weights):
    """A new layer from `layer`'s config; built and holding `layer`'s weights when `copy_weights`."""
    clone = layer.__class__.from_config(layer.get_config())
    if not copy_weights or not layer.built or not layer.weights:
        return clone
    build_config = layer.get_build_config()
    if build_config:
        clone.build_from_config(build_config)
    if not clone.built or len(clone.weights) != len(layer.weights):
        raise ValueError(
            f"wrap_layers: cannot copy the weights of layer {layer.name!r} of type {type(layer).__name__}: a copy "
            f"built from its build config holds {len(clone.weights)} weights, the layer {len(layer.weights)}. Pass "
            "copy_weights=False to start the new model from freshly initialised weights."
        )
    clone.set_weights(layer.get_weights())
    return clone


def _inner_layer(layer, like):
    """The layer of `like`'s class inside `layer` and the wrappers around it (`layer` itself if none is)."""
    while type(layer) is not type(like) and isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def _rewrap_keras_wrapper(layer, offer, copy_weights):
    """A copy of a `Bidirectional` or `TimeDistributed` layer whose inner layers are offered to the wrapper.

    `offer(layer)` returns a fresh copy of an inner layer, wrapped or not. With `copy_weights`, each inner layer
    of the copy is built and given the original's weights before the copy is built, so wrappers start from them.
    """
    if isinstance(layer, keras.layers.Bidirectional):
        copy = keras.layers.Bidirectional(
            offer(layer.forward_layer),
            backward_layer=offer(layer.backward_layer),
            merge_mode=layer.merge_mode,
            name=layer.name,
            trainable=layer.trainable,
            dtype=layer.dtype_policy,
        )
        pairs = [(copy.forward_layer, layer.forward_layer), (copy.backward_layer, layer.backward_layer)]
    else:
        copy = keras.layers.TimeDistributed(
            offer(layer.layer), name=layer.name, trainable=layer.trainable, dtype=layer.dtype_policy
        )
        pairs = [(copy.layer, layer.layer)]
    if copy_weights and layer.built:
        for new, original in pairs:
            inner = _inner_layer(new, original)
            if original.built and original.weights:
                inner.build_from_config(original.get_build_config())
                inner.set_weights(original.get_weights())
        copy.build_from_config(layer.get_build_config())
    return copy


def _make_wrap(wrapper, wrapper_kwargs, copy_weights):
    """`wrapper` as a function `layer -> layer`, with the `data_init` default of `WeightNormalization`."""
    if isinstance(wrapper, type):
        from keras_wtrain.weight_normalization.wrapper import WeightNormalization

        if issubclass(wrapper, WeightNormalization) and copy_weights:
            # The copied weights are the model's own: a data-dependent init would overwrite g and the biases.
            wrapper_kwargs = {"data_init": False, **wrapper_kwargs}
    wrapper_name = getattr(wrapper, "__name__", type(wrapper).__name__)

    def wrap(layer):
        out = wrapper(layer, **wrapper_kwargs)
        if not isinstance(out, keras.layers.Layer):
            raise TypeError(
                f"wrap_layers: argument `wrapper`: {wrapper_name}(layer) must return a Keras layer; for layer "
                f"{layer.name!r} it returned {out!r} of type {type(out).__name__}."
            )
        return out

    return wrap


def wrap_layers(model, wrapper, layer_filter=None, copy_weights=True, **wrapper_kwargs):
    """Returns a copy of a functional or Sequential `model` in which `wrapper` wraps the layers `layer_filter` picks.

    The Keras way to add weight normalization or shadow weights to a model you did not write layer by layer
    (a `keras.applications` network, a loaded model): `keras.models.clone_model` with the clone function
    written for you. Nested functional and Sequential models (e.g. a backbone inside a classifier) are rebuilt
    the same way, and the layers inside a `Bidirectional` or `TimeDistributed` are offered too (giving
    `Bidirectional(WeightNormalization(LSTM))`); every other layer is copied as it is. The original model is left
    untouched.

    With `copy_weights=True` (the default) every layer of the new model starts from the original's weights.
    A wrapper then computes what the plain layer did: `WeightNormalization` starts with `g = ||v||` and
    `ShadowWeights` infers with the plain weights, so the new model's inference outputs equal the original's.
    For the same reason a `WeightNormalization` class wrapper gets `data_init=False` by default here: the
    data-dependent init would overwrite `g` and the biases, i.e. the weights you copied (pass `data_init=True`
    to run it anyway, e.g. on an untrained model). With `copy_weights=False` the layers are freshly
    initialised from their configs (as `clone_model` does) and the wrapper's own defaults apply.

    Apply it before `keras_wtrain.wrap` (loss noise, gradient dropout): a model subclass's own settings are not
    carried over, since the copy is built from the model's inputs and outputs as `clone_model` does.

    Cost: one copy of the model's weights (plus the wrappers' own variables), made once.

    Args:
        model: a functional or Sequential Keras model.
        wrapper: a wrapper layer class, such as `keras_wtrain.layers.WeightNormalization` or
            `keras_wtrain.layers.ShadowWeights`, or a function `f(layer, **wrapper_kwargs) -> layer` (it may
            return the layer unchanged). It receives the copy of each picked layer, never the original.
        layer_filter: a predicate `f(layer) -> bool` called with each original layer (not Input layers, not
            nested functional or Sequential models: their own layers are offered instead, nor a `Bidirectional`
            or `TimeDistributed` it rejects: its inner layers are); the layers for which it is true are wrapped.
            None picks every layer the wrapper class supports (its `supports(layer)`), or, for a wrapper without
            `supports`, every layer.
        copy_weights: whether the new model starts from `model`'s weights (True) or from freshly initialised
            weights (False).
        **wrapper_kwargs: keyword arguments for every `wrapper(...)` call, e.g. `seed=0` or
            `transform="dropconnect"` for `ShadowWeights`, `data_init=True` for `WeightNormalization`.

    Returns:
        A new functional or Sequential model (the same kind as `model`); compiled with `model`'s compile settings
        (a new optimizer) if `model` was compiled, as `clone_model` does, else uncompiled.

    Raises:
        TypeError: if `model` is not a Keras model or is a subclassed model (its layers cannot be replaced from
            outside: wrap them where the model creates them), if `wrapper` or `layer_filter` is not callable,
            or if `wrapper` returns something other than a Keras layer. A wrapper class that cannot wrap a
            layer `layer_filter` picked (e.g. `WeightNormalization` on a `BatchNormalization`) raises its own
            error.
        ValueError: if a layer's weights cannot be copied (pass `copy_weights=False`).

    Example:

    ```python
    import keras
    import numpy as np
    import keras_wtrain
    from keras_wtrain.layers import WeightNormalization

    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(hidden))
    model = keras.Model(inputs, outputs)

    wrapped = keras_wtrain.wrap_layers(model, WeightNormalization)  # the Conv2D and the Dense
    print([type(layer).__name__ for layer in wrapped.layers])
    x = np.random.rand(2, 8, 8, 3).astype("float32")
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"wrap_layers: argument `model` must be a functional or Sequential Keras model; received {model!r} "
            f"of type {type(model).__name__}."
        )
    if not _is_rebuildable(model):
        raise TypeError(
            "wrap_layers: argument `model`: replacing layers needs a functional or Sequential model (it is rebuilt "
            f"layer by layer); received a subclassed {type(model).__name__}, whose layers cannot be replaced from "
            "outside. Wrap the layers where the model creates them, e.g. "
            "`self.dense = WeightNormalization(keras.layers.Dense(...))` in its `__init__`."
        )
    if not callable(wrapper):
        raise TypeError(
            "wrap_layers: argument `wrapper` must be a wrapper layer class (e.g. WeightNormalization) or a "
            f"function `f(layer) -> layer`; received {wrapper!r} of type {type(wrapper).__name__}."
        )
    if layer_filter is None:
        layer_filter = getattr(wrapper, "supports", None) or (lambda layer: True)
    elif not callable(layer_filter):
        raise TypeError(
            "wrap_layers: argument `layer_filter` must be a function `f(layer) -> bool` or None; received "
            f"{layer_filter!r} of type {type(layer_filter).__name__}."
        )
    copy_weights = check_bool("copy_weights", copy_weights, owner="wrap_layers")
    wrap = _make_wrap(wrapper, wrapper_kwargs, copy_weights)

    def clone_function(layer):
        if isinstance(layer, keras.Model) and not _is_rebuildable(layer):
            missed = [inner.name for inner in sublayers(layer) if layer_filter(inner)]
            if missed:
                warnings.warn(
                    f"wrap_layers: layer {layer.name!r} of `model` is a subclassed {type(layer).__name__}; its layers "
                    f"cannot be replaced from outside, so {', '.join(repr(name) for name in missed)} stay unwrapped.",
                    UserWarning,
                    stacklevel=4,
                )
        if isinstance(layer, _KERAS_WRAPPERS) and not layer_filter(layer):
            inner = [layer.forward_layer, layer.backward_layer] if hasattr(layer, "forward_layer") else [layer.layer]
            if any(layer_filter(sublayer) for sublayer in inner):
                return _rewrap_keras_wrapper(layer, offer, copy_weights)
        return offer(layer, copy_weights)

    def offer(layer, copy_weights=False):
        copy = _copy_layer(layer, copy_weights)
        return wrap(copy) if layer_filter(layer) else copy

    return keras.models.clone_model(model, clone_function=clone_function, recursive=True)
