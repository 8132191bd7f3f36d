"""Where shadow weights help (AOM): a one-factor-at-a-time ablation of WAS on MNIST-5k.

Models: the MNIST CNN (no BatchNorm) and `resnet-small` (BatchNorm after every conv, like the authors'
networks), every k >= 3 convolution wrapped (`authors_wrap`, stem included). Regimes (as `keras-wtrain
compare`): "converged", 1,000 training examples and enough epochs for the plain model to fit its training
set (>= 99 % training accuracy, checked and reported), and "small-data", 250 examples. Adam 1e-3, batch 50
(both training sets are whole batches, so one traced step serves every run of a model), 240 and 160 steps.

Factors, one at a time around the library default before this ablation (`default`: per layer and step
50/50 the shift `RandomTranslate(0.3)` or the crop-and-stretch `RandomResizedCrop()`, every step):
transform kind (`shift` only, `crop` only), strength (`strength0.2`: the shift at 0.2; at 0.1 a 3x3
kernel never moves, since round(U(-0.3, 0.3)) = 0, so 0.1 is not run) and the fraction of augmented
steps (`p0.5`, `p0.25`: `ShadowWeights(probability=...)`). Each setting runs with the same seeds as the
plain model; differences are paired by seed, with a 95 % t-interval. Test accuracy after the last step
(nothing selected on the test split), in AOM (plain weights), in DOM (the fixed one-tap shift, run as
2x2 convolutions) and, for resnet-small, in AOM after re-estimating BatchNorm's statistics with the plain
weights (`update_batchnorm_statistics`, whose passes use the plain weights, as the library's
`BatchNormStatisticsUpdate` callback does): training collected them from shadow-weight activations.
The plain model's statistics are re-estimated too for that comparison.

Settings run in priority order and each completes all models, regimes and seeds; a setting is not started
once `--budget-minutes` of wall time have passed (reported). Writes results/shadow_ablation.{json,md,png}
(`--quick`: shadow_ablation_quick.*, two seeds, few steps).

    python benchmarks/shadow_ablation.py [--quick] [--budget-minutes 25]
"""

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import RESULTS  # noqa: E402
from common import write_results  # noqa: E402

from keras_wtrain._core.batchnorm import update_batchnorm_statistics  # noqa: E402
from keras_wtrain.comparison.datasets import load_mnist5k  # noqa: E402
from keras_wtrain.comparison.models import build_model  # noqa: E402
from keras_wtrain.shadow_weights import transforms  # noqa: E402
from keras_wtrain.shadow_weights.modes import authors_wrap  # noqa: E402
from keras_wtrain.shadow_weights.modes import set_weight_mode  # noqa: E402
from keras_wtrain.shadow_weights.modes import shadow_weight_layers  # noqa: E402

BATCH_SIZE = 50
MODELS = ("cnn", "resnet-small")
REGIMES = {"converged": {"train_size": 1000, "epochs": 12}, "small-data": {"train_size": 250, "epochs": 32}}
QUICK_REGIMES = {"converged": {"train_size": 1000, "epochs": 1}, "small-data": {"train_size": 250, "epochs": 2}}


def _choice(shift=0.3):
    return transforms.RandomChoice([transforms.RandomTranslate(shift), transforms.RandomResizedCrop()])


# name: (description, transform factory, probability); in the order they run.
SETTINGS = {
    "baseline": ("plain model", None, None),
    "default": ("50/50 shift 0.3 or crop, every step (former default)", _choice, 1.0),
    "p0.5": ("50/50 shift 0.3 or crop, half of the steps", _choice, 0.5),
    "shift": ("shift 0.3 only, every step", lambda: transforms.RandomTranslate(0.3), 1.0),
    "crop": ("crop-and-stretch only, every step", transforms.RandomResizedCrop, 1.0),
    "strength0.2": ("50/50 shift 0.2 or crop, every step", lambda: _choice(0.2), 1.0),
    "p0.25": ("50/50 shift 0.3 or crop, a quarter of the steps", _choice, 0.25),
}


def _wrap(setting):
    _, factory, probability = SETTINGS[setting]
    if factory is None:
        return None
    return lambda layer: authors_wrap(layer, transform=factory(), probability=probability)


def _accuracy(model, x, y, batch_size=500):
    predictions = [
        np.argmax(keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False)), -1)
        for i in range(0, len(x), batch_size)
    ]
    return float(np.mean(np.concatenate(predictions) == y))


class Trainer:
    """Trains one (model kind, setting) for several seeds and regimes with one compiled training step.

    Each run starts from the variables (weights, BatchNorm statistics, seed-generator states) of a model
    freshly built with that run's seed and from the optimizer's initial state, so a run equals a fresh
    model's run without retracing the step.
    """

    def __init__(self, kind, setting):
        self.kind, self.setting = kind, setting
        self.model = None

    def _fresh(self, seed):
        keras.utils.set_random_seed(seed)
        return build_model(self.kind, (28, 28, 1), 10, wrap=_wrap(self.setting))

    def run(self, seed, data, epochs):
        fresh = self._fresh(seed)
        if self.model is None:
            self.model = fresh
            self.model.compile(
                keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
                jit_compile=False,  # faster than XLA for these small models on CPU (and no per-model compile)
            )
            self.model.optimizer.build(self.model.trainable_variables)
            self.initial_optimizer = [
                np.array(keras.ops.convert_to_numpy(v.value)) for v in self.model.optimizer.variables
            ]
        else:
            for variable, value in zip(self.model.variables, fresh.variables, strict=True):
                assert tuple(variable.shape) == tuple(value.shape), (variable.path, value.path)
                variable.assign(value.value)
            for variable, value in zip(self.model.optimizer.variables, self.initial_optimizer):
                variable.assign(value)
        model = self.model
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
        train_s = time.perf_counter() - start
        row = {
            "train_s": train_s,
            "train_accuracy": _accuracy(model, data.x_train, data.y_train),
            "test_aom": _accuracy(model, data.x_test, data.y_test),
        }
        layers = shadow_weight_layers(model)
        if layers:
            set_weight_mode(model, "desire")
            row["test_dom"] = _accuracy(model, data.x_test, data.y_test)
            set_weight_mode(model, "accuracy")
        if self.kind == "resnet-small":
            # With the plain weights in the training-mode passes (what `BatchNormStatisticsUpdate` does).
            update_batchnorm_statistics(model, data.x_train, batch_size=BATCH_SIZE)
            row["test_aom_bn"] = _accuracy(model, data.x_test, data.y_test)
        return row


def _interval(values):
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "ci95": float("nan"), "n": len(values)}
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return {"mean": mean, "ci95": half, "n": len(values)}


def _verdict(stat):
    if stat is None or math.isnan(stat["ci95"]):
        return "-"
    low, high = stat["mean"] - stat["ci95"], stat["mean"] + stat["ci95"]
    return "helped" if low > 0 else "hurt" if high < 0 else "no significant change"


def summarize(runs):
    """Per (model, regime, setting): means and paired differences against the plain model (same seed)."""
    summary = {}
    for kind in {r["model"] for r in runs}:
        for regime in {r["regime"] for r in runs}:
            rows = [r for r in runs if r["model"] == kind and r["regime"] == regime]
            baseline = {r["seed"]: r for r in rows if r["setting"] == "baseline"}
            for setting in SETTINGS:
                mine = [r for r in rows if r["setting"] == setting]
                if not mine:
                    continue
                entry = {
                    "seeds": len(mine),
                    "test_aom": _interval([r["test_aom"] for r in mine]),
                    "train_accuracy": _interval([r["train_accuracy"] for r in mine]),
                    "train_s": _interval([r["train_s"] for r in mine]),
                }
                if "test_dom" in mine[0]:
                    entry["test_dom"] = _interval([r["test_dom"] for r in mine])
                if "test_aom_bn" in mine[0]:
                    entry["test_aom_bn"] = _interval([r["test_aom_bn"] for r in mine])
                paired = [r for r in mine if r["seed"] in baseline]
                if setting != "baseline" and paired:
                    entry["diff_aom"] = _interval([r["test_aom"] - baseline[r["seed"]]["test_aom"] for r in paired])
                    if "test_aom_bn" in mine[0]:
                        entry["diff_aom_bn"] = _interval(
                            [r["test_aom_bn"] - baseline[r["seed"]]["test_aom_bn"] for r in paired]
                        )
                summary[f"{kind}|{regime}|{setting}"] = entry
    return summary


def _pts(stat, ci=True):
    if stat is None:
        return "-"
    if not ci or math.isnan(stat["ci95"]):
        return f"{100 * stat['mean']:+.2f}"
    low, high = 100 * (stat["mean"] - stat["ci95"]), 100 * (stat["mean"] + stat["ci95"])
    return f"{100 * stat['mean']:+.2f} [{low:+.2f}, {high:+.2f}]"


def _pct(stat):
    return "-" if stat is None else f"{100 * stat['mean']:.2f}"


def table_lines(summary, regimes):
    lines = []
    for kind in MODELS:
        for regime, settings in regimes.items():
            keys = [f"{kind}|{regime}|{s}" for s in SETTINGS if f"{kind}|{regime}|{s}" in summary]
            if not keys:
                continue
            base = summary.get(f"{kind}|{regime}|baseline")
            lines += [
                "",
                f"**{kind}, {regime}** ({settings['train_size']} examples, {settings['epochs']} epochs; plain model's "
                f"training accuracy {_pct(base and base['train_accuracy'])} %)",
                "",
            ]
            bn = kind == "resnet-small"
            header = (
                "| setting | seeds | AOM test acc (%) | Δ AOM vs plain (pts, 95 % CI) | verdict | DOM test acc (%) |"
            )
            rule = "|---|---|---|---|---|---|"
            if bn:
                header += " Δ AOM vs plain, both BN re-estimated (pts, 95 % CI) | verdict |"
                rule += "---|---|"
            lines += [header, rule]
            for key in keys:
                e = summary[key]
                setting = key.split("|")[2]
                cells = [
                    f"`{setting}`: {SETTINGS[setting][0]}",
                    str(e["seeds"]),
                    _pct(e["test_aom"]),
                    _pts(e.get("diff_aom")),
                    _verdict(e.get("diff_aom")),
                    _pct(e.get("test_dom")),
                ]
                if bn:
                    cells += [_pts(e.get("diff_aom_bn")), _verdict(e.get("diff_aom_bn"))]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(summary, regimes, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is optional
        return None
    panels = [(kind, regime) for kind in MODELS for regime in regimes]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), sharey=True)
    for ax, (kind, regime) in zip(np.atleast_1d(axes), panels):
        names, means, errors = [], [], []
        for setting in SETTINGS:
            entry = summary.get(f"{kind}|{regime}|{setting}")
            if setting == "baseline" or entry is None or "diff_aom" not in entry:
                continue
            names.append(setting)
            means.append(100 * entry["diff_aom"]["mean"])
            errors.append(0 if math.isnan(entry["diff_aom"]["ci95"]) else 100 * entry["diff_aom"]["ci95"])
        ax.axhline(0, color="black", lw=0.8)
        ax.errorbar(range(len(names)), means, yerr=errors, fmt="o", capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_title(f"{kind}, {regime}", fontsize=10)
    np.atleast_1d(axes)[0].set_ylabel("Δ test acc. vs plain (pts, AOM)")
    fig.suptitle("Shadow weights (WAS) vs plain model, paired by seed, 95 % CI", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two seeds, three settings, a few steps")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; --quick: 2)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="start no setting after this (25)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 3)
    budget = args.budget_minutes or (5.0 if args.quick else 25.0)
    regimes = QUICK_REGIMES if args.quick else REGIMES
    order = ("baseline", "default", "p0.5") if args.quick else tuple(SETTINGS)
    data = {regime: load_mnist5k(train_size=s["train_size"]) for regime, s in regimes.items()}
    start = time.perf_counter()
    runs, skipped = [], []
    for setting in order:
        elapsed = (time.perf_counter() - start) / 60
        if elapsed > budget:
            skipped.append(setting)
            continue
        for kind in MODELS:
            trainer = Trainer(kind, setting)
            for regime, settings in regimes.items():
                for seed in range(seeds):
                    row = trainer.run(seed, data[regime], settings["epochs"])
                    row.update({"model": kind, "regime": regime, "setting": setting, "seed": seed})
                    runs.append(row)
                    print(
                        f"[{(time.perf_counter() - start) / 60:5.1f} min] {kind:12s} {regime:10s} {setting:11s} "
                        f"seed {seed}: AOM {row['test_aom']:.4f}  DOM {row.get('test_dom', float('nan')):.4f}  "
                        f"AOM+BN {row.get('test_aom_bn', float('nan')):.4f}  train {row['train_accuracy']:.4f}  "
                        f"({row['train_s']:.1f} s)",
                        flush=True,
                    )
            keras.backend.clear_session()
    total_min = (time.perf_counter() - start) / 60
    summary = summarize(runs)
    name = "shadow_ablation_quick" if args.quick else "shadow_ablation"
    png = plot(summary, regimes, RESULTS / f"{name}.png")
    lines = [
        "One factor at a time around the former default (`default`), every k >= 3 conv wrapped "
        f"(`authors_wrap`), Adam 1e-3, batch {BATCH_SIZE}, {seeds} seeds; Δ = setting − plain model with the same "
        "seed, mean and 95 % t-interval (with 3 seeds the interval is wide: t = 4.30). Test accuracy after "
        "the last step on the 1,000 test images. DOM: the fixed one-tap shift, run as 2x2 convolutions. "
        "'BN re-estimated': BatchNorm statistics recomputed on the training set with the plain weights "
        "(for the plain model: recomputed with its weights).",
        f"Wall time {total_min:.1f} min on {os.cpu_count()} CPU cores"
        + (f"; not run (time budget of {budget:g} min): {', '.join(skipped)}." if skipped else "."),
        *table_lines(summary, regimes),
    ]
    if png:
        lines += ["", f"![paired differences]({os.path.basename(png)})"]
    results = {
        "quick": args.quick,
        "design": {
            "models": MODELS,
            "regimes": regimes,
            "batch_size": BATCH_SIZE,
            "seeds": seeds,
            "settings": {k: v[0] for k, v in SETTINGS.items()},
            "budget_minutes": budget,
        },
        "skipped": skipped,
        "wall_minutes": total_min,
        "summary": summary,
        "runs": runs,
    }
    write_results(name, results, lines)
    return results


if __name__ == "__main__":
    main()
