"""ShadowWeights (WAS): step-time overhead vs plain Keras and AOM/DOM accuracy vs baseline.

1. Median train-step time of the MNIST CNN, plain vs `authors_wrap` (both 3x3 convs augmented
   with the authors' shift or crop), and of the MLP, plain vs every Dense wrapped with DropConnect(0.5);
   batch 128, `jit_compile=True`, interleaved repeats in one process.
2. Test accuracy over seeds of the CNN trained on a 1,000-example MNIST-5k subset: plain
   baseline vs shadow weights (`authors_wrap`, the authors' 50/50 shift-or-crop; the full run also
   with the shift only and the crop only) evaluated in AOM (plain weights) and DOM (fixed
   shadow kernels).
   The model after the last epoch is evaluated once; nothing is selected on the test split.

Writes results/shadow_weights.{json,md}.

    python benchmarks/shadow_weights.py [--quick]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import interleaved_step_times  # noqa: E402
from common import write_results  # noqa: E402

from keras_wtrain._core.kernel_reparametrization import fold_layers  # noqa: E402
from keras_wtrain.comparison.datasets import load_mnist5k  # noqa: E402
from keras_wtrain.comparison.models import build_model  # noqa: E402
from keras_wtrain.shadow_weights.modes import authors_wrap  # noqa: E402
from keras_wtrain.shadow_weights.modes import desire_sparsity  # noqa: E402
from keras_wtrain.shadow_weights.modes import set_weight_mode  # noqa: E402
from keras_wtrain.shadow_weights.wrapper import ShadowWeights  # noqa: E402

TARGET_RATIO = 1.10


def _dropconnect_wrap(layer):
    if isinstance(layer, keras.layers.Dense):
        return ShadowWeights(layer, transform="dropconnect", seed=0)
    return layer


def _compile(model):
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    return model


def overhead(x, y, steps, repeats):
    results = {}
    for kind, wrap, label in (
        ("cnn", authors_wrap, "authors_wrap (shift or crop)"),
        ("mlp", _dropconnect_wrap, "DropConnect(0.5)"),
    ):
        models = {}
        for name, w in (("plain", None), ("shadow", wrap)):
            keras.utils.set_random_seed(0)
            models[name] = _compile(build_model(kind, (28, 28, 1), 10, wrap=w))
        times = interleaved_step_times(models, x, y, 128, steps, repeats)
        ratio = times["shadow"]["median_s"] / times["plain"]["median_s"]
        results[kind] = {
            "wrap": label,
            "plain_s": times["plain"]["median_s"],
            "shadow_s": times["shadow"]["median_s"],
            "ratio": ratio,
            "meets_target": ratio <= TARGET_RATIO,
        }
    return results


VARIANTS = {
    "choice": "authors_wrap default: 50/50 shift or crop (authors' ResNet setting)",
    "shift": "authors_wrap, shift 0.3 only (authors' VGG variant)",
    "crop": "authors_wrap, crop-and-stretch only (authors' default VGG)",
}


def _variant_wrap(variant):
    from keras_wtrain.shadow_weights import transforms

    transform = {
        "choice": None,
        "shift": transforms.RandomTranslate(0.3),
        "crop": transforms.RandomResizedCrop(),
    }[variant]
    return lambda layer: authors_wrap(layer, transform=transform)


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


def accuracy(seeds, epochs, variants, repeats):
    data = load_mnist5k(train_size=1000)
    runs = {"baseline": []}
    for variant in variants:
        runs[f"{variant}_aom"] = []
        runs[f"{variant}_dom"] = []
    sparsity = inference = None
    for seed in range(seeds):
        for name in ("baseline", *variants):
            keras.utils.set_random_seed(seed)
            wrap = None if name == "baseline" else _variant_wrap(name)
            model = _compile(build_model("cnn", (28, 28, 1), 10, wrap=wrap))
            model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0)
            acc = float(model.evaluate(data.x_test, data.y_test, verbose=0)[1])
            if name == "baseline":
                runs["baseline"].append(acc)
                continue
            runs[f"{name}_aom"].append(acc)
            set_weight_mode(model, "desire")
            runs[f"{name}_dom"].append(float(model.evaluate(data.x_test, data.y_test, verbose=0)[1]))
            if sparsity is None and (name == "shift" or variants == ("choice",)):
                sparsity = desire_sparsity(model)
            if inference is None and name == "choice":
                inference = dom_inference(model, data.x_test, repeats)
    summary = {
        name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "all": v}
        for name, v in runs.items()
    }
    return {
        "train_size": len(data.x_train),
        "epochs": epochs,
        "seeds": seeds,
        "accuracy": summary,
        "dom_sparsity_seed0": sparsity,
        "dom_inference_seed0": inference,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps, repeats, seeds and epochs")
    args = parser.parse_args(argv)
    steps, repeats = (8, 5) if args.quick else (20, 7)
    seeds, epochs = (2, 4) if args.quick else (5, 10)
    variants = ("choice",) if args.quick else tuple(VARIANTS)
    data = load_mnist5k()
    results = {
        "quick": args.quick,
        "batch_size": 128,
        "steps": steps,
        "repeats": repeats,
        "overhead": overhead(data.x_train, data.y_train, steps, repeats),
        "accuracy": accuracy(seeds, epochs, variants, repeats),
    }
    lines = [
        "| model | augmented | plain step (ms) | ShadowWeights step (ms) | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for kind, e in results["overhead"].items():
        lines.append(
            f"| {kind} | {e['wrap']} | {1e3 * e['plain_s']:.2f} | {1e3 * e['shadow_s']:.2f} | {e['ratio']:.3f} | "
            f"≤ {TARGET_RATIO:.2f} {'✓' if e['meets_target'] else '✗'} |"
        )
    acc = results["accuracy"]
    lines += [
        "",
        f"Test accuracy, CNN, MNIST-5k {acc['train_size']}-example subset, {acc['epochs']} epochs, "
        f"{acc['seeds']} seeds (mean ± std; last epoch, no test-set selection):",
        "",
        "| model | test accuracy | per seed |",
        "|---|---|---|",
    ]
    for name, summary in acc["accuracy"].items():
        if name == "baseline":
            label = "plain CNN"
        else:
            variant, mode = name.rsplit("_", 1)
            label = f"{VARIANTS[variant]}, {mode.upper()}"
        per_seed = ", ".join(f"{v:.3f}" for v in summary["all"])
        lines.append(f"| {label} | {summary['mean']:.4f} ± {summary['std']:.4f} | {per_seed} |")
    if acc["dom_sparsity_seed0"]:
        which = "shift-only" if "shift" in variants else "default"
        lines += ["", f"DOM kernels of the {which} model, seed 0:", ""]
        for row in acc["dom_sparsity_seed0"]:
            lines.append(
                f"- {row['name']}: non-zero {row['nonzero_desire']}/{row['entries']}, executed kernel "
                f"{tuple(row['desire_kernel_shape'])}, multiply-adds per example executed "
                f"{row['macs_desire_executed']:,} vs {row['macs_plain']:,} plain"
            )
    inference = acc["dom_inference_seed0"]
    if inference:
        ratio = inference["macs_dom_executed"] / inference["macs_plain"]
        lines += [
            "",
            "AOM vs DOM at inference, the default model of seed 0, both folded to plain Keras layers "
            f"(`fold_layers`; folded DOM vs wrapper max |difference| {inference['fold_max_abs_error']:.1e}): "
            "multiply-adds per example of the augmented convolutions, counted (DOM runs each shifted 3×3 kernel "
            "as a 2×2 convolution), and median `predict` time over the "
            f"{inference['examples']} test images (batch 128, XLA, interleaved):",
            "",
            "| mode | multiply-adds per example (augmented convs) | predict time (ms) |",
            "|---|---|---|",
            f"| AOM (plain weights) | {inference['macs_plain']:,} | {1e3 * inference['aom_predict_s']:.1f} |",
            f"| DOM (fixed one-tap shift) | {inference['macs_dom_executed']:,} ({ratio:.3f} of AOM) | "
            f"{1e3 * inference['dom_predict_s']:.1f} ({inference['dom_predict_s'] / inference['aom_predict_s']:.3f}"
            " of AOM) |",
        ]
    write_results("shadow_weights", results, lines)
    return results


if __name__ == "__main__":
    main()
