"""A model's float weights as one flat host vector: the layout shared by checkpoints and averages.

A weight-averaging checkpoint is the concatenation, in the order of
`model.trainable_variables + model.non_trainable_variables`, of every float variable of the model,
flattened, as float32 numpy (non-float variables such as seed-generator states are left out).
`FlatWeights` reads such vectors from a model, splits them back into per-variable values for
`model.stateless_call`, assigns them, and maps per-variable gradients to the same layout.

Example:

```python
import keras
from keras_wtrain.averaging.flat_weights import FlatWeights

model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
flat = FlatWeights(model)
w = flat.read()                  # (8,) float32: kernel (3 x 2) then bias (2,)
flat.assign(w * 0.5)             # halves every weight
```
"""

import keras
import numpy as np

__all__ = ["FlatWeights"]


class FlatWeights:
    """The float variables of a model, read and written as one flat float32 vector.

    The variable list is read when the object is made: make it once the model is built (on
    TensorFlow a model without an `Input` creates its variables in the first training step).
    On JAX, read through a callback's `self.model`, which syncs the training state into the
    variables first.

    Args:
        model: a Keras model (or layer).

    Attributes:
        layout: a tuple of `(variable index, shape, size)` of the float variables, the index
            counting in `model.trainable_variables + model.non_trainable_variables`. Two models
            with equal layouts have interchangeable flat vectors.
        size: the number of float weights (`P`).

    Example:

    ```python
    import keras
    from keras_wtrain.averaging.flat_weights import FlatWeights

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    assert FlatWeights(model).size == 3 * 2 + 2 + 4 * 2  # Dense, then BN gamma/beta, then moving mean/var
    ```
    """

    def __init__(self, model):
        self.trainable_count = len(model.trainable_variables)
        self.variables = list(model.trainable_variables) + list(model.non_trainable_variables)
        self.layout = tuple(
            (i, tuple(v.shape), int(np.prod(tuple(v.shape), dtype=np.int64)))
            for i, v in enumerate(self.variables)
            if keras.backend.is_float_dtype(v.dtype)
        )
        self.size = sum(size for _, _, size in self.layout)
        self._offsets = np.cumsum([0] + [size for _, _, size in self.layout])

    def read_into(self, out):
        """Writes the current float weights into `out`, a `(size,)` float32 array (a ring-buffer row), in place.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.flat_weights import FlatWeights

        flats = FlatWeights(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        row = np.empty(flats.size, "float32")
        flats.read_into(row)
        assert np.array_equal(row, flats.read())
        ```
        """
        for (i, _, _), start, stop in zip(self.layout, self._offsets[:-1], self._offsets[1:]):
            out[start:stop] = np.asarray(keras.ops.convert_to_numpy(self.variables[i])).reshape(-1)
        return out

    def unflatten(self, flat):
        """A flat vector as a list of arrays, one per float variable (trainable, then non-trainable).

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.flat_weights import FlatWeights

        flats = FlatWeights(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        assert [a.shape for a in flats.unflatten(np.zeros(flats.size))] == [(3, 2), (2,)]
        ```
        """
        flat = np.asarray(flat, np.float32)
        return [
            flat[start:stop].reshape(shape)
            for (_, shape, _), start, stop in zip(self.layout, self._offsets[:-1], self._offsets[1:])
        ]

    def read(self):
        """The current float weights, flattened: a `(size,)` float32 numpy array (a copy).

        Example:

        ```python
        import keras
        from keras_wtrain.averaging.flat_weights import FlatWeights

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        assert FlatWeights(model).read().shape == (8,)
        ```
        """
        parts = [
            np.asarray(keras.ops.convert_to_numpy(self.variables[i]), np.float32).reshape(-1) for i, _, _ in self.layout
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def split(self, flat):
        """Per-variable values for `model.stateless_call`: `(trainable_values, non_trainable_values)`.

        Float variables take their values from `flat` (cast to the variable's dtype); the others
        (e.g. seed-generator states) keep their current values.

        Args:
            flat: a `(size,)` array in this layout.

        Returns:
            Two lists of numpy arrays, in the order of `model.trainable_variables` and
            `model.non_trainable_variables`.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.flat_weights import FlatWeights

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        trainable, non_trainable = FlatWeights(model).split(np.zeros(8, "float32"))
        y, _ = model.stateless_call(trainable, non_trainable, np.ones((1, 3), "float32"))  # zeros
        ```
        """
        flat = np.asarray(flat)
        values = [None] * len(self.variables)
        for (i, shape, _), start, stop in zip(self.layout, self._offsets[:-1], self._offsets[1:]):
            dtype = keras.backend.standardize_dtype(self.variables[i].dtype)
            # a view of `flat` where the dtype matches (no copy of the weights), a cast copy otherwise
            values[i] = flat[start:stop].reshape(shape).astype(dtype, copy=False)
        for i, variable in enumerate(self.variables):
            if values[i] is None:
                values[i] = np.asarray(keras.ops.convert_to_numpy(variable))
        return values[: self.trainable_count], values[self.trainable_count :]

    def assign(self, flat):
        """Assigns a `(size,)` vector in this layout to the model's float variables.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.flat_weights import FlatWeights

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        FlatWeights(model).assign(np.ones(8, "float32"))
        assert float(keras.ops.sum(model.layers[0].bias)) == 2.0
        ```
        """
        trainable, non_trainable = self.split(flat)
        values = trainable + non_trainable
        for i, _, _ in self.layout:
            self.variables[i].assign(values[i])

    def gradient_vector(self, gradients, consume=False):
        """Per-variable gradients of the trainable variables as a `(size,)` float32 vector in this layout.

        Non-trainable entries (e.g. batch-norm moving statistics) are 0; a gradient of `None` counts as 0.

        Args:
            gradients: one gradient (array or None) per `model.trainable_variables` entry.
            consume: if True, `gradients` (a list) has each entry set to None once copied, so the
                per-variable gradients are freed one by one while the vector fills (one variable's
                gradient in memory besides the vector, not all of them).

        Returns:
            A `(size,)` float32 numpy array.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.averaging.flat_weights import FlatWeights

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        g = FlatWeights(model).gradient_vector([np.ones((3, 2)), None])
        assert g.tolist() == [1.0] * 6 + [0.0, 0.0]
        ```
        """
        vector = np.zeros(self.size, np.float32)
        for (i, _, _), start, stop in zip(self.layout, self._offsets[:-1], self._offsets[1:]):
            if i < self.trainable_count and gradients[i] is not None:
                vector[start:stop] = np.asarray(keras.ops.convert_to_numpy(gradients[i]), np.float32).reshape(-1)
                if consume:
                    gradients[i] = None
        return vector
