"""SeWA vs LAWA vs SWA vs EMA vs a random K-subset on the same trajectory, in the converged compare regime.

One training run per seed with `keras-wtrain compare`'s converged regime (MNIST CNN, 1,000-example
stratified MNIST-5k training subset, 15 epochs, batch 64, Adam with the learning rate decayed from 1e-3
to 0 along a cosine: `keras_wtrain.comparison.default_optimizer`). A `SeWA(install=False)`
callback keeps the checkpoints of compare's schedule (`averaging_schedule`: T = 20 spread over the second
half of training, K = 10), and every strategy is computed afterwards from that same buffer
(`average_weights(strategy)`), installed and evaluated once on the test split. The baseline is the final
weights of the same run.

Measured per seed: test accuracy of each strategy (paired against the baseline and against LAWA, 95 %
Student-t intervals over seeds), the training-loss objective F of each average on the selection data
(SeWA's own `selection_report`: its choice, LAWA, the whole window and the best of 20 random K-subsets),
where SeWA's choice came from (LAWA kept, relaxed mask, swap search), and SeWA's selection wall time over
the median training epoch of the same run (second epoch on). Writes results/weight_averaging.{json,md}.

    python benchmarks/weight_averaging.py [--quick]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import interval  # noqa: E402
from common import write_results  # noqa: E402

from keras_wtrain.averaging import SeWA  # noqa: E402
from keras_wtrain.comparison import default_optimizer  # noqa: E402
from keras_wtrain.comparison.datasets import load_mnist5k  # noqa: E402
from keras_wtrain.comparison.models import build_model  # noqa: E402
from keras_wtrain.comparison.settings import REGIMES  # noqa: E402
from keras_wtrain.comparison.techniques import averaging_schedule  # noqa: E402

STRATEGIES = ("swa", "lawa", "random", "sewa")  # SeWA.average_weights rules on one buffer ("swa": the window)


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def evaluate(model, x, y):
    loss, acc = model.evaluate(x, y, batch_size=256, verbose=0)
    return float(loss), float(acc)


def train_recording(data, seed, cfg):
    """Trains the converged-regime CNN once with a recording `SeWA(install=False)`.

    Returns:
        `(model, callback, schedule, epoch_s)`: `epoch_s` is the median training epoch, second epoch on.
    """
    x, y = data.x_train, data.y_train
    steps_per_epoch = int(np.ceil(len(x) / cfg["batch_size"]))
    schedule = averaging_schedule(cfg["epochs"], steps_per_epoch)
    keras.utils.set_random_seed(seed)
    model = build_model("cnn", x.shape[1:], data.num_classes)
    model.compile(
        default_optimizer(cfg["epochs"] * steps_per_epoch),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    cb = SeWA(selection_data=(x, y), install=False, seed=seed, **schedule)
    timer = EpochTimer()
    model.fit(x, y, batch_size=cfg["batch_size"], epochs=cfg["epochs"], verbose=0, callbacks=[timer, cb])
    return model, cb, schedule, statistics.median(timer.times[1:])


def run_seed(data, seed, cfg):
    x, y = data.x_train, data.y_train
    model, cb, schedule, epoch_s = train_recording(data, seed, cfg)
    final = cb.current_weights()
    _, train_acc = evaluate(model, x, y)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    rows = {"baseline": dict(test_acc=test_acc, test_loss=test_loss, objective=cb.weights_loss(final))}
    selection = {}
    for strategy in STRATEGIES:
        begin = time.perf_counter()
        flat, info = cb.average_weights(strategy)
        elapsed = time.perf_counter() - begin
        cb.install_weights(flat)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        rows[strategy] = dict(
            test_acc=test_acc,
            test_loss=test_loss,
            objective=cb.weights_loss(flat),
            steps=info["steps"],
        )
        if strategy == "sewa":
            report = cb.selection_report
            lawa = cb.average_weights(indices=report["indices"]["lawa"])[0]
            evaluation_s = []
            for _ in range(5):  # one exact evaluation of F, for the cost floor of the baselines
                start = time.perf_counter()
                cb.weights_loss(lawa)
                evaluation_s.append(time.perf_counter() - start)
            evaluation_s = statistics.median(evaluation_s)
            selection = dict(
                evaluation_s=evaluation_s,
                baseline_floor=report["baseline_evaluations"] * evaluation_s / epoch_s,
                baseline_evaluations=report["baseline_evaluations"],
                selection_s=elapsed,
                epoch_s=epoch_s,
                ratio=elapsed / epoch_s,
                objective=report["objective"],
                source=report["source"],
                evaluations=report["evaluations"],
                objective_examples=report["objective_examples"],
                gradient_calls=report["gradient_calls"],
                swaps=report["swaps"],
            )
        cb.install_weights(final, update_batchnorm=False)
    return dict(seed=seed, train_accuracy=train_acc, schedule=schedule, rows=rows, selection=selection)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 seeds, 500 examples, 5 epochs (about a minute)")
    args = parser.parse_args()
    cfg = dict(REGIMES["converged"], seeds=5, batch_size=64)
    if args.quick:
        cfg.update(seeds=2, epochs=5, train_size=500)
    data = load_mnist5k(train_size=cfg["train_size"])
    runs = [run_seed(data, seed, cfg) for seed in range(cfg["seeds"])]

    def paired(name, reference):
        return interval([100 * (r["rows"][name]["test_acc"] - r["rows"][reference]["test_acc"]) for r in runs])

    schedule = runs[0]["schedule"]
    train_accuracy = ", ".join(f"{100 * r['train_accuracy']:.1f}" for r in runs)
    lines = [
        f"`keras-wtrain compare`'s converged regime: MNIST-5k, {cfg['train_size']}-example training subset, CNN, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, Adam with cosine-decayed learning rate (1e-3 to 0), "
        f"{cfg['seeds']} seeds (final training accuracy "
        f"{train_accuracy} %). Checkpoints every "
        f"{schedule['every_n_steps']} steps from step {schedule['start']}, T = {schedule['num_checkpoints']}, "
        f"K = {schedule['k']}; every strategy from the same buffer of the same run per seed. Cells: mean ± 95 % "
        "t-interval half-width over seeds; Δ paired by seed.",
        "",
        "| strategy | test accuracy (%) | Δ vs final weights (pts) | Δ vs LAWA (pts) | test loss "
        "| training objective F |",
        "|---|---|---|---|---|---|",
    ]
    summary = {}
    for name in ("baseline", *STRATEGIES):
        acc = interval([100 * r["rows"][name]["test_acc"] for r in runs])
        loss = statistics.mean(r["rows"][name]["test_loss"] for r in runs)
        objective = statistics.mean(r["rows"][name]["objective"] for r in runs)
        vs_base = paired(name, "baseline") if name != "baseline" else None
        vs_lawa = paired(name, "lawa") if name not in ("baseline", "lawa") else None
        summary[name] = dict(test_acc=acc, vs_baseline=vs_base, vs_lawa=vs_lawa, test_loss=loss, objective=objective)

        def cell(pair):
            return "—" if pair is None else f"{pair[0]:+.2f} ± {pair[1]:.2f}"

        lines.append(
            f"| {name} | {acc[0]:.2f} ± {acc[1]:.2f} | {cell(vs_base)} | {cell(vs_lawa)} | {loss:.4f} | "
            f"{objective:.5f} |"
        )
    objectives = [r["selection"]["objective"] for r in runs]
    never_worse = all(o["sewa"] <= min(o["lawa"], o["window"], o["random"]) for o in objectives)
    ratios = [r["selection"]["ratio"] for r in runs]
    floors = [r["selection"]["baseline_floor"] for r in runs]
    lines += [
        "",
        "SeWA's selection on its own objective F (training loss on the selection data), per seed: "
        + "; ".join(
            f"seed {r['seed']}: SeWA {o['sewa']:.5f}, LAWA {o['lawa']:.5f}, window {o['window']:.5f}, "
            f"best of 20 random {o['random']:.5f} (from {r['selection']['source']}, {r['selection']['swaps']} swaps)"
            for r, o in zip(runs, objectives)
        )
        + f". F(SeWA) ≤ min(F(LAWA), F(window), F(best random)) on every seed: {'yes' if never_worse else 'NO'}.",
        "",
        f"SeWA selection wall time / median training epoch, per seed: {', '.join(f'{x:.2f}' for x in ratios)} "
        f"(epoch ≈ {statistics.mean(r['selection']['epoch_s'] for r in runs):.2f} s; target ≤ 1). "
        f"Of that, the {runs[0]['selection']['baseline_evaluations']} exact evaluations of the baselines alone (LAWA, "
        f"the window, 20 random subsets; one evaluation ≈ "
        f"{1e3 * statistics.mean(r['selection']['evaluation_s'] for r in runs):.1f} ms on "
        f"{runs[0]['selection']['objective_examples']} examples) cost, per seed: "
        f"{', '.join(f'{floor:.2f}' for floor in floors)} epochs; the rest is the relaxed "
        f"phase ({runs[0]['selection']['gradient_calls']} minibatch gradients) and the swap search.",
    ]
    write_results("weight_averaging", {"config": cfg, "quick": args.quick, "summary": summary, "runs": runs}, lines)


if __name__ == "__main__":
    main()
