"""Layer wrappers and layers of keras-wtrain."""

from keras_wtrain.layers import transforms
from keras_wtrain.layers.shadow_weights import ShadowWeights
from keras_wtrain.layers.shadow_weights import authors_wrap
from keras_wtrain.layers.shadow_weights import desire_sparsity
from keras_wtrain.layers.shadow_weights import set_weight_mode
from keras_wtrain.layers.shadow_weights import shadow_weight_layers
from keras_wtrain.layers.weight_normalization import MeanOnlyBatchNormalization
from keras_wtrain.layers.weight_normalization import WeightNormalization

__all__ = [
    "MeanOnlyBatchNormalization",
    "ShadowWeights",
    "WeightNormalization",
    "authors_wrap",
    "desire_sparsity",
    "set_weight_mode",
    "shadow_weight_layers",
    "transforms",
]
