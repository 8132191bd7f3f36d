"""Selective weight averaging (SeWA, Wang et al., arXiv:2502.10119) and its baselines SWA, LAWA, EMA.

The callback keeps the last `T` checkpoints of training on the host (numpy) and, at the end of
training, installs an average of them:

- `"sewa"`: the `K` checkpoints chosen by learning a probabilistic mask (Gumbel-softmax / binary
  Concrete relaxation) that minimises the training loss of their uniform average;
- `"swa"`: the uniform average of all kept checkpoints;
- `"lawa"`: the uniform average of the latest `K`;
- `"ema"`: an exponential moving average of every checkpoint taken since `start`;
- `"random"`: the uniform average of `K` checkpoints drawn at random (the paper's control).

All five are computed from the same stored trajectory (`SelectiveWeightAveraging.average_weights`),
so one training run serves every strategy. After installing an average, batch-normalization moving
statistics are recomputed on training data (`update_batchnorm_statistics`, like
`torch.optim.swa_utils.update_bn`).
"""

import json
import os
import time
import warnings

import keras
import numpy as np

__all__ = ["SeWA", "SelectiveWeightAveraging", "update_batchnorm_statistics"]

STRATEGIES = ("sewa", "swa", "lawa", "ema", "random")
_BUFFER_FILE = "sewa_buffer.npy"
_EMA_FILE = "sewa_ema.npy"
_STATE_FILE = "sewa_state.json"


# --------------------------------------------------------------------------------------------------
# Data helpers


def _as_numpy_xy(data, max_examples):
    """Collects up to `max_examples` rows of `(x, y)` from arrays, a `tf.data.Dataset` or an iterable."""
    if isinstance(data, (tuple, list)) and len(data) >= 2 and hasattr(data[0], "shape"):
        x, y = np.asarray(data[0]), np.asarray(data[1])
        return x[:max_examples], y[:max_examples]
    xs, ys, n = [], [], 0
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("`selection_data` must yield `(x, y)` batches; received a batch without targets.")
        xb = np.asarray(keras.ops.convert_to_numpy(batch[0]))
        yb = np.asarray(keras.ops.convert_to_numpy(batch[1]))
        xs.append(xb)
        ys.append(yb)
        n += len(xb)
        if n >= max_examples:
            break
    if not xs:
        raise ValueError("`selection_data` is empty.")
    return np.concatenate(xs)[:max_examples], np.concatenate(ys)[:max_examples]


def _batchnorm_layers(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def update_batchnorm_statistics(model, data, batch_size=128, max_examples=None):
    """Recomputes the moving statistics of every `BatchNormalization` layer on `data`.

    Like `torch.optim.swa_utils.update_bn`: the moving mean and variance are reset and replaced by
    the plain average, over the batches of `data`, of each batch's mean and variance of the layer's
    inputs, computed by forward passes in training mode (`model(x, training=True)`, eagerly). During
    the pass each layer's `momentum` is set to `n / (n + 1)` for the `n`-th batch (0-based), which
    turns Keras' exponential update into a cumulative mean; it is restored afterwards. Nothing but
    the moving statistics changes (no optimizer step). Dropout layers run in training mode during
    the pass, as in PyTorch.

    Args:
        model: a built Keras model.
        data: `(x, y)` or `x` arrays, a `tf.data.Dataset` or an iterable of `(x, ...)` / `x` batches.
        batch_size: batch size used when `data` holds arrays; a positive int.
        max_examples: optional cap on the number of examples used.

    Returns:
        The number of batch-normalization layers updated (0 if the model has none).

    Raises:
        ValueError: if `batch_size` is not a positive int.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.callbacks.weight_averaging import update_batchnorm_statistics

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization()])
    x = np.random.rand(256, 4).astype("float32")
    update_batchnorm_statistics(model, x, batch_size=64)
    ```
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"argument `batch_size` must be a positive int; received {batch_size!r}.")
    layers = _batchnorm_layers(model)
    if not layers:
        return 0
    if isinstance(data, (tuple, list)) and data and hasattr(data[0], "shape"):
        x = np.asarray(data[0])
        batches = (
            x[i : i + batch_size]
            for i in range(0, len(x) if max_examples is None else min(len(x), max_examples), batch_size)
        )
    elif hasattr(data, "shape"):
        x = np.asarray(data)
        stop = len(x) if max_examples is None else min(len(x), max_examples)
        batches = (x[i : i + batch_size] for i in range(0, stop, batch_size))
    else:
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in data)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(tuple(layer.moving_mean.shape), "float32"))
        layer.moving_variance.assign(np.ones(tuple(layer.moving_variance.shape), "float32"))
    seen = 0
    try:
        for n, xb in enumerate(batches):
            for layer in layers:
                layer.momentum = n / (n + 1.0)
            model(keras.ops.convert_to_tensor(xb), training=True)
            seen += len(xb)
            if max_examples is not None and seen >= max_examples:
                break
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


# --------------------------------------------------------------------------------------------------
# Pure numpy pieces of the selection


def _project_capped_simplex(v, total, low, high):
    """Euclidean projection of `v` onto `{s : low <= s_i <= high, sum(s) = total}` (bisection on a shift)."""
    lo, hi = v.min() - high, v.max() - low
    for _ in range(60):
        tau = 0.5 * (lo + hi)
        if np.clip(v - tau, low, high).sum() > total:
            lo = tau
        else:
            hi = tau
    return np.clip(v - 0.5 * (lo + hi), low, high)


def _top_k(scores, k):
    """Indices of the `k` largest `scores`, ties broken towards later checkpoints; returned sorted."""
    order = np.lexsort((-np.arange(len(scores)), -np.asarray(scores)))
    return np.sort(order[:k])


# --------------------------------------------------------------------------------------------------
# Backend-specific loss and gradient at given weights (stateless: the model's variables are untouched)


class _Objective:
    """`F(w)`: the mean training loss of the model at weights `w`, in inference mode, and its gradient."""

    def __init__(self, model, loss, jit_compile=False):
        self.model = model
        self.jit_compile = jit_compile
        self.trainable = list(model.trainable_variables)
        self.non_trainable = list(model.non_trainable_variables)
        if loss is None:
            loss = getattr(model, "loss", None)
            if loss is None:
                raise ValueError("SelectiveWeightAveraging needs a loss: compile the model with one or pass `loss=`.")
            if isinstance(loss, (dict, list, tuple)):
                raise ValueError(
                    "the model has several losses; pass a single-output `loss=` to SelectiveWeightAveraging."
                )
        self.loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        self._loss_fn = None
        self._grad_fn = None

    def _value(self, tv, ntv, x, y):
        y_pred, _, losses = self.model.stateless_call(tv, ntv, x, training=False, return_losses=True)
        value = self.loss_fn(y, keras.ops.cast(y_pred, "float32"))
        value = keras.ops.mean(keras.ops.cast(value, "float32"))
        for extra in losses:
            value = value + keras.ops.cast(extra, "float32")
        return value

    def _build(self):
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            def loss_fn(tv, ntv, x, y):
                return self._value(tv, ntv, x, y)

            def grad_fn(tv, ntv, x, y):
                with tf.GradientTape() as tape:
                    tape.watch(tv)
                    value = self._value(tv, ntv, x, y)
                return value, tape.gradient(value, tv)

            self._loss_fn = tf.function(loss_fn, reduce_retracing=True, jit_compile=self.jit_compile)
            self._grad_fn = tf.function(grad_fn, reduce_retracing=True, jit_compile=self.jit_compile)
        elif backend == "jax":
            import jax

            self._loss_fn = jax.jit(self._value)
            self._grad_fn = jax.jit(jax.value_and_grad(self._value, argnums=0))
        else:
            self._loss_fn = self._value
            self._grad_fn = None

    def _tensors(self, trainable_values, non_trainable_values):
        tv = [keras.ops.convert_to_tensor(v, dtype=var.dtype) for v, var in zip(trainable_values, self.trainable)]
        ntv = [
            keras.ops.convert_to_tensor(v, dtype=var.dtype) for v, var in zip(non_trainable_values, self.non_trainable)
        ]
        return tv, ntv

    def mean_loss(self, trainable_values, non_trainable_values, x, y, batch_size=256):
        """Mean loss over `(x, y)` (weighted by batch sizes)."""
        if self._loss_fn is None:
            self._build()
        tv, ntv = self._tensors(trainable_values, non_trainable_values)
        total, count = 0.0, 0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            total += float(keras.ops.convert_to_numpy(self._loss_fn(tv, ntv, xb, yb))) * len(xb)
            count += len(xb)
        return total / count

    def value_and_grad(self, trainable_values, non_trainable_values, x, y):
        """Loss on one batch and its gradient w.r.t. the trainable weights (numpy arrays)."""
        if self._loss_fn is None:
            self._build()
        if self._grad_fn is None:
            raise NotImplementedError(
                f"strategy 'sewa' needs gradients, implemented for the TensorFlow and JAX backends; "
                f"the current backend is {keras.backend.backend()!r}."
            )
        tv, ntv = self._tensors(trainable_values, non_trainable_values)
        value, grads = self._grad_fn(tv, ntv, x, y)
        grads = [
            np.zeros(tuple(var.shape), np.float32)
            if g is None
            else np.asarray(keras.ops.convert_to_numpy(g), np.float32)
            for g, var in zip(grads, self.trainable)
        ]
        return float(keras.ops.convert_to_numpy(value)), grads


# --------------------------------------------------------------------------------------------------
# The callback


@keras.saving.register_keras_serializable(package="keras_wtrain")
class SelectiveWeightAveraging(keras.callbacks.Callback):
    """Selective weight averaging (SeWA, arXiv:2502.10119) with SWA, LAWA, EMA and random baselines.

    Paper: P. Wang, S. Hu, Z. Tao, G. Wang, D. Yu, L. Shen, Q. Zheng, D. Tao, "SeWA: Selective Weight
    Average via Probabilistic Masking", arXiv:2502.10119 (2025).

    **Trajectory.** Every `every_n_steps` optimizer steps from global step `start` on (the step count
    is the optimizer's `iterations`, so it survives resumption), the float weights of the model
    (trainable and non-trainable, e.g. batch-norm statistics) are copied to a host ring buffer of the
    last `T = num_checkpoints` checkpoints `w_1..w_T` (oldest first). Host memory is
    `T × (number of float weights) × 4` bytes (e.g. T=20 and a 1M-parameter model: 80 MB); with
    `checkpoint_dir` the buffer is a memory-mapped `.npy` file on disk instead, streamed by the OS.
    An EMA of all checkpoints since `start` (1 × model size) is kept alongside.

    **SeWA selection** (at `on_train_end`, and at each epoch end with `evaluate_every_epoch`):
    minimise the training loss `F` of a uniform average of `K` checkpoints,
    `min_m F(w(m))`, `w(m) = Σ m_i w_i / Σ m_i`, `m ∈ {0,1}^T`, `Σ m = K`, relaxed as
    `m_i ~ Bernoulli(s_i)` and sampled with the binary Concrete (Gumbel-softmax) estimator
    `m̃_i = σ((log s_i − log(1 − s_i) + log u_i − log(1 − u_i)) / t)`, `u_i ~ U(0, 1)`.
    Each of `selection_steps` iterations draws `M = num_samples` relaxed masks, each evaluated on its
    own minibatch of `selection_batch_size` examples of `selection_data`; the gradient of
    `F(w(m̃))` w.r.t. `s` is exact by the chain rule,
    `∂F/∂m̃_i = ⟨∇F(w(m̃)), w_i − w(m̃)⟩ / Σ m̃`, `∂m̃_i/∂s_i = m̃_i (1 − m̃_i) / (t s_i (1 − s_i))`,
    averaged over the `M` samples. `s` takes an Adam step (`selection_learning_rate`) and is projected
    onto `{s ∈ [ε, 1 − ε]^T : Σ s = K}`, starting from `s_i = K / T`. The final mask is the top-`K` of
    `s` (ties to later checkpoints), averaged uniformly. `F` is the compiled loss (plus
    regularisation losses) in inference mode. Non-trainable float weights (batch-norm statistics) are
    averaged with the same mask but treated as constants in the gradient. Cost: `selection_steps × M`
    forward+backward passes on `selection_batch_size` examples plus `O(T × model size)` host work per pass.

    **After averaging** the average is installed into the model (so a `.keras` file saved after `fit`
    holds it) and, with `update_batchnorm=True`, batch-normalization moving statistics are recomputed
    on `selection_data` (see `update_batchnorm_statistics`). Results are exposed as attributes
    `selected_indices` (positions in the buffer, oldest = 0), `selected_steps` (global steps),
    `probabilities` (the learned `s`, SeWA only), `average_loss` (`F` of the installed average on the
    selection examples, before the batch-norm update), `selection_time_s`, and in the logs passed to
    `on_train_end` / `on_epoch_end` (`averaged_loss`, and `averaged_val_*` with `evaluate_every_epoch`).

    **Resumption** (`keras.callbacks.BackupAndRestore`): at the first epoch of a `fit` the callback
    reads the optimizer's step and drops kept checkpoints taken *after* it (they belong to the
    interrupted, rolled-back segment). In memory (the same callback object re-used in the same
    process) the rest of the buffer is kept. With `checkpoint_dir`, the buffer, its steps and the EMA
    are files, so a new process with a new callback reloads them; without it, a new process starts an
    empty buffer from the resumed step on. The EMA cannot be rolled back: if it includes dropped
    checkpoints it is rebuilt from the kept ones.

    Args:
        k: number of checkpoints averaged by "sewa", "lawa" and "random" (`K`), a positive int ≤ `num_checkpoints`.
        num_checkpoints: number of checkpoints kept (`T`), a positive int; defaults to `2 * k`.
        start: global optimizer step at which checkpointing starts (an int ≥ 0).
        every_n_steps: optimizer steps between checkpoints, a positive int (default 1: every step; use
            the number of steps per epoch for one checkpoint per epoch).
        strategy: one of "sewa", "swa", "lawa", "ema", "random".
        temperature: Concrete temperature `t` > 0 (default 0.5).
        num_samples: relaxed masks per selection step (`M`), a positive int (default 2).
        selection_steps: selection iterations, a positive int (default 16).
        selection_learning_rate: Adam step size on `s`, > 0 (default 0.1).
        selection_batch_size: examples per relaxed-mask loss evaluation (default 32). The defaults
            cost 32 forward+backward passes on 32 examples (about 1,000 example-gradients, one epoch
            of a 1,000-example training set).
        selection_size: maximum number of `selection_data` examples used (default 2048).
        selection_data: training data `(x, y)` arrays, a `tf.data.Dataset` or an iterable of
            `(x, y)` batches; required by "sewa" and for the batch-norm update.
        update_batchnorm: recompute batch-norm statistics after installing an average.
        ema_decay: EMA decay per checkpoint in (0, 1); defaults to `1 − 2 / (k + 1)` (an EMA with
            the same centre of mass as a `k`-checkpoint window).
        evaluate_every_epoch: at each epoch end, evaluate the average of the current buffer on
            `validation_data` (temporarily installed, then the training weights are restored).
        validation_data: `(x, y)` arrays for `evaluate_every_epoch`.
        checkpoint_dir: directory for a disk-backed buffer (memory-mapped `.npy`) and its state.
        install: install the average at the end of training (default True); with False the model keeps
            its last weights and `average_weights()` can be called for any strategy.
        loss: loss for the selection objective; defaults to the model's compiled loss.
        seed: int seed of the Gumbel noise, the minibatch order and the "random" strategy.
        verbose: 0 or 1 (print a line per selection).

    Raises:
        ValueError: on an argument outside its range (named in the message).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.callbacks.weight_averaging import SelectiveWeightAveraging

    x, y = np.random.rand(256, 8).astype("float32"), np.random.randint(0, 3, 256)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sewa = SelectiveWeightAveraging(k=3, num_checkpoints=6, every_n_steps=4, selection_data=(x, y), seed=0)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[sewa])
    print(sewa.selected_steps, sewa.probabilities, sewa.average_loss)
    ```
    """

    _paper_arxiv = "2502.10119"

    def __init__(
        self,
        k=10,
        num_checkpoints=None,
        start=0,
        every_n_steps=1,
        strategy="sewa",
        temperature=0.5,
        num_samples=2,
        selection_steps=16,
        selection_learning_rate=0.1,
        selection_batch_size=32,
        selection_size=2048,
        selection_data=None,
        update_batchnorm=True,
        ema_decay=None,
        evaluate_every_epoch=False,
        validation_data=None,
        checkpoint_dir=None,
        install=True,
        loss=None,
        seed=None,
        verbose=0,
    ):
        super().__init__()
        if num_checkpoints is None:
            num_checkpoints = 2 * k if isinstance(k, int) else k
        _check_int("num_checkpoints", num_checkpoints, 1)
        _check_int("k", k, 1)
        if k > num_checkpoints:
            raise ValueError(f"argument `k` must be <= `num_checkpoints` ({num_checkpoints}); received k={k}.")
        _check_int("start", start, 0)
        _check_int("every_n_steps", every_n_steps, 1)
        if strategy not in STRATEGIES:
            raise ValueError(f"argument `strategy` must be one of {STRATEGIES}; received {strategy!r}.")
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"argument `temperature` must be a number > 0; received {temperature!r}.")
        _check_int("num_samples", num_samples, 1)
        _check_int("selection_steps", selection_steps, 1)
        if not isinstance(selection_learning_rate, (int, float)) or not selection_learning_rate > 0:
            raise ValueError(f"argument `selection_learning_rate` must be > 0; received {selection_learning_rate!r}.")
        _check_int("selection_batch_size", selection_batch_size, 1)
        _check_int("selection_size", selection_size, 1)
        if ema_decay is None:
            ema_decay = 1.0 - 2.0 / (k + 1.0)
        if not isinstance(ema_decay, (int, float)) or not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"argument `ema_decay` must be in [0, 1); received {ema_decay!r}.")
        if evaluate_every_epoch and validation_data is None:
            raise ValueError("argument `validation_data` is required when `evaluate_every_epoch=True`; received None.")
        if verbose not in (0, 1):
            raise ValueError(f"argument `verbose` must be 0 or 1; received {verbose!r}.")
        self.k = k
        self.num_checkpoints = num_checkpoints
        self.start = start
        self.every_n_steps = every_n_steps
        self.strategy = strategy
        self.temperature = float(temperature)
        self.num_samples = num_samples
        self.selection_steps = selection_steps
        self.selection_learning_rate = float(selection_learning_rate)
        self.selection_batch_size = selection_batch_size
        self.selection_size = selection_size
        self.selection_data = selection_data
        self.update_batchnorm = bool(update_batchnorm)
        self.ema_decay = float(ema_decay)
        self.evaluate_every_epoch = bool(evaluate_every_epoch)
        self.validation_data = validation_data
        self.checkpoint_dir = checkpoint_dir
        self.install = bool(install)
        self.loss = loss
        self.seed = seed
        self.verbose = verbose
        # Buffer state.
        self._buffer = None  # (T, P) float32, ring buffer
        self._slot_steps = None  # (T,) int64 global step per slot, -1 = empty
        self._ema = None
        self._ema_count = 0
        self._ema_step = -1
        self._layout = None  # [(variable index in trainable+non_trainable, shape, size)]
        self._step = None
        self._epoch_base = None
        self._objective = None
        self._data_xy = None
        # Results.
        self.selected_indices = None
        self.selected_steps = None
        self.probabilities = None
        self.average_loss = None
        self.selection_time_s = None
        self.objective_history = []

    # ------------------------------------------------------------------ buffer
    def _variables(self):
        return list(self.model.trainable_variables) + list(self.model.non_trainable_variables)

    def _make_layout(self):
        layout = []
        for i, v in enumerate(self._variables()):
            if keras.backend.is_float_dtype(v.dtype):
                shape = tuple(v.shape)
                layout.append((i, shape, int(np.prod(shape, dtype=np.int64))))
        return layout

    @property
    def model_size(self):
        """Number of float weights stored per checkpoint (`P`)."""
        return sum(size for _, _, size in self._layout) if self._layout else 0

    def _allocate(self):
        self._layout = self._make_layout()
        shape = (self.num_checkpoints, self.model_size)
        if self.checkpoint_dir:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            if self._load_from_disk(shape):
                return
            self._buffer = np.lib.format.open_memmap(
                os.path.join(self.checkpoint_dir, _BUFFER_FILE), mode="w+", dtype=np.float32, shape=shape
            )
        else:
            self._buffer = np.zeros(shape, np.float32)
        self._slot_steps = np.full(self.num_checkpoints, -1, np.int64)
        self._ema, self._ema_count, self._ema_step = None, 0, -1

    def _load_from_disk(self, shape):
        state_path = os.path.join(self.checkpoint_dir, _STATE_FILE)
        buffer_path = os.path.join(self.checkpoint_dir, _BUFFER_FILE)
        if not (os.path.exists(state_path) and os.path.exists(buffer_path)):
            return False
        with open(state_path) as f:
            state = json.load(f)
        if tuple(state["shape"]) != shape:
            warnings.warn(
                f"SelectiveWeightAveraging: checkpoint_dir holds a buffer of shape {tuple(state['shape'])}, "
                f"the model needs {shape}; starting a new buffer.",
                stacklevel=2,
            )
            return False
        self._buffer = np.lib.format.open_memmap(buffer_path, mode="r+")
        self._slot_steps = np.asarray(state["slot_steps"], np.int64)
        self._ema_count = int(state["ema_count"])
        self._ema_step = int(state.get("ema_step", -1))
        ema_path = os.path.join(self.checkpoint_dir, _EMA_FILE)
        self._ema = np.load(ema_path) if self._ema_count and os.path.exists(ema_path) else None
        return True

    def _save_state(self):
        if not self.checkpoint_dir:
            return
        self._buffer.flush()
        if self._ema is not None:
            np.save(os.path.join(self.checkpoint_dir, _EMA_FILE), self._ema)
        state = {
            "shape": list(self._buffer.shape),
            "slot_steps": self._slot_steps.tolist(),
            "ema_count": self._ema_count,
            "ema_step": getattr(self, "_ema_step", -1),
        }
        tmp = os.path.join(self.checkpoint_dir, _STATE_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, os.path.join(self.checkpoint_dir, _STATE_FILE))

    def _sync_jax_state(self):
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()

    def _current_flat(self):
        variables = self._variables()
        parts = [
            np.asarray(keras.ops.convert_to_numpy(variables[i]), np.float32).reshape(-1) for i, _, _ in self._layout
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def current_weights(self):
        """The model's current float weights, flattened in the buffer's layout (a `(P,)` float32 array).

        Returns:
            numpy array, usable with `install_weights` to go back to these weights later.

        Example:

        ```python
        # after fit(..., callbacks=[sewa]):  w = sewa.current_weights(); ...; sewa.install_weights(w)
        ```
        """
        self._sync_jax_state()
        if self._layout is None:
            self._layout = self._make_layout()
        return self._current_flat()

    def _record(self, step):
        self._sync_jax_state()
        flat = self._current_flat()
        empty = np.flatnonzero(self._slot_steps < 0)
        slot = int(empty[0]) if len(empty) else int(np.argmin(self._slot_steps))
        self._buffer[slot] = flat
        self._slot_steps[slot] = step
        if self._ema is None:
            self._ema = flat.astype(np.float32).copy()
        else:
            self._ema *= self.ema_decay
            self._ema += (1.0 - self.ema_decay) * flat
        self._ema_count += 1
        self._ema_step = step
        self._save_state()

    def _drop_after(self, step):
        """Drops checkpoints taken after global `step` (a rolled-back segment after a restore)."""
        future = self._slot_steps > step
        if not future.any():
            return 0
        self._slot_steps[future] = -1
        if getattr(self, "_ema_step", -1) > step:
            # The EMA saw dropped checkpoints: rebuild it from the kept ones.
            self._ema, self._ema_count = None, 0
            for slot in self._ordered_slots():
                flat = np.asarray(self._buffer[slot], np.float32)
                self._ema = (
                    flat.copy() if self._ema is None else self.ema_decay * self._ema + (1 - self.ema_decay) * flat
                )
                self._ema_count += 1
            self._ema_step = int(self._slot_steps.max())
        self._save_state()
        return int(future.sum())

    def _ordered_slots(self):
        filled = np.flatnonzero(self._slot_steps >= 0)
        return filled[np.argsort(self._slot_steps[filled], kind="stable")]

    @property
    def num_stored(self):
        """Number of checkpoints currently kept."""
        return 0 if self._slot_steps is None else int((self._slot_steps >= 0).sum())

    @property
    def checkpoint_steps(self):
        """Global steps of the kept checkpoints, oldest first (numpy int array)."""
        if self._slot_steps is None:
            return np.zeros(0, np.int64)
        return self._slot_steps[self._ordered_slots()].copy()

    def checkpoints(self):
        """The kept checkpoints as a `(num_stored, P)` float32 array, oldest first (a copy).

        Returns:
            numpy array; row `i` is the flattened float weights of checkpoint `i`, in the order of
            `model.trainable_variables + model.non_trainable_variables` (float ones only).

        Example:

        ```python
        # after fit(..., callbacks=[sewa]):  w = sewa.checkpoints(); w.mean(0) is the SWA average
        ```
        """
        if self._buffer is None:
            return np.zeros((0, 0), np.float32)
        return np.asarray(self._buffer[self._ordered_slots()], np.float32)

    # ------------------------------------------------------------------ averaging
    def _unflatten(self, flat):
        """Full lists (trainable, non_trainable) of numpy values: `flat` for floats, current values otherwise."""
        variables = self._variables()
        values = [None] * len(variables)
        offset = 0
        for i, shape, size in self._layout:
            values[i] = (
                flat[offset : offset + size].reshape(shape).astype(keras.backend.standardize_dtype(variables[i].dtype))
            )
            offset += size
        for i, v in enumerate(variables):
            if values[i] is None:
                values[i] = np.asarray(keras.ops.convert_to_numpy(v))
        n = len(self.model.trainable_variables)
        return values[:n], values[n:]

    def _mask_average(self, weights_matrix, mask):
        mask = np.asarray(mask, np.float64)
        return (mask @ weights_matrix / mask.sum()).astype(np.float32)

    def _data(self):
        if self._data_xy is None:
            if self.selection_data is None:
                raise ValueError(
                    "argument `selection_data` is required by strategy 'sewa' and for `average_loss`; received None."
                )
            self._data_xy = _as_numpy_xy(self.selection_data, self.selection_size)
        return self._data_xy

    def _get_objective(self):
        if self._objective is None:
            self._objective = _Objective(self.model, self.loss)
        return self._objective

    def objective(self, indices, weights_matrix=None):
        """Training loss `F` of the uniform average of the kept checkpoints at `indices`.

        Evaluated on all selection examples (up to `selection_size` of `selection_data`), in inference
        mode, with the model's variables untouched. This is the quantity SeWA minimises.

        Args:
            indices: positions in the kept buffer (0 = oldest), a sequence of ints.
            weights_matrix: optional `(T, P)` array of checkpoints (defaults to `checkpoints()`).

        Returns:
            The mean loss as a Python float.

        Example:

        ```python
        # after fit(..., callbacks=[sewa]):  sewa.objective(sewa.selected_indices) == sewa.average_loss
        ```
        """
        w = self.checkpoints() if weights_matrix is None else weights_matrix
        mask = np.zeros(len(w))
        mask[np.asarray(indices, int)] = 1.0
        x, y = self._data()
        tv, ntv = self._unflatten(self._mask_average(w, mask))
        return self._get_objective().mean_loss(tv, ntv, x, y)

    def weights_loss(self, flat_weights):
        """Training loss `F` at any flat weights (e.g. the EMA, or `current_weights()`), model untouched.

        Args:
            flat_weights: a `(P,)` array in the buffer's layout.

        Returns:
            The mean loss over the selection examples, a Python float.

        Example:

        ```python
        # after fit(..., callbacks=[sewa]):  sewa.weights_loss(sewa.average_weights("ema")[0])
        ```
        """
        x, y = self._data()
        tv, ntv = self._unflatten(np.asarray(flat_weights, np.float32))
        return self._get_objective().mean_loss(tv, ntv, x, y)

    def select(self, weights_matrix=None):
        """Runs SeWA's mask learning on the kept checkpoints.

        Args:
            weights_matrix: optional `(T, P)` array of checkpoints (defaults to `checkpoints()`).

        Returns:
            `(indices, probabilities)`: the `k` chosen positions (sorted, 0 = oldest) and the learned
            `s` (numpy float array of length `T`).

        Raises:
            ValueError: if fewer than `k` checkpoints are kept or `selection_data` is missing.

        Example:

        ```python
        # after fit(..., callbacks=[sewa]):  indices, s = sewa.select()
        ```
        """
        w = self.checkpoints() if weights_matrix is None else np.asarray(weights_matrix, np.float32)
        t_count = len(w)
        if t_count < self.k:
            raise ValueError(f"SeWA needs at least k={self.k} checkpoints; {t_count} are kept.")
        x, y = self._data()
        objective = self._get_objective()
        rng = np.random.default_rng(self.seed)
        k, temp, eps = self.k, self.temperature, 1e-3
        s = np.full(t_count, k / t_count)
        if k == t_count:
            self.objective_history = []
            return np.arange(t_count), s
        m1, m2 = np.zeros(t_count), np.zeros(t_count)
        beta1, beta2 = 0.9, 0.999
        n, bs = len(x), min(self.selection_batch_size, len(x))
        order, cursor = rng.permutation(n), 0
        history = []
        n_trainable = len(self.model.trainable_variables)
        float_trainable = [j for j, (i, _, _) in enumerate(self._layout) if i < n_trainable]
        offsets = np.cumsum([0] + [size for _, _, size in self._layout])
        for it in range(1, self.selection_steps + 1):
            grad_s = np.zeros(t_count)
            losses = []
            for _ in range(self.num_samples):
                if cursor + bs > n:
                    order, cursor = rng.permutation(n), 0
                idx = order[cursor : cursor + bs]
                cursor += bs
                u = rng.uniform(1e-6, 1 - 1e-6, t_count)
                z = (np.log(s) - np.log1p(-s) + np.log(u) - np.log1p(-u)) / temp
                m = 1.0 / (1.0 + np.exp(-z))
                m_sum = max(m.sum(), 1e-6)
                avg = m.astype(np.float32) @ w / np.float32(m_sum)
                tv, ntv = self._unflatten(avg)
                value, grads = objective.value_and_grad(tv, ntv, x[idx], y[idx])
                g = np.zeros_like(avg)
                for j, grad in zip(float_trainable, _grads_for_float(grads, self._layout, n_trainable)):
                    g[offsets[j] : offsets[j + 1]] = grad.reshape(-1)
                dm = (w @ g - avg @ g).astype(np.float64) / m_sum  # ∂F/∂m̃_i
                grad_s += dm * m * (1 - m) / temp / (s * (1 - s))
                losses.append(value)
            grad_s /= self.num_samples
            history.append(float(np.mean(losses)))
            m1 = beta1 * m1 + (1 - beta1) * grad_s
            m2 = beta2 * m2 + (1 - beta2) * grad_s**2
            step = self.selection_learning_rate * (m1 / (1 - beta1**it)) / (np.sqrt(m2 / (1 - beta2**it)) + 1e-8)
            s = _project_capped_simplex(s - step, k, eps, 1 - eps)
        self.objective_history = history
        return _top_k(s, k), s

    def average_weights(self, strategy=None, indices=None):
        """The averaged float weights for a strategy, from the kept checkpoints (nothing is installed).

        Args:
            strategy: "sewa", "swa", "lawa", "ema" or "random"; defaults to the callback's `strategy`.
            indices: optional explicit positions to average uniformly (overrides `strategy`).

        Returns:
            `(flat_weights, info)`: a `(P,)` float32 array and a dict with `indices` (None for "ema"),
            `steps`, `probabilities` (SeWA only) and `selection_time_s`.

        Raises:
            ValueError: on an unknown strategy or fewer than `k` kept checkpoints.

        Example:

        ```python
        # after fit(..., callbacks=[sewa]):  flat, info = sewa.average_weights("lawa")
        ```
        """
        strategy = self.strategy if strategy is None else strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"argument `strategy` must be one of {STRATEGIES}; received {strategy!r}.")
        w = self.checkpoints()
        if len(w) == 0:
            raise ValueError("no checkpoint has been kept yet (check `start` and `every_n_steps`).")
        steps = self.checkpoint_steps
        info = {"indices": None, "steps": None, "probabilities": None, "selection_time_s": 0.0}
        begin = time.perf_counter()
        if indices is None:
            if strategy == "ema":
                info["selection_time_s"] = time.perf_counter() - begin
                info["steps"] = steps.tolist()
                return self._ema.astype(np.float32).copy(), info
            if strategy != "swa" and len(w) < self.k:
                raise ValueError(f"strategy {strategy!r} needs at least k={self.k} checkpoints; {len(w)} are kept.")
            if strategy == "swa":
                indices = np.arange(len(w))
            elif strategy == "lawa":
                indices = np.arange(len(w) - self.k, len(w))
            elif strategy == "random":
                indices = np.sort(np.random.default_rng(self.seed).choice(len(w), self.k, replace=False))
            else:
                indices, info["probabilities"] = self.select(w)
        indices = np.asarray(indices, int)
        mask = np.zeros(len(w))
        mask[indices] = 1.0
        info["selection_time_s"] = time.perf_counter() - begin
        info["indices"] = indices.tolist()
        info["steps"] = steps[indices].tolist()
        return self._mask_average(w, mask), info

    def install_weights(self, flat_weights, update_batchnorm=None):
        """Assigns flat averaged weights to the model, then (optionally) recomputes batch-norm statistics.

        Args:
            flat_weights: a `(P,)` array from `average_weights` or a row of `checkpoints()`.
            update_batchnorm: defaults to the callback's `update_batchnorm`.

        Returns:
            The number of batch-normalization layers updated.

        Example:

        ```python
        # after fit(..., callbacks=[sewa]):  sewa.install_weights(sewa.average_weights("swa")[0])
        ```
        """
        self._sync_jax_state()
        tv, ntv = self._unflatten(np.asarray(flat_weights, np.float32))
        for variable, value in zip(self._variables(), tv + ntv):
            variable.assign(value)
        update_batchnorm = self.update_batchnorm if update_batchnorm is None else update_batchnorm
        if not update_batchnorm or not _batchnorm_layers(self.model):
            return 0
        if self.selection_data is None:
            warnings.warn(
                "SelectiveWeightAveraging: the model has BatchNormalization layers but no `selection_data` was "
                "given, so their statistics were not recomputed for the averaged weights.",
                stacklevel=2,
            )
            return 0
        x, _ = self._data()
        return update_batchnorm_statistics(self.model, x, batch_size=max(self.selection_batch_size, 32))

    # ------------------------------------------------------------------ callback hooks
    def on_train_begin(self, logs=None):
        if self.strategy == "sewa" and self.selection_data is None:
            raise ValueError("argument `selection_data` is required by strategy 'sewa'; received None.")
        if self._layout is None or self._layout != self._make_layout():
            self._allocate()
        self._step = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._step is None:
            # Read after every on_train_begin ran (BackupAndRestore restores there).
            self._sync_jax_state()
            self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self._drop_after(self._step)
        self._epoch_base = self._step

    def on_train_batch_end(self, batch, logs=None):
        previous = self._step
        self._step = self._epoch_base + batch + 1
        # A checkpoint is due at steps start, start + every_n_steps, ...; with steps_per_execution > 1
        # several steps pass per call: take one if any due step was crossed.
        if self._step >= self.start:
            due_now = (self._step - self.start) // self.every_n_steps
            due_before = (previous - self.start) // self.every_n_steps if previous >= self.start else -1
            if due_now > due_before:
                self._record(self._step)

    def on_epoch_end(self, epoch, logs=None):
        if self._step is not None:
            self._epoch_base = self._step
        if not self.evaluate_every_epoch or logs is None:
            return
        needed = 1 if self.strategy in ("swa", "ema") else self.k
        if self.num_stored < needed:
            return
        self._sync_jax_state()
        saved = [np.asarray(keras.ops.convert_to_numpy(v)) for v in self._variables()]
        try:
            flat, info = self.average_weights()
            self.install_weights(flat)
            x_val, y_val = self.validation_data[0], self.validation_data[1]
            results = self.model.evaluate(x_val, y_val, verbose=0, return_dict=True)
            for name, value in results.items():
                logs[f"averaged_val_{name}"] = float(value)
        finally:
            for variable, value in zip(self._variables(), saved):
                variable.assign(value)

    def on_train_end(self, logs=None):
        if self.num_stored == 0:
            warnings.warn(
                "SelectiveWeightAveraging: no checkpoint was taken (training ended before `start`?); "
                "the model keeps its last weights.",
                stacklevel=2,
            )
            return
        if not self.install:
            return
        needed = 1 if self.strategy in ("swa", "ema") else self.k
        if self.num_stored < needed:
            warnings.warn(
                f"SelectiveWeightAveraging: only {self.num_stored} checkpoints kept, strategy {self.strategy!r} "
                f"needs {needed}; the model keeps its last weights.",
                stacklevel=2,
            )
            return
        flat, info = self.average_weights()
        self.selected_indices = info["indices"]
        self.selected_steps = info["steps"]
        self.probabilities = info["probabilities"]
        self.selection_time_s = info["selection_time_s"]
        if self.selection_data is not None:
            tv, ntv = self._unflatten(flat)
            x, y = self._data()
            self.average_loss = self._get_objective().mean_loss(tv, ntv, x, y)
        self.install_weights(flat)
        if logs is not None:
            if self.average_loss is not None:
                logs["averaged_loss"] = self.average_loss
            logs["averaging_selection_time_s"] = self.selection_time_s
        if self.verbose:
            print(
                f"SelectiveWeightAveraging[{self.strategy}]: steps {self.selected_steps}, "
                f"loss {self.average_loss}, selection {self.selection_time_s:.2f}s"
            )

    def get_config(self):
        """Constructor arguments, except data (`selection_data`, `validation_data`) and `loss` objects.

        Returns:
            A JSON-serialisable dict.

        Example:

        ```python
        from keras_wtrain.callbacks.weight_averaging import SelectiveWeightAveraging

        cb = SelectiveWeightAveraging(k=3, num_checkpoints=5)
        assert SelectiveWeightAveraging.from_config(cb.get_config()).get_config() == cb.get_config()
        ```
        """
        return {
            "k": self.k,
            "num_checkpoints": self.num_checkpoints,
            "start": self.start,
            "every_n_steps": self.every_n_steps,
            "strategy": self.strategy,
            "temperature": self.temperature,
            "num_samples": self.num_samples,
            "selection_steps": self.selection_steps,
            "selection_learning_rate": self.selection_learning_rate,
            "selection_batch_size": self.selection_batch_size,
            "selection_size": self.selection_size,
            "update_batchnorm": self.update_batchnorm,
            "ema_decay": self.ema_decay,
            "evaluate_every_epoch": False,
            "checkpoint_dir": self.checkpoint_dir,
            "install": self.install,
            "loss": self.loss if isinstance(self.loss, str) or self.loss is None else keras.losses.serialize(self.loss),
            "seed": self.seed,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        """Builds the callback from `get_config()` output (data arguments must be set again).

        Args:
            config: dict from `get_config`.

        Returns:
            A new `SelectiveWeightAveraging`.

        Example:

        ```python
        from keras_wtrain.callbacks.weight_averaging import SelectiveWeightAveraging

        cb = SelectiveWeightAveraging.from_config(SelectiveWeightAveraging(k=2).get_config())
        ```
        """
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)


def _grads_for_float(grads, layout, n_trainable):
    """The gradients (one per trainable variable) of the float trainable variables, in layout order."""
    return [grads[i] for i, _, _ in layout if i < n_trainable]


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"argument `{name}` must be an int >= {minimum}; received {value!r}.")


SeWA = SelectiveWeightAveraging
