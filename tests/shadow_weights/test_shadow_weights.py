"""ShadowWeights (WAS): PW/SW numerics vs numpy, AOM/DOM, saving, jit, precision, distribution, MNIST."""

import os

import keras
import numpy as np
import pytest

from keras_wtrain.shadow_weights import transforms as T
from keras_wtrain.shadow_weights.modes import authors_wrap
from keras_wtrain.shadow_weights.modes import desire_sparsity
from keras_wtrain.shadow_weights.modes import set_weight_mode
from keras_wtrain.shadow_weights.wrapper import ShadowWeights
from keras_wtrain.weight_normalization.wrapper import WeightNormalization

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
    with pytest.raises(TypeError, match="WeightNormalization cannot wrap"):
        WeightNormalization(ShadowWeights(keras.layers.Conv2D(4, 3)))


def test_set_weight_mode_nested_and_authors_wrap():
    from keras_wtrain.comparison.models import build_model

    model = build_model("cnn", (28, 28, 1), 10, wrap=authors_wrap)
    wrapped = [layer for layer in model.layers if isinstance(layer, ShadowWeights)]
    # The default transform is the crop-and-stretch alone (chosen by benchmarks/shadow_ablation.py).
    assert len(wrapped) == 2 and all(isinstance(layer.transform, T.RandomResizedCrop) for layer in wrapped)
    assert wrapped[0].transform.scale == (0.8, 1.0) and wrapped[0].probability == 1.0
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
    with pytest.raises(TypeError, match="cannot wrap layer"):
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


# ---------------------------------------------------------------- DOM that saves compute


def np_conv2d(x, kernel, bias, strides, dilation, padding):
    """Keras' Conv2D (NHWC, HWIO, groups 1) by its definition, TensorFlow's documented padding written out."""
    out_shape, lows = [], []
    for n, k, s, d in zip(x.shape[1:3], kernel.shape[:2], strides, dilation):
        extent = d * (k - 1) + 1
        if padding == "valid":
            lows.append(0)
            out_shape.append((n - extent) // s + 1)
        else:
            out = -(-n // s)
            lows.append(max((out - 1) * s + extent - n, 0) // 2)
            out_shape.append(out)
    y = np.zeros((x.shape[0], *out_shape, kernel.shape[-1]))
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            for oh in range(out_shape[0]):
                for ow in range(out_shape[1]):
                    h = oh * strides[0] + i * dilation[0] - lows[0]
                    w = ow * strides[1] + j * dilation[1] - lows[1]
                    if 0 <= h < x.shape[1] and 0 <= w < x.shape[2]:
                        y[:, oh, ow] += x[:, h, w] @ kernel[i, j]
    return y + bias


# name: (layer factory, input shape, desire_transform)
DOM_CASES = {
    "same": (lambda: keras.layers.Conv2D(4, 3, padding="same"), (2, 9, 9, 3), "auto"),
    "valid": (lambda: keras.layers.Conv2D(4, 3), (2, 9, 8, 3), "auto"),
    "same_stride2_even": (lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same"), (2, 10, 10, 3), "auto"),
    "same_stride2_odd": (lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same"), (2, 9, 11, 3), "auto"),
    "valid_stride2": (lambda: keras.layers.Conv2D(4, 3, strides=(2, 3)), (2, 11, 10, 3), "auto"),
    "dilated": (lambda: keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same"), (2, 11, 10, 3), "auto"),
    "k5_shift_up_left": (lambda: keras.layers.Conv2D(4, 5, padding="same"), (2, 9, 9, 2), T.FixedShift(-1)),
    "mask_box": (
        lambda: keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        (2, 8, 8, 3),
        T.FixedMask([[1, 1, 0], [1, 1, 0], [0, 0, 0]]),
    ),
    "mask_row": (lambda: keras.layers.Conv2D(4, 3), (2, 8, 8, 3), T.FixedMask([[0, 0, 0], [1, 0, 1], [0, 0, 0]])),
    "groups": (lambda: keras.layers.Conv2D(4, 3, padding="same", groups=2), (2, 7, 7, 4), "auto"),
    "conv1d_causal": (lambda: keras.layers.Conv1D(4, 3, padding="causal"), (2, 9, 3), "auto"),
    "conv3d": (lambda: keras.layers.Conv3D(2, 3, padding="same"), (1, 5, 6, 5, 2), "auto"),
    "depthwise2d_stride2": (
        lambda: keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2),
        (2, 9, 10, 3),
        "auto",
    ),
    "depthwise1d": (lambda: keras.layers.DepthwiseConv1D(3, padding="same"), (2, 9, 3), "auto"),
}


def _executed_filter_shapes(layer, shape):
    fn = tf.function(lambda t: layer(t, training=False), autograph=False)
    graph = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return [tuple(op.inputs[1].shape) for op in graph.get_operations() if "Conv" in op.type]


@pytest.mark.parametrize("case", sorted(DOM_CASES))
def test_dom_runs_only_the_kept_taps_and_equals_the_full_convolution(case, rng):
    factory, shape, desire_transform = DOM_CASES[case]
    layer = ShadowWeights(factory(), mode="desire", seed=0, desire_transform=desire_transform)
    layer.build(shape)
    layer.layer.bias.assign(rng.normal(size=layer.layer.bias.shape).astype("float32"))
    layer.refresh_desire_kernel()
    x = rng.normal(size=shape).astype("float32")
    dom = layer.desire_kernel.numpy()
    y = layer(x).numpy()
    # Against the dense convolution of the full, zero-padded DOM kernel (Keras) ...
    dense = _plain_copy(factory, layer, shape, kernel=dom)
    np.testing.assert_allclose(y, dense(x).numpy(), atol=1e-5)
    # ... and against numpy, by the definition of the convolution.
    plain = layer.layer
    if isinstance(plain, keras.layers.Conv2D) and plain.groups == 1:
        expected = np_conv2d(x, dom, plain.bias.numpy(), plain.strides, plain.dilation_rate, plain.padding)
        expected = np.maximum(expected, 0) if case == "mask_box" else expected
        np.testing.assert_allclose(y, expected, atol=1e-5)
    # The zeroed taps are removed: the traced graph convolves with the smaller kernel only.
    reduced = layer.desire_plan(shape)
    spatial = len(reduced.kernel_size)
    box = layer.desire_fixed.kept_box(dom.shape, tuple(range(spatial)))
    assert reduced.kernel_size == tuple(b - a for a, b in box)
    assert np.prod(reduced.kernel_size) < np.prod(dom.shape[:spatial])
    outside = np.ones(dom.shape[:spatial], bool)
    outside[tuple(slice(a, b) for a, b in box)] = False
    assert not dom[outside].any()
    if case != "groups":  # Keras runs a grouped convolution in a nested XLA function: no Conv op at top level
        filters = _executed_filter_shapes(layer, shape)
        assert filters and all(np.prod(f[:-2]) == np.prod(reduced.kernel_size) for f in filters), filters
    # It folds to plain Keras layers that compute the same.
    folded = layer.fold()
    inner = folded.layers if isinstance(folded, keras.Sequential) else [folded]
    assert all(type(sub).__module__.startswith("keras.") for sub in [folded, *inner])
    assert any(tuple(getattr(sub, "kernel_size", ())) == reduced.kernel_size for sub in inner)
    np.testing.assert_allclose(np.asarray(folded(x)), y, atol=1e-5)
    # Counted multiply-adds: output positions x kept taps x cin x cout.
    row = desire_sparsity(layer)[0]
    positions = int(np.prod(y.shape[1:-1]))
    assert row["macs_plain"] == positions * dom.size
    assert row["macs_desire_executed"] == positions * int(np.prod(row["desire_kernel_shape"]))
    assert row["desire_kernel_shape"][:spatial] == reduced.kernel_size


def test_default_dom_of_a_3x3_same_conv_is_a_2x2_same_conv_with_four_ninths_of_the_macs(rng):
    model = keras.Sequential([keras.Input((12, 12, 3)), authors_wrap(keras.layers.Conv2D(8, 3, padding="same"))])
    set_weight_mode(model, "desire")
    layer = model.layers[0]
    assert isinstance(layer.desire_fixed, T.FixedShift) and layer.desire_fixed.shift == 1
    folded = layer.fold()
    assert type(folded) is keras.layers.Conv2D and folded.kernel_size == (2, 2) and folded.padding == "same"
    np.testing.assert_array_equal(folded.kernel.numpy(), layer.layer.kernel.numpy()[:2, :2])  # PW's top-left block
    [row] = desire_sparsity(model)
    assert row["macs_plain"] == 12 * 12 * 9 * 3 * 8 and row["macs_desire_executed"] * 9 == row["macs_plain"] * 4
    x = rng.normal(size=(2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), folded(x).numpy(), atol=1e-5)


def test_auto_desire_transform_resolution():
    def resolved(layer, transform, shape):
        wrapper = ShadowWeights(layer, transform=transform)
        wrapper.build(shape)
        return wrapper.desire_fixed

    assert isinstance(resolved(keras.layers.Conv2D(2, 3), "random_translate", (1, 6, 6, 1)), T.FixedShift)
    assert isinstance(resolved(keras.layers.Conv2D(2, 3), authors_wrap(keras.layers.Conv2D(2, 3)).transform,
                               (1, 6, 6, 1)), T.FixedShift)  # fmt: skip
    assert resolved(keras.layers.Conv2D(2, 3), "dropconnect", (1, 6, 6, 1)) is None  # a weight-space draw
    assert resolved(keras.layers.Dense(2), "dropconnect", (1, 4)) is None
    one_by_three = ShadowWeights(keras.layers.Conv2D(2, (1, 3), padding="same"), mode="desire")
    one_by_three.build((1, 5, 5, 2))
    assert one_by_three.desire_plan((1, 5, 5, 2)).kernel_size == (1, 2)  # the size-1 axis is not shifted
    transposed = ShadowWeights(keras.layers.Conv2DTranspose(2, 3), mode="desire")
    transposed.build((1, 5, 5, 2))
    assert isinstance(transposed.desire_fixed, T.FixedShift) and transposed.desire_plan((1, 5, 5, 2)) is None


def test_unknown_spatial_size(rng):
    # Stride 1: the reduced padding does not depend on the size. Stride 2: the full DOM kernel runs.
    for strides, reduced in ((1, True), (2, False)):
        conv = keras.layers.Conv2D(3, 3, strides=strides, padding="same")
        model = keras.Sequential([keras.Input((None, None, 2)), ShadowWeights(conv, mode="desire", seed=0)])
        layer = model.layers[0]
        assert (layer.desire_plan((None, None, None, 2)) is not None) is reduced
        for size in (7, 8):
            x = rng.normal(size=(1, size, size + 1, 2)).astype("float32")
            dense = keras.layers.Conv2D(3, 3, strides=strides, padding="same")
            dense.build(x.shape)
            dense.set_weights([layer.desire_kernel.numpy(), conv.bias.numpy()])
            np.testing.assert_allclose(model(x).numpy(), dense(x).numpy(), atol=1e-5)


def test_dom_of_weight_normalization_runs_reduced_and_folds(rng):
    wn = WeightNormalization(keras.layers.Conv2D(4, 3, padding="same"), data_init=False)
    layer = ShadowWeights(wn, mode="desire", seed=0)
    shape = (2, 6, 6, 3)
    layer.build(shape)
    wn.g_weights[0].assign(rng.uniform(0.5, 2.0, size=(4,)).astype("float32"))
    layer.refresh_desire_kernel()
    x = rng.normal(size=shape).astype("float32")
    v = wn.layer.kernel.numpy()
    w = wn.g_weights[0].numpy() * v / np.sqrt(np.sum(v**2, axis=(0, 1, 2), keepdims=True))
    dense = keras.layers.Conv2D(4, 3, padding="same")
    dense.build(shape)
    dense.set_weights([np_shift(w, (1, 1), (0, 1)), wn.layer.bias.numpy()])
    np.testing.assert_allclose(layer(x).numpy(), dense(x).numpy(), atol=1e-5)
    folded = layer.fold()
    assert type(folded) is keras.layers.Conv2D and folded.kernel_size == (2, 2)
    np.testing.assert_allclose(folded(x).numpy(), dense(x).numpy(), atol=1e-5)


def test_folded_dom_model_round_trips_through_keras_file_without_keras_wtrain(tmp_path, rng):
    import subprocess
    import sys

    from keras_wtrain._core.kernel_reparametrization import fold_layers

    inputs = keras.Input((12, 12, 1))
    h = ShadowWeights(keras.layers.Conv2D(4, 3, padding="same", activation="relu"), seed=0)(inputs)
    h = ShadowWeights(keras.layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False), seed=1)(h)
    h = keras.layers.BatchNormalization()(h)
    h = ShadowWeights(keras.layers.Conv2D(6, 3), seed=2)(h)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    x = rng.normal(size=(4, 12, 12, 1)).astype("float32")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(4) % 3, epochs=1, verbose=0)  # BatchNorm's moving statistics move
    set_weight_mode(model, "desire")
    expected = model.predict(x, verbose=0)
    folded = fold_layers(model)
    assert not any(isinstance(layer, ShadowWeights) for layer in folded._flatten_layers())
    np.testing.assert_allclose(folded(x).numpy(), expected, atol=1e-5)
    path = os.path.join(tmp_path, "folded.keras")
    folded.save(path)
    x_path, y_path = os.path.join(tmp_path, "x.npy"), os.path.join(tmp_path, "y.npy")
    np.save(x_path, x)
    script = (
        "import sys, numpy as np, keras\n"
        f"model = keras.saving.load_model({path!r})\n"
        f"np.save({y_path!r}, np.asarray(model(np.load({x_path!r}))))\n"
        "assert not any(name.startswith('keras_wtrain') for name in sys.modules)\n"
        "print(sorted({type(l).__name__ for l in model._flatten_layers()}))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ShadowWeights" not in result.stdout and "Conv2D" in result.stdout
    np.testing.assert_allclose(np.load(y_path), expected, atol=1e-5)


def test_desire_transform_bad_input():
    for bad in ("random_translate", T.RandomTranslate(0.3), "dropconnect", lambda kernel, seed: kernel, "warp", 3):
        with pytest.raises(
            ValueError, match=r"ShadowWeights: argument `desire_transform` must be a fixed shift or mask"
        ):
            ShadowWeights(keras.layers.Conv2D(2, 3), desire_transform=bad)
    with pytest.raises(ValueError, match=r"argument `desire_transform`: FixedShift: .*\|shift\| < kernel size"):
        ShadowWeights(keras.layers.Conv2D(2, 3), desire_transform=T.FixedShift(3)).build((None, 6, 6, 1))
    with pytest.raises(ValueError, match="argument `desire_transform`.*no spatial axes"):
        ShadowWeights(keras.layers.Dense(2), "dropconnect", desire_transform="fixed_shift").build((None, 4))
    with pytest.raises(ValueError, match="argument `desire_transform`: FixedMask"):
        ShadowWeights(keras.layers.Conv2D(2, 3), desire_transform=T.FixedMask([[1, 0], [0, 1]])).build((None, 6, 6, 1))


def test_config_keys():
    layer = ShadowWeights(keras.layers.Conv2D(2, 3), desire_transform=T.FixedShift((1, -1)), probability=0.25)
    config = layer.get_config()
    clone = ShadowWeights.from_config(config)
    assert clone.probability == 0.25 and isinstance(clone.desire_transform, T.FixedShift)
    assert clone.desire_transform.shift == (1, -1)
    assert ShadowWeights.from_config(ShadowWeights(keras.layers.Conv2D(2, 3)).get_config()).desire_transform == "auto"


def test_probability_of_augmented_steps(rng):
    x = rng.normal(size=(3, 4)).astype("float32")

    def plain_rate(probability, calls=200):
        layer = ShadowWeights(keras.layers.Dense(2), T.MultiplicativeNoise(0.5), seed=3, probability=probability)
        layer.build(x.shape)
        plain = layer(x).numpy()
        return np.mean([np.array_equal(layer(x, training=True).numpy(), plain) for _ in range(calls)])

    assert plain_rate(0.0, 20) == 1.0  # never augmented: the plain layer, bit for bit
    assert plain_rate(1.0, 20) == 0.0
    assert 0.62 <= plain_rate(0.25) <= 0.88  # 200 Bernoulli(0.75) calls
    with pytest.raises(ValueError, match=r"ShadowWeights: argument `probability` must be in \[0, 1\]"):
        ShadowWeights(keras.layers.Dense(2), probability=1.5)
    with pytest.raises(TypeError, match="`probability`"):
        ShadowWeights(keras.layers.Dense(2), probability="half")


def test_probability_gradient_reaches_plain_weights_on_both_branches(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    layer = ShadowWeights(keras.layers.Dense(2, use_bias=False), T.MultiplicativeNoise(0.5), seed=0, probability=0.5)
    layer.build(x.shape)
    pw = layer.layer.kernel.numpy()
    seen = set()
    for _ in range(12):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(y)
        grad = tape.gradient(loss, layer.layer.kernel).numpy()
        plain_step = np.allclose(y.numpy(), x @ pw, atol=1e-6)
        seen.add(plain_step)
        if plain_step:
            np.testing.assert_allclose(grad, np.repeat(x.sum(0)[:, None], 2, 1), rtol=1e-5)
        else:
            assert not np.allclose(grad, np.repeat(x.sum(0)[:, None], 2, 1))  # through T: scaled by the noise
    assert seen == {True, False}
