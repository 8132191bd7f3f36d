"""Flatness diagnostics: Hessian trace, top Hessian eigenvalue and sharpness of a model's loss.

What a flat-minimum technique (optimum shifting, SeWA, shadow weights) claims
is measured here, on the TensorFlow and JAX backends:

- `hessian_trace`: Hutchinson's estimator `tr(H) = E[v^T H v]` with
  Rademacher probes `v`, Hessian-vector products by double differentiation
  (as PyHessian does), with a 95 % confidence interval from the probes
  (Student t over the per-probe values);
- `top_hessian_eigenvalue`: the eigenvalue of largest magnitude by power
  iteration on Hessian-vector products;
- `sharpness`: mean and max loss increase under random filter-normalised
  weight perturbations of radius `r` (Li et al. 2018, "Visualizing the loss
  landscape of neural nets": each filter of a random Gaussian direction is
  scaled to the norm of the same filter of the weights; vectors of one
  dimension, biases and normalisation parameters, are not perturbed);
- `FlatnessMonitor`: a callback that logs them every N epochs into `History`.

The loss is the model's loss in inference mode (`training=False`: dropout off,
batch normalization on its moving statistics), averaged over `data` (the
Hessian is that of the average, batch by batch). Variables are chosen with
`variables`: None (every trainable float variable), a layer, a layer name, a
`keras.Variable`, or a list of those.

Example:

```python
import keras
import numpy as np
from keras_wtrain.diagnostics import hessian_trace, sharpness, top_hessian_eigenvalue

x, y = np.random.rand(64, 5).astype("float32"), np.arange(64) % 3
model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
trace = hessian_trace(model, (x, y), num_probes=10, seed=0)
print(trace["trace"], trace["ci95"])
top = top_hessian_eigenvalue(model, (x, y), seed=0)
sharp = sharpness(model, (x, y), radius=0.05, num_samples=5, seed=0)
```
"""

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.diagnostics.hessian import hessian_trace
from keras_wtrain.diagnostics.hessian import top_hessian_eigenvalue
from keras_wtrain.diagnostics.monitor import FlatnessMonitor
from keras_wtrain.diagnostics.objective import mean_loss
from keras_wtrain.diagnostics.perturbation import filter_normalized_direction
from keras_wtrain.diagnostics.perturbation import sharpness

__all__ = [
    "FlatnessMonitor",
    "filter_normalized_direction",
    "hessian_trace",
    "mean_loss",
    "sharpness",
    "top_hessian_eigenvalue",
]
