"""`GradientDropoutOptimizer` on TensorFlow: masks, exactness, wrapping, saving, distribution."""

import math
import warnings

import keras
import numpy as np
import pytest

from keras_wtrain._core import rng
from keras_wtrain.randomness.gradient_dropout import GradientDropoutOptimizer
from keras_wtrain.randomness.gradient_dropout import find_gradient_dropout
from keras_wtrain.randomness.model import Model
from keras_wtrain.randomness.ops import drop_gradients
from keras_wtrain.randomness.ops import quantize_rate
from keras_wtrain.randomness.settings import GradientDropout
from keras_wtrain.randomness.settings import LinearDecay

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=64, seed=0):
    generator = np.random.default_rng(seed)
    return generator.normal(size=(n, 12)).astype("float32"), generator.integers(0, 3, n)


def _weights(model):
    return [np.array(w) for w in model.trainable_weights]


def _mlp(seed=0, width=128):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(width), keras.layers.Dense(3)])


def _one_hot_problem(n):
    """Linear model w (n,) on one-hot inputs: each entry's plain SGD step is known in closed form."""
    x = np.eye(n, dtype="float32")
    y = np.linspace(-1.0, 1.0, n).astype("float32")[:, None]
    w0 = np.linspace(0.5, 2.0, n).astype("float32")[:, None]
    return x, y, w0


def _linear(n, dtype=None):
    layer = keras.layers.Dense(1, use_bias=False, dtype=dtype)
    model = keras.Sequential([keras.Input((n,)), layer])
    return model, layer


def _unchanged_fraction(model, x, y):
    before = _weights(model)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    after = _weights(model)
    unchanged = sum(int(np.sum(a == b)) for a, b in zip(before, after))
    total = sum(a.size for a in before)
    return unchanged / total, total


# ---------------------------------------------------------------------- the 8-bit masks


@pytest.mark.parametrize("rate", [0.003, 0.1, 0.25, 0.3, 0.77, 0.999])
def test_masks_are_the_random_bytes_compared_with_round_256p(rate):
    shape = (257, 129)  # entry count not a multiple of 4
    n = math.prod(shape)
    generator = keras.random.SeedGenerator(3)
    reference = keras.random.SeedGenerator(0)
    reference.state.assign(generator.state)
    (dropped,) = drop_gradients([np.ones(shape, "float32")], rate, seed=generator)
    words = np.asarray(keras.ops.convert_to_numpy(rng.random_bits((-(-n // 4),), seed=reference)), dtype="<u4")
    random_bytes = words.view(np.uint8)[:n].reshape(shape)  # four bytes per word, numpy's own reading
    threshold = int(np.floor(rate * 256 + 0.5))
    assert quantize_rate(rate) == threshold
    np.testing.assert_array_equal(np.array(dropped) != 0, random_bytes >= threshold)
    assert abs(threshold / 256 - rate) <= 1 / 512


def test_keep_probability_within_1_over_512_of_one_minus_p():
    n = 1 << 20
    generator = keras.random.SeedGenerator(11)
    for rate in [1 / 512, 0.01, 0.05, 0.1, 0.19, 1 / 3, 0.5, 0.9, 0.997]:
        (dropped,) = drop_gradients([np.ones((n,), "float32")], rate, seed=generator)
        keep = float(np.mean(np.array(dropped) != 0))
        # The quantised keep probability is within 1/512 of 1 - p; the sample mean within 5 standard errors of it.
        se = math.sqrt(max(keep * (1 - keep), 1 / n) / n)
        assert abs(keep - (1 - rate)) <= 1 / 512 + 5 * se, (rate, keep)
        quantised = 1 - quantize_rate(rate) / 256
        assert abs(keep - quantised) <= 5 * se, (rate, keep, quantised)


def test_scheduled_rate_uses_the_same_masks_as_a_constant_one():
    shape = (64, 33)
    first, second = keras.random.SeedGenerator(5), keras.random.SeedGenerator(5)
    (constant,) = drop_gradients([np.ones(shape, "float32")], 0.3, seed=first, rescale=True)
    (tensor,) = drop_gradients([np.ones(shape, "float32")], keras.ops.convert_to_tensor(0.3), seed=second, rescale=True)
    np.testing.assert_array_equal(np.array(constant), np.array(tensor))
    assert set(np.unique(np.array(constant))) == {0.0, np.float32(256 / (256 - 77))}  # rescaled by 1 / (1 - p_q)


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "rate",
    [
        0.2,
        LinearDecay(0.3, 0.0, 10),
        keras.optimizers.schedules.ExponentialDecay(0.2, decay_steps=10, decay_rate=0.5),
        GradientDropout(0.25, rescale=True),
    ],
)
def test_config_round_trip(rate):
    optimizer = GradientDropoutOptimizer(keras.optimizers.Adam(1e-3, clipnorm=1.0), rate, seed=5, name="gd")
    for restored in (
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer)),
        GradientDropoutOptimizer.from_config(optimizer.get_config()),
    ):
        assert type(restored) is GradientDropoutOptimizer and restored.name == "gd" and restored.seed == 5
        assert restored.get_config() == optimizer.get_config()
        assert isinstance(restored.inner_optimizer, keras.optimizers.Adam)
        assert restored.inner_optimizer.clipnorm == 1.0
        assert float(restored.current_rate()) == pytest.approx(float(optimizer.current_rate()))
    assert optimizer.rescale is isinstance(rate, GradientDropout)


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"inner_optimizer": 3}, TypeError, "argument `inner_optimizer` must be a keras.optimizers.Optimizer"),
        ({"inner_optimizer": "no_such_optimizer"}, ValueError, "argument `inner_optimizer`"),
        ({"rate": 1.0}, ValueError, "argument `rate` must be in [0, 1)"),
        ({"rate": -0.1}, ValueError, "argument `rate`"),
        ({"rate": 0.001}, ValueError, "argument `rate` must be 0 or at least 1/512"),
        ({"rate": "0.1"}, TypeError, "argument `rate`"),
        ({"rate": LinearDecay(0.5, 1.2, 10)}, ValueError, "max 1.2"),
        ({"rescale": 1}, TypeError, "argument `rescale`"),
        ({"rate": GradientDropout(0.1), "rescale": True}, ValueError, "argument `rescale`"),
        ({"seed": "x"}, TypeError, "argument `seed`"),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_argument(kwargs, error, text):
    kwargs = {"inner_optimizer": keras.optimizers.SGD(), **kwargs}
    with pytest.raises(error) as info:
        GradientDropoutOptimizer(**kwargs)
    assert text in str(info.value)
    assert "GradientDropoutOptimizer" in str(info.value)


def test_schedule_reaching_rates_below_resolution_warns():
    with pytest.warns(UserWarning, match="1/512"):
        GradientDropoutOptimizer(keras.optimizers.SGD(), LinearDecay(0.1, 0.001, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GradientDropoutOptimizer(keras.optimizers.SGD(), LinearDecay(0.1, 0.0, 10))  # decaying to 0 is fine


def test_find_gradient_dropout_follows_inner_optimizers():
    inner = GradientDropoutOptimizer(keras.optimizers.SGD())
    assert find_gradient_dropout(keras.optimizers.LossScaleOptimizer(inner)) is inner
    assert find_gradient_dropout(keras.optimizers.SGD()) is None
    assert find_gradient_dropout(None) is None


# ---------------------------------------------------------------------- training


tensorflow_only = pytest.mark.tensorflow_only


@tensorflow_only
@pytest.mark.parametrize("rate", [0.0, LinearDecay(0.0, 0.0, 5)])
def test_rate_zero_is_exactly_plain_keras(rate):
    x, y = _data(96)
    plain = _mlp()
    start = _weights(plain)
    plain.compile(keras.optimizers.Adam(1e-2, clipnorm=1.0), SCCE, jit_compile=True)
    plain.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    ours = _mlp()
    ours.set_weights(start)
    ours.compile(GradientDropoutOptimizer(keras.optimizers.Adam(1e-2, clipnorm=1.0), rate), SCCE, jit_compile=True)
    ours.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(_weights(plain), _weights(ours)):
        np.testing.assert_array_equal(a, b)
    assert int(ours.optimizer.iterations) == int(plain.optimizer.iterations) == 12


@tensorflow_only
@pytest.mark.parametrize("jit_compile", [True, False])
def test_fraction_unchanged_is_rate_and_kept_entries_take_the_plain_step(jit_compile):
    n, rate, lr = 512, 0.25, 0.5
    x, y, w0 = _one_hot_problem(n)
    for rescale in (False, True):
        model, layer = _linear(n)
        layer.kernel.assign(w0)
        optimizer = GradientDropoutOptimizer(keras.optimizers.SGD(lr), rate, rescale=rescale, seed=1)
        model.compile(optimizer, "mse", jit_compile=jit_compile)
        model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
        plain_step = -lr * 2.0 * (w0 - y) / n
        step = np.array(layer.kernel) - w0
        kept = step != 0
        assert abs((1 - kept.mean()) - rate) < 4 * math.sqrt(rate * (1 - rate) / n)
        scale = 1 / (1 - rate) if rescale else 1.0
        np.testing.assert_allclose(step[kept], scale * plain_step[kept], rtol=1e-5, atol=2e-7)


@tensorflow_only
def test_schedules_are_evaluated_at_iterations():
    n = 256
    x, y, w0 = _one_hot_problem(n)
    schedules = [
        LinearDecay(0.0, 0.5, decay_steps=1),  # 0 at iteration 0, 0.5 from iteration 1
        keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.0, 0.5]),
    ]
    for schedule in schedules:
        model, layer = _linear(n)
        layer.kernel.assign(w0)
        optimizer = GradientDropoutOptimizer(keras.optimizers.SGD(0.1), schedule, seed=2)
        model.compile(optimizer, "mse", jit_compile=True)
        assert float(optimizer.current_rate()) == 0.0
        model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
        first = np.array(layer.kernel)
        assert np.all(first != w0)  # rate 0 at iteration 0: every entry moved
        model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
        assert 0.4 < np.mean(np.array(layer.kernel) == first) < 0.6
        assert int(optimizer.iterations) == 2 and float(optimizer.current_rate()) == pytest.approx(0.5)


@tensorflow_only
def test_keras_file_round_trip_restores_optimizer_state_and_masks(tmp_path):
    x, y = _data(64)
    model = _mlp()
    model.compile(GradientDropoutOptimizer(keras.optimizers.Adam(1e-2), LinearDecay(0.3, 0.1, 50), seed=3), SCCE)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, GradientDropoutOptimizer)
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.Adam)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))  # seed state and Adam moments included
    # Same state: the next step draws the same masks and makes the same update.
    model.train_on_batch(x[:16], y[:16])
    loaded.train_on_batch(x[:16], y[:16])
    for a, b in zip(_weights(model), _weights(loaded)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@tensorflow_only
def test_model_compile_wraps_once_and_saves(tmp_path):
    x, y = _data(64)
    inputs = keras.Input((12,))
    model = Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(16)(inputs)), gradient_dropout=0.2, seed=4)
    sgd = keras.optimizers.SGD(0.1)
    model.compile(sgd, SCCE)
    assert isinstance(model.optimizer, GradientDropoutOptimizer) and model.optimizer.inner_optimizer is sgd
    assert model.optimizer.seed == 5 and model.optimizer.rate.value == 0.2
    own = GradientDropoutOptimizer(keras.optimizers.SGD(0.1), 0.4)
    model.compile(own, SCCE)
    assert model.optimizer is own  # an optimizer that already drops gradients is not wrapped again
    model.compile(sgd, SCCE)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, GradientDropoutOptimizer)
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.SGD)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    loaded.fit(x, y, epochs=1, verbose=0)


# ---------------------------------------------------------------------- mixed precision


def _mixed_precision_step(optimizer_factory, use_model):
    n, lr = 256, 0.5
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y, w0 = _one_hot_problem(n)
    if use_model:
        inputs = keras.Input((n,))
        layer = keras.layers.Dense(1, use_bias=False)
        outputs = keras.layers.Activation("linear", dtype="float32")(layer(inputs))
        model = Model(inputs, outputs, gradient_dropout=0.25, seed=6)
    else:
        layer = keras.layers.Dense(1, use_bias=False)
        model = keras.Sequential([keras.Input((n,)), layer, keras.layers.Activation("linear", dtype="float32")])
    layer.kernel.assign(w0)
    model.compile(optimizer_factory(lr), "mse", jit_compile=True)
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    step = np.array(layer.kernel) - w0
    kept = step != 0
    assert abs((1 - kept.mean()) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)
    plain_step = -lr * 2.0 * (w0 - y) / n
    np.testing.assert_allclose(step[kept], plain_step[kept], rtol=2e-2)  # float16 forward pass
    # An overflowing step (huge inputs, float16) is skipped by the loss scaler, which halves its scale.
    scaler = model.optimizer
    while not isinstance(scaler, keras.optimizers.LossScaleOptimizer):
        scaler = scaler.inner_optimizer
    scale, before = float(scaler.dynamic_scale), np.array(layer.kernel)
    model.train_on_batch(np.full((4, n), 6e4, "float32"), np.zeros((4, 1), "float32"))
    np.testing.assert_array_equal(np.array(layer.kernel), before)
    assert float(scaler.dynamic_scale) == scale / 2
    return model


@tensorflow_only
def test_mixed_precision_keras_wraps_the_gradient_dropout_optimizer():
    model = _mixed_precision_step(lambda lr: GradientDropoutOptimizer(keras.optimizers.SGD(lr), 0.25, seed=1), False)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, GradientDropoutOptimizer)


@tensorflow_only
def test_mixed_precision_model_compile_puts_gradient_dropout_inside_keras_loss_scaling():
    model = _mixed_precision_step(lambda lr: keras.optimizers.SGD(lr), True)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, GradientDropoutOptimizer)


@tensorflow_only
def test_mixed_precision_gradient_dropout_wrapping_a_loss_scale_optimizer():
    model = _mixed_precision_step(
        lambda lr: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(lr)), True
    )  # Model.compile wraps the given LossScaleOptimizer and skips Keras' own (it would scale twice)
    assert isinstance(model.optimizer, GradientDropoutOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer.inner_optimizer, keras.optimizers.SGD)


# ---------------------------------------------------------------------- MirroredStrategy


@pytest.fixture
def strategy(two_cpu_strategy):
    """The fixture's two devices, reducing with ReductionToOneDevice (see tests/training/test_model.py)."""
    import tensorflow as tf

    devices = two_cpu_strategy.extended.worker_devices
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


@tensorflow_only
def test_mirrored_strategy_replicas_share_masks_and_match_one_device(strategy):
    # Shared masks: the two-replica run equals the one-device run (same seed, same masks) and leaves a
    # fraction p of the weights unchanged; independent masks per replica would leave only p^2 = 0.25.
    rate = 0.5
    x, y = _data(64)
    single = _mlp(width=64)
    start = _weights(single)
    single.compile(GradientDropoutOptimizer(keras.optimizers.SGD(0.1), rate, seed=9), SCCE)
    single.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
    with strategy.scope():
        mirrored = _mlp(width=64)
        mirrored.set_weights(start)
        mirrored.compile(GradientDropoutOptimizer(keras.optimizers.SGD(0.1), rate, seed=9), SCCE)
    fraction, total = _unchanged_fraction(mirrored, x, y)
    assert abs(fraction - rate) < 4 * math.sqrt(rate * (1 - rate) / total), fraction
    for a, b, w in zip(_weights(single), _weights(mirrored), start):
        np.testing.assert_array_equal(a == w, b == w)  # the same entries were dropped
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
