"""Optimum shifting (Zhou et al., arXiv:2405.14111): move a trained solution to a flatter one.

For a linear layer with inputs `A` (one row per example, `d` columns) and kernel `V`, every `V'`
with `A V' = A V` gives the same layer outputs (hence the same model outputs and loss) on those
examples. Optimum shifting replaces `V` with the least-norm such kernel,

    V* = Aᵀ (A Aᵀ)⁻¹ A V = A⁺ A V,

i.e. each output column of `V` projected onto the span of the rows of `A`. The paper bounds the
Hessian trace by `‖V‖²`, which the projection can only shrink. Everything here runs eagerly on the
host (numpy) between epochs, so it is independent of `jit_compile`, distribution strategies and
the backend.
"""

import warnings

import keras
import numpy as np

from keras_wtrain import data_adapters
from keras_wtrain import validation
from keras_wtrain.layers.weight_normalization import WeightNormalization

__all__ = ["OptimumShifting", "minimum_norm_kernel", "optimum_shift"]

_LAYER_MODES = ("last", "dense")


def minimum_norm_kernel(inputs, kernel, rtol=1e-6):
    """The least-norm kernel with the same outputs as `kernel` on `inputs` (the paper's closed form).

    Solves `min ‖V'‖_F  s.t.  A V' = A V` for `A = inputs`, `V = kernel`: `V* = A⁺ A V`, which for
    a full-row-rank `A` is the paper's `Aᵀ (A Aᵀ)⁻¹ A V`. Computed with an SVD in float64 so a
    rank-deficient `A` (dead ReLU units, `n ≥ d`) is handled: singular values below
    `rtol × s_max` are treated as zero.

    Args:
        inputs: array `(n, d)`, one row per example (or per position), the layer's inputs.
        kernel: array `(d, units)`, the layer's kernel.
        rtol: relative cut-off for small singular values of `inputs`, in (0, 1).

    Returns:
        A float64 numpy array `(d, units)`: the shifted kernel. Its Frobenius norm is never larger
        than that of `kernel`, and `inputs @ result == inputs @ kernel` up to `rtol`.

    Raises:
        ValueError: if the shapes do not match or `rtol` is not in (0, 1).

    Example:

    ```python
    import numpy as np
    from keras_wtrain.callbacks.optimum_shifting import minimum_norm_kernel

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
    return _projection(a, v, rtol)[0]


def _projection(a, v, rtol):
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


def _is_dense(layer):
    return isinstance(layer, keras.layers.Dense)


def _candidates(model):
    """Linear layers of `model` in order, as `(layer, kind)`; kind is "dense", "weightnorm" or "unsupported"."""
    layers = list(model._flatten_layers(include_self=False, recursive=True))
    wrapped = {id(layer.layer) for layer in layers if isinstance(layer, keras.layers.Wrapper)}
    result = []
    for layer in layers:
        if isinstance(layer, WeightNormalization) and _is_dense(layer.layer):
            result.append((layer, "weightnorm"))
        elif isinstance(layer, keras.layers.Wrapper) and _is_dense(layer.layer):
            result.append((layer, "unsupported"))
        elif _is_dense(layer) and id(layer) not in wrapped:
            result.append((layer, "dense"))
    return result


def _unsupported_reason(layer):
    if isinstance(layer, keras.layers.Wrapper):
        if not _is_dense(layer.layer):
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


def _resolve_layers(model, layers):
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
    all_layers = {layer.name: layer for layer in model._flatten_layers(include_self=False, recursive=True)}
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


def _class_ids(y):
    if y is None:
        return None
    y = np.asarray(keras.ops.convert_to_numpy(y))
    if y.ndim >= 2 and y.shape[-1] > 1:
        return np.argmax(y.reshape(len(y), -1), axis=-1)
    return y.reshape(len(y)).astype(np.int64)


def _to_arrays(data, pool_size):
    """`(x, class_ids or None)`: all of in-memory data, or up to `pool_size` examples of an iterable of batches."""
    arrays = data_adapters.in_memory(data)
    x, y = data_adapters.collect(data, max_examples=None if arrays is not None else pool_size)
    return x, _class_ids(y)


def _round_robin(indices, labels, rng):
    """Orders `indices` so that classes alternate (every prefix of ≥ C items covers every class)."""
    groups = [rng.permutation(indices[labels[indices] == c]) for c in np.unique(labels[indices])]
    order = []
    for i in range(max(len(g) for g in groups)):
        order.extend(int(g[i]) for g in groups if i < len(g))
    return np.asarray(order)


def _sample(labels, n_total, batch_size, rng):
    """A class-stratified sample of `batch_size` example indices, ordered class round-robin."""
    if labels is None:
        return rng.permutation(n_total)[: min(batch_size, n_total)]
    classes, counts = np.unique(labels, return_counts=True)
    num_classes = len(classes)
    if batch_size <= num_classes:
        raise ValueError(
            f"argument `batch_size` must be larger than the number of classes ({num_classes}) so the shifting "
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
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), t, replace=False) for c, t in zip(classes, take)])
    return _round_robin(chosen, labels, rng)


def _capture_inputs(model, layers, x):
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


def _kernel_of(layer, kind):
    if kind == "weightnorm":
        return np.asarray(keras.ops.convert_to_numpy(layer.effective_kernels()[0]), dtype=np.float64)
    return np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64)


def _assign_kernel(layer, kind, kernel):
    if kind == "weightnorm":
        v, g = layer.layer.kernel, layer.g_weights[0]
        v.assign(kernel.astype(v.dtype))
        # WeightNormalization computes g * v / sqrt(sum(v**2) + 1e-12) per output unit.
        g.assign(np.sqrt(np.sum(kernel**2, axis=0) + 1e-12).reshape(g.shape).astype(g.dtype))
    else:
        layer.kernel.assign(kernel.astype(layer.kernel.dtype))


def _shift_layer(parts, kernel, sub_batch_size, num_classes, rtol):
    """Shifts `kernel` on the captured inputs, sequentially over sub-batches whose rows stay below d."""
    d = kernel.shape[0]
    per_example = [p.reshape(p.shape[0], -1, d) for p in parts]  # (examples, positions, d) per call
    n_examples = per_example[0].shape[0]
    rows_per_example = sum(p.shape[1] for p in per_example)
    if sub_batch_size is None:
        chunk = max(1, (d - 1) // rows_per_example) if n_examples * rows_per_example >= d else n_examples
    else:
        chunk = min(sub_batch_size, n_examples)
    if num_classes and chunk <= num_classes and chunk < n_examples:
        return kernel, {"systems": 0, "skipped": f"sub-batches of {chunk} examples cannot cover {num_classes} classes"}
    # Equal sub-batches of `chunk` examples; a remainder is covered by a last sub-batch that ends at the batch
    # end (overlapping the previous one), so no system is smaller, i.e. more aggressive, than the others.
    starts = list(range(0, n_examples - chunk + 1, chunk))
    if starts[-1] + chunk < n_examples:
        starts.append(n_examples - chunk)
    shifted, systems, ranks = kernel, 0, []
    for start in starts:
        a = np.concatenate([p[start : start + chunk].reshape(-1, d) for p in per_example])
        shifted, rank = _projection(a, shifted, rtol)
        ranks.append(int(rank))
        systems += 1
    return shifted, {"systems": systems, "examples_per_system": chunk, "rank": ranks}


def optimum_shift(model, data, layers="last", batch_size=256, sub_batch_size=None, seed=None, rtol=1e-6):
    """Applies one optimum shift to `model` in place (eagerly, on the host).

    Draws a class-stratified batch of `batch_size` examples from `data`, captures the inputs `A` of
    every chosen layer on it (inference mode) and replaces each kernel `V` by
    `minimum_norm_kernel(A, V)`. When a layer's rows reach its input width `d` (`n ≥ d`, where the
    system has no freedom left) the batch is cut into class-covering sub-batches of fewer than `d`
    rows that are solved one after the other, as the paper's stochastic variant does with
    mini-batches; the outputs of the last sub-batch are then exact and the others approximate.
    Biases and activations are untouched.

    Args:
        model: a built Keras model.
        data: `(x, y)` arrays (labels as ints or one-hot), inputs `x` alone (no class coverage
            check), a `tf.data.Dataset` or an iterable of `(x, y)` batches.
        layers: `"last"` (the last Dense layer, the paper's setting), `"dense"` (every Dense layer)
            or a list of Dense / `WeightNormalization(Dense)` layers or their names.
        batch_size: examples in the shifting batch; must exceed the number of classes.
        sub_batch_size: examples per linear system; None uses the batch when its rows are fewer
            than `d`, otherwise the largest sub-batch with fewer than `d` rows.
        seed: int seed or `numpy.random.Generator` for the batch choice.
        rtol: relative singular-value cut-off of `minimum_norm_kernel`.

    Returns:
        A dict `{layer name: {"norm_before", "norm_after", "systems", "examples_per_system", "rank",
        "batch_indices"}}`; `batch_indices` index the examples of `data` used (for a dataset or an
        iterable, the examples in the order they were read).

    Raises:
        ValueError: for a layer that cannot be shifted, or a batch that cannot cover every class.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.callbacks.optimum_shifting import optimum_shift
    from keras_wtrain.models import build_model

    x, y = np.random.rand(200, 28, 28, 1).astype("float32"), np.arange(200) % 10
    model = build_model("mlp", (28, 28, 1), 10)
    info = optimum_shift(model, (x, y), batch_size=100, seed=0)
    ```
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x, labels = _to_arrays(data, pool_size=max(10 * batch_size, 1024))
    n_total = data_adapters.num_examples(x)
    chosen = _resolve_layers(model, layers)
    idx = _sample(labels, n_total, batch_size, rng)
    num_classes = 0 if labels is None else len(np.unique(labels))
    captured = _capture_inputs(model, [layer for layer, _ in chosen], data_adapters.take(x, idx))
    info = {}
    for layer, kind in chosen:
        kernel = _kernel_of(layer, kind)
        shifted, details = _shift_layer(captured[id(layer)], kernel, sub_batch_size, num_classes, rtol)
        if details["systems"]:
            _assign_kernel(layer, kind, shifted)
        else:
            warnings.warn(f"OptimumShifting left layer {layer.name!r} unchanged: {details['skipped']}.", stacklevel=2)
        details.update(
            norm_before=float(np.linalg.norm(kernel)), norm_after=float(np.linalg.norm(shifted)), batch_indices=idx
        )
        info[layer.name] = details
    return info


@keras.saving.register_keras_serializable(package="keras_wtrain")
class OptimumShifting(keras.callbacks.Callback):
    """Optimum shifting (Zhou et al., "Improving Generalization of Deep Neural Networks by Optimum
    Shifting", arXiv:2405.14111, AAAI 2025) as a Keras callback.

    At the end of training (`at_end=True`) and optionally every `every_n_epochs` epochs, draws a
    class-stratified batch of `batch_size` training examples, captures the inputs `A` of each chosen
    Dense layer on it and replaces the kernel `V` by the least-norm kernel with the same outputs on
    that batch, `V* = Aᵀ (A Aᵀ)⁻¹ A V` (see `minimum_norm_kernel` and `optimum_shift`). The model's
    outputs and loss on the shifting batch are unchanged; on other data they change only by
    `A (I − P) V`, small when features of the same class collapse together (Neural Collapse); the
    Hessian trace of the layers below, which passes through `V`, shrinks with `‖V‖`.

    Convolutions are not shifted: a convolution is a linear map over patches, but a single image
    already gives more patch rows (H×W) than the kernel has rows (kh×kw×C_in), so `A V' = A V`
    leaves no freedom. `WeightNormalization(Dense)` layers are shifted through their effective
    kernel (`v ← V*`, `g ← ‖V*‖` per unit). Other wrappers around Dense are rejected.

    The shift runs eagerly on the host between epochs (numpy SVD of an `n × d` matrix), so it works
    with `jit_compile=True`, `tf.distribute` strategies and the JAX backend. Optimizer moments are
    left as they are. The callback cannot see `fit`'s data, so `data` must be given.

    Args:
        layers: `"last"` (default: the last Dense layer, the paper's setting), `"dense"` (every
            Dense layer; hidden layers with wide inputs change outputs off the batch much more), or a
            list of layers / layer names.
        every_n_epochs: also shift after every `every_n_epochs`-th epoch; None (default) for never.
        at_end: shift when training ends (default True).
        batch_size: examples in the shifting batch (default 256); must exceed the number of classes.
            Smaller batches give more freedom (smaller `‖V‖`) and larger changes off the batch.
        data: `(x_train, y_train)` arrays, a dataset or an iterable of `(x, y)` batches.
        sub_batch_size: examples per linear system; None picks the whole batch, or when its rows
            reach a layer's input width `d`, the largest sub-batch with fewer than `d` rows.
        seed: seed of the batch choice (None: nondeterministic).
        rtol: relative singular-value cut-off of the least-norm solve.
        verbose: 1 prints the kernel norms before and after each shift.

    Attributes:
        history: a list of `{"epoch": int or "end", "layers": {name: info}}`, one per shift.

    Raises:
        ValueError: for out-of-range arguments; at `fit` start if `data` is None or a layer cannot
            be shifted.
        TypeError: if `layers` is neither a string nor a list.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.callbacks.optimum_shifting import OptimumShifting
    from keras_wtrain.models import build_model

    x, y = np.random.rand(200, 28, 28, 1).astype("float32"), np.arange(200) % 10
    model = build_model("mlp", (28, 28, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    shifting = OptimumShifting(data=(x, y), batch_size=100, seed=0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[shifting])
    print(shifting.history[-1]["layers"])
    ```
    """

    _paper_arxiv = "2405.14111"

    def __init__(
        self,
        layers="last",
        every_n_epochs=None,
        at_end=True,
        batch_size=256,
        data=None,
        sub_batch_size=None,
        seed=None,
        rtol=1e-6,
        verbose=0,
    ):
        super().__init__()
        if isinstance(layers, str):
            if layers not in _LAYER_MODES:
                raise ValueError(f"argument `layers` must be 'last', 'dense' or a list of layers; received {layers!r}.")
        elif isinstance(layers, (list, tuple)):
            if not layers or not all(isinstance(v, (str, keras.layers.Layer)) for v in layers):
                raise ValueError(
                    f"argument `layers` must be a non-empty list of layers or layer names; received {layers!r}."
                )
            layers = list(layers)
        else:
            raise TypeError(
                f"argument `layers` must be 'last', 'dense' or a list of layers; received {layers!r} "
                f"of type {type(layers).__name__}."
            )
        validation.check_int("every_n_epochs", every_n_epochs, minimum=1, allow_none=True)
        validation.check_bool("at_end", at_end)
        if every_n_epochs is None and not at_end:
            raise ValueError("arguments `every_n_epochs`=None and `at_end`=False: the callback would never shift.")
        validation.check_int("batch_size", batch_size, minimum=2)
        validation.check_int("sub_batch_size", sub_batch_size, minimum=1, allow_none=True)
        validation.check_seed(seed)
        if not validation.is_real(rtol) or not 0.0 < rtol < 1.0:
            raise ValueError(f"argument `rtol` must be in (0, 1); received {rtol!r}.")
        validation.check_choice("verbose", verbose, (0, 1))
        self.layers = layers
        self.every_n_epochs = every_n_epochs
        self.at_end = at_end
        self.batch_size = batch_size
        self.data = data
        self.sub_batch_size = sub_batch_size
        self.seed = seed
        self.rtol = float(rtol)
        self.verbose = verbose
        self.history = []
        self._rng = np.random.default_rng(seed)

    def on_train_begin(self, logs=None):
        if self.data is None:
            raise ValueError(
                "OptimumShifting: argument `data` is None; pass the training data, e.g. data=(x_train, y_train) "
                "(a callback cannot see the data given to fit)."
            )
        _resolve_layers(self.model, self.layers)  # fail early on layers that cannot be shifted

    def shift(self, epoch="end"):
        """Runs one optimum shift on the model now.

        Args:
            epoch: label stored in `history` (an epoch index or `"end"`).

        Returns:
            The per-layer info dict of `optimum_shift`.

        Example:

        ```python
        import keras
        import numpy as np
        from keras_wtrain.callbacks import OptimumShifting

        x, y = np.random.rand(64, 6).astype("float32"), np.arange(64) % 3
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        shifting = OptimumShifting(data=(x, y), batch_size=12)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[shifting])
        info = shifting.shift()  # one more shift on a fresh batch
        ```
        """
        info = optimum_shift(
            self.model,
            self.data,
            layers=self.layers,
            batch_size=self.batch_size,
            sub_batch_size=self.sub_batch_size,
            seed=self._rng,
            rtol=self.rtol,
        )
        self.history.append({"epoch": epoch, "layers": info})
        if self.verbose:
            for name, item in info.items():
                print(f"OptimumShifting[{epoch}] {name}: ‖V‖ {item['norm_before']:.4g} -> {item['norm_after']:.4g}")
        return info

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self.shift(epoch)

    def on_train_end(self, logs=None):
        if self.at_end:
            self.shift("end")

    def get_config(self):
        layers = self.layers
        if isinstance(layers, list):
            layers = [v if isinstance(v, str) else v.name for v in layers]
        return {
            "layers": layers,
            "every_n_epochs": self.every_n_epochs,
            "at_end": self.at_end,
            "batch_size": self.batch_size,
            "sub_batch_size": self.sub_batch_size,
            "seed": self.seed,
            "rtol": self.rtol,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds the callback from `get_config()` (without `data`, which is not serialised).

        Args:
            config: the dict returned by `get_config()`.

        Returns:
            An `OptimumShifting`; set `.data` before training with it.

        Example:

        ```python
        from keras_wtrain.callbacks.optimum_shifting import OptimumShifting

        clone = OptimumShifting.from_config(OptimumShifting(batch_size=64).get_config())
        ```
        """
        return cls(**config)
