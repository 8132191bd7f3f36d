"""The data-dependent initialisation of weight normalization (Salimans & Kingma, arXiv:1602.07868, §2.2).

`initialize_weight_normalization(model, batch)` runs `model` eagerly on one
batch; every `WeightNormalization` layer waiting for its init standardises its
own pre-activations `t = v·x/||v||` (`g = 1/std(t)`, `bias = -mean(t)/std(t)`
per output unit), in order from the input, so later layers see the
standardised outputs of earlier ones.

A layer called several times in one model call (inside
`keras.layers.TimeDistributed`, which calls it once per timestep, or shared
between branches) takes its statistics over all of its calls: a first pass
finds it, a second collects its statistics over every call, and the layers
after it are initialised in a further pass from its standardised outputs. A
model whose layers are each called once needs one pass.

Example:

```python
import keras
import numpy as np
from keras_wtrain.layers import WeightNormalization
from keras_wtrain.layers.weight_normalization_init import initialize_weight_normalization

model = keras.Sequential([
    keras.Input((5, 8)),
    keras.layers.TimeDistributed(WeightNormalization(keras.layers.Dense(4))),
])
initialize_weight_normalization(model, np.random.rand(16, 5, 8).astype("float32"))  # 1 layer
```
"""

import keras
import numpy as np

from keras_wtrain.data_adapters import check_finite
from keras_wtrain.data_adapters import check_not_empty
from keras_wtrain.layers.kernel_reparametrization import KernelReparametrization
from keras_wtrain.layers.weight_normalization import weight_normalization_layers

__all__ = ["initialize_weight_normalization", "needs_data_init"]


class _Moments:
    """Per-channel count, sum and sum of squares of pre-activations, in float64."""

    def __init__(self):
        self.count = 0
        self.sum = 0.0
        self.sum_squares = 0.0

    def add(self, t):
        t = t.astype(np.float64)
        self.count += t.shape[0]
        self.sum = self.sum + t.sum(axis=0)
        self.sum_squares = self.sum_squares + np.square(t).sum(axis=0)

    def mean_std(self):
        mean = self.sum / self.count
        variance = np.maximum(self.sum_squares / self.count - np.square(mean), 0.0)
        return mean, np.sqrt(variance + 1e-10)


class _DataInitPass:
    """One eager model call of `initialize_weight_normalization`; pending layers route their calls here.

    Without `accumulate`, a pending layer initialises itself from its first
    call and counts further calls. With `accumulate`, that layer collects its
    statistics over all its calls (set at the end of the pass) and the other
    pending layers only run.
    """

    def __init__(self, accumulate=None):
        self.accumulate = accumulate
        self.moments = _Moments()
        self.calls = {}
        self.order = []

    def call(self, layer, inputs, training=None, mask=None, **kwargs):
        count = self.calls.get(id(layer), 0) + 1
        self.calls[id(layer)] = count
        if count == 1:
            self.order.append(layer)
        if layer is self.accumulate:
            self.moments.add(layer.direction_preactivations(inputs, training=training, mask=mask))
        elif self.accumulate is None and count == 1:
            if _is_recurrent(layer):
                layer.set_data_init()
            else:
                moments = _Moments()
                moments.add(layer.direction_preactivations(inputs, training=training, mask=mask))
                layer.set_data_init(*moments.mean_std())
        return KernelReparametrization.call(layer, inputs, training=training, mask=mask, **kwargs)

    def repeated(self):
        """The first pending layer (in call order) called more than once, recurrent layers aside, or None."""
        for layer in self.order:
            if self.calls[id(layer)] > 1 and not _is_recurrent(layer):
                return layer
        return None


def _is_recurrent(layer):
    return isinstance(layer.target_layer, keras.layers.RNN)


def _run(model, batch, layers, data_init_pass):
    for layer in layers:
        layer._data_init_pass = data_init_pass
    try:
        model(batch, training=False)
    finally:
        for layer in layers:
            layer._data_init_pass = None


def _check_batch(batch):
    """Refuses what is not one batch of model inputs: None or non-arrays, 0 examples, NaN or infinity."""
    leaves = keras.tree.flatten(batch)
    if not leaves or not all(hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in leaves):
        raise TypeError(
            "initialize_weight_normalization: argument `batch` must be the model inputs of one batch (an array or "
            f"tensor, or a list/dict of them; for `(x, y)` data pass `x`); received {type(batch).__name__}."
        )
    check_not_empty(batch, "batch", owner="initialize_weight_normalization")
    check_finite(batch, "batch", owner="initialize_weight_normalization")


def initialize_weight_normalization(model, batch, force=False):
    """Runs the data-dependent initialisation of every `WeightNormalization` layer.

    Eagerly calls `model` on `batch` (inference mode); each wrapped layer
    with `data_init=True` that was not initialised yet sets, in order from the
    input, `g = 1/sigma` and `bias = -mu/sigma` from the statistics of its own
    pre-activations `t = v.x/||v||`, so that its pre-activations on `batch`
    have per-unit mean 0 and standard deviation 1. A layer called several
    times per model call (e.g. in `keras.layers.TimeDistributed` with a known
    number of timesteps) uses the statistics of all its calls; this costs two
    more model calls per such layer.

    Args:
        model: a Keras model (any kind) containing `WeightNormalization` layers.
        batch: model inputs of one batch (array, or list/dict of arrays); for a
            `(x, y)` or `(x, y, sample_weight)` tuple pass `x` only.
        force: re-initialise layers that were initialised already.

    Returns:
        The number of layers initialised.

    Raises:
        TypeError: if `batch` is None or not arrays/tensors.
        ValueError: if `batch` holds no examples, or NaN or infinite values (they would make every `g` and
            bias NaN).

    Example:

    ```python
    import keras
    import numpy as np
    import keras_wtrain
    from keras_wtrain.layers import WeightNormalization

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))])
    keras_wtrain.initialize_weight_normalization(model, np.random.rand(32, 8).astype("float32"))
    ```
    """
    _check_batch(batch)
    pending = [
        layer
        for layer in weight_normalization_layers(model)
        if layer.data_init and (force or not layer.built or not layer.is_initialized())
    ]
    done = []
    accumulate = None
    while pending:
        data_init_pass = _DataInitPass(accumulate)
        _run(model, batch, pending, data_init_pass)
        if accumulate is not None:
            if data_init_pass.moments.count:
                accumulate.set_data_init(*data_init_pass.moments.mean_std())
                done.append(accumulate)
            pending.remove(accumulate)
            accumulate = None
            continue
        repeated = data_init_pass.repeated()
        called = data_init_pass.order
        if repeated is None:
            done.extend(called)
            break
        # Layers called before `repeated` were initialised from final inputs; it and the later ones start over.
        first = called.index(repeated)
        done.extend(called[:first])
        pending = called[first:]
        for layer in pending:
            layer.initialized.assign(0.0)
            layer._data_init_done = False
        accumulate = repeated
    return len(done)


def needs_data_init(model):
    """Whether `model` has `WeightNormalization` layers waiting for data-dependent init.

    Example:

    ```python
    import keras
    from keras_wtrain.layers import WeightNormalization
    from keras_wtrain.layers.weight_normalization_init import needs_data_init

    model = keras.Sequential([keras.Input((8,)), WeightNormalization(keras.layers.Dense(4))])
    assert needs_data_init(model)
    ```
    """
    return any(
        layer.data_init and (not layer.built or not layer.is_initialized())
        for layer in weight_normalization_layers(model)
    )
