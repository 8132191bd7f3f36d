"""Callbacks of keras-wtrain."""

from keras_wtrain.callbacks.optimum_shifting import OptimumShifting
from keras_wtrain.callbacks.optimum_shifting import minimum_norm_kernel
from keras_wtrain.callbacks.optimum_shifting import optimum_shift
from keras_wtrain.callbacks.weight_averaging import SelectiveWeightAveraging
from keras_wtrain.callbacks.weight_averaging import SeWA
from keras_wtrain.callbacks.weight_averaging import update_batchnorm_statistics
from keras_wtrain.callbacks.weight_normalization_init import WeightNormalizationInitializer

__all__ = [
    "OptimumShifting",
    "SeWA",
    "SelectiveWeightAveraging",
    "WeightNormalizationInitializer",
    "minimum_norm_kernel",
    "optimum_shift",
    "update_batchnorm_statistics",
]
