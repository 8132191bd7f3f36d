"""The selection objective F(w) (keras_wtrain.averaging.objective) and FlatWeights, against numpy."""

import gc

import keras
import numpy as np
import pytest

from keras_wtrain.averaging import objective as selection_objective
from keras_wtrain.averaging.flat_weights import FlatWeights
from keras_wtrain.averaging.objective import SelectionObjective


def _linear(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])


def test_mean_loss_and_gradient_match_numpy_for_a_linear_model(rng):
    model = _linear()
    x, y = rng.normal(size=(10, 3)).astype("float32"), rng.normal(size=(10, 1)).astype("float32")
    kernel, bias = rng.normal(size=(3, 1)).astype("float32"), rng.normal(size=(1,)).astype("float32")
    objective = SelectionObjective(model, loss="mse")
    residual = x @ kernel + bias - y
    assert objective.mean_loss([kernel, bias], [], x, y, batch_size=4) == pytest.approx(np.mean(residual**2), 1e-5)
    value, (g_kernel, g_bias) = objective.value_and_grad([kernel, bias], [], x, y)
    assert value == pytest.approx(np.mean(residual**2), rel=1e-5)
    np.testing.assert_allclose(g_kernel, 2 * x.T @ residual / 10, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_bias, 2 * residual.mean(0), rtol=1e-4, atol=1e-6)
    # The model's variables were not touched.
    assert not np.allclose(keras.ops.convert_to_numpy(model.layers[0].kernel), kernel)


def test_mean_loss_equals_evaluate_with_dict_inputs_and_regularisation(rng):
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([a, b])
    out = keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L2(0.1))(h)
    model = keras.Model({"a": a, "b": b}, out)
    model.compile("sgd", "mse")
    x = {"a": rng.normal(size=(12, 3)).astype("float32"), "b": rng.normal(size=(12, 2)).astype("float32")}
    y = rng.normal(size=(12, 2)).astype("float32")
    values = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    loss = SelectionObjective(model).mean_loss(values, [], x, y, batch_size=12)
    assert loss == pytest.approx(model.evaluate(x, y, batch_size=12, verbose=0), rel=1e-5)


def test_compiled_once_per_model_and_loss_and_released_with_the_model(rng):
    x, y = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 1)).astype("float32")
    model = _linear()
    loss_fn = keras.losses.get("mse")
    first = selection_objective._compiled(model, loss_fn, "value", x, y)
    assert selection_objective._compiled(model, loss_fn, "value", x[:2], y[:2]) is first  # any batch size
    assert selection_objective._compiled(_linear(1), loss_fn, "value", x, y) is not first
    before = len(selection_objective._COMPILED)
    del model, first
    gc.collect()
    assert len(selection_objective._COMPILED) < before


def test_resolve_loss_errors():
    model = _linear()
    with pytest.raises(ValueError, match="not compiled with a loss"):
        SelectionObjective(model)
    model.compile("sgd", loss=["mse", "mae"])
    with pytest.raises(ValueError, match="several losses"):
        SelectionObjective(model)


def test_flat_weights_round_trip_skips_non_float_variables(rng):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.5), keras.layers.BatchNormalization()]
    )
    flat = FlatWeights(model)
    # Dense 3x4 + 4, BN gamma/beta 4 + 4, BN moving mean/var 4 + 4; the dropout seed state (int) is left out.
    assert flat.size == 12 + 4 + 8 + 8
    assert any(not keras.backend.is_float_dtype(v.dtype) for v in model.non_trainable_variables)
    w = rng.normal(size=flat.size).astype("float32")
    flat.assign(w)
    np.testing.assert_array_equal(flat.read(), w)
    trainable, non_trainable = flat.split(w)
    assert [t.shape for t in trainable] == [(3, 4), (4,), (4,), (4,)]
    seed_state = keras.ops.convert_to_numpy(model.non_trainable_variables[0])  # Dropout's, listed first
    np.testing.assert_array_equal(non_trainable[0], seed_state)  # keeps its current value and dtype
    np.testing.assert_array_equal(non_trainable[1], w[-8:-4])  # moving mean
    g = flat.gradient_vector([np.ones((3, 4)), None, np.full(4, 2.0), np.full(4, 3.0)])
    np.testing.assert_array_equal(g, [1.0] * 12 + [0.0] * 4 + [2.0] * 4 + [3.0] * 4 + [0.0] * 8)


def test_flat_objective_on_rows_matches_numpy(rng):
    from keras_wtrain.averaging.objective import FlatObjective

    model = _linear()
    x, y = rng.normal(size=(10, 3)).astype("float32"), rng.normal(size=(10, 1)).astype("float32")
    flat = FlatWeights(model)
    objective = FlatObjective(SelectionObjective(model, "mse"), flat, x, y)
    w = rng.normal(size=4).astype("float32")  # kernel (3, 1), then bias
    rows = np.array([1, 4, 7])
    residual = x[rows] @ w[:3, None] + w[3] - y[rows]
    value, gradient = objective.loss_and_grad(w, rows)
    assert value == pytest.approx(np.mean(residual**2), rel=1e-5)
    np.testing.assert_allclose(gradient[:3], 2 * x[rows].T @ residual[:, 0] / 3, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gradient[3], 2 * residual.mean(), rtol=1e-4, atol=1e-6)
    assert objective.loss(w) == pytest.approx(np.mean((x @ w[:3, None] + w[3] - y) ** 2), rel=1e-5)
    assert objective.num_examples == 10
