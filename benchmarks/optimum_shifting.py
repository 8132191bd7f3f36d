"""Optimum shifting (arXiv:2405.14111) on MNIST-5k: baseline vs shifted, flatness, and the cost of one shift.

For each model kind and seed: train on a 1,000-example MNIST-5k subset (`jit_compile=True`), then
apply `OptimumShifting` at the end of training (the same trajectory, so the baseline is the model
just before the shift) with the default settings and with the paper-like 100-example batch.
Reports test accuracy, full-train-set loss, the last kernel's norm, the Hutchinson Hessian trace of
the loss w.r.t. the Dense layer below the shifted one (TF double backprop, the same probes before
and after) on 100 random training examples and, as a ratio after/before, on 100 examples of the
shifting batch, and the wall time of one shift relative to one training epoch.
Writes results/optimum_shifting.{json,md}.

    python benchmarks/optimum_shifting.py [--quick]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import write_results  # noqa: E402

from keras_wtrain.callbacks.optimum_shifting import OptimumShifting  # noqa: E402
from keras_wtrain.data import load_mnist5k  # noqa: E402
from keras_wtrain.models import build_model  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
VARIANTS = {"default (batch 256)": {}, "batch 100": {"batch_size": 100}}


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times = getattr(self, "times", []) + [time.perf_counter() - self._start]


def hessian_trace(model, variable, x, y, probes):
    total = 0.0
    for v in probes:
        v = tf.constant(v, dtype=variable.dtype)
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = LOSS(y, model(x, training=False))
            grad_dot_v = tf.reduce_sum(inner.gradient(loss, variable) * v)
        total += float(tf.reduce_sum(outer.gradient(grad_dot_v, variable) * v))
    return total / len(probes)


def measure(model, data, below, last, probes, xh, yh):
    logits = model.predict(data.x_test, verbose=0, batch_size=500)
    return {
        "test_acc": float(np.mean(np.argmax(logits, -1) == data.y_test)),
        "train_loss": float(LOSS(data.y_train, model.predict(data.x_train, verbose=0, batch_size=500))),
        "kernel_norm": float(np.linalg.norm(last.kernel.numpy())),
        "hessian_trace_below": hessian_trace(model, below.kernel, xh, yh, probes),
    }


def batch_trace(model, data, below, probes, idx):
    """Hessian trace w.r.t. the layer below on (the first 100 examples of) the shifting batch."""
    idx = idx[:100]
    return hessian_trace(model, below.kernel, data.x_train[idx], data.y_train[idx], probes)


def run(kind, seed, data, epochs, num_probes):
    keras.utils.set_random_seed(seed)
    model = build_model(kind, (28, 28, 1), data.num_classes)
    model.compile(keras.optimizers.Adam(1e-3), LOSS, jit_compile=True)
    timer = EpochTimer()
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0, callbacks=[timer])
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    below, last = dense[-2], dense[-1]
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(data.x_train), 100, replace=False)
    xh, yh = data.x_train[idx], data.y_train[idx]
    probes = [rng.choice([-1.0, 1.0], size=below.kernel.shape) for _ in range(num_probes)]
    weights = model.get_weights()
    result = {"baseline": measure(model, data, below, last, probes, xh, yh)}
    epoch_s = statistics.median(timer.times[1:])  # the first epoch includes compilation
    for name, kwargs in VARIANTS.items():
        shifting = OptimumShifting(data=(data.x_train, data.y_train), seed=seed, **kwargs)
        shifting.set_model(model)
        shift_s = []
        for _ in range(2):  # the first shift also pays for the first eager call of the model
            model.set_weights(weights)
            start = time.perf_counter()
            shifting.shift()
            shift_s.append(time.perf_counter() - start)
        first_s, shift_s = shift_s
        shift_idx = shifting.history[-1]["layers"][last.name]["batch_indices"]
        shifted_weights = model.get_weights()
        model.set_weights(weights)
        on_batch_before = batch_trace(model, data, below, probes, shift_idx)
        model.set_weights(shifted_weights)
        on_batch_after = batch_trace(model, data, below, probes, shift_idx)
        result[name] = {
            **measure(model, data, below, last, probes, xh, yh),
            "shift_over_epoch": shift_s / epoch_s,
            "first_shift_over_epoch": first_s / epoch_s,
            "batch_trace_ratio": on_batch_after / on_batch_before,
        }
    result["epoch_s"] = epoch_s
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="MLP only, 2 seeds, 10 epochs")
    args = parser.parse_args()
    kinds, seeds, epochs, probes = (("mlp",), (0, 1), 10, 5) if args.quick else (("mlp", "cnn"), range(5), 20, 10)
    data = load_mnist5k(train_size=1000)
    runs = {kind: [run(kind, seed, data, epochs, probes) for seed in seeds] for kind in kinds}
    names = ["baseline", *VARIANTS]
    lines = [
        f"MNIST-5k, 1,000 training examples, {epochs} epochs Adam 1e-3, {len(list(seeds))} seeds "
        "(mean ± std); shift applied once at the end of training.",
        "",
        "| model | variant | test acc | train loss | ‖V‖ last | tr H below | tr H below, shifting batch, after/before "
        "| shift / epoch (first) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for kind, results in runs.items():
        for name in names:
            rows = [r[name] for r in results]
            stats = {
                key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows]))) for key in rows[0]
            }
            summary[f"{kind}/{name}"] = stats
            timing = ratio = "-"
            if "shift_over_epoch" in stats:
                timing = f"{stats['shift_over_epoch'][0]:.3f} ({stats['first_shift_over_epoch'][0]:.3f})"
                ratio = f"{stats['batch_trace_ratio'][0]:.3f} ± {stats['batch_trace_ratio'][1]:.3f}"
            lines.append(
                f"| {kind} | {name} | {stats['test_acc'][0]:.4f} ± {stats['test_acc'][1]:.4f} "
                f"| {stats['train_loss'][0]:.5f} | {stats['kernel_norm'][0]:.3f} "
                f"| {stats['hessian_trace_below'][0]:.4g} ± {stats['hessian_trace_below'][1]:.2g} "
                f"| {ratio} | {timing} |"
            )
    write_results(
        "optimum_shifting",
        {"quick": args.quick, "epochs": epochs, "seeds": list(seeds), "summary": summary, "runs": runs},
        lines,
    )


if __name__ == "__main__":
    main()
