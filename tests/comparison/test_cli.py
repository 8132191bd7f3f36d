"""`keras-wtrain compare`: the README's main job, its outputs, the user's model and data, and its errors."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest

from keras_wtrain import comparison
from keras_wtrain.comparison import cli as cli_module
from keras_wtrain.comparison.settings import DEFAULT_TECHNIQUES
from keras_wtrain.comparison.settings import RECIPE


def _cli(*args, env=None, cwd=None, timeout=120):
    """Runs the installed entry point's module in a fresh interpreter."""
    environment = dict(os.environ, **(env or {}))
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the output must be clean without it
    return subprocess.run(
        [sys.executable, "-m", "keras_wtrain.comparison.cli", "compare", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
    )


def _one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_cli_and_top_level_import_neither_keras_nor_tensorflow():
    code = (
        "import sys, keras_wtrain, keras_wtrain.comparison.cli; "
        "heavy = [m for m in ('keras', 'tensorflow', 'jax', 'torch', 'matplotlib', 'scipy') if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_help_is_fast_and_clean():
    result = subprocess.run(
        [sys.executable, "-m", "keras_wtrain.comparison.cli", "compare", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for option in ("--techniques", "--regime", "--model", "--data", "package.module:function"):
        assert option in result.stdout, option
    assert result.stderr == ""


def test_lazy_names_load_on_first_use():
    import keras_wtrain

    assert keras_wtrain.layers.WeightNormalization.__name__ == "WeightNormalization"
    assert keras_wtrain.Model is keras_wtrain.randomness.Model
    assert set(keras_wtrain.__all__) <= set(dir(keras_wtrain))
    with pytest.raises(AttributeError, match="no_such_name"):
        keras_wtrain.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--techniques", "baseline,bogus"], "unknown technique(s) 'bogus'"),
        (["--techniques", "weightnorm+bogus"], "unknown technique(s) 'bogus' in 'weightnorm+bogus'"),
        (["--techniques", "sewa+swa"], "a model installs one weight average"),
        (["--techniques", "baseline+sewa"], "baseline cannot be combined"),
        (["--techniques", "sewa+sewa"], "names a part twice"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--dataset", "tfds:svhn"], "unknown dataset 'tfds:svhn'"),
        (["--model", "transformer"], "unknown model 'transformer'; choose from cnn, mlp, resnet-small"),
        (["--data", "no_colon_here"], "'no_colon_here' is not of the form package.module:function"),
        (["--regime", "tiny"], "invalid choice: 'tiny'"),
        (["--seeds", "0"], "--seeds must be a positive integer (>= 1), received 0"),
        (["--epochs", "two"], "--epochs must be a positive integer"),
        (["--out", "/proc/keras-wtrain-cannot-write-here"], "is not writable"),
        (["--target-ci", "0"], "--target-ci must be > 0 accuracy points, received 0"),
        (["--target-ci", "-1.5"], "--target-ci must be > 0 accuracy points"),
        (["--target-ci", "wide"], "--target-ci must be a number of accuracy points, received 'wide'"),
        (["--target-ci", "2", "--seeds", "5", "--max-seeds", "3"], "--max-seeds must be >= --seeds (5), received 3"),
        (["--max-seeds", "8"], "--max-seeds bounds the seeds --target-ci adds"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, fragment):
    _one_line_error(_cli(*args), fragment)


def test_an_output_directory_of_another_job_is_refused_and_kept(tmp_path):
    (tmp_path / "job.json").write_text('{"model": "cnn", "epochs": 99}')
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "baseline__seed0.json").write_text("{}")
    result = _cli("--dataset", "digits", "--model", "mlp", "--quick", "--out", str(tmp_path), "--no-progress")
    _one_line_error(result, "holds the runs of another job: --model was 'cnn' there, 'mlp' now")
    assert (tmp_path / "runs" / "baseline__seed0.json").read_text() == "{}"


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


# ----------------------------------------------------------------------------- the user's model and data

USER_MODULE = textwrap.dedent(
    """
    import numpy as np


    def load():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return (bunch.data / 16.0).astype("float32"), bunch.target


    def build():
        import keras

        return keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
        )


    def build_three_outputs():
        import keras

        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(3)])


    def build_list():
        return [1, 2, 3]


    def load_string():
        return "not data"


    def load_fails():
        raise OSError("disk on fire")


    def load_mismatch():
        return np.zeros((10, 64), "float32"), np.zeros(9)


    NOT_A_FUNCTION = 3
    """
)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("user_project")
    (directory / "my_project").mkdir()
    (directory / "my_project" / "__init__.py").write_text("")
    (directory / "my_project" / "models.py").write_text(USER_MODULE)
    (directory / "broken.py").write_text("import numpy as np\ndef build(:\n")
    return directory


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model", "no_such_module:build"], "--model 'no_such_module:build': cannot import 'no_such_module'"),
        (["--model", "broken:build"], "cannot import 'broken' (SyntaxError"),
        (["--model", "my_project.models:missing"], "module 'my_project.models' has no attribute 'missing'"),
        (["--model", "my_project.models:NOT_A_FUNCTION"], "'NOT_A_FUNCTION' is not a function (type int)"),
        (["--data", "my_project.models:load_string"], "load_string() returned a str; expected (x, y) arrays"),
        (["--data", "my_project.models:load_fails"], "load_fails() raised OSError: disk on fire"),
        (["--data", "my_project.models:load_mismatch"], "returned x with 10 examples and y with 9"),
        (
            ["--data", "my_project.models:load", "--model", "my_project.models:build_three_outputs"],
            "build_three_outputs() outputs 3 values per example, but the data has 10 classes",
        ),
        (
            ["--data", "my_project.models:load", "--model", "my_project.models:build_list"],
            "build_list() must return a keras.Model; it returned list",
        ),
        (["--data", "my_project.models:load", "--model", "cnn"], "model cnn: calling it on the training inputs failed"),
    ],
)
def test_bad_model_or_data_function_is_one_line_and_exit_code_2(user_dir, tmp_path, args, fragment):
    _one_line_error(_cli(*args, "--quick", "--out", str(tmp_path), cwd=user_dir), fragment)


def test_user_model_and_data_from_the_working_directory(user_dir, tmp_path):
    out = tmp_path / "out"
    result = _cli(
        "--model",
        "my_project.models:build",
        "--data",
        "my_project.models:load",
        "--techniques",
        "weightnorm+sewa",
        "--seeds",
        "1",
        "--epochs",
        "6",
        "--no-progress",
        "--out",
        str(out),
        cwd=user_dir,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no library noise
    results = json.loads((out / "results.json").read_text())
    config = results["config"]
    assert config["model"] == "build" and config["dataset"] == "user data"
    assert config["techniques"] == ["baseline", "weightnorm+sewa"]
    # sklearn's 1,797 digits, split 70 / 10 / 20 % class-stratified
    assert config["train_size"] + config["validation_size"] + config["test_size"] == 1797
    assert abs(config["test_size"] - 0.2 * 1797) < 10
    combined = [r for r in results["runs"] if r["technique"] == "weightnorm+sewa"][0]
    assert combined["mechanisms"]["wrapped_layers"] == {"weightnorm": 2}
    assert combined["mechanisms"]["averaging"] == "SeWA" and combined["mechanisms"]["num_averaged"] >= 1
    assert results["runs"][0]["test_accuracy"] > 0.5
    assert "**weightnorm+sewa**" in result.stdout


def test_repeated_runs_write_nothing_to_stderr(tmp_path):
    """Several seeds of techniques that measure with compiled functions: no retracing warning, no TF start-up lines.

    A fresh interpreter, as a user's run: TensorFlow's frequent-retracing detector counts the traces of every
    function compiled from the same Python code, whatever model it was compiled for.
    """
    result = _cli(
        "--dataset",
        "digits",
        "--train-size",
        "400",
        "--techniques",
        "optimum-shift,shadow,lawa",
        "--seeds",
        "2",
        "--epochs",
        "3",
        "--no-progress",
        "--out",
        str(tmp_path),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "retracing" not in result.stdout


# ----------------------------------------------------------------------------- --quick end to end

MECHANISMS_EVERY_RUN = {"hessian_trace", "hessian_trace_ci95", "hessian_trace_layer", "sharpness", "sharpness_max"}
MECHANISMS = {
    "weightnorm": {"wrapped_layers"},
    "shadow": {"wrapped_layers", "aom_accuracy", "dom_accuracy"},
    "loss-noise": {"loss_noise_stddev"},
    "grad-dropout": {"gradient_dropout_rate"},
    "sewa": {"averaging", "averaged_steps", "num_averaged", "average_distance", "loss_average", "loss_last"},
    "lawa": {"averaging", "averaged_steps", "num_averaged", "average_distance", "loss_average", "loss_last"},
    "swa": {"averaging", "num_averaged", "average_distance", "loss_average", "loss_last"},
    "ema": {"averaging", "num_averaged", "average_distance", "loss_average", "loss_last"},
    "optimum-shift": {"shift_shifts", "shift_shifts_kept", "shift_relative_change_live", "shift_loss_change"},
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `keras-wtrain compare --quick` over every technique and the recipe (the README's main job, smoke size)."""
    out = tmp_path_factory.mktemp("compare")
    code = cli_module.main(["compare", "--quick", "--no-progress", "--out", str(out)])
    assert code == 0
    return out


def test_quick_writes_results_table_and_plots(quick_run):
    for name in (
        "results.json",
        "results.md",
        "accuracy.png",
        "validation_curves.png",
        "paired_differences.png",
        "accuracy_vs_sharpness.png",
    ):
        assert (quick_run / name).stat().st_size > 0, name
    results = json.loads((quick_run / "results.json").read_text())
    assert set(results) >= {"config", "environment", "convergence", "summary", "verdicts", "runs"}
    assert results["config"]["techniques"] == list(DEFAULT_TECHNIQUES)
    assert RECIPE in results["config"]["techniques"] and results["config"]["recipe"] == RECIPE
    assert results["config"]["seeds"] == 1 and results["config"]["epochs"] == 2
    assert results["config"]["train_size"] == 300
    # the whole comparison's wall time covers every run's own wall time
    assert results["config"]["total_wall_time_s"] >= sum(r["wall_time_s"] for r in results["runs"])
    assert set(results["summary"]) == set(DEFAULT_TECHNIQUES)
    for technique, entry in results["summary"].items():
        assert set(entry) >= {"n", "test_accuracy", "test_loss", "train_accuracy", "wall_time_s", "peak_rss_mib"}
        assert set(entry) >= {"step_time_ratio", "mechanisms"}
        assert set(entry["test_accuracy"]) == {"mean", "std", "ci95"}
        # Every technique really trained: far above chance (10%) after 2 epochs on 300 MNIST digits.
        assert entry["test_accuracy"]["mean"] > 0.3, technique
        assert math.isfinite(entry["step_time_ratio"]), technique
    assert results["summary"]["baseline"]["step_time_ratio"] == pytest.approx(1.0)
    for run in results["runs"]:
        assert len(run["val_accuracy_curve"]) == 2


def test_quick_results_hold_the_mechanism_columns(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    for run in results["runs"]:
        mechanisms = run["mechanisms"]
        assert MECHANISMS_EVERY_RUN <= set(mechanisms), run["technique"]
        assert mechanisms["hessian_trace_layer"].startswith("dense")  # the CNN's Dense(128), below the last
        assert math.isfinite(mechanisms["hessian_trace"]) and mechanisms["hessian_trace_ci95"] > 0
        for part in run["technique"].split("+"):
            assert MECHANISMS.get(part, set()) <= set(mechanisms), (run["technique"], part)
    by_technique = {r["technique"]: r["mechanisms"] for r in results["runs"]}
    assert by_technique["weightnorm"]["wrapped_layers"] == {"weightnorm": 4}
    assert by_technique["shadow"]["wrapped_layers"] == {"shadow": 2}
    assert by_technique["loss-noise"]["loss_noise_stddev"] == 0.3
    assert by_technique["grad-dropout"]["gradient_dropout_rate"] == 0.1
    shadow_run = [r for r in results["runs"] if r["technique"] == "shadow"][0]
    assert by_technique["shadow"]["aom_accuracy"] == shadow_run["test_accuracy"]
    for technique in ("sewa", "lawa"):  # checkpoints from a ring buffer: their steps
        steps = by_technique[technique]["averaged_steps"]
        assert steps == sorted(steps) and len(steps) == by_technique[technique]["num_averaged"]
    for technique in ("swa", "ema"):  # running averages: a count
        assert by_technique[technique]["averaged_steps"] is None and by_technique[technique]["num_averaged"] >= 1
    for technique in ("sewa", "swa", "lawa", "ema"):
        assert by_technique[technique]["average_distance"] >= 0.0
    # each average with its own schedule, the baseline with the harness's
    assert by_technique["swa"]["schedule"].startswith("cosine decay until epoch 1")
    assert by_technique["lawa"]["schedule"] == by_technique["sewa"]["schedule"] == "constant 0.001"
    assert by_technique["ema"]["schedule"] == by_technique["baseline"]["schedule"] == "cosine decay of Adam's 1e-3 to 0"
    assert by_technique["ema"]["average_distance"] > 0.0  # an EMA of every step differs from the last weights
    shifted = by_technique["optimum-shift"]
    assert shifted["shift_shifts"] == 3  # after each of the 2 epochs and at the end
    # the summary aggregates the numeric mechanism values over seeds
    assert set(results["summary"]["sewa"]["mechanisms"]["loss_average"]) == {"mean", "std", "ci95"}


def test_quick_records_convergence_and_warns(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    convergence = results["convergence"]
    assert convergence["converged"] is False  # 2 epochs: fewer than the 3 the criterion looks at
    assert convergence["val_accuracy_change_points"] is None
    baseline = [r for r in results["runs"] if r["technique"] == "baseline"][0]
    assert convergence["train_accuracy"] == pytest.approx(baseline["train_accuracy"])
    assert convergence["criteria"] == {"train_accuracy": 0.99, "val_change_points": 0.3, "window": 3}
    text = (quick_run / "results.md").read_text()
    assert "Warning: the baseline did not converge" in text


def test_quick_table_numbers_match_the_json(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    table = (quick_run / "results.md").read_text()
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] in results["summary"]:
            rows[cells[0]] = cells
    assert set(rows) == set(results["summary"])
    for technique, cells in rows.items():
        entry = results["summary"][technique]
        assert int(cells[1]) == entry["n"]
        accuracy = float(re.match(r"[-\d.]+", cells[2]).group())
        assert accuracy == pytest.approx(100 * entry["test_accuracy"]["mean"], abs=0.005)
        loss = float(re.match(r"[-\d.]+", cells[5]).group())
        assert loss == pytest.approx(entry["test_loss"]["mean"], abs=0.0005)
        assert float(cells[7]) == pytest.approx(entry["step_time_ratio"], abs=0.0005)
        if technique != "baseline":
            diff = float(re.match(r"[-\d.]+", cells[3]).group())
            assert diff == pytest.approx(100 * entry["accuracy_diff_vs_baseline"]["mean"], abs=0.005)


def test_quick_has_one_verdict_per_technique_and_a_mechanism_table(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    text = (quick_run / "results.md").read_text()
    for technique in DEFAULT_TECHNIQUES[1:]:
        assert re.search(rf"^- \*\*{re.escape(technique)}\*\*.* vs plain Keras", text, flags=re.M), technique
        assert results["verdicts"][technique]["vs_baseline"]["verdict"] == "one seed"
    assert results["verdicts"][RECIPE]["vs_best_part"]["part"] in RECIPE.split("+")
    assert "its best part" in text
    mechanism_rows = [line for line in text.splitlines() if line.startswith("| ") and line.count("|") == 6]
    assert len(mechanism_rows) == 1 + len(DEFAULT_TECHNIQUES)  # header + one row per technique
    sharpness = {r["technique"]: r["mechanisms"]["sharpness"] for r in results["runs"]}
    row = [line for line in mechanism_rows if line.startswith("| baseline |")][0]
    assert f"{1000 * sharpness['baseline']:.2f}" in row


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
    summary = comparison.summarize(runs, ["baseline", "shadow"])
    diffs = np.array([0.02, 0.005, 0.01])
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert summary["shadow"]["accuracy_diff_vs_baseline"]["mean"] == pytest.approx(diffs.mean())
    assert summary["shadow"]["accuracy_diff_vs_baseline"]["ci95"] == pytest.approx(half)
    assert summary["shadow"]["step_time_ratio"] == pytest.approx(1.5)
    assert summary["baseline"]["test_accuracy"]["std"] == pytest.approx(np.std([0.90, 0.91, 0.89], ddof=1))
