"""The PNG plots of a comparison: accuracy per technique, validation curves, test accuracy against sharpness."""

import math

import numpy as np

__all__ = ["PLOTS", "write_plots"]

PLOTS = ("accuracy.png", "validation_curves.png", "accuracy_vs_sharpness.png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _accuracy(plt, summary, out):
    names = list(summary)
    means = [100 * summary[t]["test_accuracy"]["mean"] for t in names]
    errors = [
        0.0 if math.isnan(summary[t]["test_accuracy"]["ci95"]) else 100 * summary[t]["test_accuracy"]["ci95"]
        for t in names
    ]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    ax.bar(names, means, yerr=errors, capsize=4, color=["#888888" if t == "baseline" else "#3b75af" for t in names])
    ax.set_ylim(
        max(0, min(m - e for m, e in zip(means, errors)) - 2), min(100, max(m + e for m, e in zip(means, errors)) + 1)
    )
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy per technique (mean, 95% CI over seeds)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)


def _curves(plt, runs, names, out):
    fig, ax = plt.subplots(figsize=(7, 4))
    for technique in names:
        curves = [r["val_accuracy_curve"] for r in runs if r["technique"] == technique and r["val_accuracy_curve"]]
        if curves:
            length = min(len(c) for c in curves)
            mean = 100 * np.mean([c[:length] for c in curves], axis=0)
            ax.plot(range(1, length + 1), mean, marker="o", markersize=3, label=technique)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Validation accuracy during training (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "validation_curves.png", dpi=110)
    plt.close(fig)


def _sharpness(plt, runs, names, out):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.get_cmap("tab20")
    for i, technique in enumerate(names):
        points = [
            (1000 * r["mechanisms"]["sharpness"], 100 * r["test_accuracy"])
            for r in runs
            if r["technique"] == technique and "sharpness" in r.get("mechanisms", {})
        ]
        if not points:
            continue
        xs, ys = zip(*points)
        color = colors(i % 20)
        ax.scatter(xs, ys, s=14, alpha=0.5, color=color)
        ax.scatter([np.mean(xs)], [np.mean(ys)], s=70, marker="D", color=color, edgecolor="black", label=technique)
    ax.set_xlabel("sharpness: mean training-loss increase under filter-normalised perturbations (×10⁻³)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy against sharpness (dots: seeds, diamonds: means)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_sharpness.png", dpi=110)
    plt.close(fig)


def write_plots(runs, summary, out):
    """Writes `accuracy.png`, `validation_curves.png` and (if measured) `accuracy_vs_sharpness.png` into `out`.

    Args:
        runs: the runs of `results.json`.
        summary: the output of `summarize`.
        out: a `pathlib.Path` directory.

    Returns:
        The names of the files written.

    Example:

    ```python
    import pathlib
    import tempfile
    from keras_wtrain.comparison import summarize, write_plots

    runs = [{"technique": t, "seed": 0, "test_accuracy": a, "test_loss": 0.3, "wall_time_s": 1.0, "peak_rss_mib": 1.0,
             "step_time_s": 0.01, "val_accuracy_curve": [0.8, a], "mechanisms": {"sharpness": s}}
            for t, a, s in [("baseline", 0.90, 0.004), ("sewa", 0.91, 0.003)]]
    print(write_plots(runs, summarize(runs, ["baseline", "sewa"]), pathlib.Path(tempfile.mkdtemp())))
    ```
    """
    plt = _pyplot()
    names = list(summary)
    _accuracy(plt, summary, out)
    _curves(plt, runs, names, out)
    written = ["accuracy.png", "validation_curves.png"]
    if any("sharpness" in r.get("mechanisms", {}) for r in runs):
        _sharpness(plt, runs, names, out)
        written.append("accuracy_vs_sharpness.png")
    return written
