"""ShadowWeights (WAS): PW/SW numerics vs numpy, AOM/DOM, saving, jit, precision, distribution, MNIST."""

import os

import keras
import numpy as np
import pytest

from keras_wtrain.layers import transforms as T
from keras_wtrain.layers.shadow_weights import ShadowWeights
from keras_wtrain.layers.shadow_weights import authors_wrap
from keras_wtrain.layers.shadow_weights import desire_sparsity
from keras_wtrain.layers.shadow_weights import set_weight_mode
from keras_wtrain.layers.weight_normalization import WeightNormalization

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tensorflow_only

# (factory, input shape, transform)
LAYER_CASES = {
    "dense": (lambda: keras.layers.Dense(5), (4, 3), T.MultiplicativeNoise(0.3)),
    "conv1d": (lambda: keras.layers.Conv1D(4, 3), (2, 7, 3), T.RandomTranslate(0.3)),
    "conv2d": (lambda: keras.layers.Conv2D(4, 3), (2, 6, 6, 3), T.RandomTranslate(0.3)),
    "conv3d": (lambda: keras.layers.Conv3D(2, 3), (1, 5, 5, 5, 2), T.RandomTranslate(0.3)),
    "depthwise_conv2d": (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (2, 6, 6, 3), T.RandomFlip()),
}


def np_shift(kernel, shifts, axes):
    out = kernel
    for s, axis in zip(shifts, axes):
        out = np.roll(out, s, axis=axis)
        index = [slice(None)] * out.ndim
        index[axis] = slice(0, s) if s > 0 else slice(out.shape[axis] + s, None)
        if s != 0:
            out[tuple(index)] = 0
    return out


def _copy_generator(layer):
    generator = keras.random.SeedGenerator(0)
    generator.state.assign(layer.seed_generator.state.value)
    return generator


def _plain_copy(factory, layer, shape, kernel=None):
    plain = factory()
    plain.build(shape)
    values = [w.numpy() for w in layer.layer.weights]
    if kernel is not None:
        values[0] = kernel.astype("float32")
    plain.set_weights(values)
    return plain


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_training_varies_and_aom_equals_plain_bit_for_bit(case, rng):
    factory, shape, transform = LAYER_CASES[case]
    layer = ShadowWeights(factory(), transform=transform, seed=3)
    x = rng.normal(size=shape).astype("float32")
    layer.build(shape)
    layer.layer.bias.assign(rng.normal(size=layer.layer.bias.shape).astype("float32"))
    plain = _plain_copy(factory, layer, shape)
    outputs = [layer(x, training=True).numpy() for _ in range(6)]
    reference = plain(x).numpy()
    assert any(not np.allclose(outputs[0], o) for o in outputs[1:]), "training outputs do not vary"
    assert any(not np.allclose(reference, o) for o in outputs), "training outputs equal the plain layer's"
    np.testing.assert_array_equal(layer(x, training=False).numpy(), reference)
    np.testing.assert_array_equal(layer(x).numpy(), reference)


def test_same_seed_reproduces_training_draws(rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    a = ShadowWeights(keras.layers.Conv2D(4, 3), seed=11)
    b = ShadowWeights(keras.layers.Conv2D(4, 3), seed=11)
    a.build(x.shape)
    b.build(x.shape)
    b.set_weights(a.get_weights())
    for _ in range(4):
        np.testing.assert_array_equal(a(x, training=True).numpy(), b(x, training=True).numpy())


@pytest.mark.parametrize("transform_name", ["translate", "crop", "dropconnect", "multiplicative"])
def test_forward_and_gradient_match_numpy_chain_rule_for_fixed_draw(transform_name, rng):
    transform = {
        "translate": T.RandomTranslate(0.45),
        "crop": T.RandomResizedCrop(scale=(0.3, 0.8)),
        "dropconnect": T.DropConnect(0.4),
        "multiplicative": T.MultiplicativeNoise(0.5),
    }[transform_name]
    shape = (2, 7, 7, 3)
    layer = ShadowWeights(keras.layers.Conv2D(4, 5, activation="relu"), transform=transform, seed=5)
    x = rng.normal(size=shape).astype("float32")
    layer.build(shape)
    pw = layer.layer.kernel.numpy().astype(np.float64)
    params = transform.sample(pw.shape, _copy_generator(layer), (0, 1))
    p = {k: np.asarray(v) for k, v in params.items()}
    # The shadow kernel and d(SW)/d(PW)^T applied to an upstream gradient, by hand in numpy.
    if transform_name == "translate":
        sw = np_shift(pw, p["shifts"], (0, 1))

        def backward(g):
            return np_shift(g, -p["shifts"], (0, 1))
    elif transform_name == "crop":
        mats = []
        for n in range(2):
            start, length, k = int(p["starts"][n]), int(p["lengths"][n]), pw.shape[n]
            m = np.zeros((k, k))
            for i in range(k):
                src = max((i + 0.5) * length / k - 0.5, 0.0)
                i0 = int(np.floor(src))
                i1 = min(i0 + 1, length - 1)
                m[i, start + i0] += 1 - (src - i0)
                m[i, start + i1] += src - i0
            mats.append(m)
        sw = np.einsum("ai,bj,ijcd->abcd", mats[0], mats[1], pw)

        def backward(g):
            return np.einsum("ai,bj,abcd->ijcd", mats[0], mats[1], g)
    elif transform_name == "dropconnect":
        sw = np.where(p["keep"], pw / 0.6, 0.0)

        def backward(g):
            return np.where(p["keep"], g / 0.6, 0.0)
    else:
        factor = 1 + 0.5 * p["noise"]
        sw = pw * factor

        def backward(g):
            return g * factor

    assert not np.allclose(sw, pw)
    reference = _plain_copy(lambda: keras.layers.Conv2D(4, 5, activation="relu"), layer, shape, kernel=sw)
    probe = rng.normal(size=reference.compute_output_shape(shape)).astype("float32")
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * probe)
    grad_pw = tape.gradient(loss, layer.layer.kernel).numpy()
    with tf.GradientTape() as tape:
        y_ref = reference(x)
        loss_ref = tf.reduce_sum(y_ref * probe)
    grad_sw = tape.gradient(loss_ref, reference.kernel).numpy().astype(np.float64)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-5)
    expected = backward(grad_sw)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(grad_pw, expected, atol=1e-5 * scale, rtol=1e-4)


def test_learnable_scale_gradient(rng):
    shape = (3, 4)
    layer = ShadowWeights(
        keras.layers.Dense(2, use_bias=False), transform=T.GaussianNoise(0.5), learnable_scale=True, seed=1
    )
    layer.build(shape)
    x = rng.normal(size=shape).astype("float32")
    pw = layer.layer.kernel.numpy().astype(np.float64)
    alpha = float(layer.alpha.numpy())
    assert 0.0 <= alpha < 1.0
    noise = np.asarray(T.GaussianNoise(0.5).sample(pw.shape, _copy_generator(layer))["noise"])
    sw = alpha * (pw + 0.5 * np.std(pw) * noise)
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y)
    g_pw, g_alpha = tape.gradient(loss, [layer.layer.kernel, layer.alpha])
    np.testing.assert_allclose(y.numpy(), x @ sw, rtol=1e-5, atol=1e-5)
    upstream = x.sum(axis=0)[:, None] * np.ones((1, 2))  # dL/dSW
    np.testing.assert_allclose(g_pw.numpy(), alpha * upstream, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(g_alpha), np.sum(upstream * sw / alpha), rtol=1e-4)
    # AOM computes with PW only (no alpha), as the authors' mode "2".
    np.testing.assert_allclose(layer(x).numpy(), x @ pw, rtol=1e-5, atol=1e-5)


def test_desire_mode_dropconnect_kernel_is_truly_sparse_and_fixed(rng):
    shape = (2, 10, 10, 8)
    layer = ShadowWeights(keras.layers.Conv2D(16, 3), transform=T.DropConnect(0.5), mode="desire", seed=0)
    x = rng.normal(size=shape).astype("float32")
    layer.build(shape)
    first, second = layer(x).numpy(), layer(x).numpy()
    np.testing.assert_array_equal(first, second)  # one fixed DOM kernel
    dom = layer.desire_kernel.numpy()
    reference = _plain_copy(lambda: keras.layers.Conv2D(16, 3), layer, shape, kernel=dom)
    np.testing.assert_allclose(first, reference(x).numpy(), rtol=1e-5, atol=1e-5)
    zeros = np.mean(dom == 0)
    assert 0.45 < zeros < 0.55
    row = desire_sparsity(layer)[0]
    assert row["entries"] == 3 * 3 * 8 * 16 and row["nonzero_desire"] == np.count_nonzero(dom)
    assert row["macs_plain"] == 3 * 3 * 8 * 16 * 8 * 8 and row["macs_desire"] == np.count_nonzero(dom) * 64
    layer.mode = "accuracy"
    assert not np.allclose(layer(x).numpy(), first)


def _cnn(wrap, classes=3):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            wrap(keras.layers.Conv2D(4, 3, padding="same", activation="relu")),
            keras.layers.Flatten(),
            wrap(keras.layers.Dense(classes)),
        ]
    )


def _shadow(layer):
    transform = "random_translate" if isinstance(layer, keras.layers.Conv2D) else "dropconnect"
    return ShadowWeights(layer, transform=transform, seed=0)


def test_keras_round_trip_keeps_mode_transform_and_predictions(tmp_path, rng):
    model = _cnn(_shadow)
    x = rng.normal(size=(5, 8, 8, 1)).astype("float32")
    model(x)
    set_weight_mode(model, "desire")
    expected = model.predict(x, verbose=0)
    path = os.path.join(tmp_path, "shadow.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert [layer.mode for layer in restored.layers if isinstance(layer, ShadowWeights)] == ["desire", "desire"]
    assert isinstance(restored.layers[2].transform, T.DropConnect)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    set_weight_mode(restored, "accuracy")
    set_weight_mode(model, "accuracy")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    config = ShadowWeights(
        keras.layers.Conv2D(2, 3), transform=T.RandomResizedCrop(), mode="desire", seed=4
    ).get_config()
    clone = ShadowWeights.from_config(config)
    assert clone.mode == "desire" and clone.seed == 4 and isinstance(clone.transform, T.RandomResizedCrop)


def test_jit_fit_and_mode_switch_after_compiled_predict(digits):
    keras.utils.set_random_seed(0)
    model = _cnn(_shadow, classes=10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    before = [w.numpy() for w in model.trainable_weights]
    history = model.fit(digits.x_train[:512], digits.y_train[:512], epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert all(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    x = digits.x_test[:64]
    aom = model.predict(x, verbose=0)
    np.testing.assert_allclose(aom, model(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
    assert set_weight_mode(model, "desire") == 2
    dom = model.predict(x, verbose=0)  # retraced: the compiled AOM function was dropped
    assert not np.allclose(aom, dom)
    np.testing.assert_allclose(dom, model(x, training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_mixed_float16(digits):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _cnn(_shadow, classes=10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    history = model.fit(digits.x_train[:256], digits.y_train[:256], epochs=2, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    shadow = model.layers[0]
    assert shadow.layer.kernel.dtype == "float32"
    x = digits.x_test[:8]
    assert shadow(x, training=True).dtype == "float16"
    plain = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    plain.build(x.shape)
    plain.set_weights(shadow.layer.get_weights())
    np.testing.assert_array_equal(shadow(x).numpy(), plain(x).numpy())


def test_mirrored_strategy(two_cpu_strategy, digits):
    with two_cpu_strategy.scope():
        keras.utils.set_random_seed(0)
        model = _cnn(_shadow, classes=10)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    state = model.layers[0].seed_generator.state.numpy().copy()
    history = model.fit(digits.x_train[:512], digits.y_train[:512], epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.array_equal(state, model.layers[0].seed_generator.state.numpy())  # fresh draws every step
    set_weight_mode(model, "desire")
    assert np.isfinite(model.predict(digits.x_test[:32], verbose=0)).all()


def test_composes_with_weight_normalization(rng):
    shape = (2, 6, 6, 3)
    wn = WeightNormalization(keras.layers.Conv2D(4, 3), data_init=False)
    layer = ShadowWeights(wn, transform=T.RandomTranslate(0.45), seed=2)
    layer.build(shape)
    wn.g_weights[0].assign(rng.uniform(0.5, 2.0, size=(4,)).astype("float32"))
    x = rng.normal(size=shape).astype("float32")
    v = wn.layer.kernel.numpy().astype(np.float64)
    w = wn.g_weights[0].numpy() * v / np.sqrt(np.sum(v**2, axis=(0, 1, 2), keepdims=True))
    shifts = np.asarray(T.RandomTranslate(0.45).sample(v.shape, _copy_generator(layer), (0, 1))["shifts"])
    reference = keras.layers.Conv2D(4, 3)
    reference.build(shape)
    reference.set_weights([np_shift(w, shifts, (0, 1)).astype("float32"), wn.layer.bias.numpy()])
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y**2)
    grads = tape.gradient(loss, [wn.layer.kernel, wn.g_weights[0]])
    np.testing.assert_allclose(y.numpy(), reference(x).numpy(), rtol=1e-5, atol=1e-5)
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)
    np.testing.assert_array_equal(layer(x).numpy(), wn(x).numpy())  # AOM is the WeightNormalization layer itself
    with pytest.raises(ValueError, match="WeightNormalization cannot wrap"):
        WeightNormalization(ShadowWeights(keras.layers.Conv2D(4, 3)))


def test_set_weight_mode_nested_and_authors_wrap():
    from keras_wtrain.models import build_model

    model = build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap)
    wrapped = [layer for layer in model.layers if isinstance(layer, ShadowWeights)]
    assert len(wrapped) == 2 and all(isinstance(layer.transform, T.RandomChoice) for layer in wrapped)
    members = wrapped[0].transform.transforms
    assert isinstance(members[0], T.RandomTranslate) and members[0].max_shift == 0.3
    assert isinstance(members[1], T.RandomResizedCrop) and members[1].scale == (0.8, 1.0)
    assert wrapped[0].transform.probabilities == [0.5, 0.5]
    assert not any(isinstance(layer, ShadowWeights) for layer in model.layers if "dense" in layer.name)
    assert authors_wrap(keras.layers.Conv2D(4, 1)).__class__ is keras.layers.Conv2D  # 1x1: unchanged
    assert isinstance(authors_wrap(keras.layers.DepthwiseConv2D(3)), ShadowWeights)
    outer = keras.Sequential([keras.Input((28, 28, 1)), model])
    assert set_weight_mode(outer, "desire") == 2
    assert all(layer.mode == "desire" for layer in wrapped)


def test_bad_input_errors():
    with pytest.raises(
        ValueError, match=r"ShadowWeights: argument `mode` must be one of .accuracy., .desire.; received"
    ):
        ShadowWeights(keras.layers.Dense(2), transform="gaussian_noise", mode="fast")
    layer = ShadowWeights(keras.layers.Dense(2), transform="gaussian_noise")
    with pytest.raises(ValueError, match="`mode`"):
        layer.mode = "inference"
    with pytest.raises(ValueError, match="unknown transform name 'warp'"):
        ShadowWeights(keras.layers.Conv2D(2, 3), transform="warp")
    with pytest.raises(ValueError, match="cannot wrap layer"):
        ShadowWeights(keras.layers.BatchNormalization())
    with pytest.raises(TypeError, match="must be a Keras layer"):
        ShadowWeights("dense")
    with pytest.raises(TypeError, match="`seed`"):
        ShadowWeights(keras.layers.Dense(2), seed=1.5)
    with pytest.raises(ValueError, match=r"`max_shift` must be in \[0, 1\)"):
        ShadowWeights(keras.layers.Conv2D(2, 3), transform=T.RandomTranslate(1.2))
    with pytest.raises(ValueError, match="argument `transform`.*no spatial axes"):
        ShadowWeights(keras.layers.Dense(2), transform="random_translate").build((None, 4))
    with pytest.raises(ValueError, match="`mode`"):
        set_weight_mode(keras.Sequential([keras.Input((3,))]), "dom")


def test_shadow_cnn_reaches_95_percent_on_mnist5k(mnist5k):
    # The authors leave a network's stem plain: only the second 3x3 conv is augmented here (default shift 0.3).
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            ShadowWeights(keras.layers.Conv2D(64, 3, padding="same", activation="relu"), seed=0),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        keras.optimizers.Adam(2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.fit(mnist5k.x_train, mnist5k.y_train, epochs=4, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(mnist5k.x_test, mnist5k.y_test, verbose=0)
    assert accuracy >= 0.95, accuracy
