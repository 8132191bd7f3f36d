"""A desire mode that serves: DOM-kernel training (`desire_probability`), batch-norm statistics re-estimated for
the chosen mode (`set_weight_mode(..., data=...)`), the comparison harness's DOM column, and `transform="auto"`."""

import keras
import numpy as np
import pytest

from keras_wtrain.comparison.mechanisms import shadow_mechanism
from keras_wtrain.comparison.models import build_model
from keras_wtrain.shadow_weights import transforms as T
from keras_wtrain.shadow_weights.modes import authors_wrap
from keras_wtrain.shadow_weights.modes import set_weight_mode
from keras_wtrain.shadow_weights.modes import shadow_weight_layers
from keras_wtrain.shadow_weights.wrapper import ShadowWeights

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tensorflow_only


def np_shift_down_right(kernel):
    """`FixedShift(1)` in numpy: `out[i, j] = kernel[i - 1, j - 1]`, zero fill."""
    out = np.zeros_like(kernel)
    out[1:, 1:] = kernel[:-1, :-1]
    return out


def np_conv2d_same(x, kernel, bias):
    """A stride-1 "same" 2D convolution (channels last) in numpy, odd kernel sizes."""
    k0, k1 = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (k0 // 2, k0 // 2), (k1 // 2, k1 // 2), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), dtype=np.float64)
    for a in range(k0):
        for b in range(k1):
            window = padded[:, a : a + x.shape[1], b : b + x.shape[2], :]
            out += np.einsum("nhwc,co->nhwo", window, kernel[a, b])
    return out + bias


def _conv_layer(**kwargs):
    layer = ShadowWeights(keras.layers.Conv2D(4, 3, padding="same"), seed=3, **kwargs)
    layer.build((None, 7, 7, 2))
    kernel, bias = layer.layer.get_weights()
    layer.layer.set_weights([kernel, np.random.default_rng(0).normal(size=bias.shape).astype("float32")])
    return layer


def test_training_call_with_desire_probability_one_computes_the_dom_kernel(rng):
    layer = _conv_layer(desire_probability=1.0)
    x = rng.normal(size=(2, 7, 7, 2)).astype("float32")
    kernel, bias = layer.layer.get_weights()
    expected = np_conv2d_same(x.astype(np.float64), np_shift_down_right(kernel), bias)
    for _ in range(3):  # every call, whatever the draws
        np.testing.assert_allclose(np.asarray(layer(x, training=True)), expected, atol=1e-5)
    layer.mode = "desire"  # and it is what DOM infers with (there run as a 2x2 convolution)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)


def test_gradient_reaches_the_plain_weights_through_the_dom_kernel(rng):
    layer = _conv_layer(desire_probability=1.0)
    x = tf.constant(rng.normal(size=(2, 7, 7, 2)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) ** 2)
    grad = tape.gradient(loss, layer.layer.kernel.value).numpy()
    # The DOM kernel reads PW[:2, :2] only; numpy: d/dPW of sum(conv(shift(PW))^2).
    kernel, bias = layer.layer.get_weights()
    out = np_conv2d_same(x.numpy().astype(np.float64), np_shift_down_right(kernel), bias)
    padded = np.pad(x.numpy(), ((0, 0), (1, 1), (1, 1), (0, 0)))
    grad_dom = np.zeros(kernel.shape)
    for a in range(3):
        for b in range(3):
            grad_dom[a, b] = np.einsum("nhwc,nhwo->co", padded[:, a : a + 7, b : b + 7, :], 2 * out)
    np.testing.assert_allclose(grad, _unshift(grad_dom), rtol=1e-4, atol=1e-3)
    assert np.all(grad[2] == 0) and np.all(grad[:, 2] == 0)


def _unshift(grad_dom):
    """The adjoint of `np_shift_down_right`: `out[i, j] = g[i + 1, j + 1]`, zero on the last row and column."""
    out = np.zeros_like(grad_dom)
    out[:-1, :-1] = grad_dom[1:, 1:]
    return out


@pytest.mark.parametrize("desire_probability", [0.3, 0.7])
def test_fraction_of_dom_calls_matches_the_probability(rng, desire_probability):
    layer = _conv_layer(probability=0.0, desire_probability=desire_probability)  # the other calls use PW
    x = rng.normal(size=(1, 7, 7, 2)).astype("float32")
    kernel, bias = layer.layer.get_weights()
    plain = np_conv2d_same(x.astype(np.float64), kernel, bias)
    dom = np_conv2d_same(x.astype(np.float64), np_shift_down_right(kernel), bias)
    n, hits = 600, 0
    for _ in range(n):
        out = np.asarray(layer(x, training=True))
        is_dom = np.allclose(out, dom, atol=1e-4)
        assert is_dom or np.allclose(out, plain, atol=1e-4)
        hits += is_dom
    sd = np.sqrt(n * desire_probability * (1 - desire_probability))
    assert abs(hits - n * desire_probability) < 4.5 * sd, (hits, n * desire_probability)


def test_desire_probability_zero_keeps_the_shadow_draws(rng):
    x = rng.normal(size=(2, 7, 7, 2)).astype("float32")
    a, b = _conv_layer(), _conv_layer(desire_probability=0.0)
    b.layer.set_weights(a.layer.get_weights())
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(a(x, training=True)), np.asarray(b(x, training=True)))


def test_jit_fit_with_desire_training_and_authors_wrap_crop(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            authors_wrap(keras.layers.Conv2D(8, 3, padding="same", activation="relu"), seed=0, desire_probability=0.5),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    layer = model.layers[0]
    assert isinstance(layer.transform, T.RandomResizedCrop)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    kernel = layer.layer.kernel.numpy().copy()
    history = model.fit(digits.x_train[:512], digits.y_train[:512], epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(kernel, layer.layer.kernel.numpy())
    set_weight_mode(model, "desire")
    x = digits.x_test[:16]
    np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(model(x)), atol=1e-5)


def _bn_model(**kwargs):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    conv = ShadowWeights(keras.layers.Conv2D(3, 3, padding="same", use_bias=False), seed=0, **kwargs)
    outputs = keras.layers.BatchNormalization()(conv(inputs))
    return keras.Model(inputs, outputs), conv


def _np_batch_statistics(x, kernel, batch_size):
    """Average over batches of each batch's mean and biased variance of the conv activations (per channel)."""
    means, variances = [], []
    for start in range(0, len(x), batch_size):
        a = np_conv2d_same(x[start : start + batch_size].astype(np.float64), kernel, 0.0)
        means.append(a.mean(axis=(0, 1, 2)))
        variances.append(a.var(axis=(0, 1, 2)))
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def test_batchnorm_statistics_re_estimated_with_the_chosen_modes_kernels(rng):
    model, conv = _bn_model()
    x = rng.normal(size=(24, 6, 6, 2)).astype("float32")
    model(x[:1])
    bn = model.layers[-1]
    kernel = conv.layer.kernel.numpy()
    assert set_weight_mode(model, "desire", data=x, batch_size=8) == 1
    mean, var = _np_batch_statistics(x, np_shift_down_right(kernel), 8)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.99  # restored
    # Without data the statistics stay those of the mode last re-estimated for.
    set_weight_mode(model, "accuracy")
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    set_weight_mode(model, "accuracy", data=x, batch_size=8)
    mean, var = _np_batch_statistics(x, kernel, 8)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)


def test_set_weight_mode_errors():
    model, _ = _bn_model()
    with pytest.raises(ValueError, match="argument `data`"):
        set_weight_mode(model, "desire", reestimate_batchnorm=True)
    with pytest.raises(ValueError, match="argument `data`"):
        set_weight_mode(model, "desire", data=np.zeros((2, 6, 6, 2), "float32"), reestimate_batchnorm=False)
    with pytest.raises(TypeError, match="argument `reestimate_batchnorm`"):
        set_weight_mode(model, "desire", reestimate_batchnorm="yes")
    with pytest.raises(ValueError, match="argument `batch_size`"):
        set_weight_mode(model, "desire", data=np.zeros((2, 6, 6, 2), "float32"), batch_size=0)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="argument `mode`='desire'.*no ShadowWeights layer"):
        set_weight_mode(plain, "desire")
    redraw = keras.Sequential(
        [
            keras.Input((4,)),
            ShadowWeights(keras.layers.Dense(2), "dropconnect", desire_transform="draw", desire_seed=None),
        ]
    )
    with pytest.raises(ValueError, match="argument `mode`='desire'.*none with a fixed DOM kernel"):
        set_weight_mode(redraw, "desire")
    assert set_weight_mode(plain, "accuracy") == 0  # AOM needs no ShadowWeights layer
    no_bn = keras.Sequential([keras.Input((6, 6, 2)), ShadowWeights(keras.layers.Conv2D(2, 3))])
    assert set_weight_mode(no_bn, "desire", reestimate_batchnorm=True) == 1  # nothing to re-estimate


def test_desire_probability_bad_input():
    with pytest.raises(ValueError, match="argument `desire_probability` must be in \\[0, 1\\]"):
        ShadowWeights(keras.layers.Conv2D(2, 3), desire_probability=1.5)
    with pytest.raises(TypeError, match="argument `desire_probability`"):
        ShadowWeights(keras.layers.Conv2D(2, 3), desire_probability="half")
    with pytest.raises(ValueError, match="argument `desire_probability` must be 0 when the DOM kernel is a random"):
        ShadowWeights(keras.layers.Dense(2), desire_probability=0.5).build((None, 4))
    with pytest.raises(ValueError, match="argument `desire_probability`"):
        ShadowWeights(keras.layers.Conv2D(2, 3), desire_transform="draw", desire_probability=0.5).build((None, 6, 6, 1))


def test_auto_transform_per_kernel_kind(digits):
    cases = {
        "dense": (keras.layers.Dense(4), (None, 5), T.GaussianNoise),
        "conv1x1": (keras.layers.Conv2D(4, 1), (None, 6, 6, 2), T.GaussianNoise),
        "conv3x3": (keras.layers.Conv2D(4, 3), (None, 6, 6, 2), T.RandomResizedCrop),
        "conv1d5": (keras.layers.Conv1D(4, 5), (None, 9, 2), T.RandomResizedCrop),
        "conv1x3": (keras.layers.Conv2D(4, (1, 3)), (None, 6, 6, 2), T.RandomResizedCrop),
        "conv2x2": (keras.layers.Conv2D(4, 2), (None, 6, 6, 2), T.GaussianNoise),
        "depthwise": (keras.layers.DepthwiseConv2D(3), (None, 6, 6, 2), T.RandomResizedCrop),
    }
    for name, (inner, shape, kind) in cases.items():
        layer = ShadowWeights(inner)
        assert layer.transform is None and layer.get_config()["transform"] == "auto"
        layer.build(shape)
        assert isinstance(layer.transform, kind), name
        assert layer.get_config()["transform"] == "auto"
        assert (layer.desire_fixed is not None) == (kind is T.RandomResizedCrop), name
    # The defaults train a Dense model (the former default, a spatial shift, failed at build).
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), ShadowWeights(keras.layers.Dense(10), seed=0)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    history = model.fit(digits.x_train[:256], digits.y_train[:256], epochs=2, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_keras_round_trip_of_desire_probability_and_auto_transform(tmp_path, rng):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            ShadowWeights(keras.layers.Conv2D(3, 3, padding="same"), seed=0, desire_probability=0.25),
            keras.layers.Flatten(),
            ShadowWeights(keras.layers.Dense(4), seed=1),
        ]
    )
    x = rng.normal(size=(3, 6, 6, 2)).astype("float32")
    config = model.layers[0].get_config()
    assert config["desire_probability"] == 0.25 and config["transform"] == "auto"
    clone = ShadowWeights.from_config(config)
    assert clone.desire_probability == 0.25 and clone.get_config()["transform"] == "auto"
    path = str(tmp_path / "m.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    conv, dense = restored.layers[0], restored.layers[-1]
    assert conv.desire_probability == 0.25 and isinstance(conv.transform, T.RandomResizedCrop)
    assert isinstance(dense.transform, T.GaussianNoise) and dense.desire_probability == 0.0
    np.testing.assert_array_equal(model.predict(x, verbose=0), restored.predict(x, verbose=0))
    set_weight_mode(model, "desire")
    set_weight_mode(restored, "desire")
    np.testing.assert_allclose(model.predict(x, verbose=0), restored.predict(x, verbose=0), atol=1e-6)


def test_config_without_new_keys_uses_the_defaults():
    config = ShadowWeights(keras.layers.Conv2D(2, 3), probability=0.5).get_config()
    for key in ("desire_transform", "desire_probability", "transform"):
        config.pop(key)
    layer = ShadowWeights.from_config(config)  # no compatibility shim: the constructor's defaults
    assert layer.desire_transform == "auto" and layer.desire_probability == 0.0 and layer.probability == 0.5
    assert layer.get_config()["transform"] == "auto"


@pytest.fixture(scope="module")
def trained_resnet():
    data_rng = np.random.default_rng(0)
    x = data_rng.random((96, 28, 28, 1)).astype("float32")
    y = np.arange(96) % 10
    keras.utils.set_random_seed(0)
    model = build_model("resnet-small", (28, 28, 1), 10, wrap=lambda layer: authors_wrap(layer, seed=0))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model, (x[:64], y[:64]), (x[64:], y[64:])


def test_shadow_mechanism_re_estimates_for_dom_and_leaves_aom_unchanged(trained_resnet):
    model, train, test = trained_resnet
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in bn]
    aom_before = model.evaluate(*test, verbose=0, return_dict=True)
    aom_logits = model.predict(test[0], verbose=0)
    result = shadow_mechanism(model, test, train=train, batch_size=32)
    assert set(result) == {"dom_accuracy"}
    assert all(layer.mode == "accuracy" for layer in shadow_weight_layers(model))
    for layer, (mean, var) in zip(bn, before):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
        np.testing.assert_array_equal(layer.moving_variance.numpy(), var)
    np.testing.assert_array_equal(model.predict(test[0], verbose=0), aom_logits)
    assert model.evaluate(*test, verbose=0, return_dict=True) == aom_before
    # The DOM number is the one of a DOM model with its statistics re-estimated for DOM on the training slice.
    set_weight_mode(model, "desire", data=train[0], batch_size=32)
    dom = model.evaluate(*test, batch_size=32, verbose=0, return_dict=True)["accuracy"]
    assert result["dom_accuracy"] == pytest.approx(dom, abs=1e-6)
    set_weight_mode(model, "accuracy")
    for layer, (mean, var) in zip(bn, before):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)


def test_shadow_mechanism_needs_training_data_with_batchnorm(trained_resnet):
    model, _, test = trained_resnet
    with pytest.raises(ValueError, match="argument `train`"):
        shadow_mechanism(model, test)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert shadow_mechanism(plain, (np.zeros((2, 4)), np.zeros(2))) == {}
