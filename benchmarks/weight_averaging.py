"""Baseline vs SWA vs LAWA vs EMA vs random-K vs SeWA on the same training trajectory (MNIST-5k).

One training run per seed (MNIST CNN, 1,000-example training subset of MNIST-5k, Adam 1e-3, batch 64,
`jit_compile=True`); a `SelectiveWeightAveraging(install=False)` callback keeps the last `T`
checkpoints, and every strategy is computed afterwards from that same buffer
(`average_weights(strategy)`), installed, and evaluated on the validation and test splits. The
baseline is the final weights of the same run. Also measured: SeWA's selection wall time relative to
the median training epoch of the same run, and (seed 0) the effect of temperature, number of samples
and selection steps on the selection objective. Writes results/weight_averaging.{json,md}.

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
from common import write_results  # noqa: E402

from keras_wtrain.callbacks.weight_averaging import SelectiveWeightAveraging  # noqa: E402
from keras_wtrain.data import load_mnist5k  # noqa: E402
from keras_wtrain.models import build_model  # noqa: E402

STRATEGIES = ("swa", "lawa", "ema", "random", "sewa")


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


def run_seed(data, seed, cfg):
    x, y = data.x_train[: cfg["train_size"]], data.y_train[: cfg["train_size"]]
    steps_per_epoch = int(np.ceil(len(x) / cfg["batch_size"]))
    keras.utils.set_random_seed(seed)
    model = build_model("cnn", x.shape[1:], data.num_classes)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    start = cfg["start_epoch"] * steps_per_epoch
    cb = SelectiveWeightAveraging(
        k=cfg["k"],
        num_checkpoints=cfg["t"],
        start=start,
        every_n_steps=cfg["every"],
        selection_data=(x, y),
        install=False,
        seed=seed,
    )
    timer = EpochTimer()
    model.fit(x, y, batch_size=cfg["batch_size"], epochs=cfg["epochs"], verbose=0, callbacks=[timer, cb])
    epoch_s = statistics.median(timer.times[1:])
    final = cb.current_weights()
    rows = {}
    val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    objective = cb.weights_loss(final)
    rows["baseline"] = dict(val_acc=val_acc, test_acc=test_acc, test_loss=test_loss, objective=objective)
    selection = {}
    for strategy in STRATEGIES:
        if strategy == "sewa":
            begin = time.perf_counter()
            cb.average_weights("sewa")  # the first call traces the loss/gradient functions; timed separately
            selection["first_call_s"] = time.perf_counter() - begin
        begin = time.perf_counter()
        flat, info = cb.average_weights(strategy)
        elapsed = time.perf_counter() - begin
        objective = cb.weights_loss(flat)
        cb.install_weights(flat)
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        rows[strategy] = dict(
            val_acc=val_acc,
            test_acc=test_acc,
            test_loss=test_loss,
            objective=objective,
            steps=info["steps"] if strategy != "ema" else None,
        )
        if strategy == "sewa":
            selection.update(
                selection_s=elapsed,
                epoch_s=epoch_s,
                ratio=elapsed / epoch_s,
                probabilities=np.round(info["probabilities"], 3).tolist(),
            )
        cb.install_weights(final, update_batchnorm=False)
    # Random K-subsets as a distribution (the paper's control), objective only.
    rng = np.random.default_rng(seed)
    random_objectives = [
        cb.objective(np.sort(rng.choice(cb.num_stored, cfg["k"], replace=False))) for _ in range(cfg["random_subsets"])
    ]
    ablation = []
    if seed == 0:
        for temperature, samples, steps in cfg["ablation"]:
            cb.temperature, cb.num_samples, cb.selection_steps = temperature, samples, steps
            begin = time.perf_counter()
            indices, _ = cb.select()
            ablation.append(
                dict(
                    temperature=temperature,
                    num_samples=samples,
                    selection_steps=steps,
                    objective=cb.objective(indices),
                    seconds=time.perf_counter() - begin,
                    steps=cb.checkpoint_steps[indices].tolist(),
                )
            )
    return dict(
        seed=seed,
        rows=rows,
        selection=selection,
        random_objectives=random_objectives,
        ablation=ablation,
        checkpoint_steps=cb.checkpoint_steps.tolist(),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 seeds, 6 epochs (about 1-2 minutes)")
    args = parser.parse_args()
    if args.quick:
        cfg = dict(seeds=2, epochs=6, start_epoch=3, k=5, t=10, every=4)
    else:
        cfg = dict(seeds=5, epochs=12, start_epoch=7, k=10, t=20, every=4)
    cfg.update(
        train_size=1000,
        batch_size=64,
        random_subsets=20,
        ablation=[(0.5, 2, 16), (0.25, 2, 16), (1.0, 2, 16), (0.5, 4, 50)],
    )
    data = load_mnist5k()
    runs = [run_seed(data, seed, cfg) for seed in range(cfg["seeds"])]

    names = ["baseline", *STRATEGIES]
    lines = [
        f"MNIST-5k, {cfg['train_size']}-example training subset, CNN, Adam 1e-3, batch {cfg['batch_size']}, "
        f"{cfg['epochs']} epochs, {cfg['seeds']} seeds; checkpoints every {cfg['every']} steps from epoch "
        f"{cfg['start_epoch']}, T={cfg['t']}, K={cfg['k']}; all strategies from the same run per seed.",
        "",
        "| strategy | test accuracy (%) | Δ vs baseline (pts, paired) | test loss | val accuracy (%) | "
        "training objective F |",
        "|---|---|---|---|---|---|",
    ]
    summary = {}
    for name in names:
        acc = [r["rows"][name]["test_acc"] * 100 for r in runs]
        delta = [(r["rows"][name]["test_acc"] - r["rows"]["baseline"]["test_acc"]) * 100 for r in runs]
        loss = [r["rows"][name]["test_loss"] for r in runs]
        val = [r["rows"][name]["val_acc"] * 100 for r in runs]
        obj = [r["rows"][name]["objective"] for r in runs]
        sd = statistics.stdev if len(runs) > 1 else (lambda v: 0.0)
        summary[name] = dict(
            test_acc=statistics.mean(acc),
            test_acc_std=sd(acc),
            delta=statistics.mean(delta),
            delta_std=sd(delta),
            test_loss=statistics.mean(loss),
            val_acc=statistics.mean(val),
            objective=statistics.mean(obj),
        )
        delta_cell = "—" if name == "baseline" else f"{statistics.mean(delta):+.2f} ± {sd(delta):.2f}"
        lines.append(
            f"| {name} | {statistics.mean(acc):.2f} ± {sd(acc):.2f} | {delta_cell} | "
            f"{statistics.mean(loss):.4f} | {statistics.mean(val):.2f} | {statistics.mean(obj):.4f} |"
        )
    sewa_vs_lawa = [r["rows"]["sewa"]["objective"] - r["rows"]["lawa"]["objective"] for r in runs]
    beats_random = [np.mean([r["rows"]["sewa"]["objective"] <= o for o in r["random_objectives"]]) for r in runs]
    ratios = [r["selection"]["ratio"] for r in runs]
    mean_epoch = statistics.mean(r["selection"]["epoch_s"] for r in runs)
    lines += [
        "",
        f"SeWA − LAWA training objective per seed: {', '.join(f'{d:+.5f}' for d in sewa_vs_lawa)}; "
        f"SeWA mask same as LAWA's in {sum(r['rows']['sewa']['steps'] == r['rows']['lawa']['steps'] for r in runs)}"
        f"/{len(runs)} seeds.",
        f"Fraction of {cfg['random_subsets']} random K-subsets with objective ≥ SeWA's, per seed: "
        f"{', '.join(f'{b:.2f}' for b in beats_random)}.",
        f"SeWA selection wall time / median training epoch (defaults: 16 steps × 2 samples × 32 examples): "
        f"{', '.join(f'{x:.2f}' for x in ratios)} (epoch ≈ {mean_epoch:.2f} s).",
        "",
        "Selection settings (seed 0, same buffer): temperature, samples M, steps → training objective of the chosen "
        "mask, seconds",
        "",
        "| temperature | M | steps | objective F | seconds | chosen steps |",
        "|---|---|---|---|---|---|",
    ]
    for a in runs[0]["ablation"]:
        lines.append(
            f"| {a['temperature']} | {a['num_samples']} | {a['selection_steps']} | {a['objective']:.5f} | "
            f"{a['seconds']:.2f} | {a['steps']} |"
        )
    lines.append(f"| (LAWA) | | | {runs[0]['rows']['lawa']['objective']:.5f} | | {runs[0]['rows']['lawa']['steps']} |")
    write_results("weight_averaging", {"config": cfg, "summary": summary, "runs": runs}, lines)


if __name__ == "__main__":
    main()
