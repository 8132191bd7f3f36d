"""Files saved by keras_wtrain at b57a057 load in a fresh process the way a user loads them.

Keras 3 imports only `keras*` modules by itself when it loads a file, so the classes must be registered
first: `import keras` then `import keras_wtrain` does it (the top-level import registers the saved
classes when Keras is already imported), as does `keras_wtrain.register_serializables()` when Keras comes
second. Nothing else of keras_wtrain is touched before `load_model`.
"""

import pathlib
import subprocess
import sys

import pytest

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "b57a057"

PREAMBLES = {
    "keras_first": "import keras\nimport keras_wtrain\n",
    "keras_second": "import keras_wtrain\nkeras_wtrain.register_serializables()\nimport keras\n",
}

CODE = """
import sys
import numpy as np
model = keras.saving.load_model(sys.argv[1])
x = np.random.RandomState(0).rand(4, 8, 8, 1).astype("float32")
expected = np.load(sys.argv[2])
print(float(np.max(np.abs(keras.ops.convert_to_numpy(model(x)) - expected))))
"""


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("preamble", sorted(PREAMBLES))
@pytest.mark.parametrize("name", ["functional_model", "wrapped_model"])
def test_b57a057_file_loads_in_a_fresh_process(name, preamble):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PREAMBLES[preamble] + CODE,
            str(FIXTURES / f"{name}.keras"),
            str(FIXTURES / f"{name}_out.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) <= 1e-5
