"""Weight normalization (Salimans & Kingma 2016): `w = g * v / ||v||`, data-dependent init, fold for serving."""

from keras_wtrain._core import backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.weight_normalization.data_init import WeightNormalizationInitializer
from keras_wtrain.weight_normalization.data_init import initialize_weight_normalization
from keras_wtrain.weight_normalization.data_init import needs_data_init
from keras_wtrain.weight_normalization.mean_only_batch_normalization import MeanOnlyBatchNormalization
from keras_wtrain.weight_normalization.wrapper import WeightNormalization
from keras_wtrain.weight_normalization.wrapper import fold_weight_normalization
from keras_wtrain.weight_normalization.wrapper import weight_normalization_layers

__all__ = [
    "MeanOnlyBatchNormalization",
    "WeightNormalization",
    "WeightNormalizationInitializer",
    "fold_weight_normalization",
    "initialize_weight_normalization",
    "needs_data_init",
    "weight_normalization_layers",
]
