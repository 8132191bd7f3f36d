"""The KernelReparametrization base: Keras' own layer checks, folding, masks, nesting, legacy `.keras` files."""

import keras
import numpy as np
import pytest

# Keras' own layer-test harness (build, call, serialization, training, mixed precision); not public API.
from keras.src.testing import TestCase

from keras_wtrain._core.kernel_reparametrization import fold_layers
from keras_wtrain.layers import KernelReparametrization
from keras_wtrain.layers import MeanOnlyBatchNormalization
from keras_wtrain.layers import ShadowWeights
from keras_wtrain.layers import WeightNormalization
from keras_wtrain.shadow_weights import transforms as T


class KerasLayerChecks(TestCase):
    """`run_layer_test` builds, calls, serialises, trains (in a subclassed model) and runs mixed precision."""

    def test_weight_normalization_dense(self):
        self.run_layer_test(
            WeightNormalization,
            init_kwargs={"layer": keras.layers.Dense(3), "data_init": False},
            input_shape=(2, 4),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=3,  # kernel v, bias, g
            expected_num_non_trainable_weights=1,  # the data-init flag
            expected_num_seed_generators=0,
            supports_masking=True,
        )

    def test_weight_normalization_conv2d(self):
        self.run_layer_test(
            WeightNormalization,
            init_kwargs={"layer": keras.layers.Conv2D(4, 3, activation="relu"), "data_init": False},
            input_shape=(2, 6, 6, 2),
            expected_output_shape=(2, 4, 4, 4),
            expected_num_trainable_weights=3,
            expected_num_non_trainable_weights=1,
        )

    def test_shadow_weights_conv2d(self):
        self.run_layer_test(
            ShadowWeights,
            init_kwargs={"layer": keras.layers.Conv2D(4, 3), "transform": "random_translate", "seed": 1},
            input_shape=(2, 6, 6, 2),
            expected_output_shape=(2, 4, 4, 4),
            expected_num_trainable_weights=2,  # kernel PW, bias
            expected_num_non_trainable_weights=1,  # the desire-mode kernel
            expected_num_seed_generators=1,
        )

    def test_shadow_weights_dense_learnable_scale(self):
        self.run_layer_test(
            ShadowWeights,
            init_kwargs={
                "layer": keras.layers.Dense(3),
                "transform": T.DropConnect(0.3),
                "learnable_scale": True,
                "seed": 2,
            },
            input_shape=(2, 5),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=3,  # kernel, bias, alpha
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
            supports_masking=True,
        )

    def test_mean_only_batch_normalization(self):
        self.run_layer_test(
            MeanOnlyBatchNormalization,
            init_kwargs={"momentum": 0.9},
            input_shape=(4, 3, 5),
            expected_output_shape=(4, 3, 5),
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=1,
            supports_masking=True,
        )


class Doubled(KernelReparametrization):
    supports = staticmethod(lambda layer: isinstance(layer, keras.layers.Dense))
    supported_layers = "Dense"

    def kernel_variables(self):
        return [self.target_layer.kernel]

    def call_kernels(self, training=None):
        return [2.0 * kernel for kernel in self.wrapped_kernels()]


def test_subclass_implements_only_kernels_and_values(rng):
    layer = Doubled(keras.layers.Dense(3, activation="tanh"))
    x = rng.normal(size=(4, 5)).astype("float32")
    y = np.asarray(layer(x))
    kernel, bias = layer.layer.kernel.numpy(), layer.layer.bias.numpy()
    np.testing.assert_allclose(y, np.tanh(x @ (2 * kernel) + bias), atol=1e-6)
    folded = layer.fold()
    assert type(folded) is keras.layers.Dense
    np.testing.assert_allclose(np.asarray(folded(x)), y, atol=1e-6)
    with pytest.raises(TypeError, match="Doubled cannot wrap layer .* Supported layers: Dense"):
        Doubled(keras.layers.Conv2D(2, 3))
    with pytest.raises(TypeError, match="Doubled: argument `layer` must be a Keras layer"):
        Doubled("dense")


def test_shadow_weights_fold_in_both_modes(rng):
    x = rng.normal(size=(3, 7, 7, 2)).astype("float32")
    layer = ShadowWeights(keras.layers.Conv2D(4, 3), transform=T.DropConnect(0.5), seed=0)
    layer(x)
    aom = layer.fold()
    assert type(aom) is keras.layers.Conv2D
    np.testing.assert_array_equal(aom.kernel.numpy(), layer.layer.kernel.numpy())
    np.testing.assert_allclose(np.asarray(aom(x)), np.asarray(layer(x)), atol=1e-6)
    layer.mode = "desire"
    dom = layer.fold()
    np.testing.assert_array_equal(dom.kernel.numpy(), layer.desire_kernel.numpy())
    np.testing.assert_allclose(np.asarray(dom(x)), np.asarray(layer(x)), atol=1e-5)
    redraw = ShadowWeights(keras.layers.Dense(2), "gaussian_noise", mode="desire", desire_seed=None)
    redraw.build((None, 3))
    with pytest.raises(ValueError, match="no fixed inference kernel"):
        redraw.fold()


@pytest.mark.parametrize("desire_transform", ["auto", "draw"])
def test_nested_wrappers_fold_to_plain_layers(rng, desire_transform):
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    wn = WeightNormalization(keras.layers.Conv2D(4, 3), data_init=False)
    layer = ShadowWeights(wn, transform="random_translate", mode="desire", seed=1, desire_transform=desire_transform)
    model = keras.Sequential([keras.Input((6, 6, 3)), layer, keras.layers.Flatten(), keras.layers.Dense(2)])
    wn.g_weights[0].assign(rng.uniform(0.5, 2.0, size=(4,)).astype("float32"))
    layer.refresh_desire_kernel()
    assert layer.target_layer is wn.layer and layer.kernel_variables() == [wn.layer.kernel]
    folded = fold_layers(model)
    if desire_transform == "auto":
        # DOM's default fixed one-tap shift of a "valid" 3x3 convolution folds to a crop then a 2x2 convolution.
        reduced = folded.layers[0]
        assert [type(inner).__name__ for inner in folded.layers] == ["Sequential", "Flatten", "Dense"]
        assert [type(inner).__name__ for inner in reduced.layers] == ["Cropping2D", "Conv2D"]
        assert reduced.layers[1].kernel_size == (2, 2)
    else:  # a drawn DOM kernel is a dense 3x3 kernel: one plain layer
        assert [type(inner).__name__ for inner in folded.layers] == ["Conv2D", "Flatten", "Dense"]
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), atol=1e-5)


def test_mask_reaches_the_wrapped_layer(rng):
    x = rng.normal(size=(3, 6, 2)).astype("float32")
    x[0, 4:] = 0.0
    x[2, 2:] = 0.0
    inputs = keras.Input((6, 2))
    masked = keras.layers.Masking(0.0)(inputs)
    wrapped = WeightNormalization(keras.layers.LSTM(4), data_init=False)
    model = keras.Model(inputs, wrapped(masked))
    plain_inputs = keras.Input((6, 2))
    plain = wrapped.fold()
    reference = keras.Model(plain_inputs, plain(keras.layers.Masking(0.0)(plain_inputs)))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(reference(x)), atol=1e-5)
    # Without the mask the padded steps would change the output.
    assert not np.allclose(np.asarray(model(x)), np.asarray(plain(x)), atol=1e-3)


@pytest.mark.jax
class KerasLayerChecksJax(KerasLayerChecks):
    """The same checks on the JAX backend (stateless, jit-compiled training step)."""


# ------------------------------------------------------------------ models as users write them


def _save_and_load(model, tmp_path, name="model.keras"):
    path = tmp_path / name
    model.save(path)
    return keras.saving.load_model(path)


@pytest.mark.parametrize("wrapper", ["weightnorm", "shadow", "shadow-over-weightnorm"])
def test_a_functional_model_folds_and_round_trips(rng, tmp_path, wrapper):
    # The functional graph records the wrapper's `mask` argument; the plain folded layers do not take one.
    def wrap(layer):
        if wrapper == "weightnorm":
            return WeightNormalization(layer, data_init=False)
        if wrapper == "shadow":
            return ShadowWeights(layer, seed=0)
        return ShadowWeights(WeightNormalization(layer, data_init=False), seed=0)

    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    h = wrap(keras.layers.Conv2D(4, 3, padding="same", activation="relu"))(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = wrap(keras.layers.Dense(3))(h)
    model = keras.Model(inputs, outputs)
    folded = fold_layers(model)
    assert not any(isinstance(layer, KernelReparametrization) for layer in folded.layers)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), atol=1e-5)
    loaded = _save_and_load(model, tmp_path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_a_nested_functional_model_folds(rng):
    x = rng.normal(size=(3, 5)).astype("float32")
    inner_inputs = keras.Input((5,))
    inner = keras.Model(inner_inputs, WeightNormalization(keras.layers.Dense(4), data_init=False)(inner_inputs))
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    folded = fold_layers(model)
    assert type(folded.layers[1].layers[1]) is keras.layers.Dense
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: WeightNormalization(keras.layers.Dense(2)),
        lambda: ShadowWeights(keras.layers.Conv2D(2, 3)),
        lambda: ShadowWeights(WeightNormalization(keras.layers.Conv2D(2, 3))),
    ],
    ids=["weightnorm", "shadow", "nested"],
)
def test_an_unbuilt_model_loads_unbuilt_and_builds_on_first_call(tmp_path, make):
    model = keras.Sequential([make()])
    loaded = _save_and_load(model, tmp_path)
    assert not loaded.built and not loaded.layers[0].built
    x = np.ones((2, 6, 6, 1) if "Conv" in type(model.layers[0].target_layer).__name__ else (2, 3), "float32")
    assert loaded(x).shape[0] == 2 and loaded.layers[0].built


def test_bidirectional_weight_normalized_lstm_equals_the_plain_one_and_folds(rng, tmp_path):
    # Bidirectional builds its backward copy from the wrapper's config with `go_backwards` flipped.
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    plain = keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=True))
    wrapped = keras.layers.Bidirectional(
        WeightNormalization(keras.layers.LSTM(6, return_sequences=True), data_init=False)
    )
    plain.build((None, 5, 4))
    wrapped.build((None, 5, 4))
    assert not wrapped.forward_layer.layer.go_backwards and wrapped.backward_layer.layer.go_backwards
    assert wrapped.backward_layer.go_backwards and wrapped.return_sequences
    wrapped.forward_layer.layer.set_weights(plain.forward_layer.get_weights())
    wrapped.backward_layer.layer.set_weights(plain.backward_layer.get_weights())
    for half in (wrapped.forward_layer, wrapped.backward_layer):  # g = ||v|| again for the copied kernels
        half.g_weights[0].assign(np.linalg.norm(half.layer.cell.kernel.numpy(), axis=0))
        half.g_weights[1].assign(np.linalg.norm(half.layer.cell.recurrent_kernel.numpy(), axis=0))
    np.testing.assert_allclose(np.asarray(wrapped(x)), np.asarray(plain(x)), atol=1e-5)

    inputs = keras.Input((5, 4))
    model = keras.Model(inputs, keras.layers.TimeDistributed(keras.layers.Dense(2))(wrapped(inputs)))
    folded = fold_layers(model)
    assert type(folded.layers[1].forward_layer) is keras.layers.LSTM
    assert folded.layers[1].backward_layer.go_backwards
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), atol=1e-5)
    loaded = _save_and_load(model, tmp_path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


@pytest.mark.parametrize("wrapper", [WeightNormalization, ShadowWeights])
def test_time_distributed_wrapper_folds_and_round_trips(rng, tmp_path, wrapper):
    x = rng.normal(size=(2, 4, 6, 6, 3)).astype("float32")
    kwargs = {"data_init": False} if wrapper is WeightNormalization else {"seed": 0, "mode": "desire"}
    inputs = keras.Input((4, 6, 6, 3))
    outputs = keras.layers.TimeDistributed(wrapper(keras.layers.Conv2D(2, 3, padding="same"), **kwargs))(inputs)
    model = keras.Model(inputs, outputs)
    folded = fold_layers(model)
    assert not isinstance(folded.layers[1].layer, KernelReparametrization)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), atol=1e-5)
    loaded = _save_and_load(model, tmp_path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_weight_normalization_of_an_rnn_with_a_cell(rng, tmp_path):
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    layer = WeightNormalization(keras.layers.RNN(keras.layers.GRUCell(4)), data_init=False)
    model = keras.Sequential([keras.Input((5, 3)), layer])
    plain = keras.Sequential([keras.Input((5, 3)), keras.layers.RNN(keras.layers.GRUCell(4))])
    cell = layer.layer.cell
    plain.set_weights([cell.kernel.numpy(), cell.recurrent_kernel.numpy(), cell.bias.numpy()])
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(plain(x)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(fold_layers(model)(x)), np.asarray(model(x)), atol=1e-5)
    loaded = _save_and_load(model, tmp_path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
