"""Technique names (single or joined by `+`) -> the model and callbacks one comparison run trains.

Wrappers (`weightnorm`, `shadow`) rebuild the model with fresh weights (`keras_wtrain.wrap_layers`), `loss-noise` /
`grad-dropout` wrap the training step, and the callbacks are one weight average then `optimum-shift`; each with the
library's defaults.
"""

import math
from typing import NamedTuple

import keras

from keras_wtrain._core import layer_kinds
from keras_wtrain.comparison.settings import AVERAGING
from keras_wtrain.comparison.settings import parse_technique

__all__ = [
    "TechniqueSetup",
    "averaging_recipe",
    "averaging_schedule",
    "build_technique",
    "layer_wrapper",
]

WRAPPING = ("weightnorm", "shadow")
STEP_NOISE = ("loss-noise", "grad-dropout")


class TechniqueSetup(NamedTuple):
    """What `build_technique` returns: the uncompiled model, its callbacks and what each part set up.

    Attributes:
        model: the uncompiled Keras model to train.
        callbacks: weight averaging, optimum shifting, then `BatchNormStatisticsUpdate` (shadow + batch norm).
        averaging: the `SWA`, `EMA`, `LAWA` or `SeWA` callback, or None.
        shifting: the `OptimumShifting` callback, or None.
        info: `wrapped_layers` (per wrapper), noise levels, `batchnorm_reestimated` and `schedule` (the
            learning-rate schedule this run trains with, in words).
        optimizer: `f(total_steps) -> optimizer` for this run, or None for the harness's default.

    Example:

    ```python
    from keras_wtrain.comparison.techniques import TechniqueSetup

    print(TechniqueSetup._fields)  # ('model', 'callbacks', 'averaging', 'shifting', 'info', 'optimizer')
    ```
    """

    model: object
    callbacks: list
    averaging: object
    shifting: object
    info: dict
    optimizer: object = None


def layer_wrapper(parts):
    """The `wrap(layer)` function of the wrapping parts of a technique, or None when there is none.

    Args:
        parts: technique parts, e.g. `("weightnorm", "sewa")`.

    Returns:
        A function `layer -> layer`, or None.

    Example:

    ```python
    import keras
    from keras_wtrain.comparison.techniques import layer_wrapper

    wrap = layer_wrapper(("weightnorm", "shadow"))
    print(type(wrap(keras.layers.Conv2D(8, 3))).__name__)  # ShadowWeights (over WeightNormalization)
    print(type(wrap(keras.layers.Dense(8))).__name__)      # WeightNormalization
    ```
    """
    weightnorm, shadow = "weightnorm" in parts, "shadow" in parts
    if not (weightnorm or shadow):
        return None
    from keras_wtrain.layers import ShadowWeights
    from keras_wtrain.layers import WeightNormalization
    from keras_wtrain.shadow_weights.modes import authors_wrap

    def wrap(layer):
        out = layer
        if weightnorm and layer_kinds.supports_weight_normalization(layer):
            out = WeightNormalization(layer)
        if shadow:
            augmented = authors_wrap(layer)  # the authors' choice of layers and transform
            if isinstance(augmented, ShadowWeights):
                out = augmented if out is layer else ShadowWeights(out, transform=augmented.transform)
        return out

    return wrap


LEARNING_RATE = 1e-3  # Adam's, as the harness's default optimizer
BASELINE_SCHEDULE = "cosine decay of Adam's 1e-3 to 0"


def averaging_schedule(epochs, steps_per_epoch):
    """Checkpoints of SeWA: `T` spread over the second half of training, `K = T / 2` (as the SeWA paper).

    Args:
        epochs: training epochs.
        steps_per_epoch: optimizer steps per epoch.

    Returns:
        `{"k", "num_checkpoints", "start", "every_n_steps"}` for `SeWA`.

    Example:

    ```python
    from keras_wtrain.comparison.techniques import averaging_schedule

    print(averaging_schedule(15, 16))  # {'k': 10, 'num_checkpoints': 20, 'start': 120, 'every_n_steps': 6}
    ```
    """
    total = epochs * steps_per_epoch
    num_checkpoints = min(20, max(2, total // 2))
    every = max(1, (total // 2) // num_checkpoints)
    return {
        "k": max(1, num_checkpoints // 2),
        "num_checkpoints": num_checkpoints,
        "start": max(0, total - num_checkpoints * every),
        "every_n_steps": every,
    }


def averaging_recipe(technique, epochs, steps_per_epoch, train, seed):
    """Each average with its own recommended learning-rate schedule: `(callback, optimizer factory, schedule)`.

    - `swa`: SWA over the last 25 % of the epochs (per epoch), under `SWASchedule`: the baseline's cosine decay
      until the SWA start, then a one-epoch cosine anneal to a constant `swa_lr` = half the initial rate;
    - `ema`: EMA of every step, decay 0.999 with timm's warmup, under the baseline's schedule;
    - `lawa`: LAWA of the last 5 epoch-end checkpoints (Kaddour et al.) under a constant learning rate;
    - `sewa`: SeWA's `K` of `T` late checkpoints (`averaging_schedule`) under a constant learning rate.

    A decay to 0 makes the late weights all alike, so an average of them cannot differ from the last weights:
    that would test the harness, not the technique.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.comparison.techniques import averaging_recipe

    callback, optimizer, schedule = averaging_recipe("swa", 8, 10, (np.zeros((4, 2)), np.zeros(4)), 0)
    print(type(callback).__name__, callback.start, schedule)
    ```
    """
    from keras_wtrain.averaging import EMA
    from keras_wtrain.averaging import LAWA
    from keras_wtrain.averaging import SWA
    from keras_wtrain.averaging import SeWA
    from keras_wtrain.averaging import SWASchedule

    def cosine(total_steps):
        return keras.optimizers.schedules.CosineDecay(LEARNING_RATE, max(1, int(total_steps)))

    if technique == "swa":
        start_epoch = max(1, int(math.floor(0.75 * epochs))) if epochs > 1 else 0
        swa_lr = LEARNING_RATE / 2

        def optimizer(total_steps):
            schedule = SWASchedule(cosine(total_steps), swa_lr, start_epoch * steps_per_epoch, steps_per_epoch)
            return keras.optimizers.Adam(schedule)

        words = f"cosine decay until epoch {start_epoch}, then a 1-epoch cosine anneal to a constant {swa_lr:g}"
        return SWA(start=start_epoch), optimizer, words
    if technique == "ema":
        return EMA(decay=0.999, warmup=True), None, BASELINE_SCHEDULE
    constant = f"constant {LEARNING_RATE:g}"
    if technique == "lawa":
        return LAWA(k=min(5, epochs)), (lambda total_steps: keras.optimizers.Adam(LEARNING_RATE)), constant
    if technique == "sewa":
        schedule = averaging_schedule(epochs, steps_per_epoch)
        callback = SeWA(selection_data=train, seed=seed, **schedule)
        return callback, (lambda total_steps: keras.optimizers.Adam(LEARNING_RATE)), constant
    raise ValueError(f"argument `technique`: {technique!r} is not an averaging technique ({', '.join(AVERAGING)}).")


def build_technique(technique, make_model, train, epochs, batch_size, seed):
    """Sets up one technique (single or combination) with the library's defaults.

    Args:
        technique: a technique name, e.g. `"weightnorm+sewa"`.
        make_model: `f(wrap) -> uncompiled model`, `wrap` a layer wrapper or None.
        train: the training data `(x, y)` (numpy).
        epochs: training epochs (sets the averaging window).
        batch_size: training batch size.
        seed: the run's seed (SeWA's selection, optimum shifting's batches).

    Returns:
        A `TechniqueSetup`.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.comparison.techniques import build_technique
    from keras_wtrain.comparison.models import build_model

    x, y = np.random.rand(64, 8, 8, 1).astype("float32"), np.arange(64) % 4
    setup = build_technique("weightnorm+swa", lambda wrap: build_model("mlp", (8, 8, 1), 4, wrap=wrap),
                            (x, y), epochs=2, batch_size=16, seed=0)
    print(setup.info["wrapped_layers"], type(setup.averaging).__name__)
    ```
    """
    parts = parse_technique(technique)
    x, y = train
    model = make_model(layer_wrapper(parts))
    info = {}
    if "weightnorm" in parts or "shadow" in parts:
        from keras_wtrain.shadow_weights.modes import shadow_weight_layers
        from keras_wtrain.weight_normalization.data_init import initialize_weight_normalization
        from keras_wtrain.weight_normalization.wrapper import weight_normalization_layers

        info["wrapped_layers"] = {}
        if "weightnorm" in parts:
            info["wrapped_layers"]["weightnorm"] = len(weight_normalization_layers(model))
            initialize_weight_normalization(model, keras.tree.map_structure(lambda a: a[:256], x))
        if "shadow" in parts:
            info["wrapped_layers"]["shadow"] = len(shadow_weight_layers(model))
    if any(part in STEP_NOISE for part in parts):
        from keras_wtrain.randomness import GradientDropout
        from keras_wtrain.randomness import LossNoise
        from keras_wtrain.randomness import wrap

        loss_noise = LossNoise() if "loss-noise" in parts else None
        dropout = GradientDropout() if "grad-dropout" in parts else None
        model = wrap(model, loss_noise=loss_noise, gradient_dropout=dropout, seed=seed)
        if loss_noise is not None:
            info["loss_noise_stddev"] = loss_noise.get_config()["stddev"]
        if dropout is not None:
            info["gradient_dropout_rate"] = dropout.get_config()["rate"]
    callbacks, averaging, shifting, optimizer = [], None, None, None
    info["schedule"] = BASELINE_SCHEDULE
    strategy = next((part for part in parts if part in AVERAGING), None)
    if strategy is not None:
        steps_per_epoch = math.ceil(len(y) / batch_size)
        averaging, optimizer, info["schedule"] = averaging_recipe(strategy, epochs, steps_per_epoch, (x, y), seed)
        callbacks.append(averaging)
    if "optimum-shift" in parts:
        from keras_wtrain.callbacks import OptimumShifting

        shifting = OptimumShifting(data=(x, y), seed=seed)
        callbacks.append(shifting)
    if "shadow" in parts:
        from keras_wtrain._core.batchnorm import batchnorm_layers
        from keras_wtrain.callbacks import BatchNormStatisticsUpdate

        if batchnorm_layers(model):
            # Training collected the statistics from shadow-weight activations; AOM infers with the plain
            # weights. Last, after any callback that changes the weights at the end of training.
            callbacks.append(BatchNormStatisticsUpdate((x, y), batch_size=batch_size))
            info["batchnorm_reestimated"] = True
    return TechniqueSetup(model, callbacks, averaging, shifting, info, optimizer)
