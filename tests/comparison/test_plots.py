"""keras_wtrain.comparison.plots: the forest plot of paired differences, one distinct style per technique."""

import inspect
import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from keras_wtrain.comparison.plots import paired_differences_figure  # noqa: E402
from keras_wtrain.comparison.plots import technique_styles  # noqa: E402
from keras_wtrain.comparison.plots import write_plots  # noqa: E402
from keras_wtrain.comparison.report import summarize  # noqa: E402
from keras_wtrain.comparison.settings import DEFAULT_TECHNIQUES  # noqa: E402

TECHNIQUES = ["baseline", "weightnorm", "sewa", "ema", "weightnorm+sewa"]


def _runs(techniques, seeds, sharpness=True):
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(seeds):
        base = 0.9 + rng.normal(0, 0.01)
        for i, technique in enumerate(techniques):
            accuracy = base + 0.003 * i + rng.normal(0, 0.003) if technique != "baseline" else base
            runs.append(
                {
                    "technique": technique,
                    "seed": seed,
                    "test_accuracy": accuracy,
                    "test_loss": 1 - accuracy,
                    "wall_time_s": 1.0,
                    "step_time_s": 0.01,
                    "peak_rss_mib": 1.0,
                    "val_accuracy_curve": [0.8, 0.85, accuracy],
                    "mechanisms": {"sharpness": 0.001 * (i + 1)} if sharpness else {},
                }
            )
    return runs


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("count", [1, 2, 11, 16, 40])
def test_every_technique_gets_a_distinct_style(count):
    names = ["baseline"] + [f"technique-{i}" for i in range(count - 1)]
    styles = technique_styles(names)
    assert list(styles) == names
    line_pairs = {(s["color"], s["linestyle"]) for s in styles.values()}
    marker_pairs = {(s["color"], s["marker"]) for s in styles.values()}
    assert len(line_pairs) == len(marker_pairs) == count
    assert styles["baseline"]["color"] == "black"
    assert all(styles["baseline"]["linewidth"] > s["linewidth"] for n, s in styles.items() if n != "baseline")
    assert all(s["color"] != "black" for n, s in styles.items() if n != "baseline")


def test_styles_do_not_depend_on_where_the_baseline_is():
    assert technique_styles(["sewa", "baseline", "ema"]) == technique_styles(["baseline", "sewa", "ema"])


def test_forest_plot_has_one_row_per_technique():
    runs = _runs(TECHNIQUES, seeds=3)
    summary = summarize(runs, TECHNIQUES)
    fig = paired_differences_figure(summary)
    (ax,) = fig.axes
    rows = TECHNIQUES[1:]
    assert [t.get_text() for t in ax.get_yticklabels()] == rows  # top to bottom in table order
    assert list(ax.get_yticks()) == list(range(len(rows) - 1, -1, -1))
    # one interval bar per technique, centred on its mean difference, as wide as its 95 % CI
    bars = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    assert len(bars) == len(rows)
    for y, technique in zip(range(len(rows) - 1, -1, -1), rows):
        diff = summary[technique]["accuracy_diff_vs_baseline"]
        points = [ln for ln in ax.lines if list(ln.get_ydata()) == [y] and ln.get_marker() not in ("|", "None", None)]
        assert points and points[0].get_xdata()[0] == pytest.approx(100 * diff["mean"])
        assert points[0].get_color() == technique_styles(TECHNIQUES)[technique]["color"]
    segments = sorted((seg[0][1], seg[0][0], seg[1][0]) for bar in bars for seg in bar.get_segments())
    for (y, low, high), technique in zip(segments, reversed(rows)):
        diff = summary[technique]["accuracy_diff_vs_baseline"]
        assert (low, high) == pytest.approx((100 * (diff["mean"] - diff["ci95"]), 100 * (diff["mean"] + diff["ci95"])))
    # the MDE as a shaded band [-MDE, +MDE] on each row, and a vertical line at 0
    bands = [c for c in ax.collections if isinstance(c, PolyCollection) and c.__class__.__name__ != "LineCollection"]
    assert len(bands) == len(rows)
    widths = sorted(float(np.ptp(b.get_paths()[0].vertices[:, 0])) for b in bands)
    expected = sorted(200 * summary[t]["accuracy_diff_vs_baseline"]["mde80"] for t in rows)
    assert widths == pytest.approx(expected)
    assert any(list(ln.get_xdata()) == [0, 0] for ln in ax.lines)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == len(rows) and all("MDE" in t for t in texts)


def test_forest_plot_with_one_seed_has_points_and_says_why_there_is_no_bar():
    summary = summarize(_runs(TECHNIQUES, seeds=1), TECHNIQUES)
    ax = paired_differences_figure(summary).axes[0]
    assert len(ax.get_yticklabels()) == len(TECHNIQUES) - 1
    assert not [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    assert all("one seed: no CI, no MDE" in t.get_text() for t in ax.texts)


def test_write_plots_writes_the_forest_plot(tmp_path):
    runs = _runs(TECHNIQUES, seeds=3)
    written = write_plots(runs, summarize(runs, TECHNIQUES), tmp_path)
    assert written == ["accuracy.png", "paired_differences.png", "validation_curves.png", "accuracy_vs_sharpness.png"]
    for name in written:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_write_plots_without_a_baseline_skips_the_forest_plot(tmp_path):
    runs = _runs(["sewa", "ema"], seeds=2, sharpness=False)
    assert write_plots(runs, summarize(runs, ["sewa", "ema"]), tmp_path) == ["accuracy.png", "validation_curves.png"]
    assert not (tmp_path / "paired_differences.png").exists()


def _kept_figures(monkeypatch, runs, names, tmp_path):
    """The figures `write_plots` draws, kept open (by title) instead of closed after saving."""
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    write_plots(runs, summarize(runs, names), tmp_path)
    figures = [plt.figure(n) for n in plt.get_fignums()]
    return {fig.axes[0].get_title(): fig.axes[0] for fig in figures}


def test_every_plot_tells_every_technique_apart(monkeypatch, tmp_path):
    names = list(DEFAULT_TECHNIQUES)  # the baseline and 10 techniques: more than one colour cycle
    assert len(names) >= 11
    axes = _kept_figures(monkeypatch, _runs(names, seeds=2), names, tmp_path)
    styles = technique_styles(names)
    curves = next(ax for title, ax in axes.items() if title.startswith("Validation accuracy"))
    drawn = {ln.get_label(): (matplotlib.colors.to_hex(ln.get_color()), ln.get_linestyle()) for ln in curves.lines}
    assert set(drawn) == set(names)
    assert len(set(drawn.values())) == len(names)
    for name, (color, linestyle) in drawn.items():
        assert color == matplotlib.colors.to_hex(styles[name]["color"])
        assert linestyle == styles[name]["linestyle"]
    assert max(curves.lines, key=lambda ln: ln.get_linewidth()).get_label() == "baseline"
    sharpness = next(ax for title, ax in axes.items() if title.startswith("Test accuracy against sharpness"))
    handles, labels = sharpness.get_legend_handles_labels()
    assert labels == names
    means = {
        label: (matplotlib.colors.to_hex(h.get_facecolor()[0]), h.get_paths()[0].vertices.round(3).tobytes())
        for h, label in zip(handles, labels)
    }
    assert len(set(means.values())) == len(names)  # (colour, marker) pairs differ
    bars = next(ax for title, ax in axes.items() if title.startswith("Test accuracy per technique"))
    colors = [matplotlib.colors.to_hex(p.get_facecolor(), keep_alpha=False) for p in bars.patches]
    hatches = [p.get_hatch() or "" for p in bars.patches]
    assert len(set(zip(colors, hatches))) == len(names)
    assert colors == [matplotlib.colors.to_hex(styles[n]["color"]) for n in names]


@pytest.mark.parametrize("function", [technique_styles, paired_differences_figure], ids=lambda f: f.__name__)
def test_docstring_examples_run(function):
    doc = inspect.getdoc(function)
    assert "Example:" in doc and "Args:" in doc and "Returns:" in doc
    (block,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    exec(compile(block, f"<Example of {function.__name__}>", "exec"), {})
