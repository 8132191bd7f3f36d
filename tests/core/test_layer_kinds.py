"""Layer-kind predicates: one answer to "which layers does a technique act on"."""

import keras
import pytest

from keras_wtrain._core import layer_kinds
from keras_wtrain.layers import ShadowWeights
from keras_wtrain.layers import WeightNormalization


@pytest.mark.parametrize(
    "factory, expected",
    [
        (lambda: keras.layers.Conv2D(4, 3), True),
        (lambda: keras.layers.Conv2D(4, (3, 5)), True),
        (lambda: keras.layers.Conv1D(4, 3), True),
        (lambda: keras.layers.Conv3D(4, 3), True),
        (lambda: keras.layers.DepthwiseConv2D(3), True),
        (lambda: keras.layers.DepthwiseConv1D(5), True),
        (lambda: keras.layers.Conv2D(4, 1), False),
        (lambda: keras.layers.Conv2D(4, (1, 3)), False),
        (lambda: keras.layers.DepthwiseConv2D(2), False),
        (lambda: keras.layers.Conv2DTranspose(4, 3), False),
        (lambda: keras.layers.SeparableConv2D(4, 3), False),
        (lambda: keras.layers.Dense(4), False),
        (lambda: WeightNormalization(keras.layers.Conv2D(4, 3)), False),
    ],
)
def test_augmentable_convolution_is_the_authors_wrap_rule(factory, expected):
    assert layer_kinds.is_augmentable_convolution(factory()) is expected
    assert layer_kinds.is_augmentable_convolution(keras.layers.Conv2D(4, 5), min_kernel_size=5)
    assert not layer_kinds.is_augmentable_convolution(keras.layers.Conv2D(4, 3), min_kernel_size=5)


@pytest.mark.parametrize(
    "factory, input_shape, axes",
    [
        (lambda: keras.layers.Dense(5), (None, 3), [(0,)]),
        (lambda: keras.layers.Conv2D(4, 3), (None, 6, 6, 2), [(0, 1, 2)]),
        (lambda: keras.layers.Conv1DTranspose(4, 3), (None, 6, 2), [(0, 2)]),
        (lambda: keras.layers.DepthwiseConv2D(3), (None, 6, 6, 2), [(0, 1)]),
        (lambda: keras.layers.SeparableConv2D(4, 3), (None, 6, 6, 2), [(0, 1, 2)]),
        (lambda: keras.layers.GRU(4), (None, 5, 3), [(0,), (0,)]),
    ],
)
def test_weight_normalization_kernels_and_axes(factory, input_shape, axes):
    layer = factory()
    assert layer_kinds.supports_weight_normalization(layer)
    layer.build(input_shape)
    specs = layer_kinds.weight_normalization_kernels(layer)
    assert [a for _, a in specs] == axes
    if isinstance(layer, keras.layers.SeparableConv2D):
        assert specs[0][0] is layer.pointwise_kernel


def test_unsupported_layers():
    for layer in (keras.layers.BatchNormalization(), keras.layers.Flatten(), keras.layers.Embedding(3, 2)):
        assert not layer_kinds.supports_weight_normalization(layer)
        assert not layer_kinds.supports_shadow_weights(layer)
        assert layer_kinds.weight_normalization_kernels(layer) is None
    assert not layer_kinds.supports_shadow_weights(keras.layers.LSTM(3))
    assert not layer_kinds.supports_shadow_weights(WeightNormalization(keras.layers.SeparableConv2D(3, 3)))
    assert not layer_kinds.supports_shadow_weights(ShadowWeights(keras.layers.Dense(3)))


def test_shadow_weights_kernel_and_spatial_axes():
    conv = keras.layers.SeparableConv2D(4, 3)
    conv.build((None, 6, 6, 2))
    kernel, axes = layer_kinds.shadow_weights_kernel(conv)
    assert kernel is conv.depthwise_kernel and axes == (0, 1)
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    assert layer_kinds.shadow_weights_kernel(dense) == (dense.kernel, ())
    assert layer_kinds.supports_shadow_weights(WeightNormalization(keras.layers.Conv1D(2, 3)))


def test_is_dense_and_is_convolution():
    dense = keras.layers.Dense(2)
    wn = WeightNormalization(keras.layers.Dense(2))
    assert layer_kinds.is_dense(dense) and layer_kinds.is_dense(wn)
    assert layer_kinds.is_dense(dense, weight_normalized=False)
    assert not layer_kinds.is_dense(wn, weight_normalized=False)
    assert not layer_kinds.is_dense(WeightNormalization(keras.layers.Conv2D(2, 3)))
    assert not layer_kinds.is_dense(ShadowWeights(keras.layers.Dense(2)))
    assert layer_kinds.is_convolution(keras.layers.Conv3DTranspose(2, 3))
    assert not layer_kinds.is_convolution(dense)
