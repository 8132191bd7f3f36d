"""Least-norm kernels (`minimum_norm_kernel`, arXiv:2405.14111) and the linear layers optimum shifting can move.

Also finds shiftable layers (`Dense`, `WeightNormalization(Dense)`), reads their inputs and kernels, and chooses the
shifting batches.
"""

import warnings

import keras
import numpy as np

from keras_wtrain._core import data_adapters
from keras_wtrain._core._keras_private import sublayers
from keras_wtrain._core.layer_kinds import is_dense
from keras_wtrain.weight_normalization.wrapper import WeightNormalization

__all__ = ["minimum_norm_kernel"]

_LAYER_MODES = ("last", "dense")
# A unit whose inputs never exceed this (relative to the largest input) on the pool is dead.
_DEAD = 1e-7
# Examples on which the live units and their rank are measured.
_POOL = 1024


def minimum_norm_kernel(inputs, kernel, rtol=1e-6):
    """The least-norm kernel with the same outputs as `kernel` on `inputs` (the paper's closed form).

    Solves `min ‖V'‖_F  s.t.  A V' = A V`: `V* = A⁺ A V`, by an SVD in float64 (singular values below
    `rtol × s_max` count as zero, so a rank-deficient `A` is handled). Cost: one SVD of an `(n, d)` matrix,
    O(n d min(n, d)) time and O(n d) memory.

    Args:
        inputs: array `(n, d)`, one row per example (or per position), the layer's inputs.
        kernel: array `(d, units)`, the layer's kernel.
        rtol: relative cut-off for small singular values of `inputs`, in (0, 1).

    Returns:
        A float64 array `(d, units)` with norm at most that of `kernel` and `inputs @ result == inputs @ kernel`.

    Raises:
        ValueError: if the shapes do not match or `rtol` is not in (0, 1).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.optimum_shifting.least_norm import minimum_norm_kernel

    a, v = np.random.rand(5, 8), np.random.rand(8, 3)
    v_star = minimum_norm_kernel(a, v)
    assert np.allclose(a @ v_star, a @ v) and np.linalg.norm(v_star) <= np.linalg.norm(v)
    ```
    """
    a = np.asarray(inputs, dtype=np.float64)
    v = np.asarray(kernel, dtype=np.float64)
    if a.ndim != 2 or v.ndim != 2 or a.shape[1] != v.shape[0]:
        raise ValueError(
            f"arguments `inputs` (n, d) and `kernel` (d, units) must agree on d; received shapes {a.shape} "
            f"and {v.shape}."
        )
    if not 0.0 < rtol < 1.0:
        raise ValueError(f"argument `rtol` must be in (0, 1); received {rtol!r}.")
    return projection(a, v, rtol)[0]


def projection(a, v, rtol):
    # A small SVD: one BLAS thread avoids OpenBLAS oversubscription next to TF/JAX thread pools (measured 100x
    # slower on a 2-core machine otherwise).
    with _one_blas_thread():
        _, s, wt = np.linalg.svd(a, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return np.zeros_like(v), 0
    basis = wt[s > rtol * s[0]]  # (r, d), orthonormal rows spanning the row space of A
    return basis.T @ (basis @ v), basis.shape[0]


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it numpy uses its default thread count
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _candidates(model):
    """Linear layers of `model` in order, as `(layer, kind)`; kind is "dense", "weightnorm" or "unsupported"."""
    layers = sublayers(model)
    wrapped = {id(layer.layer) for layer in layers if isinstance(layer, keras.layers.Wrapper)}
    result = []
    for layer in layers:
        if isinstance(layer, WeightNormalization) and is_dense(layer.layer, weight_normalized=False):
            result.append((layer, "weightnorm"))
        elif isinstance(layer, keras.layers.Wrapper) and is_dense(layer.layer, weight_normalized=False):
            result.append((layer, "unsupported"))
        elif is_dense(layer, weight_normalized=False) and id(layer) not in wrapped:
            result.append((layer, "dense"))
    return result


def _unsupported_reason(layer):
    if isinstance(layer, keras.layers.Wrapper):
        if not is_dense(layer.layer, weight_normalized=False):
            return f"it wraps {type(layer.layer).__name__}: " + _unsupported_reason(layer.layer)
        return (
            f"it wraps Dense in {type(layer).__name__}, whose effective kernel is not the Dense kernel "
            "(only WeightNormalization wrappers are handled)"
        )
    if "Conv" in type(layer).__name__:
        return (
            "a convolution is over-determined for optimum shifting: one example alone gives "
            "H×W patch rows against kh×kw×C_in kernel rows, so `A V' = A V` leaves no freedom"
        )
    return "only keras.layers.Dense (optionally inside WeightNormalization) is supported"


def resolve_layers(model, layers):
    candidates = _candidates(model)
    if isinstance(layers, str):
        if layers == "last":
            if not candidates:
                raise ValueError(f"argument `layers`='last': model {model.name!r} has no Dense layer.")
            layer, kind = candidates[-1]
            if kind == "unsupported":
                reason = _unsupported_reason(layer)
                raise ValueError(f"argument `layers`='last': cannot shift {layer.name!r}: {reason}.")
            return [(layer, kind)]
        chosen = [(layer, kind) for layer, kind in candidates if kind != "unsupported"]
        skipped = [layer.name for layer, kind in candidates if kind == "unsupported"]
        if skipped:
            warnings.warn(f"OptimumShifting skips layers {skipped}: unsupported wrappers around Dense.", stacklevel=3)
        if not chosen:
            raise ValueError(f"argument `layers`='dense': model {model.name!r} has no supported Dense layer.")
        return chosen
    by_name = {layer.name: (layer, kind) for layer, kind in candidates}
    by_id = {id(layer): (layer, kind) for layer, kind in candidates}
    all_layers = {layer.name: layer for layer in sublayers(model)}
    chosen = []
    for item in layers:
        entry = by_name.get(item) if isinstance(item, str) else by_id.get(id(item))
        if entry is None:
            layer = all_layers.get(item) if isinstance(item, str) else item
            if layer is None:
                raise ValueError(f"argument `layers`: model {model.name!r} has no layer named {item!r}.")
            if isinstance(item, keras.layers.Layer) and id(item) not in {id(x) for x in all_layers.values()}:
                raise ValueError(f"argument `layers`: layer {item.name!r} is not part of model {model.name!r}.")
            raise ValueError(
                f"argument `layers`: cannot shift layer {layer.name!r} of type {type(layer).__name__}: "
                f"{_unsupported_reason(layer)}."
            )
        if entry[1] == "unsupported":
            raise ValueError(f"argument `layers`: cannot shift {entry[0].name!r}: {_unsupported_reason(entry[0])}.")
        chosen.append(entry)
    return chosen


def capture_inputs(model, layers, x):
    """Runs `model` on `x` (inference mode) and returns each layer's inputs as `(rows, d)` float64 arrays."""
    captured = {id(layer): [] for layer in layers}
    saved = {}

    def make_hook(layer, original):
        def hook(inputs, *args, **kwargs):
            captured[id(layer)].append(np.asarray(keras.ops.convert_to_numpy(inputs), dtype=np.float64))
            return original(inputs, *args, **kwargs)

        return hook

    for layer in layers:
        saved[id(layer)] = layer.__dict__.get("call")
        layer.call = make_hook(layer, layer.call)
    try:
        model(x, training=False)  # one call, so each captured part is one call of the layer on the whole batch
    finally:
        for layer in layers:
            if saved[id(layer)] is None:
                del layer.call
            else:
                layer.call = saved[id(layer)]
    result = {}
    for layer in layers:
        parts = captured[id(layer)]
        if not parts:
            raise ValueError(f"layer {layer.name!r} was not called when running the model on the shifting batch.")
        result[id(layer)] = parts
    return result


def kernel_of(layer, kind):
    if kind == "weightnorm":
        return np.asarray(keras.ops.convert_to_numpy(layer.effective_kernels()[0]), dtype=np.float64)
    return np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64)


def assign_kernel(layer, kind, kernel):
    if kind == "weightnorm":
        v, g = layer.layer.kernel, layer.g_weights[0]
        v.assign(kernel.astype(v.dtype))
        # WeightNormalization computes g * v / sqrt(sum(v**2) + 1e-12) per output unit.
        g.assign(np.sqrt(np.sum(kernel**2, axis=0) + 1e-12).reshape(g.shape).astype(g.dtype))
    else:
        layer.kernel.assign(kernel.astype(layer.kernel.dtype))


def _class_ids(y):
    if y is None:
        return None
    y = np.asarray(keras.ops.convert_to_numpy(y))
    if y.ndim >= 2 and y.shape[-1] > 1:
        return np.argmax(y.reshape(len(y), -1), axis=-1)
    return y.reshape(len(y)).astype(np.int64)


def _to_arrays(data, pool_size):
    """`(x, y, class_ids or None)`: all of in-memory data, or up to `pool_size` examples of an iterable."""
    arrays = data_adapters.in_memory(data)
    x, y = data_adapters.collect(data, max_examples=None if arrays is not None else pool_size)
    return x, y, _class_ids(y)


def _round_robin(indices, labels, rng):
    """Orders `indices` so that classes alternate (every prefix of ≥ C items covers every class)."""
    groups = [rng.permutation(indices[labels[indices] == c]) for c in np.unique(labels[indices])]
    order = []
    for i in range(max(len(g) for g in groups)):
        order.extend(int(g[i]) for g in groups if i < len(g))
    return np.asarray(order)


def _sample(labels, candidates, batch_size, rng, name="batch_size"):
    """A class-stratified sample of `batch_size` of the `candidates` indices, ordered class round-robin."""
    candidates = np.asarray(candidates)
    if labels is None:
        return rng.permutation(candidates)[: min(batch_size, len(candidates))]
    classes, counts = np.unique(labels[candidates], return_counts=True)
    num_classes = len(classes)
    if batch_size <= num_classes:
        raise ValueError(
            f"argument `{name}` must be larger than the number of classes ({num_classes}) so the shifting "
            f"batch covers every class; received {batch_size}. For regression targets pass `data=x` alone."
        )
    take = np.minimum(counts, batch_size // num_classes)
    extra = batch_size - take.sum()
    for c in rng.permutation(num_classes):
        if extra <= 0:
            break
        more = min(extra, counts[c] - take[c])
        take[c] += more
        extra -= more
    chosen = np.concatenate(
        [rng.choice(candidates[labels[candidates] == c], t, replace=False) for c, t in zip(classes, take)]
    )
    return _round_robin(chosen, labels, rng)


def _rows(parts, d):
    """The captured inputs of one layer as one `(rows, d)` matrix and the rows per example."""
    per_example = [p.reshape(p.shape[0], -1, d) for p in parts]
    return per_example, sum(p.shape[1] for p in per_example)


def _live_units(parts, d):
    """Boolean mask of the input units that are non-zero on some captured example, and their rank."""
    a = np.concatenate([p.reshape(-1, d) for p in parts])
    peak = np.max(np.abs(a), axis=0)
    live = peak > _DEAD * max(float(peak.max(initial=0.0)), 1e-30)
    if not live.any():
        return live, 0
    _, rank = projection(a[:, live], np.zeros((int(live.sum()), 1)), 1e-6)
    return live, int(rank)


# Fractions of the live rank tried, in rows, by batch_size="auto": the most freedom first; a shift that
# the loss guard rejects is retried with a larger (more conservative) batch.
AUTO_FRACTIONS = (0.5, 0.75, 0.875)


def _auto_batch_size(live_rank, rows_per_example, num_classes, fraction=AUTO_FRACTIONS[0]):
    """Examples per shifting batch: `fraction` of the live rank in rows, at least one more than the classes."""
    examples = max(int(live_rank * fraction) // max(rows_per_example, 1), num_classes + 1)
    if examples * rows_per_example >= live_rank:
        return None
    return examples


def _chunk(sub_batch_size, n_examples, rows_per_example, d, num_classes):
    """Examples per linear system for an explicit batch: the batch, or fewer than `d` rows when it reaches `d`."""
    if sub_batch_size is not None:
        return min(sub_batch_size, n_examples), None
    if n_examples * rows_per_example < d:
        return n_examples, None
    chunk = max(1, (d - 1) // rows_per_example)
    if num_classes and chunk <= num_classes and chunk < n_examples:
        return None, f"sub-batches of {chunk} examples cannot cover {num_classes} classes"
    return chunk, None
