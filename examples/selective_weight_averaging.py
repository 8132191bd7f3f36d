"""Selective weight averaging (SeWA) on MNIST-5k, compared with SWA, LAWA and EMA on the same trajectory.

Run: `python examples/selective_weight_averaging.py` (set KERAS_WTRAIN_TINY=1 for a run of a few seconds).
"""

import os
import tempfile

import keras
import numpy as np

from keras_wtrain.averaging.sewa import SelectiveWeightAveraging
from keras_wtrain.comparison.datasets import load_mnist5k
from keras_wtrain.comparison.models import build_model


def main():
    tiny = os.environ.get("KERAS_WTRAIN_TINY") == "1"
    data = load_mnist5k(train_size=200 if tiny else 1000)
    epochs, batch_size, k, t = (3, 64, 3, 6) if tiny else (12, 64, 10, 20)
    steps_per_epoch = int(np.ceil(len(data.x_train) / batch_size))
    keras.utils.set_random_seed(0)

    # 1. The MNIST CNN; jit_compile=True works (the callback runs on the host between steps).
    model = build_model("cnn", (28, 28, 1), data.num_classes)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=not tiny,  # XLA compile time dominates a tiny run
    )

    # 2. Keep T=20 checkpoints, one every 4 steps over the last epochs; SeWA picks K=10 of them when
    #    training ends. A callback cannot see fit's data, so the training data is passed for the
    #    selection objective (and for batch-norm statistics, if the model had any).
    sewa = SelectiveWeightAveraging(
        k=k,
        num_checkpoints=t,
        start=(epochs // 2) * steps_per_epoch,
        every_n_steps=1 if tiny else 4,
        strategy="sewa",
        selection_data=(data.x_train, data.y_train),
        seed=0,
    )
    final = {}
    record = keras.callbacks.LambdaCallback(
        on_train_end=lambda logs: final.update(test=model.evaluate(data.x_test, data.y_test, verbose=0)[1])
    )
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[record, sewa])

    # 3. What SeWA chose: global steps of the kept checkpoints, the learned probabilities s, the chosen
    #    steps, and the training loss of the installed average.
    print("kept checkpoints at steps:", sewa.checkpoint_steps.tolist())
    print("learned probabilities s:  ", np.round(sewa.probabilities, 2).tolist())
    print("SeWA chose steps:         ", sewa.selected_steps)
    print(f"training loss of the average {sewa.average_loss:.4f}, selection took {sewa.selection_time_s:.2f}s")
    print(
        f"test accuracy: last weights {final['test']:.4f}, SeWA average "
        f"{model.evaluate(data.x_test, data.y_test, verbose=0)[1]:.4f}"
    )

    # 4. Every other strategy from the same stored trajectory (nothing is retrained).
    sewa_weights = sewa.current_weights()
    for strategy in ("swa", "lawa", "ema"):
        flat, info = sewa.average_weights(strategy)
        sewa.install_weights(flat)
        print(f"{strategy:>5}: test accuracy {model.evaluate(data.x_test, data.y_test, verbose=0)[1]:.4f}")
    sewa.install_weights(sewa_weights, update_batchnorm=False)

    # 5. A .keras file saved after fit holds the averaged weights.
    path = os.path.join(tempfile.mkdtemp(), "sewa.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(data.x_test[:32], verbose=0), model.predict(data.x_test[:32], verbose=0))


if __name__ == "__main__":
    main()
