"""Callbacks of keras-wtrain."""

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.batchnorm import update_batchnorm_statistics
from keras_wtrain.callbacks.averaging import AVERAGING_RULES
from keras_wtrain.callbacks.averaging import Average
from keras_wtrain.callbacks.averaging import AveragingContext
from keras_wtrain.callbacks.batchnorm_update import BatchNormStatisticsUpdate
from keras_wtrain.callbacks.checkpoint_buffer import CheckpointBuffer
from keras_wtrain.callbacks.least_norm import minimum_norm_kernel
from keras_wtrain.callbacks.model_shift import optimum_shift
from keras_wtrain.callbacks.optimum_shifting import OptimumShifting
from keras_wtrain.callbacks.selection import select_checkpoints
from keras_wtrain.callbacks.selection_objective import SelectionObjective
from keras_wtrain.callbacks.trajectory_recorder import TrajectoryRecorder
from keras_wtrain.callbacks.weight_averaging import SelectiveWeightAveraging
from keras_wtrain.callbacks.weight_averaging import SeWA
from keras_wtrain.callbacks.weight_normalization_init import WeightNormalizationInitializer

__all__ = [
    "AVERAGING_RULES",
    "Average",
    "AveragingContext",
    "BatchNormStatisticsUpdate",
    "CheckpointBuffer",
    "OptimumShifting",
    "SeWA",
    "SelectionObjective",
    "SelectiveWeightAveraging",
    "TrajectoryRecorder",
    "WeightNormalizationInitializer",
    "minimum_norm_kernel",
    "optimum_shift",
    "select_checkpoints",
    "update_batchnorm_statistics",
]
