"""PSO vs Keras Tuner's RandomSearch and BayesianOptimization on this library's search space.

Each tuner searches the same 4-d space for a small MLP (64-32-10) on scikit-learn's 8x8 digits
(`keras_wtrain.comparison.datasets.load_digits`: 1,078 train / 360 validation / 359 test images):

- `learning_rate`: Float [1e-4, 1e-1], log scale (the model's Adam);
- `loss_noise_stddev` (Float [0, 1]), `loss_noise_schedule` (`constant` / `linear_decay`) and
  `gradient_dropout_rate` (Float [0, 0.5]): `keras_wtrain.tuning.spaces.search_space`'s ranges for
  `techniques=("loss-noise", "grad-dropout")`, applied by `keras_wtrain.tuning.spaces.HyperModel`.

Every tuner runs with its defaults except the shared budget: `PSO` with its default 5 particles and
30 trials, `RandomSearch`, `BayesianOptimization` (12 random initial points: 3 x the 4 dimensions,
then a Gaussian process with upper confidence bound), each for the same number of trials and the
same tuner seeds. Each trial trains for 6 epochs (Adam, batch 32) from the same initial weights
(`keras.utils.set_random_seed(0)` in the model builder, seed 0 for the loss noise and gradient
dropout draws), so a configuration always gets the same score and the tuners differ only in which
configurations they try. The score is Keras Tuner's: the best epoch's validation accuracy. A trial
that fails (e.g. a gradient-dropout rate in (0, 1/512), which `GradientDropout` rejects) counts against
the budget, as it does in any Keras Tuner search; the table counts them.

Reported: the best validation accuracy found after each trial (mean over tuner seeds; 95% t
confidence interval at the final budget), and, once per search, the test accuracy of the best
configuration retrained from scratch (the same deterministic training, scored at its last epoch).
The tuners run interleaved (seed by seed) so that machine load hits them alike. Keras Tuner's
trial directories go to a temporary directory that is deleted at the end.

Writes results/tuning.{json,md,png}.

    python benchmarks/tuning.py [--quick]     # --quick: 2 seeds x 6 trials, 3 particles, 2 epochs
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from common import RESULTS  # noqa: E402
from common import write_results  # noqa: E402

from keras_wtrain.comparison.datasets import load_digits  # noqa: E402
from keras_wtrain.tuning.pso import PSO  # noqa: E402
from keras_wtrain.tuning.spaces import HyperModel  # noqa: E402
from keras_wtrain.tuning.spaces import search_space  # noqa: E402

TECHNIQUES = ("loss-noise", "grad-dropout")
FULL = {"seeds": 3, "max_trials": 30, "swarm_size": None, "epochs": 6, "batch_size": 32}
QUICK = {"seeds": 2, "max_trials": 6, "swarm_size": 3, "epochs": 2, "batch_size": 32}
TUNERS = ("PSO", "RandomSearch", "BayesianOptimization")


class _NoTensorBoardImport:
    """Keras Tuner 1.4.8 imports `tensorboard` for every trial under TensorFlow, which TF >= 2.20 no longer
    installs; it is only needed with a TensorBoard callback (the same guard as `keras_wtrain.tuning.pso.PSO`)."""

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        if any(callback.__class__.__name__ == "TensorBoard" for callback in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)


class RandomSearch(_NoTensorBoardImport, keras_tuner.RandomSearch):
    pass


class BayesianOptimization(_NoTensorBoardImport, keras_tuner.BayesianOptimization):
    pass


def make_hypermodel(data, settings):
    steps_per_epoch = -(-len(data.x_train) // settings["batch_size"])

    def build(hp):
        keras.utils.set_random_seed(0)  # same initial weights for every configuration
        model = keras.Sequential(
            [
                keras.Input(data.x_train.shape[1:]),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(data.num_classes),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-1, sampling="log")),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            # A whole epoch per call and no XLA: each trial is a new model, and tracing, not the arithmetic
            # of this tiny MLP, is what a trial costs.
            steps_per_execution=steps_per_epoch,
            jit_compile=False,
        )
        return model

    schedule_steps = settings["epochs"] * steps_per_epoch
    return HyperModel(build, techniques=TECHNIQUES, seed=0, schedule_steps=schedule_steps)


def space():
    """The whole space, registered before the search (otherwise every tuner's first trial runs the defaults)."""
    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", 1e-4, 1e-1, sampling="log")
    search_space(hp, techniques=TECHNIQUES)
    return hp


def make_tuner(name, hypermodel, seed, settings, directory):
    common = dict(
        hypermodel=hypermodel,
        objective="val_accuracy",
        max_trials=settings["max_trials"],
        seed=seed,
        hyperparameters=space(),
        directory=directory,
        project_name=f"{name}_{seed}",
        overwrite=True,
    )
    if name == "PSO":
        if settings["swarm_size"] is not None:
            common["swarm_size"] = settings["swarm_size"]
        return PSO(**common)
    if name == "RandomSearch":
        return RandomSearch(**common)
    return BayesianOptimization(**common)


def best_so_far(tuner, max_trials):
    """Best validation accuracy after each trial, in the order the trials ran (padded if the search stopped).

    Returns the curve (NaN until a first trial succeeds), the number of trials run and the number that failed.
    """
    trials = sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))
    completed = [t.status == "COMPLETED" and t.score is not None and np.isfinite(t.score) for t in trials]
    scores = [t.score if ok else np.nan for t, ok in zip(trials, completed)]
    curve = np.fmax.accumulate(np.array(scores, dtype=float)).tolist()
    return curve + [curve[-1]] * (max_trials - len(curve)), len(trials), completed.count(False)


def test_accuracy_of_best(tuner, hypermodel, data, settings):
    best = tuner.get_best_hyperparameters()[0]
    model = hypermodel.build(best)
    hypermodel.fit(
        best, model, data.x_train, data.y_train, epochs=settings["epochs"], batch_size=settings["batch_size"], verbose=0
    )
    return float(model.evaluate(data.x_test, data.y_test, verbose=0)[1]), dict(best.values)


def ci95(values):
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan")
    return float(scipy.stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def plot(results, settings, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = np.arange(1, settings["max_trials"] + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, colour in zip(TUNERS, ("tab:red", "tab:blue", "tab:green")):
        curves = 100 * np.array([run["curve"] for run in results[name]["runs"]])
        mean = np.nanmean(curves, axis=0)
        half = np.array([ci95(curves[:, k]) for k in range(curves.shape[1])])
        ax.plot(trials, mean, color=colour, label=name)
        if np.all(np.isfinite(half)):
            ax.fill_between(trials, mean - half, mean + half, color=colour, alpha=0.15, linewidth=0)
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation accuracy so far (%)")
    ax.set_title(f"digits MLP, {len(results['PSO']['runs'])} tuner seeds (mean, 95% CI band)")
    early = min(4, settings["max_trials"] - 1)  # the y axis starts a little below the worst best-of-5
    lowest = np.nanmin([100 * run["curve"][early] for r in results.values() for run in r["runs"]])
    ax.set_ylim(max(lowest - 2, 0) if np.isfinite(lowest) else 0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results, settings, wall_s):
    budget = settings["max_trials"]
    marks = sorted({k for k in (5, 10, 20, budget) if k <= budget})
    seeds = len(results["PSO"]["runs"])
    swarm = settings["swarm_size"] or 5
    lines = [
        f"Digits MLP (64-32-10), {settings['epochs']} epochs per trial; searched: learning rate, loss-noise σ and "
        f"schedule, gradient-dropout rate. {budget} trials per search, {seeds} tuner seeds; PSO with {swarm} "
        f"particles. Total wall time {wall_s / 60:.1f} min.",
        "",
        "Best validation accuracy found (%) after *n* trials, mean over seeds; at the full budget mean ± std "
        "[95% CI half-width]. Test accuracy: the best configuration of each search retrained and scored once "
        "on the test split.",
        "",
        "| tuner | " + " | ".join(f"n = {k}" for k in marks[:-1]) + f" | n = {budget} | test accuracy (%) "
        "| failed trials | search time (s) |",
        "|---|" + "---|" * (len(marks) + 3),
    ]
    for name in TUNERS:
        curves = 100 * np.array([run["curve"] for run in results[name]["runs"]])
        final = curves[:, -1]
        tests = 100 * np.array([run["test_accuracy"] for run in results[name]["runs"]])
        times = [run["search_s"] for run in results[name]["runs"]]
        failed = sum(run["failed_trials"] for run in results[name]["runs"])
        cells = [f"{np.nanmean(curves[:, k - 1]):.2f}" for k in marks[:-1]]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {final.mean():.2f} ± {final.std(ddof=1):.2f} [±{ci95(final):.2f}] "
            + f"| {tests.mean():.2f} ± {tests.std(ddof=1):.2f} [±{ci95(tests):.2f}] "
            + f"| {failed} of {curves.size} | {np.mean(times):.0f} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds x 6 trials, 2 epochs")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    data = load_digits(flatten=True, validation_fraction=0.2)
    hypermodel = make_hypermodel(data, settings)
    results = {name: {"runs": []} for name in TUNERS}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wtrain_tuning_") as directory:
        for seed in range(settings["seeds"]):
            for name in TUNERS:
                tuner = make_tuner(name, hypermodel, seed, settings, directory)
                began = time.perf_counter()
                tuner.search(
                    data.x_train,
                    data.y_train,
                    validation_data=(data.x_val, data.y_val),
                    epochs=settings["epochs"],
                    batch_size=settings["batch_size"],
                    verbose=0,
                )
                search_s = time.perf_counter() - began
                curve, num_trials, failed = best_so_far(tuner, settings["max_trials"])
                test_accuracy, best_values = test_accuracy_of_best(tuner, hypermodel, data, settings)
                results[name]["runs"].append(
                    {
                        "seed": seed,
                        "curve": curve,
                        "num_trials": num_trials,
                        "failed_trials": failed,
                        "best_values": best_values,
                        "test_accuracy": test_accuracy,
                        "search_s": search_s,
                    }
                )
                print(
                    f"seed {seed} {name}: best val {100 * curve[-1]:.2f}% after {num_trials} trials "
                    f"({failed} failed), "
                    f"test {100 * test_accuracy:.2f}%, {search_s:.0f} s",
                    flush=True,
                )
    wall_s = time.perf_counter() - start
    for entry in results.values():
        finals = [run["curve"][-1] for run in entry["runs"]]
        tests = [run["test_accuracy"] for run in entry["runs"]]
        entry["final_best_val"] = {"mean": float(np.mean(finals)), "ci95": ci95(finals)}
        entry["test_accuracy"] = {"mean": float(np.mean(tests)), "ci95": ci95(tests)}
    payload = {
        "quick": args.quick,
        "settings": settings,
        "dataset": {"name": "digits", "train": len(data.x_train), "val": len(data.x_val), "test": len(data.x_test)},
        "techniques": list(TECHNIQUES),
        "wall_time_s": wall_s,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(results, settings, RESULTS / "tuning.png")
    write_results("tuning", payload, table(results, settings, wall_s))


if __name__ == "__main__":
    main()
