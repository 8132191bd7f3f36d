"""Shadow-weight augmentation (WAS) on MNIST-5k: train with T(PW), infer in AOM and DOM, count zeros, save.

Run: `python examples/shadow_weights.py` (set KERAS_WTRAIN_TINY=1 for a short run).
"""

import os
import tempfile

import keras
import numpy as np

from keras_wtrain.comparison.datasets import load_mnist5k
from keras_wtrain.shadow_weights import transforms
from keras_wtrain.shadow_weights.modes import desire_sparsity
from keras_wtrain.shadow_weights.modes import set_weight_mode
from keras_wtrain.shadow_weights.wrapper import ShadowWeights


def main():
    tiny = os.environ.get("KERAS_WTRAIN_TINY") == "1"
    data = load_mnist5k(train_size=256 if tiny else None)
    x_test, y_test = (data.x_test[:200], data.y_test[:200]) if tiny else (data.x_test, data.y_test)
    keras.utils.set_random_seed(0)

    # 1. The stem stays plain (as in the authors' code); the second 3x3 conv trains with the authors'
    #    crop-and-stretch (transform="auto") and, on half of the steps, with its DOM kernel (a fixed one-tap
    #    shift), so that DOM serves; the hidden Dense layer with a DropConnect mask (a weight-space transform).
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            ShadowWeights(
                keras.layers.Conv2D(64, 3, padding="same", activation="relu"), seed=0, desire_probability=0.5
            ),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            ShadowWeights(keras.layers.Dense(128, activation="relu"), transform=transforms.DropConnect(0.5), seed=1),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.fit(data.x_train, data.y_train, epochs=1 if tiny else 4, batch_size=32, verbose=0 if tiny else 2)

    # 2. Accuracy-oriented mode (default): inference with the plain weights.
    _, aom = model.evaluate(x_test, y_test, verbose=0)
    # 3. Desire-oriented mode: inference with one fixed shadow kernel per layer (here: shifted / masked).
    #    A model with BatchNormalization would pass `data=data.x_train` to re-estimate its statistics for DOM.
    set_weight_mode(model, "desire")
    _, dom = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy: AOM {aom:.4f}, DOM {dom:.4f}")
    for row in desire_sparsity(model):
        saved = 1 - row["macs_desire"] / row["macs_plain"]
        print(
            f"{row['name']}: non-zero weights {row['nonzero_desire']}/{row['entries']}, "
            f"multiply-adds per example {row['macs_desire']:,} vs {row['macs_plain']:,} ({saved:.1%} fewer)"
        )

    # 4. The mode is part of the config: a saved DOM model loads in DOM.
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "shadow_cnn.keras")
        model.save(path)
        restored = keras.models.load_model(path)
        same = np.array_equal(restored.predict(x_test, verbose=0), model.predict(x_test, verbose=0))
        print(f"reloaded model mode: {restored.layers[2].mode}; identical predictions: {same}")
    set_weight_mode(model, "accuracy")
    return aom, dom


if __name__ == "__main__":
    main()
