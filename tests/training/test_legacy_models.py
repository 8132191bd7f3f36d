"""Models saved by keras_wtrain at b57a057 (gradient dropout then in the model's train_step) still load and train."""

import pathlib

import keras
import numpy as np
import pytest

import keras_wtrain.layers  # noqa: F401 (registers the layers the files use)
from keras_wtrain.optimizers import GradientDropoutOptimizer
from keras_wtrain.training.model import Model

pytestmark = [
    pytest.mark.tensorflow_only,
    # The file has no state for the wrapped optimizer under the wrapper's path (its state is loaded from the old path).
    pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer"),
]

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "b57a057"


@pytest.mark.parametrize(
    "name, inner, target",
    [
        ("functional_model", keras.optimizers.Adam, np.array([0, 1, 2, 0])),
        ("wrapped_model", keras.optimizers.SGD, np.zeros((4, 2), "float32")),
    ],
)
def test_b57a057_file_loads_predicts_and_trains(name, inner, target):
    x = np.random.RandomState(0).rand(4, 8, 8, 1).astype("float32")  # the inputs of make_fixtures.py
    model = keras.saving.load_model(FIXTURES / f"{name}.keras")
    assert isinstance(model, Model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), np.load(FIXTURES / f"{name}_out.npy"), rtol=0, atol=1e-5
    )
    # The saved plain optimizer is now wrapped by the model's compile; its saved state went to the inner optimizer.
    assert isinstance(model.optimizer, GradientDropoutOptimizer) and isinstance(model.optimizer.inner_optimizer, inner)
    assert int(model.optimizer.iterations) == 1
    before = [np.array(w) for w in model.trainable_weights]
    model.train_on_batch(x, target)
    assert int(model.optimizer.iterations) == 2
    assert any(not np.array_equal(a, np.array(b)) for a, b in zip(before, model.trainable_weights))
