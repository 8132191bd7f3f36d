"""Shared helpers of the benchmarks: step timing, machine description, result files."""

import datetime
import json
import os
import pathlib
import platform
import statistics
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def machine():
    """A description of the machine, library versions and date, for result files."""
    import keras

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        info["device"] = (
            ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus) or "CPU"
        )
    except ImportError:
        info["device"] = "CPU"
    return info


def single_threaded():
    """Runs TensorFlow (and PyTorch, if importable) on one thread; call before the first TensorFlow op.

    On the 2-vCPU machines these benchmarks run on, two-threaded step times switch between two modes
    about 2x apart, from round to round and whatever the model (e.g. an MLP step at 6 or 13 ms), so a
    ratio of two models' medians says which mode each happened to get. One thread gives one mode
    (7-10 ms for that MLP), and a step-time ratio measures the work a technique adds.

    Returns:
        The number of threads, for the result files.
    """
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass  # PyTorch is only the reference column of the weight-normalization benchmarks
    return 1


def time_fit_steps(model, x, y, batch_size, steps):
    """Seconds per training step of one `fit` epoch over `steps` batches (model already compiled and warm)."""
    n = batch_size * steps
    start = time.perf_counter()
    model.fit(x[:n], y[:n], batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / steps


def interleaved_step_times(models, x, y, batch_size=128, steps=20, repeats=7):
    """Median seconds per train step of each model, measured in interleaved rounds.

    Each model is warmed up (compiled) first; then `repeats` rounds each time every
    model once, in turn (the order reversed every other round, so no model always
    runs right after the same one), so background load affects all of them alike.
    The first model is the reference: `paired_ratio` is the median over rounds of
    a model's time over the reference's time *in the same round*, which cancels
    load that drifts between rounds (a median of medians does not).

    Args:
        models: dict name -> compiled model; the first one is the reference.
        x, y: training arrays with at least `batch_size * steps` rows.

    Returns:
        dict name -> {"median_s": ..., "all_s": [...], "paired_ratio": ..., "round_ratios": [...]}.
    """
    for model in models.values():
        time_fit_steps(model, x, y, batch_size, 2)
    names = list(models)
    times = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            times[name].append(time_fit_steps(models[name], x, y, batch_size, steps))
    reference = times[names[0]]
    out = {}
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t, reference)]
        out[name] = {
            "median_s": statistics.median(t),
            "all_s": t,
            "paired_ratio": statistics.median(ratios),
            "round_ratios": ratios,
        }
    return out


def write_results(name, payload, table_lines):
    """Writes `results/<name>.json` and `results/<name>.md`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    m = payload["machine"]
    header = (
        f"_Machine: {m['device']}, {m['cpu_count']} CPUs, {m['platform']}; Python {m['python']}, "
        f"Keras {m['keras']}, TensorFlow {m.get('tensorflow', '-')}; {m['date']}._\n\n"
    )
    (RESULTS / f"{name}.md").write_text(header + "\n".join(table_lines) + "\n")
    print("\n".join(table_lines))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def interval(values):
    """`(mean, 95 % Student-t half-width)` of `values` (half-width NaN for fewer than two values)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan")
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
