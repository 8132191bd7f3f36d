"""Search spaces for the keras-wtrain techniques (Keras Tuner hyperparameters).

`search_space(hp, techniques=...)` registers one documented range per
technique on a `keras_tuner.HyperParameters` object and returns a
`TechniqueConfig` (`keras_wtrain.tuning.technique_config`, importable from here too) holding what to build
the model with (loss noise and
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
from keras_wtrain.tuning.technique_config import SEWA_CHECKPOINTS
from keras_wtrain.tuning.technique_config import SHADOW_TRANSFORMS
from keras_wtrain.tuning.technique_config import TechniqueConfig

__all__ = ["HyperModel", "TechniqueConfig", "search_space", "TECHNIQUES"]

TECHNIQUES = ("loss-noise", "grad-dropout", "shadow", "weightnorm", "sewa", "optimum-shift")


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
