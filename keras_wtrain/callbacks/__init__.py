"""The callbacks of keras-wtrain, where Keras users look for them (re-exported from their technique packages)."""

from keras_wtrain._core.batchnorm import BatchNormStatisticsUpdate
from keras_wtrain.averaging.lawa import LAWA
from keras_wtrain.averaging.recorder import TrajectoryRecorder
from keras_wtrain.averaging.running import EMA
from keras_wtrain.averaging.running import SWA
from keras_wtrain.averaging.sewa import SeWA
from keras_wtrain.diagnostics.monitor import FlatnessMonitor
from keras_wtrain.optimum_shifting.callback import OptimumShifting
from keras_wtrain.weight_normalization.data_init import WeightNormalizationInitializer

__all__ = [
    "BatchNormStatisticsUpdate",
    "EMA",
    "LAWA",
    "FlatnessMonitor",
    "OptimumShifting",
    "SWA",
    "SeWA",
    "TrajectoryRecorder",
    "WeightNormalizationInitializer",
]
