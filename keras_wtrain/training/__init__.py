"""Training-step techniques: loss noise and gradient dropout (arXiv:2404.03992).

Gradient dropout itself is the optimizer wrapper `keras_wtrain.optimizers.GradientDropoutOptimizer`, which
`Model(gradient_dropout=...)` puts around its optimizer in `compile`.
"""

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.training.model import Model
from keras_wtrain.training.randomness import Constant
from keras_wtrain.training.randomness import GradientDropout
from keras_wtrain.training.randomness import LinearDecay
from keras_wtrain.training.randomness import LossNoise
from keras_wtrain.training.randomness import drop_gradients
from keras_wtrain.training.randomness import gradient_keep_mask
from keras_wtrain.training.randomness import loss_noise_factors
from keras_wtrain.training.randomness import noisy_sample_weight
from keras_wtrain.training.randomness import quantize_rate
from keras_wtrain.training.wrapping import WrappedModel
from keras_wtrain.training.wrapping import wrap

__all__ = [
    "Constant",
    "GradientDropout",
    "LinearDecay",
    "LossNoise",
    "Model",
    "WrappedModel",
    "drop_gradients",
    "gradient_keep_mask",
    "loss_noise_factors",
    "noisy_sample_weight",
    "quantize_rate",
    "wrap",
]
