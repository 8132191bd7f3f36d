"""`keras-wtrain compare`: the README's main job, its outputs and its errors."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from keras_wtrain import cli as cli_module
from keras_wtrain import compare as compare_module


def _cli(*args, env=None):
    """Runs the installed entry point's module in a fresh interpreter."""
    environment = dict(os.environ, **(env or {}))
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the errors must be clean without it
    return subprocess.run(
        [sys.executable, "-m", "keras_wtrain.cli", "compare", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_cli_and_top_level_import_neither_keras_nor_tensorflow():
    code = (
        "import sys, keras_wtrain, keras_wtrain.cli; "
        "heavy = [m for m in ('keras', 'tensorflow', 'jax', 'torch', 'matplotlib', 'scipy') if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_help_is_fast_and_clean():
    result = subprocess.run(
        [sys.executable, "-m", "keras_wtrain.cli", "compare", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "--techniques" in result.stdout and result.stderr == ""


def test_lazy_names_load_on_first_use():
    import keras_wtrain

    assert keras_wtrain.layers.WeightNormalization.__name__ == "WeightNormalization"
    assert keras_wtrain.Model is keras_wtrain.training.Model
    assert set(keras_wtrain.__all__) <= set(dir(keras_wtrain))
    with pytest.raises(AttributeError, match="no_such_name"):
        keras_wtrain.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--techniques", "baseline,bogus"], "unknown technique(s) bogus"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--dataset", "tfds:svhn"], "unknown dataset 'tfds:svhn'"),
        (["--seeds", "0"], "--seeds must be a positive integer (>= 1), received 0"),
        (["--epochs", "two"], "--epochs must be a positive integer"),
        (["--out", "/proc/keras-wtrain-cannot-write-here"], "is not writable"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, fragment):
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_tfds_dataset_missing_offline_is_a_clear_error(tmp_path):
    # An empty TFDS data directory: what a machine without prepared CIFAR-10 has.
    result = _cli(
        "--dataset",
        "tfds:cifar10",
        "--quick",
        "--out",
        str(tmp_path / "out"),
        env={"TFDS_DATA_DIR": str(tmp_path / "tfds")},
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("keras-wtrain: error: TFDS dataset 'cifar10' is not available locally")
    assert "tfds build cifar10" in last


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `keras-wtrain compare --quick` over every technique (the README's main job, smoke size)."""
    out = tmp_path_factory.mktemp("compare")
    code = cli_module.main(["compare", "--quick", "--no-progress", "--out", str(out)])
    assert code == 0
    return out


def test_quick_writes_results_table_and_plots(quick_run):
    for name in ("results.json", "results.md", "accuracy.png", "validation_curves.png"):
        assert (quick_run / name).stat().st_size > 0, name
    results = json.loads((quick_run / "results.json").read_text())
    assert set(results) >= {"config", "environment", "summary", "runs"}
    assert results["config"]["techniques"] == list(compare_module.TECHNIQUES)
    assert results["config"]["seeds"] == 1 and results["config"]["epochs"] == 2
    assert results["config"]["train_size"] == 300
    # the whole comparison's wall time covers every run's own wall time
    assert results["config"]["total_wall_time_s"] >= sum(r["wall_time_s"] for r in results["runs"])
    assert set(results["summary"]) == set(compare_module.TECHNIQUES)
    for technique, entry in results["summary"].items():
        assert set(entry) >= {"n", "test_accuracy", "test_loss", "wall_time_s", "peak_rss_mib", "step_time_ratio"}
        assert set(entry["test_accuracy"]) == {"mean", "std", "ci95"}
        # Every technique really trained: far above chance (10%) after 2 epochs on 300 MNIST digits.
        assert entry["test_accuracy"]["mean"] > 0.5, technique
        assert math.isfinite(entry["step_time_ratio"]), technique
    assert results["summary"]["baseline"]["step_time_ratio"] == pytest.approx(1.0)
    for run in results["runs"]:
        assert len(run["val_accuracy_curve"]) == 2


def test_quick_table_numbers_match_the_json(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    table = (quick_run / "results.md").read_text()
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0] in results["summary"]:
            rows[cells[0]] = cells
    assert set(rows) == set(results["summary"])
    for technique, cells in rows.items():
        entry = results["summary"][technique]
        assert int(cells[1]) == entry["n"]
        accuracy = float(re.match(r"[-\d.]+", cells[2]).group())
        assert accuracy == pytest.approx(100 * entry["test_accuracy"]["mean"], abs=0.005)
        loss = float(re.match(r"[-\d.]+", cells[4]).group())
        assert loss == pytest.approx(entry["test_loss"]["mean"], abs=0.0005)
        assert float(cells[6]) == pytest.approx(entry["step_time_ratio"], abs=0.0005)
        if technique != "baseline":
            diff = float(re.match(r"[-\d.]+", cells[3]).group())
            assert diff == pytest.approx(100 * entry["accuracy_diff_vs_baseline"]["mean"], abs=0.005)


def test_summary_statistics_against_numpy():
    import numpy as np
    from scipy import stats

    runs = []
    for seed, (base, tech) in enumerate([(0.90, 0.92), (0.91, 0.915), (0.89, 0.90)]):
        for technique, acc in (("baseline", base), ("shadow", tech)):
            runs.append(
                {
                    "technique": technique,
                    "seed": seed,
                    "test_accuracy": acc,
                    "test_loss": 1 - acc,
                    "wall_time_s": 10.0 + seed,
                    "step_time_s": 0.01 * (1.5 if technique == "shadow" else 1.0),
                    "peak_rss_mib": 100.0,
                }
            )
    summary = compare_module.summarize(runs, ["baseline", "shadow"])
    diffs = np.array([0.02, 0.005, 0.01])
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert summary["shadow"]["accuracy_diff_vs_baseline"]["mean"] == pytest.approx(diffs.mean())
    assert summary["shadow"]["accuracy_diff_vs_baseline"]["ci95"] == pytest.approx(half)
    assert summary["shadow"]["step_time_ratio"] == pytest.approx(1.5)
    assert summary["baseline"]["test_accuracy"]["std"] == pytest.approx(np.std([0.90, 0.91, 0.89], ddof=1))
