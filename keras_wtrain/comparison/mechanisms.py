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


def averaging_mechanism(callback):
    """Which checkpoints a `SelectiveWeightAveraging` callback averaged, and the selection objective.

    Args:
        callback: the callback, after training.

    Returns:
        `{"strategy", "averaged_steps", "num_averaged", "num_checkpoints", "objective", "objective_last",
        "selection_time_s"}` (`objective`: training loss `F` of the average; empty when none was installed).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.callbacks import SelectiveWeightAveraging
    from keras_wtrain.comparison.mechanisms import averaging_mechanism

    x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    swa = SelectiveWeightAveraging(k=2, num_checkpoints=4, strategy="lawa", selection_data=(x, y), seed=0)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[swa])
    print(averaging_mechanism(swa)["averaged_steps"])  # [7, 8]
    ```
    """
    if callback.selected_steps is None:
        return {}
    steps = [int(s) for s in callback.selected_steps]
    kept = callback.checkpoints()
    out = {
        "strategy": callback.strategy if isinstance(callback.strategy, str) else "custom",
        "averaged_steps": steps,
        "num_averaged": len(steps),
        "num_checkpoints": int(len(kept)),
        "objective": None if callback.average_loss is None else float(callback.average_loss),
        "objective_last": None,
        "selection_time_s": float(callback.selection_time_s or 0.0),
    }
    if callback.selection_data is not None and len(kept):
        out["objective_last"] = float(callback.weights_loss(kept[-1]))
    return out


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


def shadow_mechanism(model, test, batch_size=256):
    """Test accuracy of a model with `ShadowWeights` in DOM (the fixed shadow kernel); the model stays in AOM.

    Args:
        model: a compiled model with an `accuracy` metric, in AOM.
        test: the test split `(x, y)`.
        batch_size: evaluation batch size.

    Returns:
        `{"dom_accuracy"}` (empty when the model has no `ShadowWeights` layer).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.comparison.mechanisms import shadow_mechanism
    from keras_wtrain.layers import ShadowWeights

    x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 2
    model = keras.Sequential([keras.Input((8,)), ShadowWeights(keras.layers.Dense(2), "dropconnect", seed=0)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    print(shadow_mechanism(model, (x, y)))  # {'dom_accuracy': ...}
    ```
    """
    from keras_wtrain.shadow_weights.modes import set_weight_mode

    if not set_weight_mode(model, "desire"):
        return {}
    try:
        x, y = test
        result = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    finally:
        set_weight_mode(model, "accuracy")
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
