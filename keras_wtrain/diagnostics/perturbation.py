"""Sharpness: the loss increase under random filter-normalised weight perturbations (Li et al. 2018)."""

import numpy as np
from keras import ops

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core import validation
from keras_wtrain._core.objective import _as_values
from keras_wtrain._core.objective import _Objective

__all__ = ["filter_normalized_direction", "sharpness"]


def filter_normalized_direction(variables, seed=None):
    """A random Gaussian direction with each filter (last-axis slice) scaled to the weights' norm (Li et al. 2018).

    Variables of one dimension (biases, normalisation parameters) get a zero direction.

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
    """Loss increase `L(w + radius · d) - L(w)` over random filter-normalised directions `d`; weights unchanged.

    Cost: `num_samples + 1` loss evaluations over the data, one copy of the weights.

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
