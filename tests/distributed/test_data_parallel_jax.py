"""JAX `keras.distribution.DataParallel` on 2 host devices: each technique trains and matches one device.

Each case trains the same model from the same weights on the same batches twice in one process: once
with no distribution (one device), once under `DataParallel` over two host CPU devices (conftest sets
`--xla_force_host_platform_device_count=2`), where every global batch is split across the devices and
the gradients are averaged. The final weights must agree to 1e-4 (float32 sums in another order), and the
technique's own record (shifts kept, checkpoints chosen) must be the same.
"""

import keras
import numpy as np
import pytest

from keras_wtrain.callbacks import SWA
from keras_wtrain.callbacks import OptimumShifting
from keras_wtrain.callbacks import SeWA
from keras_wtrain.layers import ShadowWeights

pytestmark = pytest.mark.jax

TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def _data(digits):
    return digits.x_train[:256].reshape(256, -1).astype("float32"), digits.y_train[:256]


def _model(wrap=lambda layer: layer, weights=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), wrap(keras.layers.Dense(32, activation="relu")), keras.layers.Dense(10)]
    )
    if weights is not None:
        model.set_weights(weights)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _train(make_callbacks, wrap, x, y, weights, distributed):
    import jax

    if distributed:
        if len(jax.devices()) < 2:
            pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=2")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()[:2]))
    try:
        model = _model(wrap, weights)
        callbacks = make_callbacks(x, y)
        model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
        # The distribution is real: the variables live on (are replicated over) both devices.
        assert len(model.weights[0].value.sharding.device_set) == (2 if distributed else 1)
        return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights], callbacks
    finally:
        keras.distribution.set_distribution(None)


def _both(make_callbacks, digits, wrap=lambda layer: layer):
    x, y = _data(digits)
    weights = _model(wrap).get_weights()
    one = _train(make_callbacks, wrap, x, y, weights, distributed=False)
    two = _train(make_callbacks, wrap, x, y, weights, distributed=True)
    for a, b in zip(one[0], two[0], strict=True):
        np.testing.assert_allclose(b, a, **TOLERANCE)
    assert not np.allclose(one[0][0], weights[0], atol=1e-3)  # training moved the weights
    return one[1], two[1]


def test_shadow_weights_match_one_device(digits):
    _both(lambda x, y: [], digits, wrap=lambda layer: ShadowWeights(layer, transform="dropconnect", seed=3))


def test_sewa_matches_one_device(digits):
    def callbacks(x, y):
        return [SeWA(k=3, num_checkpoints=6, every_n_steps=2, selection_data=(x, y), seed=0)]

    (one,), (two,) = _both(callbacks, digits)
    assert list(one.selected_steps) == list(two.selected_steps) and len(one.selected_steps) == 3


def test_swa_matches_one_device(digits):
    def callbacks(x, y):
        return [SWA(every=2)]

    (one,), (two,) = _both(callbacks, digits)
    assert one.num_averaged == two.num_averaged > 1 and one.installed and two.installed


def test_optimum_shifting_matches_one_device(digits):
    def callbacks(x, y):
        return [OptimumShifting(data=(x, y), seed=0, max_loss_increase=0.5)]

    (one,), (two,) = _both(callbacks, digits)
    assert [h["kept"] for h in one.history] == [h["kept"] for h in two.history] and any(h["kept"] for h in one.history)
