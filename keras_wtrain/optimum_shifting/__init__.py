"""Optimum shifting (Zhou et al. 2024): move a linear layer to the least-norm exact solution of the same batch
equations, a flatter point with the same outputs on that batch."""

from keras_wtrain._core import backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.optimum_shifting.callback import OptimumShifting
from keras_wtrain.optimum_shifting.least_norm import minimum_norm_kernel
from keras_wtrain.optimum_shifting.shift import optimum_shift

__all__ = ["OptimumShifting", "minimum_norm_kernel", "optimum_shift"]
