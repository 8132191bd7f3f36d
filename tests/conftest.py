"""Test configuration: TensorFlow backend by default, 2 logical CPUs for MirroredStrategy."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_WTRAIN_TINY", "1")
# Two host devices for keras.distribution.DataParallel tests on JAX (must be set before jax is imported).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
        )
    except RuntimeError:  # devices already initialised
        pass


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    skip_jax = pytest.mark.skip(reason="runs only under KERAS_BACKEND=jax")
    skip_tf = pytest.mark.skip(reason="needs the TensorFlow backend (run under KERAS_BACKEND=tensorflow)")
    for item in items:
        if "jax" in item.keywords and backend != "jax":
            item.add_marker(skip_jax)
        if "tensorflow_only" in item.keywords and backend != "tensorflow":
            item.add_marker(skip_tf)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def mnist5k():
    from keras_wtrain.comparison.datasets import load_mnist5k

    return load_mnist5k()


@pytest.fixture(scope="session")
def digits():
    from keras_wtrain.comparison.datasets import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """A MirroredStrategy over the two logical CPU devices set up above.

    One per process: several MirroredStrategy objects with collective all-reduce
    in one process reuse collective instance keys and fail with "Shape mismatch
    in the collective instance".
    """
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.skip("two logical CPU devices could not be configured")
    return tf.distribute.MirroredStrategy(devices)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
