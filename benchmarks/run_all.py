"""Every benchmark of keras-wtrain, gathered into `benchmarks/results/` and the docs' Results page.

1. Overhead: median train-step time of each per-step technique (weight normalization, shadow
   weights, loss noise, gradient dropout) against plain Keras, same process, interleaved rounds,
   `jit_compile=True`, the MNIST CNN and MLP at batch 128 -> `results/overhead.{json,md}`.
2. Each technique's own benchmark script (`benchmarks/<name>.py`, accuracy over seeds and one-off
   costs of the callbacks), each in a fresh process -> `results/<name>.{json,md}`.
3. `keras-wtrain compare` with its defaults on MNIST-5k -> `results/compare/` (table + plots).
4. `docs/results.md`: machine, versions and date, every table, the plots, and a plain statement
   of which techniques changed test accuracy and by how much (paired 95% confidence intervals).

    python benchmarks/run_all.py [--quick] [--skip-scripts] [--skip-compare]
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import keras  # noqa: E402
from common import RESULTS  # noqa: E402
from common import interleaved_step_times  # noqa: E402
from common import machine  # noqa: E402
from common import single_threaded  # noqa: E402
from common import time_fit_steps  # noqa: E402
from common import write_results  # noqa: E402
from weight_normalization import torch_ratio  # noqa: E402

ROOT = HERE.parent
DOCS = ROOT / "docs"
SCRIPTS = (
    "weight_normalization",
    "shadow_weights",
    "randomness",
    "gradient_dropout_rng",
    "weight_averaging",
    "averaging_cost",
    "sewa_selection_cost",
    "optimum_shifting",
    "tuning",
    "shadow_ablation",
)
STEP_TECHNIQUES = ("weightnorm", "shadow", "loss-noise", "grad-dropout")
TARGETS = {"weightnorm": 1.10, "shadow": 1.10, "loss-noise": 1.02, "grad-dropout": 1.10}


def overhead(quick):
    """Step-time ratios of every per-step technique vs plain Keras, in this one process.

    Each timed `fit` call runs enough steps to last about a second (the training set is
    tiled when needed), so the fixed cost of a `fit` call does not blur the ratios; the
    ratio of the fastest repeats is reported next to the median one, as load bursts on a
    shared machine slow single repeats down.
    """
    import numpy as np

    from keras_wtrain.comparison import build_technique
    from keras_wtrain.comparison.datasets import load_mnist5k
    from keras_wtrain.comparison.models import build_model

    threads = single_threaded()
    data = load_mnist5k()
    repeats, seconds = (5, 0.3) if quick else (11, 1.0)
    results = {"batch_size": 128, "repeats": repeats, "jit_compile": True, "threads": threads, "models": {}}
    for kind in ("cnn", "mlp"):
        models = {}
        for technique in ("baseline", *STEP_TECHNIQUES):
            keras.utils.set_random_seed(0)
            shape, classes = data.x_train.shape[1:], int(data.y_train.max()) + 1

            def make_model(wrap, kind=kind, shape=shape, classes=classes):
                return build_model(kind, shape, classes, wrap=wrap)

            train = (data.x_train, data.y_train)
            model = build_technique(technique, make_model, train, epochs=1, batch_size=128, seed=0).model
            model.compile(
                keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=True,
            )
            models[technique] = model
        time_fit_steps(models["baseline"], data.x_train, data.y_train, 128, 4)  # compiles
        warm = time_fit_steps(models["baseline"], data.x_train, data.y_train, 128, 20)
        steps = int(min(400, max(20, seconds / warm)))
        tiles = -(-steps * 128 // len(data.x_train))
        x, y = np.concatenate([data.x_train] * tiles), np.concatenate([data.y_train] * tiles)
        times = interleaved_step_times(models, x, y, 128, steps, repeats)
        base_min = min(times["baseline"]["all_s"])
        results["models"][kind] = {
            t: {
                "steps": steps,
                "step_ms": 1e3 * times[t]["median_s"],
                "ratio": times[t]["paired_ratio"],
                "ratio_of_medians": times[t]["median_s"] / times["baseline"]["median_s"],
                "fastest_ratio": min(times[t]["all_s"]) / base_min,
                "all_ms": [1e3 * v for v in times[t]["all_s"]],
                "round_ratios": times[t]["round_ratios"],
            }
            for t in times
        }
        # PyTorch's own weight_norm on the same shapes, beside ours, when torch is importable (never required).
        results["models"][kind]["torch_weight_norm"] = torch_ratio(kind, x, y, 128, min(steps, 100), repeats)
    cnn_steps, mlp_steps = results["models"]["cnn"]["baseline"]["steps"], results["models"]["mlp"]["baseline"]["steps"]
    lines = [
        f"One thread (`common.single_threaded`). Steps per timed `fit` call: CNN {cnn_steps}, MLP {mlp_steps}; "
        f"{repeats} interleaved rounds. Ratio: median "
        "over rounds of the technique's step time over the baseline's in the same round; in brackets, fastest "
        "repeat over the baseline's fastest.",
        "",
        "| technique | CNN step (ms) | CNN ratio | MLP step (ms) | MLP ratio | target ratio |",
        "|---|---|---|---|---|---|",
    ]
    for t in ("baseline", *STEP_TECHNIQUES):
        cnn, mlp = results["models"]["cnn"][t], results["models"]["mlp"][t]
        target = TARGETS.get(t)
        worst = max(cnn["ratio"], mlp["ratio"])
        mark = "" if target is None else f"≤ {target:.2f} {'✓' if worst <= target else '✗'}"
        lines.append(
            f"| {t} | {cnn['step_ms']:.2f} | {cnn['ratio']:.3f} ({cnn['fastest_ratio']:.3f}) "
            f"| {mlp['step_ms']:.2f} | {mlp['ratio']:.3f} ({mlp['fastest_ratio']:.3f}) | {mark} |"
        )
    cnn_t, mlp_t = results["models"]["cnn"]["torch_weight_norm"], results["models"]["mlp"]["torch_weight_norm"]
    if cnn_t and mlp_t:
        lines.append(
            f"| PyTorch `weight_norm` (torch {mlp_t['torch']}, eager, vs plain torch) "
            f"| {1e3 * cnn_t['weight_norm_s']:.2f} | {cnn_t['ratio']:.3f} "
            f"| {1e3 * mlp_t['weight_norm_s']:.2f} | {mlp_t['ratio']:.3f} | for reference |"
        )
    else:
        lines += ["", "PyTorch is not importable here, so its `weight_norm` was not measured beside ours."]
    write_results("overhead", results, lines)
    return results


def run_scripts(quick):
    """Runs each technique's benchmark script in its own process; returns name -> exit code."""
    codes = {}
    for name in SCRIPTS:
        script = HERE / f"{name}.py"
        if not script.exists():
            continue
        print(f"== benchmarks/{name}.py", flush=True)
        codes[name] = subprocess.call([sys.executable, str(script), *(["--quick"] if quick else [])])
    return codes


def run_compare(quick):
    from keras_wtrain.comparison import DEFAULTS
    from keras_wtrain.comparison import QUICK
    from keras_wtrain.comparison import compare

    settings = dict(DEFAULTS, **(QUICK if quick else {}))
    return compare(
        settings["model"],
        settings["dataset"],
        seeds=settings["seeds"],
        epochs=settings["epochs"],
        train_size=settings["train_size"],
        batch_size=settings["batch_size"],
        out=RESULTS / "compare",
    )


def _table(name):
    path = RESULTS / f"{name}.md"
    if not path.exists():
        return "_Not measured yet: run `python benchmarks/run_all.py`._"
    # Images are linked relative to benchmarks/results/; the page shows its own copy under assets/ instead.
    return "\n".join(line for line in path.read_text().strip().splitlines() if not line.startswith("!["))


def write_docs_page():
    """Writes `docs/results.md` from whatever is in `benchmarks/results/`."""
    m = machine()
    assets = DOCS / "assets" / "results"
    assets.mkdir(parents=True, exist_ok=True)
    compare_dir = RESULTS / "compare"
    parts = [
        "# Results",
        "",
        "Every number on this page was produced by `python benchmarks/run_all.py` (it rewrites this page) on:",
        "",
        f"- machine: {m['device']}, {m['cpu_count']} CPU cores, {m['platform']}",
        f"- Python {m['python']}, Keras {m['keras']}, TensorFlow {m.get('tensorflow', '-')}, backend {m['backend']}",
        f"- date: {m['date']}",
        "",
        "Accuracy numbers are test accuracy on MNIST-5k's untouched test split, with the training set cut to a "
        "stratified subset so that regularisation matters; no choice was made on the test split. Overheads are "
        "ratios against plain Keras measured in the same process. Small CPU machines are noisy: read the ratios "
        "together with their targets, and the accuracy differences together with their confidence intervals.",
        "",
    ]
    results_md = compare_dir / "results.md"
    if results_md.exists():
        for png in ("accuracy.png", "paired_differences.png", "validation_curves.png", "accuracy_vs_sharpness.png"):
            if (compare_dir / png).exists():
                shutil.copy(compare_dir / png, assets / png)
        # compare's own report (settings, convergence, table, verdicts, mechanisms), one heading level down.
        body = results_md.read_text().splitlines()[1:]
        body = ["#" + line if line.startswith("#") else line for line in body]
        parts += [
            "## Which techniques helped: `keras-wtrain compare` with its defaults",
            *body,
            "",
            "![Test accuracy per technique](assets/results/accuracy.png)",
            "",
            "![Paired differences against plain Keras, with their intervals](assets/results/paired_differences.png)",
            "",
            "![Validation accuracy during training](assets/results/validation_curves.png)",
            "",
            "![Test accuracy against sharpness](assets/results/accuracy_vs_sharpness.png)",
            "",
        ]
    small = RESULTS / "compare_small_data" / "results.md"
    if small.exists():
        # `keras-wtrain compare --regime small-data --out benchmarks/results/compare_small_data`: scarce data.
        lines = small.read_text().splitlines()
        parts += [
            "## The small-data regime: `keras-wtrain compare --regime small-data`",
            "",
            *[line for line in lines[2:5] if line.strip()],
            "",
            "Full report with the mechanism table: `benchmarks/results/compare_small_data/results.md`.",
            "",
            *[line for line in lines[: lines.index("## Mechanisms")] if line.startswith("|")],
            "",
            *[line for line in lines if line.startswith("- **")],
            "",
        ]
    parts += [
        "## Step-time overhead vs plain Keras",
        "",
        "Train-step time, `jit_compile=True`, batch 128, interleaved rounds in one process, TensorFlow on one "
        "thread (`results/overhead.json`). One thread because on this 2-vCPU machine two-threaded step times jump "
        "between two modes about 2x apart from one round to the next, whatever the model, and a ratio of medians "
        "then says which mode each model happened to get (a run before this change showed the weight-normalized "
        "MLP at 1.538 and the unchanged shadow MLP at 0.663). The ratio is the median over rounds of the "
        "technique's time over the baseline's in the same round; single rounds still jump by up to 1.5x when "
        "the machine is busy, so differences of a few percent are within noise. "
        "PyTorch's own `weight_norm`, on the same shapes and also on one thread, is measured in the same run "
        "when torch is importable. On an accelerator none of this was measured (no GPU was available).",
        "",
        _table("overhead"),
        "",
    ]
    titles = {
        "weight_normalization": "Weight normalization (and PyTorch's weight_norm for reference)",
        "shadow_weights": "Shadow weights (WAS): overhead, AOM and DOM accuracy",
        "randomness": "Loss noise and gradient dropout",
        "gradient_dropout_rng": "Gradient dropout: what the random draw costs",
        "weight_averaging": "SeWA and its baselines on one buffer (SWA window, LAWA, random)",
        "averaging_cost": "Weight averaging: memory and time on 21M- and 24M-parameter models",
        "sewa_selection_cost": "SeWA: what the selection costs and what its settings buy",
        "optimum_shifting": "Optimum shifting",
        "tuning": "Tuning: PSO vs RandomSearch vs BayesianOptimization",
        "shadow_ablation": "Shadow weights (AOM): where they help",
    }
    for name in SCRIPTS:
        parts += [f"## {titles[name]}", "", f"From `python benchmarks/{name}.py`.", "", _table(name), ""]
        if (RESULTS / f"{name}.png").exists():
            shutil.copy(RESULTS / f"{name}.png", assets / f"{name}.png")
            parts += [f"![{titles[name]}](assets/results/{name}.png)", ""]
    (DOCS / "results.md").write_text("\n".join(parts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budgets everywhere (a smoke run)")
    parser.add_argument("--skip-scripts", action="store_true", help="do not rerun the per-technique scripts")
    parser.add_argument("--skip-compare", action="store_true", help="do not rerun keras-wtrain compare")
    parser.add_argument("--skip-overhead", action="store_true", help="do not rerun the overhead measurement")
    args = parser.parse_args(argv)
    if not args.skip_overhead:
        overhead(args.quick)
    if not args.skip_scripts:
        failed = {k: v for k, v in run_scripts(args.quick).items() if v}
        if failed:
            print(f"benchmark scripts failed: {failed}", file=sys.stderr)
    if not args.skip_compare:
        run_compare(args.quick)
    write_docs_page()
    print(f"Wrote {RESULTS} and {DOCS / 'results.md'}")


if __name__ == "__main__":
    main()
