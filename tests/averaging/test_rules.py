"""Averaging rules and the EMA (keras_wtrain.averaging.rules), checked against plain numpy."""

import numpy as np
import pytest

from keras_wtrain.averaging.rules import AVERAGING_RULES
from keras_wtrain.averaging.rules import Average
from keras_wtrain.averaging.rules import AveragingContext
from keras_wtrain.averaging.rules import EmaState
from keras_wtrain.averaging.rules import checkpoints_needed
from keras_wtrain.averaging.rules import ema_accumulate
from keras_wtrain.averaging.rules import ema_decay
from keras_wtrain.averaging.rules import ema_update
from keras_wtrain.averaging.rules import get_averaging_rule
from keras_wtrain.averaging.rules import mask_average
from keras_wtrain.averaging.rules import uniform_average


@pytest.fixture
def checkpoints(rng):
    return rng.normal(size=(6, 5)).astype(np.float32)


def test_mask_and_uniform_average_match_numpy(checkpoints, rng):
    mask = rng.uniform(0.1, 1.0, size=6)
    expected = (mask[:, None] * checkpoints.astype(np.float64)).sum(0) / mask.sum()
    np.testing.assert_allclose(mask_average(checkpoints, mask), expected, rtol=1e-6, atol=1e-6)
    assert mask_average(checkpoints, mask).dtype == np.float32
    np.testing.assert_allclose(uniform_average(checkpoints, [1, 4, 5]), checkpoints[[1, 4, 5]].mean(0), rtol=1e-6)


def test_ema_decay_schedule_is_separate_from_the_update():
    assert ema_decay(0, 0.8) == 0.0  # the first value is copied
    assert [ema_decay(n, 0.8) for n in (1, 2, 10)] == [0.8, 0.8, 0.8]
    assert ema_update(None, np.array([2.0]), 0.8).tolist() == [2.0]
    np.testing.assert_allclose(ema_update(np.array([1.0]), np.array([3.0]), 0.8), [1.4], rtol=1e-6)


def test_ema_accumulate_matches_a_numpy_loop(checkpoints):
    state = EmaState()
    for step, row in enumerate(checkpoints):
        state = ema_accumulate(state, row, step * 10, decay=0.7)
    expected = checkpoints[0].astype(np.float64)
    for row in checkpoints[1:]:
        expected = 0.7 * expected + 0.3 * row
    np.testing.assert_allclose(state.average, expected, rtol=1e-5, atol=1e-6)
    assert state.count == 6 and state.step == 50


def test_rules_match_numpy(checkpoints):
    context = AveragingContext(k=3, seed=4, ema=np.ones(5, np.float32), select=lambda w: ([0, 2, 3], np.full(6, 0.5)))
    swa = AVERAGING_RULES["swa"](checkpoints, context)
    np.testing.assert_allclose(swa.weights, checkpoints.mean(0), rtol=1e-5, atol=1e-6)
    assert swa.indices == list(range(6))
    lawa = AVERAGING_RULES["lawa"](checkpoints, context)
    np.testing.assert_allclose(lawa.weights, checkpoints[3:].mean(0), rtol=1e-5, atol=1e-6)
    assert lawa.indices == [3, 4, 5]
    random = AVERAGING_RULES["random"](checkpoints, context)
    expected_indices = np.sort(np.random.default_rng(4).choice(6, 3, replace=False)).tolist()
    assert random.indices == expected_indices
    np.testing.assert_allclose(random.weights, checkpoints[expected_indices].mean(0), rtol=1e-5, atol=1e-6)
    ema = AVERAGING_RULES["ema"](checkpoints, context)
    assert ema.indices is None and ema.weights.tolist() == [1.0] * 5
    sewa = AVERAGING_RULES["sewa"](checkpoints, context)
    assert sewa.indices == [0, 2, 3] and sewa.probabilities.tolist() == [0.5] * 6
    np.testing.assert_allclose(sewa.weights, checkpoints[[0, 2, 3]].mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lawa", "random", "sewa"])
def test_k_subset_rules_need_k_checkpoints(name, checkpoints):
    with pytest.raises(ValueError, match="k=7"):
        AVERAGING_RULES[name](checkpoints, AveragingContext(k=7, select=lambda w: ([0], None)))
    assert checkpoints_needed(AVERAGING_RULES[name], 7) == 7


def test_ema_and_sewa_need_their_context(checkpoints):
    with pytest.raises(ValueError, match="EMA"):
        AVERAGING_RULES["ema"](checkpoints, AveragingContext(k=1))
    with pytest.raises(ValueError, match="select"):
        AVERAGING_RULES["sewa"](checkpoints, AveragingContext(k=1))
    assert checkpoints_needed(AVERAGING_RULES["ema"], 7) == checkpoints_needed(AVERAGING_RULES["swa"], 7) == 1


def test_get_averaging_rule_accepts_names_and_callables():
    def first(checkpoints, context):
        return Average(checkpoints[0], [0])

    assert get_averaging_rule(first) is first
    assert get_averaging_rule("lawa") is AVERAGING_RULES["lawa"]
    assert tuple(AVERAGING_RULES) == ("sewa", "swa", "lawa", "ema", "random")
    for bad in ("median", 3, None):
        with pytest.raises(ValueError, match="`rule`"):
            get_averaging_rule(bad)
