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
    with pytest.raises(ValueError, match="Doubled cannot wrap layer .* Supported layers: Dense"):
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
