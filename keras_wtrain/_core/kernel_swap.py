"""Calling a Keras layer with some of its variables replaced by tensors, gradients flowing to the variables.

The layer runs inside a `keras.StatelessScope` mapping the kernel variable to the tensor; afterwards the updates
it made to its other variables are applied and the losses it added are handed back to the caller.
"""

import keras

from keras_wtrain._core._keras_private import get_stateless_scope
from keras_wtrain._core._keras_private import in_stateless_scope


def call_with_replaced_variables(owner, layer, replacements, *args, **kwargs):
    """Calls `layer(*args, **kwargs)` with some variables replaced by tensors.

    Args:
        owner: the calling (wrapper) layer; losses the inner layer adds during
            the call (activity regularisers) are re-added to it.
        layer: a built Keras layer.
        replacements: list of `(variable, tensor)` pairs; `variable` must belong
            to `layer` (or its sub-layers) and `tensor` must have its shape.
        *args: positional arguments of the call.
        **kwargs: keyword arguments of the call.

    Returns:
        The layer's outputs, differentiable w.r.t. the replacement tensors.
    """
    outer = get_stateless_scope() if in_stateless_scope() else None
    replaced = {id(v) for v, _ in replacements}
    mapping = list(replacements)
    if outer is not None:
        for v in layer.variables:
            if id(v) not in replaced:
                value = outer.get_current_value(v)
                if value is not None:
                    mapping.append((v, value))
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        before = dict(scope.state_mapping)
        outputs = layer(*args, **kwargs)
    for v in layer.variables:
        if id(v) in replaced:
            continue
        new = scope.state_mapping.get(id(v))
        if new is not None and new is not before.get(id(v)):
            v.assign(new)
    if scope.losses:
        owner.add_loss(scope.losses)
    return outputs
