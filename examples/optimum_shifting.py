"""Optimum shifting on MNIST-5k: train a CNN, shift its last layer to a flatter optimum, save.

Run: `python examples/optimum_shifting.py` (set KERAS_WTRAIN_TINY=1 for a run of a few seconds).
"""

import os
import tempfile

import keras
import numpy as np

from keras_wtrain.comparison.datasets import load_mnist5k
from keras_wtrain.comparison.models import build_model
from keras_wtrain.optimum_shifting.callback import OptimumShifting


def main():
    tiny = os.environ.get("KERAS_WTRAIN_TINY") == "1"
    data = load_mnist5k(train_size=200 if tiny else 1000)
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # 1. The MNIST CNN of keras_wtrain.comparison.models (Conv2D blocks + Dense head); jit_compile=True works.
    model = build_model("cnn", (28, 28, 1), data.num_classes)
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"], jit_compile=not tiny)  # XLA compile time

    # 2. The callback needs the training data (a callback cannot see fit's data). With the defaults it
    #    shifts the last Dense layer after every epoch (training continues from the shifted point) and
    #    once when training ends. Each shifting batch has half as many examples as the layer has live
    #    input dimensions (so there is freedom to use) and every class; a loss guard on 512 other
    #    training examples rolls back a shift that raises their loss by more than 2 % (+ 0.001).
    shifting = OptimumShifting(data=(data.x_train, data.y_train), seed=0)
    model.fit(data.x_train, data.y_train, epochs=1 if tiny else 20, batch_size=64, verbose=0, callbacks=[shifting])

    # 3. What happened at each shift: the live weights moved, ‖V‖ shrank, the guard loss stayed put.
    for entry in shifting.history:
        for name, info in entry["layers"].items():
            if not info.get("systems"):
                print(f"shift {entry['epoch']}: {name} skipped ({info['skipped']})")
                continue
            print(
                f"shift {entry['epoch']}: {name}: ‖V‖ {info['norm_before']:.3f} -> {info['norm_after']:.3f}, "
                f"live weights moved {100 * info['relative_change_live']:.1f} %, "
                f"{info['examples_per_system']} examples (live rank {info['live_rank']}), "
                f"guard loss {entry['loss_before']:.5f} -> {entry['loss_after']:.5f}, kept: {entry['kept']}"
            )
    test = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    print(f"test accuracy {test['accuracy']:.4f}")

    # 4. A .keras file saved afterwards holds the shifted kernel.
    path = os.path.join(tempfile.mkdtemp(), "shifted.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(data.x_test[:32], verbose=0), model.predict(data.x_test[:32], verbose=0))


if __name__ == "__main__":
    main()
