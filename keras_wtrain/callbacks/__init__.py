"""Callbacks of keras-wtrain."""

from keras_wtrain.callbacks.weight_normalization_init import WeightNormalizationInitializer

__all__ = ["WeightNormalizationInitializer"]
