"""keras-wtrain: weight-space training techniques for Keras 3.

Every public name is loaded on first use (module `__getattr__`), so
`import keras_wtrain` on its own is cheap and imports neither Keras nor
TensorFlow: the command line (`keras_wtrain.comparison.cli`) answers `--help` and bad
arguments before any backend starts.

When Keras is already imported, `import keras_wtrain` also imports the modules
whose classes `.keras` files name (layers, models, optimizers), which registers
them with Keras, so `import keras`, `import keras_wtrain`, then
`keras.saving.load_model(path)` works as with any Keras library (Keras 3 only
imports `keras*` modules by itself when loading). Importing Keras after
keras_wtrain, call `keras_wtrain.register_serializables()` (or touch any
public name) before loading a file.

Example:

```python
import keras
import keras_wtrain

layer = keras_wtrain.layers.WeightNormalization(keras.layers.Dense(4))
model = keras.Sequential([keras.Input((3,)), layer])
```
"""

import importlib
import sys

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself)
_LAZY = {
    # the technique packages
    "weight_normalization": ("keras_wtrain.weight_normalization", None),
    "shadow_weights": ("keras_wtrain.shadow_weights", None),
    "randomness": ("keras_wtrain.randomness", None),
    "averaging": ("keras_wtrain.averaging", None),
    "optimum_shifting": ("keras_wtrain.optimum_shifting", None),
    "diagnostics": ("keras_wtrain.diagnostics", None),
    "tuning": ("keras_wtrain.tuning", None),
    "comparison": ("keras_wtrain.comparison", None),
    # the namespaces Keras users look in
    "callbacks": ("keras_wtrain.callbacks", None),
    "layers": ("keras_wtrain.layers", None),
    "optimizers": ("keras_wtrain.optimizers", None),
    # the most used names
    "GradientDropout": ("keras_wtrain.randomness.settings", "GradientDropout"),
    "LossNoise": ("keras_wtrain.randomness.settings", "LossNoise"),
    "Model": ("keras_wtrain.randomness.model", "Model"),
    "compare": ("keras_wtrain.comparison.harness", "compare"),
    "fold_weight_normalization": ("keras_wtrain.weight_normalization.wrapper", "fold_weight_normalization"),
    "initialize_weight_normalization": (
        "keras_wtrain.weight_normalization.data_init",
        "initialize_weight_normalization",
    ),
    "set_weight_mode": ("keras_wtrain.shadow_weights.modes", "set_weight_mode"),
    "wrap": ("keras_wtrain.randomness.wrapping", "wrap"),
    "wrap_layers": ("keras_wtrain._core.model_wrapping", "wrap_layers"),
}

__all__ = sorted([*_LAZY, "register_serializables"])

# The modules holding every class that `.keras` files name (each class is registered with Keras on import).
_SERIALIZABLE_MODULES = (
    "keras_wtrain.weight_normalization",
    "keras_wtrain.shadow_weights",
    "keras_wtrain.randomness",
    "keras_wtrain.averaging",
    "keras_wtrain.optimum_shifting",
    "keras_wtrain.diagnostics",
    "keras_wtrain._core.batchnorm",
)


def register_serializables():
    """Registers every keras-wtrain class that `.keras` files name with Keras (imports their modules).

    Needed only when Keras is imported after keras_wtrain and a file is loaded before any keras-wtrain name
    is used; `import keras_wtrain` does it when Keras is already imported.

    Example:

    ```python
    import keras_wtrain

    keras_wtrain.register_serializables()
    import keras
    assert keras.saving.get_registered_object("keras_wtrain>WeightNormalization") is not None
    ```
    """
    for module_name in _SERIALIZABLE_MODULES:
        importlib.import_module(module_name)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_wtrain' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if "keras" in sys.modules:  # Keras is loaded already, so registering the saved classes costs nothing more
    register_serializables()
