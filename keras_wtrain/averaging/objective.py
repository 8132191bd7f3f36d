"""The selection objective of weight averaging: the mean training loss of a model at given weights.

`F(w)` is `keras_wtrain._core.objective.loss_value` (the compiled loss plus regularisation losses, in inference
mode, through `model.stateless_call`, so the model's variables are never touched) at weight values `w`. SeWA
minimises it over masks, and `SeWA.objective` reports it for any set of checkpoints.

The backend functions are compiled once per model and loss and shared by every
`SelectionObjective` on that model (a module-level cache that holds models weakly):

- TensorFlow: one concrete function per model, loss and input signature, traced with a batch
  dimension of `None`, so it never retraces. (A `tf.function` per callback retraced for each of
  the many callbacks of a comparison run, and TensorFlow logged its "retracing" warning.)
- JAX: `jax.jit` functions (compiled per input shape, silently).
- Other backends are not supported (`keras_wtrain._core.backends`).

Example:

```python
import keras
import numpy as np
from keras_wtrain.averaging.objective import SelectionObjective

model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
model.compile("sgd", "mse")
objective = SelectionObjective(model)                      # the compiled loss
x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
values = [np.asarray(v) for v in model.trainable_variables]
loss = objective.mean_loss(values, [], x, y)               # == model.evaluate(x, y)
```
"""

import weakref

import keras
import numpy as np

from keras_wtrain._core.data_adapters import num_examples
from keras_wtrain._core.data_adapters import take
from keras_wtrain._core.objective import loss_value
from keras_wtrain._core.objective import resolve_loss

__all__ = ["FlatObjective", "SelectionObjective"]

# model -> {(kind, loss, input signature): compiled function}; holds the models weakly.
_COMPILED = weakref.WeakKeyDictionary()


def _signature(tree):
    """A hashable description of an input structure, without its batch dimension."""
    return repr(keras.tree.map_structure(lambda a: (tuple(a.shape[1:]), str(a.dtype)), tree))


def _compile_tensorflow(model, loss_fn, kind, x, y):
    import tensorflow as tf

    # The closure reaches the model through a weak reference: it is needed only while tracing,
    # and the cache must not keep the model alive.
    model_ref = weakref.ref(model)

    def value(trainable, non_trainable, x, y):
        return loss_value(model_ref(), loss_fn, trainable, non_trainable, x, y)

    def value_and_grad(trainable, non_trainable, x, y):
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            result = value(trainable, non_trainable, x, y)
        grads = tape.gradient(result, trainable)
        return result, [tf.zeros_like(t) if g is None else g for g, t in zip(grads, trainable)]

    def spec(a, batched=True):
        shape = (None,) + tuple(a.shape[1:]) if batched else tuple(a.shape)
        return tf.TensorSpec(shape, keras.backend.standardize_dtype(a.dtype))

    # One trace per model, loss and input signature: `get_concrete_function` with a `None` batch
    # dimension never retraces, and calls to the concrete function bypass tf.function's retracing
    # bookkeeping, which is shared by every tf.function built from the same Python code.
    return tf.function(value if kind == "value" else value_and_grad).get_concrete_function(
        [spec(v, batched=False) for v in model.trainable_variables],
        [spec(v, batched=False) for v in model.non_trainable_variables],
        keras.tree.map_structure(spec, x),
        keras.tree.map_structure(spec, y),
    )


def _compile_jax(model, loss_fn, kind):
    import jax

    model_ref = weakref.ref(model)

    def value(trainable, non_trainable, x, y):
        return loss_value(model_ref(), loss_fn, trainable, non_trainable, x, y)

    return jax.jit(value if kind == "value" else jax.value_and_grad(value, argnums=0))


def _compiled(model, loss_fn, kind, x, y):
    """The backend function `kind` ("value" or "value_and_grad") of `model` and `loss_fn`, compiled once."""
    backend = keras.backend.backend()
    key = (kind, loss_fn, _signature(x), _signature(y))
    functions = _COMPILED.setdefault(model, {})
    if key not in functions:
        if backend == "tensorflow":
            functions[key] = _compile_tensorflow(model, loss_fn, kind, x, y)
        else:  # JAX, the only other supported backend (keras_wtrain._core.backends)
            functions[key] = _compile_jax(model, loss_fn, kind)
    return functions[key]


class SelectionObjective:
    """`F(w)`: the mean training loss of `model` at weight values `w`, and its gradient, model untouched.

    Weight values are given as two lists, in the order of `model.trainable_variables` and
    `model.non_trainable_variables` (see `FlatWeights.split`). The loss is computed in float32 in
    inference mode, plus the model's regularisation losses. Gradients are taken w.r.t. the
    trainable values only.

    Args:
        model: a built Keras model.
        loss: a single loss (name, object or function); None for the model's compiled loss.

    Raises:
        ValueError: if there is no single loss (see `resolve_loss`).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging.objective import SelectionObjective

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    objective = SelectionObjective(model, loss="mse")
    values = [np.zeros((3, 2), "float32"), np.ones(2, "float32")]   # kernel 0, bias 1: predicts 1
    assert objective.mean_loss(values, [], np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")) == 1.0
    ```
    """

    def __init__(self, model, loss=None):
        self.model = model
        self.loss_fn = resolve_loss(model, loss)

    def _tensors(self, trainable_values, non_trainable_values):
        def convert(values, variables):
            return [keras.ops.convert_to_tensor(v, dtype=var.dtype) for v, var in zip(values, variables)]

        return (
            convert(trainable_values, self.model.trainable_variables),
            convert(non_trainable_values, self.model.non_trainable_variables),
        )

    def mean_loss(self, trainable_values, non_trainable_values, x, y, batch_size=256):
        """The loss over all of `(x, y)` (batch losses weighted by batch sizes), a Python float.

        Args:
            trainable_values: values of `model.trainable_variables`.
            non_trainable_values: values of `model.non_trainable_variables`.
            x: numpy inputs (an array, or a dict / list of arrays).
            y: numpy targets.
            batch_size: examples per forward pass.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.objective import SelectionObjective

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        values = [np.asarray(v) for v in model.trainable_variables]
        SelectionObjective(model, "mse").mean_loss(values, [], np.ones((5, 3)), np.zeros((5, 1)), batch_size=2)
        ```
        """
        tv, ntv = self._tensors(trainable_values, non_trainable_values)
        function = _compiled(self.model, self.loss_fn, "value", x, y)
        total, count = 0.0, 0
        for start in range(0, num_examples(x), batch_size):
            xb, yb = take(x, slice(start, start + batch_size)), y[start : start + batch_size]
            n = num_examples(xb)
            total += float(keras.ops.convert_to_numpy(function(tv, ntv, xb, yb))) * n
            count += n
        return total / count

    def value_and_grad(self, trainable_values, non_trainable_values, x, y):
        """The loss on one batch `(x, y)` and its gradients w.r.t. the trainable values (numpy float32).

        Raises:
            NotImplementedError: on a backend other than TensorFlow and JAX.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.objective import SelectionObjective

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        values = [np.asarray(v) for v in model.trainable_variables]
        loss, grads = SelectionObjective(model, "mse").value_and_grad(values, [], np.ones((2, 3)), np.zeros((2, 1)))
        assert [g.shape for g in grads] == [(3, 1), (1,)]
        ```
        """
        value, grads = self._value_and_grad_tensors(trainable_values, non_trainable_values, x, y)
        for i, g in enumerate(grads):  # one variable's numpy copy at a time, its backend tensor freed
            grads[i] = np.asarray(keras.ops.convert_to_numpy(g), np.float32)
            del g
        return value, grads

    def _value_and_grad_tensors(self, trainable_values, non_trainable_values, x, y):
        """`(loss as a float, list of backend gradient tensors)`; the converted weight tensors are freed on return."""
        tv, ntv = self._tensors(trainable_values, non_trainable_values)
        value, grads = _compiled(self.model, self.loss_fn, "value_and_grad", x, y)(tv, ntv, x, y)
        del tv, ntv  # a copy of the weights in backend tensors: not kept while the gradients are converted
        return float(keras.ops.convert_to_numpy(value)), list(grads)


class FlatObjective:
    """`F` on fixed selection data `(x, y)` at flat weight vectors (checkpoints or their averages).

    The form SeWA's selection (`select_checkpoints`) and `SeWA` use: a flat
    vector in the layout of `flat_weights` is split into variable values for `objective`.

    Args:
        objective: a `SelectionObjective`.
        flat_weights: the `FlatWeights` of the objective's model.
        x: numpy inputs (an array, or a dict / list of arrays).
        y: numpy targets.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging.flat_weights import FlatWeights
    from keras_wtrain.averaging.objective import FlatObjective, SelectionObjective

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    flat = FlatWeights(model)
    objective = FlatObjective(SelectionObjective(model, "mse"), flat, np.ones((4, 3)), np.zeros((4, 2)))
    assert objective.loss(np.zeros(flat.size)) == 0.0
    value, gradient = objective.loss_and_grad(flat.read(), rows=np.array([0, 1]))   # gradient: (8,)
    ```
    """

    def __init__(self, objective, flat_weights, x, y):
        self.objective, self.flat_weights, self.x, self.y = objective, flat_weights, x, y
        self.model = objective.model
        self.num_examples = num_examples(x)

    def loss(self, flat):
        """`F` (a float) at the flat vector `flat` on all of `(x, y)`.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.flat_weights import FlatWeights
        from keras_wtrain.averaging.objective import FlatObjective, SelectionObjective

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        x, y = np.ones((2, 3)), np.ones((2, 1))
        objective = FlatObjective(SelectionObjective(model, "mse"), FlatWeights(model), x, y)
        assert objective.loss(np.zeros(4)) == 1.0
        ```
        """
        trainable, non_trainable = self.flat_weights.split(np.asarray(flat, np.float32))
        return self.objective.mean_loss(trainable, non_trainable, self.x, self.y)

    def loss_and_grad(self, flat, rows):
        """`F` on the examples `rows` at `flat` and its gradient as a flat `(P,)` vector (0 for non-trainable weights).

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.flat_weights import FlatWeights
        from keras_wtrain.averaging.objective import FlatObjective, SelectionObjective

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        x, y = np.ones((2, 3)), np.ones((2, 1))
        objective = FlatObjective(SelectionObjective(model, "mse"), FlatWeights(model), x, y)
        value, gradient = objective.loss_and_grad(np.zeros(4), rows=np.array([1]))
        assert value == 1.0 and gradient.tolist() == [-2.0] * 4
        ```
        """
        trainable, non_trainable = self.flat_weights.split(np.asarray(flat, np.float32))  # views of `flat`
        value, grads = self.objective._value_and_grad_tensors(
            trainable, non_trainable, take(self.x, rows), self.y[rows]
        )
        del trainable, non_trainable
        # Each backend gradient is copied into the flat vector and dropped at once: the vector and one
        # variable's gradient in memory, not the gradients twice (backend tensors and numpy copies) plus the vector.
        return value, self.flat_weights.gradient_vector(grads, consume=True)
