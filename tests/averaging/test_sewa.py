"""SeWA (arXiv:2502.10119), its SWA / LAWA / random baselines on the ring buffer, and the SWA / EMA / LAWA callbacks."""

import time

import keras
import numpy as np
import pytest

from keras_wtrain._core.batchnorm import update_batchnorm_statistics
from keras_wtrain.averaging import EMA
from keras_wtrain.averaging import LAWA
from keras_wtrain.averaging import SWA
from keras_wtrain.averaging import SeWA
from keras_wtrain.comparison.models import build_model


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _flat(model):
    """Float weights in the callback's order (trainable, then non-trainable), flattened."""
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    return np.concatenate(
        [np.asarray(keras.ops.convert_to_numpy(v), np.float32).ravel() for v in variables if "float" in str(v.dtype)]
    )


class _Recorder(keras.callbacks.Callback):
    """Independent copy of the weights after every step (global step -> flat weights)."""

    def __init__(self):
        super().__init__()
        self.weights = {}
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.weights[self.step] = _flat(self.model)


def _small_model(with_bn=False, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,)), keras.layers.Dense(16, activation="relu")]
    if with_bn:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(10))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-2), _loss())
    return model


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"k": 5, "num_checkpoints": 4}, "`k`"),
        ({"k": 1, "num_checkpoints": 0}, "`num_checkpoints`"),
        ({"k": 0, "num_checkpoints": 4}, "`k`"),
        ({"temperature": 0.0}, "`temperature`"),
        ({"temperature": -1.0}, "`temperature`"),
        ({"every_n_steps": 0}, "`every_n_steps`"),
        ({"num_samples": 0}, "`num_samples`"),
        ({"batchnorm_batch_size": 0}, "`batchnorm_batch_size`"),
    ],
)
def test_bad_arguments_raise(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        SeWA(**kwargs)


@pytest.mark.parametrize("kwargs", [{"strategy": "swa"}, {"ema_decay": 0.9}, {"evaluate_every_epoch": True}])
def test_removed_arguments_are_refused(kwargs):
    # SelectiveWeightAveraging's `strategy`, `ema_decay` and `evaluate_every_epoch` are gone (no alias):
    # the averages are the SWA, EMA and LAWA callbacks, validation with the average is `swap_for_validation`.
    with pytest.raises(TypeError):
        SeWA(**kwargs)


def test_sewa_keeps_no_ema():
    cb = SeWA(k=2, num_checkpoints=3)
    assert cb.ema_decay is None
    with pytest.raises(ValueError, match="EMA callback"):
        cb.average_weights("ema")


def test_sewa_without_data_raises_at_fit(digits):
    model = _small_model()
    with pytest.raises(ValueError, match="selection_data"):
        model.fit(
            digits.x_train[:64].reshape(64, -1),
            digits.y_train[:64],
            epochs=1,
            verbose=0,
            callbacks=[SeWA(k=2, num_checkpoints=3)],
        )


def test_buffer_swa_lawa_random_match_numpy(digits):
    x, y = digits.x_train[:320].reshape(320, -1), digits.y_train[:320]
    model = _small_model()
    recorder = _Recorder()
    cb = SeWA(k=3, num_checkpoints=5, start=3, every_n_steps=2, selection_data=(x, y), install=False)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False, callbacks=[recorder, cb])  # 20 steps
    due = list(range(3, 21, 2))  # 3, 5, ..., 19
    kept = due[-5:]
    np.testing.assert_array_equal(cb.checkpoint_steps, kept)
    expected = np.stack([recorder.weights[s] for s in kept])
    np.testing.assert_array_equal(cb.checkpoints(), expected)

    swa, info = cb.average_weights("swa")
    np.testing.assert_allclose(swa, expected.mean(0), rtol=1e-5, atol=1e-6)
    assert info["steps"] == kept
    lawa, info = cb.average_weights("lawa")
    np.testing.assert_allclose(lawa, expected[-3:].mean(0), rtol=1e-5, atol=1e-6)
    assert info["indices"] == [2, 3, 4]
    explicit, info = cb.average_weights(indices=[0, 4])
    np.testing.assert_allclose(explicit, expected[[0, 4]].mean(0), rtol=1e-5, atol=1e-6)
    assert info["steps"] == [kept[0], kept[4]]
    rand, info = cb.average_weights("random")
    assert len(set(info["indices"])) == 3
    np.testing.assert_allclose(rand, expected[info["indices"]].mean(0), rtol=1e-5, atol=1e-6)
    # Nothing installed with install=False; installing writes exactly the average.
    assert not cb.installed and cb.raw_weights() is None
    np.testing.assert_array_equal(_flat(model), recorder.weights[20])
    cb.install_weights(swa)
    np.testing.assert_allclose(_flat(model), expected.mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make, steps",
    [
        (lambda: SWA(every=3), [3, 6, 9, 12, 15]),  # the running mean of every 3rd step
        (lambda: LAWA(k=4, every=3), [6, 9, 12, 15]),  # the 4 latest of them
        (lambda: EMA(decay=0.5, every=3, start="9steps"), [9, 12, 15]),  # 0.25 w9 + 0.25 w12 + 0.5 w15
    ],
    ids=["swa", "lawa", "ema"],
)
def test_average_installed_at_train_end_and_in_keras_file(make, steps, digits, tmp_path):
    x, y = digits.x_train[:256].reshape(256, -1), digits.y_train[:256]
    model = _small_model()
    recorder = _Recorder()
    cb = make()
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[recorder, cb])  # 16 steps
    weights = np.stack([recorder.weights[s] for s in steps]).astype(np.float64)
    coefficients = [0.25, 0.25, 0.5] if isinstance(cb, EMA) else [1 / len(steps)] * len(steps)
    expected = np.tensordot(coefficients, weights, axes=1)
    if isinstance(cb, LAWA):
        np.testing.assert_array_equal(cb.checkpoint_steps, steps)
    else:
        assert cb.num_averaged == len(steps)
    assert cb.installed
    np.testing.assert_allclose(_flat(model), expected, rtol=1e-5, atol=1e-6)
    path = tmp_path / "averaged.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_flat(loaded), expected, rtol=1e-5, atol=1e-6)
    cb.restore_raw_weights()  # the last trained weights come back
    assert not cb.installed
    np.testing.assert_array_equal(_flat(model), recorder.weights[16])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda data: SWA(every=2), id="swa"),
        pytest.param(lambda data: EMA(decay=0.9), id="ema"),
        pytest.param(lambda data: LAWA(k=2, every=2), id="lawa"),
        pytest.param(
            lambda data: SeWA(k=2, num_checkpoints=3, selection_data=data, selection_steps=2, seed=0),
            id="sewa",
        ),
    ],
)
def test_raw_weights_are_the_last_trained_float_weights(make, digits):
    # `WeightAveraging.raw_weights()`: "the raw (not averaged) float weights while the average is installed, else
    # None (a list of arrays)", in the order of the averaged variables (trainable, then non-trainable).
    x, y = digits.x_train[:128].reshape(128, -1), digits.y_train[:128]
    model, recorder, cb = _small_model(with_bn=True), _Recorder(), make((x, y))
    assert cb.raw_weights() is None
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[recorder, cb])  # 8 steps
    assert cb.installed
    raw = cb.raw_weights()
    assert isinstance(raw, list) and all(isinstance(w, np.ndarray) for w in raw)
    np.testing.assert_array_equal(np.concatenate([w.ravel() for w in raw]), recorder.weights[8])
    cb.restore_raw_weights()
    assert cb.raw_weights() is None


def test_get_config_round_trip():
    cb = SeWA(
        k=3,
        num_checkpoints=7,
        start=5,
        every_n_steps=2,
        swap_for_validation=True,
        install=False,
        batchnorm_batch_size=64,
        temperature=0.3,
        num_samples=3,
        selection_steps=9,
        seed=1,
        loss="mse",
    )
    config = cb.get_config()
    assert "strategy" not in config and "ema_decay" not in config
    assert (config["swap_for_validation"], config["install"], config["batchnorm_batch_size"]) == (True, False, 64)
    clone = SeWA.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    assert isinstance(restored, SeWA) and restored.get_config() == config


@pytest.fixture(scope="module")
def mnist_trajectory(mnist5k):
    """One real MNIST-5k training run (1,000 examples, CNN), 10 checkpoints kept over the last epochs."""
    x, y = mnist5k.x_train[:1000], mnist5k.y_train[:1000]
    keras.utils.set_random_seed(0)
    model = build_model("cnn", x.shape[1:], mnist5k.num_classes)
    model.compile(keras.optimizers.Adam(1e-3), _loss())
    times = []

    class _EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    cb = SeWA(k=5, num_checkpoints=10, start=48, every_n_steps=4, selection_data=(x, y), install=False, seed=0)
    model.fit(x, y, batch_size=64, epochs=6, verbose=0, callbacks=[_EpochTimer(), cb])
    return cb, float(np.median(times[1:]))


def test_sewa_objective_not_worse_than_lawa_and_random_subsets(mnist_trajectory):
    cb, epoch_s = mnist_trajectory
    assert cb.num_stored == 10
    cb.average_weights("sewa")  # warm-up (tracing)
    start = time.perf_counter()
    flat, info = cb.average_weights("sewa")
    selection_s = time.perf_counter() - start
    chosen = info["indices"]
    assert len(chosen) == 5 and info["probabilities"].shape == (10,)
    assert np.all((info["probabilities"] > 0) & (info["probabilities"] < 1))
    assert info["probabilities"].sum() == pytest.approx(5, abs=1e-6)
    sewa = cb.objective(chosen)
    lawa = cb.objective(range(5, 10))
    rng = np.random.default_rng(0)
    randoms = [cb.objective(np.sort(rng.choice(10, 5, replace=False))) for _ in range(8)]
    assert sewa <= lawa * (1 + 1e-6)
    assert sewa <= min(randoms) * (1 + 1e-6), (sewa, randoms)
    # The SWA/SeWA average is a convex combination: the installed average equals the numpy mean.
    np.testing.assert_allclose(flat, cb.checkpoints()[chosen].mean(0), rtol=1e-5, atol=1e-6)
    # The selection's cost is a benchmark (benchmarks/weight_averaging.py), not a timed test.
    print(f"selection {selection_s:.2f}s, one epoch {epoch_s:.2f}s, ratio {selection_s / epoch_s:.2f}")


def test_batchnorm_statistics_recomputed_on_training_data(digits):
    # SeWA's `batchnorm_data` defaults to the inputs of `selection_data` when the model has batch normalization.
    x, y = digits.x_train[:256].reshape(256, -1), digits.y_train[:256]
    model = _small_model(with_bn=True)
    cb = SeWA(k=2, num_checkpoints=3, every_n_steps=4, selection_data=(x, y), batchnorm_batch_size=32, seed=0)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    assert cb.updated_batchnorm_layers == 1
    dense, bn = model.layers[0], model.layers[1]
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (dense.kernel, dense.bias))
    h = np.maximum(x @ kernel + bias, 0.0).reshape(-1, 32, 16)  # batches of 32 (the callback's BN batch size)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), h.mean(1).mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), h.var(1).mean(0), rtol=1e-3, atol=1e-5)
    assert bn.momentum == 0.99  # restored


def test_update_batchnorm_statistics_without_bn_is_noop():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert update_batchnorm_statistics(model, np.zeros((8, 3), "float32")) == 0


def test_swap_for_validation_validates_the_average_and_restores_training_weights(digits):
    x, y = digits.x_train[:256].reshape(256, -1), digits.y_train[:256]
    xv, yv = digits.x_val[:128].reshape(128, -1), digits.y_val[:128]
    model = _small_model(with_bn=True)
    before, after, averages = [], [], []
    cb = SeWA(k=2, num_checkpoints=4, every_n_steps=2, selection_data=(x, y), swap_for_validation=True, install=False)

    class _Snap(keras.callbacks.Callback):
        def __init__(self, store):
            super().__init__()
            self.store = store

        def on_epoch_end(self, epoch, logs=None):
            self.store.append(_flat(self.model))
            if self.store is after:  # the average this epoch was validated with (its selection, this buffer)
                averages.append(cb.average_weights(indices=cb.selected_indices)[0])

    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=3,
        validation_data=(xv, yv),
        verbose=0,
        callbacks=[_Snap(before), cb, _Snap(after)],
    )
    for b, a in zip(before, after, strict=True):  # the raw training weights are back after each validation
        np.testing.assert_array_equal(a, b)
    assert not cb.installed and len(averages) == 3
    val_loss = history.history["val_loss"]
    for epoch, average in enumerate(averages):
        cb.install_weights(average)
        assert model.evaluate(xv, yv, verbose=0) == pytest.approx(val_loss[epoch], rel=1e-5)
        cb.install_weights(before[epoch])
        assert model.evaluate(xv, yv, verbose=0) != pytest.approx(val_loss[epoch], rel=1e-5)


def test_backup_and_restore_resume_restores_buffer(digits, tmp_path):
    x, y = digits.x_train[:256].reshape(256, -1), digits.y_train[:256]  # 8 steps per epoch

    class _Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 20:  # mid epoch 3 (after the epoch-2 backup at step 16)
                raise RuntimeError("interrupted")

    def make_cb():
        return SeWA(
            k=2,
            num_checkpoints=6,
            every_n_steps=3,
            selection_data=(x, y),
            checkpoint_dir=str(tmp_path / "sewa"),
            install=False,
        )

    backup = str(tmp_path / "backup")
    model = _small_model()
    first = make_cb()
    with pytest.raises(RuntimeError):
        model.fit(
            x,
            y,
            batch_size=32,
            epochs=4,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup), first, _Crash()],
        )
    np.testing.assert_array_equal(first.checkpoint_steps, [3, 6, 9, 12, 15, 18])
    kept_before = {s: row for s, row in zip(first.checkpoint_steps, first.checkpoints())}

    # "New process": fresh model and callback objects, same directories.
    model = _small_model(seed=1)
    second = make_cb()
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup), second])
    assert int(model.optimizer.iterations.numpy()) == 32
    # The checkpoint of step 18 belonged to the rolled-back segment (backup at step 16): it was dropped
    # and step 18 was taken again on the resumed trajectory; 15 (before the backup) came back from disk.
    np.testing.assert_array_equal(second.checkpoint_steps, [15, 18, 21, 24, 27, 30])
    np.testing.assert_array_equal(second.checkpoints()[0], kept_before[15])
    assert second.num_stored == 6


def test_jit_compile_and_mixed_precision(mnist5k):
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = mnist5k.x_train[:256], mnist5k.y_train[:256]
    model = build_model("cnn", x.shape[1:], mnist5k.num_classes)
    model.compile(keras.optimizers.Adam(1e-3), _loss(), jit_compile=True)
    cb = SeWA(k=2, num_checkpoints=4, every_n_steps=2, selection_data=(x, y), seed=0, selection_steps=4)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[cb])
    assert model.layers[1].kernel.dtype == "float32"
    assert np.isfinite(cb.average_loss) and len(cb.selected_steps) == 2
    expected = cb.checkpoints()[cb.selected_indices].mean(0)
    np.testing.assert_allclose(_flat(model), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.tensorflow_only
def test_mirrored_strategy_with_batchnorm(two_cpu_strategy, digits):
    x, y = digits.x_train[:256].reshape(256, -1), digits.y_train[:256]
    with two_cpu_strategy.scope():
        model = _small_model(with_bn=True)
    cb = SeWA(k=2, num_checkpoints=4, every_n_steps=2, selection_data=(x, y), seed=0, selection_steps=4)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    assert np.isfinite(cb.average_loss)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    expected = cb.checkpoints()[cb.selected_indices].mean(0)
    np.testing.assert_allclose(_flat(model)[:trainable], expected[:trainable], rtol=1e-5, atol=1e-6)
    # BN statistics were recomputed (differ from the averaged ones).
    assert not np.allclose(_flat(model)[trainable:], expected[trainable:])


# --------------------------------------------------------------------------------------------------
# The step count, models built in their first step, dict inputs, rule functions, TF retracing


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")  # the default name from "_Subclassed" is not a valid TF scope
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(10)

    def call(self, x):
        return self.out(self.hidden(x))


def _model_of_kind(kind):
    keras.utils.set_random_seed(0)
    if kind == "sequential_without_input":  # on TensorFlow its variables appear in the first training step
        model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(10)])
    elif kind == "functional":
        inputs = keras.Input((64,))
        model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Dense(8, activation="relu")(inputs)))
    else:
        model = _Subclassed()
    model.compile(keras.optimizers.Adam(1e-2), _loss())
    return model


@pytest.mark.parametrize("kind", ["sequential_without_input", "functional", "subclassed"])
def test_ema_matches_numpy_on_models_built_in_training(kind, digits):
    x, y = digits.x_train[:192].reshape(192, -1), digits.y_train[:192]
    model, recorder = _model_of_kind(kind), _Recorder()
    cb = EMA(decay=0.7, start="2steps")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False, callbacks=[recorder, cb])  # 12 steps
    assert cb.num_averaged == 11  # steps 2..12
    assert sum(w.size for w in cb.averaged_weights()) == 64 * 8 + 8 + 8 * 10 + 10
    ema = recorder.weights[2].astype(np.float64)
    for step in range(3, 13):
        ema = 0.7 * ema + 0.3 * recorder.weights[step]
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in cb.averaged_weights()]), ema, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_flat(model), ema, rtol=1e-5, atol=1e-6)  # installed at train end
    np.testing.assert_array_equal(np.concatenate([w.ravel() for w in cb.raw_weights()]), recorder.weights[12])


@pytest.mark.parametrize("kind", ["sequential_without_input", "functional", "subclassed"])
def test_ema_equals_keras_optimizer_ema(kind, digits):
    # Keras' own EMA (`use_ema=True`) on the same run: e_1 = w_1, e_n = β e_(n-1) + (1 - β) w_n every step.
    x, y = digits.x_train[:192].reshape(192, -1), digits.y_train[:192]
    model = _model_of_kind(kind)
    model.compile(keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.7), _loss())
    cb = EMA(decay=0.7, install=False)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False, callbacks=[cb])
    keras_ema = np.concatenate(
        [
            np.asarray(keras.ops.convert_to_numpy(average), np.float32).ravel()
            for average in model.optimizer._model_variables_moving_average  # Keras exposes no public getter
        ]
    )
    ours = np.concatenate([w.ravel() for w in cb.averaged_weights()])
    assert cb.num_averaged == 12 and ours.size == keras_ema.size == 64 * 8 + 8 + 8 * 10 + 10
    np.testing.assert_allclose(ours, keras_ema, rtol=1e-5, atol=1e-6)


def test_steps_come_from_the_optimizer_across_fits_and_steps_per_execution(digits):
    x, y = digits.x_train[:256].reshape(256, -1), digits.y_train[:256]
    model = _small_model()
    model.compile(keras.optimizers.Adam(1e-2), _loss(), steps_per_execution=3)
    batch_end_steps = []

    class _Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_end_steps.append(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    cb = SeWA(k=2, num_checkpoints=20, start=1, every_n_steps=4, selection_data=(x, y), install=False)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[_Steps(), cb])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[_Steps(), cb])  # steps 9..16, global
    assert batch_end_steps[-1] == 16
    due = [s for s in range(1, 17) if (s - 1) % 4 == 0]  # 1, 5, 9, 13
    previous = [0] + batch_end_steps[:-1]
    expected = [s for p, s in zip(previous, batch_end_steps) if any(p < d <= s for d in due)]
    np.testing.assert_array_equal(cb.checkpoint_steps, expected)


def test_dict_inputs_and_a_rule_function(digits):
    x, y = digits.x_train[:128].reshape(128, -1), digits.y_train[:128]
    inputs = {"left": keras.Input((32,), name="left"), "right": keras.Input((32,), name="right")}
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([inputs["left"], inputs["right"]]))
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    model.compile(keras.optimizers.Adam(1e-2), _loss())
    data = ({"left": x[:, :32], "right": x[:, 32:]}, y)

    def oldest_two(checkpoints, context):
        return checkpoints[:2].mean(0), [0, 1]

    cb = SeWA(k=2, num_checkpoints=4, selection_data=data, seed=0)
    model.fit(*data, batch_size=32, epochs=2, verbose=0, callbacks=[cb])  # 8 steps
    np.testing.assert_array_equal(cb.checkpoint_steps, [5, 6, 7, 8])
    assert len(cb.selected_steps) == 2
    np.testing.assert_allclose(_flat(model), cb.checkpoints()[cb.selected_indices].mean(0), rtol=1e-5, atol=1e-6)
    assert cb.average_loss == pytest.approx(model.evaluate(*data, verbose=0), rel=1e-5)
    # A rule function averages the buffer too (nothing installed).
    flat, info = cb.average_weights(oldest_two)
    assert info["steps"] == [5, 6]
    np.testing.assert_allclose(flat, cb.checkpoints()[:2].mean(0), rtol=1e-6)
    # SeWA's gradient path reads minibatches of the dict inputs too.
    cb.selection_steps = 3
    indices, s = cb.select()
    assert len(indices) == 2 and s.sum() == pytest.approx(2, abs=1e-6)


@pytest.mark.tensorflow_only
def test_many_callbacks_on_new_models_log_no_tf_retracing_warning(digits):
    # A compare() run makes one callback per (technique, seed), each on a new model; SeWA's selection
    # objective used to build a tf.function per callback, and TF warned about frequent retracing.
    import logging
    import warnings

    x, y = digits.x_train[:64].reshape(64, -1), digits.y_train[:64]
    messages = []

    class _Capture(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler, logger = _Capture(logging.WARNING), logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i, name in enumerate(["swa", "ema", "lawa", "sewa", "swa", "ema", "sewa", "lawa"]):
                model = _small_model(seed=i)
                cb = {
                    "swa": lambda: SWA(every=2),
                    "ema": lambda: EMA(decay=0.9),
                    "lawa": lambda: LAWA(k=2, every=2),
                    "sewa": lambda: SeWA(
                        k=2, num_checkpoints=2, selection_data=(x, y), selection_steps=2, num_samples=1
                    ),
                }[name]()
                # 8 steps per model, so Keras' own train function (also one code object for all models)
                # is called often enough between its traces not to warn either.
                model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
                assert cb.installed
                if name == "sewa":
                    assert np.isfinite(cb.average_loss)
    finally:
        logger.removeHandler(handler)
    retracing = [m for m in messages + [str(w.message) for w in caught] if "retracing" in m]
    assert not retracing, retracing[0]
