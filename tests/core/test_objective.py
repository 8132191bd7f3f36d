"""One loss-at-weights evaluator: the diagnostics' `mean_loss` and SeWA's `SelectionObjective` give the number
`evaluate` reports, regularisation losses included."""

import keras
import numpy as np
import pytest

from keras_wtrain._core.objective import loss_value
from keras_wtrain._core.objective import resolve_loss
from keras_wtrain.averaging.objective import SelectionObjective
from keras_wtrain.diagnostics import mean_loss


def _regularised_model():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.3)),
            keras.layers.Dense(2),
        ]
    )
    model.compile("sgd", "mse")
    return model


def test_mean_loss_and_selection_objective_agree_with_evaluate_and_numpy(rng):
    model = _regularised_model()
    x, y = rng.normal(size=(40, 4)).astype("float32"), rng.normal(size=(40, 2)).astype("float32")
    k1, b1, k2, b2 = (np.asarray(v) for v in model.trainable_variables)
    by_hand = np.mean((np.tanh(x @ k1 + b1) @ k2 + b2 - y) ** 2) + 0.3 * np.sum(k1**2)
    evaluated = model.evaluate(x, y, batch_size=40, verbose=0)
    values = [np.asarray(v) for v in model.trainable_variables]
    assert evaluated == pytest.approx(by_hand, rel=1e-5)
    assert mean_loss(model, (x, y), batch_size=40) == pytest.approx(by_hand, rel=1e-5)
    assert SelectionObjective(model).mean_loss(values, [], x, y, batch_size=40) == pytest.approx(by_hand, rel=1e-5)
    direct = loss_value(model, keras.losses.mean_squared_error, values, [], x, y)
    assert float(direct) == pytest.approx(by_hand, rel=1e-5)


def test_the_evaluator_leaves_the_model_untouched(rng):
    model = _regularised_model()
    before = [np.asarray(v).copy() for v in model.weights]
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    loss_value(model, keras.losses.mean_squared_error, zeros, [], np.ones((2, 4), "float32"), np.zeros((2, 2)))
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.asarray(new))


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse", keras.losses.binary_crossentropy])
def test_a_loss_named_at_compile_meets_targets_of_lower_rank_as_compile_does(loss):
    # Targets of shape (n,) and outputs of shape (n, 1): `fit` and `evaluate` accept them, so must the loss at w.
    x = np.random.default_rng(0).random((64, 4)).astype("float32")
    y = (np.arange(64) % 2).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", loss)
    values = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
    value = loss_value(model, resolve_loss(model), *values, x, y)
    np.testing.assert_allclose(float(value), model.evaluate(x, y, batch_size=64, verbose=0), rtol=1e-5)
