"""keras_wtrain.randomness.Model / wrap on the TensorFlow backend: exactness, statistics, fit features."""

import keras
import numpy as np
import pytest

from keras_wtrain.randomness.gradient_dropout import GradientDropoutOptimizer
from keras_wtrain.randomness.model import FunctionalModel
from keras_wtrain.randomness.model import Model
from keras_wtrain.randomness.settings import GradientDropout
from keras_wtrain.randomness.settings import LinearDecay
from keras_wtrain.randomness.settings import LossNoise
from keras_wtrain.randomness.wrapping import WrappedModel
from keras_wtrain.randomness.wrapping import wrap

pytestmark = pytest.mark.tensorflow_only

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    return inputs, keras.layers.Dense(3)(h)


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12)).astype("float32"), rng.integers(0, 3, n)


def _weights(model):
    return [np.array(w) for w in model.trainable_weights]


def _one_hot_problem(n):
    """Linear model w (n,) on one-hot inputs: example i only touches w_i, so its update reveals its loss weight."""
    x = np.eye(n, dtype="float32")
    y = np.linspace(-1.0, 1.0, n).astype("float32")[:, None]
    w0 = np.linspace(0.5, 2.0, n).astype("float32")[:, None]
    return x, y, w0


def _linear(n, **kwargs):
    inputs = keras.Input((n,))
    layer = keras.layers.Dense(1, use_bias=False)
    return Model(inputs, layer(inputs), **kwargs), layer


# ---------------------------------------------------------------------- exactness


@pytest.mark.parametrize("config", [{}, {"loss_noise": 0.0, "gradient_dropout": 0.0}, {"loss_noise": LossNoise(0)}])
def test_off_is_identical_to_keras_model(config):
    x, y = _data()
    inputs, outputs = _mlp()
    plain = keras.Model(inputs, outputs)
    start = _weights(plain)
    plain.compile(keras.optimizers.Adam(1e-2), SCCE, jit_compile=True)
    plain.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    inputs, outputs = _mlp()
    ours = Model(inputs, outputs, **config)
    ours.set_weights(start)
    ours.compile(keras.optimizers.Adam(1e-2), SCCE, jit_compile=True)
    ours.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert len(ours.weights) == len(plain.weights)  # no extra variables when off
    for a, b in zip(_weights(plain), _weights(ours)):
        np.testing.assert_array_equal(a, b)


def _unchanged_fraction(model, x, y, lr=0.1):
    before = _weights(model)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    after = _weights(model)
    unchanged = sum(int(np.sum(a == b)) for a, b in zip(before, after))
    total = sum(a.size for a in before)
    return unchanged / total, total


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_gradient_dropout_fraction_unchanged_is_rate(rate):
    x, y = _data(64)
    inputs = keras.Input((12,))
    outputs = keras.layers.Dense(3)(keras.layers.Dense(256)(inputs))  # linear: every gradient entry is nonzero
    model = Model(inputs, outputs, gradient_dropout=rate, seed=3)
    model.compile(keras.optimizers.SGD(0.1), SCCE, jit_compile=True)
    fraction, total = _unchanged_fraction(model, x, y)
    se = np.sqrt(rate * (1 - rate) / total)
    assert abs(fraction - rate) < 3 * se, (fraction, rate, se)


def test_gradient_dropout_rescale_and_no_rescale_match_hand_computation():
    n = 64
    x, y, w0 = _one_hot_problem(n)
    for rescale in (False, True):
        model, layer = _linear(n, gradient_dropout=GradientDropout(0.25, rescale=rescale), seed=5)
        layer.kernel.assign(w0)
        model.compile(keras.optimizers.SGD(0.5), "mse")
        model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
        plain_step = -0.5 * 2.0 * (w0 - y) / n
        step = np.array(layer.kernel) - w0
        kept = step != 0
        scale = 1 / 0.75 if rescale else 1.0
        np.testing.assert_allclose(step[kept], scale * plain_step[kept], rtol=1e-5)


def _reference_factors(seed_state, size, stddev):
    """xi drawn outside the library: TF's stateless Philox normal at the model's seed state (int32-folded)."""
    import tensorflow as tf

    seed = tf.cast(tf.math.floormod(tf.constant(seed_state, tf.int64), tf.int32.max - 1), tf.int32)
    return 1.0 + stddev * tf.random.stateless_normal((size,), seed=seed, alg="philox").numpy()


@pytest.mark.parametrize("with_sample_weight", [False, True])
def test_loss_noise_update_matches_hand_computation(with_sample_weight):
    n, sigma, lr = 200, 0.5, 0.5
    x, y, w0 = _one_hot_problem(n)
    sw = np.linspace(0.5, 1.5, n).astype("float32") if with_sample_weight else np.ones(n, "float32")
    model, layer = _linear(n, loss_noise=sigma, seed=11)
    layer.kernel.assign(w0)
    model.compile(keras.optimizers.SGD(lr), "mse")
    state = np.array(model._wt_noise_seed.state)
    model.fit(x, y, sample_weight=sw if with_sample_weight else None, batch_size=n, epochs=1, shuffle=False, verbose=0)
    xi = _reference_factors(state, n, sigma)
    # L = (1/n) sum_i sw_i xi_i (w_i - y_i)^2  =>  dL/dw_i = (2/n) sw_i xi_i (w_i - y_i)
    expected = w0[:, 0] - lr * (2.0 / n) * sw * xi * (w0[:, 0] - y[:, 0])
    np.testing.assert_allclose(np.array(layer.kernel)[:, 0], expected, rtol=1e-5, atol=1e-6)
    assert abs(xi.mean() - 1) < 4 * sigma / np.sqrt(n) and abs(xi.std() - sigma) < 0.1


def test_schedule_is_evaluated_at_the_model_step():
    n = 64
    x, y, w0 = _one_hot_problem(n)
    # rate 0 at step 0, 0.5 from step 1: first update is plain SGD, second drops about half the entries.
    model, layer = _linear(n, gradient_dropout=LinearDecay(0.0, 0.5, decay_steps=1), seed=2)
    layer.kernel.assign(w0)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    first = np.array(layer.kernel)
    assert np.all(first != w0)
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    unchanged = np.mean(np.array(layer.kernel) == first)
    assert 0.25 < unchanged < 0.75
    assert model.randomness_step == 2


# ---------------------------------------------------------------------- multi-device


@pytest.fixture
def strategy(two_cpu_strategy):
    """The fixture's two devices, reducing with ReductionToOneDevice instead of collective ops.

    Two MirroredStrategy objects with CPU collective all-reduce in one process can reuse collective
    instance keys ("Shape mismatch in the collective instance 100"), which breaks whichever test runs
    second; the reduction method does not change what is tested here.
    """
    import tensorflow as tf

    devices = two_cpu_strategy.extended.worker_devices
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def test_mirrored_strategy_shares_gradient_masks(strategy):
    # Shared masks: fraction unchanged = p. Independent masks per replica would leave only entries
    # dropped on both replicas unchanged: p^2 = 0.25.
    rate = 0.5
    x, y = _data(64)
    with strategy.scope():
        inputs = keras.Input((12,))
        outputs = keras.layers.Dense(3)(keras.layers.Dense(128)(inputs))
        model = Model(inputs, outputs, gradient_dropout=rate, seed=4)
        model.compile(keras.optimizers.SGD(0.1), SCCE)
    fraction, total = _unchanged_fraction(model, x, y)
    assert abs(fraction - rate) < 3 * np.sqrt(rate * (1 - rate) / total), fraction


def test_mirrored_strategy_loss_noise_each_example_own_factor(strategy):
    n, sigma, lr = 64, 0.5, 0.5
    x, y, w0 = _one_hot_problem(n)
    with strategy.scope():
        model, layer = _linear(n, loss_noise=sigma, seed=7)
        layer.kernel.assign(w0)
        model.compile(keras.optimizers.SGD(lr), "mse")
    state = np.array(model._wt_noise_seed.state)
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    xi = _reference_factors(state, n, sigma)  # one draw for the global batch, replica r takes slice r
    expected = w0[:, 0] - lr * (2.0 / n) * xi * (w0[:, 0] - y[:, 0])
    np.testing.assert_allclose(np.array(layer.kernel)[:, 0], expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- fit features kept intact


def test_mixed_precision_accumulation_clipnorm_steps_per_execution():
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = _data(128)
    inputs, outputs = _mlp()
    outputs = keras.layers.Activation("linear", dtype="float32")(outputs)
    model = Model(inputs, outputs, loss_noise=0.3, gradient_dropout=0.2, seed=0)
    optimizer = keras.optimizers.SGD(0.05, clipnorm=1.0, gradient_accumulation_steps=2)
    model.compile(optimizer, SCCE, metrics=["accuracy"], jit_compile=True, steps_per_execution=2)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert int(model.optimizer.iterations) == 3 * 8 // 2  # accumulation counted by the optimizer as usual


def test_multiple_outputs_sample_and_class_weight_metrics_and_regularisation():
    x, y = _data(96)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3))(inputs)
    model = Model(
        inputs,
        {"a": keras.layers.Dense(3, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)},
        loss_noise=0.3,
        gradient_dropout=0.1,
        seed=0,
    )
    model.compile(
        "adam", {"a": SCCE, "b": "mse"}, loss_weights={"a": 1.0, "b": 0.5}, metrics={"a": ["accuracy"], "b": ["mae"]}
    )
    target = {"a": y, "b": x[:, :1]}
    history = model.fit(x, target, sample_weight=np.linspace(0.5, 1.5, 96), batch_size=32, epochs=2, verbose=0)
    assert {"loss", "a_accuracy", "b_mae", "a_loss", "b_loss"} <= set(history.history)
    single = Model(*_mlp(), loss_noise=0.3, gradient_dropout=0.1)
    single.compile("adam", SCCE, metrics=["accuracy"])
    history = single.fit(x, y, class_weight={0: 1.0, 1: 2.0, 2: 0.5}, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # Evaluation is noise-free: same result twice.
    first = single.evaluate(x, y, verbose=0)
    assert single.evaluate(x, y, verbose=0) == pytest.approx(first)


def test_metrics_see_clean_weights_loss_is_noisy():
    # Huge sigma changes the loss but not the accuracy computed on the same predictions.
    x, y = _data(64)
    inputs, outputs = _mlp()
    model = Model(inputs, outputs, loss_noise=5.0, seed=1)
    model.compile(keras.optimizers.SGD(0.0), SCCE, metrics=["accuracy"])
    logs = model.train_on_batch(x, y, return_dict=True)
    clean = model.evaluate(x, y, return_dict=True, verbose=0)
    assert logs["accuracy"] == pytest.approx(clean["accuracy"])
    assert logs["loss"] != pytest.approx(clean["loss"], rel=1e-4)


# ---------------------------------------------------------------------- wrap, subclassing, saving


def test_wrap_sequential_shares_layers_and_keeps_compile():
    x, y = _data(64)
    base = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    base.compile(keras.optimizers.Adam(1e-2), SCCE, metrics=["accuracy"])
    model = wrap(base, loss_noise=LossNoise(), gradient_dropout=GradientDropout())
    assert isinstance(model, FunctionalModel) and isinstance(model, Model)
    # Gradient dropout wraps the very optimizer object of `base` (its state is shared).
    assert isinstance(model.optimizer, GradientDropoutOptimizer) and model.compiled
    assert model.optimizer.inner_optimizer is base.optimizer
    before = _weights(base)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert all(not np.array_equal(a, b) for a, b in zip(before, _weights(base)))  # base trained through the wrap
    np.testing.assert_allclose(base.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_subclassed_use_and_wrap_of_unbuilt_model(tmp_path):
    x, y = _data(64)

    class Net(Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(8, activation="relu")
            self.out = keras.layers.Dense(3)

        def call(self, inputs):
            return self.out(self.hidden(inputs))

    net = Net(gradient_dropout=0.2, seed=0)
    net.compile("adam", SCCE)
    assert np.isfinite(net.fit(x, y, epochs=1, verbose=0).history["loss"][0])
    assert not isinstance(net, FunctionalModel)  # functional use elsewhere does not change the class
    wrapped = wrap(keras.Sequential([keras.layers.Dense(3)]), loss_noise=0.2, seed=0)
    assert isinstance(wrapped, WrappedModel)
    wrapped.compile("adam", SCCE)
    wrapped.fit(x, y, epochs=1, verbose=0)
    wrapped.save(tmp_path / "w.keras")
    loaded = keras.saving.load_model(tmp_path / "w.keras")
    assert isinstance(loaded, WrappedModel) and loaded.loss_noise.stddev.value == 0.2
    np.testing.assert_allclose(loaded.predict(x, verbose=0), wrapped.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_keras_format_round_trip(tmp_path):
    x, y = _data(64)
    inputs, outputs = _mlp()
    model = Model(inputs, outputs, loss_noise=LinearDecay(0.5, 0.1, 100), gradient_dropout=GradientDropout(0.2, True))
    model.compile("adam", SCCE)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, Model)
    assert loaded.get_config()["loss_noise"] == model.get_config()["loss_noise"]
    assert loaded.gradient_dropout.rescale and loaded.gradient_dropout.rate.value == 0.2
    assert loaded.randomness_step == model.randomness_step == 4
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)


def test_fit_runs_weight_normalization_data_init():
    from keras_wtrain.weight_normalization.data_init import needs_data_init
    from keras_wtrain.weight_normalization.wrapper import WeightNormalization

    x, y = _data(64)
    inputs = keras.Input((12,))
    model = Model(inputs, WeightNormalization(keras.layers.Dense(3))(inputs), gradient_dropout=0.1)
    assert needs_data_init(model)
    model.compile("adam", SCCE)
    model.fit(x, y, epochs=1, verbose=0)
    assert not needs_data_init(model)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"gradient_dropout": 1.0}, ValueError, "rate"),
        ({"gradient_dropout": -0.1}, ValueError, "[0, 1)"),
        ({"loss_noise": -0.5}, ValueError, "stddev"),
        ({"loss_noise": "big"}, TypeError, "stddev"),
        ({"gradient_dropout": True}, TypeError, "gradient_dropout"),
        ({"gradient_dropout": LinearDecay(0.5, 1.2, 10)}, ValueError, "max 1.2"),
        ({"seed": "x"}, TypeError, "seed"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, text):
    inputs, outputs = _mlp()
    with pytest.raises(error, match=None) as info:
        Model(inputs, outputs, **kwargs)
    assert text in str(info.value)


def test_wrap_rejects_non_models():
    with pytest.raises(TypeError, match="keras.Model"):
        wrap(keras.layers.Dense(2), gradient_dropout=0.1)
