"""SeWA's relaxed phase (Wang et al., arXiv:2502.10119): Adam on the probabilities of a Concrete-relaxed mask.

Minimise `F(w(m))`, `w(m) = Σ m_i w_i / Σ m_i`, over masks `m ∈ {0,1}^T` with `Σ m = K`, relaxed as
`m_i ~ Bernoulli(s_i)` and sampled with the binary Concrete (Gumbel-softmax) estimator
`m̃_i = σ((log s_i − log(1 − s_i) + log u_i − log(1 − u_i)) / t)`. The gradient w.r.t. `s` is exact
by the chain rule (`mask_gradient`); `s` takes Adam steps (`adam_step`) and is projected onto
`{s ∈ [ε, 1 − ε]^T : Σ s = K}` (`project_capped_simplex`); `relax_mask` runs this relaxed phase.
Everything here is numpy on the host; the loss and its weight gradient come from a function argument
(`loss_and_grad`). `keras_wtrain.averaging.selection.select_checkpoints` builds SeWA's selection on it.

Example:

```python
import numpy as np
from keras_wtrain.averaging.relaxed_mask import relax_mask, top_k_indices

w = np.array([[5.0], [0.1], [4.0]], "float32")
result = relax_mask(w, lambda v, rows: (float(v[0] ** 2), 2 * v), num_examples=1, k=1, seed=0)
assert top_k_indices(result.probabilities, 1).tolist() == [1]
```
"""

from typing import NamedTuple

import numpy as np

from keras_wtrain.averaging.checkpoint_buffer import _shared_mapping
from keras_wtrain.averaging.checkpoint_buffer import rows_dot_vector
from keras_wtrain.averaging.checkpoint_buffer import weighted_rows_sum

__all__ = [
    "AdamState",
    "RelaxedMask",
    "adam_step",
    "concrete_mask",
    "initial_probabilities",
    "mask_gradient",
    "project_capped_simplex",
    "relax_mask",
    "relaxed_average",
    "top_k_indices",
]


def project_capped_simplex(v, total, low, high):
    """Euclidean projection of `v` onto `{s : low <= s_i <= high, Σ s_i = total}` (bisection on a shift).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.relaxed_mask import project_capped_simplex

    s = project_capped_simplex(np.array([0.9, 0.9, 0.0]), total=1.0, low=0.0, high=1.0)
    assert np.allclose(s, [0.5, 0.5, 0.0])
    ```
    """
    lo, hi = v.min() - high, v.max() - low
    for _ in range(60):
        tau = 0.5 * (lo + hi)
        if np.clip(v - tau, low, high).sum() > total:
            lo = tau
        else:
            hi = tau
    return np.clip(v - 0.5 * (lo + hi), low, high)


def top_k_indices(scores, k):
    """Positions of the `k` largest `scores`, ties broken towards later positions; returned sorted.

    Example:

    ```python
    from keras_wtrain.averaging.relaxed_mask import top_k_indices

    assert top_k_indices([0.5, 0.2, 0.5], 1).tolist() == [2]
    ```
    """
    order = np.lexsort((-np.arange(len(scores)), -np.asarray(scores)))
    return np.sort(order[:k])


def concrete_mask(probabilities, uniform, temperature):
    """Binary Concrete relaxation `σ((logit s + logit u) / t)` of Bernoulli(`probabilities`) masks.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.relaxed_mask import concrete_mask

    m = concrete_mask(np.array([0.5, 0.5]), np.array([0.5, 0.9]), temperature=0.5)   # [0.5, ~0.99]
    ```
    """
    s, u = probabilities, uniform
    z = (np.log(s) - np.log1p(-s) + np.log(u) - np.log1p(-u)) / temperature
    return 1.0 / (1.0 + np.exp(-z))


def relaxed_average(checkpoints, mask):
    """`w(m̃) = Σ m̃_i w_i / Σ m̃_i` in float32, for a relaxed mask (the sum is floored at 10⁻⁶).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.relaxed_mask import relaxed_average

    assert relaxed_average(np.array([[0.0], [4.0]], "float32"), np.array([0.25, 0.75])).tolist() == [3.0]
    ```
    """
    mask = np.asarray(mask)
    average = weighted_rows_sum(mask.astype(np.float32), checkpoints)  # streamed on a memory map
    average /= np.float32(max(float(mask.sum()), 1e-6))  # in place: one (P,) array, not two
    return average


def mask_gradient(checkpoints, mask, probabilities, weight_gradient, temperature, average=None):
    """`∂F(w(m̃))/∂s` by the chain rule, from `g = ∇F` at the relaxed average `w(m̃)`.

    `∂F/∂m̃_i = ⟨g, w_i − w(m̃)⟩ / Σ m̃` and `∂m̃_i/∂s_i = m̃_i (1 − m̃_i) / (t s_i (1 − s_i))`.

    Args:
        checkpoints: `(T, P)` float32 array `w`.
        mask: the relaxed mask `m̃` (length `T`).
        probabilities: `s` (length `T`) that `m̃` was drawn from.
        weight_gradient: `g` at `relaxed_average(checkpoints, mask)`, a `(P,)` array.
        temperature: the Concrete temperature `t`.
        average: `relaxed_average(checkpoints, mask)` if already computed.

    Returns:
        A float64 array of length `T`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.relaxed_mask import mask_gradient

    w = np.array([[0.0], [2.0]], "float32")
    grad = mask_gradient(w, np.array([0.5, 0.5]), np.array([0.5, 0.5]), np.array([1.0], "float32"), 1.0)
    assert grad[1] > 0 > grad[0]   # F grows with w: more weight on checkpoint 1 raises F
    ```
    """
    mask = np.asarray(mask, np.float64)
    average = relaxed_average(checkpoints, mask) if average is None else average
    if _shared_mapping(checkpoints) is None:
        scores = checkpoints @ weight_gradient
    else:  # a memory map: a column block of the rows at a time
        scores = rows_dot_vector(checkpoints, weight_gradient, np.result_type(checkpoints, weight_gradient))
    dm = (scores - average @ weight_gradient).astype(np.float64) / max(mask.sum(), 1e-6)
    s = probabilities
    return dm * mask * (1 - mask) / temperature / (s * (1 - s))


class AdamState(NamedTuple):
    """Adam's explicit state: step `count` and the first / second moment estimates `mu`, `nu`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.relaxed_mask import AdamState

    state = AdamState(0, np.zeros(3), np.zeros(3))
    ```
    """

    count: int
    mu: np.ndarray
    nu: np.ndarray


def adam_step(params, grads, state, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """One Adam step (Kingma & Ba, with bias correction) on a numpy vector; returns `(params, state)`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.relaxed_mask import AdamState, adam_step

    params, state = adam_step(np.zeros(2), np.array([1.0, -1.0]), AdamState(0, np.zeros(2), np.zeros(2)), 0.1)
    assert np.allclose(params, [-0.1, 0.1])   # the first step has size learning_rate
    ```
    """
    count = state.count + 1
    mu = beta1 * state.mu + (1 - beta1) * grads
    nu = beta2 * state.nu + (1 - beta2) * grads**2
    step = learning_rate * (mu / (1 - beta1**count)) / (np.sqrt(nu / (1 - beta2**count)) + epsilon)
    return params - step, AdamState(count, mu, nu)


class RelaxedMask(NamedTuple):
    """The result of `relax_mask`: the learned `probabilities` `s` and `history`, the mean relaxed loss per step.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.relaxed_mask import RelaxedMask

    result = RelaxedMask(np.array([0.9, 0.1]), [0.3, 0.2])
    ```
    """

    probabilities: np.ndarray
    history: list


def initial_probabilities(num_checkpoints, k, start=None):
    """The relaxed phase's starting `s`: `K / T` everywhere, or moved halfway from `K / T` towards the mask of `start`.

    With `start` (e.g. LAWA's last `K` positions) the top-`K` of `s` is that mask, `Σ s = K`, and every
    `s_i` stays strictly inside (0, 1), so the Concrete samples still explore the other checkpoints.

    Example:

    ```python
    from keras_wtrain.averaging.relaxed_mask import initial_probabilities

    assert initial_probabilities(4, 2, start=[2, 3]).tolist() == [0.25, 0.25, 0.75, 0.75]
    ```
    """
    s = np.full(num_checkpoints, k / num_checkpoints)
    if start is not None:
        mask = np.zeros(num_checkpoints)
        mask[np.asarray(start, int)] = 1.0
        s = s + 0.5 * (mask - s)
    return s


def relax_mask(
    checkpoints,
    loss_and_grad,
    num_examples,
    k,
    start=None,
    temperature=0.5,
    num_samples=2,
    steps=16,
    learning_rate=0.1,
    batch_size=32,
    seed=None,
    callback=None,
):
    """SeWA's relaxed phase: Adam on the Bernoulli probabilities `s` of the Concrete-relaxed mask.

    Starts from `initial_probabilities(T, k, start)`. Each of `steps` iterations draws `num_samples`
    relaxed masks, each evaluated on its own minibatch of `batch_size` example indices (a reshuffled
    pass over `num_examples`), averages their `∂F/∂s`, takes an Adam step (`learning_rate`) and
    projects `s` onto `{s ∈ [10⁻³, 1 − 10⁻³]^T : Σ s = k}`.

    The optimiser stays in numpy: `s` is a length-`T` float64 host vector projected after every
    step, and the Concrete noise, the minibatch order and the gradient `∂F/∂s` are host
    computations between calls of `loss_and_grad`; a `keras.optimizers.Adam` would need a backend
    variable and a host/device round trip per step for `T` (≈ 20) numbers, in float32.

    Args:
        checkpoints: `(T, P)` float32 array, oldest first.
        loss_and_grad: `loss_and_grad(flat_weights, example_indices) -> (loss, flat_gradient)`: the
            loss at a `(P,)` weight vector on the given examples and its `(P,)` gradient.
        num_examples: number of selection examples the indices are drawn from.
        k: number of checkpoints to choose, `1 <= k <= T`.
        start: optional positions of the starting mask (e.g. LAWA's), see `initial_probabilities`.
        temperature: Concrete temperature `t` > 0.
        num_samples: relaxed masks per iteration (`M`).
        steps: iterations.
        learning_rate: Adam step size on `s`.
        batch_size: examples per relaxed-mask evaluation (at most `num_examples`).
        seed: int seed (or None) of the numpy generator of the noise and the minibatch order.
        callback: optional `callback(step, s)` called after every iteration (step counted from 0).

    Returns:
        A `RelaxedMask(probabilities, history)`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.relaxed_mask import relax_mask, top_k_indices

    w = np.array([[5.0], [0.1], [4.0]], "float32")
    result = relax_mask(w, lambda v, rows: (float(v[0] ** 2), 2 * v), num_examples=1, k=1, seed=0)
    assert top_k_indices(result.probabilities, 1).tolist() == [1]
    ```
    """
    checkpoints = np.asarray(checkpoints, np.float32)
    t_count = len(checkpoints)
    eps = 1e-3
    s = project_capped_simplex(initial_probabilities(t_count, k, start), k, eps, 1 - eps)
    rng = np.random.default_rng(seed)
    adam = AdamState(0, np.zeros(t_count), np.zeros(t_count))
    batch_size = min(batch_size, num_examples)
    order, cursor = rng.permutation(num_examples), 0
    history = []
    for step in range(steps):
        grad_s, losses = np.zeros(t_count), []
        for _ in range(num_samples):
            if cursor + batch_size > num_examples:
                order, cursor = rng.permutation(num_examples), 0
            rows = order[cursor : cursor + batch_size]
            cursor += batch_size
            m = concrete_mask(s, rng.uniform(1e-6, 1 - 1e-6, t_count), temperature)
            average = relaxed_average(checkpoints, m)
            value, weight_gradient = loss_and_grad(average, rows)
            grad_s += mask_gradient(checkpoints, m, s, weight_gradient, temperature, average=average)
            del average, weight_gradient  # two (P,) arrays: freed before the next sample's are made
            losses.append(value)
        history.append(float(np.mean(losses)))
        s, adam = adam_step(s, grad_s / num_samples, adam, learning_rate)
        s = project_capped_simplex(s, k, eps, 1 - eps)
        if callback is not None:
            callback(step, s)
    return RelaxedMask(s, history)
