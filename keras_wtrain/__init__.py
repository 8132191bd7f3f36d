"""keras-wtrain: weight-space training techniques for Keras 3."""

from keras_wtrain import callbacks
from keras_wtrain import data
from keras_wtrain import layers
from keras_wtrain import models
from keras_wtrain.layers.weight_normalization import fold_weight_normalization
from keras_wtrain.layers.weight_normalization import initialize_weight_normalization

__version__ = "0.1.0"

__all__ = [
    "callbacks",
    "data",
    "fold_weight_normalization",
    "initialize_weight_normalization",
    "layers",
    "models",
]
