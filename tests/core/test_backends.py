"""Unsupported Keras backends are refused at import, with an error that names the backend."""

import os
import subprocess
import sys

import pytest

from keras_wtrain._core.backends import SUPPORTED_BACKENDS
from keras_wtrain._core.backends import check_backend


def test_check_backend_accepts_tensorflow_and_jax_and_refuses_torch():
    assert SUPPORTED_BACKENDS == ("tensorflow", "jax")
    for backend in SUPPORTED_BACKENDS:
        assert check_backend(backend) == backend
    with pytest.raises(ImportError, match="'torch'.*KERAS_BACKEND=tensorflow"):
        check_backend("torch")


@pytest.mark.parametrize(
    "module",
    [
        "keras_wtrain.layers",
        "keras_wtrain.randomness",
        "keras_wtrain.callbacks",
        "keras_wtrain.randomness.gradient_dropout",
        "keras_wtrain.diagnostics",
        "keras_wtrain.comparison.harness",
        "keras_wtrain.weight_normalization",
        "keras_wtrain.shadow_weights",
        "keras_wtrain.averaging",
        "keras_wtrain.optimum_shifting",
    ],
)
def test_importing_a_backend_module_on_an_unsupported_backend_fails_fast(module):
    # Keras' NumPy backend stands in for PyTorch (not installed here): the guard is the same check.
    env = dict(os.environ, KERAS_BACKEND="numpy", TF_CPP_MIN_LOG_LEVEL="3")
    code = f"import keras_wtrain; print(keras_wtrain.__version__); import {module}"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stdout.strip() == "0.1.0"  # the package itself imports (the CLI's --help needs no backend)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: keras-wtrain supports the Keras backends 'tensorflow', 'jax'"), last
    assert "'numpy'" in last
