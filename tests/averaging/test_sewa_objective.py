"""SeWA never loses to its baselines on its own objective F, checked on recorded training trajectories.

Three real training runs of the compare CNN on 1,000 MNIST-5k examples (15 epochs, >= 99 % training
accuracy), with the compare settings of the converged regime's last 40 steps: T = 20 checkpoints, one every
2 steps, K = 10. For each run, F (the mean training loss on the selection examples) is recomputed
independently of the callback: the numpy average of the chosen checkpoints' flat weights is assigned to a
clone of the model and the loss is read from `model.evaluate`.
"""

import json

import keras
import numpy as np
import pytest

from keras_wtrain.averaging import SeWA
from keras_wtrain.comparison.models import build_model

SEEDS = (0, 1, 2)
K, T, EVERY, EPOCHS = 10, 20, 2, 15


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def trajectories(mnist5k):
    x, y = mnist5k.x_train[:1000], mnist5k.y_train[:1000]
    total = EPOCHS * int(np.ceil(len(x) / 64))
    runs = {}
    for seed in SEEDS:
        keras.utils.set_random_seed(seed)
        model = build_model("cnn", x.shape[1:], mnist5k.num_classes)
        model.compile(keras.optimizers.Adam(1e-3), _loss(), metrics=["accuracy"])
        cb = SeWA(
            k=K,
            num_checkpoints=T,
            start=total - T * EVERY,
            every_n_steps=EVERY,
            selection_data=(x, y),
            install=False,
            seed=seed,
        )
        history = model.fit(x, y, batch_size=64, epochs=EPOCHS, verbose=0, callbacks=[cb])
        runs[seed] = (model, cb, history.history["accuracy"][-1])
    return x, y, runs


def _evaluator(model, x, y):
    """F at flat weights, independent of the callback: a clone of the model, its float variables assigned in the
    documented flat layout (trainable, then non-trainable), the loss read from `evaluate`."""
    clone = keras.models.clone_model(model)
    clone.compile(loss=_loss())
    variables = [v for v in clone.trainable_variables + clone.non_trainable_variables if "float" in str(v.dtype)]

    def loss(flat):
        offset = 0
        for v in variables:
            size = int(np.prod(v.shape))
            v.assign(flat[offset : offset + size].reshape(v.shape))
            offset += size
        assert offset == flat.size
        return float(clone.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)["loss"])

    return loss


def _mean(checkpoints, indices):
    return checkpoints[np.asarray(list(indices), int)].astype(np.float64).mean(0).astype(np.float32)


@pytest.mark.parametrize("seed", SEEDS)
def test_sewa_objective_is_at_most_lawa_window_and_best_random(trajectories, seed):
    x, y, runs = trajectories
    model, cb, train_accuracy = runs[seed]
    assert train_accuracy >= 0.98 and cb.num_stored == T
    checkpoints = cb.checkpoints()
    n = min(len(x), cb.selection_size)  # F is the loss on the first `selection_size` selection examples
    loss = _evaluator(model, x[:n], y[:n])

    flat, info = cb.average_weights("sewa")
    chosen = info["indices"]
    assert len(set(chosen)) == len(chosen) and len(chosen) in (K, T)
    np.testing.assert_allclose(flat, _mean(checkpoints, chosen), rtol=1e-5, atol=1e-6)
    f_sewa = loss(_mean(checkpoints, chosen))
    f_lawa = loss(_mean(checkpoints, range(T - K, T)))
    f_window = loss(_mean(checkpoints, range(T)))
    slack = 1e-5 * f_lawa  # float32 summation order: the callback's F and evaluate's differ in the last bits
    assert f_sewa <= f_lawa + slack, (f_sewa, f_lawa)
    assert f_sewa <= f_window + slack, (f_sewa, f_window)

    report = cb.selection_report
    subsets = report["random_subsets"]
    assert len(subsets) == 20 and all(len(set(s)) == K and 0 <= min(s) and max(s) < T for s in subsets)
    f_random = [loss(_mean(checkpoints, s)) for s in subsets]
    assert f_sewa <= min(f_random) + slack, (f_sewa, min(f_random))

    # The recorded numbers are F itself.
    objective = report["objective"]
    assert objective["sewa"] == pytest.approx(f_sewa, rel=1e-4)
    assert objective["lawa"] == pytest.approx(f_lawa, rel=1e-4)
    assert objective["window"] == pytest.approx(f_window, rel=1e-4)
    assert objective["random"] == pytest.approx(min(f_random), rel=1e-4)
    np.testing.assert_allclose(report["random_objectives"], f_random, rtol=1e-4)
    assert report["indices"]["sewa"] == list(chosen)
    json.dumps(report)
    print(
        f"seed {seed}: F sewa {f_sewa:.6f} ({report['source']}), lawa {f_lawa:.6f}, window {f_window:.6f}, "
        f"best random {min(f_random):.6f}; {report['evaluations']} evaluations, {report['time_s']:.2f}s"
    )
