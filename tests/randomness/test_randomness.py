"""Backend-free randomness maths and configuration objects (keras_wtrain.randomness.settings)."""

import keras
import numpy as np
import pytest

from keras_wtrain.randomness.ops import drop_gradients
from keras_wtrain.randomness.ops import gradient_keep_mask
from keras_wtrain.randomness.ops import loss_noise_factors
from keras_wtrain.randomness.ops import noisy_sample_weight
from keras_wtrain.randomness.settings import Constant
from keras_wtrain.randomness.settings import GradientDropout
from keras_wtrain.randomness.settings import LinearDecay
from keras_wtrain.randomness.settings import LossNoise


def test_defaults_match_the_documented_values():
    assert LossNoise().stddev.value == 0.3 and LossNoise().kind == "multiplicative"
    assert GradientDropout().rate.value == 0.1 and GradientDropout().rescale is False
    assert LossNoise(0).is_off and GradientDropout(0.0).is_off and not GradientDropout().is_off


def test_schedules():
    assert Constant(0.2)(10_000) == 0.2
    decay = LinearDecay(0.5, 0.1, decay_steps=100)
    assert decay(0) == pytest.approx(0.5) and decay(50) == pytest.approx(0.3) and decay(500) == pytest.approx(0.1)
    as_tensor = decay(keras.ops.convert_to_tensor(25))
    assert float(keras.ops.convert_to_numpy(as_tensor)) == pytest.approx(0.4)
    assert LinearDecay(0.0, 0.4, 10)(5) == pytest.approx(0.2)  # increasing works too
    noise = LossNoise(lambda step: 0.2 * 0.5 ** (step / 1000))  # any callable step -> value
    assert noise.stddev(1000) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "make, error, text",
    [
        (lambda: GradientDropout(1.0), ValueError, "argument `rate` must be in [0, 1); received"),
        (lambda: GradientDropout(-0.01), ValueError, "[0, 1)"),
        (lambda: GradientDropout(LinearDecay(0.1, 1.0, 5)), ValueError, "rate"),
        (lambda: GradientDropout(lambda step: 1.5), ValueError, "at step 0"),
        (lambda: GradientDropout("0.1"), TypeError, "rate"),
        (lambda: GradientDropout(0.1, rescale=1), TypeError, "rescale"),
        (lambda: LossNoise(-1.0), ValueError, "argument `stddev` must be in [0, inf)"),
        (lambda: LossNoise(float("nan")), ValueError, "stddev"),
        (lambda: LossNoise([0.1]), TypeError, "stddev"),
        (lambda: LossNoise(0.1, kind="additive"), ValueError, "leaves every gradient unchanged"),
        (lambda: LinearDecay(0.5, 0.0, decay_steps=0), ValueError, "decay_steps"),
        (lambda: LinearDecay("a"), TypeError, "initial"),
        (lambda: Constant(float("inf")), ValueError, "finite"),
    ],
)
def test_bad_input_errors(make, error, text):
    with pytest.raises(error) as info:
        make()
    assert text in str(info.value)


@pytest.mark.parametrize(
    "obj",
    [LossNoise(), LossNoise(LinearDecay(0.4, 0.0, 200)), GradientDropout(0.2, rescale=True), LinearDecay(0.3, 0.1, 7)],
)
def test_serialization_round_trip(obj):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj) and restored.get_config() == obj.get_config()


def test_loss_noise_factors_statistics():
    sigma, n = 0.3, 20_000
    xi = np.array(loss_noise_factors(n, sigma, seed=keras.random.SeedGenerator(0)))
    assert xi.shape == (n,)
    assert abs(xi.mean() - 1.0) < 4 * sigma / np.sqrt(n)
    assert abs(xi.std() - sigma) < 4 * sigma / np.sqrt(2 * n)
    np.testing.assert_array_equal(np.array(loss_noise_factors(8, 0.0, seed=keras.random.SeedGenerator(1))), 1.0)


def test_gradient_keep_mask_is_u_greater_than_p():
    rate = 0.3
    gen = keras.random.SeedGenerator(5)
    state = np.array(gen.state)
    mask = np.array(gradient_keep_mask((200, 100), rate, seed=gen))
    if keras.backend.backend() == "tensorflow":  # the library draws with Philox on TensorFlow (fast under XLA)
        import tensorflow as tf

        seed = tf.cast(tf.math.floormod(tf.constant(state, tf.int64), tf.int32.max - 1), tf.int32)
        u = tf.random.stateless_uniform((200, 100), seed=seed, alg="philox").numpy()
    else:
        reference = keras.random.SeedGenerator(0)
        reference.state.assign(state)
        u = np.array(keras.random.uniform((200, 100), seed=reference))
    np.testing.assert_array_equal(mask, (u > rate).astype("float32"))
    se = np.sqrt(rate * (1 - rate) / mask.size)
    assert abs((1 - mask.mean()) - rate) < 3 * se


def test_drop_gradients_rescale_none_and_non_finite():
    g = np.full((50, 40), 2.0, "float32")
    g[0, :] = np.inf
    plain, none = drop_gradients([g, None], 0.5, seed=keras.random.SeedGenerator(0))
    rescaled = drop_gradients([g], 0.5, seed=keras.random.SeedGenerator(0), rescale=True)[0]
    plain, rescaled = np.array(plain), np.array(rescaled)
    assert none is None
    body, body_rescaled = plain[1:], rescaled[1:]
    assert set(np.unique(body)) <= {0.0, 2.0} and set(np.unique(body_rescaled)) <= {0.0, 4.0}
    np.testing.assert_array_equal(body == 0, body_rescaled == 0)  # same seed, same mask
    assert not np.any(np.isfinite(plain[0]))  # inf * 0 = nan: overflow stays visible to loss scaling


def test_noisy_sample_weight_structures():
    f = np.array([0.5, 2.0], "float32")
    np.testing.assert_allclose(np.array(noisy_sample_weight(None, f)), f)
    np.testing.assert_allclose(np.array(noisy_sample_weight(np.array([1.0, 3.0], "float32"), f)), [0.5, 6.0])
    per_step = np.ones((2, 3), "float32")
    np.testing.assert_allclose(np.array(noisy_sample_weight(per_step, f)), [[0.5] * 3, [2.0] * 3])
    nested = noisy_sample_weight({"a": None, "b": np.array([2.0, 2.0], "float32")}, f)
    np.testing.assert_allclose(np.array(nested["a"]), f)
    np.testing.assert_allclose(np.array(nested["b"]), [1.0, 4.0])
