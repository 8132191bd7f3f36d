"""Optimum shifting (arXiv:2405.14111) on MNIST-5k, converged regime: does the mechanism happen, and does it help?

For each model kind and seed, two trainings from the same initial weights and data order:
plain Keras, and the same with `OptimumShifting()` at its defaults (a shift after every epoch,
training continuing from the shifted point, and one at the end; batch sized from the live input rank;
loss guard). Trained to convergence (training accuracy >= 99 %). Paired over seeds, with 95 %
confidence intervals (Student t): test accuracy, full training-set loss, the shifted kernel's norm
‖V‖, the Hutchinson Hessian trace of the loss w.r.t. the Dense layer *below* the shifted one
(`keras_wtrain.diagnostics.hessian_trace`, 20 probes, 512 training examples) and filter-normalised
sharpness (`diagnostics.sharpness`, radius 0.05, 10 directions, the same 512 examples). Also the
mechanism itself (shifts kept by the guard, relative change of the live weights per shift) and the
costs: one shift and one 20-probe trace estimate, each in training epochs.
Writes results/optimum_shifting.{json,md}.

    python benchmarks/optimum_shifting.py [--quick]
"""

import argparse
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import interval  # noqa: E402
from common import write_results  # noqa: E402

from keras_wtrain.comparison.datasets import load_mnist5k  # noqa: E402
from keras_wtrain.comparison.models import build_model  # noqa: E402
from keras_wtrain.diagnostics import hessian_trace  # noqa: E402
from keras_wtrain.diagnostics import mean_loss  # noqa: E402
from keras_wtrain.diagnostics import sharpness  # noqa: E402
from keras_wtrain.optimum_shifting.callback import OptimumShifting  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


class TimedShifting(OptimumShifting):
    """`OptimumShifting` that records the wall time of each shift (for the cost table)."""

    def shift(self, epoch="end"):
        start = time.perf_counter()
        info = super().shift(epoch)
        self.shift_seconds = getattr(self, "shift_seconds", []) + [time.perf_counter() - start]
        return info


def train(kind, seed, data, epochs, shifting):
    keras.utils.set_random_seed(seed)
    model = build_model(kind, (28, 28, 1), data.num_classes)
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"], jit_compile=True)
    timer = EpochTimer()
    callbacks = [timer] + ([shifting] if shifting is not None else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # guard roll-backs are counted from the history instead
        history = model.fit(
            data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0, callbacks=callbacks, shuffle=True
        )
    return model, timer, history


def measure(model, data, subset, num_probes, seed):
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    below, last = dense[-2], dense[-1]
    xs, ys = data.x_train[subset], data.y_train[subset]
    start = time.perf_counter()
    trace = hessian_trace(model, (xs, ys), variables=below, num_probes=num_probes, seed=seed)
    trace_s = time.perf_counter() - start
    sharp = sharpness(model, (xs, ys), radius=0.05, num_samples=10, seed=seed)
    logits = model.predict(data.x_test, verbose=0, batch_size=500)
    return {
        "test_acc": float(np.mean(np.argmax(logits, -1) == data.y_test)),
        "train_loss": mean_loss(model, (data.x_train, data.y_train)),
        "kernel_norm": float(np.linalg.norm(last.kernel.numpy())),
        "hessian_trace_below": trace["trace"],
        "hessian_trace_below_ci95": trace["ci95"],
        "sharpness_mean": sharp["mean"],
        "sharpness_max": sharp["max"],
        "trace_seconds": trace_s,
    }


def run(kind, seed, data, epochs, num_probes):
    subset = np.random.default_rng(1000 + seed).choice(len(data.x_train), 512, replace=False)
    model, timer, history = train(kind, seed, data, epochs, None)
    baseline = measure(model, data, subset, num_probes, seed)
    baseline["train_acc"] = float(history.history["accuracy"][-1])
    shifting = TimedShifting(data=(data.x_train, data.y_train), seed=seed)
    model, shifted_timer, history = train(kind, seed, data, epochs, shifting)
    shifted = measure(model, data, subset, num_probes, seed)
    shifted["train_acc"] = float(history.history["accuracy"][-1])
    epoch_s = statistics.median(timer.times[1:])  # the first epoch includes compilation
    last = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1].name
    changes = [h["layers"][last]["relative_change_live"] for h in shifting.history if h["kept"]]
    mechanism = {
        "shifts": len(shifting.history),
        "kept": int(sum(h["kept"] for h in shifting.history)),
        "relative_change_live_mean": float(np.mean(changes)) if changes else 0.0,
        "examples_per_shift": [h["layers"][last].get("examples_per_system") for h in shifting.history],
        "live_rank": shifting.history[-1]["layers"][last].get("live_rank"),
        "shift_over_epoch": statistics.median(shifting.shift_seconds[1:] or shifting.shift_seconds) / epoch_s,
        "trace20_over_epoch": baseline["trace_seconds"] / epoch_s * (20 / num_probes),
        "epoch_s": epoch_s,
    }
    return {"baseline": baseline, "optimum_shift": shifted, "mechanism": mechanism}


KEYS = (
    ("test_acc", "test accuracy (%)", 100.0, 2),
    ("train_loss", "train loss", 1.0, 5),
    ("kernel_norm", "‖V‖ (last Dense)", 1.0, 3),
    ("hessian_trace_below", "tr H (layer below)", 1.0, 4),
    ("sharpness_mean", "sharpness (mean, r=0.05)", 1.0, 5),
)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="MLP only, 2 seeds, 8 epochs, 5 probes")
    args = parser.parse_args()
    if args.quick:
        kinds, seeds, epochs, probes = ("mlp",), (0, 1), 8, 5
    else:
        kinds, seeds, epochs, probes = ("cnn", "mlp"), range(5), 20, 20
    data = load_mnist5k(train_size=1000)
    runs = {kind: [run(kind, seed, data, epochs, probes) for seed in seeds] for kind in kinds}
    lines = [
        f"MNIST-5k, 1,000 training examples, {epochs} epochs Adam 1e-3 batch 64, {len(list(seeds))} seeds; "
        "`OptimumShifting()` defaults (shift after every epoch and at the end, guard 2 % + 0.001). "
        "Cells: mean over seeds; Δ = shifted − baseline, paired by seed, with its 95 % CI. "
        "Hessian trace and sharpness on 512 training examples.",
        "",
        "| model | measure | baseline | optimum shifting | Δ (95 % CI) |",
        "|---|---|---|---|---|",
    ]
    summary = {}
    for kind, results in runs.items():
        summary[kind] = {}
        for key, label, scale, digits in KEYS:
            base = [r["baseline"][key] * scale for r in results]
            shifted = [r["optimum_shift"][key] * scale for r in results]
            diff, ci = interval(np.subtract(shifted, base))
            summary[kind][key] = {
                "baseline": float(np.mean(base)),
                "optimum_shift": float(np.mean(shifted)),
                "diff": diff,
                "ci95": ci,
            }
            lines.append(
                f"| {kind} | {label} | {np.mean(base):.{digits}f} | {np.mean(shifted):.{digits}f} "
                f"| {diff:+.{digits}f} (±{ci:.{digits}f}) |"
            )
        train_acc = min(min(r["baseline"]["train_acc"], r["optimum_shift"]["train_acc"]) for r in results)
        summary[kind]["min_train_acc"] = train_acc
    lines += [
        "",
        "| model | min train acc | shifts kept / done | live-weight change per kept shift | examples per shift "
        "(live rank) | one shift / epoch | 20-probe trace / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, results in runs.items():
        mech = [r["mechanism"] for r in results]
        examples = sorted({e for m in mech for e in m["examples_per_shift"] if e})
        lines.append(
            f"| {kind} | {100 * summary[kind]['min_train_acc']:.2f} % "
            f"| {sum(m['kept'] for m in mech)} / {sum(m['shifts'] for m in mech)} "
            f"| {np.mean([m['relative_change_live_mean'] for m in mech]):.3f} "
            f"| {', '.join(map(str, examples))} ({mech[0]['live_rank']}) "
            f"| {np.median([m['shift_over_epoch'] for m in mech]):.3f} "
            f"| {np.median([m['trace20_over_epoch'] for m in mech]):.2f} |"
        )
        summary[kind]["mechanism"] = {
            "kept": sum(m["kept"] for m in mech),
            "shifts": sum(m["shifts"] for m in mech),
            "shift_over_epoch": float(np.median([m["shift_over_epoch"] for m in mech])),
            "trace20_over_epoch": float(np.median([m["trace20_over_epoch"] for m in mech])),
        }
    write_results(
        "optimum_shifting",
        {"quick": args.quick, "epochs": epochs, "seeds": list(seeds), "summary": summary, "runs": runs},
        lines,
    )


if __name__ == "__main__":
    main()
