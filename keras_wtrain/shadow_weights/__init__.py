"""Shadow-weight augmentation, WAS (Zhuang et al. 2024): train with randomly transformed shadow weights, infer with
the plain ones (AOM) or with a fixed, cheaper kernel (DOM)."""

from keras_wtrain._core import backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.shadow_weights import transforms
from keras_wtrain.shadow_weights.modes import authors_wrap
from keras_wtrain.shadow_weights.modes import desire_sparsity
from keras_wtrain.shadow_weights.modes import inference_kernels_in_training
from keras_wtrain.shadow_weights.modes import set_weight_mode
from keras_wtrain.shadow_weights.modes import shadow_weight_layers
from keras_wtrain.shadow_weights.wrapper import ShadowWeights

__all__ = [
    "ShadowWeights",
    "authors_wrap",
    "desire_sparsity",
    "inference_kernels_in_training",
    "set_weight_mode",
    "shadow_weight_layers",
    "transforms",
]
