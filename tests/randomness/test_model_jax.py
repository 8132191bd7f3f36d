"""keras_wtrain.randomness on JAX: backend-free maths, Keras' stateless train step, DataParallel on 2 host devices.

Run with: KERAS_BACKEND=jax python -m pytest -m jax tests/training/test_model_jax.py
"""

import keras
import numpy as np
import pytest

from keras_wtrain.randomness.model import Model
from keras_wtrain.randomness.ops import drop_gradients
from keras_wtrain.randomness.ops import loss_noise_factors
from keras_wtrain.randomness.settings import GradientDropout
from keras_wtrain.randomness.settings import LinearDecay
from keras_wtrain.randomness.settings import LossNoise
from keras_wtrain.randomness.wrapping import wrap

pytestmark = pytest.mark.jax

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12)).astype("float32"), rng.integers(0, 3, n)


def _weights(model):
    return [np.array(w) for w in model.trainable_weights]


def _one_hot_problem(n):
    x = np.eye(n, dtype="float32")
    y = np.linspace(-1.0, 1.0, n).astype("float32")[:, None]
    w0 = np.linspace(0.5, 2.0, n).astype("float32")[:, None]
    return x, y, w0


def _reference_factors(seed_state, size, stddev):
    gen = keras.random.SeedGenerator(0)
    gen.state.assign(seed_state)
    return 1.0 + stddev * np.array(keras.random.normal((size,), seed=gen))


def _unchanged_fraction(model, x, y):
    before = _weights(model)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    unchanged = sum(int(np.sum(a == b)) for a, b in zip(before, _weights(model)))
    return unchanged / sum(a.size for a in before), sum(a.size for a in before)


@pytest.fixture
def data_parallel():
    import jax

    devices = jax.devices("cpu")
    if len(devices) < 2:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=2")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices[:2]))
    yield
    keras.distribution.set_distribution(None)


def test_backend_free_maths_on_jax():
    xi = np.array(loss_noise_factors(10_000, 0.3, seed=keras.random.SeedGenerator(0)))
    assert abs(xi.mean() - 1) < 0.012 and abs(xi.std() - 0.3) < 0.01
    (dropped,) = drop_gradients([np.ones((100, 100), "float32")], 0.2, seed=keras.random.SeedGenerator(0))
    assert abs(float(np.mean(np.array(dropped) == 0)) - 0.2) < 3 * np.sqrt(0.2 * 0.8 / 1e4)
    with pytest.raises(ValueError, match="rate"):
        GradientDropout(1.0)


def _plain_keras_run(x, y):
    """A seeded MLP `base` (untrained) and `plain`: a copy of it trained 2 epochs by plain Keras."""
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    start = _weights(base)
    plain = keras.models.clone_model(base)
    plain.set_weights(start)
    plain.compile(keras.optimizers.Adam(1e-2), SCCE, jit_compile=True)
    plain.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return base, plain


def test_off_is_identical_to_keras_model():
    x, y = _data(96)
    base, plain = _plain_keras_run(x, y)
    ours = wrap(base, loss_noise=0.0, gradient_dropout=0.0)
    ours.compile(keras.optimizers.Adam(1e-2), SCCE, jit_compile=True)
    ours.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(_weights(plain), _weights(ours)):
        np.testing.assert_array_equal(a, b)


def test_gradient_dropout_fraction_and_loss_noise_hand_computation():
    rate = 0.3
    x, y = _data(64)
    inputs = keras.Input((12,))
    model = Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(128)(inputs)), gradient_dropout=rate, seed=1)
    model.compile(keras.optimizers.SGD(0.1), SCCE)
    fraction, total = _unchanged_fraction(model, x, y)
    assert abs(fraction - rate) < 3 * np.sqrt(rate * (1 - rate) / total)

    n, sigma, lr = 64, 0.5, 0.5
    x, y, w0 = _one_hot_problem(n)
    inputs = keras.Input((n,))
    layer = keras.layers.Dense(1, use_bias=False)
    model = Model(inputs, layer(inputs), loss_noise=sigma, seed=3)
    layer.kernel.assign(w0)
    model.compile(keras.optimizers.SGD(lr), "mse")
    state = np.array(model._wt_noise_seed.state)
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    xi = _reference_factors(state, n, sigma)
    expected = w0[:, 0] - lr * (2.0 / n) * xi * (w0[:, 0] - y[:, 0])
    np.testing.assert_allclose(np.array(layer.kernel)[:, 0], expected, rtol=1e-5, atol=1e-6)
    # The seed state advanced once per step (fresh noise every step, state carried by the stateless step).
    assert not np.array_equal(np.array(model._wt_noise_seed.state), state)


def test_schedule_counter_mixed_precision_accumulation_steps_per_execution():
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = _data(128)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Activation("linear", dtype="float32")(keras.layers.Dense(3)(h))
    model = Model(
        inputs, outputs, loss_noise=LossNoise(LinearDecay(0.5, 0.0, 8)), gradient_dropout=LinearDecay(0.0, 0.2, 8)
    )
    optimizer = keras.optimizers.SGD(0.05, clipnorm=1.0, gradient_accumulation_steps=2)
    model.compile(optimizer, SCCE, metrics=["accuracy"], jit_compile=True, steps_per_execution=2)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.randomness_step == 24
    assert int(model.optimizer.iterations) == 12


def test_data_parallel_two_devices(data_parallel):
    # Shared masks (one SPMD program): fraction unchanged = p, not p^2.
    rate = 0.5
    x, y = _data(64)
    inputs = keras.Input((12,))
    model = Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(64)(inputs)), gradient_dropout=rate, seed=2)
    model.compile(keras.optimizers.SGD(0.1), SCCE)
    fraction, total = _unchanged_fraction(model, x, y)
    assert abs(fraction - rate) < 3 * np.sqrt(rate * (1 - rate) / total), fraction

    # Loss noise: one draw for the global batch, each example its own factor.
    n, sigma, lr = 32, 0.5, 0.5
    x, y, w0 = _one_hot_problem(n)
    inputs = keras.Input((n,))
    layer = keras.layers.Dense(1, use_bias=False)
    model = Model(inputs, layer(inputs), loss_noise=sigma, seed=9)
    layer.kernel.assign(w0)
    model.compile(keras.optimizers.SGD(lr), "mse")
    state = np.array(model._wt_noise_seed.state)
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    xi = _reference_factors(state, n, sigma)
    expected = w0[:, 0] - lr * (2.0 / n) * xi * (w0[:, 0] - y[:, 0])
    np.testing.assert_allclose(np.array(layer.kernel)[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_keras_format_round_trip(tmp_path):
    x, y = _data(32)
    inputs = keras.Input((12,))
    model = Model(inputs, keras.layers.Dense(3)(inputs), loss_noise=0.3, gradient_dropout=GradientDropout(0.1, True))
    model.compile("adam", SCCE)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.gradient_dropout.rescale and loaded.loss_noise.stddev.value == 0.3
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- GradientDropoutOptimizer (stateless apply)


def test_gradient_dropout_optimizer_stateless_apply_threads_its_seed_state():
    from keras_wtrain._core import rng
    from keras_wtrain.randomness.gradient_dropout import GradientDropoutOptimizer

    shape = (64, 33)
    variable = keras.Variable(np.ones(shape, "float32"))
    optimizer = GradientDropoutOptimizer(keras.optimizers.SGD(1.0), 0.25, seed=7)
    optimizer.build([variable])
    values = [v.value for v in optimizer.variables]
    state = np.array(optimizer.seed_generator.state)
    (new_variable,), new_values = optimizer.stateless_apply(values, [np.ones(shape, "float32")], [variable.value])
    # Stateless: nothing assigned; the new seed state and iterations come back with the other optimizer variables.
    np.testing.assert_array_equal(np.array(variable), 1.0)
    np.testing.assert_array_equal(np.array(optimizer.seed_generator.state), state)
    index = {id(v): i for i, v in enumerate(optimizer.variables)}
    assert not np.array_equal(np.array(new_values[index[id(optimizer.seed_generator.state)]]), state)
    assert int(new_values[index[id(optimizer.inner_optimizer.iterations)]]) == 1
    # The mask is the bytes of the Philox words at the seed state, compared with round(256 p) = 64.
    reference = keras.random.SeedGenerator(0)
    reference.state.assign(state)
    n = shape[0] * shape[1]
    words = np.asarray(keras.ops.convert_to_numpy(rng.random_bits((-(-n // 4),), seed=reference)), dtype="<u4")
    kept = words.view(np.uint8)[:n].reshape(shape) >= 64
    np.testing.assert_array_equal(np.array(new_variable), np.where(kept, 0.0, 1.0))


def test_gradient_dropout_optimizer_fit_schedule_and_round_trip(tmp_path):
    from keras_wtrain.randomness.gradient_dropout import GradientDropoutOptimizer

    n = 256
    x, y, w0 = _one_hot_problem(n)
    layer = keras.layers.Dense(1, use_bias=False)
    model = keras.Sequential([keras.Input((n,)), layer])
    layer.kernel.assign(w0)
    optimizer = GradientDropoutOptimizer(keras.optimizers.SGD(0.1), LinearDecay(0.0, 0.5, decay_steps=1), seed=2)
    model.compile(optimizer, "mse", jit_compile=True)
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    first = np.array(layer.kernel)
    assert np.all(first != w0)  # rate 0 at iteration 0
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    assert 0.4 < np.mean(np.array(layer.kernel) == first) < 0.6  # iterations threaded through the stateless step
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, GradientDropoutOptimizer) and int(loaded.optimizer.iterations) == 2
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_gradient_dropout_optimizer_rate_zero_is_plain_keras_and_mixed_precision():
    from keras_wtrain.randomness.gradient_dropout import GradientDropoutOptimizer

    x, y = _data(96)
    base, plain = _plain_keras_run(x, y)
    base.compile(GradientDropoutOptimizer(keras.optimizers.Adam(1e-2), 0.0), SCCE, jit_compile=True)
    base.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(_weights(plain), _weights(base)):
        np.testing.assert_array_equal(a, b)

    keras.mixed_precision.set_global_policy("mixed_float16")
    inputs = keras.Input((12,))
    outputs = keras.layers.Activation("linear", dtype="float32")(keras.layers.Dense(3)(keras.layers.Dense(16)(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(GradientDropoutOptimizer(keras.optimizers.SGD(0.05), 0.2, seed=0), SCCE, jit_compile=True)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"])) and history.history["loss"][-1] < history.history["loss"][0]
