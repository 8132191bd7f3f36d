"""`Model`: a `keras.Model` that trains with loss noise and/or gradient dropout (arXiv:2404.03992).

Loss noise is applied in `compute_loss`, gradient dropout by an optimizer wrapper that `compile` adds; no
`train_step` is replaced.
"""

import warnings

import keras
from keras import ops

# `Functional` is not exported by Keras. It is needed because this one class serves both functional use
# (`Model(inputs, outputs)`) and subclassing: Keras' own route, `keras.Model.__init__` with graph arguments, rewrites
# the bases of the class in place (`inject_functional_model_class`), which would turn `Model` itself into a
# `Functional` for every later subclassed use. See `Model.__new__`.
from keras_wtrain._core._keras_private import Functional
from keras_wtrain._core.validation import check_seed
from keras_wtrain.randomness import gradient_dropout as wt_optimizers
from keras_wtrain.randomness.ops import loss_noise_factors
from keras_wtrain.randomness.ops import noisy_sample_weight
from keras_wtrain.randomness.settings import Constant
from keras_wtrain.randomness.settings import GradientDropout
from keras_wtrain.randomness.settings import LossNoise

__all__ = ["FunctionalModel", "Model"]

_CONFIG_KEYS = ("loss_noise", "gradient_dropout", "seed")


def _functional_arguments(args, kwargs):
    """Whether `Model(*args, **kwargs)` is functional use (same test as Keras' `functional_init_arguments`)."""
    return len(args) == 2 or (len(args) == 1 and "outputs" in kwargs) or ("inputs" in kwargs and "outputs" in kwargs)


def _as_randomness(name, value, cls, numbers):
    """`value` as a `cls` (`LossNoise` / `GradientDropout`): None, an instance, its config, a number or a schedule."""
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, dict):
        obj = keras.saving.deserialize_keras_object(value)
        if isinstance(obj, cls):
            return obj
        raise TypeError(f"argument `{name}` must describe a {cls.__name__}; received {value!r}.")
    if isinstance(value, bool):
        raise TypeError(
            f"argument `{name}` must be None, {numbers}, a schedule or a {cls.__name__}; received {value!r}."
        )
    return cls(value)


def _replica_info():
    """`(replica_id, num_replicas)` of the current `tf.distribute` replica context (TensorFlow only)."""
    if keras.backend.backend() != "tensorflow":
        return 0, 1
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


def _batch_size(x, y_pred):
    for struct in (y_pred, x):
        for leaf in keras.tree.flatten(struct):
            if leaf is not None and len(getattr(leaf, "shape", ())) > 0:
                return ops.shape(leaf)[0]
    raise ValueError("loss noise needs a batch dimension; found none in `x` or `y_pred`.")


@keras.saving.register_keras_serializable(package="keras_wtrain")
class Model(keras.Model):
    """A `keras.Model` that trains with loss noise and/or gradient dropout (Altarabichi et al., arXiv:2404.03992).

    Loss noise multiplies each example's sample weight by a fresh `xi ~ N(1, sigma^2)` in `compute_loss`; gradient
    dropout wraps the optimizer in a `GradientDropoutOptimizer` in `compile`. Use it functionally, by subclassing
    (`super().__init__(loss_noise=..., gradient_dropout=...)`) or through `wrap`; with both off it is exactly
    `keras.Model`. Evaluation and prediction are unchanged. Cost: per step, one normal draw per example and one random
    byte per parameter (about 1.03-1.07x the step time of a CPU MLP); memory: seed states and a step counter.

    Args:
        *args: positional arguments of `keras.Model` (`inputs`, `outputs`).
        loss_noise: None (off), `sigma` (a number >= 0 or a schedule), or a `LossNoise`.
        gradient_dropout: None (off), `p` (in [0, 1), 0 or at least 1/512, or a schedule), or a `GradientDropout`.
        seed: int seed of the randomness (None: Keras' global seed); the gradient-dropout wrapper gets `seed + 1`.
        **kwargs: keyword arguments of `keras.Model` (`name`, ...).

    Raises:
        TypeError: if `loss_noise` / `gradient_dropout` / `seed` have a wrong type.
        ValueError: if a value is out of range (negative sigma, rate outside [0, 1) or a constant in (0, 1/512)).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.randomness import Model

    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(3)(keras.layers.Dense(16, activation="relu")(inputs))
    model = Model(inputs, outputs, loss_noise=0.3, gradient_dropout=0.1, seed=0)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(np.random.rand(64, 8), np.random.randint(0, 3, 64), epochs=1, verbose=0)
    type(model.optimizer).__name__  # 'GradientDropoutOptimizer'
    ```
    """

    _paper_arxiv = "2404.03992"

    def __new__(cls, *args, **kwargs):
        # Functional use gets a subclass that also derives from Functional. Keras itself would instead rewrite the
        # class's bases in place (`inject_functional_model_class`), which would turn this class into a Functional for
        # every later subclassed use too.
        if _functional_arguments(args, kwargs) and not issubclass(cls, Functional):
            cls = FunctionalModel if cls is Model else _inject_functional(cls)
        return keras.Model.__new__(cls)

    def __init__(self, *args, loss_noise=None, gradient_dropout=None, seed=None, **kwargs):
        if isinstance(self, Functional):
            # Functional's own __init__ (it runs keras.Model.__init__ without the graph arguments); keras.Model.__init__
            # with them would rewrite the class bases (see __new__).
            Functional.__init__(self, *args, **kwargs)
        else:
            super().__init__(*args, **kwargs)
        self._setup_randomness(loss_noise, gradient_dropout, seed)

    # ------------------------------------------------------------------ configuration

    def _setup_randomness(self, loss_noise=None, gradient_dropout=None, seed=None):
        seed = check_seed(seed)
        loss_noise = _as_randomness("loss_noise", loss_noise, LossNoise, "a number >= 0")
        gradient_dropout = _as_randomness("gradient_dropout", gradient_dropout, GradientDropout, "a rate in [0, 1)")
        self._wt_seed = seed
        self._wt_loss_noise = loss_noise
        self._wt_gradient_dropout = gradient_dropout
        self._wt_noise_active = loss_noise is not None and not loss_noise.is_off
        self._wt_dropout_active = gradient_dropout is not None and not gradient_dropout.is_off
        # Variables exist only when needed, so a model with both techniques off has exactly the variables (and the
        # training) of keras.Model. The gradient-dropout state lives in the optimizer wrapper made by `compile`.
        if self._wt_noise_active and getattr(self, "_wt_noise_seed", None) is None:
            self._wt_noise_seed = keras.random.SeedGenerator(seed, name="loss_noise_seed")
        if self._wt_noise_scheduled and getattr(self, "_wt_step", None) is None:
            self._wt_step = keras.Variable(
                0, dtype="int32", trainable=False, aggregation="only_first_replica", name="randomness_step"
            )

    @property
    def _wt_noise_scheduled(self):
        return self._wt_noise_active and not isinstance(self._wt_loss_noise.stddev, Constant)

    @property
    def _wt_dropout_scheduled(self):
        return self._wt_dropout_active and not isinstance(self._wt_gradient_dropout.rate, Constant)

    @property
    def loss_noise(self):
        """The `LossNoise` configuration, or None."""
        return self._wt_loss_noise

    @property
    def gradient_dropout(self):
        """The `GradientDropout` configuration, or None."""
        return self._wt_gradient_dropout

    @property
    def randomness_step(self):
        """The step at which schedules are evaluated, or None without schedules.

        The model's count of training batches with a scheduled loss noise, else the optimizer's `iterations`.
        """
        step = getattr(self, "_wt_step", None)
        if step is not None:
            return int(ops.convert_to_numpy(step.value))
        if self._wt_dropout_scheduled and getattr(self, "optimizer", None) is not None:
            return int(ops.convert_to_numpy(self.optimizer.iterations))
        return None

    def get_config(self):
        config = super().get_config()
        config["loss_noise"] = keras.saving.serialize_keras_object(self._wt_loss_noise)
        config["gradient_dropout"] = keras.saving.serialize_keras_object(self._wt_gradient_dropout)
        config["seed"] = self._wt_seed
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        extra = {key: config.pop(key) for key in _CONFIG_KEYS if key in config}
        functional = all(key in config for key in ("name", "layers", "input_layers", "output_layers"))
        if functional:
            model = super().from_config(config, custom_objects=custom_objects)
            model._setup_randomness(**extra)
            return model
        return cls(**config, **extra)

    # ------------------------------------------------------------------ compile

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """Configures the model for training; see `keras.Model.compile` (same arguments).

        With gradient dropout on, `optimizer` is wrapped in a `GradientDropoutOptimizer` seeded with `seed + 1`
        (unless its chain holds one); with a `LossScaleOptimizer` in the chain, Keras' auto loss scaling is skipped.

        Args:
            optimizer: an optimizer or its name, as for `keras.Model.compile`.
            *args: the other positional arguments of `keras.Model.compile`.
            **kwargs: the keyword arguments of `keras.Model.compile`.

        Example:

        ```python
        import keras
        from keras_wtrain.randomness import Model

        inputs = keras.Input((4,))
        model = Model(inputs, keras.layers.Dense(1)(inputs), gradient_dropout=0.2)
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.optimizer.inner_optimizer  # the SGD
        ```
        """
        optimizer = keras.optimizers.get(optimizer)
        if self._wt_dropout_active and wt_optimizers.find_gradient_dropout(optimizer) is None:
            optimizer = wt_optimizers.GradientDropoutOptimizer(
                optimizer,
                self._wt_gradient_dropout,
                seed=None if self._wt_seed is None else self._wt_seed + 1,
                name="gradient_dropout",
            )
        if (
            not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
            and wt_optimizers.find_wrapped(optimizer, keras.optimizers.LossScaleOptimizer) is not None
        ):
            if len(args) > 7:  # auto_scale_loss given positionally
                args = args[:7] + (False,) + args[8:]
            else:
                kwargs["auto_scale_loss"] = False
        super().compile(optimizer, *args, **kwargs)

    def compile_from_config(self, config):
        """Compiles the model from `get_compile_config()`'s output with this class's `compile` (`.keras` loading).

        Args:
            config: the dict returned by `get_compile_config()`.

        Example:

        ```python
        import keras
        from keras_wtrain.randomness import Model

        inputs = keras.Input((4,))
        model = Model(inputs, keras.layers.Dense(1)(inputs), gradient_dropout=0.2)
        model.compile("sgd", "mse")
        twin = Model(inputs, keras.layers.Dense(1)(inputs), gradient_dropout=0.2)
        twin.compile_from_config(model.get_compile_config())
        ```
        """
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ fit

    def fit(self, x=None, *args, **kwargs):
        """Trains the model; see `keras.Model.fit` (same arguments and return value).

        First initialises waiting `WeightNormalization` layers on the first 256 examples or first batch of `x`
        (a one-shot iterator is left alone, with a warning).

        Args:
            x: the training inputs, as for `keras.Model.fit`.
            *args: the other positional arguments of `keras.Model.fit`.
            **kwargs: the keyword arguments of `keras.Model.fit`.

        Returns:
            A `keras.callbacks.History`.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.randomness import Model

        inputs = keras.Input((4,))
        model = Model(inputs, keras.layers.Dense(1)(inputs), gradient_dropout=0.1)
        model.compile("sgd", "mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=1, verbose=0)
        ```
        """
        if x is not None:
            from keras_wtrain.weight_normalization.data_init import initialize_weight_normalization
            from keras_wtrain.weight_normalization.data_init import needs_data_init

            if needs_data_init(self):
                from keras_wtrain._core.data_adapters import first_batch

                if hasattr(x, "__next__") and iter(x) is x:
                    # A one-shot iterator would lose its first batch to the init.
                    warnings.warn(
                        "WeightNormalization layers wait for their data-dependent init, but `x` is a one-shot "
                        "iterator; call keras_wtrain.initialize_weight_normalization(model, batch) before fit.",
                        stacklevel=2,
                    )
                else:
                    initialize_weight_normalization(self, first_batch(x, 256))
        return super().fit(x, *args, **kwargs)

    # ------------------------------------------------------------------ loss noise (all backends)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' `compute_loss`, with per-example loss noise in training.

        Args:
            x: input data.
            y: targets.
            y_pred: predictions.
            sample_weight: per-example weights (None, an array, or one per output).
            training: whether this is a training step (noise only then).

        Returns:
            The scalar loss.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.randomness import Model

        inputs = keras.Input((4,))
        model = Model(inputs, keras.layers.Dense(1)(inputs), loss_noise=0.5, seed=0)
        model.compile("sgd", "mse")
        x, y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")
        noisy = model.compute_loss(x, y, model(x), training=True)
        ```
        """
        if training and self._wt_noise_active:
            batch = _batch_size(x, y_pred)
            stddev = self._wt_loss_noise.stddev
            if isinstance(stddev, Constant):
                stddev = stddev.value
            else:
                stddev = stddev(self._wt_step.value)
                self._wt_step.assign_add(1)
            replica, replicas = _replica_info()
            if replicas == 1:
                factors = loss_noise_factors(batch, stddev, seed=self._wt_noise_seed)
            else:
                # Same seed state on every replica: draw for the global batch, take this replica's slice.
                factors = loss_noise_factors(batch * replicas, stddev, seed=self._wt_noise_seed)
                factors = ops.reshape(factors, (replicas, batch))[replica]
            sample_weight = noisy_sample_weight(sample_weight, factors)
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class FunctionalModel(Model, Functional):
    """The class of a functional `keras_wtrain.randomness.Model` (arXiv:2404.03992); `Model(inputs, outputs)` makes one.

    Separate so that `Model` itself stays usable for subclassing. Cost: as `Model`.

    Example:

    ```python
    import keras
    from keras_wtrain.randomness import Model

    inputs = keras.Input((4,))
    model = Model(inputs, keras.layers.Dense(2)(inputs), gradient_dropout=0.1)
    type(model).__name__  # 'FunctionalModel'
    ```
    """


def _inject_functional(cls):
    """Makes a subclass of `Model` used functionally derive from `FunctionalModel` (in place, like Keras)."""
    if cls is Model:
        return FunctionalModel
    if cls is object or not issubclass(cls, Model):
        return cls
    cls.__bases__ = tuple(_inject_functional(base) for base in cls.__bases__)
    return cls
