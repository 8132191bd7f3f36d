"""What each technique's mechanism did in one run, measured on the final model (see docs/tutorials/does_it_help.md)."""

import math
import time

import keras
import numpy as np

from keras_wtrain._core import data_adapters
from keras_wtrain._core._keras_private import sublayers

__all__ = ["FLATNESS", "averaging_mechanism", "flatness", "shadow_mechanism", "shifting_mechanism"]

# The flatness measurement of every run: fixed examples, probes and directions, so runs are comparable.
FLATNESS = {"examples": 256, "probes": 10, "sharpness_radius": 0.05, "sharpness_samples": 10, "seed": 0}


def _plain(model):
    """`model` with every kernel wrapper folded (the function it computes at inference, plain kernels)."""
    from keras_wtrain._core.kernel_reparametrization import fold_layers
    from keras_wtrain.layers import KernelReparametrization

    layers = sublayers(model, include_self=True)
    if not any(isinstance(layer, KernelReparametrization) for layer in layers):
        return model
    try:
        return fold_layers(model)
    except TypeError:  # a subclassed model: measured in its own parametrisation
        return model


def _layer_below_last_dense(model):
    """The layer with a kernel just below the last Dense layer (the last Dense itself when it is the only one)."""
    from keras_wtrain._core import layer_kinds

    layers = [layer for layer in sublayers(model) if not isinstance(layer, keras.Model) and layer.trainable_weights]
    with_kernel = [layer for layer in layers if hasattr(layer, "kernel")] or layers
    dense = [i for i, layer in enumerate(with_kernel) if layer_kinds.is_dense(layer)]
    last = dense[-1] if dense else len(with_kernel) - 1
    return with_kernel[max(0, last - 1)]


def flatness(model, train, loss, settings=None):
    """Hessian-trace estimate and sharpness of `model`'s training loss on a fixed training subset.

    Trace w.r.t. the layer below the last Dense layer (the whole network's costs about 5× more); sharpness
    perturbs every layer. Cost: 0.3-1.3 s per run with `FLATNESS` on 2 CPUs.

    Args:
        model: the trained model.
        train: the training split `(x, y)`; its first `settings["examples"]` examples are used.
        loss: the loss the model was trained with.
        settings: a dict like `FLATNESS` (default `FLATNESS`).

    Returns:
        `{"hessian_trace", "hessian_trace_ci95", "hessian_trace_layer", "sharpness", "sharpness_max",
        "flatness_time_s"}`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.comparison.mechanisms import flatness

    x, y = np.random.rand(64, 5).astype("float32"), np.arange(64) % 3
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    settings = dict(examples=32, probes=2, sharpness_radius=0.05, sharpness_samples=2, seed=0)
    print(flatness(model, (x, y), loss, settings))
    ```
    """
    from keras_wtrain import diagnostics

    settings = dict(FLATNESS, **(settings or {}))
    start = time.perf_counter()
    x, y = train
    subset = (data_adapters.take(x, slice(0, settings["examples"])), np.asarray(y)[: settings["examples"]])
    plain = _plain(model)
    layer = _layer_below_last_dense(plain)
    common = {"loss": loss, "seed": settings["seed"], "batch_size": settings["examples"]}
    trace = diagnostics.hessian_trace(plain, subset, variables=layer, num_probes=settings["probes"], **common)
    sharp = diagnostics.sharpness(
        plain, subset, radius=settings["sharpness_radius"], num_samples=settings["sharpness_samples"], **common
    )
    return {
        "hessian_trace": trace["trace"],
        "hessian_trace_ci95": trace["ci95"],
        "hessian_trace_layer": layer.name,
        "sharpness": sharp["mean"],
        "sharpness_max": sharp["max"],
        "flatness_time_s": time.perf_counter() - start,
    }


def averaging_mechanism(callback, data, max_examples=1024):
    """What an averaging callback did: how many weights it averaged, how far the average is from the last weights,
    and the training loss at each.

    Args:
        callback: an `SWA`, `EMA`, `LAWA` or `SeWA` callback, after training (its average installed).
        data: training data `(x, y)` for the losses.
        max_examples: examples of `data` used.

    Returns:
        `{"averaging", "num_averaged", "averaged_steps", "average_distance", "loss_average", "loss_last",
        "selection_time_s"}`; `average_distance` is `‖average − last‖ / ‖last‖` over the averaged weights (0 means
        the average is the last weights). Empty when no average was installed.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging import LAWA
    from keras_wtrain.comparison.mechanisms import averaging_mechanism

    x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    lawa = LAWA(k=2)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[lawa])
    print(averaging_mechanism(lawa, (x, y))["average_distance"])
    ```
    """
    from keras_wtrain._core.objective import mean_loss
    from keras_wtrain.averaging.base import averaged_variables

    if not getattr(callback, "installed", False):
        return {}
    model = callback.model
    variables = averaged_variables(model)
    average = [np.array(keras.ops.convert_to_numpy(v), np.float32) for v in variables]
    last = [np.asarray(r, np.float32).reshape(a.shape) for r, a in zip(callback.raw_weights(), average)]
    difference = math.sqrt(sum(float(np.sum((a - r) ** 2)) for a, r in zip(average, last)))
    norm = math.sqrt(sum(float(np.sum(r**2)) for r in last))
    x, y = data
    sample = (keras.tree.map_structure(lambda a: a[:max_examples], x), y[:max_examples])
    loss_average = mean_loss(model, sample)
    for variable, value in zip(variables, last):
        variable.assign(value)
    loss_last = mean_loss(model, sample)
    for variable, value in zip(variables, average):
        variable.assign(value)
    steps = getattr(callback, "selected_steps", None)
    if steps is None and hasattr(callback, "checkpoint_steps"):
        steps = callback.checkpoint_steps.tolist()
    return {
        "averaging": type(callback).__name__,
        "num_averaged": int(len(steps)) if steps is not None else int(callback.num_averaged),
        "averaged_steps": None if steps is None else [int(s) for s in steps],
        "average_distance": difference / max(norm, 1e-12),
        "loss_average": float(loss_average),
        "loss_last": float(loss_last),
        "selection_time_s": float(getattr(callback, "selection_time_s", None) or 0.0),
    }


def shifting_mechanism(callback):
    """What an `OptimumShifting` callback's shifts did, from its `history`.

    Args:
        callback: the callback, after training.

    Returns:
        `{"shifts", "shifts_kept", "relative_change_live", "loss_change", "norm_before", "norm_after"}`, means
        over kept shifts (`relative_change_live`: `‖V* − V‖ / ‖V‖` on live rows).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.callbacks import OptimumShifting
    from keras_wtrain.comparison.mechanisms import shifting_mechanism
    from keras_wtrain.comparison.models import build_model

    x, y = np.random.rand(400, 28, 28, 1).astype("float32"), np.arange(400) % 10
    model = build_model("mlp", (28, 28, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    shifting = OptimumShifting(data=(x, y), seed=0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[shifting])
    print(shifting_mechanism(shifting))
    ```
    """
    history = callback.history
    kept = [h for h in history if h.get("kept")]
    changes, losses, norms = [], [], []
    for entry in kept:
        layers = [info for info in entry["layers"].values() if info.get("systems")]
        if layers:
            changes.append(float(np.mean([info["relative_change_live"] for info in layers])))
            norms.append(
                (sum(i["norm_before"] ** 2 for i in layers) ** 0.5, sum(i["norm_after"] ** 2 for i in layers) ** 0.5)
            )
        before, after = entry.get("loss_before"), entry.get("loss_after")
        if before is not None and after is not None and before > 0:
            losses.append((after - before) / before)
    nan = float("nan")
    return {
        "shifts": len(history),
        "shifts_kept": len(kept),
        "relative_change_live": float(np.mean(changes)) if changes else nan,
        "loss_change": float(np.mean(losses)) if losses else nan,
        "norm_before": norms[0][0] if norms else nan,
        "norm_after": norms[-1][1] if norms else nan,
    }


def shadow_mechanism(model, test, train=None, batch_size=256, max_examples=1000):
    """Test accuracy of a model with `ShadowWeights` in DOM (the fixed shadow kernel); the model stays in AOM.

    On a model with batch normalization the moving statistics are first re-estimated for DOM on (the first
    `max_examples` examples of) `train`, with the DOM kernels (`set_weight_mode(model, "desire", data=...)`),
    and the AOM statistics are restored afterwards, so the model's AOM evaluation is unchanged by this
    measurement. Cost: one forward pass over that slice and one evaluation of `test`.

    Args:
        model: a compiled model with an `accuracy` metric, in AOM.
        test: the test split `(x, y)`.
        train: the training split `(x, y)` (or `x`) to re-estimate the batch-norm statistics on; required
            when the model has batch normalization.
        batch_size: evaluation and re-estimation batch size.
        max_examples: the most training examples used for re-estimation (a positive int or None for all).

    Returns:
        `{"dom_accuracy"}` (empty when the model has no `ShadowWeights` layer with a fixed DOM kernel).

    Raises:
        ValueError: if the model has batch normalization and `train` is None.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.comparison.mechanisms import shadow_mechanism
    from keras_wtrain.layers import ShadowWeights

    x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 2
    model = keras.Sequential([keras.Input((8,)), ShadowWeights(keras.layers.Dense(2), "dropconnect", seed=0)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    print(shadow_mechanism(model, (x, y), train=(x, y)))  # {'dom_accuracy': ...}
    ```
    """
    from keras_wtrain._core.batchnorm import batchnorm_layers
    from keras_wtrain.shadow_weights.modes import set_weight_mode
    from keras_wtrain.shadow_weights.modes import shadow_weight_layers

    if not any(layer.has_fixed_desire_kernel for layer in shadow_weight_layers(model)):
        return {}
    bn_layers = batchnorm_layers(model)
    if bn_layers and train is None:
        raise ValueError(
            "shadow_mechanism: argument `train` is required for a model with batch normalization: its moving "
            "statistics are re-estimated for DOM on the training data before DOM is evaluated; received None."
        )
    x, y = test
    saved = [
        (v, np.array(keras.ops.convert_to_numpy(v)))
        for layer in bn_layers
        for v in (layer.moving_mean, layer.moving_variance)
    ]
    data = None
    if bn_layers:
        data = train[0] if isinstance(train, (tuple, list)) else train
    try:
        set_weight_mode(model, "desire", data=data, batch_size=batch_size, max_examples=max_examples)
        result = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    finally:
        set_weight_mode(model, "accuracy")
        for variable, value in saved:
            variable.assign(value)
    return {"dom_accuracy": float(result["accuracy"])}


def finite(value):
    """Whether `value` is a finite real number (used to aggregate mechanism values over seeds).

    Example:

    ```python
    from keras_wtrain.comparison.mechanisms import finite

    assert finite(0.5) and not finite(float("nan")) and not finite("x")
    ```
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
