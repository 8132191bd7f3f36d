"""SWASchedule (keras_wtrain.averaging.schedules), checked against PyTorch's SWALR.

The reference learning rates are in fixtures/swalr.json, written by make_swalr_fixture.py (torch 2.13.0); when torch
imports they are also recomputed live. That script's docstring gives the mapping of torch's indexing to `swa_start`.
"""

import importlib.util
import inspect
import json
import math
import pathlib
import re

import keras
import numpy as np
import pytest

from keras_wtrain.averaging.schedules import SWASchedule

HERE = pathlib.Path(__file__).parent
FIXTURE = json.loads((HERE / "fixtures" / "swalr.json").read_text())
# The cases SWASchedule reproduces; `jump_doc_loop` records a quirk of torch it does not copy (see the fixture script).
CASES = {name: case for name, case in FIXTURE["cases"].items() if name != "jump_doc_loop"}


def _fixture_script():
    spec = importlib.util.spec_from_file_location("make_swalr_fixture", HERE / "make_swalr_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pre_start(case):
    if case["pre"] == "constant":
        return FIXTURE["lr"]
    return keras.optimizers.schedules.CosineDecay(FIXTURE["lr"], decay_steps=case["decay_steps"])


def _schedule(case):
    return SWASchedule(
        _pre_start(case),
        swa_lr=FIXTURE["swa_lr"],
        swa_start=case["swa_start"],
        anneal_steps=case["anneal_steps"],
        anneal_strategy=case["anneal_strategy"],
    )


def _values(schedule, steps):
    return np.array([float(schedule(step)) for step in range(steps)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_swalr_fixture(name):
    case = CASES[name]
    np.testing.assert_allclose(_values(_schedule(case), case["total_steps"]), case["learning_rates"], rtol=1e-6, atol=0)


def test_fixture_covers_the_interesting_cases():
    assert FIXTURE["torch_version"].startswith("2.13.0")
    cos, jump = CASES["cos"], CASES["jump"]
    start, lrs = cos["swa_start"], cos["learning_rates"]
    assert lrs[start] == FIXTURE["lr"] and lrs[start + 1] < FIXTURE["lr"]  # k = 0 is still the start lr
    assert lrs[start + cos["anneal_steps"]] == pytest.approx(FIXTURE["swa_lr"], rel=1e-12)
    assert jump["learning_rates"][jump["swa_start"] - 1] == FIXTURE["lr"]
    assert jump["learning_rates"][jump["swa_start"]] == FIXTURE["swa_lr"]
    # torch's docstring loop (SWALR constructed before training) agrees for anneal_epochs > 0 ...
    assert CASES["cos_doc_loop"]["learning_rates"] == pytest.approx(lrs, rel=1e-12)
    # ... but with anneal_epochs == 0 its constructor sets swa_lr before the first step; SWASchedule does not.
    assert FIXTURE["cases"]["jump_doc_loop"]["learning_rates"][0] == FIXTURE["swa_lr"]


def test_matches_torch_swalr_live():
    pytest.importorskip("torch")
    script = _fixture_script()
    for name, case in CASES.items():
        live = script.torch_learning_rates(case)
        np.testing.assert_allclose(live, case["learning_rates"], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(_values(_schedule(case), len(live)), live, rtol=1e-6, err_msg=name)


def test_closed_form_and_dtype():
    schedule = SWASchedule(0.2, swa_lr=0.05, swa_start=3, anneal_steps=4)
    expected = [0.2] * 4 + [0.05 + 0.15 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(1, 5)] + [0.05] * 2
    np.testing.assert_allclose(_values(schedule, 10), expected, rtol=1e-6)
    assert keras.backend.standardize_dtype(schedule(keras.ops.convert_to_tensor(5, "int64")).dtype) == "float32"


def test_docstring_example_runs():
    doc = inspect.getdoc(SWASchedule)
    (block,) = re.findall(r"```python\n(.*?)```", doc[re.search(r"^Example:$", doc, flags=re.M).end() :], flags=re.S)
    exec(compile(block, "<Example of SWASchedule>", "exec"), {"__name__": "example_swa_schedule"})


def _fit_and_check(jit_compile):
    """Trains w (init 0) on loss mean(x * w) with x = 1: each SGD step subtracts exactly that step's learning rate."""
    pre = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10)
    schedule = SWASchedule(pre, swa_lr=0.01, swa_start=4, anneal_steps=5)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=schedule),
        loss=lambda y_true, y_pred: keras.ops.mean(y_pred),
        jit_compile=jit_compile,
    )
    assert model.jit_compile is jit_compile
    steps = 12
    x, y = np.ones((2 * steps, 1), "float32"), np.zeros((2 * steps, 1), "float32")
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    optimizer = model.optimizer
    assert int(optimizer.iterations) == steps
    np.testing.assert_allclose(float(optimizer.learning_rate), float(schedule(steps)), rtol=1e-6)
    kernel = float(keras.ops.convert_to_numpy(model.layers[0].kernel)[0, 0])
    np.testing.assert_allclose(kernel, -_values(schedule, steps).sum(), rtol=1e-5)


@pytest.mark.tensorflow_only
def test_fit_with_jit_compile_on_tensorflow():
    _fit_and_check(jit_compile=True)


@pytest.mark.jax
def test_fit_on_jax():
    _fit_and_check(jit_compile=True)


@pytest.mark.jax
def test_jax_jit_matches_torch_fixture():
    import jax

    for name, case in CASES.items():
        fn = jax.jit(_schedule(case))
        got = [float(fn(np.int32(step))) for step in range(case["total_steps"])]
        np.testing.assert_allclose(got, case["learning_rates"], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("inner", [0.3, keras.optimizers.schedules.ExponentialDecay(0.3, 5, 0.5)])
def test_get_config_round_trip(inner):
    schedule = SWASchedule(inner, swa_lr=0.02, swa_start=6, anneal_steps=3, anneal_strategy="linear")
    config = schedule.get_config()
    json.dumps(config)
    restored = SWASchedule.from_config(config)
    assert restored.get_config() == config
    np.testing.assert_allclose(_values(restored, 12), _values(schedule, 12), rtol=1e-7)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(again, SWASchedule) and again.get_config() == config


def test_keras_save_and_load(tmp_path):
    pre = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10)
    schedule = SWASchedule(pre, swa_lr=0.01, swa_start=2, anneal_steps=3)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    model.fit(np.ones((8, 3), "float32"), np.zeros((8, 1), "float32"), batch_size=2, verbose=0)
    path = tmp_path / "swa.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.optimizer._learning_rate
    assert isinstance(restored, SWASchedule) and restored.get_config() == schedule.get_config()
    assert int(loaded.optimizer.iterations) == 4
    np.testing.assert_allclose(float(loaded.optimizer.learning_rate), float(schedule(4)), rtol=1e-6)


BAD_INPUTS = [
    ({"schedule": 0.0}, ValueError, "`schedule` must be a finite number > 0"),
    ({"schedule": -0.1}, ValueError, "`schedule` must be a finite number > 0"),
    ({"schedule": "0.1"}, TypeError, "`schedule` must be a number > 0 or a keras.optimizers.schedules"),
    ({"schedule": True}, TypeError, "`schedule` must be a number > 0 or a keras.optimizers.schedules"),
    ({"schedule": None}, TypeError, "`schedule` must be a number > 0 or a keras.optimizers.schedules"),
    ({"schedule": lambda step: 0.1}, TypeError, "`schedule` must be a number > 0 or a keras.optimizers.schedules"),
    ({"swa_lr": 0}, ValueError, "`swa_lr` must be a finite number > 0"),
    ({"swa_lr": -0.01}, ValueError, "`swa_lr` must be a finite number > 0"),
    ({"swa_lr": float("nan")}, ValueError, "`swa_lr` must be a finite number > 0"),
    ({"swa_lr": "0.01"}, TypeError, "`swa_lr` must be a number"),
    ({"swa_lr": None}, TypeError, "`swa_lr` must be a number"),
    ({"swa_start": -1}, ValueError, "`swa_start` must be an int >= 0"),
    ({"swa_start": 2.0}, TypeError, "`swa_start` must be an int >= 0"),
    ({"swa_start": True}, TypeError, "`swa_start` must be an int >= 0"),
    ({"anneal_steps": -1}, ValueError, "`anneal_steps` must be an int >= 0"),
    ({"anneal_steps": 1.5}, TypeError, "`anneal_steps` must be an int >= 0"),
    ({"anneal_strategy": "cosine"}, ValueError, "`anneal_strategy` must be one of 'cos', 'linear'"),
    ({"anneal_strategy": None}, ValueError, "`anneal_strategy` must be one of 'cos', 'linear'"),
]


@pytest.mark.parametrize(
    "overrides,error,message", BAD_INPUTS, ids=[f"{next(iter(b[0]))}-{i}" for i, b in enumerate(BAD_INPUTS)]
)
def test_bad_input(overrides, error, message):
    kwargs = dict(schedule=0.1, swa_lr=0.01, swa_start=4, anneal_steps=2, anneal_strategy="cos")
    kwargs.update(overrides)
    with pytest.raises(error, match=re.escape(f"SWASchedule: argument {message}")):
        SWASchedule(**kwargs)
