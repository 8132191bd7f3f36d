"""Every callback and diagnostic on models written the way users write them.

Subclassed models whose `call` takes no `training` (or `mask`) argument, with it, nested models and
multi-input / multi-output functional models: each trains with SWA, EMA, LAWA, SeWA and OptimumShifting, and the
flatness diagnostics measure it. Values are checked against an independent computation where one exists (the
loss at the current weights against `model.evaluate`).
"""

import keras
import numpy as np
import pytest

from keras_wtrain import callbacks
from keras_wtrain import diagnostics
from keras_wtrain._core.objective import loss_value
from keras_wtrain._core.objective import resolve_loss

RNG = np.random.default_rng(0)
X = RNG.random((64, 6)).astype("float32")
Y = np.arange(64) % 3


class NoTraining(keras.Model):
    """The common way to write a subclassed model: `call(self, x)`."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(self.hidden(x))


class WithTraining(keras.Model):
    """A subclassed model that passes `training` on (dropout) and takes a `mask`."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.dropout = keras.layers.Dropout(0.2)
        self.head = keras.layers.Dense(3)

    def call(self, x, training=None, mask=None):
        return self.head(self.dropout(self.hidden(x), training=training))


def _nested():
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu")], name="inner")
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(3)(inner(inputs)))


MODELS = {"subclassed-no-training": NoTraining, "subclassed-training": WithTraining, "nested": _nested}


def _compiled(make):
    model = make()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model(X[:2])
    return model


def _callbacks():
    return {
        "SWA": lambda: callbacks.SWA(every=2, swap_for_validation=True),
        "EMA": lambda: callbacks.EMA(decay=0.9, swap_for_validation=True),
        "LAWA": lambda: callbacks.LAWA(k=2, every=2),
        "SeWA": lambda: callbacks.SeWA(k=2, num_checkpoints=4, every_n_steps=2, selection_data=(X, Y), seed=0),
        "OptimumShifting": lambda: callbacks.OptimumShifting(data=(X, Y), seed=0),
    }


@pytest.mark.parametrize("callback", sorted(_callbacks()))
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_callback_trains_every_kind_of_model(kind, callback):
    model = _compiled(MODELS[kind])
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(
        X, Y, validation_data=(X, Y), epochs=2, batch_size=16, verbose=0, callbacks=[_callbacks()[callback]()]
    )
    after = model.get_weights()
    assert all(np.all(np.isfinite(w)) for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert np.isfinite(history.history["val_loss"]).all()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_loss_at_weights_is_what_evaluate_reports(kind):
    model = _compiled(MODELS[kind])
    value = loss_value(
        model,
        resolve_loss(model, None),
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        X,
        Y,
    )
    reference = model.evaluate(X, Y, batch_size=64, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(float(value), reference, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_flatness_diagnostics_measure_every_kind_of_model(kind):
    model = _compiled(MODELS[kind])
    weights = [w.copy() for w in model.get_weights()]
    trace = diagnostics.hessian_trace(model, (X, Y), num_probes=4, seed=0)
    sharp = diagnostics.sharpness(model, (X, Y), num_samples=2, seed=0)
    assert np.isfinite(trace["trace"]) and np.isfinite(sharp["mean"])
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _multi_io():
    image = keras.Input((6,), name="a")
    extra = keras.Input((2,), name="b")
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([image, extra]))
    model = keras.Model({"a": image, "b": extra}, {"cls": keras.layers.Dense(3, name="cls")(h)})
    model.compile("sgd", {"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


@pytest.mark.parametrize("callback", ["SWA", "EMA", "LAWA"])
def test_averaging_a_multi_input_model(callback):
    model = _multi_io()
    x = {"a": X, "b": RNG.random((64, 2)).astype("float32")}
    make = {"SWA": lambda: callbacks.SWA(every=2), "EMA": lambda: callbacks.EMA(decay=0.9)}
    make["LAWA"] = lambda: callbacks.LAWA(k=2, every=2)
    average = make[callback]()
    model.fit(x, {"cls": Y}, epochs=2, batch_size=16, verbose=0, callbacks=[average])
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
