"""A `.keras` file of this version, saved in one process, loads in a fresh one the way a user loads it.

Keras 3 imports only `keras*` modules by itself when it loads a file, so the classes must be registered first:
`import keras` then `import keras_wtrain` does it (the top-level import registers the saved classes when Keras is
already imported), as does `keras_wtrain.register_serializables()` when Keras comes second. Nothing else of
keras_wtrain is touched before `load_model`.
"""

import os
import subprocess
import sys

import pytest

SAVE = """
import sys
import keras
import numpy as np
import keras_wtrain
from keras_wtrain.layers import MeanOnlyBatchNormalization, ShadowWeights, WeightNormalization
from keras_wtrain.shadow_weights import transforms

keras.utils.set_random_seed(0)
x = np.random.RandomState(0).rand(4, 8, 8, 1).astype("float32")
inputs = keras.Input((8, 8, 1))
h = WeightNormalization(keras.layers.Conv2D(4, 3, activation="relu"))(inputs)
h = ShadowWeights(keras.layers.Conv2D(4, 3), transform=transforms.RandomTranslate(0.3), seed=3)(h)
h = MeanOnlyBatchNormalization()(h)
h = keras.layers.Flatten()(h)
outputs = WeightNormalization(keras.layers.Dense(3))(h)
model = keras_wtrain.Model(inputs, outputs, loss_noise=keras_wtrain.LossNoise(0.3), gradient_dropout=0.1, seed=7)
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
model.save(sys.argv[1] + "/functional_model.keras")
np.save(sys.argv[1] + "/functional_model_out.npy", keras.ops.convert_to_numpy(model(x)))

base = keras.Sequential([keras.layers.Flatten(), WeightNormalization(keras.layers.Dense(5)), keras.layers.Dense(2)])
wrapped = keras_wtrain.wrap(base, gradient_dropout=keras_wtrain.GradientDropout(0.2, rescale=True), seed=1)
wrapped.compile("sgd", "mse")
wrapped.fit(x, np.zeros((4, 2)), epochs=1, verbose=0)
wrapped.save(sys.argv[1] + "/wrapped_model.keras")
np.save(sys.argv[1] + "/wrapped_model_out.npy", keras.ops.convert_to_numpy(wrapped(x)))
"""

PREAMBLES = {
    "keras_first": "import keras\nimport keras_wtrain\n",
    "keras_second": "import keras_wtrain\nkeras_wtrain.register_serializables()\nimport keras\n",
}

LOAD = """
import sys
import numpy as np
model = keras.saving.load_model(sys.argv[1])
x = np.random.RandomState(0).rand(4, 8, 8, 1).astype("float32")
print(float(np.max(np.abs(keras.ops.convert_to_numpy(model(x)) - np.load(sys.argv[2])))))
expected = np.load(sys.argv[2])
model.fit(x, expected.argmax(-1) if expected.shape[-1] == 3 else expected, epochs=1, verbose=0)  # trains on
"""

ENV = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    result = subprocess.run(
        [sys.executable, "-c", SAVE, str(folder)], capture_output=True, text=True, timeout=300, env=ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("preamble", sorted(PREAMBLES))
@pytest.mark.parametrize("name", ["functional_model", "wrapped_model"])
def test_a_saved_file_loads_predicts_and_trains_in_a_fresh_process(saved, name, preamble):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PREAMBLES[preamble] + LOAD,
            str(saved / f"{name}.keras"),
            str(saved / f"{name}_out.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) <= 1e-5
