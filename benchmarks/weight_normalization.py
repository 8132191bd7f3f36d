"""Step-time overhead of WeightNormalization vs plain Keras (and of PyTorch's weight_norm, if installed).

Median train-step time of an MLP (784-512-512-10) and the MNIST CNN, plain vs wrapped, batch 128,
`jit_compile=True`, interleaved repeats in one process, one thread (`common.single_threaded`); the ratio is the
median over rounds of the wrapped model's time over the plain one's in the same round.
Writes results/weight_normalization.{json,md}.

    python benchmarks/weight_normalization.py [--quick]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
from common import interleaved_step_times  # noqa: E402
from common import single_threaded  # noqa: E402
from common import write_results  # noqa: E402

import keras_wtrain  # noqa: E402
from keras_wtrain.comparison.datasets import load_mnist5k  # noqa: E402
from keras_wtrain.comparison.models import build_model  # noqa: E402
from keras_wtrain.layers import WeightNormalization  # noqa: E402

TARGETS = {"mlp": 1.10, "cnn": 1.05}


def keras_models(kind, x):
    models = {}
    for name, wrap in (("plain", None), ("weightnorm", lambda layer: WeightNormalization(layer))):
        keras.utils.set_random_seed(0)
        model = build_model(kind, (28, 28, 1), 10, wrap=wrap)
        if wrap is not None:
            keras_wtrain.initialize_weight_normalization(model, x[:256])
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True,
        )
        models[name] = model
    return models


def torch_ratio(kind, x, y, batch_size, steps, repeats):
    """Step times of torch plain vs torch weight_norm on the same shapes (eager, CPU), interleaved rounds.

    `ratio` is the median over rounds of weight_norm's time over plain's in the same round.
    """
    try:
        import torch
        from torch import nn
        from torch.nn.utils.parametrizations import weight_norm
    except ImportError:
        return None

    def make(wrap):
        torch.manual_seed(0)
        w = weight_norm if wrap else (lambda m: m)
        if kind == "mlp":
            net = nn.Sequential(
                nn.Flatten(),
                w(nn.Linear(784, 512)),
                nn.ReLU(),
                w(nn.Linear(512, 512)),
                nn.ReLU(),
                w(nn.Linear(512, 10)),
            )
        else:
            net = nn.Sequential(
                w(nn.Conv2d(1, 32, 3, padding=1)),
                nn.ReLU(),
                nn.MaxPool2d(2),
                w(nn.Conv2d(32, 64, 3, padding=1)),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                w(nn.Linear(64 * 7 * 7, 128)),
                nn.ReLU(),
                w(nn.Linear(128, 10)),
            )
        return net, torch.optim.Adam(net.parameters(), 1e-3)

    xt = torch.tensor(x.transpose(0, 3, 1, 2)[: batch_size * steps])
    yt = torch.tensor(y[: batch_size * steps]).long()
    loss_fn = nn.CrossEntropyLoss()

    def epoch(net, opt, n_steps):
        start = time.perf_counter()
        for i in range(n_steps):
            opt.zero_grad()
            loss = loss_fn(net(xt[i * batch_size : (i + 1) * batch_size]), yt[i * batch_size : (i + 1) * batch_size])
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / n_steps

    nets = {"plain": make(False), "weight_norm": make(True)}
    for net, opt in nets.values():
        epoch(net, opt, 2)
    times = {k: [] for k in nets}
    for round_ in range(repeats):
        for k in list(nets) if round_ % 2 == 0 else list(nets)[::-1]:
            net, opt = nets[k]
            times[k].append(epoch(net, opt, steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "plain_s": med["plain"],
        "weight_norm_s": med["weight_norm"],
        "ratio": statistics.median(a / b for a, b in zip(times["weight_norm"], times["plain"])),
        "torch": torch.__version__,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args(argv)
    threads = single_threaded()
    steps, repeats = (8, 5) if args.quick else (20, 9)
    data = load_mnist5k()
    x, y = data.x_train, data.y_train
    results = {"batch_size": 128, "steps": steps, "repeats": repeats, "threads": threads, "models": {}}
    for kind in ("mlp", "cnn"):
        times = interleaved_step_times(keras_models(kind, x), x, y, 128, steps, repeats)
        ratio = times["weightnorm"]["paired_ratio"]
        entry = {
            "plain_s": times["plain"]["median_s"],
            "weightnorm_s": times["weightnorm"]["median_s"],
            "ratio": ratio,
            "target_ratio": TARGETS[kind],
            "meets_target": ratio <= TARGETS[kind],
            "torch": torch_ratio(kind, x, y, 128, steps, repeats),
        }
        results["models"][kind] = entry
    lines = [
        "| model | plain step (ms) | WeightNormalization step (ms) | ratio | target | PyTorch weight_norm ratio |",
        "|---|---|---|---|---|---|",
    ]
    for kind, e in results["models"].items():
        torch_cell = (
            f"{e['torch']['ratio']:.3f} (torch {e['torch']['torch']}, eager)" if e["torch"] else "torch not installed"
        )
        lines.append(
            f"| {kind} | {1e3 * e['plain_s']:.2f} | {1e3 * e['weightnorm_s']:.2f} | {e['ratio']:.3f} | "
            f"≤ {e['target_ratio']:.2f} {'✓' if e['meets_target'] else '✗'} | {torch_cell} |"
        )
    write_results("weight_normalization", results, lines)
    return results


if __name__ == "__main__":
    main()
