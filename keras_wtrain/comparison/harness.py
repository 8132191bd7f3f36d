"""`compare`: every technique against plain Keras on the same splits and seeds, with verdicts and mechanisms."""

import json
import os
import pathlib
import platform
import time
import warnings

from keras_wtrain._core import backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain._core import validation
from keras_wtrain.comparison.settings import DEFAULT_TECHNIQUES
from keras_wtrain.comparison.settings import DEFAULTS
from keras_wtrain.comparison.settings import RECIPE
from keras_wtrain.comparison.settings import parse_techniques
from keras_wtrain.comparison.settings import regime_settings

__all__ = ["NotConvergedWarning", "compare", "environment"]


class NotConvergedWarning(UserWarning):
    """Issued by `compare` when the baseline did not converge (its verdicts compare under-trained models).

    Example:

    ```python
    import warnings
    from keras_wtrain.comparison import NotConvergedWarning

    warnings.simplefilter("error", NotConvergedWarning)  # e.g. make a CI job fail on an unconverged run
    ```
    """


def environment():
    """Machine, versions and date of a run.

    Example:

    ```python
    from keras_wtrain.comparison import environment

    print(environment()["backend"])
    ```
    """
    import datetime

    import keras

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    return info


def _verdicts(summary):
    from keras_wtrain.comparison.report import verdict

    def entry(diff):
        word, mean, low, high = verdict(diff)
        return {"verdict": word, "mean_points": mean, "ci95_low_points": low, "ci95_high_points": high}

    out = {}
    for technique, stats in summary.items():
        if technique == "baseline":
            continue
        out[technique] = {"vs_baseline": entry(stats.get("accuracy_diff_vs_baseline"))}
        parts = stats.get("accuracy_diff_vs_parts")
        if parts:
            best = max(parts, key=lambda part: summary[part]["test_accuracy"]["mean"])
            out[technique]["vs_best_part"] = {"part": best, **entry(parts[best])}
    return out


def _mechanism_intro(flat):
    parts = []
    if flat:
        parts.append(
            f"Measured on each final model (wrappers folded into plain kernels), on the first {flat['examples']} "
            "training examples: the Hutchinson estimate of the Hessian trace of the training loss with respect to "
            f"the weights of the layer below the last Dense layer ({flat['probes']} Rademacher probes), and the "
            f"sharpness, the mean training-loss increase over {flat['sharpness_samples']} random filter-normalised "
            f"weight perturbations of radius {flat['sharpness_radius']} (every layer)."
        )
    parts.append(
        "Averaging: how many weights were averaged, how far the average is from the last weights "
        "(‖average − last‖ / ‖last‖) and the training loss at each. Every row says which learning-rate schedule it "
        "trained with: each average runs with its own (SWA's schedule, LAWA's and SeWA's constant rate). "
        "Optimum shifting: shifts kept by the loss guard, the relative weight change on live rows, "
        "the guard-slice training-loss change per shift, the kernel norm. Shadow weights: DOM vs AOM test accuracy."
    )
    return " ".join(parts)


def _markdown(results, table, verdicts, mechanisms):
    cfg, env = results["config"], results["environment"]
    return [
        f"# keras-wtrain compare: {cfg['dataset']}, {cfg['model']}",
        "",
        f"{cfg['seeds']} seed(s) × {len(cfg['techniques'])} technique(s), {cfg['epochs']} epochs "
        f"(regime {cfg['regime']}), {cfg['train_size']} training examples, batch {cfg['batch_size']}, "
        f"{cfg['optimizer']}; test set of {cfg['test_size']} examples, evaluated once after training; all runs "
        f"together took {cfg['total_wall_time_s'] / 60:.1f} minutes.",
        f"Machine: {env['platform']}, {env['cpu_count']} CPUs; Keras {env['keras']} ({env['backend']}); {env['date']}.",
        "",
        results["convergence"]["message"],
        "",
        "Cells are mean ± std [95% confidence-interval half-width, t-distribution over seeds]. The accuracy "
        "difference is paired by seed against the baseline. Step-time ratio: median time between the ends of "
        "consecutive training batches (first epoch excluded), relative to the baseline of the same seed. Peak RSS "
        "is the whole process's high-water mark when the run ended.",
        "",
        *table,
        "",
        "Verdicts (test accuracy, paired by seed, 95% confidence intervals):",
        "",
        *verdicts,
        "",
        "## Mechanisms",
        "",
        _mechanism_intro(cfg["flatness"]),
        "",
        *mechanisms,
        "",
    ]


def compare(
    model=None,
    data=None,
    techniques=None,
    seeds=None,
    epochs=None,
    train_size=None,
    batch_size=DEFAULTS["batch_size"],
    out="runs/compare",
    progress=True,
    dataset=None,
    regime=DEFAULTS["regime"],
    loss=None,
    optimizer=None,
    measure=True,
):
    """Trains every technique and plain Keras on the same splits and seeds; writes tables, verdicts and plots.

    Protocol, verdicts and outputs: docs/tutorials/does_it_help.md. Cost: `seeds × (len(techniques) + 1)`
    training runs, plus a Hessian-trace and sharpness measurement per run when `measure`.

    Args:
        model: `"cnn"` (default), `"mlp"`, `"resnet-small"`, or a function `build_model()` returning an
            uncompiled functional or Sequential `keras.Model`.
        data: a dataset name (`"mnist5k"`, `"digits"`, `"tfds:NAME"`), a `Splits`, `(x, y)` arrays or a
            `tf.data.Dataset` of `(x, y)` batches (split class-stratified 70/10/20 %).
        techniques: names from `settings.TECHNIQUES` or combinations such as `"weightnorm+sewa"` (default: all
            and the recipe); the baseline is added.
        seeds: number of seeds (default: the regime's).
        epochs: training epochs of every run (default: the regime's).
        train_size: training examples kept, class-stratified (default: the regime's for a named dataset, all of
            the user's data otherwise).
        batch_size: training batch size.
        out: output directory (created).
        progress: print a progress bar per run.
        dataset: the dataset name, as a keyword (the old call style; `data` wins when both are given).
        regime: `"converged"` (default) or `"small-data"` (see `keras_wtrain.comparison.settings.REGIMES`).
        loss: the training loss (default: cross-entropy, on probabilities if the outputs sum to 1, else logits).
        optimizer: `f(total_steps) -> keras optimizer` (default: Adam 1e-3 with cosine decay to 0).
        measure: measure the mechanisms (Hessian trace, sharpness, technique-specific values).

    Returns:
        The results dictionary written to `results.json`: `config`, `environment`, `convergence`, `summary`,
        `verdicts` and `runs`.

    Raises:
        InputError: (a `ValueError`) for a model or data that cannot be compared, before any training.
        ValueError, TypeError: for other bad arguments.

    Example:

    ```python
    import tempfile
    import keras
    from keras_wtrain.comparison import compare
    from keras_wtrain.comparison.datasets import load_digits

    def build_model():
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])

    results = compare(build_model, load_digits(train_size=200), techniques=["weightnorm+swa"], seeds=1, epochs=1,
                      out=tempfile.mkdtemp(), progress=False, measure=False)
    print(results["verdicts"]["weightnorm+swa"])
    ```
    """
    from keras_wtrain.comparison.inputs import prepare
    from keras_wtrain.comparison.plots import write_plots
    from keras_wtrain.comparison.report import convergence
    from keras_wtrain.comparison.report import markdown_table
    from keras_wtrain.comparison.report import mechanism_table
    from keras_wtrain.comparison.report import summarize
    from keras_wtrain.comparison.report import verdict_lines
    from keras_wtrain.comparison.runner import run_one

    model = model if model is not None else DEFAULTS["model"]
    settings = regime_settings(regime)
    seeds = validation.check_int("seeds", settings["seeds"] if seeds is None else seeds, minimum=1)
    epochs = validation.check_int("epochs", settings["epochs"] if epochs is None else epochs, minimum=1)
    batch_size = validation.check_int("batch_size", batch_size, minimum=1)
    validation.check_int("train_size", train_size, minimum=1, allow_none=True)
    validation.check_bool("measure", measure)
    if data is None:
        data = dataset if dataset is not None else DEFAULTS["dataset"]
    if isinstance(data, str) and train_size is None:
        train_size = settings["train_size"]
    techniques = parse_techniques(DEFAULT_TECHNIQUES if techniques is None else techniques)
    if "baseline" not in techniques:
        techniques.insert(0, "baseline")
    wrapping = any(part in t.split("+") for t in techniques for part in ("weightnorm", "shadow"))
    inputs = prepare(model, data, train_size=train_size, loss=loss, wrapping=wrapping)
    splits = inputs.splits
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)

    runs = []
    started = time.perf_counter()
    for seed in range(seeds):
        for technique in techniques:
            runs.append(run_one(technique, inputs, seed, epochs, batch_size, progress, measure, optimizer))
    total_wall = time.perf_counter() - started

    from keras_wtrain.comparison.mechanisms import FLATNESS

    summary = summarize(runs, techniques)
    results = {
        "config": {
            "dataset": splits.name,
            "model": inputs.model_name,
            "regime": regime,
            "techniques": techniques,
            "recipe": RECIPE,
            "seeds": seeds,
            "epochs": epochs,
            "train_size": int(len(splits.y_train)),
            "validation_size": int(len(splits.y_val)),
            "test_size": int(len(splits.y_test)),
            "batch_size": batch_size,
            "optimizer": "Adam 1e-3, cosine decay to 0"
            if optimizer is None
            else getattr(optimizer, "__name__", "custom"),
            "flatness": dict(FLATNESS) if measure else None,
            "total_wall_time_s": total_wall,
        },
        "environment": environment(),
        "convergence": convergence(runs),
        "summary": summary,
        "verdicts": _verdicts(summary),
        "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = _markdown(results, markdown_table(summary), verdict_lines(summary), mechanism_table(summary, runs))
    (out / "results.md").write_text("\n".join(lines))
    write_plots(runs, summary, out)
    if results["convergence"]["converged"] is False:
        warnings.warn(results["convergence"]["message"], NotConvergedWarning, stacklevel=2)
    return results
