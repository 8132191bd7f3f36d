"""From `torch.nn.utils.parametrizations.weight_norm(module, dim=0)` to `keras_wtrain.layers.WeightNormalization`.

Run: `python examples/migration/from_torch_weight_norm.py` (a few seconds on a CPU).
"""

import keras
import numpy as np

from keras_wtrain.layers import WeightNormalization

keras.utils.set_random_seed(0)
x = np.random.rand(4, 6, 6, 3).astype("float32")

# torch: weight_norm(nn.Conv2d(3, 5, 3)) and weight_norm(nn.Linear(80, 4)), dim=0 (one g per output unit).
# torch has no data-dependent init: g starts at ||v||, so data_init=False keeps the layer's initial outputs.
conv = WeightNormalization(keras.layers.Conv2D(5, 3), data_init=False)
dense = WeightNormalization(keras.layers.Dense(4), data_init=False)
model = keras.Sequential([keras.Input((6, 6, 3)), conv, keras.layers.Flatten(), dense])
for layer in (conv, dense):  # any g, to see it used
    layer.g_weights[0].assign(np.random.uniform(0.5, 2.0, layer.g_weights[0].shape).astype("float32"))


def torch_style(kernel_torch_layout, g):
    """torch's weight_norm with dim=0: g * v / ||v||, the norm over every axis but axis 0 (out channels)."""
    axes = tuple(range(1, kernel_torch_layout.ndim))
    g = g.reshape((-1,) + (1,) * len(axes))
    return g * kernel_torch_layout / np.sqrt(np.sum(kernel_torch_layout**2, axis=axes, keepdims=True))


# Keras keeps the out channels last: Conv2D (kh, kw, in, out) <-> torch (out, in, kh, kw), Dense (in, out) <->
# torch (out, in). Compute each effective kernel in torch's layout and move it back.
for layer, to_torch, from_torch in (
    (conv, (3, 2, 0, 1), (2, 3, 1, 0)),
    (dense, (1, 0), (1, 0)),
):
    v = keras.ops.convert_to_numpy(layer.target_layer.kernel)
    g = keras.ops.convert_to_numpy(layer.g_weights[0])
    want = torch_style(np.transpose(v, to_torch), g).transpose(from_torch)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.effective_kernels()[0]), want, rtol=1e-5)

# And the model's output, by hand: convolution with the effective kernel, then the Dense.
k = keras.ops.convert_to_numpy(conv.effective_kernels()[0])
patches = np.stack([x[:, i : i + 4, j : j + 4, :] for i in range(3) for j in range(3)], axis=-2)  # (4,4,4,9,3)
conv_bias = keras.ops.convert_to_numpy(conv.target_layer.bias)
feature = np.einsum("nhwpc,pco->nhwo", patches, k.reshape(9, 3, 5)) + conv_bias
out = feature.reshape(4, -1) @ keras.ops.convert_to_numpy(dense.effective_kernels()[0])
out += keras.ops.convert_to_numpy(dense.target_layer.bias)
np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), out, rtol=1e-4, atol=1e-5)
print("WeightNormalization equals torch's weight_norm(dim=0) with the kernels transposed")
