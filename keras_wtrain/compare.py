"""`keras-wtrain compare`: every technique against plain Keras on the same splits and seeds.

Each technique is trained with the library's documented defaults on the same
train/validation/test split and the same seeds as the baseline; nothing is
selected on the test split (the model after the last epoch, or after the
callback's averaging/shifting, is evaluated once). Results: `results.json`,
`results.md` (mean ± std and 95% CI of test accuracy, test loss, wall time,
step-time ratio vs baseline, peak memory) and PNG plots.
"""

import json
import math
import os
import pathlib
import platform
import resource
import time

import keras
import numpy as np

from keras_wtrain.compare_settings import DEFAULTS
from keras_wtrain.compare_settings import QUICK  # noqa: F401  (re-exported)
from keras_wtrain.compare_settings import TECHNIQUES

__all__ = ["StepTimer", "compare", "markdown_table", "summarize"]


class StepTimer(keras.callbacks.Callback):
    """Records the wall time between consecutive ends of training batches.

    The interval covers the step itself and every other callback's per-batch
    work, so callback-based techniques are charged for what they cost. The
    first epoch (tracing/compilation) is excluded from `median_step_s`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.compare import StepTimer

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    timer = StepTimer()
    model.fit(np.ones((32, 4)), np.ones((32, 1)), batch_size=8, epochs=2, verbose=0, callbacks=[timer])
    print(len(timer.intervals), timer.median_step_s)  # 4 intervals from the second epoch
    ```
    """

    def __init__(self):
        super().__init__()
        self.intervals = []
        self._last = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._epoch > 0 and self._last is not None:
            self.intervals.append(now - self._last)
        self._last = now

    @property
    def median_step_s(self):
        return float(np.median(self.intervals)) if self.intervals else float("nan")


class _Progress(keras.callbacks.Callback):
    """One progress bar per run: a tick per epoch with loss and validation accuracy."""

    def __init__(self, label, epochs, enabled):
        super().__init__()
        self.label, self.epochs, self.enabled = label, epochs, enabled
        self.bar = None

    def on_train_begin(self, logs=None):
        if self.enabled:
            print(self.label, flush=True)
            self.bar = keras.utils.Progbar(self.epochs, stateful_metrics=["loss", "val_accuracy"])

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            logs = logs or {}
            self.bar.update(epoch + 1, [(k, logs[k]) for k in ("loss", "val_accuracy") if k in logs])


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _technique_setup(technique, kind, data, epochs, batch_size):
    """Returns `(model, callbacks, extra_logs_fn)` for one technique, with library defaults."""
    from keras_wtrain.models import build_model

    input_shape, classes = data.x_train.shape[1:], data.num_classes
    callbacks = []
    if technique == "weightnorm":
        from keras_wtrain.layers import WeightNormalization
        from keras_wtrain.layers.weight_normalization import initialize_weight_normalization

        model = build_model(kind, input_shape, classes, wrap=lambda layer: WeightNormalization(layer))
        initialize_weight_normalization(model, data.x_train[:256])
    elif technique == "shadow":
        from keras_wtrain.layers.shadow_weights import authors_wrap

        model = build_model(kind, input_shape, classes, wrap=authors_wrap)
    else:
        model = build_model(kind, input_shape, classes)
    if technique in ("loss-noise", "grad-dropout"):
        from keras_wtrain.training import GradientDropout
        from keras_wtrain.training import LossNoise
        from keras_wtrain.training import wrap

        if technique == "loss-noise":
            model = wrap(model, loss_noise=LossNoise())
        else:
            model = wrap(model, gradient_dropout=GradientDropout())
    if technique in ("sewa", "swa", "lawa", "ema"):
        from keras_wtrain.callbacks import SelectiveWeightAveraging

        # Same trajectory shape for all four: T checkpoints spread over the second half of training
        # (as benchmarks/weight_averaging.py does), K = T / 2.
        total = epochs * math.ceil(len(data.x_train) / batch_size)
        num_checkpoints = min(20, max(2, total // 2))
        every = max(1, (total // 2) // num_checkpoints)
        callbacks.append(
            SelectiveWeightAveraging(
                k=max(1, num_checkpoints // 2),
                num_checkpoints=num_checkpoints,
                start=max(0, total - num_checkpoints * every),
                every_n_steps=every,
                strategy=technique,
                selection_data=(data.x_train, data.y_train),
                seed=0,
            )
        )
    if technique == "optimum-shift":
        from keras_wtrain.callbacks import OptimumShifting

        callbacks.append(OptimumShifting(data=(data.x_train, data.y_train)))
    return model, callbacks


def run_one(technique, data, kind, seed, epochs, batch_size, progress=True):
    """Trains one technique with one seed; returns a dict of its measurements."""
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    model, callbacks = _technique_setup(technique, kind, data, epochs, batch_size)
    model.compile(keras.optimizers.Adam(1e-3), _loss(), metrics=["accuracy"])
    timer = StepTimer()
    history = model.fit(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[*callbacks, timer, _Progress(f"[{technique} | seed {seed}]", epochs, progress)],
    )
    test_loss, test_accuracy = model.evaluate(data.x_test, data.y_test, verbose=0, batch_size=256)
    val_loss, val_accuracy = model.evaluate(data.x_val, data.y_val, verbose=0, batch_size=256)
    wall = time.perf_counter() - start
    return {
        "technique": technique,
        "seed": seed,
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "final_val_accuracy": float(val_accuracy),
        "val_accuracy_curve": [float(v) for v in history.history.get("val_accuracy", [])],
        "wall_time_s": wall,
        "step_time_s": timer.median_step_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def _interval(values):
    """Mean, sample std and 95% t-interval half-width of `values`."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan"), float("nan")
    from scipy import stats

    std = float(values.std(ddof=1))
    return mean, std, float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def summarize(runs, techniques):
    """Aggregates per-technique statistics; differences are paired by seed against the baseline.

    Args:
        runs: one dict per run (`technique`, `seed`, `test_accuracy`, `test_loss`, `wall_time_s`,
            `peak_rss_mib`, `step_time_s`).
        techniques: the technique names, in table order.

    Returns:
        `{technique: {statistic: {"mean", "std", "ci95"}}}`.

    Example:

    ```python
    from keras_wtrain.compare import markdown_table, summarize

    runs = [
        {"technique": t, "seed": s, "test_accuracy": a, "test_loss": 0.3, "wall_time_s": 10.0,
         "peak_rss_mib": 900.0, "step_time_s": st}
        for t, s, a, st in [("baseline", 0, 0.90, 0.010), ("baseline", 1, 0.92, 0.010),
                            ("weightnorm", 0, 0.91, 0.011), ("weightnorm", 1, 0.94, 0.011)]
    ]
    summary = summarize(runs, ["baseline", "weightnorm"])
    print(summary["weightnorm"]["accuracy_diff_vs_baseline"]["mean"])  # 0.015
    print("\\n".join(markdown_table(summary)))
    ```
    """
    by_technique = {t: [r for r in runs if r["technique"] == t] for t in techniques}
    baseline = {r["seed"]: r for r in by_technique.get("baseline", [])}
    summary = {}
    for technique, rows in by_technique.items():
        if not rows:
            continue
        entry = {"n": len(rows)}
        for key in ("test_accuracy", "test_loss", "wall_time_s", "peak_rss_mib"):
            mean, std, ci = _interval([r[key] for r in rows])
            entry[key] = {"mean": mean, "std": std, "ci95": ci}
        if baseline:
            paired = [r for r in rows if r["seed"] in baseline]
            ratios = [r["step_time_s"] / baseline[r["seed"]]["step_time_s"] for r in paired]
            entry["step_time_ratio"] = float(np.mean(ratios)) if ratios else float("nan")
            mean, std, ci = _interval([r["test_accuracy"] - baseline[r["seed"]]["test_accuracy"] for r in paired])
            entry["accuracy_diff_vs_baseline"] = {"mean": mean, "std": std, "ci95": ci}
        summary[technique] = entry
    return summary


def _fmt(stat, scale=1.0, digits=2):
    mean, std, ci = (stat[k] * scale if not math.isnan(stat[k]) else float("nan") for k in ("mean", "std", "ci95"))
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f} [±{ci:.{digits}f}]"


def markdown_table(summary):
    """The results table: mean ± std [95% CI half-width] over seeds.

    Args:
        summary: the output of `summarize`.

    Returns:
        The markdown table as a list of lines.

    Example:

    ```python
    from keras_wtrain.compare import markdown_table, summarize

    runs = [
        {"technique": t, "seed": s, "test_accuracy": a, "test_loss": 0.3, "wall_time_s": 10.0,
         "peak_rss_mib": 900.0, "step_time_s": st}
        for t, s, a, st in [("baseline", 0, 0.90, 0.010), ("baseline", 1, 0.92, 0.010),
                            ("weightnorm", 0, 0.91, 0.011), ("weightnorm", 1, 0.94, 0.011)]
    ]
    summary = summarize(runs, ["baseline", "weightnorm"])
    print(summary["weightnorm"]["accuracy_diff_vs_baseline"]["mean"])  # 0.015
    print("\\n".join(markdown_table(summary)))
    ```
    """
    lines = [
        "| technique | seeds | test accuracy (%) | Δ accuracy vs baseline (pts, paired) | test loss | wall time (s) "
        "| step-time ratio | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for technique, e in summary.items():
        diff = e.get("accuracy_diff_vs_baseline")
        diff_cell = _fmt(diff, 100) if diff and technique != "baseline" else "—"
        lines.append(
            f"| {technique} | {e['n']} | {_fmt(e['test_accuracy'], 100)} | {diff_cell} | {_fmt(e['test_loss'], 1, 3)} "
            f"| {_fmt(e['wall_time_s'], 1, 1)} | {e.get('step_time_ratio', float('nan')):.3f} "
            f"| {e['peak_rss_mib']['mean']:.0f} |"
        )
    return lines


def write_plots(runs, summary, out):
    """Writes `accuracy.png` (mean test accuracy with 95% CI) and `validation_curves.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    means = [100 * summary[t]["test_accuracy"]["mean"] for t in names]
    cis = [summary[t]["test_accuracy"]["ci95"] for t in names]
    errors = [0.0 if math.isnan(ci) else 100 * ci for ci in cis]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    ax.bar(names, means, yerr=errors, capsize=4, color=["#888888" if t == "baseline" else "#3b75af" for t in names])
    low = min(m - e for m, e in zip(means, errors))
    ax.set_ylim(max(0, low - 2), min(100, max(m + e for m, e in zip(means, errors)) + 1))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy per technique (mean, 95% CI over seeds)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for technique in names:
        curves = [r["val_accuracy_curve"] for r in runs if r["technique"] == technique and r["val_accuracy_curve"]]
        if curves:
            length = min(len(c) for c in curves)
            mean = 100 * np.mean([c[:length] for c in curves], axis=0)
            ax.plot(range(1, length + 1), mean, marker="o", label=technique)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Validation accuracy during training (mean over seeds)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "validation_curves.png", dpi=110)
    plt.close(fig)


def environment():
    """Machine, versions and date of a run."""
    import datetime

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


def compare(
    dataset=DEFAULTS["dataset"],
    model=DEFAULTS["model"],
    techniques=TECHNIQUES,
    seeds=DEFAULTS["seeds"],
    epochs=DEFAULTS["epochs"],
    train_size=DEFAULTS["train_size"],
    batch_size=DEFAULTS["batch_size"],
    out="runs/compare",
    progress=True,
    data=None,
):
    """Runs the comparison and writes `results.json`, `results.md` and plots to `out`.

    Args:
        dataset: `mnist5k`, `digits` or `tfds:NAME`.
        model: `cnn`, `mlp` or `resnet-small`.
        techniques: technique names (see `TECHNIQUES`).
        seeds: number of seeds (0, 1, ...), each shared by every technique.
        epochs: training epochs of every run.
        train_size: number of (stratified) training examples; `None` keeps all.
        batch_size: training batch size.
        out: output directory (created).
        progress: print a progress bar per run.
        data: an already loaded `Splits` (overrides `dataset`).

    Returns:
        The results dictionary written to `results.json`.

    Example:

    ```python
    from keras_wtrain.compare import compare

    results = compare(dataset="digits", techniques=["baseline", "weightnorm"], seeds=1, epochs=1,
                      out="/tmp/compare", progress=False)
    ```
    """
    from keras_wtrain.data import load_dataset

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = load_dataset(dataset, train_size=train_size)
    techniques = list(techniques)
    if "baseline" not in techniques:
        techniques.insert(0, "baseline")
    runs = []
    started = time.perf_counter()
    for seed in range(seeds):
        for technique in techniques:
            runs.append(run_one(technique, data, model, seed, epochs, batch_size, progress))
    total_wall = time.perf_counter() - started
    summary = summarize(runs, techniques)
    results = {
        "config": {
            "dataset": data.name,
            "model": model,
            "techniques": techniques,
            "seeds": seeds,
            "epochs": epochs,
            "train_size": int(len(data.x_train)),
            "validation_size": int(len(data.x_val)),
            "test_size": int(len(data.x_test)),
            "batch_size": batch_size,
            "total_wall_time_s": total_wall,
        },
        "environment": environment(),
        "summary": summary,
        "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(summary)
    env = results["environment"]
    header = [
        f"# keras-wtrain compare: {data.name}, {model}",
        "",
        f"{seeds} seed(s) × {len(techniques)} technique(s), {epochs} epochs, {len(data.x_train)} training examples, "
        f"batch {batch_size}; test set of {len(data.x_test)} examples, evaluated once after training; "
        f"all runs together took {total_wall / 60:.1f} minutes.",
        f"Machine: {env['platform']}, {env['cpu_count']} CPUs; Keras {env['keras']} ({env['backend']}); {env['date']}.",
        "",
        "Cells are mean ± std [95% confidence-interval half-width, t-distribution over seeds]. The accuracy "
        "difference is paired by seed against the baseline. Step-time ratio: median time between the ends of "
        "consecutive training batches (first epoch excluded), relative to the baseline of the same seed. Peak RSS "
        "is the whole process's high-water mark when the run ended.",
        "",
    ]
    (out / "results.md").write_text("\n".join(header + table) + "\n")
    write_plots(runs, summary, out)
    return results
