"""Calling a Keras layer with some of its variables replaced by tensors.

Both wrappers of this library (`WeightNormalization` and `ShadowWeights`)
compute an *effective* kernel as a differentiable tensor (`g * v / ||v||`,
`T(PW)`) and must make the wrapped layer compute with it, while gradients flow
back to the stored variables. Keras' `SpectralNormalization` *assigns* the new
kernel, which cuts the gradient path. Here the inner layer is instead called
inside a `keras.StatelessScope` whose state mapping points the kernel variable
at the tensor: the layer's own maths runs unchanged for every layer kind
(Dense, convolutions, recurrent cells), on every backend, under `jit_compile`.

The scope captures assignments instead of applying them, so after the call the
updates the inner layer made to its *other* variables (seed-generator states,
moving statistics) are applied, and losses it added are handed back to the
caller. When an outer stateless scope is active (JAX's stateless train step),
the inner layer's other variables are looked up there so gradients reach them.
"""

import keras

# Keras exports `keras.StatelessScope` but not the functions that find the active one; these are Keras' own.
from keras.src.backend.common.stateless_scope import get_stateless_scope
from keras.src.backend.common.stateless_scope import in_stateless_scope


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
