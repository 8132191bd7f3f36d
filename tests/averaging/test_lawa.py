"""LAWA (the mean of the latest `k` checkpoints) against numpy by hand."""

import keras
import numpy as np
import pytest

from keras_wtrain._core.batchnorm import update_batchnorm_statistics
from keras_wtrain.averaging import LAWA

STEPS_PER_EPOCH = 4  # 32 examples, batch size 8


def _float_variables(model):
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    return [v for v in variables if "float" in str(v.dtype)]


def _flat(model):
    """Float weights, trainable then non-trainable, flattened (independent of the library)."""
    arrays = [np.asarray(keras.ops.convert_to_numpy(v), np.float64).ravel() for v in _float_variables(model)]
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _set_flat(model, flat):
    offset = 0
    for v in _float_variables(model):
        size = int(np.prod(tuple(v.shape)))
        v.assign(np.asarray(flat[offset : offset + size], np.float32).reshape(tuple(v.shape)))
        offset += size
    assert offset == flat.size


def _concat(arrays):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def _raw(lawa):
    """`raw_weights()` flattened. It is documented (base class, and SWA/EMA do so) as a list of the float weights;
    LAWA returns `(trainable_values, non_trainable_values)` instead (see `test_raw_weights_is_a_list_of_arrays`)."""
    raw = lawa.raw_weights()
    if isinstance(raw, tuple) and len(raw) == 2 and isinstance(raw[0], list):
        raw = [a for a in raw[0] + raw[1] if "float" in str(np.asarray(a).dtype)]
    return _concat(raw)


class _Snapshots(keras.callbacks.Callback):
    """Own copies of the weights: after every step (global step -> flat) and at every epoch end (epoch -> flat)."""

    def __init__(self):
        super().__init__()
        self.steps, self.epochs = {}, {}

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        self.steps[self._step()] = _flat(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = (self._step(), _flat(self.model))


def _data(seed=0, n=32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1)) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def _model(seed=0, bn=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((4,)), keras.layers.Dense(3)]
    if bn:
        layers.append(keras.layers.BatchNormalization())
    layers += [keras.layers.Activation("relu"), keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def _fit(model, callbacks, epochs=5, **kwargs):
    x, y = _data()
    return model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks, **kwargs)


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- 4. LAWA vs numpy
@pytest.mark.parametrize(
    "kwargs, steps",
    [
        ({"k": 3}, [12, 16, 20]),  # the ends of epochs 2, 3, 4
        ({"k": 1}, [20]),
        ({"k": 10}, [4, 8, 12, 16, 20]),  # fewer epochs than k: all of them
        ({"k": 3, "start": 3}, [16, 20]),
        ({"k": 2, "start": "10steps"}, [16, 20]),  # epoch ends at step >= 10: 12, 16, 20
        ({"k": 2, "every": 3}, [15, 18]),  # steps 3, 6, ..., 18
        ({"k": 3, "every": 2, "start": "5steps"}, [15, 17, 19]),  # 5, 7, ..., 19 (checkpoint_due from `start`)
        ({"k": 3, "every": 2, "start": 4}, [18, 20]),  # epoch 4 = steps 17..20
    ],
)
def test_lawa_is_numpy_mean_of_last_k(kwargs, steps):
    model = _model()
    snaps = _Snapshots()
    lawa = LAWA(**kwargs)
    _fit(model, [snaps, lawa])
    assert lawa.checkpoint_steps.tolist() == steps
    if kwargs.get("every", "epoch") == "epoch":
        assert all(s in [snaps.epochs[e][0] for e in range(5)] for s in steps)
    np.testing.assert_array_equal(lawa.checkpoints(), np.stack([snaps.steps[s] for s in steps]).astype(np.float32))
    expected = np.mean([snaps.steps[s] for s in steps], axis=0)
    assert lawa.installed
    _close(_flat(model), expected)
    _close(lawa.average(), expected)
    last = snaps.steps[20]
    _close(_raw(lawa), last)
    lawa.restore_raw_weights()
    assert not lawa.installed and lawa.raw_weights() is None
    np.testing.assert_array_equal(_flat(model), last.astype(np.float32))


def test_raw_weights_is_a_list_of_arrays():
    model = _model()
    lawa = LAWA(k=2)
    _fit(model, [lawa], epochs=2)
    raw = lawa.raw_weights()
    assert isinstance(raw, list) and len(raw) == len(_float_variables(model))
    assert all(tuple(a.shape) == tuple(v.shape) for a, v in zip(raw, _float_variables(model)))


def test_lawa_with_checkpoint_dir_is_the_same(tmp_path):
    model = _model()
    snaps = _Snapshots()
    lawa = LAWA(k=2, checkpoint_dir=str(tmp_path))
    _fit(model, [snaps, lawa], epochs=3)
    _close(_flat(model), np.mean([snaps.epochs[e][1] for e in (1, 2)], 0))


def test_lawa_second_fit_continues_from_raw_weights():
    model = _model()
    snaps = _Snapshots()
    lawa = LAWA(k=2)
    _fit(model, [snaps, lawa], epochs=2)
    last = snaps.steps[8]
    assert not np.allclose(_flat(model), last)
    reference = _model()
    _set_flat(reference, last)
    _fit(reference, [], epochs=1)
    _fit(model, [lawa], epochs=1)
    _close(_raw(lawa), _flat(reference))


# ---------------------------------------------------------------------------------------------- 5. swap_for_validation


@pytest.mark.parametrize("every", ["epoch", 2], ids=["epoch", "2"])
def test_swap_for_validation_val_loss_is_the_averaged_models(every):
    xv, yv = _data(seed=1, n=16)
    model = _model()
    snaps = _Snapshots()
    lawa = LAWA(k=2, every=every, swap_for_validation=True)
    history = _fit(model, [snaps, lawa], epochs=3, validation_data=(xv, yv))
    expected = []
    for epoch in range(3):
        end = (epoch + 1) * STEPS_PER_EPOCH
        kept = [
            s for s in (range(STEPS_PER_EPOCH, end + 1, STEPS_PER_EPOCH) if every == "epoch" else range(2, end + 1, 2))
        ]
        flat = np.mean([snaps.steps[s] for s in kept[-2:]], 0)
        clone = keras.models.clone_model(model)
        clone.compile(keras.optimizers.SGD(0.05), "mse")
        _set_flat(clone, flat)
        expected.append(clone.evaluate(xv, yv, batch_size=8, verbose=0))
    np.testing.assert_allclose(history.history["val_loss"], expected, rtol=1e-5)
    plain_model = _model()
    plain = LAWA(k=2, every=every)
    _fit(plain_model, [plain], epochs=3, validation_data=(xv, yv))
    np.testing.assert_array_equal(_raw(lawa), _raw(plain))
    np.testing.assert_array_equal(_flat(model), _flat(plain_model))


# ---------------------------------------------------------------------------------------------- 6. batch norm
def test_batchnorm_statistics_recomputed_for_the_average():
    xb = _data(seed=2, n=24)[0]
    model = _model(bn=True)
    snaps = _Snapshots()
    lawa = LAWA(k=2, batchnorm_data=xb, batchnorm_batch_size=64)
    _fit(model, [snaps, lawa], epochs=3)
    average = np.mean([snaps.epochs[e][1] for e in (1, 2)], 0)
    reference = keras.models.clone_model(model)
    _set_flat(reference, average)
    bn, ref_bn = model.layers[1], reference.layers[1]
    mean, var = (np.asarray(keras.ops.convert_to_numpy(v)) for v in (bn.moving_mean, bn.moving_variance))
    assert not np.allclose(mean, keras.ops.convert_to_numpy(ref_bn.moving_mean), atol=1e-4)  # re-estimated
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in reference.layers[0].weights)
    pre = xb.astype(np.float64) @ kernel + bias  # one batch of 24: its mean and biased variance
    np.testing.assert_allclose(mean, pre.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, pre.var(0), rtol=1e-4, atol=1e-5)
    update_batchnorm_statistics(reference, xb, batch_size=64)
    np.testing.assert_allclose(_flat(model), _flat(reference), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- 7. user models
class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(3, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.hidden(x))


def _user_model(kind):
    keras.utils.set_random_seed(0)
    if kind == "functional":
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(3, activation="relu")(inputs)))
    elif kind == "sequential_no_input":
        model = keras.Sequential([keras.layers.Dense(3, activation="relu"), keras.layers.Dense(1)])
    elif kind == "subclassed":
        model = SubclassedNet()
    else:
        inner_in = keras.Input((3,))
        inner = keras.Model(inner_in, keras.layers.Dense(2, activation="relu")(inner_in), name="inner")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), inner, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


@pytest.mark.parametrize("kind", ["functional", "sequential_no_input", "subclassed", "nested"])
@pytest.mark.parametrize("every", ["epoch", 3])
def test_lawa_on_user_models(kind, every):
    model = _user_model(kind)
    snaps = _Snapshots()
    lawa = LAWA(k=2, every=every)
    _fit(model, [snaps, lawa], epochs=3)
    steps = [8, 12] if every == "epoch" else [9, 12]
    assert lawa.checkpoint_steps.tolist() == steps
    _close(_flat(model), np.mean([snaps.steps[s] for s in steps], 0))


# ---------------------------------------------------------------------------------------------- 9. config
@pytest.mark.parametrize(
    "make",
    [
        lambda d: LAWA(k=4, every=7, start="30steps", checkpoint_dir=d, swap_for_validation=True, install=False),
        lambda d: LAWA(k=2, start=3, batchnorm_batch_size=9),
    ],
)
def test_config_round_trip(make, tmp_path):
    cb = make(str(tmp_path))
    config = cb.get_config()
    assert LAWA.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    assert type(restored) is LAWA and restored.get_config() == config


# ---------------------------------------------------------------------------------------------- 10. bad input
@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"k": 0}, ValueError, "`k`"),
        ({"k": -2}, ValueError, "`k`"),
        ({"k": 2.0}, TypeError, "`k`"),
        ({"every": 0}, ValueError, "`every`"),
        ({"start": -1}, ValueError, "`start`"),
        ({"start": 1.5}, ValueError, "`start`"),
        ({"start": 0.5}, ValueError, "`start`"),  # LAWA takes no fraction
        ({"start": True}, TypeError, "`start`"),
    ],
)
def test_bad_arguments(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        LAWA(**kwargs)


def test_checkpoint_dir_naming_a_file(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="`checkpoint_dir`"):
        LAWA(checkpoint_dir=str(path))


@pytest.mark.parametrize(
    "start",
    [
        5,
        8,
        "21steps",
    ],
)
def test_start_past_the_end_raises_at_fit_start(start):
    model = _model()
    before = _flat(model)
    with pytest.raises(ValueError, match="`start`"):
        _fit(model, [LAWA(k=2, start=start)])  # 5 epochs, 20 steps
    np.testing.assert_array_equal(_flat(model), before)


def test_k_beyond_memory_without_checkpoint_dir_raises_at_fit_start():
    model = _model()
    lawa = LAWA(k=10**9)  # constructing is fine: nothing is allocated yet
    with pytest.raises(ValueError, match="`checkpoint_dir`"):
        _fit(model, [lawa], epochs=1)


# ---------------------------------------------------------------------------------------------- 11. JAX
@pytest.mark.jax
def test_jax_lawa_matches_numpy():
    assert keras.backend.backend() == "jax"
    model = _model()
    snaps = _Snapshots()
    lawa = LAWA(k=2)
    _fit(model, [snaps, lawa], epochs=3)
    assert lawa.checkpoint_steps.tolist() == [8, 12]
    _close(_flat(model), np.mean([snaps.steps[s] for s in (8, 12)], 0))
    _close(_raw(lawa), snaps.steps[12])
