"""ShadowWeights (WAS): step-time overhead, the default Dense transform, and a desire mode (DOM) that serves.

1. Median train-step time (batch 128, `jit_compile=True`, interleaved repeats in one process) of the MNIST CNN,
   plain vs `authors_wrap` (both 3x3 convs augmented with the crop-and-stretch) without and with DOM training
   (`desire_probability`), and of the MLP, plain vs every Dense wrapped with the `transform="auto"` default.
2. The weight-space transform of `transform="auto"` for Dense kernels: the MLP on a 1,000-example MNIST-5k subset,
   plain vs every Dense wrapped with `GaussianNoise(0.1)`, `MultiplicativeNoise(0.1)` or `DropConnect(0.5)`;
   3 seeds, paired differences with 95 % t-intervals.
3. AOM and DOM test accuracy of the CNN and `resnet-small` (MNIST-5k, 1,000 training examples, 16 epochs of
   Adam 1e-3 with cosine decay to 0, batch 50, 3 seeds), every k >= 3 convolution wrapped (`authors_wrap`):
   "old", `desire_probability=0` with DOM evaluated as before (no batch-norm re-estimation for DOM), against
   DOM training with `desire_probability` 0.25 and 0.5 and batch-norm statistics re-estimated for DOM
   (`set_weight_mode(model, "desire", data=x_train)`). On `resnet-small` AOM is evaluated after re-estimating
   the statistics for AOM (what `keras-wtrain compare` does). Differences are paired by seed: DOM - AOM of the
   same model (target >= -1.5 points), AOM against the plain model and against the old AOM. The plain model's
   validation accuracy per epoch shows whether the budget is long enough. The model after the last epoch is
   evaluated once; nothing is selected on the test split.
4. The folded DOM model vs the folded AOM model (plain Keras layers, `fold_layers`), seed 0, largest
   `desire_probability`: multiply-adds of the augmented convolutions and median `predict` time (XLA, CPU).

Writes results/shadow_weights.{json,md} (`--quick`: shadow_weights_quick.*, fewer seeds and epochs, a few
minutes; `--smoke`: seconds, no files, for the tests).

    python benchmarks/shadow_weights.py [--quick | --smoke]
"""

import argparse
import functools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import interleaved_step_times  # noqa: E402
from common import interval  # noqa: E402
from common import write_results  # noqa: E402

from keras_wtrain._core.batchnorm import batchnorm_layers  # noqa: E402
from keras_wtrain._core.kernel_reparametrization import fold_layers  # noqa: E402
from keras_wtrain.comparison.datasets import load_mnist5k  # noqa: E402
from keras_wtrain.comparison.models import build_model  # noqa: E402
from keras_wtrain.shadow_weights.modes import authors_wrap  # noqa: E402
from keras_wtrain.shadow_weights.modes import desire_sparsity  # noqa: E402
from keras_wtrain.shadow_weights.modes import set_weight_mode  # noqa: E402
from keras_wtrain.shadow_weights.wrapper import ShadowWeights  # noqa: E402

TARGET_RATIO = 1.10
TARGET_DOM_GAP = 0.015  # DOM within 1.5 points of the same model's AOM
BATCH_SIZE = 50
DENSE_TRANSFORMS = {
    "gaussian_noise": "GaussianNoise(0.1)",
    "multiplicative_noise": "MultiplicativeNoise(0.1)",
    "dropconnect": "DropConnect(0.5)",
}
CONFIGS = {
    # train_size, epochs, seeds, desire probabilities, models, overhead (steps, repeats), predict repeats, jit
    "full": dict(
        train_size=1000,
        epochs=16,
        seeds=3,
        probabilities=(0.25, 0.5),
        models=("cnn", "resnet-small"),
        overhead=(20, 7),
        predict_repeats=7,
        jit=True,
        test_size=None,
    ),
    "quick": dict(
        train_size=500,
        epochs=4,
        seeds=2,
        probabilities=(0.5,),
        models=("cnn", "resnet-small"),
        overhead=(5, 3),
        predict_repeats=3,
        jit=True,
        test_size=None,
    ),
    "smoke": dict(
        train_size=50,
        epochs=1,
        seeds=1,
        probabilities=(0.5,),
        models=("cnn", "resnet-small"),
        overhead=None,
        predict_repeats=1,
        jit=False,
        test_size=100,
    ),
}


def _dense_wrap(transform="auto"):
    def wrap(layer):
        if isinstance(layer, keras.layers.Dense):
            return ShadowWeights(layer, transform=transform)
        return layer

    return wrap


def _compile(model, schedule_steps=None, jit=True):
    rate = 1e-3 if schedule_steps is None else keras.optimizers.schedules.CosineDecay(1e-3, schedule_steps)
    model.compile(
        keras.optimizers.Adam(rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit,
    )
    return model


def overhead(x, y, steps, repeats, probability):
    results = {}
    for kind, wraps in (
        (
            "cnn",
            {
                "shadow": (authors_wrap, "authors_wrap (crop)"),
                "shadow_dom": (
                    functools.partial(authors_wrap, desire_probability=probability),
                    f"authors_wrap (crop), desire_probability={probability}",
                ),
            },
        ),
        ("mlp", {"shadow": (_dense_wrap(), "every Dense, transform='auto' (GaussianNoise(0.1))")}),
    ):
        models = {}
        keras.utils.set_random_seed(0)
        models["plain"] = _compile(build_model(kind, (28, 28, 1), 10))
        for name, (wrap, _) in wraps.items():
            keras.utils.set_random_seed(0)
            models[name] = _compile(build_model(kind, (28, 28, 1), 10, wrap=wrap))
        times = interleaved_step_times(models, x, y, 128, steps, repeats)
        for name, (_, label) in wraps.items():
            ratio = times[name]["paired_ratio"]
            results[f"{kind}|{name}"] = {
                "model": kind,
                "wrap": label,
                "plain_s": times["plain"]["median_s"],
                "shadow_s": times[name]["median_s"],
                "ratio": ratio,
                "meets_target": ratio <= TARGET_RATIO,
            }
    return results


def dom_inference(model, x, repeats):
    """AOM vs DOM of one trained model, both folded to plain Keras layers: counted multiply-adds and predict time.

    Multiply-adds per example of the wrapped convolutions (`desire_sparsity`: what DOM executes, its kept
    taps run as a smaller convolution); median wall time of `predict` over `x` (batch 128, XLA), the two
    folded models interleaved; the largest output difference between the folded DOM model and the wrapper.
    """
    import time

    set_weight_mode(model, "accuracy")
    aom = fold_layers(model)
    set_weight_mode(model, "desire")
    dom = fold_layers(model)
    rows = desire_sparsity(model)
    fold_error = float(np.max(np.abs(np.asarray(dom.predict(x[:256], verbose=0)) - model.predict(x[:256], verbose=0))))
    times = {"aom": [], "dom": []}
    for folded in (aom, dom):
        folded.compile(jit_compile=True)
        folded.predict(x, batch_size=128, verbose=0)  # compiles
    for _ in range(repeats):
        for name, folded in (("aom", aom), ("dom", dom)):
            begin = time.perf_counter()
            folded.predict(x, batch_size=128, verbose=0)
            times[name].append(time.perf_counter() - begin)
    return {
        "layers": rows,
        "macs_plain": int(sum(r["macs_plain"] for r in rows)),
        "macs_dom_executed": int(sum(r["macs_desire_executed"] for r in rows)),
        "aom_predict_s": float(np.median(times["aom"])),
        "dom_predict_s": float(np.median(times["dom"])),
        "examples": len(x),
        "fold_max_abs_error": fold_error,
    }


def _accuracy(model, x, y):
    return float(model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)["accuracy"])


def _stat(values):
    mean, half = interval(values)
    return {"mean": mean, "ci95": half, "n": len(values), "all": [float(v) for v in values]}


def _train(kind, wrap, data, config, seed, validation=False):
    keras.utils.set_random_seed(seed)
    input_shape = data.x_train.shape[1:]
    model = build_model(kind, input_shape, 10, wrap=wrap)
    steps = config["epochs"] * -(-len(data.y_train) // BATCH_SIZE)
    _compile(model, steps, config["jit"])
    begin = time.perf_counter()
    history = model.fit(
        data.x_train,
        data.y_train,
        epochs=config["epochs"],
        batch_size=BATCH_SIZE,
        verbose=0,
        validation_data=(data.x_val, data.y_val) if validation else None,
    )
    return model, time.perf_counter() - begin, history.history


def dense_transform(data, config):
    """MLP: plain vs every Dense wrapped with each candidate weight-space transform, paired by seed."""
    runs = {name: [] for name in ("plain", *DENSE_TRANSFORMS)}
    for seed in range(config["seeds"]):
        for name in runs:
            wrap = None if name == "plain" else _dense_wrap(name)
            model, _, _ = _train("mlp", wrap, data, config, seed)
            runs[name].append(_accuracy(model, data.x_test, data.y_test))
    out = {"plain": _stat(runs["plain"])}
    for name in DENSE_TRANSFORMS:
        out[name] = {
            "test": _stat(runs[name]),
            "diff_vs_plain": _stat(np.subtract(runs[name], runs["plain"])),
        }
    return out


def dom_study(data, config):
    """Per model and seed: plain; old shadow (no DOM training, no BN re-estimation for DOM); DOM training."""
    rows = []
    for kind in config["models"]:
        for seed in range(config["seeds"]):
            model, seconds, history = _train(kind, None, data, config, seed, validation=True)
            rows.append(
                {
                    "model": kind,
                    "seed": seed,
                    "arm": "plain",
                    "train_s": seconds,
                    "train_accuracy": float(history["accuracy"][-1]),
                    "val_accuracy_curve": [float(v) for v in history["val_accuracy"]],
                    "aom": _accuracy(model, data.x_test, data.y_test),
                }
            )
            for probability in (0.0, *config["probabilities"]):
                wrap = functools.partial(authors_wrap, desire_probability=probability)
                model, seconds, history = _train(kind, wrap, data, config, seed)
                has_bn = bool(batchnorm_layers(model))
                row = {"model": kind, "seed": seed, "arm": f"p{probability}", "train_s": seconds}
                row["train_accuracy"] = float(history["accuracy"][-1])
                # DOM as the library evaluated it before: the statistics training collected, no re-estimation.
                set_weight_mode(model, "desire")
                row["dom_no_bn"] = _accuracy(model, data.x_test, data.y_test)
                if has_bn:
                    begin = time.perf_counter()
                    set_weight_mode(model, "desire", data=data.x_train, batch_size=BATCH_SIZE)
                    row["bn_reestimate_s"] = time.perf_counter() - begin
                    row["dom_bn"] = _accuracy(model, data.x_test, data.y_test)
                    set_weight_mode(model, "accuracy", data=data.x_train, batch_size=BATCH_SIZE)
                else:
                    row["dom_bn"] = row["dom_no_bn"]
                    set_weight_mode(model, "accuracy")
                row["aom"] = _accuracy(model, data.x_test, data.y_test)
                rows.append(row)
    return rows


def summarize(rows, probabilities):
    summary = {}
    for kind in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == kind]
        plain = {r["seed"]: r for r in mine if r["arm"] == "plain"}
        old = {r["seed"]: r for r in mine if r["arm"] == "p0.0"}
        summary[kind] = {
            "plain": {
                "aom": _stat([r["aom"] for r in plain.values()]),
                "train_accuracy": _stat([r["train_accuracy"] for r in plain.values()]),
                "val_accuracy_curve_mean": np.mean([r["val_accuracy_curve"] for r in plain.values()], axis=0).tolist(),
            }
        }
        for probability in (0.0, *probabilities):
            arm = f"p{probability}"
            runs = sorted((r for r in mine if r["arm"] == arm), key=lambda r: r["seed"])
            entry = {key: _stat([r[key] for r in runs]) for key in ("aom", "dom_no_bn", "dom_bn", "train_accuracy")}
            entry["dom_bn_minus_aom"] = _stat([r["dom_bn"] - r["aom"] for r in runs])
            entry["dom_no_bn_minus_aom"] = _stat([r["dom_no_bn"] - r["aom"] for r in runs])
            entry["aom_minus_plain"] = _stat([r["aom"] - plain[r["seed"]]["aom"] for r in runs])
            entry["train_s"] = _stat([r["train_s"] for r in runs])
            if probability > 0.0:
                entry["aom_minus_old_aom"] = _stat([r["aom"] - old[r["seed"]]["aom"] for r in runs])
                entry["dom_bn_minus_old_dom"] = _stat([r["dom_bn"] - old[r["seed"]]["dom_no_bn"] for r in runs])
                entry["meets_target"] = entry["dom_bn_minus_aom"]["mean"] >= -TARGET_DOM_GAP
            summary[kind][arm] = entry
    return summary


def inference_study(data, config, probability):
    """Seed 0 of each model trained with `desire_probability`: the folded DOM model vs the folded AOM model."""
    out = {}
    for kind in config["models"]:
        wrap = functools.partial(authors_wrap, desire_probability=probability)
        model, _, _ = _train(kind, wrap, data, config, 0)
        if batchnorm_layers(model):
            set_weight_mode(model, "desire", data=data.x_train, batch_size=BATCH_SIZE)
        out[kind] = dom_inference(model, data.x_test, config["predict_repeats"])
    return out


def _pts(stat):
    if np.isnan(stat["ci95"]):
        return f"{100 * stat['mean']:+.2f}"
    low, high = 100 * (stat["mean"] - stat["ci95"]), 100 * (stat["mean"] + stat["ci95"])
    return f"{100 * stat['mean']:+.2f} [{low:+.2f}, {high:+.2f}]"


def _acc(stat):
    return f"{100 * stat['mean']:.2f}"


def run(mode="full"):
    """Runs the benchmark in `mode` ("full", "quick" or "smoke"); returns the results dict."""
    config = CONFIGS[mode]
    data = load_mnist5k(train_size=config["train_size"])
    if config["test_size"]:
        data = data._replace(x_test=data.x_test[: config["test_size"]], y_test=data.y_test[: config["test_size"]])
    probability = max(config["probabilities"])
    results = {"mode": mode, "config": {k: v for k, v in config.items()}, "batch_size": BATCH_SIZE}
    if config["overhead"]:
        steps, repeats = config["overhead"]
        full = load_mnist5k()
        results["overhead"] = overhead(full.x_train, full.y_train, steps, repeats, probability)
    results["dense_transform"] = dense_transform(data, config)
    rows = dom_study(data, config)
    results["dom_runs"] = rows
    results["dom"] = summarize(rows, config["probabilities"])
    results["inference"] = inference_study(data, config, probability)
    return results


def table(results):
    config = results["config"]
    lines = []
    if "overhead" in results:
        lines += [
            "Train-step time, batch 128, `jit_compile=True`, interleaved (ratio: median over rounds of the paired "
            "ratio to plain):",
            "",
            "| model | augmented | plain step (ms) | ShadowWeights step (ms) | ratio | target |",
            "|---|---|---|---|---|---|",
        ]
        for e in results["overhead"].values():
            lines.append(
                f"| {e['model']} | {e['wrap']} | {1e3 * e['plain_s']:.2f} | {1e3 * e['shadow_s']:.2f} | "
                f"{e['ratio']:.3f} | ≤ {TARGET_RATIO:.2f} {'✓' if e['meets_target'] else '✗'} |"
            )
        lines.append("")
    dense = results["dense_transform"]
    lines += [
        f"Dense transform of `transform='auto'`: MLP, every Dense wrapped, MNIST-5k {config['train_size']} examples, "
        f"{config['epochs']} epochs, {config['seeds']} seeds; test accuracy and paired difference to plain "
        "(points, 95 % t-interval):",
        "",
        "| transform | test accuracy (%) | Δ vs plain (points) |",
        "|---|---|---|",
        f"| plain MLP | {_acc(dense['plain'])} | |",
    ]
    for name, label in DENSE_TRANSFORMS.items():
        e = dense[name]
        lines.append(f"| {label} | {_acc(e['test'])} | {_pts(e['diff_vs_plain'])} |")
    lines += [
        "",
        f"AOM and DOM test accuracy (%), MNIST-5k {config['train_size']} examples, {config['epochs']} epochs "
        f"(Adam 1e-3, cosine decay), {config['seeds']} seeds, `authors_wrap` (crop) with `desire_probability` p. "
        "'old': p = 0 and DOM on the statistics training collected (as before this change); 'DOM+BN': DOM after "
        "`set_weight_mode(model, 'desire', data=x_train)` (the CNN has no batch norm: the same as DOM). "
        "resnet-small's AOM is after re-estimating the statistics for AOM. Differences in points with 95 % "
        f"t-intervals, paired by seed; target DOM - AOM ≥ -{100 * TARGET_DOM_GAP:.1f}:",
        "",
        "| model | p | AOM | DOM (no BN re-est.) | DOM+BN | DOM+BN − AOM | AOM − plain | AOM − old AOM | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, entries in results["dom"].items():
        lines.append(f"| {kind} | plain | {_acc(entries['plain']['aom'])} | | | | | | |")
        for arm, e in entries.items():
            if arm == "plain":
                continue
            p = float(arm[1:])
            old = "old: " if p == 0.0 else ""
            target = "" if p == 0.0 else ("✓" if e["meets_target"] else "✗")
            lines.append(
                f"| {kind} | {old}{p} | {_acc(e['aom'])} | {_acc(e['dom_no_bn'])} | {_acc(e['dom_bn'])} | "
                f"{_pts(e['dom_bn_minus_aom'])} | {_pts(e['aom_minus_plain'])} | "
                f"{_pts(e['aom_minus_old_aom']) if p else ''} | {target} |"
            )
    lines += ["", "Plain model, validation accuracy per epoch (mean over seeds), to show the budget suffices:", ""]
    for kind, entries in results["dom"].items():
        curve = ", ".join(f"{v:.3f}" for v in entries["plain"]["val_accuracy_curve_mean"])
        lines.append(f"- {kind}: {curve} (final training accuracy {_acc(entries['plain']['train_accuracy'])} %)")
    lines += [
        "",
        "AOM vs DOM at inference, seed 0 trained with the largest p, both folded to plain Keras layers "
        "(`fold_layers`): multiply-adds per example of the augmented convolutions (DOM runs each shifted 3×3 "
        "kernel as a 2×2 convolution) and median `predict` time over the test images (batch 128, XLA, CPU, "
        "interleaved):",
        "",
        "| model | AOM multiply-adds | DOM multiply-adds | fraction | AOM predict (ms) | DOM predict (ms) | ratio | "
        "fold max abs error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, e in results["inference"].items():
        lines.append(
            f"| {kind} | {e['macs_plain']:,} | {e['macs_dom_executed']:,} | "
            f"{e['macs_dom_executed'] / e['macs_plain']:.3f} | {1e3 * e['aom_predict_s']:.1f} | "
            f"{1e3 * e['dom_predict_s']:.1f} | {e['dom_predict_s'] / e['aom_predict_s']:.3f} | "
            f"{e['fold_max_abs_error']:.1e} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer seeds, examples and epochs (minutes)")
    group.add_argument("--smoke", action="store_true", help="seconds, no jit, writes no files (for the tests)")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    begin = time.perf_counter()
    results = run(mode)
    results["wall_s"] = time.perf_counter() - begin
    lines = table(results)
    if mode == "smoke":
        print("\n".join(lines))
    else:
        write_results("shadow_weights" if mode == "full" else "shadow_weights_quick", results, lines)
    return results


if __name__ == "__main__":
    main()
