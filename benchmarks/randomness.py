"""Loss noise and gradient dropout (arXiv:2404.03992): step-time overhead and an MNIST-5k accuracy grid.

1. Median train-step time of the MLP (784-512-512-10) and the MNIST CNN, plain `keras.Model` with Adam vs
   `keras_wtrain.randomness.wrap(..., loss_noise=LossNoise())` (loss noise in `compute_loss`) and vs the plain
   model compiled with `GradientDropoutOptimizer(Adam, GradientDropout())` (p = 0.1, 8-bit masks),
   batch 128, `jit_compile=True`, interleaved repeats in one process, wall time and process CPU time (all
   threads; other jobs on a shared machine disturb it much less). Targets: loss noise <= 1.02, gradient
   dropout <= 1.10.
2. Test accuracy of the CNN on MNIST-5k (Adam 1e-3, batch 64, 3 epochs) over 5 seeds for a small grid of
   sigma and p (`--quick`: 1000 training examples, 2 epochs, 2 seeds, 3 configurations).

Writes results/randomness.{json,md}.

    python benchmarks/randomness.py [--quick]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import time_fit_steps  # noqa: E402
from common import write_results  # noqa: E402

from keras_wtrain.comparison.datasets import load_mnist5k  # noqa: E402
from keras_wtrain.comparison.models import build_model  # noqa: E402
from keras_wtrain.randomness.gradient_dropout import GradientDropoutOptimizer  # noqa: E402
from keras_wtrain.randomness.settings import GradientDropout  # noqa: E402
from keras_wtrain.randomness.settings import LossNoise  # noqa: E402
from keras_wtrain.randomness.wrapping import wrap  # noqa: E402

TARGETS = {"loss_noise": 1.02, "gradient_dropout": 1.10}
VARIANTS = ("plain", "loss_noise", "gradient_dropout")


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def timing_models(kind):
    models = {}
    for name in VARIANTS:
        keras.utils.set_random_seed(0)
        model = build_model(kind, (28, 28, 1), 10)
        optimizer = keras.optimizers.Adam(1e-3)
        if name == "loss_noise":
            model = wrap(model, seed=0, loss_noise=LossNoise())
        elif name == "gradient_dropout":
            optimizer = GradientDropoutOptimizer(optimizer, GradientDropout(), seed=0)
        model.compile(optimizer, _loss(), jit_compile=True)
        models[name] = model
    return models


def interleaved_times(models, x, y, batch_size, steps, repeats):
    """`common.interleaved_step_times`, also recording the process CPU time per step.

    Returns:
        dict name -> {"all_s": wall seconds per step of each repeat, "cpu_s": CPU seconds per step}.
    """
    for model in models.values():
        time_fit_steps(model, x, y, batch_size, 2)  # compile and warm up
    n = batch_size * steps
    times = {name: {"all_s": [], "cpu_s": []} for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            wall, cpu = time.perf_counter(), time.process_time()
            model.fit(x[:n], y[:n], batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
            times[name]["all_s"].append((time.perf_counter() - wall) / steps)
            times[name]["cpu_s"].append((time.process_time() - cpu) / steps)
    return times


def accuracy_run(data, kwargs, seed, epochs):
    keras.utils.set_random_seed(seed)
    model = build_model("cnn", (28, 28, 1), data.num_classes)
    if kwargs:
        model = wrap(model, seed=seed, **kwargs)
    # No XLA here: compiling each of the grid's models would dominate the run time; accuracy does not depend on it.
    model.compile(keras.optimizers.Adam(1e-3), _loss(), metrics=["accuracy"], jit_compile=False)
    model.fit(data.x_train, data.y_train, batch_size=64, epochs=epochs, verbose=0)
    return float(model.evaluate(data.x_test, data.y_test, verbose=0)[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps, seeds and grid points (< 2 min)")
    args = parser.parse_args(argv)
    # Many short interleaved repeats: on a shared machine the median of few long ones is mostly load noise.
    steps, repeats = ({"mlp": 8, "cnn": 3}, 5) if args.quick else ({"mlp": 20, "cnn": 5}, 15)
    data = load_mnist5k()
    x, y = data.x_train, data.y_train
    results = {"batch_size": 128, "steps": steps, "repeats": repeats, "quick": args.quick, "timing": {}, "accuracy": {}}
    for kind in ("mlp", "cnn"):
        times = interleaved_times(timing_models(kind), x, y, 128, steps[kind], repeats)
        plain = times["plain"]
        results["timing"][kind] = {
            name: {
                "median_s": statistics.median(t["all_s"]),
                "ratio": statistics.median(t["all_s"]) / statistics.median(plain["all_s"]),
                "min_s": min(t["all_s"]),
                # least disturbed repeat of each: robust to bursts of load
                "min_ratio": min(t["all_s"]) / min(plain["all_s"]),
                "all_s": t["all_s"],
                "cpu_median_s": statistics.median(t["cpu_s"]),
                "cpu_ratio": statistics.median(t["cpu_s"]) / statistics.median(plain["cpu_s"]),
                "cpu_s": t["cpu_s"],
            }
            for name, t in times.items()
        }

    if args.quick:
        seeds, epochs = [0, 1], 2
        data = load_mnist5k(train_size=1000)
        grid = {"plain": {}, "sigma=0.3": {"loss_noise": 0.3}, "p=0.1": {"gradient_dropout": 0.1}}
    else:
        seeds, epochs = [0, 1, 2, 3, 4], 3
        grid = {"plain": {}}
        grid.update({f"sigma={s}": {"loss_noise": s} for s in (0.3, 1.0)})
        grid.update({f"p={p}": {"gradient_dropout": p} for p in (0.05, 0.1, 0.2)})
    start = time.perf_counter()
    for label, kwargs in grid.items():
        accs = [accuracy_run(data, kwargs, seed, epochs) for seed in seeds]
        results["accuracy"][label] = {
            "test_accuracy": accs,
            "mean": statistics.mean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        }
    results["accuracy_setup"] = {
        "model": "cnn",
        "train_examples": len(data.x_train),
        "test_examples": len(data.x_test),
        "epochs": epochs,
        "seeds": seeds,
        "optimizer": "Adam(1e-3)",
        "batch_size": 64,
        "seconds": time.perf_counter() - start,
    }

    lines = [
        "Step time (median of interleaved repeats, Adam, batch 128, `jit_compile=True`), ratio to plain `keras.Model`:",
        "",
        "(median of the repeats; in brackets the ratio of the fastest repeats, which load bursts disturb least,",
        "and the ratio of median process CPU times, which other jobs on the machine disturb least;",
        "✓ when the fastest-repeat ratio meets the target)",
        "",
        "| model | plain (ms) | loss noise σ=0.3 ratio | gradient dropout p=0.1 ratio |",
        "|---|---|---|---|",
    ]
    for kind, t in results["timing"].items():
        cells = []
        for name in ("loss_noise", "gradient_dropout"):
            ratio, best, cpu = t[name]["ratio"], t[name]["min_ratio"], t[name]["cpu_ratio"]
            mark = "✓" if best <= TARGETS[name] else "✗"
            cells.append(f"{ratio:.3f} ({best:.3f}; CPU {cpu:.3f}; target ≤ {TARGETS[name]:.2f} {mark})")
        lines.append(f"| {kind} | {1e3 * t['plain']['median_s']:.2f} | {cells[0]} | {cells[1]} |")
    setup = results["accuracy_setup"]
    lines += [
        "",
        f"MNIST-5k CNN test accuracy ({setup['train_examples']} training / {setup['test_examples']} test examples, "
        f"{epochs} epochs, Adam 1e-3, batch 64, seeds {seeds}):",
        "",
        "| configuration | mean | std | per seed |",
        "|---|---|---|---|",
    ]
    for label, a in results["accuracy"].items():
        per_seed = ", ".join(f"{v:.4f}" for v in a["test_accuracy"])
        lines.append(f"| {label} | {a['mean']:.4f} | {a['std']:.4f} | {per_seed} |")
    write_results("randomness", results, lines)
    return results


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
