"""Loss noise and gradient dropout on MNIST-5k: wrap a model, use schedules, check what changed, save.

Run: `python examples/loss_noise_gradient_dropout.py` (set KERAS_WTRAIN_TINY=1 for a short run).
"""

import os
import tempfile

import keras
import numpy as np

from keras_wtrain.comparison.datasets import load_mnist5k
from keras_wtrain.comparison.models import build_model
from keras_wtrain.randomness.model import Model
from keras_wtrain.randomness.settings import GradientDropout
from keras_wtrain.randomness.settings import LinearDecay
from keras_wtrain.randomness.settings import LossNoise
from keras_wtrain.randomness.wrapping import wrap


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        # XLA works (and is what the benchmark times); the tiny run skips its compile time.
        jit_compile=os.environ.get("KERAS_WTRAIN_TINY") != "1",
    )
    return model


def weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]


def train(model, data, epochs, tiny):
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0 if tiny else 2)
    return model.evaluate(data.x_test, data.y_test, verbose=0)[1]


def main():
    tiny = os.environ.get("KERAS_WTRAIN_TINY") == "1"
    data = load_mnist5k(train_size=256 if tiny else None)
    epochs = 1 if tiny else 5

    # 1. A plain Keras CNN, trained as usual (the baseline).
    keras.utils.set_random_seed(0)
    baseline = compile_model(build_model("cnn", (28, 28, 1), 10))
    print(f"plain CNN                         test accuracy {train(baseline, data, epochs, tiny):.4f}")

    # 2. The same architecture wrapped with the library defaults: sigma = 0.3 loss noise and
    #    p = 0.1 gradient dropout (no 1/(1-p) rescaling, as in the authors' code).
    keras.utils.set_random_seed(0)
    cnn = build_model("cnn", (28, 28, 1), 10)
    model = compile_model(wrap(cnn, loss_noise=LossNoise(), gradient_dropout=GradientDropout(), seed=0))
    print(f"loss noise 0.3 + grad dropout 0.1 test accuracy {train(model, data, epochs, tiny):.4f}")
    # `wrap` shares the layers: the original `cnn` holds the trained weights too.
    same = np.allclose(cnn.predict(data.x_test[:8], verbose=0), model.predict(data.x_test[:8], verbose=0))
    print(f"wrapped and original model share weights: {same}")

    # 3. Schedules: both strengths decay linearly to 0 over training (steps = training batches).
    steps = epochs * int(np.ceil(len(data.x_train) / 64))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    outputs = build_model("cnn", (28, 28, 1), 10)(inputs)
    scheduled = Model(
        inputs,
        outputs,
        loss_noise=LossNoise(LinearDecay(0.5, 0.0, decay_steps=steps)),
        gradient_dropout=GradientDropout(LinearDecay(0.2, 0.0, decay_steps=steps)),
        seed=0,
    )
    compile_model(scheduled)
    print(f"decaying schedules                test accuracy {train(scheduled, data, epochs, tiny):.4f}")
    print(f"schedule step after training: {scheduled.randomness_step} (= {steps} batches)")

    # 4. What gradient dropout does to one plain-SGD step: of the weights a plain step moves
    #    (zero pixels give zero gradients), about p stay where they were.
    base = build_model("mlp", (28, 28, 1), 10)
    plain = keras.models.clone_model(base)
    plain.set_weights(base.get_weights())
    probe = wrap(base, gradient_dropout=0.25, seed=1)
    before = weights(base)
    for m in (plain, probe):
        m.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.train_on_batch(data.x_train[:64], data.y_train[:64])
    moved_by_plain = np.concatenate([(w != b).ravel() for w, b in zip(weights(plain), before)])
    unchanged = np.concatenate([(w == b).ravel() for w, b in zip(weights(probe), before)])
    fraction = unchanged[moved_by_plain].mean()
    print(f"of the weights one plain SGD step moves, fraction left unchanged with p = 0.25: {fraction:.4f}")

    # 5. The configuration is saved with the model.
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "noisy_cnn.keras")
        scheduled.save(path)
        restored = keras.models.load_model(path)
        print(f"reloaded: loss_noise={restored.loss_noise}, gradient_dropout={restored.gradient_dropout}")
    return fraction


if __name__ == "__main__":
    main()
