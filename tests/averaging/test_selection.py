"""SeWA's relaxed-mask optimisation (`callbacks.relaxed_mask`) and selection, checked against numpy and Keras' Adam."""

import itertools

import keras
import numpy as np
import pytest

from keras_wtrain.averaging.relaxed_mask import AdamState
from keras_wtrain.averaging.relaxed_mask import adam_step
from keras_wtrain.averaging.relaxed_mask import concrete_mask
from keras_wtrain.averaging.relaxed_mask import mask_gradient
from keras_wtrain.averaging.relaxed_mask import project_capped_simplex
from keras_wtrain.averaging.relaxed_mask import relax_mask
from keras_wtrain.averaging.relaxed_mask import relaxed_average
from keras_wtrain.averaging.relaxed_mask import top_k_indices
from keras_wtrain.averaging.selection import select_checkpoints


def test_capped_simplex_projection_satisfies_the_kkt_conditions(rng):
    for _ in range(20):
        v = rng.normal(size=8)
        p = project_capped_simplex(v, total=3.0, low=0.01, high=0.99)
        assert p.sum() == pytest.approx(3.0, abs=1e-9)
        assert np.all((p >= 0.01) & (p <= 0.99))
        # Euclidean projection onto a capped simplex: p = clip(v - tau) for one tau.
        free = (p > 0.01 + 1e-9) & (p < 0.99 - 1e-9)
        if free.any():
            shifts = (v - p)[free]
            np.testing.assert_allclose(shifts, shifts[0], atol=1e-9)
            assert np.all(v[p <= 0.01 + 1e-9] - shifts[0] <= 0.01 + 1e-9)
            assert np.all(v[p >= 0.99 - 1e-9] - shifts[0] >= 0.99 - 1e-9)


def test_top_k_breaks_ties_towards_later_checkpoints():
    assert top_k_indices([0.5, 0.9, 0.5, 0.5], 2).tolist() == [1, 3]
    assert top_k_indices([0.1, 0.2, 0.3], 3).tolist() == [0, 1, 2]


def test_adam_step_matches_keras_adam():
    grads = [np.array([0.3, -1.2, 2.0]), np.array([0.1, 0.4, -0.5]), np.array([-0.7, 0.2, 0.9])]
    params, state = np.array([0.5, 0.1, -0.3]), AdamState(0, np.zeros(3), np.zeros(3))
    variable = keras.Variable(params.astype("float32"))
    optimizer = keras.optimizers.Adam(learning_rate=0.05, epsilon=1e-12)
    for g in grads:
        params, state = adam_step(params, g, state, learning_rate=0.05, epsilon=1e-12)
        optimizer.apply([keras.ops.convert_to_tensor(g.astype("float32"))], [variable])
    np.testing.assert_allclose(params, keras.ops.convert_to_numpy(variable), rtol=1e-5, atol=1e-6)
    assert state.count == 3


def test_mask_gradient_matches_finite_differences(rng):
    checkpoints = rng.normal(size=(5, 3)).astype(np.float32)
    target = rng.normal(size=3)
    s, u, temperature = rng.uniform(0.2, 0.8, size=5), rng.uniform(0.05, 0.95, size=5), 0.7

    def objective(probabilities):  # F(w(m̃(s))) in float64, u fixed
        m = concrete_mask(probabilities, u, temperature)
        w = m @ checkpoints.astype(np.float64) / m.sum()
        return float(((w - target) ** 2).sum())

    m = concrete_mask(s, u, temperature)
    g = 2 * (relaxed_average(checkpoints, m).astype(np.float64) - target)
    analytic = mask_gradient(checkpoints, m, s, g, temperature)
    h = 1e-6
    numeric = [(objective(s + h * e) - objective(s - h * e)) / (2 * h) for e in np.eye(5)]
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)


def test_select_checkpoints_finds_the_best_subset_of_a_quadratic(rng):
    # Three checkpoints near the minimum (positions 1, 4, 6), five far from it on one side.
    checkpoints = (3.0 + rng.normal(size=(8, 4))).astype(np.float32)
    checkpoints[[1, 4, 6]] = 0.3 * rng.normal(size=(3, 4))
    target = np.zeros(4)

    def loss_and_grad(w, rows):
        return float(((w - target) ** 2).sum()), (2 * (w - target)).astype(np.float32)

    def loss(indices):
        return ((checkpoints[list(indices)].mean(0) - target) ** 2).sum()

    best = min(itertools.combinations(range(8), 3), key=loss)
    result = select_checkpoints(checkpoints, loss_and_grad, num_examples=1, k=3, steps=60, seed=0)
    assert list(best) == [1, 4, 6] and result.indices.tolist() == [1, 4, 6]
    assert result.probabilities.sum() == pytest.approx(3.0, abs=1e-6) and len(result.history) == 60


def test_relaxed_phase_draws_minibatches_from_all_examples():
    seen = []

    def loss_and_grad(w, rows):
        seen.extend(rows.tolist())
        return 0.0, np.zeros_like(w)

    relax_mask(np.eye(4, dtype=np.float32), loss_and_grad, num_examples=10, k=2, steps=5, batch_size=4, seed=0)
    assert len(seen) == 5 * 2 * 4 and set(seen) == set(range(10))


def test_select_checkpoints_k_equal_t_and_bad_k():
    calls = []

    def loss_and_grad(w, rows):
        calls.append(rows)
        return float(np.sum(w)), np.ones_like(w)

    result = select_checkpoints(np.ones((3, 2), np.float32), loss_and_grad, num_examples=1, k=3)
    assert result.indices.tolist() == [0, 1, 2] and result.history == []
    assert result.report["evaluations"] == 1 and len(calls) == 1  # only the window: no relaxed phase
    with pytest.raises(ValueError, match="`k`"):
        select_checkpoints(np.ones((3, 2), np.float32), None, num_examples=1, k=4)
