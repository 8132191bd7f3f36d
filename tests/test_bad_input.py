"""Bad input and its errors: one table of cases, run here and shown in docs/bad_input.md.

`CASES` is the single source of truth. A case is something a user may get wrong, written as the code they ran
(evaluated here with the names of `_NAMES` and `_FRESH`), and what must happen: an exception type and a regular
expression its message must match (the argument it names), or "accepted" (the input works, and a check of the
result passes). A case the library does not refuse cleanly yet carries `not_yet` (why) and runs as a strict
xfail, so it fails as soon as the check is added: then drop its `not_yet` and regenerate the page.

Data given to a callback must be refused at construction or at `fit` start, never after training began: a `fit`
case stops at its first training batch by raising `_TrainingStarted`, which fails the case.

`python tests/test_bad_input.py` prints the tables of docs/bad_input.md; `test_docs_table_matches_the_cases`
keeps the page and `CASES` in step.
"""

import dataclasses
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pytest

import keras_wtrain
from keras_wtrain import callbacks
from keras_wtrain import diagnostics
from keras_wtrain import layers
from keras_wtrain import randomness as training
from keras_wtrain import tuning
from keras_wtrain.averaging import SWASchedule
from keras_wtrain.comparison import InputError
from keras_wtrain.comparison import compare
from keras_wtrain.randomness import gradient_dropout as optimizers
from keras_wtrain.shadow_weights import transforms

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_input.md"
SCRATCH = os.path.join(tempfile.gettempdir(), "keras_wtrain_bad_input")  # written only if a check went missing
A_FILE = str(Path(__file__).resolve())  # an existing file (this one), given where a directory is expected

# ------------------------------------------------------------------------------------- the names the cases use

X = np.random.default_rng(0).random((32, 4)).astype("float32")
Y = np.arange(32) % 3
X_NAN = X.copy()
X_NAN[0, 0] = np.nan
X_INF = X.copy()
X_INF[1, 1] = np.inf


def _dense_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


def _wn_model():
    wrap = layers.WeightNormalization
    return keras.Sequential(
        [keras.Input((4,)), wrap(keras.layers.Dense(8, activation="relu")), wrap(keras.layers.Dense(3))]
    )


def _conv_model():
    return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3), keras.layers.GlobalAveragePooling2D()])


def _compiled(model):
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _empty_dataset():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((X, Y)).take(0).batch(8)


def _functional():
    inputs = keras.Input((4,))
    return {"inputs": inputs, "outputs": keras.layers.Dense(3)(inputs)}


def _compare(**kwargs):
    """`compare` on the small built-in MLP and digits, writing under SCRATCH (every case fails before training)."""
    options = dict(model="mlp", data="digits", techniques=["swa"], seeds=1, epochs=1, progress=False, measure=False)
    return compare(**{**options, "out": os.path.join(SCRATCH, "compare"), **kwargs})


def _lazy(module, name):
    """`module.name`, looked up at call time (keras_wtrain.tuning needs the optional Keras Tuner)."""
    return lambda *args, **kwargs: getattr(module, name)(*args, **kwargs)


_NAMES = {
    "np": np,
    "keras": keras,
    "x": X,
    "y": Y,
    "x_nan": X_NAN,
    "x_inf": X_INF,
    "x_int": np.random.default_rng(1).integers(0, 5, (32, 4)),
    "x_f64": X.astype("float64"),
    "images": np.random.default_rng(2).random((32, 6, 6, 1)).astype("float32"),
    "fn": lambda kernel, seed: kernel,
    "tmp": SCRATCH,
    "a_file": A_FILE,
    "compare": _compare,
    "initialize_weight_normalization": keras_wtrain.initialize_weight_normalization,
    **{name: getattr(layers, name) for name in ("WeightNormalization", "ShadowWeights", "MeanOnlyBatchNormalization")},
    **{name: getattr(transforms, name) for name in transforms.__all__ if name != "get"},
    "transforms": transforms,
    **{name: getattr(training, name) for name in ("Model", "wrap", "LossNoise", "GradientDropout", "Constant")},
    "LinearDecay": training.LinearDecay,
    "SWASchedule": SWASchedule,
    "GradientDropoutOptimizer": optimizers.GradientDropoutOptimizer,
    **{
        name: getattr(callbacks, name)
        for name in (
            "WeightNormalizationInitializer",
            "SWA",
            "EMA",
            "LAWA",
            "SeWA",
            "OptimumShifting",
            "BatchNormStatisticsUpdate",
        )
    },
    **{name: getattr(diagnostics, name) for name in ("hessian_trace", "sharpness", "FlatnessMonitor")},
    "PSO": _lazy(tuning, "PSO"),
    "PSOOracle": _lazy(tuning, "PSOOracle"),
}

# Names made anew for every case that uses them (a layer can be wrapped once; a model is trained).
_FRESH = {
    "dense": lambda: {"dense": keras.layers.Dense(3)},
    "model": lambda: {"model": _compiled(_dense_model())},
    "wn_model": lambda: {"wn_model": _compiled(_wn_model())},
    "conv_model": lambda: {"conv_model": _compiled(_conv_model())},
    "outputs": _functional,
    "empty_dataset": lambda: {"empty_dataset": _empty_dataset()},
}


def _names(*codes):
    names = dict(_NAMES)
    for name, make in _FRESH.items():
        if any(re.search(rf"\b{name}\b", code) for code in codes):
            names.update(make())
    return names


def _evaluate(code):
    return eval(code, _names(code))  # noqa: S307 (the code of a case, written in this file)


class _TrainingStarted(Exception):
    """The first training batch began: nothing refused the input at construction or `fit` start."""


class _StopAtFirstBatch(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        raise _TrainingStarted("training started: the bad input was not refused at construction or fit start")


def _fit(model_name, x_name, callback_code, whole=False):
    """`model.fit(x, y, callbacks=[callback])`: up to the first training batch, or (`whole`) one epoch of 4 steps."""
    names = _names(model_name, callback_code)
    callback = eval(callback_code, names)  # noqa: S307 (the code of a case, written in this file)
    extra = [] if whole else [_StopAtFirstBatch()]
    names[model_name].fit(names[x_name], Y, batch_size=8, epochs=1, verbose=0, callbacks=[callback, *extra])
    return names[model_name], callback


# ---------------------------------------------------------------------------------------------- checks of results


def _finite(variable):
    return bool(np.all(np.isfinite(keras.ops.convert_to_numpy(variable))))


def _initialized(count, names):
    assert count == 2
    assert all(layer.is_initialized() and _finite(layer.g_weights[0]) for layer in names["wn_model"].layers)


def _shifted(model, shifting):
    assert [entry["epoch"] for entry in shifting.history] == [0, "end"]
    assert _finite(model.layers[-1].kernel)


def _averaged(model, sewa):
    assert sewa.selected_indices is not None and math.isfinite(sewa.average_loss)


# ----------------------------------------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    group: str
    id: str
    tried: str  # markdown
    call: Callable[[], object]
    error: type | None = None  # None: the input is accepted (`call` checks the result)
    match: str | None = None
    not_yet: str | None = None  # why the clean error is missing: the case is a strict xfail


CASES = []
_GROUP = []


def group(name):
    _GROUP[:] = [name]


def raises(id, code, error, match, not_yet=None):
    """A case that runs `code` (an expression) and must raise `error` matching `match`."""
    CASES.append(Case(_GROUP[0], id, f"`{code}`", lambda: _evaluate(code), error, match, not_yet))


def fit_raises(id, model, x, callback, error, match, not_yet=None):
    """A case that fits `model` on `x` with `callback` and must raise before the first training batch."""
    tried = f"`{model}.fit({x}, y, callbacks=[{callback}])`"
    CASES.append(Case(_GROUP[0], id, tried, lambda: _fit(model, x, callback), error, match, not_yet))


def accepted(id, code, check):
    """A case that runs `code` (an expression), then `check(result, names)`."""

    def call():
        names = _names(code)
        check(eval(code, names), names)  # noqa: S307 (the code of a case, written in this file)

    CASES.append(Case(_GROUP[0], id, f"`{code}`", call))


def fit_accepted(id, x, callback, check):
    """A case that fits `model` on `x` for one epoch with `callback`, then runs `check(model, callback)`."""
    tried = f"`model.fit({x}, y, callbacks=[{callback}])`"
    CASES.append(Case(_GROUP[0], id, tried, lambda: check(*_fit("model", x, callback, whole=True))))


group("Weight normalization and its data-dependent init")
raises("init-nan", "initialize_weight_normalization(wn_model, x_nan)", ValueError, "argument `batch`")
raises("init-inf", "initialize_weight_normalization(wn_model, x_inf)", ValueError, "argument `batch`")
raises("init-empty", "initialize_weight_normalization(wn_model, x[:0])", ValueError, "argument `batch`")
raises("init-none", "initialize_weight_normalization(wn_model, None)", TypeError, "argument `batch`")
accepted("init-int", "initialize_weight_normalization(wn_model, x_int)", _initialized)
accepted("init-float64", "initialize_weight_normalization(wn_model, x_f64)", _initialized)
fit_raises("initializer-nan", "wn_model", "x", "WeightNormalizationInitializer(x_nan)", ValueError, "argument `data`")
fit_raises(
    "initializer-empty-array", "wn_model", "x", "WeightNormalizationInitializer(x[:0])", ValueError, "argument `data`"
)
fit_raises(
    "initializer-empty-dataset",
    "wn_model",
    "x",
    "WeightNormalizationInitializer(empty_dataset)",
    ValueError,
    "argument `data` is empty",
)
fit_raises(
    "initializer-data-none", "wn_model", "x", "WeightNormalizationInitializer(None)", ValueError, "argument `data`"
)
raises("initializer-batch-size-type", "WeightNormalizationInitializer(x, batch_size='a')", ValueError, "`batch_size`")
raises("initializer-batch-size-range", "WeightNormalizationInitializer(x, batch_size=0)", ValueError, "`batch_size`")
raises("weightnorm-layer-type", "WeightNormalization('dense')", TypeError, "argument `layer`")
raises("weightnorm-layer-unsupported", "WeightNormalization(keras.layers.Flatten())", TypeError, "cannot wrap layer")
raises("weightnorm-data-init-type", "WeightNormalization(dense, data_init='yes')", TypeError, "argument `data_init`")
raises("mean-only-bn-axis-type", "MeanOnlyBatchNormalization(axis=1.5)", TypeError, "argument `axis`")
raises("mean-only-bn-momentum-type", "MeanOnlyBatchNormalization(momentum='a')", TypeError, "argument `momentum`")
raises("mean-only-bn-momentum-range", "MeanOnlyBatchNormalization(momentum=1.0)", ValueError, "argument `momentum`")
raises("mean-only-bn-center-type", "MeanOnlyBatchNormalization(center='yes')", TypeError, "argument `center`")

group("Shadow weights and their transforms")
raises("shadow-layer-type", "ShadowWeights(5)", TypeError, "argument `layer`")
raises("shadow-layer-unsupported", "ShadowWeights(keras.layers.Flatten())", TypeError, "cannot wrap layer")
raises("shadow-transform-type", "ShadowWeights(dense, transform=5)", TypeError, "argument `transform`")
raises("shadow-transform-name", "ShadowWeights(dense, transform='nope')", ValueError, "argument `transform`")
raises(
    "shadow-spatial-transform-on-dense",
    "ShadowWeights(dense, transform='random_translate')(x)",
    ValueError,
    "argument `transform`",
)
raises("shadow-mode", "ShadowWeights(dense, mode='fast')", ValueError, "argument `mode`")
raises("shadow-probability-type", "ShadowWeights(dense, probability='a')", TypeError, "argument `probability`")
raises("shadow-probability-range", "ShadowWeights(dense, probability=2.0)", ValueError, "argument `probability`")
raises("shadow-seed-type", "ShadowWeights(dense, seed=1.5)", TypeError, "argument `seed`")
raises("shadow-learnable-scale-type", "ShadowWeights(dense, learnable_scale=1)", TypeError, "`learnable_scale`")
raises(
    "shadow-desire-transform-random",
    "ShadowWeights(dense, desire_transform='random_translate')",
    ValueError,
    "argument `desire_transform`",
)
raises(
    "shadow-desire-shift-too-large",
    "ShadowWeights(keras.layers.Conv2D(2, 3), desire_transform=FixedShift(3))(images)",
    ValueError,
    "argument `desire_transform`",
)
raises(
    "shadow-desire-probability-type",
    "ShadowWeights(keras.layers.Conv2D(2, 3), desire_probability='a')",
    TypeError,
    "argument `desire_probability`",
)
raises(
    "shadow-desire-probability-range",
    "ShadowWeights(keras.layers.Conv2D(2, 3), desire_probability=1.5)",
    ValueError,
    "argument `desire_probability` must be in",
)
raises(
    "shadow-desire-probability-with-a-drawn-dom-kernel",
    "ShadowWeights(dense, desire_probability=0.5)(x)",
    ValueError,
    "argument `desire_probability` must be 0",
)
raises(
    "shadow-set-weight-mode-desire-without-dom-kernel",
    "__import__('keras_wtrain').set_weight_mode(model, 'desire')",
    ValueError,
    "argument `mode`='desire'",
)
raises(
    "shadow-set-weight-mode-batchnorm-without-data",
    "__import__('keras_wtrain').set_weight_mode("
    "keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()]), 'accuracy', reestimate_batchnorm=True)",
    ValueError,
    "argument `data`",
)
raises("transforms-get-type", "transforms.get(5)", TypeError, "argument `transform`")
raises("transforms-get-name", "transforms.get('nope')", ValueError, "argument `transform`")
raises("random-translate-type", "RandomTranslate('a')", TypeError, "argument `max_shift`")
raises("random-translate-range", "RandomTranslate(1.0)", ValueError, "argument `max_shift`")
raises("random-resized-crop-type", "RandomResizedCrop(scale=5)", TypeError, "argument `scale`")
raises("random-resized-crop-scale-range", "RandomResizedCrop(scale=(0.0, 1.0))", ValueError, "argument `scale`")
raises("random-resized-crop-ratio-range", "RandomResizedCrop(ratio=(2.0, 1.0))", ValueError, "argument `ratio`")
raises("random-flip-mode", "RandomFlip(mode='diagonal')", ValueError, "argument `mode`")
raises("random-flip-probability-type", "RandomFlip(probability='a')", TypeError, "argument `probability`")
raises("random-flip-probability-range", "RandomFlip(probability=1.5)", ValueError, "argument `probability`")
raises("gaussian-noise-type", "GaussianNoise('a')", TypeError, "argument `stddev`")
raises("gaussian-noise-range", "GaussianNoise(-0.1)", ValueError, "argument `stddev`")
raises("multiplicative-noise-type", "MultiplicativeNoise(None)", TypeError, "argument `stddev`")
raises("multiplicative-noise-range", "MultiplicativeNoise(-0.1)", ValueError, "argument `stddev`")
raises("dropconnect-type", "DropConnect('a')", TypeError, "argument `rate`")
raises("dropconnect-range", "DropConnect(1.0)", ValueError, "argument `rate`")
raises("dropconnect-rescale-type", "DropConnect(0.5, rescale='y')", TypeError, "argument `rescale`")
raises("compose-type", "Compose(5)", TypeError, "argument `transforms`")
raises("compose-empty", "Compose([])", ValueError, "argument `transforms`")
raises("compose-unknown-name", "Compose(['nope'])", ValueError, "argument `transform`")
raises("random-choice-type", "RandomChoice(5)", TypeError, "argument `transforms`")
raises("random-choice-empty", "RandomChoice([])", ValueError, "argument `transforms`")
raises(
    "random-choice-probabilities-range",
    "RandomChoice(['gaussian_noise'], probabilities=[-1.0])",
    ValueError,
    "argument `probabilities`",
)
raises(
    "random-choice-probabilities-type",
    "RandomChoice(['gaussian_noise'], probabilities='a')",
    TypeError,
    "argument `probabilities`",
)
raises("fixed-shift-type", "FixedShift(1.5)", TypeError, "argument `shift`")
raises("fixed-mask-type", "FixedMask('ab')", TypeError, "argument `mask`")
raises("fixed-mask-range", "FixedMask(np.zeros((3, 3)))", ValueError, "argument `mask`")
raises("function-transform-type", "FunctionTransform(5)", TypeError, "argument `fn`")
raises("function-transform-spatial-type", "FunctionTransform(fn, spatial='yes')", TypeError, "argument `spatial`")
fit_raises("bn-update-nan", "model", "x", "BatchNormStatisticsUpdate(x_nan)", ValueError, "argument `data`")
fit_raises("bn-update-empty", "model", "x", "BatchNormStatisticsUpdate(x[:0])", ValueError, "argument `data`")
raises("bn-update-data-none", "BatchNormStatisticsUpdate(None)", ValueError, "argument `data`")
raises("bn-update-batch-size-type", "BatchNormStatisticsUpdate(x, batch_size='a')", TypeError, "`batch_size`")
raises("bn-update-batch-size-range", "BatchNormStatisticsUpdate(x, batch_size=0)", ValueError, "`batch_size`")
raises("bn-update-max-examples-range", "BatchNormStatisticsUpdate(x, max_examples=0)", ValueError, "`max_examples`")

group("Loss noise and gradient dropout")
raises("model-loss-noise-range", "Model(inputs, outputs, loss_noise=-1.0)", ValueError, "LossNoise: argument `stddev`")
raises("model-loss-noise-type", "Model(inputs, outputs, loss_noise='a')", TypeError, "LossNoise: argument `stddev`")
raises("model-loss-noise-bool", "Model(inputs, outputs, loss_noise=True)", TypeError, "argument `loss_noise`")
raises(
    "model-gradient-dropout-range",
    "Model(inputs, outputs, gradient_dropout=1.0)",
    ValueError,
    "GradientDropout: argument `rate`",
)
raises(
    "model-gradient-dropout-type",
    "Model(inputs, outputs, gradient_dropout='a')",
    TypeError,
    "GradientDropout: argument `rate`",
)
raises("model-seed-type", "Model(inputs, outputs, seed=1.5)", TypeError, "argument `seed`")
raises("wrap-model-type", "wrap('model')", TypeError, "argument `model`")
raises("wrap-loss-noise-range", "wrap(model, loss_noise=-1.0)", ValueError, "LossNoise: argument `stddev`")
raises(
    "wrap-gradient-dropout-range", "wrap(model, gradient_dropout=1.5)", ValueError, "GradientDropout: argument `rate`"
)
raises("wrap-seed-type", "wrap(model, seed='a')", TypeError, "argument `seed`")
raises("loss-noise-type", "LossNoise('a')", TypeError, "argument `stddev`")
raises("loss-noise-range", "LossNoise(-1.0)", ValueError, "argument `stddev`")
raises("loss-noise-inf", "LossNoise(float('inf'))", ValueError, "argument `stddev`")
raises("loss-noise-kind", "LossNoise(kind='additive')", ValueError, "argument `kind`")
raises("gradient-dropout-type", "GradientDropout('a')", TypeError, "argument `rate`")
raises("gradient-dropout-range", "GradientDropout(1.0)", ValueError, "argument `rate`")
raises(
    "gradient-dropout-below-resolution", "GradientDropout(1e-4)", ValueError, "argument `rate` must be 0 or at least"
)
raises("gradient-dropout-rescale-type", "GradientDropout(0.1, rescale=1)", TypeError, "argument `rescale`")
raises("constant-type", "Constant('a')", TypeError, "argument `value`")
raises("constant-range", "Constant(float('inf'))", ValueError, "argument `value`")
raises("linear-decay-type", "LinearDecay('a')", TypeError, "argument `initial`")
raises("linear-decay-range", "LinearDecay(0.1, decay_steps=0)", ValueError, "argument `decay_steps`")
raises("gd-optimizer-inner-type", "GradientDropoutOptimizer(5)", TypeError, "argument `inner_optimizer`")
raises("gd-optimizer-inner-name", "GradientDropoutOptimizer('nope')", ValueError, "argument `inner_optimizer`")
raises("gd-optimizer-rate-type", "GradientDropoutOptimizer('sgd', rate='a')", TypeError, "Optimizer: argument `rate`")
raises("gd-optimizer-rate-range", "GradientDropoutOptimizer('sgd', rate=1.0)", ValueError, "Optimizer: argument `rate`")
raises("gd-optimizer-rescale-type", "GradientDropoutOptimizer('sgd', rescale='y')", TypeError, "argument `rescale`")
raises(
    "gd-optimizer-rescale-twice",
    "GradientDropoutOptimizer('sgd', rate=GradientDropout(0.1), rescale=True)",
    ValueError,
    "argument `rescale`",
)
raises("gd-optimizer-seed-type", "GradientDropoutOptimizer('sgd', seed=1.5)", TypeError, "argument `seed`")

group("Weight averaging: SWA, EMA, LAWA and SeWA")
raises("swa-start-negative", "SWA(start=-1)", ValueError, "argument `start`")
raises("swa-start-fraction-range", "SWA(start=1.5)", ValueError, "argument `start`")
raises("swa-start-bool", "SWA(start=True)", TypeError, "argument `start`")
raises("swa-every-range", "SWA(every=0)", ValueError, "argument `every`")
fit_raises("swa-start-past-end", "model", "x", "SWA(start=1)", ValueError, "argument `start`=1 is past the end")
raises(
    "swa-checkpoint-dir-file",
    "SWA(checkpoint_dir=a_file)",
    ValueError,
    "argument `checkpoint_dir` names an existing file",
)
raises("swa-install-type", "SWA(install='yes')", TypeError, "argument `install`")
raises("ema-decay-zero", "EMA(decay=0)", ValueError, "argument `decay`")
raises("ema-decay-one", "EMA(decay=1.0)", ValueError, "argument `decay`")
raises("ema-warmup-gamma-range", "EMA(warmup_gamma=0)", ValueError, "argument `warmup_gamma`")
raises("ema-warmup-power-range", "EMA(warmup_power=-1)", ValueError, "argument `warmup_power`")
raises("lawa-k-range", "LAWA(k=0)", ValueError, "argument `k`")
fit_raises("lawa-k-beyond-memory", "model", "x", "LAWA(k=10**9)", ValueError, "pass `checkpoint_dir`")
raises("swa-schedule-swa-lr-range", "SWASchedule(0.1, swa_lr=0, swa_start=10)", ValueError, "argument `swa_lr`")
raises(
    "swa-schedule-anneal-steps-range",
    "SWASchedule(0.1, swa_lr=0.01, swa_start=10, anneal_steps=-1)",
    ValueError,
    "argument `anneal_steps`",
)
fit_raises(
    "sewa-selection-nan",
    "model",
    "x",
    "SeWA(k=2, selection_data=(x_nan, y))",
    ValueError,
    "argument `selection_data`",
)
fit_raises(
    "sewa-selection-empty-array",
    "model",
    "x",
    "SeWA(k=2, selection_data=(x[:0], y[:0]))",
    ValueError,
    "argument `selection_data`",
)
fit_raises(
    "sewa-selection-empty-dataset",
    "model",
    "x",
    "SeWA(k=2, selection_data=empty_dataset)",
    ValueError,
    "argument `selection_data`",
)
fit_raises("sewa-selection-none", "model", "x", "SeWA(k=2)", ValueError, "argument `selection_data`")
fit_raises(
    "sewa-selection-wrong-features",
    "model",
    "x",
    "SeWA(k=2, selection_data=(images, y))",
    ValueError,
    "SeWA: argument `selection_data` does not fit the model",
)
fit_raises(
    "sewa-selection-targets-short",
    "model",
    "x",
    "SeWA(k=2, selection_data=(x, y[:10]))",
    ValueError,
    "argument `selection_data`: its inputs have 32 examples but its targets have 10",
)
fit_raises(
    "sewa-batchnorm-data-nan",
    "model",
    "x",
    "SeWA(k=2, selection_data=(x, y), batchnorm_data=x_nan)",
    ValueError,
    "argument `batchnorm_data`",
)
fit_accepted(
    "sewa-selection-int",
    "x_int",
    "SeWA(k=2, num_checkpoints=4, selection_data=(x_int, y), selection_steps=2, seed=0)",
    _averaged,
)
fit_accepted(
    "sewa-selection-float64",
    "x_f64",
    "SeWA(k=2, num_checkpoints=4, selection_data=(x_f64, y), selection_steps=2, seed=0)",
    _averaged,
)
raises("sewa-k-above-t", "SeWA(k=5, num_checkpoints=3)", ValueError, "argument `k` must be <= `num_checkpoints`")
raises("sewa-k-type", "SeWA(k='a')", TypeError, "argument `k`")
raises("sewa-k-range", "SeWA(k=0)", ValueError, "argument `k`")
raises("sewa-num-checkpoints-type", "SeWA(num_checkpoints='a')", TypeError, "`num_checkpoints`")
raises("sewa-num-checkpoints-range", "SeWA(num_checkpoints=0)", ValueError, "`num_checkpoints`")
raises("sewa-temperature-type", "SeWA(temperature='a')", TypeError, "argument `temperature`")
raises("sewa-temperature-range", "SeWA(temperature=0)", ValueError, "argument `temperature`")
raises("sewa-num-samples-type", "SeWA(num_samples=1.0)", TypeError, "argument `num_samples`")
raises("sewa-num-samples-range", "SeWA(num_samples=0)", ValueError, "argument `num_samples`")
raises("sewa-start-range", "SeWA(start=-1)", ValueError, "argument `start`")
raises("sewa-every-n-steps-range", "SeWA(every_n_steps=0)", ValueError, "argument `every_n_steps`")
raises(
    "sewa-selection-learning-rate-range",
    "SeWA(selection_learning_rate=-1)",
    ValueError,
    "argument `selection_learning_rate`",
)
raises("sewa-selection-size-range", "SeWA(selection_size=0)", ValueError, "`selection_size`")
raises("sewa-num-random-subsets-range", "SeWA(num_random_subsets=-1)", ValueError, "argument `num_random_subsets`")
raises("sewa-swap-for-validation-type", "SeWA(swap_for_validation=1)", TypeError, "argument `swap_for_validation`")
raises("sewa-batchnorm-batch-size-range", "SeWA(batchnorm_batch_size=0)", ValueError, "`batchnorm_batch_size`")
raises("sewa-seed-type", "SeWA(seed=1.5)", TypeError, "argument `seed`")
raises("sewa-verbose-range", "SeWA(verbose=3)", ValueError, "argument `verbose`")

group("Optimum shifting")
fit_raises("shift-data-nan", "model", "x", "OptimumShifting(data=(x_nan, y))", ValueError, "argument `data`")
fit_raises("shift-data-empty-array", "model", "x", "OptimumShifting(data=(x[:0], y[:0]))", ValueError, "is empty")
fit_raises("shift-data-empty-dataset", "model", "x", "OptimumShifting(data=empty_dataset)", ValueError, "is empty")
fit_raises("shift-data-none", "model", "x", "OptimumShifting()", ValueError, "argument `data`")
fit_raises(
    "shift-data-targets-short",
    "model",
    "x",
    "OptimumShifting(data=(x, y[:10]))",
    ValueError,
    "argument `data`: its inputs have 32 examples but its targets have 10",
)
fit_raises(
    "shift-data-wrong-features",
    "model",
    "x",
    "OptimumShifting(data=(images, y))",
    ValueError,
    "OptimumShifting: argument `data` does not fit the model",
)
fit_accepted("shift-data-int", "x_int", "OptimumShifting(data=(x_int, y), seed=0)", _shifted)
fit_accepted("shift-data-float64", "x_f64", "OptimumShifting(data=(x_f64, y), seed=0)", _shifted)
fit_raises(
    "shift-no-dense-layer",
    "conv_model",
    "images",
    "OptimumShifting(data=(images, y))",
    ValueError,
    "argument `layers`",
)
raises("shift-layers-type", "OptimumShifting(layers=5)", TypeError, "argument `layers`")
raises("shift-layers-name", "OptimumShifting(layers='conv')", ValueError, "argument `layers`")
raises("shift-max-loss-increase-type", "OptimumShifting(max_loss_increase='a')", TypeError, "`max_loss_increase`")
raises("shift-max-loss-increase-range", "OptimumShifting(max_loss_increase=-1)", ValueError, "`max_loss_increase`")
raises("shift-every-n-epochs-type", "OptimumShifting(every_n_epochs=1.5)", TypeError, "argument `every_n_epochs`")
raises("shift-every-n-epochs-range", "OptimumShifting(every_n_epochs=0)", ValueError, "argument `every_n_epochs`")
raises(
    "shift-never",
    "OptimumShifting(every_n_epochs=None, at_end=False)",
    ValueError,
    "arguments `every_n_epochs`=None and `at_end`=False",
)
raises("shift-at-end-type", "OptimumShifting(at_end='yes')", TypeError, "argument `at_end`")
raises("shift-batch-size-type", "OptimumShifting(batch_size='x')", TypeError, "argument `batch_size`")
raises("shift-batch-size-range", "OptimumShifting(batch_size=1)", ValueError, "argument `batch_size`")
raises("shift-rtol-range", "OptimumShifting(rtol=2.0)", ValueError, "argument `rtol`")
raises("shift-guard-size-range", "OptimumShifting(guard_size=0)", ValueError, "argument `guard_size`")
raises("shift-seed-type", "OptimumShifting(seed='a')", TypeError, "argument `seed`")

group("Flatness diagnostics")
raises("hessian-trace-num-probes-type", "hessian_trace(model, (x, y), num_probes='a')", TypeError, "`num_probes`")
raises("hessian-trace-num-probes-range", "hessian_trace(model, (x, y), num_probes=0)", ValueError, "`num_probes`")
raises("hessian-trace-model-type", "hessian_trace('model', (x, y))", TypeError, "argument `model`")
raises("hessian-trace-data-nan", "hessian_trace(model, (x_nan, y))", ValueError, "argument `data` holds NaN")
raises("hessian-trace-data-empty", "hessian_trace(model, (x[:0], y[:0]))", ValueError, "argument `data` is empty")
raises("sharpness-radius-type", "sharpness(model, (x, y), radius='a')", TypeError, "argument `radius`")
raises("sharpness-radius-range", "sharpness(model, (x, y), radius=0)", ValueError, "argument `radius`")
raises("sharpness-num-samples-range", "sharpness(model, (x, y), num_samples=0)", ValueError, "`num_samples`")
raises("flatness-monitor-num-probes-type", "FlatnessMonitor((x, y), num_probes=2.0)", TypeError, "`num_probes`")
raises("flatness-monitor-num-probes-range", "FlatnessMonitor((x, y), num_probes=0)", ValueError, "`num_probes`")
raises(
    "flatness-monitor-radius-type",
    "FlatnessMonitor((x, y), sharpness_radius='a')",
    TypeError,
    "argument `sharpness_radius`",
)
raises(
    "flatness-monitor-radius-range",
    "FlatnessMonitor((x, y), sharpness_radius=-1)",
    ValueError,
    "argument `sharpness_radius`",
)
raises(
    "flatness-monitor-every-n-epochs-range",
    "FlatnessMonitor((x, y), every_n_epochs=0)",
    ValueError,
    "argument `every_n_epochs`",
)
raises(
    "flatness-monitor-top-eigenvalue-type",
    "FlatnessMonitor((x, y), top_eigenvalue='y')",
    TypeError,
    "argument `top_eigenvalue`",
)
fit_raises("flatness-monitor-data-none", "model", "x", "FlatnessMonitor()", ValueError, "argument `data`")
fit_raises("flatness-monitor-data-empty", "model", "x", "FlatnessMonitor((x[:0], y[:0]))", ValueError, "is empty")
fit_raises(
    "flatness-monitor-data-nan", "model", "x", "FlatnessMonitor((x_nan, y))", ValueError, "argument `data` holds NaN"
)

group("Tuning (particle swarm)")
raises("pso-oracle-swarm-size-type", "PSOOracle(swarm_size='a')", TypeError, "argument `swarm_size`")
raises("pso-oracle-swarm-size-range", "PSOOracle(swarm_size=0)", ValueError, "argument `swarm_size`")
raises("pso-oracle-inertia-type", "PSOOracle(inertia='a')", TypeError, "argument `inertia`")
raises("pso-oracle-inertia-range", "PSOOracle(inertia=-1.0)", ValueError, "argument `inertia`")
raises("pso-oracle-cognitive-range", "PSOOracle(cognitive=-1.0)", ValueError, "argument `cognitive`")
raises("pso-oracle-social-nan", "PSOOracle(social=float('nan'))", ValueError, "argument `social`")
raises("pso-oracle-max-velocity-range", "PSOOracle(max_velocity=1.5)", ValueError, "argument `max_velocity`")
raises("pso-oracle-patience-range", "PSOOracle(patience=0)", ValueError, "argument `patience`")
raises("pso-oracle-max-trials-range", "PSOOracle(max_trials=0)", ValueError, "argument `max_trials`")
raises("pso-oracle-seed-type", "PSOOracle(seed='a')", TypeError, "argument `seed`")
raises("pso-swarm-size-range", "PSO(swarm_size=0, directory=tmp)", ValueError, "argument `swarm_size`")
raises("pso-inertia-type", "PSO(inertia='a', directory=tmp)", TypeError, "argument `inertia`")

group("Comparing techniques (`compare`)")
raises("compare-technique-name", "compare(techniques=['foo'])", ValueError, "unknown technique")
raises("compare-two-averages", "compare(techniques=['sewa+swa'])", ValueError, "combines sewa and swa")
raises("compare-techniques-empty", "compare(techniques=[])", ValueError, "no technique given")
raises("compare-techniques-type", "compare(techniques=5)", TypeError, "argument `techniques`")
raises("compare-seeds-type", "compare(seeds='a')", TypeError, "argument `seeds`")
raises("compare-seeds-range", "compare(seeds=0)", ValueError, "argument `seeds`")
raises("compare-regime", "compare(regime='fast')", ValueError, "argument `regime`")
raises("compare-target-ci-range", "compare(target_ci=0)", ValueError, "argument `target_ci`")
raises("compare-target-ci-type", "compare(target_ci='1')", TypeError, "argument `target_ci`")
raises(
    "compare-max-seeds-below-seeds", "compare(seeds=5, target_ci=1, max_seeds=3)", ValueError, "`max_seeds` must be >="
)
raises("compare-max-seeds-without-target", "compare(max_seeds=5)", ValueError, "pass `target_ci` with it")
raises("compare-model-name", "compare(model='foo')", InputError, "argument `model`")
raises("compare-data-empty", "compare(data=(images[:0], y[:0]))", InputError, "argument `data` is empty")

# ------------------------------------------------------------------------------------------------ the docs table

HEADER = ("Case", "What was tried", "Error", "Message matches", "Status")


def _code(text):
    """`text` as an inline code span that may itself hold backticks."""
    return f"`` {text} ``"


def row(case):
    """The docs-table cells of a case, as strings."""
    if case.error is None:
        return (_code(case.id), case.tried, "none (accepted)", "—", "accepted")
    status = "checked" if case.not_yet is None else f"not yet checked: {case.not_yet}"
    return (_code(case.id), case.tried, case.error.__name__, _code(case.match), status)


def markdown():
    """The tables of docs/bad_input.md: a `##` heading and a table per group."""
    lines = []
    for name in dict.fromkeys(case.group for case in CASES):
        lines += ["", f"## {name}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row(case)) + " |" for case in CASES if case.group == name]
    return "\n".join(lines[1:]) + "\n"


def parse_doc(text):
    """`(heading, cells)` for every row of the case tables in `text` (the tables whose header is `HEADER`)."""
    rows, heading, in_table = [], None, False
    for line in text.splitlines():
        if line.startswith("## "):
            heading, in_table = line[3:].strip(), False
        elif line.startswith("|"):
            cells = tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
            if cells == HEADER:
                in_table = True
            elif in_table and not set("".join(cells)) <= set("-: "):
                rows.append((heading, cells))
        else:
            in_table = False
    return rows


# ----------------------------------------------------------------------------------------------------------- tests


def _param(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.not_yet)] if case.not_yet else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input(case):
    if case.error is None:
        case.call()  # accepted: the call checks its result
        return
    with pytest.raises(case.error, match=case.match):
        case.call()


def test_cases_are_well_formed():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    for case in CASES:
        assert re.fullmatch(r"[a-z0-9-]+", case.id), case.id
        assert (case.error is None) == (case.match is None), case.id
        assert case.error is None or issubclass(case.error, (ValueError, TypeError)), case.id
        for cell in row(case):
            assert "|" not in cell and "\n" not in cell, f"{case.id}: {cell!r} would break the markdown table"


def test_docs_table_matches_the_cases():
    documented = parse_doc(DOC.read_text())
    expected = [(case.group, row(case)) for case in CASES]
    assert documented == expected, (
        "docs/bad_input.md is out of step with tests/test_bad_input.py: run `python tests/test_bad_input.py` "
        "and paste its output into the page"
    )


if __name__ == "__main__":
    print(markdown(), end="")
