"""`wrap`: loss noise and gradient dropout for an existing Keras model, and `WrappedModel`, the model it may return.

Functional and built `Sequential` models are rebuilt as a functional `keras_wtrain.randomness.Model` over the same
graph; any other model (subclassed, or not built yet) is called from a `WrappedModel`.
"""

import keras

# Not exported by Keras; `wrap` reads a functional model's graph from it (see `keras_wtrain.randomness.model`).
from keras_wtrain._core._keras_private import functional_graph
from keras_wtrain.randomness.model import Model

__all__ = ["WrappedModel", "wrap"]


@keras.saving.register_keras_serializable(package="keras_wtrain")
class WrappedModel(Model):
    """A `Model` that calls an existing (subclassed or unbuilt) model; made by `wrap` (arXiv:2404.03992).

    Cost: as `Model`; the inner model's weights are shared, not copied.

    Args:
        model: the `keras.Model` to call; its layers and weights are used as they are.
        **kwargs: `Model` keyword arguments (`loss_noise`, `gradient_dropout`, `seed`, `name`).

    Raises:
        TypeError: if `model` is not a `keras.Model`.

    Example:

    ```python
    import keras
    from keras_wtrain.randomness.wrapping import WrappedModel

    inner = keras.Sequential([keras.layers.Dense(2)])  # not built
    model = WrappedModel(inner, gradient_dropout=0.1)
    ```
    """

    def __init__(self, model, **kwargs):
        if not isinstance(model, keras.Model):
            raise TypeError(f"argument `model` must be a keras.Model; received {model!r}.")
        super().__init__(**kwargs)
        self.inner = model

    def build(self, input_shape):
        if not self.inner.built:
            self.inner.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    def get_config(self):
        config = {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.inner),
            "loss_noise": keras.saving.serialize_keras_object(self._wt_loss_noise),
            "gradient_dropout": keras.saving.serialize_keras_object(self._wt_gradient_dropout),
            "seed": self._wt_seed,
        }
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"], custom_objects=custom_objects)
        return cls(**config)


def wrap(model, loss_noise=None, gradient_dropout=None, seed=None):
    """Returns a `keras_wtrain.randomness.Model` that trains `model`'s layers with loss noise / gradient dropout.

    The new model shares `model`'s layers and weights; a compiled `model`'s compile config, optimizer and loss carry
    over (custom metric functions must be registered, as for saving). Cost: as `Model`; nothing is copied.

    Args:
        model: a `keras.Model` (functional, Sequential or subclassed).
        loss_noise: None, a number >= 0, a schedule, or a `LossNoise`.
        gradient_dropout: None, a rate in [0, 1), a schedule, or a `GradientDropout`.
        seed: int seed of the randomness, or None.

    Returns:
        The new `keras_wtrain.randomness.Model`.

    Raises:
        TypeError: if `model` is not a `keras.Model`, or an argument has a wrong type.
        ValueError: if a value is out of range.

    Example:

    ```python
    import keras
    from keras_wtrain.randomness import wrap

    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    model = wrap(base, loss_noise=0.3, gradient_dropout=0.1)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"argument `model` must be a keras.Model; received {model!r}.")
    kwargs = {"loss_noise": loss_noise, "gradient_dropout": gradient_dropout, "seed": seed}
    inputs, outputs = functional_graph(model)
    if inputs is not None:
        wrapped = Model(inputs=inputs, outputs=outputs, name=model.name, **kwargs)
    else:
        wrapped = WrappedModel(model, name=model.name, **kwargs)
    config = model.get_compile_config() if getattr(model, "compiled", False) else None
    if config:
        config = {key: value for key, value in config.items() if key not in ("optimizer", "loss")}
        compile_args = keras.saving.deserialize_keras_object(config)
        wrapped.compile(optimizer=model.optimizer, loss=model.loss, **compile_args)
    return wrapped
