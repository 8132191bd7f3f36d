"""The PNG plots of a comparison: accuracy per technique, paired differences, validation curves, sharpness."""

import math

import numpy as np

__all__ = ["PLOTS", "paired_differences_figure", "technique_styles", "write_plots"]

PLOTS = ("accuracy.png", "paired_differences.png", "validation_curves.png", "accuracy_vs_sharpness.png")

# Matplotlib's "tab10" colours, then line styles and markers that change once per 10 techniques: every
# (colour, line style) pair and every (colour, marker) pair is distinct for the first 40 techniques.
_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "v")
_BASELINE = {"color": "black", "linestyle": "-", "marker": "D", "linewidth": 2.6}


def technique_styles(names):
    """One distinct matplotlib style per technique, the same in every plot of a comparison.

    The baseline is black, solid and thicker; the other techniques, in order, take the 10 "tab10" colours with
    solid lines and circles, then the same colours dashed with squares, then dotted with triangles, then dash-dot.
    No two of the first 40 techniques share a (colour, line style) or a (colour, marker) pair; beyond that the
    styles repeat.

    Args:
        names: the technique names, in table order (`"baseline"` may be among them, anywhere).

    Returns:
        `{name: {"color", "linestyle", "marker", "linewidth"}}`, keyword arguments of `Axes.plot`.

    Example:

    ```python
    from keras_wtrain.comparison.plots import technique_styles

    styles = technique_styles(["baseline", "weightnorm", "sewa"])
    print(styles["baseline"])  # {'color': 'black', 'linestyle': '-', 'marker': 'D', 'linewidth': 2.6}
    print(styles["sewa"]["color"])  # '#ff7f0e'
    ```
    """
    styles, i = {}, 0
    for name in names:
        if name == "baseline":
            styles[name] = dict(_BASELINE)
            continue
        group = (i // len(_COLORS)) % len(_LINESTYLES)
        styles[name] = {
            "color": _COLORS[i % len(_COLORS)],
            "linestyle": _LINESTYLES[group],
            "marker": _MARKERS[group],
            "linewidth": 1.5,
        }
        i += 1
    return styles


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _accuracy(plt, summary, out, styles):
    names = list(summary)
    means = [100 * summary[t]["test_accuracy"]["mean"] for t in names]
    errors = [
        0.0 if math.isnan(summary[t]["test_accuracy"]["ci95"]) else 100 * summary[t]["test_accuracy"]["ci95"]
        for t in names
    ]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    bars = ax.bar(names, means, yerr=errors, capsize=4, color=[styles[t]["color"] for t in names], alpha=0.8)
    for bar, technique in zip(bars, names):  # the line style's group as a hatch, so repeated colours differ
        bar.set_hatch({"-": "", "--": "//", ":": "..", "-.": "xx"}[styles[technique]["linestyle"]])
    ax.set_ylim(
        max(0, min(m - e for m, e in zip(means, errors)) - 2), min(100, max(m + e for m, e in zip(means, errors)) + 1)
    )
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy per technique (mean, 95% CI over seeds)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)


def _curves(plt, runs, names, out, styles):
    fig, ax = plt.subplots(figsize=(7, 4))
    for technique in names:
        curves = [r["val_accuracy_curve"] for r in runs if r["technique"] == technique and r["val_accuracy_curve"]]
        if curves:
            length = min(len(c) for c in curves)
            mean = 100 * np.mean([c[:length] for c in curves], axis=0)
            z = 1.5 if technique == "baseline" else 2  # the thick baseline under the others
            ax.plot(range(1, length + 1), mean, markersize=3, label=technique, zorder=z, **styles[technique])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Validation accuracy during training (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "validation_curves.png", dpi=110)
    plt.close(fig)


def _sharpness(plt, runs, names, out, styles):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for technique in names:
        points = [
            (1000 * r["mechanisms"]["sharpness"], 100 * r["test_accuracy"])
            for r in runs
            if r["technique"] == technique and "sharpness" in r.get("mechanisms", {})
        ]
        if not points:
            continue
        xs, ys = zip(*points)
        color, marker = styles[technique]["color"], styles[technique]["marker"]
        ax.scatter(xs, ys, s=14, alpha=0.5, color=color, marker=marker)
        ax.scatter([np.mean(xs)], [np.mean(ys)], s=70, marker=marker, color=color, edgecolor="white", label=technique)
    ax.set_xlabel("sharpness: mean training-loss increase under filter-normalised perturbations (×10⁻³)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy against sharpness (small: seeds, large: means)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_sharpness.png", dpi=110)
    plt.close(fig)


def paired_differences_figure(summary, plt=None):
    """A forest plot of the paired accuracy differences vs the baseline: one row per technique.

    Each row shows the mean paired difference (technique − baseline, accuracy points) as a point in the
    technique's style, its 95 % interval as a horizontal bar, and as a shaded band around 0 the minimum detectable
    effect at 80 % power (`report.minimum_detectable_effect`): true effects inside the band would often go unseen
    with this many seeds. A vertical line marks 0. The right margin prints the numbers; a technique with one seed
    has a point only, one without a common seed with the baseline a "not run" label.

    Args:
        summary: the output of `summarize` (the baseline is not a row).
        plt: `matplotlib.pyplot` (default: imported with the non-interactive Agg backend).

    Returns:
        The matplotlib figure; its single axes has one y tick per technique, labelled with its name, top to bottom
        in table order. The caller saves and closes it.

    Example:

    ```python
    from keras_wtrain.comparison.plots import paired_differences_figure

    summary = {"baseline": {}, "sewa": {"accuracy_diff_vs_baseline": {"mean": 0.015, "std": 0.003, "ci95": 0.0076,
                                                                      "n": 3, "mde80": 0.0095}}}
    fig = paired_differences_figure(summary)
    print([t.get_text() for t in fig.axes[0].get_yticklabels()])  # ['sewa']
    ```
    """
    plt = plt or _pyplot()
    names = [t for t in summary if t != "baseline"]
    styles = technique_styles(list(summary))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * max(1, len(names))))
    spans = [0.0]
    for row, technique in enumerate(names):
        y = len(names) - 1 - row
        diff = summary[technique].get("accuracy_diff_vs_baseline")
        color = styles[technique]["color"]
        if not diff:
            ax.text(0, y, "not run", ha="center", va="center", fontsize=8, color="0.4")
            continue
        mean, ci = 100 * diff["mean"], 100 * diff["ci95"]
        mde = 100 * diff.get("mde80", float("nan"))
        if math.isfinite(mde) and mde > 0:
            ax.fill_between([-mde, mde], y - 0.3, y + 0.3, color="0.85", linewidth=0, zorder=1)
            spans.append(mde)
        if math.isfinite(ci):
            ax.errorbar(mean, y, xerr=ci, fmt="none", ecolor=color, elinewidth=2, capsize=4, zorder=3)
            spans.append(abs(mean) + ci)
            label = f"{mean:+.2f} [{mean - ci:+.2f}, {mean + ci:+.2f}]"
            label += f", MDE {mde:.2f}" if math.isfinite(mde) else ""
        else:
            label = f"{mean:+.2f} (one seed: no CI, no MDE)"
        spans.append(abs(mean))
        ax.plot([mean], [y], marker=styles[technique]["marker"], color=color, markersize=7, zorder=4, linestyle="")
        ax.annotate(label, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    ax.axvline(0, color="black", linewidth=1, zorder=2)
    reach = 1.1 * max(spans) or 1.0
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_yticks(range(len(names) - 1, -1, -1), names)
    ax.set_xlabel("test accuracy − baseline (points, paired by seed)")
    ax.set_title("Paired differences vs plain Keras: mean, 95% CI; grey: MDE at 80% power", fontsize=10)
    ax.grid(axis="x", color="0.9", zorder=0)
    fig.tight_layout()
    fig.subplots_adjust(right=0.68)
    return fig


def _paired_differences(plt, summary, out):
    fig = paired_differences_figure(summary, plt)
    fig.savefig(out / "paired_differences.png", dpi=110)
    plt.close(fig)


def write_plots(runs, summary, out):
    """Writes the plots into `out`, each technique in the same distinct style (`technique_styles`) in all of them.

    `accuracy.png` (test accuracy per technique), `paired_differences.png` (a forest plot of the paired
    differences vs the baseline with their intervals and MDEs, `paired_differences_figure`; when there is a
    baseline and another technique), `validation_curves.png` and, if measured, `accuracy_vs_sharpness.png`.

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
    styles = technique_styles(names)
    _accuracy(plt, summary, out, styles)
    written = ["accuracy.png"]
    if "baseline" in summary and len(summary) > 1:
        _paired_differences(plt, summary, out)
        written.append("paired_differences.png")
    _curves(plt, runs, names, out, styles)
    written.append("validation_curves.png")
    if any("sharpness" in r.get("mechanisms", {}) for r in runs):
        _sharpness(plt, runs, names, out, styles)
        written.append("accuracy_vs_sharpness.png")
    return written
