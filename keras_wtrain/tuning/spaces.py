"""Search spaces for the keras-wtrain techniques: `search_space` and `HyperModel`.

The technique modules are imported lazily, so defining a space imports none of them.
"""

import inspect

import keras_tuner

from keras_wtrain._core import data_adapters
from keras_wtrain._core import validation
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
    """Registers documented search ranges for keras-wtrain techniques on `hp` and returns the chosen `TechniqueConfig`.

    Hyperparameters: `loss_noise_stddev`, `loss_noise_schedule`, `gradient_dropout_rate`, `shadow_transform`,
    `shadow_strength`, `weight_normalization`, `sewa_k`, `optimum_shifting` (ranges in `docs/tutorials/tuning.md`);
    register one first to override its range. Cost: negligible.

    Args:
        hp: a `keras_tuner.HyperParameters`.
        techniques: any of `"loss-noise"`, `"grad-dropout"`, `"shadow"`, `"weightnorm"`, `"sewa"`, `"optimum-shift"`.
        seed: seed passed to the shadow-weight layers.
        schedule_steps: training steps over which the `"linear_decay"` loss-noise schedule decays σ to 0.

    Returns:
        A `TechniqueConfig` with the chosen values.

    Raises:
        TypeError: if `hp` is not a `keras_tuner.HyperParameters` or `techniques` is not a sequence.
        ValueError: for an unknown or repeated technique name.

    Example:

    ```python
    import keras_tuner
    from keras_wtrain.tuning.spaces import search_space

    config = search_space(keras_tuner.HyperParameters(), techniques=("loss-noise", "grad-dropout"))
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

    `build(hp)` calls `build_fn(hp)` (with `wrap=` when it takes one) and adds loss noise / gradient dropout; `fit`
    adds the SeWA / optimum-shifting callbacks. Cost: that of the chosen techniques, plus one validation pass when a
    callback changed the final weights.

    Args:
        build_fn: `build_fn(hp)` or `build_fn(hp, wrap=...)` returning a compiled `keras.Model`.
        techniques: technique names (see `search_space`).
        shifting_batch_size: training examples given to optimum shifting and SeWA (must cover every class).
        seed: seed for the shadow-weight layers.
        schedule_steps: length, in training steps, of the `"linear_decay"` loss-noise schedule.
        **kwargs: `keras_tuner.HyperModel` arguments (`name`, `tunable`).

    Raises:
        TypeError: if `build_fn` is not callable, or does not accept `wrap` with `"weightnorm"` or `"shadow"`.
        ValueError: for an unknown technique, or `shifting_batch_size` or `schedule_steps` < 1.

    Example:

    ```python
    import keras
    from keras_wtrain.comparison.models import build_model
    from keras_wtrain.tuning.pso import PSO
    from keras_wtrain.tuning.spaces import HyperModel

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
        """Builds the compiled model for one trial, with the chosen techniques.

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.

        Returns:
            A compiled `keras.Model`.
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
            The `History`; or, when SeWA / optimum shifting ran with `validation_data`, a dict of the last epoch's
            metrics with `val_*` re-measured on the final weights (what the tuner scores).
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
