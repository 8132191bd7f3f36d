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
    from keras_wtrain.comparison.report import verdict_record

    out = {}
    for technique, stats in summary.items():
        if technique == "baseline":
            continue
        out[technique] = {"vs_baseline": verdict_record(stats.get("accuracy_diff_vs_baseline"))}
        parts = stats.get("accuracy_diff_vs_parts")
        if parts:
            best = max(parts, key=lambda part: summary[part]["test_accuracy"]["mean"])
            out[technique]["vs_best_part"] = {"part": best, **verdict_record(parts[best])}
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
        "is the whole process's high-water mark when the run ended. MDE: the smallest true paired difference these "
        "seeds detect with 80 % probability (two-sided 5 % paired t-test), (t(0.975, n−1) + t(0.80, n−1)) · std / √n; "
        "it describes the experiment's sensitivity, not a bound on the effect.",
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
    regime=DEFAULTS["regime"],
    loss=None,
    optimizer=None,
    measure=True,
    overwrite=False,
    target_ci=None,
    max_seeds=None,
):
    """Trains every technique and plain Keras on the same splits and seeds; writes tables, verdicts and plots.

    Protocol, verdicts and outputs: docs/tutorials/does_it_help.md. Each run is written to `out/runs/` as soon
    as it ends; calling `compare` again with the same settings and `out` trains only the runs not written yet
    (after a kill, or with more techniques or seeds). Cost: `seeds × (len(techniques) + 1)` training runs, plus a
    Hessian-trace and sharpness measurement per run when `measure`.

    Args:
        model: `"cnn"` (default), `"mlp"`, `"resnet-small"`, or a function `build_model()` returning an
            uncompiled functional or Sequential `keras.Model`.
        data: a dataset name (`"mnist5k"`, `"digits"`, `"tfds:NAME"`), a `Splits`, `(x, y)` arrays or a
            `tf.data.Dataset` of `(x, y)` batches (split class-stratified 70/10/20 %).
        techniques: names from `settings.TECHNIQUES` or combinations such as `"weightnorm+sewa"` (default: all
            and the recipe); the baseline is added.
        seeds: number of seeds (default: the regime's); with `target_ci`, the first number of seeds.
        epochs: training epochs of every run (default: the regime's).
        train_size: training examples kept, class-stratified (default: the regime's for a named dataset, all of
            the user's data otherwise).
        batch_size: training batch size.
        out: output directory (created); it keeps the finished runs of one job.
        progress: print the job's progress line and a progress bar per run.
        regime: `"converged"` (default) or `"small-data"` (see `keras_wtrain.comparison.settings.REGIMES`).
        loss: the training loss (default: cross-entropy, on probabilities if the outputs sum to 1, else logits).
        optimizer: `f(total_steps) -> keras optimizer` (default: Adam 1e-3 with cosine decay to 0).
        measure: measure the mechanisms (Hessian trace, sharpness, technique-specific values).
        overwrite: discard the runs of a job with other settings found in `out` instead of refusing them.
        target_ci: add seeds until the 95 % interval of every paired test-accuracy difference against the
            baseline has a half-width (the table's ± value) of at most this many accuracy points, a number > 0;
            never fewer than 3 seeds (see `report.needs_more_seeds`); None: exactly `seeds`.
        max_seeds: the most seeds `target_ci` may reach (default: `max(seeds, 10)`), an int >= `seeds`.

    Returns:
        The results dictionary written to `results.json`: `config`, `environment`, `convergence`, `summary`,
        `verdicts` and `runs`.

    Raises:
        InputError: (a `ValueError`) for a model or data that cannot be compared, before any training.
        ConfigurationMismatch: (a `ValueError`) if `out` holds runs of a job with other settings.
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
    from keras_wtrain.comparison import distributed
    from keras_wtrain.comparison.inputs import prepare
    from keras_wtrain.comparison.job import OPTION_NAMES
    from keras_wtrain.comparison.job import job_settings
    from keras_wtrain.comparison.store import RunStore

    model = model if model is not None else DEFAULTS["model"]
    settings = regime_settings(regime)
    seeds = validation.check_int("seeds", settings["seeds"] if seeds is None else seeds, minimum=1)
    epochs = validation.check_int("epochs", settings["epochs"] if epochs is None else epochs, minimum=1)
    batch_size = validation.check_int("batch_size", batch_size, minimum=1)
    validation.check_int("train_size", train_size, minimum=1, allow_none=True)
    validation.check_bool("measure", measure)
    validation.check_bool("overwrite", overwrite)
    if target_ci is not None:
        validation.check_positive("target_ci", target_ci)
        max_seeds = validation.check_int("max_seeds", max(seeds, 10) if max_seeds is None else max_seeds, minimum=1)
        if max_seeds < seeds:
            raise ValueError(f"argument `max_seeds` must be >= `seeds` ({seeds}); received {max_seeds}.")
    elif max_seeds is not None:
        raise ValueError("argument `max_seeds` bounds the seeds that `target_ci` adds; pass `target_ci` with it.")
    if data is None:
        data = DEFAULTS["dataset"]
    if isinstance(data, str) and train_size is None:
        train_size = settings["train_size"]
    techniques = parse_techniques(DEFAULT_TECHNIQUES if techniques is None else techniques)
    if "baseline" not in techniques:
        techniques.insert(0, "baseline")
    wrapping = any(part in t.split("+") for t in techniques for part in ("weightnorm", "shadow"))
    inputs = prepare(model, data, train_size=train_size, loss=loss, wrapping=wrapping)
    out = pathlib.Path(out)
    job = job_settings(inputs, epochs, batch_size, regime, optimizer, measure)
    store = RunStore(out, job, overwrite=overwrite, option_names=OPTION_NAMES)
    options = dict(epochs=epochs, batch_size=batch_size, measure=measure, optimizer=optimizer)
    started = time.perf_counter()
    if distributed.role() is None:
        runs = _train(store, inputs, techniques, seeds, target_ci, max_seeds, progress, options)
    else:  # a chief or worker of a Keras Tuner distributed job (KERASTUNER_* environment variables)
        runs = distributed.train(store, inputs, techniques, seeds, target_ci, max_seeds, progress, options)
        if runs is None:  # a worker: its runs are in `out/runs`, the chief writes the results
            return None
    elapsed = time.perf_counter() - started
    return write_results(
        out, inputs, runs, techniques, regime, epochs, batch_size, optimizer, measure, elapsed, target_ci, max_seeds
    )


def _train(store, inputs, techniques, seeds, target_ci, max_seeds, progress, options):
    """Trains the runs not in `store` seed by seed (more seeds while `target_ci` asks); returns every run."""
    from keras_wtrain.comparison.job import JobProgress
    from keras_wtrain.comparison.report import summarize
    from keras_wtrain.comparison.runner import run_one
    from keras_wtrain.comparison.seeds import needs_more_seeds

    done = sum(store.load(t, s) is not None for s in range(seeds) for t in techniques)
    job = JobProgress(total=seeds * len(techniques), done=done, enabled=progress)
    runs, seed = [], 0
    while True:
        if seed >= seeds:  # a seed added by target_ci
            job.total += len(techniques)
            job.done += sum(store.load(t, seed) is not None for t in techniques)
        for technique in techniques:
            run = store.load(technique, seed)
            if run is None:
                job.show()
                run = run_one(
                    technique,
                    inputs,
                    seed,
                    options["epochs"],
                    options["batch_size"],
                    progress,
                    options["measure"],
                    options["optimizer"],
                )
                store.save(run)
                job.finished(run["wall_time_s"])
            runs.append(run)
        seed += 1
        if seed < seeds:
            continue
        if target_ci is None or seed >= max_seeds or not needs_more_seeds(summarize(runs, techniques), target_ci):
            break
    job.show()
    return runs


def write_results(
    out,
    inputs,
    runs,
    techniques,
    regime,
    epochs,
    batch_size,
    optimizer,
    measure,
    total_wall,
    target_ci=None,
    max_seeds=None,
):
    """Summarises `runs` and writes `results.json`, `results.md` and the plots to `out`; returns the results.

    Args:
        out: the output directory.
        inputs: the comparison's `Inputs`.
        runs: every run (dicts of `run_one`), seed by seed.
        techniques: the techniques, baseline first.
        regime: the regime name.
        epochs: epochs per run.
        batch_size: training batch size.
        optimizer: the user's optimizer factory or None.
        measure: whether mechanisms were measured.
        total_wall: seconds this call spent training.
        target_ci: the `target_ci` the seeds were added for, or None.
        max_seeds: its bound, or None.

    Returns:
        The results dictionary.
    """
    from keras_wtrain.comparison.mechanisms import FLATNESS
    from keras_wtrain.comparison.plots import write_plots
    from keras_wtrain.comparison.report import convergence
    from keras_wtrain.comparison.report import markdown_table
    from keras_wtrain.comparison.report import mechanism_table
    from keras_wtrain.comparison.report import summarize
    from keras_wtrain.comparison.report import verdict_lines

    splits = inputs.splits
    seeds = len({run["seed"] for run in runs})
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
            "target_ci_points": target_ci,
            "max_seeds": max_seeds,
            "total_wall_time_s": float(sum(run["wall_time_s"] for run in runs)),
            "this_call_wall_time_s": total_wall,
        },
        "environment": environment(),
        "convergence": convergence(runs),
        "summary": summary,
        "verdicts": _verdicts(summary),
        "runs": runs,
    }
    out = pathlib.Path(out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = _markdown(results, markdown_table(summary), verdict_lines(summary), mechanism_table(summary, runs))
    (out / "results.md").write_text("\n".join(lines))
    write_plots(runs, summary, out)
    if results["convergence"]["converged"] is False:
        warnings.warn(results["convergence"]["message"], NotConvergedWarning, stacklevel=3)
    return results
