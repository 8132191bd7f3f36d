"""One optimum shift of a model (Zhou et al., arXiv:2405.14111): `optimum_shift`.

The `OptimumShifting` callback (`keras_wtrain.optimum_shifting.callback`) decides when to shift and on which batch.
"""

import warnings

import numpy as np

from keras_wtrain._core import data_adapters
from keras_wtrain._core import validation
from keras_wtrain._core.objective import mean_loss
from keras_wtrain.optimum_shifting.least_norm import _POOL
from keras_wtrain.optimum_shifting.least_norm import AUTO_FRACTIONS
from keras_wtrain.optimum_shifting.least_norm import _auto_batch_size
from keras_wtrain.optimum_shifting.least_norm import _chunk
from keras_wtrain.optimum_shifting.least_norm import _live_units
from keras_wtrain.optimum_shifting.least_norm import _rows
from keras_wtrain.optimum_shifting.least_norm import _sample
from keras_wtrain.optimum_shifting.least_norm import _to_arrays
from keras_wtrain.optimum_shifting.least_norm import assign_kernel
from keras_wtrain.optimum_shifting.least_norm import capture_inputs
from keras_wtrain.optimum_shifting.least_norm import kernel_of
from keras_wtrain.optimum_shifting.least_norm import minimum_norm_kernel
from keras_wtrain.optimum_shifting.least_norm import projection
from keras_wtrain.optimum_shifting.least_norm import resolve_layers

__all__ = ["minimum_norm_kernel", "optimum_shift"]

# Relative change on live rows below which a shift counts as having changed nothing.
_NO_CHANGE = 1e-6


def _shift_layer(parts, kernel, chunk, rtol):
    """Shifts `kernel` on the captured inputs, sequentially over sub-batches of `chunk` examples."""
    d = kernel.shape[0]
    per_example, _ = _rows(parts, d)
    n_examples = per_example[0].shape[0]
    chunk = min(chunk, n_examples)
    # Equal sub-batches of `chunk` examples; a remainder is covered by a last sub-batch that ends at the batch
    # end (overlapping the previous one), so no system is smaller, i.e. more aggressive, than the others.
    starts = list(range(0, n_examples - chunk + 1, chunk))
    if starts[-1] + chunk < n_examples:
        starts.append(n_examples - chunk)
    shifted, ranks = kernel, []
    for start in starts:
        a = np.concatenate([p[start : start + chunk].reshape(-1, d) for p in per_example])
        shifted, rank = projection(a, shifted, rtol)
        ranks.append(int(rank))
    return shifted, {"systems": len(starts), "examples_per_system": chunk, "rank": ranks}


def optimum_shift(
    model,
    data,
    layers="last",
    batch_size="auto",
    sub_batch_size=None,
    seed=None,
    rtol=1e-6,
    max_loss_increase=None,
    guard_data=None,
    exclude=None,
    loss_atol=1e-3,
):
    """Applies one optimum shift to `model` in place (eagerly, on the host); returns what it did.

    Draws a class-stratified batch from `data` (never from `exclude`; with `batch_size="auto"` sized from the live rank
    `r` of the layer's inputs, retried with `3r/4` then `7r/8` rows after a rejected shift), replaces each chosen kernel
    by `minimum_norm_kernel(A, V)` on it, and rolls every layer back when the mean loss on `guard_data` exceeds
    `(1 + max_loss_increase) × loss_before + loss_atol`. Cost: one inference pass on the batch (and on `guard_data`)
    and one float64 SVD per system.

    Args:
        model: a built Keras model (compiled, when `guard_data` is given: its loss is used).
        data: `(x, y)` arrays (labels as ints or one-hot), inputs `x` alone (no class coverage), a `tf.data.Dataset`
            or an iterable of `(x, y)` batches.
        layers: `"last"` (the last Dense layer), `"dense"` (every Dense layer) or a list of Dense /
            `WeightNormalization(Dense)` layers or their names.
        batch_size: `"auto"` or an int > the number of classes.
        sub_batch_size: examples per linear system for an int `batch_size` (None: fewer rows than the input width).
        seed: int seed or `numpy.random.Generator` for the batch choice.
        rtol: relative singular-value cut-off of `minimum_norm_kernel`, in (0, 1).
        max_loss_increase: relative tolerance of the loss guard (>= 0), or None for no guard.
        guard_data: `(x, y)` arrays on which the guard measures the loss.
        exclude: indices of `data` never used in a shifting batch (the guard slice).
        loss_atol: absolute slack of the guard, in loss units (>= 0).

    Returns:
        `{layer name: info}` with `norm_before`, `norm_after`, `relative_change_live` (‖V* − V‖ / ‖V‖ on live input
        rows), `live_units`, `live_rank`, `rank` (per system), `systems`, `examples_per_system`, `batch_indices`,
        and, with a guard, `loss_before`, `loss_after`, `kept` and `attempts` (each batch size tried and its guard
        loss). A layer that could not be shifted has `systems` 0 and a `skipped` reason.

    Raises:
        ValueError: for a layer that cannot be shifted, a batch that cannot cover every class, or bad arguments.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.optimum_shifting.shift import optimum_shift
    from keras_wtrain.comparison.models import build_model

    x, y = np.random.rand(300, 28, 28, 1).astype("float32"), np.arange(300) % 10
    model = build_model("mlp", (28, 28, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    info = optimum_shift(model, (x, y), seed=0, max_loss_increase=0.02, guard_data=(x[:50], y[:50]))
    name = model.layers[-1].name
    print(info[name]["examples_per_system"], info[name]["relative_change_live"], info[name]["kept"])
    ```
    """
    if batch_size != "auto":
        validation.check_int("batch_size", batch_size, minimum=2)
    validation.check_int("sub_batch_size", sub_batch_size, minimum=1, allow_none=True)
    if not validation.is_real(rtol) or not 0.0 < rtol < 1.0:
        raise ValueError(f"argument `rtol` must be in (0, 1); received {rtol!r}.")
    if max_loss_increase is not None:
        validation.check_nonnegative("max_loss_increase", max_loss_increase)
    validation.check_nonnegative("loss_atol", loss_atol)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x, _, labels = _to_arrays(data, pool_size=max(10 * (batch_size if batch_size != "auto" else 128), _POOL))
    n_total = data_adapters.num_examples(x)
    candidates = np.setdiff1d(np.arange(n_total), np.asarray(exclude if exclude is not None else [], dtype=np.int64))
    chosen = resolve_layers(model, layers)
    chosen_layers = [layer for layer, _ in chosen]
    num_classes = 0 if labels is None else len(np.unique(labels[candidates]))
    kernels = {id(layer): kernel_of(layer, kind) for layer, kind in chosen}

    # The live units and their rank, on a pool (also what "auto" sizes the batch from).
    pool = _sample(labels, candidates, min(_POOL, len(candidates)), rng) if labels is not None else candidates[:_POOL]
    pool_inputs = capture_inputs(model, chosen_layers, data_adapters.take(x, pool))
    live = {}
    for layer in chosen_layers:
        d = kernels[id(layer)].shape[0]
        live[id(layer)] = _live_units(pool_inputs[id(layer)], d) + (_rows(pool_inputs[id(layer)], d)[1],)
    if batch_size == "auto":
        attempts = []
        for fraction in AUTO_FRACTIONS:
            sizes = [_auto_batch_size(rank, rows, num_classes, fraction) for _, rank, rows in live.values()]
            if all(size is not None for size in sizes) and min(sizes) not in attempts:
                attempts.append(min(sizes))
        if not attempts:
            warnings.warn(
                f"OptimumShifting cannot shift layers {[layer.name for layer in chosen_layers]}: their live input "
                f"rank is too small for a batch with more examples than the {num_classes} classes and fewer rows "
                "than that rank.",
                stacklevel=2,
            )
            reason = "no freedom: live input rank too small"
            return {layer.name: {"systems": 0, "skipped": reason} for layer in chosen_layers}
    else:
        attempts = [batch_size]
    guarded = guard_data is not None and max_loss_increase is not None
    loss_before = mean_loss(model, guard_data) if guarded else None
    tried = []
    for n_examples in attempts:
        idx = _sample(labels, candidates, min(n_examples, len(candidates)), rng)
        info = _shift_all(model, chosen, kernels, live, x, idx, sub_batch_size, num_classes, rtol)
        if not guarded:
            break
        loss_after = mean_loss(model, guard_data)
        kept = bool(loss_after <= loss_before * (1.0 + max_loss_increase) + loss_atol)
        tried.append({"examples": int(len(idx)), "loss_after": loss_after})
        for details in info.values():
            details.update(loss_before=loss_before, loss_after=loss_after, kept=kept, attempts=list(tried))
        if kept:
            break
        for layer, kind in chosen:
            assign_kernel(layer, kind, kernels[id(layer)])
    else:
        warnings.warn(
            f"OptimumShifting rolled a shift back: the loss on the guard slice rose from {loss_before:.4g} to "
            f"{min(t['loss_after'] for t in tried):.4g} at best ({len(tried)} batch size(s) tried), more than "
            f"max_loss_increase={max_loss_increase:g} (relative) + loss_atol={loss_atol:g}.",
            stacklevel=2,
        )
    for details in info.values():
        if details.get("systems") and details["relative_change_live"] < _NO_CHANGE:
            warnings.warn(
                f"OptimumShifting changed nothing on the live inputs of a layer (relative change "
                f"{details['relative_change_live']:.1e}): the shifting batch has no freedom there (live rank "
                f"{details['live_rank']}, {details['examples_per_system']} examples per system). Use a smaller "
                "`batch_size`.",
                stacklevel=2,
            )
    return info


def _shift_all(model, chosen, kernels, live, x, idx, sub_batch_size, num_classes, rtol):
    """Shifts every chosen layer on the batch `idx` (from the kernels before any shift); returns the infos."""
    captured = capture_inputs(model, [layer for layer, _ in chosen], data_adapters.take(x, idx))
    info = {}
    for layer, kind in chosen:
        kernel = kernels[id(layer)]
        mask, live_rank, rows_per_example = live[id(layer)]
        chunk, reason = _chunk(sub_batch_size, len(idx), rows_per_example, kernel.shape[0], num_classes)
        if chunk is None:
            warnings.warn(f"OptimumShifting left layer {layer.name!r} unchanged: {reason}.", stacklevel=3)
            info[layer.name] = {"systems": 0, "skipped": reason}
            continue
        shifted, details = _shift_layer(captured[id(layer)], kernel, chunk, rtol)
        assign_kernel(layer, kind, shifted)
        live_norm = float(np.linalg.norm(kernel[mask]))
        details.update(
            norm_before=float(np.linalg.norm(kernel)),
            norm_after=float(np.linalg.norm(shifted)),
            relative_change_live=float(np.linalg.norm((shifted - kernel)[mask])) / max(live_norm, 1e-30),
            live_units=int(mask.sum()),
            live_rank=live_rank,
            batch_indices=idx,
        )
        info[layer.name] = details
    return info
