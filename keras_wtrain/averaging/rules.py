"""Averaging rules over a buffer of flat checkpoints: small pure numpy functions.

- `mask_average` / `uniform_average`: the average of checkpoints weighted by a mask, or uniform
  over a set of indices.
- `ema_decay` and `ema_update`: the exponential moving average, with the decay schedule separate
  from the update (as timm's `ModelEmaV3.get_decay` / `update`); `EmaState` and `ema_accumulate`
  carry it across checkpoints with explicit state (as optax transforms do).
- Rules: a rule is a function `rule(checkpoints, context) -> Average`, where `checkpoints` is the
  `(T, P)` array of kept checkpoints (oldest first) and `context` an `AveragingContext`.
  `AVERAGING_RULES` maps the rule names of `SeWA.average_weights` to the built-in rules;
  any function with that signature is a rule too (`get_averaging_rule`).

Example:

```python
import numpy as np
from keras_wtrain.averaging.rules import AVERAGING_RULES, AveragingContext

checkpoints = np.arange(8.0, dtype="float32").reshape(4, 2)   # 4 checkpoints of 2 weights
lawa = AVERAGING_RULES["lawa"](checkpoints, AveragingContext(k=2))
assert lawa.indices == [2, 3] and lawa.weights.tolist() == [5.0, 6.0]
```
"""

from typing import Callable
from typing import NamedTuple

import numpy as np

__all__ = [
    "AVERAGING_RULES",
    "Average",
    "AveragingContext",
    "EmaState",
    "checkpoints_needed",
    "ema_accumulate",
    "ema_decay",
    "ema_rule",
    "ema_update",
    "get_averaging_rule",
    "lawa_rule",
    "mask_average",
    "random_rule",
    "sewa_rule",
    "swa_rule",
    "uniform_average",
]


def mask_average(checkpoints, mask):
    """`Σ m_i w_i / Σ m_i`: the average of the rows of `checkpoints` weighted by `mask`, as float32.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import mask_average

    assert mask_average(np.array([[0.0], [4.0]]), [1.0, 3.0]).tolist() == [3.0]
    ```
    """
    # A float32 matrix-vector product: casting the (T, P) checkpoints to float64 first cost ~30 ms per call on a
    # 400k-weight CNN, a quarter of SeWA's selection time; the relative rounding error stays ~1e-7.
    mask = np.asarray(mask, np.float64)
    weights = (mask / mask.sum()).astype(np.float32)
    return weights @ np.asarray(checkpoints, np.float32)


def uniform_average(checkpoints, indices):
    """The uniform average of the rows `indices` of `checkpoints` (a `(P,)` float32 array).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import uniform_average

    assert uniform_average(np.array([[0.0], [2.0], [9.0]]), [0, 1]).tolist() == [1.0]
    ```
    """
    mask = np.zeros(len(checkpoints))
    mask[np.asarray(indices, int)] = 1.0
    return mask_average(checkpoints, mask)


def ema_decay(num_averaged, decay):
    """The EMA decay to use for the next value, after `num_averaged` values: 0 for the first, then `decay`.

    The schedule is separate from the update (as timm's `ModelEmaV3.get_decay`), so a warm-up
    schedule is a different function of `num_averaged`, not a different update.

    Example:

    ```python
    from keras_wtrain.averaging.rules import ema_decay

    assert ema_decay(0, 0.9) == 0.0 and ema_decay(5, 0.9) == 0.9
    ```
    """
    return 0.0 if num_averaged == 0 else float(decay)


def ema_update(average, value, decay):
    """One EMA step: `decay * average + (1 - decay) * value` (a copy of `value` when `average` is None).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import ema_update

    assert ema_update(np.array([1.0]), np.array([3.0]), 0.75).tolist() == [1.5]
    ```
    """
    value = np.asarray(value, np.float32)
    if average is None:
        return value.copy()
    return (decay * average + (1.0 - decay) * value).astype(np.float32)


class EmaState(NamedTuple):
    """The state of a running EMA: the `average` (None before the first value), `count` values seen, last `step`.

    Example:

    ```python
    from keras_wtrain.averaging.rules import EmaState

    state = EmaState()   # empty: average None, count 0, step -1
    ```
    """

    average: np.ndarray | None = None
    count: int = 0
    step: int = -1


def ema_accumulate(state, value, step, decay):
    """Folds checkpoint `value`, taken at `step`, into the EMA `state` (constant `decay`); returns the new state.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import EmaState, ema_accumulate

    state = EmaState()
    for step, w in enumerate([np.array([0.0]), np.array([4.0])]):
        state = ema_accumulate(state, w, step, decay=0.5)
    assert state.average.tolist() == [2.0] and state.count == 2 and state.step == 1
    ```
    """
    average = ema_update(state.average, value, ema_decay(state.count, decay))
    return EmaState(average, state.count + 1, int(step))


class AveragingContext(NamedTuple):
    """What a rule may use besides the checkpoints.

    Attributes:
        k: the number of checkpoints averaged by the `K`-subset rules.
        seed: int seed (or None) of the "random" rule.
        ema: the running EMA over every checkpoint since the start (or None).
        select: SeWA's mask learning, `checkpoints -> (indices, probabilities)` (or None).

    Example:

    ```python
    from keras_wtrain.averaging.rules import AveragingContext

    context = AveragingContext(k=3, seed=0)
    ```
    """

    k: int
    seed: int | None = None
    ema: np.ndarray | None = None
    select: Callable | None = None


class Average(NamedTuple):
    """A rule's result: the averaged `weights` (`(P,)` float32), the averaged `indices` (None for an
    EMA) and the learned `probabilities` (SeWA only).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import Average

    result = Average(np.zeros(2, "float32"), [0, 1])
    ```
    """

    weights: np.ndarray
    indices: list | None
    probabilities: np.ndarray | None = None


def _require_k(name, checkpoints, k):
    if len(checkpoints) < k:
        raise ValueError(f"strategy {name!r} needs at least k={k} checkpoints; {len(checkpoints)} are kept.")


def _uniform(checkpoints, indices, probabilities=None):
    indices = [int(i) for i in indices]
    return Average(uniform_average(checkpoints, indices), indices, probabilities)


def swa_rule(checkpoints, context):
    """SWA: the uniform average of every kept checkpoint.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import AveragingContext, swa_rule

    assert swa_rule(np.array([[1.0], [3.0]]), AveragingContext(k=1)).weights.tolist() == [2.0]
    ```
    """
    return _uniform(checkpoints, range(len(checkpoints)))


def lawa_rule(checkpoints, context):
    """LAWA: the uniform average of the latest `k` checkpoints.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import AveragingContext, lawa_rule

    assert lawa_rule(np.array([[1.0], [3.0], [5.0]]), AveragingContext(k=2)).weights.tolist() == [4.0]
    ```
    """
    _require_k("lawa", checkpoints, context.k)
    return _uniform(checkpoints, range(len(checkpoints) - context.k, len(checkpoints)))


def random_rule(checkpoints, context):
    """The paper's control: `k` checkpoints drawn without replacement (numpy, `context.seed`), averaged uniformly.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import AveragingContext, random_rule

    result = random_rule(np.eye(5, dtype="float32"), AveragingContext(k=2, seed=0))
    assert len(result.indices) == 2
    ```
    """
    _require_k("random", checkpoints, context.k)
    rng = np.random.default_rng(context.seed)
    return _uniform(checkpoints, np.sort(rng.choice(len(checkpoints), context.k, replace=False)))


def ema_rule(checkpoints, context):
    """The running EMA of every checkpoint since the start (`context.ema`), not only the kept ones.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import AveragingContext, ema_rule

    result = ema_rule(np.zeros((2, 1), "float32"), AveragingContext(k=1, ema=np.array([0.5], "float32")))
    assert result.indices is None and result.weights.tolist() == [0.5]
    ```
    """
    if context.ema is None:
        raise ValueError("strategy 'ema' needs the running EMA; no checkpoint has been averaged into it yet.")
    return Average(np.asarray(context.ema, np.float32).copy(), None)


def sewa_rule(checkpoints, context):
    """SeWA: the `k` checkpoints chosen by `context.select` (the learned mask), averaged uniformly.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.averaging.rules import AveragingContext, sewa_rule

    pick_first = lambda w: (np.array([0]), np.array([1.0, 0.0]))   # a stand-in for the mask learning
    assert sewa_rule(np.array([[1.0], [3.0]]), AveragingContext(k=1, select=pick_first)).indices == [0]
    ```
    """
    _require_k("sewa", checkpoints, context.k)
    if context.select is None:
        raise ValueError("strategy 'sewa' needs `context.select` (the mask learning of SeWA).")
    indices, probabilities = context.select(checkpoints)
    return _uniform(checkpoints, indices, probabilities)


AVERAGING_RULES = {
    "sewa": sewa_rule,
    "swa": swa_rule,
    "lawa": lawa_rule,
    "ema": ema_rule,
    "random": random_rule,
}

_K_RULES = (sewa_rule, lawa_rule, random_rule)


def get_averaging_rule(strategy):
    """The rule for `strategy`: a name of `AVERAGING_RULES`, or a rule function itself.

    Raises:
        ValueError: on an unknown name (or anything neither a name nor callable).

    Example:

    ```python
    from keras_wtrain.averaging.rules import get_averaging_rule, swa_rule

    assert get_averaging_rule("swa") is swa_rule and get_averaging_rule(swa_rule) is swa_rule
    ```
    """
    if callable(strategy):
        return strategy
    if isinstance(strategy, str) and strategy in AVERAGING_RULES:
        return AVERAGING_RULES[strategy]
    raise ValueError(
        f"argument `rule` must be one of {tuple(AVERAGING_RULES)} or a rule function "
        f"`rule(checkpoints, context) -> Average`; received {strategy!r}."
    )


def checkpoints_needed(rule, k):
    """How many kept checkpoints `rule` needs: `k` for "sewa", "lawa" and "random", 1 otherwise.

    Example:

    ```python
    from keras_wtrain.averaging.rules import checkpoints_needed, lawa_rule, swa_rule

    assert checkpoints_needed(lawa_rule, 5) == 5 and checkpoints_needed(swa_rule, 5) == 1
    ```
    """
    return k if rule in _K_RULES else 1
