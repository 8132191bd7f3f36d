"""Memory and time of the four averaging callbacks on models of tens of millions of parameters.

    python benchmarks/averaging_cost.py [--quick]

Models: a 21M-parameter MLP (`Dense` 1024-4096-4096-10, 80 MiB of float32 weights) and
`keras.applications.ResNet50(weights=None)` at 32x32 (23.6M parameters); SGD, batch 16, random data (cost does not
depend on the values). Each configuration runs in a fresh process: its extra peak RSS is `VmHWM` after `fit` minus
`VmRSS` before it (the model built and compiled, one warm-up `fit` step done, the peak reset through
/proc/self/clear_refs), and "over a plain fit" subtracts the same figure of a plain fit. Anchors measured the same
way: Keras' own `use_ema` (the EMA inside the optimizer) and, where torch is installed, torch's `AveragedModel` on
the same MLP in torch. Time: the ratio of a fit with SWA (or EMA) updating every step to a plain fit, paired rounds
in one process; one checkpoint record (`FlatWeights.read` + ring-buffer append) against a numpy copy of the same
bytes in the same process (the physical floor: the bytes moved at the memory bandwidth measured there).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {
    "plain": "None",
    "SWA (every step)": "SWA(every=1)",
    "EMA (every step)": "EMA(every=1)",
    "Keras use_ema (anchor)": "'use_ema'",
    "LAWA k=10 (every step)": "LAWA(k=10, every=1)",
    "SeWA T=10": "SeWA(k=5, num_checkpoints=10, selection_data=(x[:256], y[:256]), seed=0)",
    "SeWA T=20": "SeWA(k=10, num_checkpoints=20, selection_data=(x[:256], y[:256]), seed=0)",
    "SeWA T=20, checkpoint_dir": (
        "SeWA(k=10, num_checkpoints=20, selection_data=(x[:256], y[:256]), seed=0, checkpoint_dir=tempfile.mkdtemp())"
    ),
}

CHILD = r"""
import os, sys, tempfile, time
import numpy as np
import keras
from keras_wtrain.averaging import EMA, LAWA, SWA, SeWA

def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024

kind, spec, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
if kind == "mlp21m":
    model = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(4096, activation="relu"),
                              keras.layers.Dense(4096, activation="relu"), keras.layers.Dense(10)])
    x = rng.normal(size=(16 * steps, 1024)).astype("float32")
else:
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    x = rng.normal(size=(16 * steps, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, size=len(x))
optimizer = keras.optimizers.SGD(0.01, use_ema=spec == "'use_ema'")
model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=kind == "mlp21m"))
model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)  # warm-up: optimizer state, traced step
callback = None if spec in ("None", "'use_ema'") else eval(spec)
weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS to the current RSS
before = rss("VmRSS:")
start = time.perf_counter()
model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[] if callback is None else [callback])
elapsed = time.perf_counter() - start
result = {"extra_peak_bytes": rss("VmHWM:") - before, "weight_bytes": weight_bytes, "fit_s": elapsed,
          "params": int(model.count_params())}
report = getattr(callback, "selection_report", None)
if report:
    keys = ("phase_time_s", "baseline_evaluations", "relaxed_evaluations", "search_evaluations", "gradient_calls",
            "swaps", "time_s")
    result["selection"] = {key: report[key] for key in keys}
    result["selection"]["num_checkpoints"] = len(callback.checkpoint_steps)
print(result)
"""

TORCH_CHILD = r"""
import torch, time
from torch.optim.swa_utils import AveragedModel
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096),
                            torch.nn.ReLU(), torch.nn.Linear(4096, 10))
opt = torch.optim.SGD(model.parameters(), 0.01)
x, y = torch.randn(16, 1024), torch.randint(0, 10, (16,))
def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
step()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = rss("VmRSS:")
swa = AveragedModel(model)
for _ in range(32):
    step(); swa.update_parameters(model)
print({"extra_peak_bytes": rss("VmHWM:") - before,
       "weight_bytes": sum(p.numel() * 4 for p in model.parameters())})
"""


def child(kind, spec, steps):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, spec, str(steps)], capture_output=True, text=True, timeout=1800
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return eval(out.stdout.strip().splitlines()[-1])


def memory(kind, steps):
    rows = {name: child(kind, spec, steps) for name, spec in CONFIGS.items()}
    plain = rows["plain"]["extra_peak_bytes"]
    for row in rows.values():
        row["over_plain_bytes"] = row["extra_peak_bytes"] - plain
        row["over_plain_x_weights"] = row["over_plain_bytes"] / row["weight_bytes"]
    if kind == "mlp21m":
        try:
            out = subprocess.run([sys.executable, "-c", TORCH_CHILD], capture_output=True, text=True, timeout=600)
            if out.returncode == 0:
                torch_row = eval(out.stdout.strip().splitlines()[-1])
                torch_row["over_plain_x_weights"] = torch_row["extra_peak_bytes"] / torch_row["weight_bytes"]
                rows["torch AveragedModel (anchor, peak over its own training)"] = torch_row
        except (OSError, subprocess.TimeoutExpired):
            pass
    return rows


def timing(rounds):
    """Paired fits in one process: plain vs SWA every step vs EMA every step; record vs numpy copy."""
    import keras
    import numpy as np

    from keras_wtrain.averaging import EMA
    from keras_wtrain.averaging import SWA
    from keras_wtrain.averaging.flat_weights import FlatWeights
    from keras_wtrain.averaging.trajectory import Trajectory

    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [
            keras.Input((1024,)),
            keras.layers.Dense(4096, activation="relu"),
            keras.layers.Dense(4096, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = rng.normal(size=(16 * 16, 1024)).astype("float32"), rng.integers(0, 10, 16 * 16)
    model.fit(x[:16], y[:16], batch_size=16, verbose=0)

    def fit(callbacks):
        start = time.perf_counter()
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
        return time.perf_counter() - start

    ratios = {"SWA every step / plain": [], "EMA every step / plain": []}
    for i in range(rounds):
        order = [("plain", []), ("SWA", [SWA(every=1, install=False)]), ("EMA", [EMA(every=1, install=False)])]
        if i % 2:
            order.reverse()
        times = {name: fit(cb) for name, cb in order}
        ratios["SWA every step / plain"].append(times["SWA"] / times["plain"])
        ratios["EMA every step / plain"].append(times["EMA"] / times["plain"])
    flat = FlatWeights(model)
    trajectory = Trajectory(4, flat.size, None)  # what LAWA and SeWA record into
    record, copy, bandwidth = [], [], []
    source = np.empty(flat.size, np.float32)
    for step in range(rounds):
        start = time.perf_counter()
        trajectory.record_weights(flat, step)
        record.append(time.perf_counter() - start)
        start = time.perf_counter()
        target = source.copy()
        copy.append(time.perf_counter() - start)
        bandwidth.append(2 * source.nbytes / copy[-1])  # read + write
        del target
    return {
        "fit_ratio_median": {name: statistics.median(values) for name, values in ratios.items()},
        "fit_ratios": ratios,
        "record_s": statistics.median(record),
        "numpy_copy_s": statistics.median(copy),
        "record_over_copy": statistics.median(record) / statistics.median(copy),
        "memory_bandwidth_gb_s": statistics.median(bandwidth) / 1e9,
        "weight_bytes": int(flat.size) * 4,
    }


def phase_bytes(selection, weight_bytes):
    """Bytes SeWA's selection phases read from the `T` checkpoints (each pass over them reads `T × P × 4` bytes).

    An evaluation of `F` averages the `T` rows once (`weights @ rows`); a relaxed-phase sample averages them and
    scores them against the gradient (`rows @ g`): two passes; a search round's gradient is taken at an average
    (one pass) and orders the swaps by `rows @ g` (one pass).
    """
    one_pass = selection["num_checkpoints"] * weight_bytes
    relaxed_gradients = selection["gradient_calls"] - (selection["swaps"] + 1 if selection["search_evaluations"] else 0)
    search_gradients = selection["gradient_calls"] - relaxed_gradients
    return {
        "baselines": selection["baseline_evaluations"] * one_pass,
        "relaxed": (2 * relaxed_gradients + selection["relaxed_evaluations"]) * one_pass,
        "search": (selection["search_evaluations"] + 2 * search_gradients) * one_pass,
    }


def paper_table(budget_gb=24.0, disk_gb=None):
    """The largest T that fits SeWA's host memory into `budget_gb` for 100M- and 1B-parameter models.

    In memory the ring buffer is `T` copies of the float32 weights and the rest of the run about 3 more (the
    model's own weights, the average being evaluated or installed, the raw weights kept while it is installed):
    `(T + 3) × 4P <= budget`. With `checkpoint_dir` the rows live in a memory-mapped file and are streamed a
    column block at a time, so RAM holds about 4 copies whatever `T` (the three above and the selection's
    gradient / backend copy); `T` is then limited by the disk (`T × 4P <= disk`), reported for `disk_gb` (None:
    the free space of the benchmark's temporary directory). The model's optimizer state and activations are not
    counted (Adam adds 2 copies: subtract them from the in-memory T).
    """
    import shutil
    import tempfile

    if disk_gb is None:
        disk_gb = shutil.disk_usage(tempfile.gettempdir()).free / 1e9
    rows = []
    for params in (100e6, 1e9):
        copy = 4 * params
        budget = budget_gb * 1e9
        rows.append(
            {
                "params": params,
                "copy_gb": copy / 1e9,
                "max_T_in_memory": max(0, int(budget // copy) - 3),
                "ram_gb_with_checkpoint_dir": 4 * copy / 1e9,
                "fits_with_checkpoint_dir": 4 * copy <= budget,
                "max_T_with_checkpoint_dir": int(disk_gb * 1e9 // copy) if 4 * copy <= budget else 0,
                "disk_gb": disk_gb,
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--timing-only", action="store_true", help="rerun the timing, keep the memory rows of the last run"
    )
    args = parser.parse_args(argv)
    from common import RESULTS
    from common import machine
    from common import write_results

    steps = 8 if args.quick else 32
    payload = {"machine": machine(), "memory": {}, "timing": timing(3 if args.quick else 7), "paper": paper_table()}
    previous = RESULTS / "averaging_cost.json"
    if args.timing_only and previous.exists():
        old = json.loads(previous.read_text())
        payload.update(memory=old["memory"], selection_phases=old.get("selection_phases", {}))
    for kind in () if args.timing_only else ("mlp21m", "resnet50"):
        payload["memory"][kind] = memory(kind, steps if kind == "mlp21m" else max(4, steps // 4))
    lines = [
        "| model | callback | extra peak RSS over a plain fit (MiB) | × weight bytes | fit time (s) |",
        "|---|---|---|---|---|",
    ]
    for kind, rows in payload["memory"].items():
        for name, row in rows.items():
            over = row.get("over_plain_bytes", row["extra_peak_bytes"])
            lines.append(
                f"| {kind} | {name} | {over / 2**20:.0f} | {row['over_plain_x_weights']:.2f} "
                f"| {row.get('fit_s', float('nan')):.1f} |"
            )
    t = payload["timing"]
    ratio = t["fit_ratio_median"]
    lines += [
        "",
        "Fit with SWA updating every step / plain fit (21M MLP, paired, median of rounds): "
        f"{ratio['SWA every step / plain']:.3f}; EMA: {ratio['EMA every step / plain']:.3f}.",
        f"Recording one checkpoint: {t['record_s'] * 1e3:.1f} ms, {t['record_over_copy']:.2f} × a numpy copy of the "
        "same "
        f"{t['weight_bytes'] / 2**20:.0f} MiB ({t['numpy_copy_s'] * 1e3:.1f} ms; memory bandwidth "
        f"{t['memory_bandwidth_gb_s']:.1f} GB/s read + write).",
    ]
    bandwidth = t["memory_bandwidth_gb_s"] * 1e9
    lines += [
        "",
        "SeWA's selection by phase (21M MLP; bytes read from the T checkpoints; floor = those bytes at the measured "
        "memory bandwidth):",
        "",
        "| callback | phase | time (s) | GiB read | floor (s) | time / floor |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in payload["memory"]["mlp21m"].items():
        if "selection" not in row:
            continue
        moved = phase_bytes(row["selection"], row["weight_bytes"])
        row["selection"]["phase_bytes"] = moved
        for phase, seconds in row["selection"]["phase_time_s"].items():
            floor = moved[phase] / bandwidth
            ratio = seconds / floor if floor else float("nan")
            lines.append(
                f"| {name} | {phase} | {seconds:.2f} | {moved[phase] / 2**30:.2f} | {floor:.3f} | {ratio:.0f} |"
            )
    lines += [
        "",
        "Largest T in 24 GB of host RAM (float32 weights; in memory: T + 3 copies; with checkpoint_dir: ~4 copies in "
        "RAM whatever T, T limited by the disk, here the free space of the temporary directory):",
        "",
        "| parameters | one copy (GB) | max T in memory | RAM with checkpoint_dir (GB) | max T with checkpoint_dir |",
        "|---|---|---|---|---|",
    ]
    for row in payload["paper"]:
        lines.append(
            f"| {row['params'] / 1e6:.0f}M | {row['copy_gb']:.1f} | {row['max_T_in_memory']} "
            f"| {row['ram_gb_with_checkpoint_dir']:.1f} | {row['max_T_with_checkpoint_dir']} "
            f"(disk {row['disk_gb']:.0f} GB) |"
        )
    write_results("averaging_cost", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
