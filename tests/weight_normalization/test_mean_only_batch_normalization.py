"""MeanOnlyBatchNormalization: numerics against numpy, masks, frozen layers, saving."""

import keras
import numpy as np
import pytest

from keras_wtrain.layers import MeanOnlyBatchNormalization


def test_mean_only_batch_normalization_matches_numpy(tmp_path, rng):
    layer = MeanOnlyBatchNormalization(momentum=0.9)
    x = (rng.normal(size=(16, 4, 4, 3)) + 2).astype("float32")
    y = np.asarray(layer(x, training=True))
    mean = x.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(y, x - mean, atol=1e-5)  # beta starts at zero, no division
    np.testing.assert_allclose(np.asarray(layer.moving_mean), 0.1 * mean, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), x - 0.1 * mean, atol=1e-5)
    model = keras.Sequential([keras.Input((4, 4, 3)), layer])
    model.save(tmp_path / "mobn.keras")
    loaded = keras.models.load_model(tmp_path / "mobn.keras")
    np.testing.assert_allclose(np.asarray(loaded.layers[0].moving_mean), np.asarray(layer.moving_mean))
    with pytest.raises(ValueError, match="momentum"):
        MeanOnlyBatchNormalization(momentum=1.5)
    with pytest.raises(TypeError, match="`axis`"):
        MeanOnlyBatchNormalization(axis=1.0)


def _masked_mean(x, mask):
    weights = mask[..., None].astype(np.float64)
    return (x * weights).sum(axis=(0, 1)) / weights.sum(axis=(0, 1))


def test_mask_restricts_the_batch_mean_to_unmasked_steps(rng):
    x = (rng.normal(size=(4, 6, 3)) * 2 + 1).astype("float32")
    mask = np.ones((4, 6), bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    x[~mask] = 50.0  # padding far from the data: any leak into the mean shows
    layer = MeanOnlyBatchNormalization(momentum=0.9)
    y = np.asarray(layer(x, training=True, mask=mask))
    mean = _masked_mean(x, mask)
    np.testing.assert_allclose(y, x - mean, atol=1e-4)
    np.testing.assert_allclose(np.asarray(layer.moving_mean), 0.1 * mean, atol=1e-5)

    # Through a model: Masking computes the mask, Keras hands it to the layer and passes it on.
    inputs = keras.Input((6, 3))
    masked = keras.layers.Masking(50.0)(inputs)
    normalised = MeanOnlyBatchNormalization(momentum=0.0)
    model = keras.Model(inputs, normalised(masked))
    out = np.asarray(model(x, training=True))  # Masking zeroes the masked steps; compare the others
    np.testing.assert_allclose(out[mask], (x - mean)[mask], atol=1e-4)
    np.testing.assert_allclose(np.asarray(normalised.moving_mean), mean, atol=1e-4)
    assert normalised.compute_mask(x, mask) is mask


def test_frozen_layer_runs_in_inference_mode(rng):
    layer = MeanOnlyBatchNormalization()
    x = (rng.normal(size=(8, 3)) + 5).astype("float32")
    layer.build(x.shape)
    layer.moving_mean.assign(np.array([1.0, 2.0, 3.0], "float32"))
    layer.trainable = False
    y = np.asarray(layer(x, training=True))
    np.testing.assert_allclose(y, x - np.array([1.0, 2.0, 3.0]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer.moving_mean), [1.0, 2.0, 3.0])


def test_mask_of_the_wrong_rank_is_refused():
    layer = MeanOnlyBatchNormalization()
    with pytest.raises(ValueError, match="one dimension less than the inputs"):
        layer(np.ones((2, 3, 4), "float32"), training=True, mask=np.ones((2, 3, 4), bool))
