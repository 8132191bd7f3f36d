"""SeWA's selection (Wang et al., arXiv:2502.10119): choose `K` of `T` checkpoints, never worse than the baselines.

The relaxed phase (`keras_wtrain.averaging.relaxed_mask`: Adam on the probabilities of a Concrete-relaxed
mask) can end on a mask with a higher `F` than a baseline it could have returned, so `select_checkpoints`
wraps it: it starts `s` from LAWA's mask, evaluates the baselines (LAWA, the whole window, random subsets)
and the relaxed masks exactly, finishes with a swap local search on the exact `F`
(`keras_wtrain.averaging.subset_search`) and returns the best subset evaluated, so its `F` is never above the
baselines'.

Example:

```python
import numpy as np
from keras_wtrain.averaging.selection import select_checkpoints

checkpoints = np.array([[2.0], [0.1], [3.0], [-0.1]], "float32")   # 4 checkpoints of one weight
quadratic = lambda w, rows: (float(w[0] ** 2), 2 * w)               # F(w) = w², whatever the rows
result = select_checkpoints(checkpoints, quadratic, num_examples=1, k=2, steps=30, seed=0)
assert result.indices.tolist() == [1, 3]   # (0.1 - 0.1) / 2 = 0: the best pair
```
"""

import time
from typing import NamedTuple

import numpy as np

from keras_wtrain.averaging.relaxed_mask import relax_mask
from keras_wtrain.averaging.relaxed_mask import top_k_indices
from keras_wtrain.averaging.subset_search import SubsetLosses
from keras_wtrain.averaging.subset_search import random_subsets
from keras_wtrain.averaging.subset_search import swap_search

__all__ = ["MaskSelection", "full_gradient", "select_checkpoints"]


class MaskSelection(NamedTuple):
    """The result of `select_checkpoints`: chosen `indices` (sorted), learned `probabilities` `s`,
    `history` (the mean relaxed loss per iteration) and `report` (a JSON-serialisable dict, see
    `select_checkpoints`).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.selection import MaskSelection

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
    from keras_wtrain.averaging.selection import full_gradient

    x = np.arange(5.0)
    mean_of_rows = lambda w, rows: (float(np.mean(w[0] * x[rows])), np.array([x[rows].mean()]))
    assert full_gradient(mean_of_rows, np.array([1.0]), 5, chunk_size=2).tolist() == [2.0]
    ```
    """
    total = None
    for begin in range(0, num_examples, chunk_size):
        rows = np.arange(begin, min(begin + chunk_size, num_examples))
        _, gradient = loss_and_grad(flat, rows)
        # In place, in float64 (the same values as `float64(gradient) * len(rows)` summed, then divided): one
        # float64 (P,) accumulator and no (P,) temporaries besides the chunk's float32 gradient.
        gradient = np.asarray(gradient)
        if total is None:
            total = np.multiply(gradient, len(rows), dtype=np.float64)
        else:
            for start in range(0, len(total), 1 << 20):
                block = slice(start, start + (1 << 20))
                total[block] += np.multiply(gradient[block], len(rows), dtype=np.float64)
        del gradient
    total /= num_examples
    return total


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
        `gradient_calls`, `time_s`, `phase_time_s` (a dict of the seconds spent in "baselines", "relaxed"
        (the relaxed phase with its checks) and "search").

    Memory: besides `checkpoints` (read in place; a memory map is streamed a column block at a time and
    never becomes resident as a whole), a few `(P,)` vectors at a time: the average being evaluated, the
    backend's copy of it and its gradient, and in the search the float64 gradient `∇F`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.selection import select_checkpoints

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
    phase_begin = time.perf_counter()
    phase_time = {"baselines": phase_begin - begin, "relaxed": 0.0, "search": 0.0}
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
        phase_time["relaxed"] = time.perf_counter() - phase_begin
        phase_begin = time.perf_counter()

        def gradient(flat):
            nonlocal gradient_calls
            gradient_calls += 1
            return full_gradient(loss_and_grad, flat, num_examples)

        start, _ = losses.best(size=k)
        search = swap_search(losses, start, gradient, max_evaluations - relaxed_evaluations)
        phase_time["search"] = time.perf_counter() - phase_begin
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
        "phase_time_s": phase_time,
    }
    return MaskSelection(np.array(chosen), s, history, report)
