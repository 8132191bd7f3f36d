"""Layer wrappers and layers of keras-wtrain.

Modules: `kernel_reparametrization` (the base class of kernel-reparametrising
wrappers and model folding), `weight_normalization`,
`weight_normalization_init` (its data-dependent init),
`mean_only_batch_normalization`, `shadow_weights` (the layer),
`shadow_weights_models` (functions acting on a model's shadow-weight
layers), `transforms` (the weight transforms of shadow weights) and
`kernel_swap` (calling a layer with a variable replaced by a tensor).
"""

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.layers import transforms
from keras_wtrain.layers.kernel_reparametrization import KernelReparametrization
from keras_wtrain.layers.kernel_reparametrization import fold_layers
from keras_wtrain.layers.mean_only_batch_normalization import MeanOnlyBatchNormalization
from keras_wtrain.layers.shadow_weights import ShadowWeights
from keras_wtrain.layers.shadow_weights_models import authors_wrap
from keras_wtrain.layers.shadow_weights_models import desire_sparsity
from keras_wtrain.layers.shadow_weights_models import inference_kernels_in_training
from keras_wtrain.layers.shadow_weights_models import set_weight_mode
from keras_wtrain.layers.shadow_weights_models import shadow_weight_layers
from keras_wtrain.layers.weight_normalization import WeightNormalization
from keras_wtrain.layers.weight_normalization import fold_weight_normalization
from keras_wtrain.layers.weight_normalization import weight_normalization_layers
from keras_wtrain.layers.weight_normalization_init import initialize_weight_normalization
from keras_wtrain.layers.weight_normalization_init import needs_data_init

__all__ = [
    "KernelReparametrization",
    "MeanOnlyBatchNormalization",
    "ShadowWeights",
    "WeightNormalization",
    "authors_wrap",
    "desire_sparsity",
    "fold_layers",
    "fold_weight_normalization",
    "initialize_weight_normalization",
    "inference_kernels_in_training",
    "needs_data_init",
    "set_weight_mode",
    "shadow_weight_layers",
    "transforms",
    "weight_normalization_layers",
]
