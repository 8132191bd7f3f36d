"""`Model`: a `keras.Model` that trains with loss noise and/or gradient dropout, through Keras' own hooks.

No `train_step` is copied or overridden. The randomness maths lives in
`keras_wtrain.training.randomness_ops` (backend-free), its configuration in
`keras_wtrain.training.randomness`:

- loss noise is applied in `compute_loss` (shared by every backend): the
  per-example factors `xi` multiply `sample_weight` before Keras' compiled loss
  reduces it, so metrics, `class_weight`, multiple outputs, regularisation
  losses and loss scaling are Keras' own code paths;
- gradient dropout is `keras_wtrain.optimizers.GradientDropoutOptimizer`, an
  optimizer wrapper (like `keras.optimizers.LossScaleOptimizer`) that `compile`
  puts around the optimizer it is given, so the optimizer's own loss-scale
  unscaling, gradient accumulation, clipping and weight decay run after it.
"""

import warnings

import keras
from keras import ops

# `Functional` is not exported by Keras. It is needed because this one class serves both functional use
# (`Model(inputs, outputs)`) and subclassing: Keras' own route, `keras.Model.__init__` with graph arguments, rewrites
# the bases of the class in place (`inject_functional_model_class`), which would turn `Model` itself into a
# `Functional` for every later subclassed use. See `Model.__new__`.
from keras.src.models.functional import Functional

# A module import (names looked up at call time): keras_wtrain.optimizers imports keras_wtrain.training.randomness,
# whose package imports this module.
from keras_wtrain import optimizers as wt_optimizers
from keras_wtrain.training.randomness import Constant
from keras_wtrain.training.randomness import GradientDropout
from keras_wtrain.training.randomness import LossNoise
from keras_wtrain.training.randomness_ops import loss_noise_factors
from keras_wtrain.training.randomness_ops import noisy_sample_weight
from keras_wtrain.validation import check_seed

__all__ = ["Model", "WrappedModel", "wrap"]

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
    """A `keras.Model` that trains with loss noise and/or gradient dropout (arXiv:2404.03992).

    The two techniques of Altarabichi et al., "Rolling the dice for better deep
    learning performance" (Information Sciences 667, 2024; arXiv:2404.03992),
    as in the authors' code, through Keras' own hooks so `fit` just works:

    - loss noise (`LossNoise`): each example's loss is multiplied by a fresh
      `xi_i ~ N(1, sigma^2)` every step. Done in `compute_loss` by
      multiplying `xi` into `sample_weight`: the loss differentiated is, with
      the default reduction, `(1/N) sum_i w_i xi_i l_i + regularisation`.
      The logged `loss` is this noisy loss (an unbiased estimate of the
      clean one); metrics see the clean `sample_weight`.
    - gradient dropout (`GradientDropout`): every gradient entry is multiplied
      by a fresh keep mask (kept with probability `1 - p`, `p` rounded to a
      multiple of 1/256) before the optimizer, optionally divided by `1 - p`.
      `compile` wraps the optimizer in a
      `keras_wtrain.optimizers.GradientDropoutOptimizer` (under the
      `"mixed_float16"` policy Keras then wraps that in its
      `LossScaleOptimizer`), so `model.optimizer` is the wrapper and
      `model.optimizer.inner_optimizer` (through the loss scaler, if any) the
      optimizer given to `compile`.

    Use it like `keras.Model`, functional (`Model(inputs, outputs, ...)`) or
    subclassed (call `super().__init__(loss_noise=..., gradient_dropout=...)`),
    or wrap an existing model with `keras_wtrain.training.wrap`. Evaluation and
    prediction are unchanged. With both techniques off (None or constant 0)
    the model, its optimizer and its training are exactly those of
    `keras.Model`.

    Randomness comes from `keras.random.SeedGenerator`s (the loss-noise one
    owned by the model, the gradient-dropout one by the optimizer wrapper;
    reproducible with `seed` or `keras.utils.set_random_seed`), so it works
    with `jit_compile=True`, `steps_per_execution > 1` and JAX's stateless
    train step. Gradient-dropout schedules are evaluated at the optimizer's
    `iterations`; loss-noise schedules at the model's own counter of training
    batches (a variable saved with the model; it exists only for a scheduled
    loss noise, because on JAX `compute_loss` cannot see the optimizer's
    variables). `randomness_step` reads the step.

    Multi-device: under `tf.distribute.MirroredStrategy` every replica draws
    the same gradient-dropout masks (same seed state), so a mask is shared
    and dropping before the all-reduce equals dropping after it; loss-noise
    factors are drawn for the global batch and each replica takes its own
    slice, so every example gets its own `xi`. Under JAX
    `keras.distribution.DataParallel` the step is one SPMD program: `xi` is
    drawn for the global batch and masks once for the reduced gradients. In
    both cases training matches single-device training in distribution.

    `fit` also runs the data-dependent init of `WeightNormalization` layers
    not yet initialised, on the first 256 examples (arrays) or first batch.

    Args:
        *args: positional arguments of `keras.Model` (`inputs`, `outputs`).
        loss_noise: None (off), `sigma` (a number >= 0 or a schedule), or a
            `LossNoise`. `LossNoise()` gives the library default sigma = 0.3.
        gradient_dropout: None (off), `p` (in [0, 1), 0 or at least 1/512, or
            a schedule), or a `GradientDropout`. `GradientDropout()` gives
            p = 0.1, no rescaling.
        seed: int seed of the randomness (None: drawn from Keras' global
            seed); the gradient-dropout wrapper gets `seed + 1`.
        **kwargs: keyword arguments of `keras.Model` (`name`, ...).

    Raises:
        TypeError: if `loss_noise` / `gradient_dropout` / `seed` have a wrong
            type.
        ValueError: if a value is out of range (negative sigma, rate outside
            [0, 1) or a constant rate in (0, 1/512)).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.training import Model

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

        With a scheduled loss noise: the model's counter of training batches.
        Otherwise, with a scheduled gradient dropout: the optimizer's
        `iterations` (None before `compile`).
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

    def load_own_variables(self, store):
        own = self._trainable_variables + self._non_trainable_variables
        if len(store.keys()) == len(own) + 1 and self._wt_dropout_scheduled and not self._wt_noise_scheduled:
            # Saved before gradient dropout became an optimizer wrapper: the model then also counted steps for a
            # scheduled gradient dropout (created first, entry "0"); that count is now the optimizer's `iterations`.
            for i, variable in enumerate(own):
                variable.assign(store[str(i + 1)])
            return
        super().load_own_variables(store)

    # ------------------------------------------------------------------ compile

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """Configures the model for training; see `keras.Model.compile` (same arguments).

        With gradient dropout on, `optimizer` is wrapped in a
        `keras_wtrain.optimizers.GradientDropoutOptimizer` (unless its chain of
        wrapped optimizers already holds one), seeded with `seed + 1`. When
        that chain holds a `LossScaleOptimizer`, Keras' automatic loss-scale
        wrapping is skipped (it would scale twice).

        Args:
            optimizer: an optimizer or its name, as for `keras.Model.compile`.
            *args: the other positional arguments of `keras.Model.compile`.
            **kwargs: the keyword arguments of `keras.Model.compile`.

        Example:

        ```python
        import keras
        from keras_wtrain.training import Model

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
        """Compiles the model from `get_compile_config()`'s output (used when loading a `.keras` file).

        Keras' own `compile_from_config` does not call an overridden
        `compile` (it warns instead), so this is its body (Keras 3.15) calling
        this class's `compile`.

        Args:
            config: the dict returned by `get_compile_config()`.

        Example:

        ```python
        import keras
        from keras_wtrain.training import Model

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

        Before training, `WeightNormalization` layers that wait for their
        data-dependent init are initialised on the first 256 examples of
        `x` (arrays) or on its first batch (datasets, `keras.utils.PyDataset`);
        a one-shot iterator is not touched (a warning says to initialise
        by hand).

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
        from keras_wtrain.training import Model

        inputs = keras.Input((4,))
        model = Model(inputs, keras.layers.Dense(1)(inputs), gradient_dropout=0.1)
        model.compile("sgd", "mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=1, verbose=0)
        ```
        """
        if x is not None:
            from keras_wtrain.layers.weight_normalization import initialize_weight_normalization
            from keras_wtrain.layers.weight_normalization import needs_data_init

            if needs_data_init(self):
                from keras_wtrain.data import first_batch

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
            training: whether this is a training step (noise only then; a
                scheduled noise also advances the model's step counter).

        Returns:
            The scalar loss.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.training import Model

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
    """The class of a functional `keras_wtrain.training.Model` (arXiv:2404.03992); `Model(inputs, outputs)` makes one.

    A separate class so that `Model` itself stays usable for subclassing (see
    `Model.__new__`).

    Example:

    ```python
    import keras
    from keras_wtrain.training import Model

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


# Re-exported so that `from keras_wtrain.training.model import wrap` keeps working; their home is
# `keras_wtrain.training.wrapping`. At the bottom because `wrapping` imports `Model` from here: by then it is defined.
from keras_wtrain.training.wrapping import WrappedModel  # noqa: E402
from keras_wtrain.training.wrapping import wrap  # noqa: E402
