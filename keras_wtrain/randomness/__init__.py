"""Loss noise and gradient dropout (Altarabichi et al. 2024): randomness injected in the training step.

Loss noise lives in `Model.compute_loss`; gradient dropout is the optimizer wrapper `GradientDropoutOptimizer`,
which `Model(gradient_dropout=...)` puts around its optimizer in `compile`; `wrap` gives an existing model both.
"""

from keras_wtrain._core import backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.randomness.gradient_dropout import GradientDropoutOptimizer
from keras_wtrain.randomness.model import Model
from keras_wtrain.randomness.ops import drop_gradients
from keras_wtrain.randomness.ops import gradient_keep_mask
from keras_wtrain.randomness.ops import loss_noise_factors
from keras_wtrain.randomness.ops import noisy_sample_weight
from keras_wtrain.randomness.ops import quantize_rate
from keras_wtrain.randomness.settings import Constant
from keras_wtrain.randomness.settings import GradientDropout
from keras_wtrain.randomness.settings import LinearDecay
from keras_wtrain.randomness.settings import LossNoise
from keras_wtrain.randomness.wrapping import WrappedModel
from keras_wtrain.randomness.wrapping import wrap

__all__ = [
    "Constant",
    "GradientDropout",
    "GradientDropoutOptimizer",
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
