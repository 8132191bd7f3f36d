"""The layers of keras-wtrain, where Keras users look for them (re-exported from their technique packages).

`wrap_layers` puts a wrapper around chosen layers of an existing functional or Sequential model.
"""

from keras_wtrain._core.kernel_reparametrization import KernelReparametrization
from keras_wtrain._core.model_wrapping import wrap_layers
from keras_wtrain.shadow_weights.wrapper import ShadowWeights
from keras_wtrain.weight_normalization.mean_only_batch_normalization import MeanOnlyBatchNormalization
from keras_wtrain.weight_normalization.wrapper import WeightNormalization

__all__ = [
    "KernelReparametrization",
    "MeanOnlyBatchNormalization",
    "ShadowWeights",
    "WeightNormalization",
    "wrap_layers",
]
