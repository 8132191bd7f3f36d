"""The optimizer wrappers of keras-wtrain, where Keras users look for them (re-exported from their packages)."""

from keras_wtrain.randomness.gradient_dropout import GradientDropoutOptimizer

__all__ = ["GradientDropoutOptimizer"]
