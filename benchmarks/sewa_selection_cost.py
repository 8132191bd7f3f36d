"""What SeWA's selection costs and what its settings buy, on the trajectories of the converged regime.

One training run per seed as in `benchmarks/weight_averaging.py` (MNIST CNN, 1,000-example MNIST-5k subset,
15 epochs, batch 64, cosine-decayed Adam; T = 20 checkpoints, K = 10). On each run's checkpoints, SeWA's
selection (`SeWA.select`) runs once per setting: the defaults, then one knob at a time
(`selection_size` 128, `selection_steps` 8, `num_samples` 1, `max_evaluations` 8) and all of them together.
Measured per setting: selection wall time over the median training epoch of the same run, evaluations of F,
minibatch gradients, where the choice came from, and F of the choice on the default 256 selection examples
next to LAWA's (so a setting that looks at fewer examples is judged on the same objective).
Writes results/sewa_selection_cost.{json,md}.

    python benchmarks/sewa_selection_cost.py [--seeds N] [--quick]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_results  # noqa: E402
from weight_averaging import train_recording  # noqa: E402

from keras_wtrain.averaging import SeWA  # noqa: E402
from keras_wtrain.comparison.datasets import load_mnist5k  # noqa: E402
from keras_wtrain.comparison.settings import REGIMES  # noqa: E402

SETTINGS = {
    "defaults": {},
    "selection_size=128": dict(selection_size=128),
    "selection_steps=8": dict(selection_steps=8),
    "num_samples=1": dict(num_samples=1),
    "max_evaluations=8": dict(max_evaluations=8),
    "all four": dict(selection_size=128, selection_steps=8, num_samples=1, max_evaluations=8),
}


def run_seed(data, seed, cfg):
    x, y = data.x_train, data.y_train
    model, recorder, schedule, epoch_s = train_recording(data, seed, cfg)
    checkpoints = recorder.checkpoints()
    lawa = list(range(len(checkpoints) - schedule["k"], len(checkpoints)))
    rows = {}
    for name, options in SETTINGS.items():
        callback = SeWA(selection_data=(x, y), install=False, seed=seed, **schedule, **options)
        callback.set_model(model)
        callback.objective([0], weights_matrix=checkpoints)  # compiles F for this selection size
        start = time.perf_counter()
        indices, _ = callback.select(checkpoints)
        elapsed = time.perf_counter() - start
        report = callback.selection_report
        rows[name] = dict(
            ratio=elapsed / epoch_s,
            selection_s=elapsed,
            objective=recorder.objective(indices, weights_matrix=checkpoints),
            lawa_objective=recorder.objective(lawa, weights_matrix=checkpoints),
            source=report["source"],
            evaluations=report["evaluations"],
            gradient_calls=report["gradient_calls"],
        )
        print(seed, name, rows[name], flush=True)
    return dict(seed=seed, epoch_s=epoch_s, rows=rows)


def _join(values, spec=""):
    return ", ".join(format(value, spec) for value in values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    cfg = dict(REGIMES["converged"], batch_size=64)
    data = load_mnist5k(train_size=cfg["train_size"])
    runs = [run_seed(data, seed, cfg) for seed in range(args.seeds)]
    lines = [
        f"Converged regime (1,000 examples, CNN, 15 epochs, batch 64), {args.seeds} seeds; median training epoch "
        f"{_join((r['epoch_s'] for r in runs), '.2f')} s. F: training loss of the chosen average on the default "
        "256 selection examples (lower is better), per seed.",
        "",
        "| setting | selection / epoch, per seed | evaluations of F | minibatch gradients | F of the choice | "
        "F of LAWA | choice from |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in SETTINGS:
        cells = [r["rows"][name] for r in runs]
        lines.append(
            f"| {name} | {_join((c['ratio'] for c in cells), '.2f')} "
            f"| {_join(c['evaluations'] for c in cells)} | {_join(c['gradient_calls'] for c in cells)} "
            f"| {_join((c['objective'] for c in cells), '.5f')} | {_join((c['lawa_objective'] for c in cells), '.5f')} "
            f"| {_join(c['source'] for c in cells)} |"
        )
    write_results("sewa_selection_cost", {"config": cfg, "settings": SETTINGS, "runs": runs}, lines)


if __name__ == "__main__":
    main()
