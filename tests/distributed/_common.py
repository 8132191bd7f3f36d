"""Shared pieces of the worker scripts of tests/distributed (run as `python <script>`, never imported by pytest).

Everything a worker trains is a function of fixed seeds: the data (numpy), the initial kernels (numpy, not Keras'
initializers, so two processes start from the same weights whatever state Keras' global seed is in) and the
batches (no shuffling).
"""

import json
import os

NUM_FEATURES = 16
NUM_CLASSES = 4
NUM_EXAMPLES = 512
BATCH_SIZE = 32  # global batch size: 16 steps per epoch
STEPS_PER_EPOCH = NUM_EXAMPLES // BATCH_SIZE


def guard_worker(lifetime_s=300):
    """Makes this worker die with its parent (Linux) and, whatever happens, after `lifetime_s` seconds."""
    import signal

    signal.alarm(lifetime_s)  # SIGALRM's default action ends the process
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def configure_tensorflow(inter_op_threads=1):
    """Small thread pools: the tests share two cores with the rest of the suite."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    return tf


def make_data(seed=0):
    """A learnable 4-class problem: `(x, y)` float32 features and int labels of a random linear teacher."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_EXAMPLES, NUM_FEATURES)).astype("float32")
    teacher = rng.normal(size=(NUM_FEATURES, NUM_CLASSES))
    y = np.argmax(x @ teacher + 0.5 * rng.normal(size=(NUM_EXAMPLES, NUM_CLASSES)), axis=1).astype("int32")
    return x, y


def build_model(weight_normalization=False, loss_noise=None, gradient_dropout=None, seed=0):
    """Dense(32, relu) -> Dense(4) (optionally weight-normalised), kernels drawn from numpy with `seed`.

    With `loss_noise` or `gradient_dropout` the model is a `keras_wtrain.randomness.Model` (seeded with `seed`).
    """
    import keras
    import numpy as np

    from keras_wtrain.layers import WeightNormalization
    from keras_wtrain.randomness import Model

    wrap = WeightNormalization if weight_normalization else (lambda layer: layer)
    inputs = keras.Input((NUM_FEATURES,))
    hidden = wrap(keras.layers.Dense(32, activation="relu", name="hidden"))(inputs)
    outputs = wrap(keras.layers.Dense(NUM_CLASSES, name="logits"))(hidden)
    if loss_noise is not None or gradient_dropout is not None:
        model = Model(inputs, outputs, loss_noise=loss_noise, gradient_dropout=gradient_dropout, seed=seed)
    else:
        model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        if len(variable.shape) == 2:
            fan_in = variable.shape[0]
            variable.assign(rng.normal(size=variable.shape).astype("float32") / np.sqrt(fan_in))
    return model


def compile_model(model):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def save_weights(model, path, **extra):
    """The model's weights, in `model.weights` order, as `w0, w1, ...` (and `extra` arrays) in an `.npz` file."""
    import numpy as np

    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    np.savez(path, **arrays, **extra)


def write_json(path, payload):
    """Writes `payload` as JSON atomically (the reader may poll for the file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
