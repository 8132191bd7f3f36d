"""Flatness diagnostics of a model's loss: Hessian trace, top Hessian eigenvalue, sharpness, `FlatnessMonitor`.

Loss in inference mode, averaged over `data`; TensorFlow and JAX. Definitions: docs/flatness.md.
"""

from keras_wtrain._core import backend_guard as _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core.objective import mean_loss
from keras_wtrain.diagnostics.hessian import hessian_trace
from keras_wtrain.diagnostics.hessian import top_hessian_eigenvalue
from keras_wtrain.diagnostics.monitor import FlatnessMonitor
from keras_wtrain.diagnostics.perturbation import filter_normalized_direction
from keras_wtrain.diagnostics.perturbation import sharpness

__all__ = [
    "FlatnessMonitor",
    "filter_normalized_direction",
    "hessian_trace",
    "mean_loss",
    "sharpness",
    "top_hessian_eigenvalue",
]
