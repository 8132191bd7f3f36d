"""What one tuning trial trains with: `TechniqueConfig` (model-building kwargs, layer wrapping, callbacks)."""

from keras_wtrain._core.layer_kinds import is_augmentable_convolution

__all__ = ["SEWA_CHECKPOINTS", "SHADOW_TRANSFORMS", "TechniqueConfig"]

SHADOW_TRANSFORMS = ("shift", "crop_stretch", "shift_or_crop")
SEWA_CHECKPOINTS = 10


class TechniqueConfig:
    """The techniques chosen for one trial, returned by `search_space`: model-building kwargs and callbacks.

    Cost: negligible (plain values; technique modules are imported on use).

    Attributes:
        techniques: the technique names this configuration covers.
        values: the chosen hyperparameter values (name -> value).
        loss_noise: σ, or None when not searched; `loss_noise_schedule` is `"constant"` or `"linear_decay"`.
        schedule_steps: length of the linear decay, in training steps.
        gradient_dropout: p, or None when not searched.
        weight_normalization: whether Dense/Conv layers get `WeightNormalization`.
        shadow: `{"transform": name, "strength": s}` or None.
        sewa_k: SeWA `k` (of `sewa_checkpoints` checkpoints), or None.
        optimum_shifting: whether the `OptimumShifting` callback is used.
        seed: seed for the shadow-weight transforms.

    Example:

    ```python
    import keras_tuner
    from keras_wtrain.tuning.spaces import search_space

    config = search_space(keras_tuner.HyperParameters(), techniques=("loss-noise", "weightnorm"))
    config.model_kwargs  # {'loss_noise': 0.0}
    ```
    """

    def __init__(
        self,
        techniques=(),
        values=None,
        loss_noise=None,
        loss_noise_schedule="constant",
        schedule_steps=1000,
        gradient_dropout=None,
        weight_normalization=False,
        shadow=None,
        sewa_k=None,
        sewa_checkpoints=SEWA_CHECKPOINTS,
        optimum_shifting=False,
        seed=None,
    ):
        self.techniques = tuple(techniques)
        self.values = dict(values or {})
        self.loss_noise = loss_noise
        self.loss_noise_schedule = loss_noise_schedule
        self.schedule_steps = schedule_steps
        self.gradient_dropout = gradient_dropout
        self.weight_normalization = bool(weight_normalization)
        self.shadow = shadow
        self.sewa_k = sewa_k
        self.sewa_checkpoints = sewa_checkpoints
        self.optimum_shifting = bool(optimum_shifting)
        self.seed = seed

    def __repr__(self):
        return f"TechniqueConfig({self.values!r})"

    @property
    def model_kwargs(self):
        """Keyword arguments for `keras_wtrain.randomness.wrap`: `loss_noise` (σ or a `LossNoise`), `gradient_dropout`.

        Example:

        ```python
        import keras_tuner
        from keras_wtrain.tuning.spaces import search_space

        search_space(keras_tuner.HyperParameters(), techniques=("grad-dropout",)).model_kwargs
        ```
        """
        kwargs = {}
        if self.loss_noise is not None:
            kwargs["loss_noise"] = self.loss_noise
            if self.loss_noise_schedule == "linear_decay" and self.loss_noise > 0:
                from keras_wtrain.randomness.settings import LinearDecay
                from keras_wtrain.randomness.settings import LossNoise

                kwargs["loss_noise"] = LossNoise(LinearDecay(self.loss_noise, 0.0, decay_steps=self.schedule_steps))
        if self.gradient_dropout is not None:
            kwargs["gradient_dropout"] = self.gradient_dropout
        return kwargs

    @property
    def needs_layer_wrap(self):
        """Whether `wrap` changes any layer (weight normalization or shadow weights chosen)."""
        return self.weight_normalization or self.shadow is not None

    def shadow_transform(self):
        """The shadow-weight transform chosen for this trial, or None when shadow weights are not used.

        Example:

        ```python
        import keras_tuner
        from keras_wtrain.tuning.spaces import search_space

        search_space(keras_tuner.HyperParameters(), techniques=("shadow",)).shadow_transform()
        ```
        """
        if self.shadow is None:
            return None
        from keras_wtrain.shadow_weights import transforms

        name = self.shadow["transform"]
        strength = float(self.shadow["strength"])
        shift = transforms.RandomTranslate(max_shift=strength)
        crop = transforms.RandomResizedCrop(scale=(1.0 - strength, 1.0))
        if name == "shift":
            return shift
        if name == "crop_stretch":
            return crop
        return transforms.RandomChoice([shift, crop])

    def wrap(self, layer):
        """Wraps one layer with the chosen weight-space techniques (a `wrap=` function for model builders).

        Shadow weights go on k x k convolutions (k >= 3), weight normalization on the other Dense / Conv layers.

        Args:
            layer: a Keras layer (not yet built).

        Returns:
            The layer, wrapped or not.

        Example:

        ```python
        import keras_tuner
        from keras_wtrain.comparison.models import build_model
        from keras_wtrain.tuning.spaces import search_space

        config = search_space(keras_tuner.HyperParameters(), techniques=("weightnorm",))
        model = build_model("mlp", (28, 28, 1), 10, wrap=config.wrap)
        ```
        """
        import keras

        if self.shadow is not None and is_augmentable_convolution(layer):
            from keras_wtrain.shadow_weights.wrapper import ShadowWeights

            return ShadowWeights(layer, transform=self.shadow_transform(), seed=self.seed)
        if self.weight_normalization and isinstance(
            layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
        ):
            from keras_wtrain.weight_normalization.wrapper import WeightNormalization

            return WeightNormalization(layer)
        return layer

    def wrap_model(self, model):
        """Applies loss noise / gradient dropout to a built model (`keras_wtrain.randomness.wrap`), recompiling it.

        With σ = p = 0 the model is returned as it is.

        Args:
            model: a `keras.Model`.

        Returns:
            The model to train.

        Example:

        ```python
        import keras
        import keras_tuner
        from keras_wtrain.tuning.spaces import search_space

        config = search_space(keras_tuner.HyperParameters(), techniques=("loss-noise",))
        model = config.wrap_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        ```
        """
        kwargs = {k: v for k, v in self.model_kwargs.items() if v}
        if not kwargs:
            return model
        from keras_wtrain.randomness.wrapping import wrap

        compile_config = model.get_compile_config() if getattr(model, "compiled", False) else None
        wrapped = wrap(model, seed=self.seed, **kwargs)
        if compile_config is not None and not getattr(wrapped, "compiled", False):
            wrapped.compile_from_config(compile_config)
        return wrapped

    def callbacks(self, data=None):
        """The training callbacks of the chosen techniques (SeWA, optimum shifting), possibly none.

        Args:
            data: `(x, y)` training arrays covering every class, for SeWA and optimum shifting.

        Returns:
            A list of callbacks.

        Raises:
            ValueError: if SeWA or optimum shifting is chosen and `data` is None.

        Example:

        ```python
        import keras_tuner
        import numpy as np
        from keras_wtrain.tuning.spaces import search_space

        data = (np.zeros((64, 8), "float32"), np.arange(64) % 4)
        search_space(keras_tuner.HyperParameters(), techniques=("sewa",)).callbacks(data)
        ```
        """
        callbacks = []
        if self.sewa_k is not None:
            from keras_wtrain.averaging.sewa import SeWA

            if data is None:
                raise ValueError("SeWA was chosen but argument `data` is None: pass (x, y) training arrays.")
            callbacks.append(
                SeWA(k=self.sewa_k, num_checkpoints=self.sewa_checkpoints, selection_data=data, seed=self.seed)
            )
        if self.optimum_shifting:
            if data is None:
                raise ValueError(
                    "optimum shifting was chosen but argument `data` is None: pass (x, y) training arrays."
                )
            from keras_wtrain.optimum_shifting.callback import OptimumShifting

            callbacks.append(OptimumShifting(data=data))
        return callbacks
