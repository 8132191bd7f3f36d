"""Every use of a non-public Keras name in keras-wtrain, each with the reason no public one serves.

Keras 3 keeps these names out of its public API; a Keras upgrade that moves one breaks only this module. Nothing
else in keras-wtrain reads `keras.src` or a private attribute of a Keras object.
"""

import keras

# `AutocastScope` is how Keras reads a variable without autocasting it under mixed precision.
from keras.src.backend import AutocastScope

# `keras.StatelessScope` is public, the functions that find the active one are not; a kernel swap inside JAX's
# stateless train step must look up the other variables in the outer scope.
from keras.src.backend.common.stateless_scope import get_stateless_scope
from keras.src.backend.common.stateless_scope import in_stateless_scope

# Keras exports no base classes for its convolutions (`keras.layers` holds `Conv2D`, `DepthwiseConv2D`, ... but not
# `BaseConv`): listing the public subclasses instead would miss every convolution derived from these bases.
from keras.src.layers.convolutional.base_conv import BaseConv
from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
from keras.src.layers.convolutional.base_separable_conv import BaseSeparableConv

# `Functional` is not exported. `keras_wtrain.Model` serves both functional use (`Model(inputs, outputs)`) and
# subclassing; Keras' own route (`keras.Model.__init__` with graph arguments) rewrites the class's bases in place
# (`inject_functional_model_class`), which would turn `Model` itself into a `Functional` for every later subclass.
from keras.src.models.functional import Functional

__all__ = [
    "AutocastScope",
    "get_stateless_scope",
    "in_stateless_scope",
    "jax_draw_seed",
    "random_seed_dtype",
    "BaseConv",
    "BaseConvTranspose",
    "BaseDepthwiseConv",
    "BaseSeparableConv",
    "Functional",
    "functional_graph",
    "optimizer_own_variables",
    "optimizer_trainable_variables",
    "sublayers",
    "track_optimizer_variable",
]


def sublayers(model, include_self=False, recursive=True):
    """Every layer inside `model`, nested models and wrapped layers included (`Layer._flatten_layers`).

    The one Keras walk that reaches layers held by a subclassed model's attributes, inside wrappers and in nested
    models; `model.layers` lists only the direct children of a functional or Sequential model.
    """
    return list(model._flatten_layers(include_self=include_self, recursive=recursive))


def functional_graph(model):
    """`(inputs, outputs)` of a functional model or a built Sequential, with their original nesting, else None.

    `model.inputs` / `model.outputs` flatten dicts and nested lists; rebuilding the same graph needs the structure
    Keras keeps in `_inputs_struct` / `_outputs_struct` (and a Sequential's graph in `_functional`).
    """
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if not model.built or functional is None:
            return None, None
        model = functional
    if isinstance(model, Functional):
        return model._inputs_struct, model._outputs_struct
    return None, None


def optimizer_own_variables(optimizer):
    """The variables an `Optimizer` subclass created itself (`Optimizer._variables`), not a wrapped optimizer's.

    A wrapper optimizer (like Keras' own `LossScaleOptimizer`) reports its variables as its own plus the inner
    optimizer's; Keras keeps its own list in `_variables`.
    """
    return optimizer._variables


def optimizer_trainable_variables(optimizer):
    """The model variables a built optimizer was built for (`Optimizer._trainable_variables`; no public getter)."""
    return optimizer._trainable_variables


def track_optimizer_variable(optimizer, variable):
    """Adds `variable` to an optimizer's saved state (`Optimizer._track_variable`, as `LossScaleOptimizer` does)."""
    optimizer._track_variable(variable)


def random_seed_dtype():
    """The dtype of a `SeedGenerator`'s state on the current backend (`keras.src.backend.random_seed_dtype`)."""
    from keras.src.backend import random_seed_dtype as dtype

    return dtype()


def jax_draw_seed(seed):
    """The JAX PRNG key Keras' JAX backend makes of a seed, so our bits match a `SeedGenerator`'s draws."""
    from keras.src.backend.jax.random import jax_draw_seed as draw

    return draw(seed)
