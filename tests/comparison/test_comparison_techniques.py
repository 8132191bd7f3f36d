"""Technique names and combinations -> the model and callbacks a comparison run trains."""

import keras
import numpy as np
import pytest

from keras_wtrain.averaging.base import averaged_variables
from keras_wtrain.callbacks import SWA
from keras_wtrain.callbacks import OptimumShifting
from keras_wtrain.callbacks import SeWA
from keras_wtrain.comparison import build_technique
from keras_wtrain.comparison.models import build_model
from keras_wtrain.comparison.settings import DEFAULT_TECHNIQUES
from keras_wtrain.comparison.settings import RECIPE
from keras_wtrain.comparison.settings import TECHNIQUES
from keras_wtrain.comparison.settings import parse_technique
from keras_wtrain.comparison.settings import parse_techniques
from keras_wtrain.comparison.techniques import averaging_schedule
from keras_wtrain.comparison.techniques import layer_wrapper
from keras_wtrain.layers import ShadowWeights
from keras_wtrain.layers import WeightNormalization
from keras_wtrain.layers import wrap_layers
from keras_wtrain.randomness import Model as NoisyModel


def test_parse_combinations_into_canonical_order():
    assert parse_technique("grad-dropout+sewa+weightnorm") == ("weightnorm", "grad-dropout", "sewa")
    assert parse_techniques("weightnorm+sewa+grad-dropout") == ["weightnorm+grad-dropout+sewa"]
    assert parse_techniques(" baseline , sewa+weightnorm,weightnorm+sewa ") == ["baseline", "weightnorm+sewa"]
    assert parse_techniques("all") == list(DEFAULT_TECHNIQUES) == [*TECHNIQUES, RECIPE]
    assert parse_techniques(["shadow", "all"])[0] == "shadow"


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("", "no technique given"),
        ("sewa+", "unknown technique(s) ''"),
        ("swa+ema", "combines swa and ema"),
        ("baseline+weightnorm", "baseline cannot be combined"),
        ("shadow+shadow", "names a part twice"),
        ("dropout", "unknown technique(s) 'dropout'"),
    ],
)
def test_bad_technique_names(value, fragment):
    with pytest.raises(ValueError, match=None) as error:
        parse_techniques(value)
    assert fragment in str(error.value)


def _cnn(wrap):
    return build_model("cnn", (28, 28, 1), 10, wrap=wrap)


@pytest.fixture
def train():
    rng = np.random.default_rng(0)
    return rng.random((64, 28, 28, 1), dtype=np.float32), np.arange(64) % 10


def test_weightnorm_and_shadow_combine_as_shadow_over_weight_normalization(train):
    setup = build_technique("shadow+weightnorm", _cnn, train, epochs=1, batch_size=32, seed=0)
    layers = setup.model.layers
    shadow = [layer for layer in layers if isinstance(layer, ShadowWeights)]
    dense = [layer for layer in layers if isinstance(layer, WeightNormalization)]
    assert len(shadow) == 2 and all(isinstance(layer.layer, WeightNormalization) for layer in shadow)
    assert all(isinstance(layer.layer.layer, keras.layers.Conv2D) for layer in shadow)
    assert len(dense) == 2 and all(isinstance(layer.layer, keras.layers.Dense) for layer in dense)
    assert setup.info["wrapped_layers"] == {"weightnorm": 4, "shadow": 2}
    assert setup.callbacks == []
    # the data-dependent init ran: pre-activations of the first wrapped Dense standardised on the batch
    assert all(layer.is_initialized() for layer in dense)


def test_the_three_layers_of_a_combination(train):
    setup = build_technique("weightnorm+sewa+grad-dropout+loss-noise+optimum-shift", _cnn, train, 3, 16, seed=7)
    assert isinstance(setup.model, NoisyModel)
    assert setup.info["loss_noise_stddev"] == 0.3 and setup.info["gradient_dropout_rate"] == 0.1
    assert [type(c) for c in setup.callbacks] == [SeWA, OptimumShifting]  # average, then shift
    assert setup.averaging is setup.callbacks[0] and setup.shifting is setup.callbacks[1]
    assert setup.averaging.seed == 7 and setup.shifting.seed == 7
    # SeWA trains under a constant learning rate (a decay to 0 would make its late checkpoints all alike).
    optimizer = setup.optimizer(12)
    assert isinstance(optimizer, keras.optimizers.Adam) and float(optimizer.learning_rate) == pytest.approx(1e-3)
    assert setup.info["schedule"] == "constant 0.001"
    schedule = averaging_schedule(3, 4)  # 12 steps: 6 checkpoints over the last 6 steps
    assert schedule == {"k": 3, "num_checkpoints": 6, "start": 6, "every_n_steps": 1}
    assert setup.averaging.k == 3 and setup.averaging.num_checkpoints == 6 and setup.averaging.start == 6


def test_combined_model_trains_with_every_part(train):
    x, y = train  # 64 examples: 4 steps of 16 per epoch
    setup = build_technique("weightnorm+swa+grad-dropout", _cnn, train, epochs=8, batch_size=16, seed=0)
    averaging = setup.averaging
    assert isinstance(averaging, SWA) and setup.callbacks == [averaging]
    assert averaging.start == 6 and averaging.every == "epoch"  # the last 25 % of the epochs
    assert "then a 1-epoch cosine anneal to a constant 0.0005" in setup.info["schedule"]
    model = setup.model
    model.compile(setup.optimizer(8 * 4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    raw, rates = [], []

    class _EpochEnds(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raw.append([np.array(keras.ops.convert_to_numpy(v)) for v in averaged_variables(self.model)])
            rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    model.fit(x, y, epochs=8, batch_size=16, verbose=0, callbacks=[_EpochEnds(), *setup.callbacks])
    # SWA averaged the weights at the ends of epochs 6 and 7 and installed their mean; the raw weights wait.
    assert averaging.num_averaged == 2 and averaging.installed
    installed = [keras.ops.convert_to_numpy(v) for v in averaged_variables(model)]
    for value, a, b in zip(installed, raw[6], raw[7], strict=True):
        np.testing.assert_allclose(value, (a + b) / 2, rtol=1e-5, atol=1e-6)
    for value, last in zip(averaging.raw_weights(), raw[7], strict=True):
        np.testing.assert_array_equal(value, last)
    # SWASchedule: cosine decay until epoch 6 (step 24), a 1-epoch anneal, then the constant SWA rate.
    assert rates[0] > rates[5] and rates[7] == pytest.approx(5e-4)


def test_a_user_model_is_rebuilt_with_fresh_wrapped_layers_and_a_subclassed_one_is_refused():
    from keras_wtrain.comparison.inputs import _user_factory

    def build_mlp():
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3)(hidden))

    original = build_mlp()
    rebuilt = wrap_layers(original, layer_wrapper(("weightnorm",)), copy_weights=False)
    assert [type(layer).__name__ for layer in rebuilt.layers] == ["InputLayer", *["WeightNormalization"] * 2]
    assert rebuilt.layers[1] is not original.layers[1]
    assert rebuilt.layers[1].data_init  # fresh weights: the comparison runs the data-dependent init
    assert not np.allclose(rebuilt.layers[1].layer.get_weights()[0], original.layers[1].get_weights()[0])
    _, make_model = _user_factory(build_mlp)
    assert isinstance(make_model(layer_wrapper(("weightnorm",))).layers[1], WeightNormalization)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    _, make_model = _user_factory(Subclassed)
    assert isinstance(make_model(None), Subclassed)
    with pytest.raises(TypeError, match=r"needs a functional or Sequential model; Subclassed\(\) returned"):
        make_model(lambda layer: layer)


def test_shadow_on_a_model_without_convolutions_wraps_nothing(train):
    x, y = train
    setup = build_technique("shadow", lambda wrap: build_model("mlp", (28, 28, 1), 10, wrap=wrap), (x, y), 1, 32, 0)
    assert setup.info["wrapped_layers"] == {"shadow": 0}
