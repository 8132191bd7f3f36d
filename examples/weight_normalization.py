"""Weight normalization on MNIST-5k: wrap, initialise from data, train, fold, save.

Run: `python examples/weight_normalization.py` (set KERAS_WTRAIN_TINY=1 for a 20-second run).
"""

import os
import tempfile

import keras
import numpy as np

import keras_wtrain
from keras_wtrain.comparison.datasets import load_mnist5k
from keras_wtrain.layers import WeightNormalization


def main():
    tiny = os.environ.get("KERAS_WTRAIN_TINY") == "1"
    data = load_mnist5k(train_size=256 if tiny else None)
    keras.utils.set_random_seed(0)

    # 1. Wrap every Dense and Conv2D layer of a small CNN.
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            WeightNormalization(keras.layers.Conv2D(32, 3, padding="same", activation="relu")),
            keras.layers.MaxPooling2D(),
            WeightNormalization(keras.layers.Conv2D(64, 3, padding="same", activation="relu")),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            WeightNormalization(keras.layers.Dense(128, activation="relu")),
            WeightNormalization(keras.layers.Dense(10)),
        ]
    )

    # 2. Data-dependent initialisation (paper §3): once, eagerly, on one real batch.
    keras_wtrain.initialize_weight_normalization(model, data.x_train[:256])

    # 3. Train as usual; `jit_compile=True` works.
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.fit(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=1 if tiny else 4,
        batch_size=64,
        verbose=0 if tiny else 2,
    )
    _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    print(f"test accuracy (weight-normalised CNN): {accuracy:.4f}")

    # 4. Fold back to plain Keras layers for serving: same outputs, no keras_wtrain layers.
    plain = keras_wtrain.fold_weight_normalization(model)
    difference = np.abs(plain.predict(data.x_test, verbose=0) - model.predict(data.x_test, verbose=0)).max()
    kinds = [type(layer).__name__ for layer in plain.layers]
    print(f"folded model: max |difference| = {difference:.2e}, layers = {kinds}")

    # 5. Both models save to and load from .keras files.
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "wn_cnn.keras")
        model.save(path)
        restored = keras.models.load_model(path)
        same = np.array_equal(restored.predict(data.x_test, verbose=0), model.predict(data.x_test, verbose=0))
        print(f"reloaded .keras model gives identical predictions: {same}")
    return accuracy


if __name__ == "__main__":
    main()
