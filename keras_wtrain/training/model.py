"""`Model`: a `keras.Model` whose `train_step` adds loss noise and gradient dropout.

The randomness maths lives in `keras_wtrain.training.randomness` (backend-free);
this module holds only the plumbing per backend, following Keras' own
`train_step` for TensorFlow, JAX and PyTorch:

- loss noise is applied in `compute_loss` (shared by every backend): the
  per-example factors `xi` multiply `sample_weight` before Keras' compiled loss
  reduces it, so metrics, `class_weight`, multiple outputs, regularisation
  losses and loss scaling are Keras' own code paths;
- gradient dropout is applied to the gradients between the backward pass and
  the optimizer (`optimizer.apply_gradients` / `stateless_apply` / `apply`), so
  the optimizer's own loss-scale unscaling, gradient accumulation, `clipnorm`
  / `clipvalue` / `global_clipnorm` and weight decay run after it, unchanged.
"""

import warnings

import keras
from keras import ops
from keras.src.models import model as _keras_model_module
from keras.src.models.functional import Functional
from keras.src.models.model import functional_init_arguments

from keras_wtrain.training.randomness import Constant
from keras_wtrain.training.randomness import GradientDropout
from keras_wtrain.training.randomness import LossNoise
from keras_wtrain.training.randomness import drop_gradients
from keras_wtrain.training.randomness import loss_noise_factors
from keras_wtrain.training.randomness import noisy_sample_weight

__all__ = ["Model", "WrappedModel", "wrap"]

_CONFIG_KEYS = ("loss_noise", "gradient_dropout", "seed")


def _as_loss_noise(value):
    if value is None or isinstance(value, LossNoise):
        return value
    if isinstance(value, dict):
        obj = keras.saving.deserialize_keras_object(value)
        if isinstance(obj, LossNoise):
            return obj
        raise TypeError(f"argument `loss_noise` must describe a LossNoise; received {value!r}.")
    if isinstance(value, bool):
        raise TypeError(
            f"argument `loss_noise` must be None, a number >= 0, a schedule or a LossNoise; received {value!r}."
        )
    return LossNoise(value)


def _as_gradient_dropout(value):
    if value is None or isinstance(value, GradientDropout):
        return value
    if isinstance(value, dict):
        obj = keras.saving.deserialize_keras_object(value)
        if isinstance(obj, GradientDropout):
            return obj
        raise TypeError(f"argument `gradient_dropout` must describe a GradientDropout; received {value!r}.")
    if isinstance(value, bool):
        raise TypeError(
            f"argument `gradient_dropout` must be None, a rate in [0, 1), a schedule or a GradientDropout; "
            f"received {value!r}."
        )
    return GradientDropout(value)


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
    as in the authors' code, applied inside `train_step` so `fit` just works:

    - loss noise (`LossNoise`): each example's loss is multiplied by a fresh
      `xi_i ~ N(1, sigma^2)` every step. Done in `compute_loss` by
      multiplying `xi` into `sample_weight`: the loss differentiated is, with
      the default reduction, `(1/N) sum_i w_i xi_i l_i + regularisation`.
      The logged `loss` is this noisy loss (an unbiased estimate of the
      clean one); metrics see the clean `sample_weight`.
    - gradient dropout (`GradientDropout`): every gradient entry is multiplied
      by `u > p`, `u ~ U[0, 1)` fresh every step, before the optimizer
      (optionally divided by `1 - p`).

    Use it like `keras.Model`, functional (`Model(inputs, outputs, ...)`) or
    subclassed (call `super().__init__(loss_noise=..., gradient_dropout=...)`),
    or wrap an existing model with `keras_wtrain.training.wrap`. Evaluation and
    prediction are unchanged. With both techniques off (None or constant 0)
    training is exactly that of `keras.Model`.

    Randomness comes from `keras.random.SeedGenerator`s owned by the model
    (reproducible with `seed` or `keras.utils.set_random_seed`), so it works
    with `jit_compile=True`, `steps_per_execution > 1` and JAX's stateless
    train step. Schedules are evaluated at `randomness_step`, the number of
    training batches this model has trained on (saved with the model).

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
        gradient_dropout: None (off), `p` (in [0, 1) or a schedule), or a
            `GradientDropout`. `GradientDropout()` gives p = 0.1, no rescaling.
        seed: int seed of the model's seed generators (None: drawn from
            Keras' global seed).
        **kwargs: keyword arguments of `keras.Model` (`name`, ...).

    Raises:
        TypeError: if `loss_noise` / `gradient_dropout` have a wrong type.
        ValueError: if a value is out of range (negative sigma, rate outside
            [0, 1)).
        NotImplementedError: gradient dropout on a backend other than
            TensorFlow, JAX and PyTorch.

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
    ```
    """

    _paper_arxiv = "2404.03992"

    def __new__(cls, *args, **kwargs):
        # Functional use gets a subclass that also derives from Functional. Keras itself would
        # instead rewrite the class's bases in place (`inject_functional_model_class`), which
        # would turn this class into a Functional for every later subclassed use too.
        if functional_init_arguments(args, kwargs) and not issubclass(cls, Functional):
            cls = FunctionalModel if cls is Model else _inject_functional(cls)
        return keras.Model.__new__(cls)

    def __init__(self, *args, loss_noise=None, gradient_dropout=None, seed=None, **kwargs):
        if functional_init_arguments(args, kwargs):
            # What keras.Model.__init__ does, without rewriting class bases.
            _keras_model_module.Trainer.__init__(self)
            Functional.__init__(self, *args, **kwargs)
        else:
            keras.Model.__init__(self, *args, **kwargs)
        self._setup_randomness(loss_noise, gradient_dropout, seed)

    # ------------------------------------------------------------------ configuration

    def _setup_randomness(self, loss_noise=None, gradient_dropout=None, seed=None):
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise TypeError(f"argument `seed` must be an int or None; received {seed!r}.")
        loss_noise = _as_loss_noise(loss_noise)
        gradient_dropout = _as_gradient_dropout(gradient_dropout)
        if (
            gradient_dropout is not None
            and not gradient_dropout.is_off
            and keras.backend.backend() not in ("tensorflow", "jax", "torch")
        ):
            raise NotImplementedError(
                f"gradient dropout has no train_step for the {keras.backend.backend()!r} backend "
                "(TensorFlow, JAX and PyTorch are supported)."
            )
        self._wt_seed = seed
        self._wt_loss_noise = loss_noise
        self._wt_gradient_dropout = gradient_dropout
        active_noise = loss_noise is not None and not loss_noise.is_off
        active_dropout = gradient_dropout is not None and not gradient_dropout.is_off
        self._wt_noise_active = active_noise
        self._wt_dropout_active = active_dropout
        # Seed generators and the step counter exist only when needed, so a model with
        # both techniques off has exactly the variables (and the training) of keras.Model.
        if active_noise and getattr(self, "_wt_noise_seed", None) is None:
            self._wt_noise_seed = keras.random.SeedGenerator(seed, name="loss_noise_seed")
        if active_dropout and getattr(self, "_wt_dropout_seed", None) is None:
            self._wt_dropout_seed = keras.random.SeedGenerator(
                None if seed is None else seed + 1, name="gradient_dropout_seed"
            )
        scheduled = (active_noise and not isinstance(loss_noise.stddev, Constant)) or (
            active_dropout and not isinstance(gradient_dropout.rate, Constant)
        )
        if scheduled and getattr(self, "_wt_step", None) is None:
            self._wt_step = keras.Variable(
                0, dtype="int32", trainable=False, aggregation="only_first_replica", name="randomness_step"
            )

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
        """Training batches seen, the step at which schedules are evaluated (None without schedules)."""
        step = getattr(self, "_wt_step", None)
        return None if step is None else int(ops.convert_to_numpy(step.value))

    def _schedule_value(self, schedule):
        if isinstance(schedule, Constant):
            return schedule.value
        return schedule(self._wt_step.value)

    def _count_step(self):
        step = getattr(self, "_wt_step", None)
        if step is not None:
            step.assign_add(1)

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
            training: whether this is a training step (noise only then).

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
            stddev = self._schedule_value(self._wt_loss_noise.stddev)
            replica, replicas = _replica_info()
            if replicas == 1:
                factors = loss_noise_factors(batch, stddev, seed=self._wt_noise_seed)
            else:
                # Same seed state on every replica: draw for the global batch, take this replica's slice.
                factors = loss_noise_factors(batch * replicas, stddev, seed=self._wt_noise_seed)
                factors = ops.reshape(factors, (replicas, batch))[replica]
            sample_weight = noisy_sample_weight(sample_weight, factors)
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)

    # ------------------------------------------------------------------ train_step per backend

    def _drop(self, gradients):
        rate = self._schedule_value(self._wt_gradient_dropout.rate)
        return drop_gradients(gradients, rate, seed=self._wt_dropout_seed, rescale=self._wt_gradient_dropout.rescale)

    def train_step(self, *args, **kwargs):
        """One training step: Keras' own, with gradient dropout before the optimizer.

        Backend-specific like `keras.Model.train_step` (TensorFlow and PyTorch:
        `train_step(data)`; JAX: `train_step(state, data)`, stateless).

        Returns:
            The logs dict (JAX: `(logs, state)`).

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.training import Model

        inputs = keras.Input((4,))
        model = Model(inputs, keras.layers.Dense(1)(inputs), gradient_dropout=0.5)
        model.compile("sgd", "mse")
        model.train_on_batch(np.ones((8, 4)), np.ones((8, 1)))  # runs train_step
        ```
        """
        backend = keras.backend.backend()
        if backend == "jax":
            return self._jax_train_step(*args, **kwargs)
        if not self._wt_dropout_active:
            logs = super().train_step(*args, **kwargs)
            self._count_step()
            return logs
        if backend == "tensorflow":
            return self._tf_train_step(*args, **kwargs)
        return self._torch_train_step(*args, **kwargs)

    def _tf_train_step(self, data):
        # Keras 3.15 keras/src/backend/tensorflow/trainer.py TensorFlowTrainer.train_step, plus `self._drop`.
        import tensorflow as tf
        from keras.src.losses import loss as loss_module
        from keras.src.trainers.data_adapters import data_adapter_utils

        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            if self._call_has_training_arg:
                y_pred = self(x, training=True)
            else:
                y_pred = self(x)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            self._loss_tracker.update_state(
                loss_module.unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0],
            )
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
        if self.trainable_weights:
            trainable_weights = self.trainable_weights
            gradients = tape.gradient(loss, trainable_weights)
            gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]
            gradients = self._drop(gradients)
            self.optimizer.apply_gradients(zip(gradients, trainable_weights))
        else:
            warnings.warn("The model does not have any trainable weights.")
        self._count_step()
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _torch_train_step(self, data):
        # Keras 3.15 keras/src/backend/torch/trainer.py TorchTrainer.train_step, plus `self._drop`.
        import torch
        from keras.src.trainers.data_adapters import data_adapter_utils

        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        if self._call_has_training_arg:
            y_pred = self(x, training=True)
        else:
            y_pred = self(x)
        self.zero_grad()
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        self._loss_tracker.update_state(
            loss, sample_weight=next(i for i in keras.tree.flatten(x) if i is not None).shape[0]
        )
        if self.optimizer is not None:
            loss = self.optimizer.scale_loss(loss)
        if self.trainable_weights:
            loss.backward()
            trainable_weights = self.trainable_weights[:]
            gradients = [v.value.grad for v in trainable_weights]
            with torch.no_grad():
                gradients = self._drop(gradients)
                self.optimizer.apply(gradients, trainable_weights)
        else:
            warnings.warn("The model does not have any trainable weights.")
        self._count_step()
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _jax_train_step(self, state, data):
        # Keras 3.15 keras/src/backend/jax/trainer.py JAXTrainer.train_step, plus `self._drop` and the counter.
        import jax
        from keras.src.trainers.data_adapters import data_adapter_utils

        trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables = state
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (loss, aux), grads = grad_fn(
            trainable_variables,
            non_trainable_variables,
            metrics_variables,
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer_variables,
        )
        unscaled_loss, y_pred, non_trainable_variables, metrics_variables = aux

        # Gradient dropout and the step counter read/write only the model's own randomness variables.
        own = [v for v in (getattr(self, "_wt_step", None),) if v is not None]
        if self._wt_dropout_active:
            own.append(self._wt_dropout_seed.state)
        if own:
            refs = self.non_trainable_variables
            index = {id(v): i for i, v in enumerate(refs)}
            positions = [index[id(v)] for v in own]
            mapping = [(refs[i], non_trainable_variables[i]) for i in positions]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                if self._wt_dropout_active:
                    grads = self._drop(grads)
                self._count_step()
            non_trainable_variables = list(non_trainable_variables)
            for i in positions:
                non_trainable_variables[i] = scope.get_current_value(refs[i])

        trainable_variables, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable_variables
        )
        logs, metrics_variables = self._update_metrics_variables(
            metrics_variables, unscaled_loss, x, y, y_pred, sample_weight
        )
        state = (trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables)
        return logs, state


@keras.saving.register_keras_serializable(package="keras_wtrain")
class FunctionalModel(Model, Functional):
    """The class of a functional `keras_wtrain.training.Model` (arXiv:2404.03992); `Model(inputs, outputs)` makes one.

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


@keras.saving.register_keras_serializable(package="keras_wtrain")
class WrappedModel(Model):
    """A `Model` that calls an existing (subclassed or unbuilt) model; made by `wrap` (arXiv:2404.03992).

    Args:
        model: the `keras.Model` to call; its layers and weights are used as they are.
        **kwargs: `Model` keyword arguments (`loss_noise`, `gradient_dropout`, `seed`, `name`).

    Raises:
        TypeError: if `model` is not a `keras.Model`.

    Example:

    ```python
    import keras
    from keras_wtrain.training.model import WrappedModel

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


def _graph_of(model):
    """`(inputs, outputs)` of a functional model or a built Sequential (their original structure), else None."""
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if not model.built or functional is None:
            return None, None
        model = functional
    if isinstance(model, Functional):
        return model._inputs_struct, model._outputs_struct
    return None, None


def wrap(model, loss_noise=None, gradient_dropout=None, seed=None):
    """Returns a `keras_wtrain.training.Model` that trains `model`'s layers with loss noise / gradient dropout.

    The new model shares `model`'s layers and weights (training one trains the
    other). Functional models and built `Sequential` models become a
    functional `Model` over the same graph; subclassed or unbuilt models are
    called from a `WrappedModel`. If `model` is compiled, the new model is
    compiled with the same arguments and the same optimizer object.

    Args:
        model: a `keras.Model` (functional, Sequential or subclassed).
        loss_noise: None, a number >= 0, a schedule, or a `LossNoise`.
        gradient_dropout: None, a rate in [0, 1), a schedule, or a `GradientDropout`.
        seed: int seed of the randomness, or None.

    Returns:
        The new `keras_wtrain.training.Model`.

    Raises:
        TypeError: if `model` is not a `keras.Model`, or an argument has a wrong type.
        ValueError: if a value is out of range.

    Example:

    ```python
    import keras
    from keras_wtrain.training import GradientDropout
    from keras_wtrain.training import LossNoise
    from keras_wtrain.training import wrap

    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    model = wrap(base, loss_noise=LossNoise(), gradient_dropout=GradientDropout())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"argument `model` must be a keras.Model; received {model!r}.")
    kwargs = {"loss_noise": loss_noise, "gradient_dropout": gradient_dropout, "seed": seed}
    inputs, outputs = _graph_of(model)
    if inputs is not None:
        wrapped = Model(inputs=inputs, outputs=outputs, name=model.name, **kwargs)
    else:
        wrapped = WrappedModel(model, name=model.name, **kwargs)
    if getattr(model, "compiled", False) and getattr(model, "_compile_config", None) is not None:
        compile_args = dict(model._compile_config.config)
        compile_args["optimizer"] = model.optimizer
        wrapped.compile(**compile_args)
    return wrapped
