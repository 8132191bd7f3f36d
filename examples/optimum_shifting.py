"""Optimum shifting on MNIST-5k: train a CNN, shift its last layer to a flatter optimum, save.

Run: `python examples/optimum_shifting.py` (set KERAS_WTRAIN_TINY=1 for a run of a few seconds).
"""

import os
import tempfile

import keras
import numpy as np

from keras_wtrain.callbacks.optimum_shifting import OptimumShifting
from keras_wtrain.data import load_mnist5k
from keras_wtrain.models import build_model


def main():
    tiny = os.environ.get("KERAS_WTRAIN_TINY") == "1"
    data = load_mnist5k(train_size=200 if tiny else 1000)
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # 1. The MNIST CNN of keras_wtrain.models (Conv2D blocks + Dense head); jit_compile=True works.
    model = build_model("cnn", (28, 28, 1), data.num_classes)
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"], jit_compile=not tiny)  # XLA compile time

    # 2. The callback needs the training data (a callback cannot see fit's data). With the defaults it
    #    shifts the last Dense layer once, when training ends, on a class-stratified batch of 256 examples.
    #    The LambdaCallback before it records the training loss just before the shift.
    shifting = OptimumShifting(data=(data.x_train, data.y_train), seed=0)
    before = {}
    record = keras.callbacks.LambdaCallback(
        on_train_end=lambda logs: before.update(loss=model.evaluate(data.x_train, data.y_train, verbose=0)[0])
    )
    model.fit(
        data.x_train, data.y_train, epochs=1 if tiny else 15, batch_size=64, verbose=0, callbacks=[record, shifting]
    )

    # 3. What happened: the last kernel's norm shrank; the loss on the whole training set barely moved.
    after = model.evaluate(data.x_train, data.y_train, verbose=0)[0]
    for name, info in shifting.history[-1]["layers"].items():
        print(f"{name}: ‖V‖ {info['norm_before']:.3f} -> {info['norm_after']:.3f} in {info['systems']} system(s)")
    print(f"train loss {before['loss']:.6f} -> {after:.6f} after the shift")
    test = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    print(f"test accuracy {test['accuracy']:.4f}")

    # 4. A .keras file saved afterwards holds the shifted kernel.
    path = os.path.join(tempfile.mkdtemp(), "shifted.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(data.x_test[:32], verbose=0), model.predict(data.x_test[:32], verbose=0))


if __name__ == "__main__":
    main()
