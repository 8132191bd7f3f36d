"""Tests of OptimumShifting (arXiv:2405.14111) on real MNIST-5k training, TensorFlow backend."""

import os

import keras
import numpy as np
import pytest

from keras_wtrain.comparison.models import build_model
from keras_wtrain.optimum_shifting.callback import OptimumShifting
from keras_wtrain.optimum_shifting.least_norm import minimum_norm_kernel
from keras_wtrain.optimum_shifting.shift import optimum_shift
from keras_wtrain.weight_normalization.wrapper import WeightNormalization

pytestmark = pytest.mark.tensorflow_only

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _compile(model, jit=True):
    model.compile(keras.optimizers.Adam(1e-3), LOSS, jit_compile=jit)
    return model


def _copy(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _dense(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def _inputs_of(model, layer, x):
    """Independent capture of a layer's inputs through a functional sub-model."""
    return np.asarray(keras.Model(model.inputs, layer.input).predict(x, verbose=0), dtype=np.float64)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _balanced(y, per_class, offset=0):
    return np.concatenate([np.flatnonzero(y == c)[offset : offset + per_class] for c in range(10)])


@pytest.fixture(scope="module")
def data(mnist5k):
    return mnist5k.x_train[:1000], mnist5k.y_train[:1000]


@pytest.fixture(scope="module")
def trained_mlp(data):
    keras.utils.set_random_seed(0)
    model = _compile(build_model("mlp", (28, 28, 1), 10))
    model.fit(*data, epochs=10, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained_cnn(data):
    keras.utils.set_random_seed(0)
    model = _compile(build_model("cnn", (28, 28, 1), 10))
    model.fit(*data, epochs=6, batch_size=64, verbose=0)
    return model


# --- the closed form -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,d,rank", [(5, 12, 5), (8, 12, 3), (30, 12, 7), (30, 12, 12)])
def test_minimum_norm_kernel_matches_numpy(rng, n, d, rank):
    a = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
    v = rng.normal(size=(d, 4))
    v_star = minimum_norm_kernel(a, v)
    reference = np.linalg.lstsq(a, a @ v, rcond=None)[0]  # numpy's minimum-norm least-squares solution
    np.testing.assert_allclose(v_star, reference, atol=1e-8)
    np.testing.assert_allclose(a @ v_star, a @ v, atol=1e-8)
    assert np.linalg.norm(v_star) <= np.linalg.norm(v) + 1e-12
    if rank == n:  # full row rank: the paper's formula A^T (A A^T)^-1 A V
        np.testing.assert_allclose(v_star, a.T @ np.linalg.solve(a @ a.T, a @ v), atol=1e-8)
    if rank == d:  # n >= d at full column rank: no freedom, the kernel is kept
        np.testing.assert_allclose(v_star, v, atol=1e-8)


def test_minimum_norm_kernel_bad_shapes():
    with pytest.raises(ValueError, match="must agree on d"):
        minimum_norm_kernel(np.ones((3, 4)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="rtol"):
        minimum_norm_kernel(np.ones((3, 4)), np.ones((4, 2)), rtol=0.0)


# --- behaviour on a trained model --------------------------------------------------------------------------------


def test_outputs_kept_on_shifting_batch_and_kernel_is_the_projection(trained_mlp, data):
    x, y = data
    model = _copy(trained_mlp)
    idx = _balanced(y, 10)  # exactly the 100-example shifting batch, every class
    xb, yb = x[idx], y[idx]
    last = _dense(model)[-1]
    before_out = model.predict(xb, verbose=0)
    before_kernel = last.kernel.numpy()
    a = _inputs_of(model, last, xb)
    info = optimum_shift(model, (xb, yb), batch_size=100, seed=0)
    after_kernel = last.kernel.numpy()
    assert _rel(model.predict(xb, verbose=0), before_out) <= 1e-4
    expected = np.linalg.lstsq(a, a @ before_kernel.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(after_kernel, expected, atol=1e-4)
    assert np.linalg.norm(after_kernel) < 0.95 * np.linalg.norm(before_kernel)
    assert np.max(np.abs(after_kernel - before_kernel)) > 1e-2
    assert info[last.name]["systems"] == 1 and info[last.name]["norm_after"] < info[last.name]["norm_before"]
    np.testing.assert_array_equal(last.bias.numpy(), trained_mlp.layers[-1].bias.numpy())


def _hutchinson_trace(model, variable, x, y, probes):
    """Hutchinson estimate E[vᵀ H v] of the Hessian trace of the loss w.r.t. `variable` (TF double backprop)."""
    import tensorflow as tf

    total = 0.0
    for v in probes:
        v = tf.constant(v, dtype=variable.dtype)
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = LOSS(y, model(x, training=False))
            grad = inner.gradient(loss, variable)
            grad_dot_v = tf.reduce_sum(grad * v)
        hv = outer.gradient(grad_dot_v, variable)
        total += float(tf.reduce_sum(hv * v))
    return total / len(probes)


def test_hessian_trace_of_layer_below_drops(trained_mlp, data, rng):
    x, y = data
    model = _copy(trained_mlp)
    idx = _balanced(y, 10)
    xb, yb = x[idx], y[idx]
    below, last = _dense(model)[-2], _dense(model)[-1]
    probes_below = [rng.choice([-1.0, 1.0], size=below.kernel.shape) for _ in range(10)]
    probes_last = [rng.choice([-1.0, 1.0], size=last.kernel.shape) for _ in range(10)]
    below_before = _hutchinson_trace(model, below.kernel, xb, yb, probes_below)
    last_before = _hutchinson_trace(model, last.kernel, xb, yb, probes_last)
    optimum_shift(model, (xb, yb), batch_size=100, seed=0)
    below_after = _hutchinson_trace(model, below.kernel, xb, yb, probes_below)
    last_after = _hutchinson_trace(model, last.kernel, xb, yb, probes_last)
    # The Hessian w.r.t. the layer below passes through V, whose norm shrank: the trace drops.
    assert below_after < 0.95 * below_before
    # W.r.t. the shifted kernel itself it depends only on its inputs and the logits, both kept on this batch.
    assert abs(last_after - last_before) <= 1e-3 * abs(last_before)


def test_default_shift_moves_live_weights_and_respects_the_guard(trained_cnn, data):
    # The compare CNN's last Dense layer has d = 128 inputs of which ~95 are live: the defaults must shift
    # on the live units (not only zero dead rows) and keep the training loss within the guard.
    x, y = data
    model = _copy(trained_cnn)
    _compile(model)
    loss_before = model.evaluate(x, y, verbose=0, batch_size=500)
    last = _dense(model)[-1]
    kernel_before = last.kernel.numpy().astype(np.float64)
    a = _inputs_of(model, last, x)
    live = np.abs(a).max(axis=0) > 1e-7 * np.abs(a).max()
    shifting = OptimumShifting(data=(x, y), seed=0)  # defaults, as `keras-wtrain compare` uses it
    shifting.set_model(model)
    shifting.on_train_begin()
    shifting.on_train_end()
    entry = shifting.history[-1]
    info = entry["layers"][last.name]
    assert entry["epoch"] == "end" and entry["kept"]
    assert info["live_units"] == int(live.sum()) < 128
    assert info["examples_per_system"] * 1 < info["live_rank"] <= info["live_units"]  # rows < live rank: freedom
    kernel_after = last.kernel.numpy().astype(np.float64)
    change = np.linalg.norm((kernel_after - kernel_before)[live]) / np.linalg.norm(kernel_before[live])
    assert change == pytest.approx(info["relative_change_live"], rel=1e-4)
    assert change > 0.05  # a real move on the live units
    assert np.linalg.norm(kernel_after) < 0.95 * np.linalg.norm(kernel_before)
    # Outputs kept on the shifting batch; the guard bounds the loss on its slice.
    idx = info["batch_indices"]
    assert _rel(a[idx] @ kernel_after, a[idx] @ kernel_before) <= 1e-4
    assert entry["loss_after"] <= entry["loss_before"] * 1.02 + 1e-3
    loss_after = model.evaluate(x, y, verbose=0, batch_size=500)
    assert loss_after <= loss_before * 1.05 + 1e-3
    # Convolutions and the hidden Dense layer are untouched by the default layers="last".
    for layer, ref in zip(model.layers, trained_cnn.layers):
        if layer is not last:
            for w, w_ref in zip(layer.get_weights(), ref.get_weights()):
                np.testing.assert_array_equal(w, w_ref)


def test_guard_rolls_back_a_shift_that_raises_the_loss(trained_cnn, data):
    x, y = data
    model = _copy(trained_cnn)
    _compile(model)
    last = _dense(model)[-1]
    kernel_before = last.kernel.numpy()
    # 11 examples against ~95 live units: a very aggressive shift, with a zero tolerance.
    shifting = OptimumShifting(
        every_n_epochs=None, batch_size=11, data=(x, y), seed=0, max_loss_increase=0.0, loss_atol=0.0
    )
    shifting.set_model(model)
    shifting.on_train_begin()
    with pytest.warns(UserWarning, match="rolled a shift back"):
        shifting.on_train_end()
    entry = shifting.history[-1]
    assert not entry["kept"] and entry["loss_after"] > entry["loss_before"]
    np.testing.assert_array_equal(last.kernel.numpy(), kernel_before)


def test_a_shift_without_freedom_warns(rng):
    # 3 live inputs of 8 (the others always 0) and 40 examples: no freedom on the live rows.
    x = np.zeros((40, 8), "float32")
    x[:, :3] = rng.normal(size=(40, 3))
    y = np.arange(40) % 2
    dense = keras.layers.Dense(2)
    model = keras.Sequential([keras.Input((8,)), dense])
    with pytest.warns(UserWarning, match="changed nothing on the live inputs"):
        info = optimum_shift(model, (x, y), batch_size=40, seed=0)[dense.name]
    assert info["live_units"] == 3 and info["relative_change_live"] < 1e-6
    assert info["norm_after"] < info["norm_before"]  # only the dead rows were zeroed


def test_sub_batching_when_rows_reach_input_width(rng):
    # d = 16 inputs, 10 classes, 100 examples: n >= d, so sub-batches of 15 examples are solved in turn.
    x = rng.normal(size=(100, 16)).astype("float32")
    y = np.arange(100) % 10
    dense = keras.layers.Dense(10)
    model = keras.Sequential([keras.Input((16,)), dense])
    kernel = dense.kernel.numpy().astype(np.float64)
    info = optimum_shift(model, (x, y), batch_size=100, seed=0)[dense.name]
    assert info["examples_per_system"] == 15 and info["systems"] == 7
    assert info["rank"] == [15] * 7
    assert info["norm_after"] < info["norm_before"]
    assert np.linalg.norm(dense.kernel.numpy()) < np.linalg.norm(kernel)
    # Below d rows the whole batch is one system.
    small = optimum_shift(model, (x[:12], y[:12]), batch_size=12, seed=0)[dense.name]
    assert small["systems"] == 1 and small["examples_per_system"] == 12


def test_every_n_epochs_with_jit_and_history(data):
    x, y = data
    keras.utils.set_random_seed(1)
    model = _compile(build_model("mlp", (28, 28, 1), 10), jit=True)
    shifting = OptimumShifting(every_n_epochs=2, at_end=True, batch_size=128, data=(x, y), seed=0)
    model.fit(x[:512], y[:512], epochs=4, batch_size=64, verbose=0, callbacks=[shifting])
    assert [h["epoch"] for h in shifting.history] == [1, 3, "end"]
    name = _dense(model)[-1].name
    assert all(h["layers"][name]["norm_after"] < h["layers"][name]["norm_before"] for h in shifting.history)


def test_dense_mode_and_weight_normalization(data):
    x, y = data
    keras.utils.set_random_seed(2)
    model = build_model("mlp", (28, 28, 1), 10, wrap=lambda layer: WeightNormalization(layer))
    idx = _balanced(y, 12)
    xb, yb = x[idx], y[idx]
    wrappers = [layer for layer in model.layers if isinstance(layer, WeightNormalization)]
    before_out = model.predict(xb, verbose=0)
    inputs = [_inputs_of(model, w, xb) for w in wrappers]
    kernels = [keras.ops.convert_to_numpy(w.effective_kernels()[0]).astype(np.float64) for w in wrappers]
    info = optimum_shift(model, (xb, yb), layers="dense", batch_size=120, seed=0)
    assert set(info) == {w.name for w in wrappers}
    # Layers shift one after another from the same captured inputs, so the model's outputs are kept.
    assert _rel(model.predict(xb, verbose=0), before_out) <= 1e-4
    for w, a, k in zip(wrappers, inputs, kernels):
        expected = np.linalg.lstsq(a, a @ k, rcond=None)[0]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(w.effective_kernels()[0]), expected, atol=1e-4)


def test_mirrored_strategy(two_cpu_strategy, data):
    x, y = data
    idx = _balanced(y, 10)
    with two_cpu_strategy.scope():
        keras.utils.set_random_seed(3)
        # jit_compile=False: XLA rejects variables mirrored on two host devices even without any callback.
        model = _compile(build_model("mlp", (28, 28, 1), 10), jit=False)
    # The mechanism alone: one shift at the end on exactly this batch (no guard slice taken out of it).
    shifting = OptimumShifting(
        every_n_epochs=None, batch_size=100, data=(x[idx], y[idx]), seed=0, max_loss_increase=None
    )
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    last = _dense(model)[-1]
    a = _inputs_of(model, last, x[idx])
    kernel = last.kernel.numpy().astype(np.float64)
    out = model.predict(x[idx], verbose=0)
    shifting.set_model(model)
    shifting.on_train_end()
    expected = np.linalg.lstsq(a, a @ kernel, rcond=None)[0]
    for replica_value in last.kernel._value.values:  # every replica got the shifted kernel
        np.testing.assert_allclose(replica_value.numpy(), expected, atol=1e-4)
    assert _rel(model.predict(x[idx], verbose=0), out) <= 1e-4
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0, callbacks=[shifting])  # and inside fit
    assert len(shifting.history) == 2


def test_mixed_precision(data):
    x, y = data
    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(4)
    model = _compile(build_model("mlp", (28, 28, 1), 10), jit=True)
    idx = _balanced(y, 10)
    shifting = OptimumShifting(batch_size=100, data=(x[idx], y[idx]), seed=0)
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    out = np.asarray(model.predict(x[idx], verbose=0), dtype=np.float32)
    shifting.set_model(model)
    shifting.on_train_end()
    last = _dense(model)[-1]
    assert last.kernel.dtype == "float32"
    info = shifting.history[-1]["layers"][last.name]
    assert info["norm_after"] < 0.95 * info["norm_before"]
    assert _rel(np.asarray(model.predict(x[idx], verbose=0), dtype=np.float32), out) <= 1e-2  # float16 compute


# --- serialisation and arguments ----------------------------------------------------------------------------------


def test_get_config_round_trip():
    shifting = OptimumShifting(layers=["dense_2"], every_n_epochs=3, at_end=False, batch_size=64, seed=5, rtol=1e-5)
    config = shifting.get_config()
    clone = OptimumShifting.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(shifting))
    assert isinstance(restored, OptimumShifting) and restored.get_config() == config
    layer = keras.layers.Dense(3, name="head")
    assert OptimumShifting(layers=[layer]).get_config()["layers"] == ["head"]


def test_keras_file_holds_shifted_weights(trained_mlp, data, tmp_path):
    x, y = data
    model = _copy(trained_mlp)
    _compile(model)
    original = _dense(model)[-1].kernel.numpy()
    shifting = OptimumShifting(batch_size=100, data=(x, y), seed=0, max_loss_increase=None)
    model.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0, callbacks=[shifting])
    path = os.path.join(tmp_path, "shifted.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    shifted = _dense(model)[-1].kernel.numpy()
    assert np.linalg.norm(shifted) < 0.95 * np.linalg.norm(original)
    np.testing.assert_array_equal(_dense(loaded)[-1].kernel.numpy(), shifted)
    np.testing.assert_allclose(loaded.predict(x[:64], verbose=0), model.predict(x[:64], verbose=0), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"layers": "conv"}, ValueError, "argument `layers`"),
        ({"layers": 3}, TypeError, "argument `layers`"),
        ({"layers": []}, ValueError, "argument `layers`"),
        ({"every_n_epochs": 0}, ValueError, "argument `every_n_epochs`"),
        ({"at_end": "yes"}, TypeError, "argument `at_end`"),
        ({"every_n_epochs": None, "at_end": False}, ValueError, "never shift"),
        ({"batch_size": "big"}, TypeError, "argument `batch_size`"),
        ({"max_loss_increase": -0.1}, ValueError, "argument `max_loss_increase`"),
        ({"guard_size": 0}, ValueError, "argument `guard_size`"),
        ({"loss_atol": -1.0}, ValueError, "argument `loss_atol`"),
        ({"batch_size": 1}, ValueError, "argument `batch_size`"),
        ({"sub_batch_size": 0}, ValueError, "argument `sub_batch_size`"),
        ({"seed": "a"}, TypeError, "argument `seed`"),
        ({"rtol": 1.5}, ValueError, "argument `rtol`"),
        ({"verbose": 2}, ValueError, "argument `verbose`"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        OptimumShifting(**kwargs)


def test_bad_setup_at_train_begin(data):
    x, y = data
    model = build_model("cnn", (28, 28, 1), 10)
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    for kwargs, match in [
        ({}, "argument `data` is None"),
        ({"data": (x, y), "layers": [conv.name]}, "over-determined"),
        ({"data": (x, y), "layers": [conv]}, "over-determined"),
        ({"data": (x, y), "layers": ["nope"]}, "no layer named"),
    ]:
        shifting = OptimumShifting(**kwargs)
        shifting.set_model(model)
        with pytest.raises(ValueError, match=match):
            shifting.on_train_begin()
    with pytest.raises(ValueError, match="more than|larger than the number of classes"):
        optimum_shift(model, (x, y), batch_size=10)


def test_dataset_and_one_hot_labels(rng):
    import tensorflow as tf

    x = rng.normal(size=(60, 32)).astype("float32")
    y = np.arange(60) % 3
    dense = keras.layers.Dense(3)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(40, activation="relu"), dense])
    out = model.predict(x, verbose=0)
    one_hot = np.eye(3, dtype="float32")[y]
    dataset = tf.data.Dataset.from_tensor_slices((x, one_hot)).batch(16)
    info = optimum_shift(model, dataset, batch_size=30, seed=0)[dense.name]
    assert info["systems"] == 1 and info["examples_per_system"] == 30
    assert sorted(np.bincount(y[info["batch_indices"]]).tolist()) == [10, 10, 10]  # class-stratified
    idx = info["batch_indices"]
    assert _rel(model.predict(x[idx], verbose=0), out[idx]) <= 1e-4
    assert info["norm_after"] < info["norm_before"]
