"""SeWA's relaxed-mask optimisation (Wang et al., arXiv:2502.10119): choose `K` of `T` checkpoints.

Minimise `F(w(m))`, `w(m) = Σ m_i w_i / Σ m_i`, over masks `m ∈ {0,1}^T` with `Σ m = K`, relaxed as
`m_i ~ Bernoulli(s_i)` and sampled with the binary Concrete (Gumbel-softmax) estimator
`m̃_i = σ((log s_i − log(1 − s_i) + log u_i − log(1 − u_i)) / t)`. The gradient w.r.t. `s` is exact
by the chain rule (`mask_gradient`); `s` takes Adam steps (`adam_step`) and is projected onto
`{s ∈ [ε, 1 − ε]^T : Σ s = K}` (`project_capped_simplex`); `relax_mask` runs this relaxed phase.
Everything here is numpy on the host; the loss and its weight gradient come from a function argument
(`loss_and_grad`).

The relaxed phase can end on a mask with a higher `F` than a baseline it could have returned, so
`select_checkpoints` wraps it: it starts `s` from LAWA's mask, evaluates the baselines (LAWA, the whole
window, random subsets) and the relaxed masks exactly, finishes with a swap local search on the exact
`F` (`keras_wtrain.callbacks.subset_search`) and returns the best subset evaluated, so its `F` is never
above the baselines'.

Example:

```python
import numpy as np
from keras_wtrain.callbacks.selection import select_checkpoints

checkpoints = np.array([[2.0], [0.1], [3.0], [-0.1]], "float32")   # 4 checkpoints of one weight
quadratic = lambda w, rows: (float(w[0] ** 2), 2 * w)               # F(w) = w², whatever the rows
result = select_checkpoints(checkpoints, quadratic, num_examples=1, k=2, steps=30, seed=0)
assert result.indices.tolist() == [1, 3]   # (0.1 - 0.1) / 2 = 0: the best pair
```
"""

import time
from typing import NamedTuple

import numpy as np

from keras_wtrain.callbacks.subset_search import SubsetLosses
from keras_wtrain.callbacks.subset_search import random_subsets
from keras_wtrain.callbacks.subset_search import swap_search

__all__ = [
    "AdamState",
    "MaskSelection",
    "RelaxedMask",
    "adam_step",
    "concrete_mask",
    "full_gradient",
    "initial_probabilities",
    "mask_gradient",
    "project_capped_simplex",
    "relax_mask",
    "relaxed_average",
    "select_checkpoints",
    "top_k_indices",
]


def project_capped_simplex(v, total, low, high):
    """Euclidean projection of `v` onto `{s : low <= s_i <= high, Σ s_i = total}` (bisection on a shift).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.callbacks.selection import project_capped_simplex

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
    from keras_wtrain.callbacks.selection import top_k_indices

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
    from keras_wtrain.callbacks.selection import concrete_mask

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
    from keras_wtrain.callbacks.selection import relaxed_average

    assert relaxed_average(np.array([[0.0], [4.0]], "float32"), np.array([0.25, 0.75])).tolist() == [3.0]
    ```
    """
    mask = np.asarray(mask)
    return mask.astype(np.float32) @ checkpoints / np.float32(max(float(mask.sum()), 1e-6))


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
    from keras_wtrain.callbacks.selection import mask_gradient

    w = np.array([[0.0], [2.0]], "float32")
    grad = mask_gradient(w, np.array([0.5, 0.5]), np.array([0.5, 0.5]), np.array([1.0], "float32"), 1.0)
    assert grad[1] > 0 > grad[0]   # F grows with w: more weight on checkpoint 1 raises F
    ```
    """
    mask = np.asarray(mask, np.float64)
    average = relaxed_average(checkpoints, mask) if average is None else average
    dm = (checkpoints @ weight_gradient - average @ weight_gradient).astype(np.float64) / max(mask.sum(), 1e-6)
    s = probabilities
    return dm * mask * (1 - mask) / temperature / (s * (1 - s))


class AdamState(NamedTuple):
    """Adam's explicit state: step `count` and the first / second moment estimates `mu`, `nu`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.callbacks.selection import AdamState

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
    from keras_wtrain.callbacks.selection import AdamState, adam_step

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
    from keras_wtrain.callbacks.selection import RelaxedMask

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
    from keras_wtrain.callbacks.selection import initial_probabilities

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
    from keras_wtrain.callbacks.selection import relax_mask, top_k_indices

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
            losses.append(value)
        history.append(float(np.mean(losses)))
        s, adam = adam_step(s, grad_s / num_samples, adam, learning_rate)
        s = project_capped_simplex(s, k, eps, 1 - eps)
        if callback is not None:
            callback(step, s)
    return RelaxedMask(s, history)


class MaskSelection(NamedTuple):
    """The result of `select_checkpoints`: chosen `indices` (sorted), learned `probabilities` `s`,
    `history` (the mean relaxed loss per iteration) and `report` (a JSON-serialisable dict, see
    `select_checkpoints`).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.callbacks.selection import MaskSelection

    result = MaskSelection(np.array([0, 2]), np.array([0.9, 0.2, 0.9]), [])
    ```
    """

    indices: np.ndarray
    probabilities: np.ndarray
    history: list
    report: dict | None = None


def full_gradient(loss_and_grad, flat, num_examples, chunk_size=256):
    """`∇F` on all `num_examples` examples, from `loss_and_grad` on chunks of rows (weighted by chunk size).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.callbacks.selection import full_gradient

    x = np.arange(5.0)
    mean_of_rows = lambda w, rows: (float(np.mean(w[0] * x[rows])), np.array([x[rows].mean()]))
    assert full_gradient(mean_of_rows, np.array([1.0]), 5, chunk_size=2).tolist() == [2.0]
    ```
    """
    total = None
    for begin in range(0, num_examples, chunk_size):
        rows = np.arange(begin, min(begin + chunk_size, num_examples))
        _, gradient = loss_and_grad(flat, rows)
        gradient = np.asarray(gradient, np.float64) * len(rows)
        total = gradient if total is None else total + gradient
    return total / num_examples


def _check_steps(steps, checks=4):
    """Relaxed steps after which the top-`K` of `s` is evaluated exactly: every `steps // checks`-th and the last."""
    every = max(1, steps // checks)
    return {step for step in range(steps) if (step + 1) % every == 0} | {steps - 1}


def select_checkpoints(
    checkpoints,
    loss_and_grad,
    num_examples,
    k,
    temperature=0.5,
    num_samples=2,
    steps=16,
    learning_rate=0.1,
    batch_size=32,
    seed=None,
    loss=None,
    num_random_subsets=20,
    max_evaluations=16,
):
    """SeWA's selection: the relaxed mask from LAWA's, then an exact swap search; never worse than the baselines.

    1. **Baselines**, evaluated exactly (`F` of the uniform average, `loss`): LAWA (the last `k`), the
       window (all `T`) and `num_random_subsets` random `k`-subsets (`random_subsets`, the first one is
       the "random" rule's).
    2. **Relaxed phase** (`relax_mask`) from LAWA's mask; the top-`k` of `s` is evaluated exactly after
       every `steps // 4`-th step and after the last.
    3. **Swap search** (`subset_search.swap_search`) from the best `k`-subset evaluated so far, with the
       gradient `∇F` on all examples (`full_gradient`) to order the swaps.
    4. The result is the subset with the lowest `F` among all evaluated, the window included (then all
       `T` checkpoints are chosen): `F(result) <= min(F(LAWA), F(window), F(best random))` by construction.

    Cost: `2 + num_random_subsets` evaluations of `F` for the baselines, at most `max_evaluations` more
    (relaxed-phase checks, then the swap search; subsets met twice are evaluated once),
    `steps × num_samples` gradients on `batch_size` examples, and one gradient on all examples per
    swap-search round (accepted swaps + 1). With `k == T` only the window is evaluated.

    Args:
        checkpoints: `(T, P)` float32 array, oldest first.
        loss_and_grad: `loss_and_grad(flat_weights, example_indices) -> (loss, flat_gradient)`.
        num_examples: number of selection examples (the rows of `loss_and_grad`).
        k: number of checkpoints to choose, `1 <= k <= T`.
        temperature: Concrete temperature `t` > 0.
        num_samples: relaxed masks per iteration (`M`).
        steps: iterations of the relaxed phase.
        learning_rate: Adam step size on `s`.
        batch_size: examples per relaxed-mask evaluation.
        seed: int seed (or None) of the relaxed phase and of the random subsets.
        loss: `loss(flat_weights) -> float`, the exact `F`; defaults to `loss_and_grad` on all examples.
        num_random_subsets: random `k`-subsets among the candidates, an int >= 0.
        max_evaluations: bound on the evaluations of `F` besides the baselines, an int >= 0.

    Returns:
        A `MaskSelection(indices, probabilities, history, report)`. `report` is a JSON-serialisable dict:
        `objective` and `indices` (dicts over "sewa", "lawa", "window", "random", the last the best random
        subset; "random" is None without random subsets), `source` (the candidate that first produced the
        result: "lawa", "window", "random", "relaxed" or "search"), `random_subsets` and
        `random_objectives`, `relaxed_indices` (top-`k` of the final `s`) and `relaxed_objective` (None if
        not evaluated), `evaluations` (of `F`, in total), `baseline_evaluations`, `relaxed_evaluations`,
        `search_evaluations`, `swaps`, `search_converged` (no swap of the search's result lowers `F`),
        `gradient_calls`, `time_s`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.callbacks.selection import select_checkpoints

    w = np.array([[5.0], [0.1], [4.0], [-0.3]], "float32")
    result = select_checkpoints(w, lambda v, rows: (float(v[0] ** 2), 2 * v), num_examples=1, k=2, seed=0)
    assert result.indices.tolist() == [1, 3]   # (0.1 - 0.3) / 2 = -0.1: the best pair
    assert result.report["objective"]["sewa"] <= result.report["objective"]["lawa"]
    ```
    """
    begin = time.perf_counter()
    checkpoints = np.asarray(checkpoints, np.float32)
    t_count = len(checkpoints)
    if not 1 <= k <= t_count:
        raise ValueError(f"argument `k` must be in [1, {t_count}] (the number of checkpoints); received {k!r}.")
    if loss is None:

        def loss(flat):
            return loss_and_grad(flat, np.arange(num_examples))[0]

    losses, origin = SubsetLosses(checkpoints, loss), {}

    def evaluate(indices, source):
        key = tuple(sorted(int(i) for i in indices))
        origin.setdefault(key, source)
        return losses(key)

    lawa, window = tuple(range(t_count - k, t_count)), tuple(range(t_count))
    evaluate(lawa, "lawa")
    evaluate(window, "window")
    subsets = random_subsets(t_count, k, num_random_subsets, seed) if k < t_count else [window] * num_random_subsets
    random_values = [evaluate(subset, "random") for subset in subsets]
    baseline_evaluations = losses.evaluations
    s, history, gradient_calls, relaxed_evaluations = np.ones(t_count), [], 0, 0
    relaxed_indices, search = list(window), None
    if k < t_count:
        checks = _check_steps(steps)

        def check(step, probabilities):
            if step in checks and (top_k_indices(probabilities, k) in losses or used() < max_evaluations):
                evaluate(top_k_indices(probabilities, k), "relaxed")

        def used():
            return losses.evaluations - baseline_evaluations

        options = dict(temperature=temperature, num_samples=num_samples, steps=steps, learning_rate=learning_rate)
        options.update(start=lawa, batch_size=batch_size, seed=seed, callback=check)
        s, history = relax_mask(checkpoints, loss_and_grad, num_examples, k, **options)
        relaxed_indices = top_k_indices(s, k).tolist()
        relaxed_evaluations = used()
        gradient_calls = steps * num_samples

        def gradient(flat):
            nonlocal gradient_calls
            gradient_calls += 1
            return full_gradient(loss_and_grad, flat, num_examples)

        start, _ = losses.best(size=k)
        search = swap_search(losses, start, gradient, max_evaluations - relaxed_evaluations)
    chosen, value = losses.best()
    best_random = min(range(len(subsets)), key=random_values.__getitem__) if subsets else None
    report = {
        "objective": {
            "sewa": value,
            "lawa": losses(lawa),
            "window": losses(window),
            "random": None if best_random is None else random_values[best_random],
        },
        "indices": {
            "sewa": list(chosen),
            "lawa": list(lawa),
            "window": list(window),
            "random": None if best_random is None else list(subsets[best_random]),
        },
        "source": origin.get(chosen, "search"),
        "random_subsets": [list(subset) for subset in subsets],
        "random_objectives": random_values,
        "relaxed_indices": [int(i) for i in relaxed_indices],
        "relaxed_objective": losses.values.get(tuple(relaxed_indices)),
        "evaluations": losses.evaluations,
        "baseline_evaluations": baseline_evaluations,
        "relaxed_evaluations": relaxed_evaluations,
        "search_evaluations": search.evaluations if search else 0,
        "swaps": search.swaps if search else 0,
        "search_converged": search.converged if search else True,
        "gradient_calls": gradient_calls,
        "time_s": time.perf_counter() - begin,
    }
    return MaskSelection(np.array(chosen), s, history, report)
