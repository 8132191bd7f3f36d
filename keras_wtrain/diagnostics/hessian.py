"""Curvature of the loss: Hutchinson's Hessian trace and the top Hessian eigenvalue."""

import math

import numpy as np

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core import validation
from keras_wtrain._core.objective import _as_values
from keras_wtrain._core.objective import _Objective
from keras_wtrain._core.objective import _t_quantile

__all__ = ["hessian_trace", "top_hessian_eigenvalue"]


def hessian_trace(model, data, variables=None, num_probes=20, seed=None, loss=None, batch_size=256, max_examples=None):
    """Hutchinson estimate of the trace of the loss Hessian w.r.t. `variables`, with a 95 % interval.

    Cost: `num_probes` Hessian-vector products (two backward passes each) over the data.

    Args:
        model: a built `keras.Model`.
        data: `(x, y)` arrays, a `tf.data.Dataset` or an iterable of `(x, y)` batches.
        variables: None (all trainable float variables), a layer, a layer name, a variable, or a list of those.
        num_probes: Rademacher probes, an int >= 1 (>= 2 for an interval).
        seed: int seed of the probes (None: random).
        loss: a Keras loss (default: the model's compiled loss).
        batch_size: examples per Hessian-vector product.
        max_examples: use at most this many examples of `data`.

    Returns:
        `{"trace", "ci95", "std", "num_probes", "samples", "num_parameters"}`; `ci95` is the half-width
        (NaN with one probe).

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

    Cost: one Hessian-vector product per iteration (at most `max_iterations`).

    Args:
        model: a built `keras.Model`.
        data: training data, as for `hessian_trace`.
        variables: as for `hessian_trace`.
        max_iterations: an int >= 1.
        tolerance: relative change of the Rayleigh quotient that stops the iteration, a number > 0.
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
    print(top["eigenvalue"])  # MSE: the top eigenvalue of 2 XᵀX / N
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
