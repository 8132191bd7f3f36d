"""The one loss-at-weights evaluator (`loss_value`), the machinery of the flatness diagnostics, and `mean_loss`.

The checks of `model`, `data` and `variables`, and `_Objective`: the model's
inference loss as a function of the chosen variables' values, averaged over the
data batch by batch, with its Hessian-vector products compiled once per model,
loss and choice of variables (TensorFlow and JAX).
"""

import weakref

import keras
import numpy as np
from keras import ops

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core import data_adapters
from keras_wtrain._core import layer_kinds
from keras_wtrain._core import validation
from keras_wtrain._core._keras_private import sublayers

__all__ = ["loss_value", "mean_loss", "resolve_loss"]

_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def _t_quantile(dof):
    """The 0.975 quantile of Student's t with `dof` degrees of freedom (scipy-free)."""
    if dof in _T95:
        return _T95[dof]
    # Cornish-Fisher expansion around the normal quantile; < 1e-3 off for dof > 10.
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


# ----------------------------------------------------------------------------------------- inputs


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"argument `model` must be a keras.Model; received {type(model).__name__}.")
    if not model.built or not model.trainable_variables:
        raise ValueError(
            f"argument `model`: {model.name!r} is not built or has no trainable variables; call it on data or fit it "
            "before measuring its flatness."
        )


def _resolve_variables(model, variables):
    """The trainable float variables chosen by `variables` (see the `keras_wtrain.diagnostics` docstring)."""
    candidates = [v for v in model.trainable_variables if "float" in str(v.dtype)]
    if variables is None:
        return candidates
    items = variables if isinstance(variables, (list, tuple)) else [variables]
    if not items:
        raise ValueError("argument `variables` is an empty list.")
    by_id = {id(v): v for v in candidates}
    layers = {layer.name: layer for layer in sublayers(model)}
    chosen = []
    for item in items:
        if isinstance(item, str):
            if item not in layers:
                raise ValueError(f"argument `variables`: model {model.name!r} has no layer named {item!r}.")
            item = layers[item]
        if isinstance(item, keras.layers.Layer):
            if id(item) not in {id(layer) for layer in layers.values()}:
                raise ValueError(f"argument `variables`: layer {item.name!r} is not part of model {model.name!r}.")
            found = [by_id[id(v)] for v in item.trainable_variables if id(v) in by_id]
            if not found:
                raise ValueError(f"argument `variables`: layer {item.name!r} has no trainable float variable.")
            chosen.extend(found)
        elif isinstance(item, keras.Variable):
            if id(item) not in by_id:
                raise ValueError(
                    f"argument `variables`: variable {item.path!r} is not a trainable float variable of model "
                    f"{model.name!r}."
                )
            chosen.append(item)
        else:
            raise TypeError(
                "argument `variables` must hold layers, layer names or keras.Variables; "
                f"received {type(item).__name__}."
            )
    unique = []
    for v in chosen:
        if all(v is not u for u in unique):
            unique.append(v)
    return unique


def resolve_loss(model, loss=None):
    """The one loss function of every loss-at-weights evaluation: `loss`, or the model's compiled loss.

    Args:
        model: a Keras model.
        loss: a loss name, object or function; None for the model's compiled loss.

    Returns:
        A callable `loss(y_true, y_pred)`.

    Raises:
        ValueError: if there is no loss, or the model has several (a dict or list).

    Example:

    ```python
    import keras
    from keras_wtrain._core.objective import resolve_loss

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    loss = resolve_loss(model, "mse")   # keras.losses.mean_squared_error, called as `compile` calls it
    ```
    """
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("argument `loss` is None and the model is not compiled with a loss; pass `loss=`.")
        if isinstance(loss, (dict, list, tuple)):
            raise ValueError("the model has several losses; pass a single-output `loss=`.")
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    return loss if isinstance(loss, keras.losses.Loss) else _SameRankLoss(loss)


class _SameRankLoss(keras.losses.Loss):
    """A loss function called as `compile` calls it: targets and outputs brought to the same rank first.

    Keras wraps a loss given as a name or function so that targets of shape `(n,)` meet outputs of shape `(n, 1)`
    (its `LossFunctionWrapper`, not public); called bare, `binary_crossentropy` refuses them. Per-example values.
    """

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "loss"), reduction="none")
        self.fn = fn

    def call(self, y_true, y_pred):
        true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
        if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, -1)
        elif pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
            y_true = ops.expand_dims(y_true, -1)
        return self.fn(y_true, y_pred)


def loss_value(model, loss_fn, trainable, non_trainable, x, y):
    """The model's loss at the given variable values: what `evaluate` reports, the model left untouched.

    The one definition of "the loss at weights w" in keras-wtrain (SeWA's `F`, the flatness diagnostics, optimum
    shifting's guard): `loss_fn` averaged over the batch in float32, in inference mode, **plus the regularisation
    losses** (`model.losses`), as `fit` minimises and `evaluate` reports them.

    Args:
        model: a built Keras model.
        loss_fn: a loss from `resolve_loss`.
        trainable: values of `model.trainable_variables`, in order.
        non_trainable: values of `model.non_trainable_variables`, in order.
        x: a batch of inputs.
        y: its targets.

    Returns:
        A scalar float32 tensor, differentiable w.r.t. `trainable`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain._core.objective import loss_value

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    values = [np.zeros((3, 1), "float32"), np.ones(1, "float32")]   # predicts 1 everywhere
    value = loss_value(model, keras.losses.mean_squared_error, values, [], np.ones((2, 3)), np.zeros((2, 1)))
    assert float(value) == 1.0
    ```
    """
    # Inference mode, passed only to a `call` that takes `training` (as Keras' `__call__` does): a subclassed
    # model's `call(self, x)` runs its layers with their inference defaults.
    kwargs = {"training": False} if layer_kinds.call_accepts(model, "training") else {}
    y_pred, _, losses = model.stateless_call(trainable, non_trainable, x, return_losses=True, **kwargs)
    value = ops.mean(ops.cast(loss_fn(y, ops.cast(y_pred, "float32")), "float32"))
    for extra in losses:
        value = value + ops.cast(extra, "float32")
    return value


def _read(data, max_examples, owner=None):
    """Up to `max_examples` examples of `data` as numpy `(x, y)`; refused if empty, without targets or not finite."""
    x, y = data_adapters.collect(data, max_examples=max_examples, require_targets=True, name="data")
    return data_adapters.check_finite((x, y), "data", owner=owner)


def _batches(data, batch_size, max_examples):
    x, y = _read(data, max_examples)
    n = data_adapters.num_examples(x)
    out = []
    for start in range(0, n, batch_size):
        index = slice(start, min(start + batch_size, n))
        out.append((data_adapters.take(x, index), y[index], min(start + batch_size, n) - start))
    return out, n


# One compiled Hessian-vector product and loss per (model, loss, variables): repeated measures (a
# callback every epoch, 20 models of a compare run) reuse them instead of retracing.
_COMPILED = weakref.WeakKeyDictionary()


def _loss_key(model, loss):
    loss = loss if loss is not None else getattr(model, "loss", None)
    return loss if isinstance(loss, str) else id(loss)


def _compile(model_ref, positions, loss_fn, backend):
    """`(hvp, loss)` functions of the chosen variables' values; the model is held weakly."""

    def loss_of(values, x, y):
        model = model_ref()
        trainable = [v.value for v in model.trainable_variables]
        for position, value in zip(positions, values):
            trainable[position] = value
        non_trainable = [v.value for v in model.non_trainable_variables]
        return loss_value(model, loss_fn, trainable, non_trainable, x, y)

    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def hvp(values, vectors, x, y):
            with tf.GradientTape() as outer:
                outer.watch(values)
                with tf.GradientTape() as inner:
                    inner.watch(values)
                    loss = loss_of(values, x, y)
                grads = inner.gradient(loss, values)
                dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vectors)])
            return outer.gradient(dot, values)

        return hvp, tf.function(loss_of, reduce_retracing=True)

    import jax

    def grad(values, x, y):
        return jax.grad(lambda v: loss_of(v, x, y))(values)

    @jax.jit
    def hvp(values, vectors, x, y):
        return jax.jvp(lambda v: grad(v, x, y), (values,), (vectors,))[1]

    return hvp, jax.jit(loss_of)


class _Objective:
    """The model's inference loss as a function of the chosen variables' values, with HVPs per backend."""

    def __init__(self, model, variables, loss, data, batch_size, max_examples):
        _check_model(model)
        self.model = model
        self.variables = _resolve_variables(model, variables)
        self.loss_fn = resolve_loss(model, loss)
        validation.check_int("batch_size", batch_size, minimum=1)
        validation.check_int("max_examples", max_examples, minimum=1, allow_none=True)
        self.batches, self.num_examples = _batches(data, batch_size, max_examples)
        positions = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self.positions = [positions[id(v)] for v in self.variables]
        self.backend = keras.backend.backend()
        if self.backend not in ("tensorflow", "jax"):
            raise NotImplementedError(
                f"flatness diagnostics need Hessian-vector products, implemented for the TensorFlow and JAX backends; "
                f"the backend is {self.backend!r}."
            )
        self.loss_key = _loss_key(model, loss)
        self._hvp = None
        self._loss = None

    def values(self):
        return [ops.convert_to_tensor(v.value) for v in self.variables]

    def _functions(self):
        """The compiled `(hvp, loss)` of this model, loss and variable choice, built once and cached."""
        if self._hvp is None:
            key = (self.loss_key, tuple(self.positions))
            per_model = _COMPILED.setdefault(self.model, {})
            if key not in per_model:
                per_model[key] = _compile(weakref.ref(self.model), self.positions, self.loss_fn, self.backend)
            self._hvp, self._loss = per_model[key]
        return self._hvp, self._loss

    def hvp(self, values, vectors):
        """`H v` of the loss averaged over the data (a list like `values`)."""
        hvp, _ = self._functions()
        total = None
        for x, y, n in self.batches:
            part = hvp(values, vectors, x, y)
            part = [np.asarray(ops.convert_to_numpy(p), dtype=np.float64) * (n / self.num_examples) for p in part]
            total = part if total is None else [t + p for t, p in zip(total, part)]
        return total

    def loss(self, values):
        _, loss = self._functions()
        total = 0.0
        for x, y, n in self.batches:
            total += float(ops.convert_to_numpy(loss(values, x, y))) * n / self.num_examples
        return total


def _as_values(arrays, like):
    return [ops.convert_to_tensor(np.asarray(a, dtype="float32").reshape(tuple(v.shape))) for a, v in zip(arrays, like)]


# ----------------------------------------------------------------------------------------- measures


def mean_loss(model, data, loss=None, batch_size=256, max_examples=None):
    """The model's mean loss on `data` in inference mode (compiled once per model and loss).

    Args:
        model: a built `keras.Model`.
        data: `(x, y)` arrays, a split, a `tf.data.Dataset` or an iterable of `(x, y)` batches.
        loss: a Keras loss (default: the model's compiled loss).
        batch_size: examples per evaluation.
        max_examples: use at most this many examples of `data`.

    Returns:
        A float: the loss averaged over the examples, regularisation losses included (as `evaluate` reports).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.diagnostics import mean_loss

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile("sgd", "mse")
    assert mean_loss(model, (np.ones((4, 2)), np.full((4, 1), 3.0))) == 9.0
    ```
    """
    objective = _Objective(model, None, loss, data, batch_size, max_examples)
    return objective.loss(objective.values())
