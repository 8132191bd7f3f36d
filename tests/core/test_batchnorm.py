"""update_batchnorm_statistics (keras_wtrain._core.batchnorm): the cumulative mean of batch statistics, as
`torch.optim.swa_utils.update_bn` computes it, checked against numpy."""

import keras
import numpy as np
import pytest

import keras_wtrain.averaging.sewa
import keras_wtrain.callbacks
from keras_wtrain._core.batchnorm import batchnorm_layers
from keras_wtrain._core.batchnorm import update_batchnorm_statistics


def _dense_bn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(6), keras.layers.BatchNormalization()])


def _expected(model, batches):
    """Plain average over batches of each batch's mean and (biased) variance of the BN inputs."""
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (model.layers[0].kernel, model.layers[0].bias))
    hidden = [b.astype(np.float64) @ kernel + bias for b in batches]
    return np.mean([h.mean(0) for h in hidden], 0), np.mean([h.var(0) for h in hidden], 0)


def _moving(model):
    bn = model.layers[1]
    return keras.ops.convert_to_numpy(bn.moving_mean), keras.ops.convert_to_numpy(bn.moving_variance)


def test_a_list_of_x_batches_uses_every_batch(rng):
    # Unequal batches: each batch counts once (as in torch's update_bn with momentum=None).
    batches = [rng.normal(size=(n, 5)).astype("float32") * (i + 1) + i for i, n in enumerate((16, 16, 8))]
    model = _dense_bn()
    assert update_batchnorm_statistics(model, batches) == 1
    mean, var = _expected(model, batches)
    np.testing.assert_allclose(_moving(model)[0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_moving(model)[1], var, rtol=1e-4, atol=1e-5)
    assert model.layers[1].momentum == 0.99  # restored


def test_arrays_and_xy_tuples_are_cut_into_batches_with_a_cap(rng):
    x = rng.normal(size=(100, 5)).astype("float32")
    y = rng.integers(0, 2, 100)
    for data in (x, (x, y)):
        model = _dense_bn()
        update_batchnorm_statistics(model, data, batch_size=32, max_examples=80)
        mean, var = _expected(model, [x[0:32], x[32:64], x[64:80]])
        np.testing.assert_allclose(_moving(model)[0], mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_moving(model)[1], var, rtol=1e-4, atol=1e-5)


def test_dict_inputs_and_a_nested_batchnorm(rng):
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    inner = keras.Sequential([keras.Input((5,)), keras.layers.BatchNormalization()])
    model = keras.Model({"a": a, "b": b}, inner(keras.layers.Concatenate()([a, b])))
    assert len(batchnorm_layers(model)) == 1  # found inside the sub-model
    x = {"a": rng.normal(size=(40, 3)).astype("float32"), "b": rng.normal(size=(40, 2)).astype("float32")}
    update_batchnorm_statistics(model, x, batch_size=20)
    h = np.concatenate([x["a"], x["b"]], axis=1).reshape(2, 20, 5)
    bn = batchnorm_layers(model)[0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), h.mean(1).mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), h.var(1).mean(0), rtol=1e-4, atol=1e-5)


def test_bad_arguments_and_old_import_paths():
    model = _dense_bn()
    with pytest.raises(ValueError, match="`batch_size`"):
        update_batchnorm_statistics(model, np.zeros((4, 5)), batch_size=0)
    with pytest.raises(TypeError, match="`max_examples`"):
        update_batchnorm_statistics(model, np.zeros((4, 5)), max_examples=2.5)
    assert keras_wtrain._core.batchnorm.update_batchnorm_statistics is update_batchnorm_statistics
    assert keras_wtrain._core.batchnorm.update_batchnorm_statistics is update_batchnorm_statistics


def _shadow_dense_bn(mode="accuracy", seed=0):
    """A Dense layer trained with DropConnect shadow weights, then BatchNorm: SW != PW in every training call."""
    from keras_wtrain.layers import ShadowWeights

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((5,)),
            ShadowWeights(keras.layers.Dense(6), "dropconnect", mode=mode, seed=seed),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3),
        ]
    )


def _inference_kernel(model):
    shadow = model.layers[0]
    return keras.ops.convert_to_numpy(shadow.inference_kernels()[0]), keras.ops.convert_to_numpy(shadow.layer.bias)


@pytest.mark.parametrize("mode", ["accuracy", "desire"])
def test_shadow_weights_are_replaced_by_the_inference_kernels_while_statistics_are_estimated(rng, mode):
    from keras_wtrain.shadow_weights.modes import inference_kernels_in_training

    x = rng.normal(size=(48, 5)).astype("float32")
    model = _shadow_dense_bn(mode)
    model(x)
    shadow = model.layers[0]
    if mode == "accuracy":  # outside the context a training call draws shadow weights: another output ...
        assert not np.allclose(shadow(x, training=True), shadow(x, training=False), atol=1e-4)
    with inference_kernels_in_training(model) as switched:
        assert switched == [shadow]
        np.testing.assert_allclose(shadow(x, training=True), shadow(x, training=False), atol=1e-5)
    assert not shadow._inference_kernels_in_training  # restored
    # ... and the re-estimated statistics are those of the inference kernel (PW in AOM, the DOM kernel), in numpy.
    batches = [x[:16], x[16:32], x[32:]]
    assert update_batchnorm_statistics(model, batches) == 1
    kernel, bias = _inference_kernel(model)
    if mode == "accuracy":
        np.testing.assert_array_equal(kernel, keras.ops.convert_to_numpy(shadow.layer.kernel))
    hidden = [b.astype(np.float64) @ kernel + bias for b in batches]
    np.testing.assert_allclose(_moving(model)[0], np.mean([h.mean(0) for h in hidden], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_moving(model)[1], np.mean([h.var(0) for h in hidden], 0), rtol=1e-4, atol=1e-5)


def test_batchnorm_statistics_update_callback_reestimates_at_the_end_of_fit(rng):
    from keras_wtrain.callbacks import BatchNormStatisticsUpdate

    x, y = rng.normal(size=(64, 5)).astype("float32"), np.arange(64) % 3
    model = _shadow_dense_bn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = BatchNormStatisticsUpdate((x, y), batch_size=32)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[update])
    assert update.updated_layers == 1
    kernel, bias = _inference_kernel(model)  # the trained plain weights
    hidden = [b.astype(np.float64) @ kernel + bias for b in (x[:32], x[32:])]
    np.testing.assert_allclose(_moving(model)[0], np.mean([h.mean(0) for h in hidden], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_moving(model)[1], np.mean([h.var(0) for h in hidden], 0), rtol=1e-4, atol=1e-5)
    assert update.get_config() == {"batch_size": 32, "max_examples": None}
    assert model.layers[1].momentum == 0.99


def test_compare_reestimates_batchnorm_after_shadow_weights_on_models_with_batchnorm(rng):
    from keras_wtrain.callbacks import BatchNormStatisticsUpdate
    from keras_wtrain.comparison.models import build_model
    from keras_wtrain.comparison.techniques import build_technique

    x, y = rng.random((32, 28, 28, 1)).astype("float32"), np.arange(32) % 10
    kinds = {}
    for kind in ("cnn", "resnet-small"):
        setup = build_technique(
            "shadow", lambda wrap, kind=kind: build_model(kind, (28, 28, 1), 10, wrap=wrap), (x, y), 1, 16, 0
        )
        kinds[kind] = [type(c) for c in setup.callbacks]
    assert kinds == {"cnn": [], "resnet-small": [BatchNormStatisticsUpdate]}
