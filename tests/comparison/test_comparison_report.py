"""keras_wtrain.comparison.report: paired statistics, convergence, verdicts, checked against numpy and scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from keras_wtrain.comparison import convergence
from keras_wtrain.comparison import mechanism_table
from keras_wtrain.comparison import summarize
from keras_wtrain.comparison import verdict
from keras_wtrain.comparison import verdict_lines


def _run(technique, seed, accuracy, **mechanisms):
    return {
        "technique": technique,
        "seed": seed,
        "test_accuracy": accuracy,
        "test_loss": 1 - accuracy,
        "train_accuracy": 1.0,
        "wall_time_s": 1.0,
        "step_time_s": 0.01,
        "peak_rss_mib": 1.0,
        "mechanisms": mechanisms,
    }


ACCURACIES = {
    "baseline": [0.900, 0.910, 0.905, 0.895],
    "weightnorm": [0.915, 0.920, 0.918, 0.905],
    "sewa": [0.905, 0.918, 0.907, 0.900],
    "weightnorm+sewa": [0.918, 0.921, 0.925, 0.904],
}


@pytest.fixture
def runs():
    return [
        _run(t, seed, acc, sharpness=0.001 * (seed + 1), hessian_trace=10.0 + seed)
        for t, values in ACCURACIES.items()
        for seed, acc in enumerate(values)
    ]


def _t_interval(values):
    values = np.asarray(values)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean(), half


def test_combination_is_paired_against_baseline_and_each_part(runs):
    summary = summarize(runs, list(ACCURACIES))
    combined = summary["weightnorm+sewa"]
    for reference, stat in [("baseline", combined["accuracy_diff_vs_baseline"])] + list(
        combined["accuracy_diff_vs_parts"].items()
    ):
        mean, half = _t_interval(np.subtract(ACCURACIES["weightnorm+sewa"], ACCURACIES[reference]))
        assert stat["mean"] == pytest.approx(mean)
        assert stat["ci95"] == pytest.approx(half)
    assert set(combined["accuracy_diff_vs_parts"]) == {"weightnorm", "sewa"}
    assert "accuracy_diff_vs_parts" not in summary["sewa"]


def test_mechanism_values_are_aggregated_over_seeds(runs):
    summary = summarize(runs, list(ACCURACIES))
    sharp = summary["sewa"]["mechanisms"]["sharpness"]
    mean, half = _t_interval([0.001, 0.002, 0.003, 0.004])
    assert sharp["mean"] == pytest.approx(mean) and sharp["ci95"] == pytest.approx(half)
    table = "\n".join(mechanism_table(summary, runs))
    assert "| sewa | 100.00 ± 0.00 [±0.00] | 11.5 ± 1.3 [±2.1] | 2.50 ± 1.29 [±2.05] |" in table


def test_verdict_words_follow_the_interval():
    assert verdict({"mean": 0.01, "std": 0.001, "ci95": 0.005}) == ("helped", 1.0, 0.5, 1.5)
    assert verdict({"mean": -0.01, "std": 0.001, "ci95": 0.005})[0] == "hurt"
    assert verdict({"mean": 0.01, "std": 0.02, "ci95": 0.02})[0] == "no significant change"
    assert verdict({"mean": 0.0, "std": 0.0, "ci95": 0.0})[0] == "identical"
    assert verdict({"mean": 0.01, "std": math.nan, "ci95": math.nan})[0] == "one seed"
    assert verdict(None)[0] == "not run"


def test_verdict_lines_one_per_technique_and_the_recipe_against_its_best_part(runs):
    summary = summarize(runs, list(ACCURACIES))
    lines = verdict_lines(summary)
    assert len(lines) == 3 + 1  # weightnorm, sewa, the combination, and the combination vs its best part
    mean, half = _t_interval(np.subtract(ACCURACIES["weightnorm"], ACCURACIES["baseline"]))
    assert lines[0].startswith(
        f"- **weightnorm** helped vs plain Keras: {100 * mean:+.2f} points "
        f"(95% CI {100 * (mean - half):+.2f} to {100 * (mean + half):+.2f}; MDE "
    )
    assert lines[3].startswith("- **weightnorm+sewa**: no significant change vs its best part (weightnorm): ")
    assert "seeds detect a change of" in lines[3]
    assert lines[3].endswith("it does not beat its best part.")


def test_verdict_for_parts_not_run():
    runs = [_run("baseline", s, 0.9) for s in range(2)] + [_run("weightnorm+sewa", s, 0.91 + s / 100) for s in range(2)]
    summary = summarize(runs, ["baseline", "weightnorm+sewa"])
    assert summary["weightnorm+sewa"]["accuracy_diff_vs_parts"] == {}
    assert len(verdict_lines(summary)) == 1


def _baseline(curve, train_accuracy, seed=0):
    return {"technique": "baseline", "seed": seed, "train_accuracy": train_accuracy, "val_accuracy_curve": curve}


def test_convergence_uses_the_mean_curve_of_the_last_three_epochs():
    runs = [
        _baseline([0.80, 0.900, 0.910, 0.912], 1.0, seed=0),
        _baseline([0.82, 0.920, 0.914, 0.913], 0.99, seed=1),
        {"technique": "sewa", "seed": 0, "train_accuracy": 0.5, "val_accuracy_curve": [0.1, 0.2, 0.3]},
    ]
    result = convergence(runs)
    mean_curve = np.mean([[0.80, 0.900, 0.910, 0.912], [0.82, 0.920, 0.914, 0.913]], axis=0)
    assert result["val_accuracy_change_points"] == pytest.approx(100 * abs(mean_curve[-1] - mean_curve[-3]))
    assert result["train_accuracy"] == pytest.approx(0.995)
    assert result["converged"] is True and result["message"].startswith("The baseline converged")


@pytest.mark.parametrize(
    "curve, train_accuracy, reason",
    [
        ([0.80, 0.85, 0.90, 0.92], 1.0, "changed 7.00 points"),  # still rising
        ([0.90, 0.91, 0.91, 0.91], 0.95, "training accuracy 95.0 %"),  # not fitted
        ([0.90, 0.91], 1.0, "fewer than 3 epochs"),
    ],
)
def test_convergence_failures_say_why(curve, train_accuracy, reason):
    result = convergence([_baseline(curve, train_accuracy)])
    assert result["converged"] is False
    assert result["message"].startswith("Warning: the baseline did not converge")
    assert reason in result["message"]
