"""keras-wtrain: weight-space training techniques for Keras 3."""

from keras_wtrain import callbacks
from keras_wtrain import data
from keras_wtrain import layers
from keras_wtrain import models
from keras_wtrain import training
from keras_wtrain import tuning
from keras_wtrain.layers.shadow_weights import set_weight_mode
from keras_wtrain.layers.weight_normalization import fold_weight_normalization
from keras_wtrain.layers.weight_normalization import initialize_weight_normalization
from keras_wtrain.training.model import Model
from keras_wtrain.training.model import wrap
from keras_wtrain.training.randomness import GradientDropout
from keras_wtrain.training.randomness import LossNoise

__version__ = "0.1.0"

__all__ = [
    "GradientDropout",
    "LossNoise",
    "Model",
    "callbacks",
    "data",
    "fold_weight_normalization",
    "initialize_weight_normalization",
    "layers",
    "models",
    "set_weight_mode",
    "training",
    "tuning",
    "wrap",
]
