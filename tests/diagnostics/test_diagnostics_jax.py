"""Flatness diagnostics on JAX: the same exact-Hessian checks as on TensorFlow."""

import numpy as np
import pytest

from keras_wtrain import diagnostics

pytestmark = pytest.mark.jax


def test_trace_and_top_eigenvalue_match_the_exact_hessian_on_jax():
    from tests.diagnostics.test_diagnostics import _numpy_hessian
    from tests.diagnostics.test_diagnostics import _tiny_problem

    model, data, flat, f = _tiny_problem()
    hess = _numpy_hessian(f, flat)
    result = diagnostics.hessian_trace(model, data, num_probes=200, seed=0)
    assert abs(result["trace"] - np.trace(hess)) <= result["ci95"]
    eigenvalues = np.linalg.eigvalsh(hess)
    expected = eigenvalues[np.argmax(np.abs(eigenvalues))]
    top = diagnostics.top_hessian_eigenvalue(model, data, seed=0, max_iterations=500, tolerance=1e-9)
    assert abs(top["eigenvalue"] - expected) <= 1e-3 * abs(expected)
    sharp = diagnostics.sharpness(model, data, radius=0.05, num_samples=3, seed=0)
    assert np.isfinite(sharp["mean"]) and sharp["max"] >= sharp["mean"]
