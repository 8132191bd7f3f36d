"""WeightNormalization: numerics against numpy, data init, folding, saving, precision, distribution."""

import keras
import numpy as np
import pytest

import keras_wtrain
from keras_wtrain.callbacks import WeightNormalizationInitializer
from keras_wtrain.layers import WeightNormalization

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tensorflow_only

# (factory, input shape, norm axes of the kernel)
LAYER_CASES = {
    "dense": (lambda: keras.layers.Dense(5), (4, 3), (0,)),
    "dense_3d_input": (lambda: keras.layers.Dense(5), (2, 4, 3), (0,)),
    "conv1d": (lambda: keras.layers.Conv1D(4, 3), (2, 7, 3), (0, 1)),
    "conv2d": (lambda: keras.layers.Conv2D(4, 3), (2, 6, 6, 3), (0, 1, 2)),
    "conv3d": (lambda: keras.layers.Conv3D(2, 2), (1, 4, 4, 4, 2), (0, 1, 2, 3)),
    "conv2d_transpose": (lambda: keras.layers.Conv2DTranspose(4, 3), (2, 5, 5, 3), (0, 1, 3)),
    "conv1d_transpose": (lambda: keras.layers.Conv1DTranspose(4, 3), (2, 5, 3), (0, 2)),
    "depthwise_conv2d": (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (2, 6, 6, 3), (0, 1)),
    "separable_conv2d": (lambda: keras.layers.SeparableConv2D(4, 3), (2, 6, 6, 3), (0, 1, 2)),
}


def np_weight_norm(v, g, axes):
    norm = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=axes, keepdims=True))
    keep = tuple(1 if i in axes else d for i, d in enumerate(v.shape))
    return g.reshape(keep) * v / norm


def _randomise(layer, rng):
    for w in layer.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_forward_and_gradients_match_numpy(case, rng):
    factory, shape, axes = LAYER_CASES[case]
    wrapped = WeightNormalization(factory(), data_init=False)
    x = rng.normal(size=shape).astype("float32")
    wrapped.build(shape)
    _randomise(wrapped, rng)  # random v, g and bias
    inner = wrapped.layer
    kernel = inner.pointwise_kernel if case == "separable_conv2d" else inner.kernel
    v = kernel.numpy()
    g = wrapped.g_weights[0].numpy()
    w = np_weight_norm(v, g, axes)

    # The reference is a plain layer of the same kind holding w = g v / ||v|| (computed in numpy).
    reference = factory()
    reference.build(shape)
    values = [w.astype("float32") if var is kernel else var.numpy() for var in inner.weights]
    reference.set_weights(values)
    probe = rng.normal(size=reference.compute_output_shape(shape)).astype("float32")

    with tf.GradientTape() as tape:
        y = wrapped(x)
        loss = tf.reduce_sum(y * probe)
    grad_v, grad_g = tape.gradient(loss, [kernel, wrapped.g_weights[0]])
    ref_kernel = reference.pointwise_kernel if case == "separable_conv2d" else reference.kernel
    with tf.GradientTape() as tape:
        loss_ref = tf.reduce_sum(reference(x) * probe)
    grad_w = tape.gradient(loss_ref, ref_kernel).numpy().astype(np.float64)

    np.testing.assert_allclose(y.numpy(), reference(x).numpy(), atol=1e-5, rtol=1e-5)
    # Chain rule by hand: w = g v/|v|  =>  dL/dg = sum(dL/dw * v/|v|),  dL/dv = g/|v| (dL/dw - (dL/dg) v/|v|).
    keep = tuple(1 if i in axes else d for i, d in enumerate(v.shape))
    norm = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=axes, keepdims=True))
    direction = v / norm
    expected_g = np.sum(grad_w * direction, axis=axes, keepdims=True)
    expected_v = g.reshape(keep) / norm * (grad_w - expected_g * direction)
    scale = np.abs(expected_v).max() + 1e-6
    np.testing.assert_allclose(grad_g.numpy().reshape(keep), expected_g, atol=1e-4 * scale, rtol=1e-4)
    np.testing.assert_allclose(grad_v.numpy(), expected_v, atol=1e-4 * scale, rtol=1e-4)


def test_dense_fully_in_numpy(rng):
    layer = WeightNormalization(keras.layers.Dense(4, activation="tanh"), data_init=False)
    x = rng.normal(size=(6, 3)).astype("float32")
    layer.build(x.shape)
    _randomise(layer, rng)
    v, g, b = layer.layer.kernel.numpy(), layer.g_weights[0].numpy(), layer.layer.bias.numpy()
    expected = np.tanh(x @ (g * v / np.linalg.norm(v, axis=0)) + b)
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)


def test_fresh_wrapper_computes_what_the_plain_layer_did(rng):
    dense = keras.layers.Dense(7)
    x = rng.normal(size=(3, 5)).astype("float32")
    plain = dense(x).numpy()
    wrapped = WeightNormalization(dense, data_init=False)
    np.testing.assert_allclose(wrapped(x).numpy(), plain, atol=1e-5)


@pytest.mark.parametrize("rnn", [keras.layers.SimpleRNN, keras.layers.GRU, keras.layers.LSTM])
def test_recurrent_layers_normalise_kernel_and_recurrent_kernel(rnn, rng):
    layer = WeightNormalization(rnn(4), data_init=False)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    layer.build(x.shape)
    _randomise(layer, rng)
    cell = layer.layer.cell
    assert len(layer.g_weights) == 2
    kernels = [
        np_weight_norm(k.numpy(), g.numpy(), (0,))
        for k, g in zip((cell.kernel, cell.recurrent_kernel), layer.g_weights)
    ]
    reference = rnn(4)
    reference.build(x.shape)
    reference.set_weights(
        [
            kernels[0] if w is cell.kernel else kernels[1] if w is cell.recurrent_kernel else w.numpy()
            for w in layer.layer.weights
        ]
    )
    np.testing.assert_allclose(layer(x).numpy(), reference(x).numpy(), atol=1e-5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, [cell.kernel, cell.recurrent_kernel, *layer.g_weights])
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def _preactivation_model(rng):
    inputs = keras.Input((8, 8, 2))
    c = WeightNormalization(keras.layers.Conv2D(6, 3))(inputs)
    h = keras.layers.Flatten()(keras.layers.ReLU()(c))
    d = WeightNormalization(keras.layers.Dense(5))(h)
    return keras.Model(inputs, [c, d])


def test_data_dependent_init_standardises_first_batch(rng):
    model = _preactivation_model(rng)
    x = (rng.normal(size=(256, 8, 8, 2)) * 3 + 1).astype("float32")
    assert keras_wtrain.initialize_weight_normalization(model, x) == 2
    for out in model(x, training=False):
        out = out.numpy().reshape(-1, out.shape[-1])
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)
        np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-3)
    # Runs once: a second call initialises nothing and leaves the weights alone.
    before = [w.numpy() for w in model.weights]
    assert keras_wtrain.initialize_weight_normalization(model, x[:7] * 5) == 0
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_data_init_matches_numpy_formula(rng):
    layer = WeightNormalization(keras.layers.Dense(3))
    model = keras.Sequential([keras.Input((4,)), layer])
    x = rng.normal(size=(64, 4)).astype("float32")
    v = layer.layer.kernel.numpy()
    keras_wtrain.initialize_weight_normalization(model, x)
    t = x @ (v / np.linalg.norm(v, axis=0))
    np.testing.assert_allclose(layer.g_weights[0].numpy(), 1 / t.std(axis=0), rtol=1e-4)
    np.testing.assert_allclose(layer.layer.bias.numpy(), -t.mean(axis=0) / t.std(axis=0), atol=1e-4)


def test_initializer_callback_and_initialized_flag_saved(tmp_path, rng):
    x = rng.normal(size=(128, 4)).astype("float32")
    y = rng.integers(0, 3, 128)
    model = keras.Sequential([keras.Input((4,)), WeightNormalization(keras.layers.Dense(3))])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = WeightNormalizationInitializer((x, y), batch_size=64)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert callback.initialized_layers == 1
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert float(loaded.layers[0].initialized.numpy()) == 1.0
    assert keras_wtrain.initialize_weight_normalization(loaded, x) == 0


def _cnn(num_classes=3, wrap=True):
    w = (lambda layer: WeightNormalization(layer)) if wrap else (lambda layer: layer)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            w(keras.layers.Conv2D(4, 3, activation="relu")),
            keras.layers.Flatten(),
            w(keras.layers.Dense(8, activation="relu")),
            w(keras.layers.Dense(num_classes)),
        ]
    )


def test_fold_returns_plain_equal_model(digits):
    model = _cnn(10)
    keras_wtrain.initialize_weight_normalization(model, digits.x_train[:128])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, verbose=0)
    folded = keras_wtrain.fold_weight_normalization(model)
    assert not any(type(layer).__module__.startswith("keras_wtrain") for layer in folded._flatten_layers())
    np.testing.assert_allclose(
        folded.predict(digits.x_test, verbose=0), model.predict(digits.x_test, verbose=0), atol=1e-5
    )
    # A functional model with a nested Sequential folds too.
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, keras.layers.Softmax()(model(inputs)))
    folded_outer = keras_wtrain.fold_weight_normalization(outer)
    assert not any(isinstance(layer, WeightNormalization) for layer in folded_outer._flatten_layers())
    np.testing.assert_allclose(folded_outer(digits.x_test[:32]), outer(digits.x_test[:32]), atol=1e-5)


def test_fold_single_layer(rng):
    layer = WeightNormalization(keras.layers.Conv2DTranspose(3, 3, activation="relu"), data_init=False)
    x = rng.normal(size=(2, 4, 4, 2)).astype("float32")
    layer.build(x.shape)
    _randomise(layer, rng)
    folded = layer.fold()
    assert type(folded) is keras.layers.Conv2DTranspose
    np.testing.assert_allclose(folded(x).numpy(), layer(x).numpy(), atol=1e-5)


def test_keras_file_round_trip_safe_mode(tmp_path, digits):
    model = _cnn(10)
    keras_wtrain.initialize_weight_normalization(model, digits.x_train[:64])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train[:128], digits.y_train[:128], epochs=1, verbose=0)
    path = tmp_path / "wn.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(digits.x_test, verbose=0), model.predict(digits.x_test, verbose=0))
    config = model.layers[0].get_config()
    clone = WeightNormalization.from_config(config)
    assert clone.data_init is True and isinstance(clone.layer, keras.layers.Conv2D)
    # Training resumes from the loaded model.
    loaded.fit(digits.x_train[:64], digits.y_train[:64], epochs=1, verbose=0)


def test_jit_compile_training_updates_g_and_v(digits):
    model = _cnn(10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    wn = model.layers[0]
    before = [wn.layer.kernel.numpy(), wn.g_weights[0].numpy()]
    history = model.fit(digits.x_train[:256], digits.y_train[:256], epochs=2, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(before[0], wn.layer.kernel.numpy())
    assert not np.allclose(before[1], wn.g_weights[0].numpy())


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, digits):
    keras.mixed_precision.set_global_policy(policy)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            WeightNormalization(keras.layers.Conv2D(4, 3, activation="relu")),
            keras.layers.Flatten(),
            WeightNormalization(keras.layers.Dense(10, dtype="float32")),
        ]
    )
    wn = model.layers[0]
    assert wn.g_weights[0].dtype == "float32" and wn.layer.kernel.dtype == "float32"
    assert all(k.dtype == "float32" for k in wn.effective_kernels())  # the norm is computed in float32
    keras_wtrain.initialize_weight_normalization(model, digits.x_train[:128])
    assert model.layers[0](digits.x_train[:4]).dtype == policy.split("_")[1]
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    history = model.fit(digits.x_train[:512], digits.y_train[:512], epochs=3, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_mirrored_strategy_two_devices(two_cpu_strategy, digits):
    x, y = digits.x_train[:256], digits.y_train[:256]
    with two_cpu_strategy.scope():
        model = _cnn(10)
        keras_wtrain.initialize_weight_normalization(model, x[:128])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert two_cpu_strategy.num_replicas_in_sync == 2
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    g = model.layers[0].g_weights[0]
    replicas = [v.numpy() for v in g.value.values] if hasattr(g.value, "values") else [g.numpy()]
    for r in replicas[1:]:
        np.testing.assert_allclose(r, replicas[0])


def test_mnist5k_cnn_reaches_95_percent(mnist5k):
    keras.utils.set_random_seed(0)
    model = keras_wtrain.comparison.models.build_model(
        "cnn", (28, 28, 1), 10, wrap=lambda layer: WeightNormalization(layer)
    )
    keras_wtrain.initialize_weight_normalization(model, mnist5k.x_train[:500])
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.fit(mnist5k.x_train, mnist5k.y_train, epochs=4, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(mnist5k.x_test, mnist5k.y_test, verbose=0)
    assert accuracy >= 0.95, accuracy


@pytest.mark.parametrize(
    "bad, error, words",
    [
        ("dense", TypeError, "must be a Keras layer"),
        (keras.layers.Flatten(), TypeError, "Supported layers"),
        (keras.layers.BatchNormalization(), TypeError, "BatchNormalization"),
        (keras.layers.Dropout(0.5), TypeError, "no supported kernel"),
    ],
)
def test_bad_layers_raise_clear_errors(bad, error, words):
    with pytest.raises(error, match=words):
        WeightNormalization(bad)


def test_bad_data_init_argument():
    with pytest.raises(TypeError, match="data_init"):
        WeightNormalization(keras.layers.Dense(2), data_init="yes")


def _subclassed_model(data_init):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = WeightNormalization(keras.layers.Conv2D(4, 3, activation="relu"), data_init=data_init)
            self.flatten = keras.layers.Flatten()
            self.head = WeightNormalization(keras.layers.Dense(3), data_init=data_init)

        def call(self, x):
            return self.head(self.flatten(self.conv(x)))

    return Net()


def test_subclassed_model_builds_symbolically_and_trains(rng):
    # g used to start from a tensor of the scratch graph of the symbolic build ("out of scope" on the first call).
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 16)
    model = _subclassed_model(data_init=False)
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # builds inside fit's symbolic build; no update
    for layer in (model.conv, model.head):
        v = layer.layer.kernel.numpy()
        norm = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=tuple(range(v.ndim - 1))))
        np.testing.assert_allclose(layer.g_weights[0].numpy(), norm, rtol=1e-5)  # g starts at ||v||
    g_before = model.head.g_weights[0].numpy()
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(g_before, model.head.g_weights[0].numpy())


def test_subclassed_model_with_data_init_trains(rng):
    x = rng.normal(size=(32, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 32)
    model = _subclassed_model(data_init=True)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[WeightNormalizationInitializer(x)])
    assert all(layer.is_initialized() for layer in (model.conv, model.head))


def test_data_init_through_time_distributed_uses_every_timestep(rng):
    # TimeDistributed calls the wrapper once per timestep; the init used to take the first timestep only.
    steps = np.arange(5, dtype="float32")[None, :, None]
    x = (rng.normal(size=(64, 5, 4)) * (1 + steps) + 2 * steps).astype("float32")
    inputs = keras.Input((5, 4))
    h = keras.layers.TimeDistributed(WeightNormalization(keras.layers.Dense(3)))(inputs)
    d = WeightNormalization(keras.layers.Dense(2))(keras.layers.Flatten()(keras.layers.ReLU()(h)))
    model = keras.Model(inputs, [h, d])
    assert keras_wtrain.initialize_weight_normalization(model, x) == 2
    for out in model(x, training=False):
        out = np.asarray(out).reshape(-1, out.shape[-1])
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)
        np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-3)
    assert keras_wtrain.initialize_weight_normalization(model, x) == 0


def test_data_init_of_a_shared_layer_uses_all_its_calls(rng):
    shared = WeightNormalization(keras.layers.Dense(3))
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], keras.layers.Concatenate(axis=0)([shared(a), shared(b)]))
    xa = rng.normal(size=(50, 4)).astype("float32")
    xb = (rng.normal(size=(50, 4)) * 3 - 4).astype("float32")
    assert keras_wtrain.initialize_weight_normalization(model, [xa, xb]) == 1
    out = np.asarray(model([xa, xb]))
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-3)


def _our_warnings(record):
    return [w for w in record if "initialize_weight_normalization" in str(w.message)]


def test_training_before_data_init_warns_once(tmp_path, rng):
    import warnings

    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")

    def model_fn():
        model = keras.Sequential([keras.Input((4,)), WeightNormalization(keras.layers.Dense(2))])
        model.compile("sgd", "mse")
        return model

    model = model_fn()
    with pytest.warns(UserWarning, match=r"keras_wtrain.initialize_weight_normalization\(model, x_batch\)"):
        model.fit(x, y, epochs=1, verbose=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=1, verbose=0)  # once: the second fit says nothing
        initialised = model_fn()
        keras_wtrain.initialize_weight_normalization(initialised, x)
        initialised.fit(x, y, epochs=1, verbose=0)
        initialised.save(tmp_path / "m.keras")
        keras.models.load_model(tmp_path / "m.keras").fit(x, y, epochs=1, verbose=0)
        plain = keras.Sequential([keras.Input((4,)), WeightNormalization(keras.layers.Dense(2), data_init=False)])
        plain.compile("sgd", "mse")
        plain.fit(x, y, epochs=1, verbose=0)
    assert _our_warnings(record) == []
