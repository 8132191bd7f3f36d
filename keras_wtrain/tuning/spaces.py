"""Search spaces for the keras-wtrain techniques (Keras Tuner hyperparameters).

`search_space(hp, techniques=...)` registers one documented range per
technique on a `keras_tuner.HyperParameters` object and returns a
`TechniqueConfig` holding what to build the model with (loss noise and
gradient dropout for `keras_wtrain.training.wrap`, a layer `wrap` function for
weight normalization / shadow weights) and the callbacks to train with (SeWA,
optimum shifting). `HyperModel(build_fn, techniques=...)` does all of it for a
user's `build_fn(hp)`.

The registered hyperparameters and their ranges are listed in
`search_space`'s docstring and in `docs/tutorials/tuning.md`.

The technique modules are imported lazily, inside the functions that need
them, so defining a space imports none of them.
"""

import inspect

import keras_tuner

from keras_wtrain import data_adapters
from keras_wtrain import validation
from keras_wtrain.layer_kinds import is_augmentable_convolution

__all__ = ["HyperModel", "TechniqueConfig", "search_space", "TECHNIQUES"]

TECHNIQUES = ("loss-noise", "grad-dropout", "shadow", "weightnorm", "sewa", "optimum-shift")
SHADOW_TRANSFORMS = ("shift", "crop_stretch", "shift_or_crop")
SEWA_CHECKPOINTS = 10


def _check_techniques(techniques):
    if isinstance(techniques, str):
        techniques = (techniques,)
    try:
        techniques = tuple(techniques)
    except TypeError:
        raise TypeError(
            f"argument `techniques` must be a sequence of technique names; received {techniques!r}."
        ) from None
    unknown = [t for t in techniques if t not in TECHNIQUES]
    if unknown:
        raise ValueError(f"argument `techniques` has unknown entries {unknown}; allowed: {', '.join(TECHNIQUES)}.")
    if len(set(techniques)) != len(techniques):
        raise ValueError(f"argument `techniques` lists a technique twice: {list(techniques)}.")
    return techniques


class TechniqueConfig:
    """The techniques chosen for one trial: model-building kwargs and callbacks.

    Returned by `search_space`; `HyperModel` uses it for you.

    Attributes:
        techniques: the technique names this configuration covers.
        values: the chosen hyperparameter values (name -> value).
        loss_noise: loss-noise standard deviation σ, or None when not searched.
        loss_noise_schedule: `"constant"` or `"linear_decay"` (σ decays
            linearly to 0 over `schedule_steps` training steps).
        schedule_steps: length of the linear decay, in training steps.
        gradient_dropout: gradient-dropout rate p, or None when not searched.
        weight_normalization: whether Dense/Conv layers get `WeightNormalization`.
        shadow: `{"transform": name, "strength": s}` or None.
        sewa_k: SeWA `k` (of `sewa_checkpoints` checkpoints), or None.
        optimum_shifting: whether the `OptimumShifting` callback is used.
        seed: seed for the shadow-weight transforms.

    Example:

    ```python
    import keras_tuner
    from keras_wtrain.tuning import search_space

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
        """Keyword arguments for `keras_wtrain.training.wrap` / `keras_wtrain.Model`.

        Only the searched techniques appear (`loss_noise`, `gradient_dropout`).
        `loss_noise` is σ as a float, or a `LossNoise(LinearDecay(σ, 0,
        schedule_steps))` for the `"linear_decay"` schedule.

        Returns:
            A dict.

        Example:

        ```python
        import keras_tuner
        from keras_wtrain.tuning import search_space

        search_space(keras_tuner.HyperParameters(), techniques=("grad-dropout",)).model_kwargs
        ```
        """
        kwargs = {}
        if self.loss_noise is not None:
            kwargs["loss_noise"] = self.loss_noise
            if self.loss_noise_schedule == "linear_decay" and self.loss_noise > 0:
                from keras_wtrain.training.randomness import LinearDecay
                from keras_wtrain.training.randomness import LossNoise

                kwargs["loss_noise"] = LossNoise(LinearDecay(self.loss_noise, 0.0, decay_steps=self.schedule_steps))
        if self.gradient_dropout is not None:
            kwargs["gradient_dropout"] = self.gradient_dropout
        return kwargs

    @property
    def needs_layer_wrap(self):
        """Whether `wrap` changes any layer (weight normalization or shadow weights chosen)."""
        return self.weight_normalization or self.shadow is not None

    def shadow_transform(self):
        """Builds the shadow-weight transform chosen for this trial.

        Returns:
            A transform for `keras_wtrain.layers.shadow_weights.ShadowWeights`,
            or None when shadow weights are not used.

        Example:

        ```python
        import keras_tuner
        from keras_wtrain.tuning import search_space

        search_space(keras_tuner.HyperParameters(), techniques=("shadow",)).shadow_transform()
        ```
        """
        if self.shadow is None:
            return None
        from keras_wtrain.layers import transforms

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

        Shadow weights go on the layers the WAS authors augment (k x k
        convolutions, k >= 3); weight normalization on every other Dense /
        Conv layer, and also on those convolutions when shadow weights are off.
        Other layers, and every layer when neither technique is chosen, are
        returned unchanged.

        Args:
            layer: a Keras layer (not yet built).

        Returns:
            The layer, wrapped or not.

        Example:

        ```python
        import keras_tuner
        from keras_wtrain.models import build_model
        from keras_wtrain.tuning import search_space

        hp = keras_tuner.HyperParameters()
        config = search_space(hp, techniques=("weightnorm",))
        model = build_model("mlp", (28, 28, 1), 10, wrap=config.wrap)
        ```
        """
        import keras

        if self.shadow is not None and is_augmentable_convolution(layer):
            from keras_wtrain.layers.shadow_weights import ShadowWeights

            return ShadowWeights(layer, transform=self.shadow_transform(), seed=self.seed)
        if self.weight_normalization and isinstance(
            layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
        ):
            from keras_wtrain.layers.weight_normalization import WeightNormalization

            return WeightNormalization(layer)
        return layer

    def wrap_model(self, model):
        """Applies loss noise / gradient dropout to a built model with `keras_wtrain.training.wrap`.

        A model compiled by the user is compiled again, from its compile
        config, after wrapping. With σ = 0 and p = 0 (or neither technique
        searched) the model is returned as it is: both are then exact no-ops.

        Args:
            model: a `keras.Model`.

        Returns:
            The model to train.

        Example:

        ```python
        import keras
        import keras_tuner
        from keras_wtrain.tuning import search_space

        config = search_space(keras_tuner.HyperParameters(), techniques=("loss-noise",))
        model = config.wrap_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        ```
        """
        kwargs = {k: v for k, v in self.model_kwargs.items() if v}
        if not kwargs:
            return model
        from keras_wtrain.training.model import wrap

        compile_config = model.get_compile_config() if getattr(model, "compiled", False) else None
        wrapped = wrap(model, seed=self.seed, **kwargs)
        if compile_config is not None and not getattr(wrapped, "compiled", False):
            wrapped.compile_from_config(compile_config)
        return wrapped

    def callbacks(self, data=None):
        """The training callbacks of the chosen techniques.

        Args:
            data: `(x, y)` training arrays for SeWA's selection and
                optimum shifting (a batch of training inputs covering every
                class); ignored when neither is chosen.

        Returns:
            A list of callbacks (SeWA, optimum shifting), possibly empty.

        Raises:
            ValueError: if SeWA or optimum shifting is chosen and `data` is None.

        Example:

        ```python
        import keras_tuner
        from keras_wtrain.tuning import search_space

        import numpy as np

        data = (np.zeros((64, 8), "float32"), np.arange(64) % 4)
        search_space(keras_tuner.HyperParameters(), techniques=("sewa",)).callbacks(data)
        ```
        """
        callbacks = []
        if self.sewa_k is not None:
            from keras_wtrain.callbacks.weight_averaging import SelectiveWeightAveraging

            if data is None:
                raise ValueError("SeWA was chosen but argument `data` is None: pass (x, y) training arrays.")
            callbacks.append(
                SelectiveWeightAveraging(
                    k=self.sewa_k,
                    num_checkpoints=self.sewa_checkpoints,
                    strategy="sewa",
                    selection_data=data,
                    seed=self.seed,
                )
            )
        if self.optimum_shifting:
            if data is None:
                raise ValueError(
                    "optimum shifting was chosen but argument `data` is None: pass (x, y) training arrays."
                )
            from keras_wtrain.callbacks.optimum_shifting import OptimumShifting

            callbacks.append(OptimumShifting(data=data))
        return callbacks


def search_space(hp, techniques=TECHNIQUES, seed=None, schedule_steps=1000):
    """Registers documented search ranges for keras-wtrain techniques.

    | technique | hyperparameter | range |
    |---|---|---|
    | `"loss-noise"` | `loss_noise_stddev` | Float [0, 1] (σ of the multiplicative per-example noise; 0 = off) |
    | `"loss-noise"` | `loss_noise_schedule` | Choice `constant` / `linear_decay` (σ to 0 over `schedule_steps`) |
    | `"grad-dropout"` | `gradient_dropout_rate` | Float [0, 0.5], step 1/256 (p on the masks' 8-bit grid; 0 = off) |
    | `"shadow"` | `shadow_transform` | Choice `shift` / `crop_stretch` / `shift_or_crop` |
    | `"shadow"` | `shadow_strength` | Float [0.1, 0.5] (shift: max offset fraction; crop: 1 - min scale) |
    | `"weightnorm"` | `weight_normalization` | Boolean |
    | `"sewa"` | `sewa_k` | Int [2, 10] of `sewa_checkpoints` = 10 (Fixed) |
    | `"optimum-shift"` | `optimum_shifting` | Boolean |

    The loss-noise and gradient-dropout ranges are those of the randomness
    study (Altarabichi et al., arXiv:2404.03992); shadow strengths bracket the
    WAS authors' settings (shift 0.3, crop scale 0.8-1.0). Register your own
    ranges under the same names before calling this (or pass
    `hyperparameters=` to the tuner) to override them: Keras Tuner keeps the
    first registration.

    Args:
        hp: a `keras_tuner.HyperParameters`.
        techniques: technique names, any of `"loss-noise"`, `"grad-dropout"`,
            `"shadow"`, `"weightnorm"`, `"sewa"`, `"optimum-shift"`.
        seed: seed passed to the shadow-weight layers.
        schedule_steps: training steps over which the `"linear_decay"`
            loss-noise schedule decays σ to 0 (e.g. epochs x steps per epoch).

    Returns:
        A `TechniqueConfig` with the chosen values, `model_kwargs`, `wrap`,
        `wrap_model` and `callbacks(data)`.

    Raises:
        TypeError: if `hp` is not a `keras_tuner.HyperParameters` or
            `techniques` is not a sequence.
        ValueError: for an unknown or repeated technique name.

    Example:

    ```python
    import keras_tuner
    from keras_wtrain.tuning import search_space

    hp = keras_tuner.HyperParameters()
    config = search_space(hp, techniques=("loss-noise", "grad-dropout"))
    print(config.model_kwargs)  # {'loss_noise': 0.0, 'gradient_dropout': 0.0} (the defaults)
    ```
    """
    if not isinstance(hp, keras_tuner.HyperParameters):
        raise TypeError(
            f"argument `hp` must be a keras_tuner.HyperParameters; received {hp!r} of type {type(hp).__name__}."
        )
    techniques = _check_techniques(techniques)
    validation.check_int("schedule_steps", schedule_steps, minimum=1)
    config = TechniqueConfig(techniques=techniques, seed=seed, schedule_steps=schedule_steps)
    values = {}
    if "loss-noise" in techniques:
        config.loss_noise = values["loss_noise_stddev"] = hp.Float("loss_noise_stddev", 0.0, 1.0, default=0.0)
        config.loss_noise_schedule = values["loss_noise_schedule"] = hp.Choice(
            "loss_noise_schedule", ["constant", "linear_decay"], default="constant"
        )
    if "grad-dropout" in techniques:
        # On the 1/256 grid that GradientDropout's 8-bit masks use: a rate in (0, 1/512) would drop nothing
        # and is refused, so a continuous range would make some trials fail.
        config.gradient_dropout = values["gradient_dropout_rate"] = hp.Float(
            "gradient_dropout_rate", 0.0, 0.5, step=1 / 256, default=0.0
        )
    if "shadow" in techniques:
        transform = values["shadow_transform"] = hp.Choice(
            "shadow_transform", list(SHADOW_TRANSFORMS), default="crop_stretch"
        )
        strength = values["shadow_strength"] = hp.Float("shadow_strength", 0.1, 0.5, default=0.3)
        config.shadow = {"transform": transform, "strength": strength}
    if "weightnorm" in techniques:
        config.weight_normalization = values["weight_normalization"] = hp.Boolean("weight_normalization", default=False)
    if "sewa" in techniques:
        config.sewa_checkpoints = values["sewa_checkpoints"] = hp.Fixed("sewa_checkpoints", SEWA_CHECKPOINTS)
        config.sewa_k = values["sewa_k"] = hp.Int("sewa_k", 2, 10, default=5)
        config.sewa_k = min(config.sewa_k, config.sewa_checkpoints)
    if "optimum-shift" in techniques:
        config.optimum_shifting = values["optimum_shifting"] = hp.Boolean("optimum_shifting", default=False)
    config.values = values
    return config


def _accepts_wrap(build_fn):
    try:
        parameters = inspect.signature(build_fn).parameters
    except (TypeError, ValueError):
        return False
    return "wrap" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


class HyperModel(keras_tuner.HyperModel):
    """A Keras Tuner hypermodel: the user's model plus searched keras-wtrain techniques.

    `build(hp)` registers the techniques' ranges (see `search_space`), calls
    `build_fn(hp)` (with `wrap=config.wrap` when `build_fn` takes a `wrap`
    argument, which weight normalization and shadow weights need), then wraps
    the model with loss noise / gradient dropout
    (`keras_wtrain.training.wrap`). `build_fn` should return a compiled model,
    as for any Keras Tuner hypermodel. `fit` adds the techniques' callbacks
    (SeWA, optimum shifting) to the user's.

    Args:
        build_fn: `build_fn(hp)` or `build_fn(hp, wrap=...)` returning a
            compiled `keras.Model`.
        techniques: technique names (see `search_space`).
        shifting_batch_size: number of training examples given to optimum
            shifting and to SeWA's selection (drawn from the start of the
            training data; must cover every class).
        seed: seed for the shadow-weight layers.
        schedule_steps: length, in training steps, of the `"linear_decay"`
            loss-noise schedule (see `search_space`).
        **kwargs: `keras_tuner.HyperModel` arguments (`name`, `tunable`).

    Raises:
        TypeError: if `build_fn` is not callable, or it does not accept `wrap`
            while `"weightnorm"` or `"shadow"` is requested.
        ValueError: for an unknown technique, or `shifting_batch_size` or
            `schedule_steps` < 1.

    Example:

    ```python
    import keras
    from keras_wtrain.models import build_model
    from keras_wtrain.tuning import PSO
    from keras_wtrain.tuning import HyperModel

    def build(hp, wrap=None):
        model = build_model("mlp", (28, 28, 1), 10, wrap=wrap)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return model

    hypermodel = HyperModel(build, techniques=("loss-noise", "grad-dropout", "weightnorm"))
    tuner = PSO(hypermodel, objective="val_accuracy", max_trials=10, directory="/tmp/tune", overwrite=True)
    ```
    """

    def __init__(
        self, build_fn, techniques=TECHNIQUES, shifting_batch_size=256, seed=None, schedule_steps=1000, **kwargs
    ):
        super().__init__(**kwargs)
        if not callable(build_fn):
            raise TypeError(f"argument `build_fn` must be callable; received {build_fn!r}.")
        self.techniques = _check_techniques(techniques)
        self._passes_wrap = _accepts_wrap(build_fn)
        layer_techniques = [t for t in self.techniques if t in ("weightnorm", "shadow")]
        if layer_techniques and not self._passes_wrap:
            raise TypeError(
                f"argument `build_fn` must accept a `wrap` keyword argument (a function layer -> layer applied "
                f"to its Dense/Conv layers) to use techniques {layer_techniques}; "
                f"{getattr(build_fn, '__name__', build_fn)!r} does not."
            )
        validation.check_int("shifting_batch_size", shifting_batch_size, minimum=1)
        self.build_fn = build_fn
        self.shifting_batch_size = shifting_batch_size
        self.seed = seed
        validation.check_int("schedule_steps", schedule_steps, minimum=1)
        self.schedule_steps = schedule_steps

    def build(self, hp):
        """Builds the model for one trial (see the class docstring).

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.

        Returns:
            A compiled `keras.Model` with the chosen techniques.
        """
        config = search_space(hp, self.techniques, seed=self.seed, schedule_steps=self.schedule_steps)
        model = self.build_fn(hp, wrap=config.wrap) if self._passes_wrap else self.build_fn(hp)
        return config.wrap_model(model)

    def fit(self, hp, model, *args, **kwargs):
        """Trains `model` with `model.fit`, adding the techniques' callbacks.

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.
            model: the model returned by `build`.
            *args: `model.fit` positional arguments (`x`, `y`, ...).
            **kwargs: `model.fit` keyword arguments.

        Returns:
            The `History` of `model.fit`; when SeWA or optimum shifting ran and
            `validation_data` was given, a dict of the last epoch's metrics
            with the `val_*` entries re-measured on the final (averaged /
            shifted) weights, which is what the tuner then scores.
        """
        config = search_space(hp, self.techniques, seed=self.seed, schedule_steps=self.schedule_steps)
        data = None
        if config.optimum_shifting or config.sewa_k is not None:
            x = args[0] if args else kwargs.get("x")
            y = args[1] if len(args) > 1 else kwargs.get("y")
            data = data_adapters.collect(
                x if y is None else (x, y), max_examples=self.shifting_batch_size, require_targets=True, name="x"
            )
        technique_callbacks = config.callbacks(data)
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + technique_callbacks
        history = model.fit(*args, **kwargs)
        validation_data = kwargs.get("validation_data")
        if not technique_callbacks or validation_data is None:
            return history
        # SeWA and optimum shifting change the weights when training ends, after the last per-epoch
        # validation: score the trial on the final weights instead of the history.
        results = {name: values[-1] for name, values in history.history.items()}
        if isinstance(validation_data, tuple):
            x_val, y_val = validation_data[0], validation_data[1]
            evaluated = model.evaluate(x_val, y_val, verbose=0, return_dict=True)
        else:
            evaluated = model.evaluate(validation_data, verbose=0, return_dict=True)
        results.update({f"val_{name}": float(value) for name, value in evaluated.items()})
        return results
