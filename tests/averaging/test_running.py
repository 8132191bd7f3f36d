"""SWA and EMA (running averages) against numpy by hand, torch's `AveragedModel`, and recorded torch numbers.

Run `python tests/averaging/test_running.py` (torch installed) to rewrite `fixtures/averaged_model.json`.
"""

import json
import os

import keras
import numpy as np
import pytest

from keras_wtrain._core.batchnorm import update_batchnorm_statistics
from keras_wtrain.averaging import EMA
from keras_wtrain.averaging import SWA

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "averaged_model.json")
STEPS_PER_EPOCH = 4  # 32 examples, batch size 8


# ---------------------------------------------------------------------------------------------- helpers
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


class _Snapshots(keras.callbacks.Callback):
    """Own copies of the weights: after every step (global step -> flat) and at every epoch end (epoch -> flat)."""

    def __init__(self):
        super().__init__()
        self.steps, self.epochs, self.train_begin = {}, {}, []

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        if not self.train_begin:
            self.train_begin.append(_flat(self.model))  # after every on_train_begin

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


def _fit(model, callbacks, epochs=4, **kwargs):
    x, y = _data()
    return model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks, **kwargs)


def _ema(snapshots, decays):
    """numpy EMA: the first update copies; `decays[i]` is the decay of update i (i >= 1)."""
    ema = np.asarray(snapshots[0], np.float64)
    for w, d in zip(snapshots[1:], decays[1:]):
        ema = d * ema + (1 - d) * np.asarray(w, np.float64)
    return ema


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- 1. SWA vs numpy
TOTAL = 4 * STEPS_PER_EPOCH


@pytest.mark.parametrize(
    "kwargs, steps",
    [
        ({"start": 0}, [4, 8, 12, 16]),
        ({"start": 2}, [12, 16]),  # epochs 2 and 3
        ({"start": 0.5}, [s for s in (4, 8, 12, 16) if s >= round(0.5 * TOTAL)]),  # epoch ends from step 8
        ({"start": "6steps"}, [8, 12, 16]),
        ({"every": 3}, [3, 6, 9, 12, 15]),
        ({"every": 2, "start": "5steps"}, [6, 8, 10, 12, 14, 16]),
        ({"every": 2, "start": 3}, [14, 16]),  # epoch 3 = steps 13..16
    ],
)
def test_swa_is_numpy_mean_of_recorded_weights(kwargs, steps):
    model = _model()
    snaps = _Snapshots()
    swa = SWA(**kwargs)
    _fit(model, [snaps, swa])
    expected = np.mean([snaps.steps[s] for s in steps], axis=0)
    if kwargs.get("every", "epoch") == "epoch":  # the epoch ends are those steps
        assert [snaps.epochs[e][0] for e in range(4) if snaps.epochs[e][0] in steps] == steps
    assert swa.num_averaged == len(steps)
    _close(_flat(model), expected)  # installed
    assert swa.installed
    last = snaps.steps[TOTAL]
    _close(_concat(swa.raw_weights()), last)
    _close(_concat(swa.averaged_weights()), expected)
    swa.restore_raw_weights()
    assert not swa.installed and swa.raw_weights() is None
    np.testing.assert_array_equal(_flat(model), last.astype(np.float32))


def test_second_fit_continues_from_raw_weights():
    model = _model()
    snaps = _Snapshots()
    swa = SWA()
    _fit(model, [snaps, swa], epochs=3)
    last = snaps.steps[3 * STEPS_PER_EPOCH]
    assert not np.allclose(_flat(model), last)  # the average is installed, and differs
    second = _Snapshots()
    _fit(model, [second, swa], epochs=1)
    np.testing.assert_array_equal(second.train_begin[0], last)  # training resumed from the raw weights
    # Reference: the raw weights trained one more epoch without any averaging.
    reference = _model()
    _set_flat(reference, last)
    _fit(reference, [], epochs=1)
    _close(_concat(swa.raw_weights()), _flat(reference))


# ---------------------------------------------------------------------------------------------- 2. EMA vs numpy
@pytest.mark.parametrize("every", [1, 3])
def test_ema_every_step_matches_numpy(every):
    model = _model()
    snaps = _Snapshots()
    ema = EMA(decay=0.8, every=every)
    _fit(model, [snaps, ema], epochs=2)
    steps = [s for s in range(1, 9) if s % every == 0]
    assert ema.num_averaged == len(steps)
    expected = _ema([snaps.steps[s] for s in steps], [0.8] * len(steps))
    _close(_flat(model), expected)
    _close(_concat(ema.raw_weights()), snaps.steps[8])
    assert ema.current_decay() == 0.8


def test_ema_start_epoch():
    model = _model()
    snaps = _Snapshots()
    ema = EMA(decay=0.7, start=1)
    _fit(model, [snaps, ema], epochs=2)
    steps = [5, 6, 7, 8]
    assert ema.num_averaged == 4
    _close(_flat(model), _ema([snaps.steps[s] for s in steps], [0.7] * 4))


class _DecayLog(keras.callbacks.Callback):
    """`current_decay()` of an EMA callback after each batch (listed after it)."""

    def __init__(self, ema):
        super().__init__()
        self.ema, self.log = ema, []

    def on_train_batch_end(self, batch, logs=None):
        self.log.append((self.ema.num_averaged, self.ema.current_decay()))


def test_ema_warmup_matches_numpy():
    d, gamma, power = 0.9, 1.5, 1.5
    model = _model()
    snaps = _Snapshots()
    ema = EMA(decay=d, warmup=True, warmup_gamma=gamma, warmup_power=power)
    log = _DecayLog(ema)
    _fit(model, [snaps, ema, log], epochs=3)
    n = 3 * STEPS_PER_EPOCH

    def warm(t):
        return min(d, 1 - (1 + t / gamma) ** -power)

    decays = [warm(t) for t in range(n)]
    assert decays[0] == 0.0 and decays[1] < d and decays[-1] == d  # warmup actually ramps and saturates
    for num, value in log.log:
        assert value == pytest.approx(warm(num), rel=1e-12)
    assert ema.current_decay() == pytest.approx(warm(n), rel=1e-12)
    expected = _ema([snaps.steps[s] for s in range(1, n + 1)], decays)
    _close(_flat(model), expected)
    # Without warmup the result differs (the test can tell the two apart).
    assert not np.allclose(expected, _ema([snaps.steps[s] for s in range(1, n + 1)], [d] * n), atol=1e-5)


# ---------------------------------------------------------------------------------------------- 3. torch
def _torch_averages(snapshots, ema_decay):
    """torch's AveragedModel (SWA) and AveragedModel(get_ema_multi_avg_fn) over flat snapshots."""
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import AveragedModel
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    torch.set_default_dtype(torch.float32)
    net = torch.nn.Linear(1, 1)
    net.weight = torch.nn.Parameter(torch.zeros(len(snapshots[0]), dtype=torch.float32))
    net.bias = None
    swa_model = AveragedModel(net)
    ema_model = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
    for snapshot in snapshots:
        with torch.no_grad():
            net.weight.copy_(torch.as_tensor(np.asarray(snapshot, np.float32)))
        swa_model.update_parameters(net)
        ema_model.update_parameters(net)
    return (
        swa_model.module.weight.detach().numpy().astype(np.float64),
        ema_model.module.weight.detach().numpy().astype(np.float64),
    )


def _ours(snapshots, ema_decay):
    """Our SWA and EMA fed the same flat snapshots through a Dense model's variables (`update()` per snapshot)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert _flat(model).size == len(snapshots[0])
    swa, ema = SWA(), EMA(decay=ema_decay)
    swa.set_model(model)
    ema.set_model(model)
    for snapshot in snapshots:
        _set_flat(model, np.asarray(snapshot))
        swa.update()
        ema.update()
    return _concat(swa.averaged_weights()), _concat(ema.averaged_weights())


def test_against_torch_averaged_model_on_keras_trajectory():
    pytest.importorskip("torch")
    model = _model()
    snaps = _Snapshots()
    swa, ema = SWA(every=1, install=False), EMA(decay=0.75, install=False)
    _fit(model, [snaps, swa, ema], epochs=2)
    trajectory = [snaps.steps[s] for s in range(1, 9)]
    torch_swa, torch_ema = _torch_averages(trajectory, 0.75)
    np.testing.assert_allclose(_concat(swa.averaged_weights()), torch_swa, atol=1e-6)
    np.testing.assert_allclose(_concat(ema.averaged_weights()), torch_ema, atol=1e-6)
    assert not np.allclose(torch_swa, torch_ema, atol=1e-4)


def _fixture_snapshots():
    rng = np.random.default_rng(7)
    return [np.round(rng.normal(size=8), 4) for _ in range(6)]


def test_against_torch_averaged_model_on_fixed_snapshots():
    pytest.importorskip("torch")
    snapshots = _fixture_snapshots()
    ours = _ours(snapshots, 0.7)
    theirs = _torch_averages(snapshots, 0.7)
    np.testing.assert_allclose(ours[0], theirs[0], atol=1e-6)
    np.testing.assert_allclose(ours[1], theirs[1], atol=1e-6)


def test_against_recorded_torch_numbers():
    """Runs without torch: torch's numbers recorded in fixtures/averaged_model.json (see `write_fixture`)."""
    with open(FIXTURE) as handle:
        recorded = json.load(handle)
    snapshots = [np.asarray(s, np.float64) for s in recorded["snapshots"]]
    np.testing.assert_array_equal(np.stack(snapshots), np.stack(_fixture_snapshots()))
    swa, ema = _ours(snapshots, recorded["ema_decay"])
    np.testing.assert_allclose(swa, recorded["swa"], atol=1e-6)
    np.testing.assert_allclose(ema, recorded["ema"], atol=1e-6)
    np.testing.assert_allclose(recorded["swa"], np.mean(snapshots, 0), atol=1e-6)  # the file is sane too


def write_fixture():
    import torch

    snapshots = _fixture_snapshots()
    swa, ema = _torch_averages(snapshots, 0.7)
    payload = {
        "torch_version": torch.__version__,
        "description": "torch.optim.swa_utils.AveragedModel (SWA) and AveragedModel(multi_avg_fn="
        "get_ema_multi_avg_fn(ema_decay)) over `snapshots` (float32 parameters), one update_parameters each",
        "ema_decay": 0.7,
        "snapshots": [s.tolist() for s in snapshots],
        "swa": swa.tolist(),
        "ema": ema.tolist(),
    }
    with open(FIXTURE, "w") as handle:
        json.dump(payload, handle, indent=1)
        handle.write("\n")


# ---------------------------------------------------------------------------------------------- 5. swap_for_validation
def _evaluate_with(model, flat, x, y):
    clone = keras.models.clone_model(model)
    clone.compile(keras.optimizers.SGD(0.05), "mse")
    _set_flat(clone, flat)
    return clone.evaluate(x, y, batch_size=8, verbose=0)


@pytest.mark.parametrize("name", ["SWA", "EMA"])
def test_swap_for_validation_val_loss_is_the_averaged_models(name):
    xv, yv = _data(seed=1, n=16)

    def make(swap):
        if name == "SWA":
            return SWA(start=1, swap_for_validation=swap)
        return EMA(decay=0.8, swap_for_validation=swap)

    model = _model()
    snaps = _Snapshots()
    cb = make(True)
    history = _fit(model, [snaps, cb], epochs=3, validation_data=(xv, yv))
    expected = []
    for epoch in range(3):
        if name == "SWA":  # the mean of the epoch ends from epoch 1 up to this epoch (raw weights before)
            ends = [snaps.epochs[e][1] for e in range(1, epoch + 1)]
            flat = np.mean(ends, 0) if ends else snaps.epochs[epoch][1]
        else:
            last = (epoch + 1) * STEPS_PER_EPOCH
            flat = _ema([snaps.steps[s] for s in range(1, last + 1)], [0.8] * last)
        expected.append(_evaluate_with(model, flat, xv, yv))
    np.testing.assert_allclose(history.history["val_loss"], expected, rtol=1e-5)
    # Training went on from the raw weights: the same as without swapping.
    plain_model = _model()
    plain = make(False)
    _fit(plain_model, [plain], epochs=3, validation_data=(xv, yv))
    np.testing.assert_array_equal(_concat(cb.raw_weights()), _concat(plain.raw_weights()))
    np.testing.assert_array_equal(_flat(model), _flat(plain_model))


# ---------------------------------------------------------------------------------------------- 6. batch norm
def test_batchnorm_statistics_recomputed_for_the_average():
    xb = _data(seed=2, n=24)[0]
    model = _model(bn=True)
    snaps = _Snapshots()
    swa = SWA(batchnorm_data=xb, batchnorm_batch_size=64)
    _fit(model, [snaps, swa], epochs=3)
    average = np.mean([snaps.epochs[e][1] for e in range(3)], 0)
    bn = model.layers[1]
    mean, var = (np.asarray(keras.ops.convert_to_numpy(v)) for v in (bn.moving_mean, bn.moving_variance))
    # Changed from the averaged statistics.
    reference = keras.models.clone_model(model)
    _set_flat(reference, average)
    ref_bn = reference.layers[1]
    assert not np.allclose(mean, keras.ops.convert_to_numpy(ref_bn.moving_mean), atol=1e-4)
    # numpy: one batch of 24 -> the moving statistics are that batch's mean and biased variance of x @ W + b.
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in reference.layers[0].weights)
    pre = xb.astype(np.float64) @ kernel + bias
    np.testing.assert_allclose(mean, pre.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, pre.var(0), rtol=1e-4, atol=1e-5)
    # The library's own re-estimation on a clone holding the numpy average agrees.
    update_batchnorm_statistics(reference, xb, batch_size=64)
    np.testing.assert_allclose(_flat(model), _flat(reference), rtol=1e-5, atol=1e-6)
    assert swa.updated_batchnorm_layers == 1


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
def test_swa_and_ema_on_user_models(kind):
    model = _user_model(kind)
    snaps = _Snapshots()
    swa = SWA()
    _fit(model, [snaps, swa], epochs=2)
    _close(_flat(model), np.mean([snaps.epochs[e][1] for e in range(2)], 0))
    model = _user_model(kind)
    snaps = _Snapshots()
    ema = EMA(decay=0.5)
    _fit(model, [snaps, ema], epochs=1)
    _close(_flat(model), _ema([snaps.steps[s] for s in range(1, 5)], [0.5] * 4))


# ---------------------------------------------------------------------------------------------- 8. resume
@pytest.mark.parametrize("cls", [SWA, EMA])
def test_resume_with_checkpoint_dir_continues_the_same_average(cls, tmp_path):
    kwargs = {"start": 1} if cls is SWA else {"decay": 0.8}
    model = _model()
    first = cls(checkpoint_dir=str(tmp_path), **kwargs)
    _fit(model, [first], epochs=2)
    first.restore_raw_weights()  # as BackupAndRestore would: the model continues from its raw weights
    second = cls(checkpoint_dir=str(tmp_path), **kwargs)
    _fit(model, [second], epochs=4, initial_epoch=2)

    whole_model = _model()
    whole = cls(**kwargs)
    _fit(whole_model, [whole], epochs=4)
    assert second.num_averaged == whole.num_averaged == (3 if cls is SWA else 16)
    _close(_flat(model), _flat(whole_model))
    _close(_concat(second.raw_weights()), _concat(whole.raw_weights()))


# ---------------------------------------------------------------------------------------------- 9. config
@pytest.mark.parametrize(
    "cb",
    [
        lambda d: SWA(start=0.75, every=5, checkpoint_dir=d, swap_for_validation=True, install=False),
        lambda d: SWA(start="100steps"),
        lambda d: EMA(decay=0.99, warmup=True, warmup_gamma=3.0, warmup_power=0.5, every=2, start=1),
        lambda d: EMA(checkpoint_dir=d, batchnorm_batch_size=7),
    ],
)
def test_config_round_trip(cb, tmp_path):
    cb = cb(str(tmp_path))
    config = cb.get_config()
    assert type(cb).from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    assert type(restored) is type(cb) and restored.get_config() == config


# ---------------------------------------------------------------------------------------------- 10. bad input
@pytest.mark.parametrize(
    "make, error, fragment",
    [
        (lambda: SWA(start=-1), ValueError, "`start`"),
        (lambda: SWA(start=1.5), ValueError, "`start`"),
        (lambda: SWA(start=True), TypeError, "`start`"),
        (lambda: SWA(start="abc"), ValueError, "`start`"),
        (lambda: EMA(start=-0.5), ValueError, "`start`"),
        (lambda: SWA(every=0), ValueError, "`every`"),
        (lambda: EMA(every=0), ValueError, "`every`"),
        (lambda: EMA(decay=0), ValueError, "`decay`"),
        (lambda: EMA(decay=1), ValueError, "`decay`"),
        (lambda: EMA(decay=1.5), ValueError, "`decay`"),
        (lambda: EMA(decay=-0.1), ValueError, "`decay`"),
        (lambda: EMA(decay="0.9"), TypeError, "`decay`"),
        (lambda: EMA(warmup_gamma=0), ValueError, "`warmup_gamma`"),
        (lambda: EMA(warmup_gamma=-1.0), ValueError, "`warmup_gamma`"),
        (lambda: EMA(warmup_power=-0.5), ValueError, "`warmup_power`"),
        (lambda: EMA(warmup="yes"), TypeError, "`warmup`"),
        (lambda: SWA(swap_for_validation=1), TypeError, "`swap_for_validation`"),
    ],
)
def test_bad_arguments(make, error, fragment):
    with pytest.raises(error, match=fragment):
        make()


@pytest.mark.parametrize("cls", [SWA, EMA])
def test_checkpoint_dir_naming_a_file(cls, tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="`checkpoint_dir`"):
        cls(checkpoint_dir=str(path))


@pytest.mark.parametrize(
    "make", [lambda: SWA(start=4), lambda: SWA(start=9), lambda: SWA(start="17steps"), lambda: EMA(start="100steps")]
)
def test_start_past_the_end_raises_at_fit_start(make):
    model = _model()
    before = _flat(model)
    with pytest.raises(ValueError, match="`start`"):
        _fit(model, [make()], epochs=4)  # 16 steps, epochs 0..3
    np.testing.assert_array_equal(_flat(model), before)  # raised before any training step


def test_start_at_the_last_step_is_allowed():
    model = _model()
    swa = SWA(start="16steps")
    _fit(model, [swa], epochs=4)
    assert swa.num_averaged == 1


# ---------------------------------------------------------------------------------------------- 11. JAX
@pytest.mark.jax
def test_jax_swa_and_ema_match_numpy():
    assert keras.backend.backend() == "jax"
    model = _model()
    snaps = _Snapshots()
    swa = SWA(start=1)
    _fit(model, [snaps, swa], epochs=3)
    assert swa.num_averaged == 2
    _close(_flat(model), np.mean([snaps.epochs[e][1] for e in (1, 2)], 0))
    _close(_concat(swa.raw_weights()), snaps.steps[12])
    assert not np.allclose(snaps.steps[4], snaps.steps[12])  # the recorder saw the JAX training state move

    model = _model()
    snaps = _Snapshots()
    ema = EMA(decay=0.8, warmup=True)
    _fit(model, [snaps, ema], epochs=2)
    decays = [min(0.8, 1 - (1 + t) ** -0.75) for t in range(8)]
    _close(_flat(model), _ema([snaps.steps[s] for s in range(1, 9)], decays))


if __name__ == "__main__":
    write_fixture()
    print("wrote", FIXTURE)
