"""Layer wrappers and layers of keras-wtrain."""

from keras_wtrain.layers.weight_normalization import MeanOnlyBatchNormalization
from keras_wtrain.layers.weight_normalization import WeightNormalization

__all__ = ["MeanOnlyBatchNormalization", "WeightNormalization"]
