"""Hyperparameter search over keras-wtrain techniques with Keras Tuner: `search_space`, `HyperModel` and `PSO`.

Keras Tuner is optional (`pip install keras-wtrain[tuner]`): the names here are imported on first use.
"""

import importlib

__all__ = [
    "PSO",
    "PSOOracle",
    "HyperModel",
    "TechniqueConfig",
    "search_space",
]

_LOCATIONS = {
    "PSO": "keras_wtrain.tuning.pso",
    "PSOOracle": "keras_wtrain.tuning.pso_oracle",
    "HyperModel": "keras_wtrain.tuning.spaces",
    "TechniqueConfig": "keras_wtrain.tuning.technique_config",
    "search_space": "keras_wtrain.tuning.spaces",
}


def __getattr__(name):
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'keras_wtrain.tuning' has no attribute {name!r}")
    try:
        module = importlib.import_module(_LOCATIONS[name])
    except ModuleNotFoundError as error:
        if error.name == "keras_tuner":
            raise ImportError(
                f"keras_wtrain.tuning.{name} needs Keras Tuner: pip install 'keras-wtrain[tuner]' "
                "(or pip install keras-tuner)."
            ) from error
        raise
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
