"""Flatness diagnostics: Hessian trace, top Hessian eigenvalue and sharpness of a model's loss.

What a flat-minimum technique (optimum shifting, SeWA, shadow weights) claims
is measured here, on the TensorFlow and JAX backends:

- `hessian_trace`: Hutchinson's estimator `tr(H) = E[v^T H v]` with
  Rademacher probes `v`, Hessian-vector products by double differentiation
  (as PyHessian does), with a 95 % confidence interval from the probes
  (Student t over the per-probe values);
- `top_hessian_eigenvalue`: the eigenvalue of largest magnitude by power
  iteration on Hessian-vector products;
- `sharpness`: mean and max loss increase under random filter-normalised
  weight perturbations of radius `r` (Li et al. 2018, "Visualizing the loss
  landscape of neural nets": each filter of a random Gaussian direction is
  scaled to the norm of the same filter of the weights; vectors of one
  dimension, biases and normalisation parameters, are not perturbed);
- `FlatnessMonitor`: a callback that logs them every N epochs into `History`.

The loss is the model's loss in inference mode (`training=False`: dropout off,
batch normalization on its moving statistics), averaged over `data` (the
Hessian is that of the average, batch by batch). Variables are chosen with
`variables`: None (every trainable float variable), a layer, a layer name, a
`keras.Variable`, or a list of those.

Example:

```python
import keras
import numpy as np
from keras_wtrain.diagnostics import hessian_trace, sharpness, top_hessian_eigenvalue

x, y = np.random.rand(64, 5).astype("float32"), np.arange(64) % 3
model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
trace = hessian_trace(model, (x, y), num_probes=10, seed=0)
print(trace["trace"], trace["ci95"])
top = top_hessian_eigenvalue(model, (x, y), seed=0)
sharp = sharpness(model, (x, y), radius=0.05, num_samples=5, seed=0)
```
"""

import math
import weakref

import keras
import numpy as np
from keras import ops

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain import data_adapters
from keras_wtrain import validation

__all__ = [
    "FlatnessMonitor",
    "filter_normalized_direction",
    "hessian_trace",
    "mean_loss",
    "sharpness",
    "top_hessian_eigenvalue",
]

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
    """The trainable float variables chosen by `variables` (see the module docstring)."""
    candidates = [v for v in model.trainable_variables if "float" in str(v.dtype)]
    if variables is None:
        return candidates
    items = variables if isinstance(variables, (list, tuple)) else [variables]
    if not items:
        raise ValueError("argument `variables` is an empty list.")
    by_id = {id(v): v for v in candidates}
    layers = {layer.name: layer for layer in model._flatten_layers(include_self=False, recursive=True)}
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


def _loss_fn(model, loss):
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError("argument `loss` is None and the model is not compiled with a loss; pass `loss=`.")
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss

    def mean_loss(y_true, y_pred):
        return ops.mean(loss(y_true, y_pred))

    return mean_loss


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
        y_pred, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return ops.cast(loss_fn(y, y_pred), "float32")

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
        self.loss_fn = _loss_fn(model, loss)
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
        A float: the loss averaged over the examples (no regularisation terms).

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


def hessian_trace(model, data, variables=None, num_probes=20, seed=None, loss=None, batch_size=256, max_examples=None):
    """Hutchinson estimate of the trace of the loss Hessian w.r.t. `variables`, with a 95 % interval.

    `tr(H) ≈ (1/m) Σ_k v_kᵀ H v_k` over `m = num_probes` Rademacher vectors
    `v_k` (entries ±1), each `H v_k` by double differentiation. The interval
    is `mean ± t_{0.975, m-1} · std / √m` over the per-probe values.

    Args:
        model: a built `keras.Model`.
        data: `(x, y)` arrays, a `keras_wtrain.data` split, a `tf.data.Dataset`
            or an iterable of `(x, y)` batches (see `keras_wtrain.data_adapters`).
        variables: None (all trainable float variables), a layer, a layer name,
            a variable, or a list of those.
        num_probes: number of Rademacher probes, an int >= 1 (>= 2 for an interval).
        seed: int seed of the probes (None: random).
        loss: a Keras loss (default: the model's compiled loss).
        batch_size: examples per Hessian-vector product.
        max_examples: use at most this many examples of `data`.

    Returns:
        `{"trace", "ci95", "std", "num_probes", "samples", "num_parameters"}`;
        `ci95` is the half-width (NaN with one probe).

    Raises:
        ValueError: for `num_probes` < 1, empty or non-finite data, variables not in the model.
        TypeError: for arguments of the wrong type.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.diagnostics import hessian_trace

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.random.rand(32, 4).astype("float32"), np.random.rand(32, 2).astype("float32")
    result = hessian_trace(model, (x, y), num_probes=8, seed=0)
    # the MSE Hessian w.r.t. the kernel is (2/N)·Σ x xᵀ per output column (/2 for the mean over outputs)
    ```
    """
    validation.check_int("num_probes", num_probes, minimum=1)
    validation.check_seed(seed)
    objective = _Objective(model, variables, loss, data, batch_size, max_examples)
    rng = np.random.default_rng(seed)
    values = objective.values()
    samples = []
    for _ in range(num_probes):
        probes = [rng.choice(np.array([-1.0, 1.0]), size=tuple(v.shape)) for v in objective.variables]
        hv = objective.hvp(values, _as_values(probes, objective.variables))
        samples.append(float(sum(np.sum(p * h) for p, h in zip(probes, hv))))
    mean = float(np.mean(samples))
    std = float(np.std(samples, ddof=1)) if num_probes > 1 else float("nan")
    ci = _t_quantile(num_probes - 1) * std / math.sqrt(num_probes) if num_probes > 1 else float("nan")
    return {
        "trace": mean,
        "ci95": ci,
        "std": std,
        "num_probes": num_probes,
        "samples": samples,
        "num_parameters": int(sum(np.prod(v.shape) for v in objective.variables)),
    }


def top_hessian_eigenvalue(
    model,
    data,
    variables=None,
    max_iterations=100,
    tolerance=1e-6,
    seed=None,
    loss=None,
    batch_size=256,
    max_examples=None,
):
    """The Hessian eigenvalue of largest magnitude w.r.t. `variables`, by power iteration.

    Starting from a random unit vector, `v <- H v / ||H v||` until the Rayleigh
    quotient `vᵀ H v` changes by less than `tolerance` (relative).

    Args:
        model: a built `keras.Model`.
        data: training data, as for `hessian_trace`.
        variables: as for `hessian_trace`.
        max_iterations: an int >= 1.
        tolerance: relative change that stops the iteration, a number > 0.
        seed: int seed of the start vector.
        loss: a Keras loss (default: the model's compiled loss).
        batch_size: examples per Hessian-vector product.
        max_examples: use at most this many examples of `data`.

    Returns:
        `{"eigenvalue", "iterations", "converged"}`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.diagnostics import top_hessian_eigenvalue

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.compile("sgd", "mse")
    x = np.random.rand(50, 3).astype("float32")
    top = top_hessian_eigenvalue(model, (x, np.zeros((50, 1), "float32")), seed=0)
    expected = np.linalg.eigvalsh(2 * x.T.astype("float64") @ x / len(x))[-1]  # MSE: H = 2 XᵀX / N
    assert abs(top["eigenvalue"] - expected) < 1e-3 * expected
    ```
    """
    validation.check_int("max_iterations", max_iterations, minimum=1)
    validation.check_positive("tolerance", tolerance)
    validation.check_seed(seed)
    objective = _Objective(model, variables, loss, data, batch_size, max_examples)
    rng = np.random.default_rng(seed)
    values = objective.values()
    vectors = [rng.standard_normal(tuple(v.shape)) for v in objective.variables]
    norm = math.sqrt(sum(float(np.sum(v * v)) for v in vectors))
    vectors = [v / norm for v in vectors]
    eigenvalue, converged, iteration = None, False, 0
    for iteration in range(1, max_iterations + 1):
        hv = objective.hvp(values, _as_values(vectors, objective.variables))
        rayleigh = float(sum(np.sum(v * h) for v, h in zip(vectors, hv)))
        norm = math.sqrt(sum(float(np.sum(h * h)) for h in hv))
        if norm == 0.0:
            eigenvalue, converged = 0.0, True
            break
        vectors = [h / norm for h in hv]
        if eigenvalue is not None and abs(rayleigh - eigenvalue) <= tolerance * max(abs(rayleigh), 1e-12):
            eigenvalue, converged = rayleigh, True
            break
        eigenvalue = rayleigh
    return {"eigenvalue": float(eigenvalue), "iterations": iteration, "converged": converged}


def filter_normalized_direction(variables, seed=None):
    """A random direction scaled filter by filter to the weights (Li et al. 2018), as numpy arrays.

    For each variable of two or more dimensions, a Gaussian direction `d` is
    drawn and every filter (slice along the last axis: an output unit of a
    Dense or convolution kernel) is rescaled to `||d_f|| = ||w_f||`. Vectors
    (biases, normalisation parameters) get a zero direction.

    Args:
        variables: a list of `keras.Variable`s (or arrays).
        seed: int seed, or a `numpy.random.Generator`.

    Returns:
        A list of numpy arrays shaped like `variables`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.diagnostics import filter_normalized_direction

    w = np.arange(1.0, 7.0).reshape(3, 2)
    (d,) = filter_normalized_direction([w], seed=0)
    np.testing.assert_allclose(np.linalg.norm(d, axis=0), np.linalg.norm(w, axis=0))
    ```
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out = []
    for variable in variables:
        w = np.asarray(ops.convert_to_numpy(variable), dtype=np.float64)
        if w.ndim < 2:
            out.append(np.zeros_like(w))
            continue
        d = rng.standard_normal(w.shape)
        axes = tuple(range(w.ndim - 1))
        d_norm = np.sqrt(np.sum(d * d, axis=axes, keepdims=True))
        w_norm = np.sqrt(np.sum(w * w, axis=axes, keepdims=True))
        out.append(d * w_norm / np.maximum(d_norm, 1e-12))
    return out


def sharpness(
    model, data, radius=0.05, num_samples=10, variables=None, seed=None, loss=None, batch_size=256, max_examples=None
):
    """Loss increase under random filter-normalised perturbations of relative size `radius`.

    For `num_samples` directions `d` (`filter_normalized_direction`), the loss
    at `w + radius · d` minus the loss at `w`; the weights are not changed.

    Args:
        model: a built `keras.Model`.
        data: training data, as for `hessian_trace`.
        radius: the perturbation size relative to each filter's norm, a number > 0.
        num_samples: number of random directions, an int >= 1.
        variables: as for `hessian_trace`.
        seed: int seed of the directions.
        loss: a Keras loss (default: the model's compiled loss).
        batch_size: examples per loss evaluation.
        max_examples: use at most this many examples of `data`.

    Returns:
        `{"mean", "max", "increases", "loss", "radius"}`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.diagnostics import sharpness

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.random.rand(40, 3).astype("float32"), np.zeros((40, 2), "float32")
    result = sharpness(model, (x, y), radius=0.1, num_samples=4, seed=0)
    print(result["mean"], result["max"])
    ```
    """
    validation.check_positive("radius", radius)
    validation.check_int("num_samples", num_samples, minimum=1)
    validation.check_seed(seed)
    objective = _Objective(model, variables, loss, data, batch_size, max_examples)
    rng = np.random.default_rng(seed)
    values = objective.values()
    base = objective.loss(values)
    increases = []
    for _ in range(num_samples):
        direction = filter_normalized_direction(objective.variables, rng)
        moved = [np.asarray(ops.convert_to_numpy(v), np.float64) + radius * d for v, d in zip(values, direction)]
        increases.append(objective.loss(_as_values(moved, objective.variables)) - base)
    return {
        "mean": float(np.mean(increases)),
        "max": float(np.max(increases)),
        "increases": [float(v) for v in increases],
        "loss": base,
        "radius": float(radius),
    }


@keras.saving.register_keras_serializable(package="keras_wtrain")
class FlatnessMonitor(keras.callbacks.Callback):
    """Logs the Hessian trace, top eigenvalue and sharpness every `every_n_epochs` epochs into `History`.

    At the end of every `every_n_epochs`-th epoch (and of the last one) it adds
    to the epoch's logs `hessian_trace`, `hessian_trace_ci95`,
    `top_eigenvalue` (if `top_eigenvalue`), `sharpness_mean` and
    `sharpness_max` (if `sharpness_radius`), so they appear in
    `model.fit(...).history` next to the loss; on other epochs nothing is
    logged. Measures use a fixed slice of `data` (`max_examples`) and fixed
    seeds, so epochs are comparable.

    Args:
        data: training data, as for `hessian_trace` (a callback cannot see fit's data;
            required at `fit` start, not serialised by `get_config`).
        every_n_epochs: measure every this many epochs, an int >= 1.
        variables: as for `hessian_trace`.
        num_probes: Hutchinson probes, an int >= 1.
        top_eigenvalue: also run the power iteration.
        sharpness_radius: perturbation radius (> 0), or None to skip sharpness.
        num_samples: sharpness directions, an int >= 1.
        max_examples: examples of `data` used, an int >= 1.
        seed: int seed of probes and directions.

    Raises:
        ValueError, TypeError: for bad arguments, at construction; at `fit` start, ValueError if `data`
            is missing, empty, without targets, or holds NaN or infinite values.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.diagnostics import FlatnessMonitor

    x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[FlatnessMonitor((x, y), num_probes=4, seed=0)])
    print(history.history["hessian_trace"])
    ```
    """

    def __init__(
        self,
        data=None,
        every_n_epochs=1,
        variables=None,
        num_probes=20,
        top_eigenvalue=True,
        sharpness_radius=0.05,
        num_samples=10,
        max_examples=512,
        seed=0,
    ):
        super().__init__()
        self.data = data
        self.every_n_epochs = validation.check_int("every_n_epochs", every_n_epochs, minimum=1)
        self.variables = variables
        self.num_probes = validation.check_int("num_probes", num_probes, minimum=1)
        self.top_eigenvalue = validation.check_bool("top_eigenvalue", top_eigenvalue)
        self.sharpness_radius = (
            None if sharpness_radius is None else validation.check_positive("sharpness_radius", sharpness_radius)
        )
        self.num_samples = validation.check_int("num_samples", num_samples, minimum=1)
        self.max_examples = validation.check_int("max_examples", max_examples, minimum=1)
        self.seed = validation.check_seed(seed)
        self._epochs = None

    def on_train_begin(self, logs=None):
        self._epochs = self.params.get("epochs") if self.params else None
        if self.data is None:
            raise ValueError("FlatnessMonitor: argument `data` is required (a callback cannot see fit's data).")
        _read(self.data, self.max_examples, owner="FlatnessMonitor")  # the examples measured: refused at fit start

    def measure(self):
        """Measures now; returns the dict of values that `on_epoch_end` logs.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.diagnostics import FlatnessMonitor

        x, y = np.random.rand(32, 3).astype("float32"), np.random.rand(32, 1).astype("float32")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        monitor = FlatnessMonitor((x, y), num_probes=2, top_eigenvalue=False, sharpness_radius=None)
        monitor.set_model(model)
        print(monitor.measure())  # {'hessian_trace': ..., 'hessian_trace_ci95': ...}
        ```
        """
        common = {"variables": self.variables, "seed": self.seed, "max_examples": self.max_examples}
        trace = hessian_trace(self.model, self.data, num_probes=self.num_probes, **common)
        out = {"hessian_trace": trace["trace"], "hessian_trace_ci95": trace["ci95"]}
        if self.top_eigenvalue:
            out["top_eigenvalue"] = top_hessian_eigenvalue(self.model, self.data, max_iterations=50, **common)[
                "eigenvalue"
            ]
        if self.sharpness_radius is not None:
            sharp = sharpness(
                self.model, self.data, radius=self.sharpness_radius, num_samples=self.num_samples, **common
            )
            out["sharpness_mean"], out["sharpness_max"] = sharp["mean"], sharp["max"]
        return out

    def on_epoch_end(self, epoch, logs=None):
        last = self._epochs is not None and epoch + 1 == self._epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        if logs is not None:
            logs.update(self.measure())

    @classmethod
    def from_config(cls, config):
        """Rebuilds the callback from `get_config()` (without `data`: set `callback.data` again)."""
        return cls(**config)

    def get_config(self):
        """The constructor arguments but `data` and `variables`."""
        return {
            "every_n_epochs": self.every_n_epochs,
            "num_probes": self.num_probes,
            "top_eigenvalue": self.top_eigenvalue,
            "sharpness_radius": self.sharpness_radius,
            "num_samples": self.num_samples,
            "max_examples": self.max_examples,
            "seed": self.seed,
        }
