"""search_space ranges, TechniqueConfig, and keras_wtrain.tuning.spaces.HyperModel with real Keras Tuner searches."""

import keras
import keras_tuner
import numpy as np
import pytest

from keras_wtrain.comparison.models import build_model
from keras_wtrain.tuning.pso import PSO
from keras_wtrain.tuning.spaces import TECHNIQUES
from keras_wtrain.tuning.spaces import HyperModel
from keras_wtrain.tuning.spaces import search_space
from keras_wtrain.weight_normalization.wrapper import WeightNormalization


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_every_technique_registers_its_documented_range():
    hp = keras_tuner.HyperParameters()
    config = search_space(hp)
    space = {h.name: h for h in hp.space}
    assert (space["loss_noise_stddev"].min_value, space["loss_noise_stddev"].max_value) == (0.0, 1.0)
    assert (space["gradient_dropout_rate"].min_value, space["gradient_dropout_rate"].max_value) == (0.0, 0.5)
    assert list(space["shadow_transform"].values) == ["shift", "crop_stretch", "shift_or_crop"]
    assert (space["shadow_strength"].min_value, space["shadow_strength"].max_value) == (0.1, 0.5)
    assert isinstance(space["weight_normalization"], keras_tuner.engine.hyperparameters.Boolean)
    assert (space["sewa_k"].min_value, space["sewa_k"].max_value) == (2, 10)
    assert space["sewa_checkpoints"].value == 10
    assert isinstance(space["optimum_shifting"], keras_tuner.engine.hyperparameters.Boolean)
    # Defaults: every technique off, or at its library default (shadow: the crop-and-stretch that
    # benchmarks/shadow_ablation.py chose), so the first trial is the plain model.
    assert config.model_kwargs == {"loss_noise": 0.0, "gradient_dropout": 0.0}
    assert not config.weight_normalization and not config.optimum_shifting
    assert config.shadow == {"transform": "crop_stretch", "strength": 0.3}
    assert config.sewa_k == 5


def test_only_requested_techniques_are_registered_and_values_are_used():
    hp = keras_tuner.HyperParameters()
    hp.values.update({"loss_noise_stddev": 0.3, "gradient_dropout_rate": 0.1})
    config = search_space(hp, techniques=("loss-noise", "grad-dropout"))
    assert sorted(h.name for h in hp.space) == ["gradient_dropout_rate", "loss_noise_schedule", "loss_noise_stddev"]
    assert config.model_kwargs == {"loss_noise": 0.3, "gradient_dropout": 0.1}
    assert config.callbacks() == []
    layer = keras.layers.Dense(3)
    assert config.wrap(layer) is layer


def test_user_ranges_registered_first_win():
    hp = keras_tuner.HyperParameters()
    hp.Float("gradient_dropout_rate", 0.0, 0.2)
    search_space(hp, techniques=("grad-dropout",))
    assert hp._hps["gradient_dropout_rate"][0].max_value == 0.2


@pytest.mark.parametrize(
    "techniques, error, message",
    [
        (("loss-noise", "dropout"), ValueError, "dropout"),
        (("sewa", "sewa"), ValueError, "twice"),
        (3, TypeError, "techniques"),
    ],
)
def test_bad_techniques_are_rejected(techniques, error, message):
    with pytest.raises(error, match=message):
        search_space(keras_tuner.HyperParameters(), techniques=techniques)


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match="`hp`"):
        search_space({"loss_noise_stddev": 0.1})
    with pytest.raises(TypeError, match="wrap"):
        HyperModel(lambda hp: None, techniques=("weightnorm",))
    with pytest.raises(TypeError, match="build_fn"):
        HyperModel("not a function")
    with pytest.raises(ValueError, match="schedule_steps"):
        search_space(keras_tuner.HyperParameters(), schedule_steps=0)
    with pytest.raises(ValueError, match="shifting_batch_size"):
        HyperModel(lambda hp: None, techniques=("loss-noise",), shifting_batch_size=0)
    hp = keras_tuner.HyperParameters()
    hp.values["optimum_shifting"] = True
    with pytest.raises(ValueError, match="data"):
        search_space(hp, techniques=("optimum-shift",)).callbacks()
    assert set(TECHNIQUES) == {"loss-noise", "grad-dropout", "shadow", "weightnorm", "sewa", "optimum-shift"}


def test_weight_normalization_wrap_builds_a_normalised_model(rng):
    hp = keras_tuner.HyperParameters()
    hp.values["weight_normalization"] = True
    config = search_space(hp, techniques=("weightnorm",))
    model = build_model("cnn", (28, 28, 1), 10, wrap=config.wrap)
    wrapped = [layer for layer in model.layers if isinstance(layer, WeightNormalization)]
    assert len(wrapped) == 4  # two Conv2D and two Dense
    hp.values["weight_normalization"] = False
    plain = build_model("cnn", (28, 28, 1), 10, wrap=search_space(hp, techniques=("weightnorm",)).wrap)
    assert not any(isinstance(layer, WeightNormalization) for layer in plain.layers)


def _mlp_builder(seen):
    def build(hp, wrap=None):
        seen.append(wrap)
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                (wrap or (lambda layer: layer))(keras.layers.Dense(32, activation="relu")),
                (wrap or (lambda layer: layer))(keras.layers.Dense(10)),
            ]
        )
        return _compile(model)

    return build


@pytest.mark.tensorflow_only
def test_hypermodel_search_with_weight_normalization(mnist5k, tmp_path):
    data = mnist5k
    seen = []
    hypermodel = HyperModel(_mlp_builder(seen), techniques=("weightnorm",))
    tuner = PSO(hypermodel, objective="val_accuracy", max_trials=2, swarm_size=2, seed=3, directory=str(tmp_path))
    tuner.search(
        data.x_train[:512],
        data.y_train[:512],
        validation_data=(data.x_val[:256], data.y_val[:256]),
        epochs=1,
        batch_size=64,
        verbose=0,
    )
    assert len(tuner.oracle.trials) == 2
    assert all(callable(w) for w in seen)  # build_fn received the wrap function
    chosen = sorted(t.hyperparameters.get("weight_normalization") for t in tuner.oracle.trials.values())
    assert chosen == [False, True]  # a Boolean-only space: two distinct trials, then exhausted
    best = tuner.get_best_hyperparameters()[0]
    model = hypermodel.build(best)
    n_wn = sum(isinstance(layer, WeightNormalization) for layer in model.layers)
    assert n_wn == (2 if best.get("weight_normalization") else 0)
    history = hypermodel.fit(best, model, data.x_train[:512], data.y_train[:512], epochs=2, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.tensorflow_only
def test_hypermodel_applies_loss_noise_and_gradient_dropout(mnist5k):
    from keras_wtrain.randomness.model import Model
    from keras_wtrain.randomness.settings import LinearDecay
    from keras_wtrain.randomness.settings import LossNoise

    data = mnist5k
    hp = keras_tuner.HyperParameters()
    hp.values.update({"loss_noise_stddev": 0.3, "gradient_dropout_rate": 0.1})
    hypermodel = HyperModel(_mlp_builder([]), techniques=("loss-noise", "grad-dropout"))
    model = hypermodel.build(hp)
    assert isinstance(model, Model) and model.compiled
    weights_before = [np.array(w) for w in model.trainable_weights]
    history = hypermodel.fit(hp, model, data.x_train[:512], data.y_train[:512], epochs=2, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert any(not np.array_equal(a, np.array(b)) for a, b in zip(weights_before, model.trainable_weights))
    # σ = p = 0: the plain model is trained (both are exact no-ops).
    hp0 = keras_tuner.HyperParameters()
    plain = hypermodel.build(hp0)
    assert type(plain) is keras.Sequential
    # The linear-decay schedule: sigma decays to 0 over `schedule_steps` steps.
    hp.values["loss_noise_schedule"] = "linear_decay"
    kwargs = search_space(hp, techniques=("loss-noise",), schedule_steps=50).model_kwargs
    assert isinstance(kwargs["loss_noise"], LossNoise)
    assert isinstance(kwargs["loss_noise"].stddev, LinearDecay)
    assert kwargs["loss_noise"].stddev(0) == pytest.approx(0.3)
    assert kwargs["loss_noise"].stddev(25) == pytest.approx(0.15)
    assert kwargs["loss_noise"].stddev(50) == 0.0
    scheduled = HyperModel(_mlp_builder([]), techniques=("loss-noise",), schedule_steps=50).build(hp)
    history = scheduled.fit(data.x_train[:256], data.y_train[:256], epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


@pytest.mark.tensorflow_only
def test_hypermodel_fit_adds_sewa_and_optimum_shifting_and_rescores(mnist5k):
    from keras_wtrain.averaging import SeWA
    from keras_wtrain.optimum_shifting.callback import OptimumShifting

    data = mnist5k
    hp = keras_tuner.HyperParameters()
    hp.values.update({"sewa_k": 2, "optimum_shifting": True})
    config = search_space(hp, techniques=("sewa", "optimum-shift"))
    callbacks = config.callbacks(data=(data.x_train[:200], data.y_train[:200]))
    assert [type(c) for c in callbacks] == [SeWA, OptimumShifting]

    hypermodel = HyperModel(_mlp_builder([]), techniques=("sewa", "optimum-shift"), shifting_batch_size=200)
    model = hypermodel.build(hp)
    results = hypermodel.fit(
        hp,
        model,
        data.x_train[:512],
        data.y_train[:512],
        validation_data=(data.x_val[:256], data.y_val[:256]),
        epochs=3,
        batch_size=64,
        verbose=0,
    )
    # The trial is scored on the final (averaged, shifted) weights, not the last epoch's.
    _, accuracy = model.evaluate(data.x_val[:256], data.y_val[:256], verbose=0)
    assert results["val_accuracy"] == pytest.approx(accuracy)


@pytest.mark.tensorflow_only
def test_shadow_weights_wrap_only_kxk_convolutions():
    from keras_wtrain.shadow_weights.wrapper import ShadowWeights

    hp = keras_tuner.HyperParameters()
    hp.values.update({"shadow_transform": "shift_or_crop", "shadow_strength": 0.3, "weight_normalization": True})
    config = search_space(hp, techniques=("shadow", "weightnorm"), seed=0)
    model = build_model("cnn", (28, 28, 1), 10, wrap=config.wrap)
    kinds = [type(layer).__name__ for layer in model.layers if isinstance(layer, (ShadowWeights, WeightNormalization))]
    assert kinds == ["ShadowWeights", "ShadowWeights", "WeightNormalization", "WeightNormalization"]
    out = model(np.zeros((2, 28, 28, 1), "float32"), training=True)
    assert out.shape == (2, 10)


def test_every_searched_gradient_dropout_rate_trains():
    # The rate is searched on GradientDropout's 1/256 grid: every value a tuner can propose (PSO clamps
    # particles to the range ends, so values near 0 are common) builds a model; a continuous range
    # proposed rates in (0, 1/512), which GradientDropout refuses (a failed trial).
    import keras
    import keras_tuner

    from keras_wtrain.tuning.spaces import HyperModel

    def build(hp):
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        model.compile("sgd", "mse")
        return model

    hp = keras_tuner.HyperParameters()
    hypermodel = HyperModel(build, techniques=("grad-dropout",))
    hypermodel.build(hp)  # registers the range
    (rate,) = [entry for entry in hp.space if entry.name == "gradient_dropout_rate"]
    assert (rate.min_value, rate.max_value, rate.step) == (0.0, 0.5, 1 / 256)
    for prob in np.linspace(0.0, 1.0, 301):
        value = rate.prob_to_value(prob)
        assert value == 0.0 or value >= 1 / 256
        hp.values["gradient_dropout_rate"] = value
        hypermodel.build(hp)
