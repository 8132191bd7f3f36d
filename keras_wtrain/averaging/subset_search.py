"""Exact search over checkpoint subsets: `F` of uniform averages, cached, and a swap local search.

SeWA's relaxed phase (`keras_wtrain.averaging.selection`) proposes masks; this module decides between
masks with the exact objective `F(w(S))`, `w(S)` the uniform average of the checkpoints in `S`:

- `SubsetLosses`: `F` of each subset evaluated at most once (a cache in evaluation order), and the
  best subset evaluated so far;
- `random_subsets`: `K`-subsets drawn as the "random" averaging rule draws them;
- `swap_search`: first-improvement local search that swaps one chosen checkpoint for an unchosen one
  while `F` decreases, trying swaps in the order of their first-order predicted change of `F`, within
  a bound on the number of evaluations.

Example:

```python
import numpy as np
from keras_wtrain.averaging.subset_search import SubsetLosses, swap_search

checkpoints = np.array([[3.0], [0.5], [-0.4], [2.0]], "float32")
losses = SubsetLosses(checkpoints, lambda w: float(w[0] ** 2))      # F(w) = w²
result = swap_search(losses, start=[0, 3], gradient=lambda w: 2 * w, max_evaluations=10)
assert result.indices == (1, 2) and losses.best() == ((1, 2), result.loss)
```
"""

from typing import NamedTuple

import numpy as np

from keras_wtrain.averaging.checkpoint_buffer import _shared_mapping
from keras_wtrain.averaging.checkpoint_buffer import rows_dot_vector
from keras_wtrain.averaging.checkpoint_buffer import weighted_rows_sum
from keras_wtrain.averaging.rules import uniform_average

__all__ = ["SubsetLosses", "SwapSearchResult", "random_subsets", "swap_search"]


def _key(indices):
    return tuple(sorted(int(i) for i in indices))


def subset_average(checkpoints, indices):
    """`uniform_average(checkpoints, indices)`, streamed a column block at a time when `checkpoints` is a memory map.

    In memory it is `uniform_average` itself (a float32 product of the mask weights with the rows, no copy of
    the rows); on a memory map the same weights multiply one block of rows at a time (`weighted_rows_sum`), so
    the rows never become resident together.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.subset_search import subset_average

    assert subset_average(np.array([[0.0], [2.0], [9.0]], "float32"), [0, 1]).tolist() == [1.0]
    ```
    """
    if _shared_mapping(checkpoints) is None:
        return uniform_average(checkpoints, indices)
    mask = np.zeros(len(checkpoints))
    mask[np.asarray(indices, int)] = 1.0
    return weighted_rows_sum((mask / mask.sum()).astype(np.float32), checkpoints)


class SubsetLosses:
    """`F` of the uniform average of checkpoint subsets, each subset evaluated at most once.

    Args:
        checkpoints: `(T, P)` float array of checkpoints, oldest first.
        loss: `loss(flat_weights) -> float`, the exact objective `F`.

    Attributes:
        values: dict from a subset (sorted tuple of positions) to its `F`, in evaluation order.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.subset_search import SubsetLosses

    losses = SubsetLosses(np.array([[1.0], [3.0]], "float32"), lambda w: float(w[0]))
    assert losses([1, 0]) == 2.0 and losses([0, 1]) == 2.0 and losses.evaluations == 1   # cached
    ```
    """

    def __init__(self, checkpoints, loss):
        self.checkpoints = np.asarray(checkpoints, np.float32)
        self.loss = loss
        self.values = {}

    def __call__(self, indices):
        """`F` of the uniform average of `indices` (evaluated on the first request only)."""
        key = _key(indices)
        if key not in self.values:
            self.values[key] = float(self.loss(subset_average(self.checkpoints, key)))
        return self.values[key]

    def __contains__(self, indices):
        return _key(indices) in self.values

    @property
    def evaluations(self):
        """The number of evaluations of `F` so far."""
        return len(self.values)

    def best(self, size=None):
        """`(subset, F)` with the lowest `F` among the evaluated subsets (of `size` elements, if given).

        Ties go to the subset evaluated first; `(None, inf)` if there is none.

        Example:

        ```python
        import numpy as np
        from keras_wtrain.averaging.subset_search import SubsetLosses

        losses = SubsetLosses(np.array([[1.0], [3.0], [2.0]], "float32"), lambda w: float(w[0]))
        losses([0]), losses([1, 2]), losses([0, 1, 2])
        assert losses.best() == ((0,), 1.0) and losses.best(size=2) == ((1, 2), 2.5)
        ```
        """
        best, value = None, float("inf")
        for key, loss in self.values.items():
            if (size is None or len(key) == size) and loss < value:
                best, value = key, loss
        return best, value


def random_subsets(num_checkpoints, k, count, seed=None):
    """`count` random `k`-subsets of `range(num_checkpoints)`, sorted tuples, from one numpy generator.

    Each subset is drawn without replacement, as the "random" averaging rule draws its subset, so the
    first one equals `random_rule`'s for the same seed.

    Example:

    ```python
    from keras_wtrain.averaging.subset_search import random_subsets

    subsets = random_subsets(10, 3, count=5, seed=0)
    assert len(subsets) == 5 and all(len(set(s)) == 3 for s in subsets)
    ```
    """
    rng = np.random.default_rng(seed)
    return [_key(rng.choice(num_checkpoints, k, replace=False)) for _ in range(count)]


class SwapSearchResult(NamedTuple):
    """The result of `swap_search`: the final subset `indices` (sorted tuple), its `loss` `F`, the `evaluations`
    of `F` it made, the accepted `swaps`, and `converged` (True when no swap of the final subset lowers `F`).

    Example:

    ```python
    from keras_wtrain.averaging.subset_search import SwapSearchResult

    result = SwapSearchResult((0, 2), 0.1, evaluations=4, swaps=1, converged=True)
    ```
    """

    indices: tuple
    loss: float
    evaluations: int
    swaps: int
    converged: bool


def swap_search(losses, start, gradient=None, max_evaluations=16):
    """First-improvement swap local search on the exact objective, from the subset `start`.

    Each round takes `g = ∇F` at the current average `w(S)` (if `gradient` is given) and orders the
    `K (T − K)` swaps "replace `i ∈ S` by `j ∉ S`" by their first-order predicted change of `F`,
    `⟨g, w_j − w_i⟩ / K` (without `gradient`: by position, latest checkpoints first). The swaps are
    evaluated exactly in that order; the first one that lowers `F` is accepted and a new round starts.
    The search stops when a whole round finds no lower `F` (the subset is then a local optimum: no
    single swap improves it), or when `max_evaluations` swapped subsets have been evaluated (subsets
    evaluated before, e.g. baselines, cost nothing). It costs at most `max_evaluations` evaluations of
    `F` (plus one for `start` if it was not evaluated yet) and one call of `gradient` per round
    (accepted swaps + 1).

    Args:
        losses: a `SubsetLosses` (shared with other candidates, so nothing is evaluated twice).
        start: the starting subset (a sequence of positions).
        gradient: optional `gradient(flat_weights) -> (P,) array`, `∇F` at a weight vector.
        max_evaluations: bound on new evaluations of `F`, an int >= 0.

    Returns:
        A `SwapSearchResult`; the subset never has a higher `F` than `start`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.subset_search import SubsetLosses, swap_search

    checkpoints = np.array([[4.0], [1.0], [-1.0], [2.0], [0.1]], "float32")
    losses = SubsetLosses(checkpoints, lambda w: float(w[0] ** 2))
    result = swap_search(losses, start=[3, 4], gradient=lambda w: 2 * w)
    assert result.converged and result.loss == min(losses.values.values())
    ```
    """
    checkpoints = losses.checkpoints
    t_count = len(checkpoints)
    current = _key(start)
    k = len(current)
    value = losses(current)
    swaps = spent = 0
    while True:
        inside = np.array(current)
        outside = np.setdiff1d(np.arange(t_count), inside)
        if gradient is not None:
            g = gradient(subset_average(checkpoints, current))
            # float64 scores, the rows cast a column block at a time: no float64 copy of all T rows
            scores = rows_dot_vector(checkpoints, g, np.float64)
            del g
        else:
            scores = -np.arange(t_count, dtype=np.float64)  # prefer bringing in later checkpoints
        predicted = (scores[outside][None, :] - scores[inside][:, None]) / k  # (K, T - K)
        order = np.argsort(predicted, axis=None, kind="stable")
        improved = exhausted = False
        for flat_index in order:
            i, j = inside[flat_index // len(outside)], outside[flat_index % len(outside)]
            candidate = _key([*(c for c in current if c != i), j])
            if candidate not in losses:
                if spent >= max_evaluations:
                    exhausted = True
                    break
                spent += 1
            candidate_value = losses(candidate)
            if candidate_value < value:
                current, value, swaps, improved = candidate, candidate_value, swaps + 1, True
                break
        if not improved:
            return SwapSearchResult(current, value, spent, swaps, not exhausted)
