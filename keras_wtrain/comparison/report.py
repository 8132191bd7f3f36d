"""Summary statistics (paired by seed, 95 % Student-t intervals), the convergence check, verdicts and markdown."""

import math

import numpy as np

from keras_wtrain.comparison.mechanisms import finite
from keras_wtrain.comparison.settings import CONVERGENCE
from keras_wtrain.comparison.settings import parse_technique

__all__ = ["convergence", "markdown_table", "mechanism_table", "summarize", "verdict", "verdict_lines"]

_STATISTICS = ("test_accuracy", "test_loss", "train_accuracy", "wall_time_s", "peak_rss_mib")


def _interval(values):
    """Mean, sample std and 95% t-interval half-width of `values`."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return {"mean": mean, "std": float("nan"), "ci95": float("nan")}
    from scipy import stats

    std = float(values.std(ddof=1))
    return {"mean": mean, "std": std, "ci95": float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))}


def _paired(rows, reference):
    """Paired accuracy differences of `rows` against `reference` ({seed: run}), or None without common seeds."""
    diffs = [r["test_accuracy"] - reference[r["seed"]]["test_accuracy"] for r in rows if r["seed"] in reference]
    return _interval(diffs) if diffs else None


def summarize(runs, techniques):
    """Aggregates per-technique statistics; differences are paired by seed against the baseline (and parts).

    Args:
        runs: one dict per run (`technique`, `seed`, `test_accuracy`, `test_loss`, `wall_time_s`,
            `peak_rss_mib`, `step_time_s`; optionally `train_accuracy` and a `mechanisms` dict).
        techniques: the technique names, in table order.

    Returns:
        `{technique: entry}` with `n`, each statistic as `{"mean", "std", "ci95"}`, `step_time_ratio`,
        `accuracy_diff_vs_baseline`, `accuracy_diff_vs_parts` (combinations) and `mechanisms`.

    Example:

    ```python
    from keras_wtrain.comparison import markdown_table, summarize

    runs = [
        {"technique": t, "seed": s, "test_accuracy": a, "test_loss": 0.3, "wall_time_s": 10.0,
         "peak_rss_mib": 900.0, "step_time_s": st}
        for t, s, a, st in [("baseline", 0, 0.90, 0.010), ("baseline", 1, 0.92, 0.010),
                            ("weightnorm", 0, 0.91, 0.011), ("weightnorm", 1, 0.94, 0.011)]
    ]
    summary = summarize(runs, ["baseline", "weightnorm"])
    print(summary["weightnorm"]["accuracy_diff_vs_baseline"]["mean"])  # 0.015
    print("\\n".join(markdown_table(summary)))
    ```
    """
    by_technique = {t: [r for r in runs if r["technique"] == t] for t in techniques}
    by_seed = {t: {r["seed"]: r for r in rows} for t, rows in by_technique.items()}
    baseline = by_seed.get("baseline", {})
    summary = {}
    for technique, rows in by_technique.items():
        if not rows:
            continue
        entry = {"n": len(rows)}
        for key in _STATISTICS:
            if all(key in r for r in rows):
                entry[key] = _interval([r[key] for r in rows])
        if baseline:
            paired = [r for r in rows if r["seed"] in baseline]
            ratios = [r["step_time_s"] / baseline[r["seed"]]["step_time_s"] for r in paired]
            entry["step_time_ratio"] = float(np.mean(ratios)) if ratios else float("nan")
            entry["accuracy_diff_vs_baseline"] = _paired(rows, baseline)
        parts = parse_technique(technique)
        if len(parts) > 1:
            entry["accuracy_diff_vs_parts"] = {
                part: _paired(rows, by_seed[part])
                for part in parts
                if by_seed.get(part) and _paired(rows, by_seed[part])
            }
        values = {}
        for row in rows:
            for key, value in row.get("mechanisms", {}).items():
                values.setdefault(key, []).append(value)
        entry["mechanisms"] = {
            key: _interval(v) for key, v in values.items() if len(v) == len(rows) and all(finite(x) for x in v)
        }
        summary[technique] = entry
    return summary


def convergence(runs, criteria=None):
    """Whether the baseline converged: training accuracy and the last epochs' validation accuracy.

    Args:
        runs: the runs (those of `baseline` are used).
        criteria: a dict like `keras_wtrain.comparison.settings.CONVERGENCE` (the default).

    Returns:
        `{"converged", "train_accuracy", "val_accuracy_change_points", "criteria", "message"}` (means over seeds).

    Example:

    ```python
    from keras_wtrain.comparison import convergence

    runs = [{"technique": "baseline", "seed": 0, "train_accuracy": 0.995,
             "val_accuracy_curve": [0.90, 0.930, 0.931, 0.932]}]
    print(convergence(runs)["converged"])  # True: 99.5 % >= 99 % and 0.2 points < 0.3
    ```
    """
    criteria = dict(CONVERGENCE, **(criteria or {}))
    rows = [r for r in runs if r["technique"] == "baseline"]
    if not rows:
        return {"converged": None, "criteria": criteria, "message": "no baseline run"}
    train = float(np.mean([r["train_accuracy"] for r in rows]))
    window = criteria["window"]
    length = min(len(r["val_accuracy_curve"]) for r in rows)
    change = None
    if length >= window:
        curve = np.mean([r["val_accuracy_curve"][:length] for r in rows], axis=0)
        change = float(abs(curve[-1] - curve[-window]) * 100)
    train_ok = train >= criteria["train_accuracy"]
    val_ok = change is not None and change < criteria["val_change_points"]
    moved = (
        f"its mean validation accuracy changed {change:.2f} points over the last {window} epochs"
        if change is not None
        else f"fewer than {window} epochs, so whether validation accuracy stopped moving is unknown"
    )
    facts = f"training accuracy {100 * train:.1f} %, {moved}"
    limits = (
        f"(converged means >= {100 * criteria['train_accuracy']:.0f} % and < {criteria['val_change_points']} points)"
    )
    if train_ok and val_ok:
        message = f"The baseline converged: {facts} {limits}."
    else:
        message = (
            f"Warning: the baseline did not converge: {facts} {limits}; the runs compare under-trained models, "
            "so train longer (--epochs) before trusting the verdicts."
        )
    return {
        "converged": bool(train_ok and val_ok),
        "train_accuracy": train,
        "val_accuracy_change_points": change,
        "criteria": criteria,
        "message": message,
    }


def verdict(diff):
    """`(word, mean, low, high)` of a paired difference (fractions): helped, hurt, no significant change, ...

    Args:
        diff: a `{"mean", "std", "ci95"}` statistic of paired accuracy differences, or None.

    Returns:
        `word`: "helped", "hurt", "no significant change", "identical", "one seed" or "not run"; `mean`, `low`,
        `high` in percentage points (NaN when undefined).

    Example:

    ```python
    from keras_wtrain.comparison import verdict

    print(verdict({"mean": 0.012, "std": 0.004, "ci95": 0.005}))  # ('helped', 1.2, 0.7, 1.7)
    ```
    """
    nan = float("nan")
    if diff is None:
        return "not run", nan, nan, nan
    mean, ci = 100 * diff["mean"], 100 * diff["ci95"]
    if diff["mean"] == 0 and diff["std"] == 0:
        return "identical", 0.0, 0.0, 0.0
    if math.isnan(ci):
        return "one seed", round(mean, 10), nan, nan
    low, high = round(mean - ci, 10), round(mean + ci, 10)
    word = "helped" if low > 0 else "hurt" if high < 0 else "no significant change"
    return word, round(mean, 10), low, high


def _sentence(name, diff, against="plain Keras"):
    word, mean, low, high = verdict(diff)
    if word == "identical":
        return f"- **{name}**: same test accuracy as {against} on every seed."
    if word == "one seed":
        return f"- **{name}**: {mean:+.2f} points vs {against} (one seed, no confidence interval)."
    interval = f"95% CI {low:+.2f} to {high:+.2f}"
    if word == "no significant change":
        return f"- **{name}**: no significant change vs {against}, {mean:+.2f} points ({interval} includes 0)."
    return f"- **{name}** {word} vs {against}: {mean:+.2f} points ({interval})."


def verdict_lines(summary):
    """One markdown line per technique vs the baseline, with the CI; a combination also vs its best part.

    Args:
        summary: the output of `summarize`.

    Returns:
        A list of markdown lines.

    Example:

    ```python
    from keras_wtrain.comparison import verdict_lines

    summary = {"baseline": {"test_accuracy": {"mean": 0.9}},
               "sewa": {"test_accuracy": {"mean": 0.91},
                        "accuracy_diff_vs_baseline": {"mean": 0.01, "std": 0.002, "ci95": 0.003}}}
    print(verdict_lines(summary))  # ['- **sewa** helped vs plain Keras: +1.00 points (95% CI +0.70 to +1.30).']
    ```
    """
    lines = []
    for technique, entry in summary.items():
        if technique == "baseline":
            continue
        lines.append(_sentence(technique, entry.get("accuracy_diff_vs_baseline")))
        vs_parts = entry.get("accuracy_diff_vs_parts")
        if vs_parts:
            best = max(vs_parts, key=lambda part: summary[part]["test_accuracy"]["mean"])
            word = verdict(vs_parts[best])[0]
            answer = {"helped": "it beats", "hurt": "it is worse than"}.get(word, "it does not beat")
            sentence = _sentence(technique, vs_parts[best], against=f"its best part ({best})")
            missing = [p for p in parse_technique(technique) if p not in vs_parts]
            note = f" (parts not run: {', '.join(missing)})" if missing else ""
            lines.append(f"{sentence[:-1]}: {answer} its best part{note}.")
    return lines


def _fmt(stat, scale=1.0, digits=2):
    if stat is None:
        return "—"
    mean, std, ci = (stat[k] * scale for k in ("mean", "std", "ci95"))
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f} [±{ci:.{digits}f}]"


def markdown_table(summary):
    """The results table: mean ± std [95% CI half-width] over seeds.

    Args:
        summary: the output of `summarize`.

    Returns:
        The markdown table as a list of lines.

    Example:

    ```python
    from keras_wtrain.comparison import markdown_table

    summary = {"baseline": {"n": 1, "test_accuracy": {"mean": 0.9, "std": float("nan"), "ci95": float("nan")},
                            "test_loss": {"mean": 0.3, "std": float("nan"), "ci95": float("nan")},
                            "wall_time_s": {"mean": 10.0, "std": float("nan"), "ci95": float("nan")},
                            "peak_rss_mib": {"mean": 900.0}, "step_time_ratio": 1.0}}
    print("\\n".join(markdown_table(summary)))
    ```
    """
    lines = [
        "| technique | seeds | test accuracy (%) | Δ accuracy vs baseline (pts, paired) | test loss | wall time (s) "
        "| step-time ratio | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for technique, e in summary.items():
        diff = e.get("accuracy_diff_vs_baseline")
        diff_cell = _fmt(diff, 100) if diff and technique != "baseline" else "—"
        lines.append(
            f"| {technique} | {e['n']} | {_fmt(e['test_accuracy'], 100)} | {diff_cell} | {_fmt(e['test_loss'], 1, 3)} "
            f"| {_fmt(e['wall_time_s'], 1, 1)} | {e.get('step_time_ratio', float('nan')):.3f} "
            f"| {e['peak_rss_mib']['mean']:.0f} |"
        )
    return lines


def _mean(entry, key, scale=1.0, digits=2, suffix=""):
    stat = entry.get("mechanisms", {}).get(key)
    return None if stat is None else f"{stat['mean'] * scale:.{digits}f}{suffix}"


def _mechanism_cell(technique, entry, runs):
    """The technique-specific part of the mechanism table, from the summary and the runs."""
    m = entry.get("mechanisms", {})
    cells = []
    first = next((r.get("mechanisms", {}) for r in runs if r["technique"] == technique), {})
    for wrapper, count in first.get("wrapped_layers", {}).items():
        cells.append(f"{wrapper}: {count} layers wrapped" if count else f"{wrapper}: no layer to wrap (a no-op)")
    if "dom_accuracy" in m:
        cells.append(f"DOM {_mean(entry, 'dom_accuracy', 100, 1)} % / AOM {_mean(entry, 'aom_accuracy', 100, 1)} %")
    if "num_averaged" in m:
        steps = first.get("averaged_steps") or []
        span = f" (steps {steps[0]}–{steps[-1]})" if steps else ""
        text = f"{first.get('averaging', 'average')} of {m['num_averaged']['mean']:.0f} weights{span}"
        if "average_distance" in m:
            text += f", {_mean(entry, 'average_distance', 100, 2)} % from the last weights"
        if "loss_average" in m and "loss_last" in m:
            text += f"; train loss {_mean(entry, 'loss_average', 1, 4)} vs last {_mean(entry, 'loss_last', 1, 4)}"
        cells.append(text)
    if first.get("schedule"):
        cells.append(f"schedule: {first['schedule']}")
    if "shift_shifts" in m:
        text = f"shifts kept {m['shift_shifts_kept']['mean']:.1f}/{m['shift_shifts']['mean']:.0f}"
        if "shift_relative_change_live" in m:
            text += f", live change {_mean(entry, 'shift_relative_change_live', 1, 3)}"
        if "shift_loss_change" in m:
            text += f", guard loss {m['shift_loss_change']['mean'] * 100:+.2f} %"
        if "shift_norm_after" in m:
            text += f", ‖V‖ {_mean(entry, 'shift_norm_before')} → {_mean(entry, 'shift_norm_after')}"
        cells.append(text)
    if "loss_noise_stddev" in m:
        cells.append(f"loss noise σ = {m['loss_noise_stddev']['mean']:g}")
    if "gradient_dropout_rate" in m:
        cells.append(f"gradient dropout p = {m['gradient_dropout_rate']['mean']:g}")
    return "; ".join(cells) if cells else "—"


def mechanism_table(summary, runs):
    """The mechanism table: training accuracy, flatness and each technique's own mechanism (means over seeds).

    Args:
        summary: the output of `summarize`.
        runs: the runs (for values that are not numbers, e.g. the averaged steps of the first seed).

    Returns:
        The markdown table as a list of lines.

    Example:

    ```python
    from keras_wtrain.comparison import mechanism_table, summarize

    runs = [{"technique": "baseline", "seed": 0, "test_accuracy": 0.9, "test_loss": 0.3, "wall_time_s": 1.0,
             "peak_rss_mib": 1.0, "step_time_s": 0.01, "train_accuracy": 1.0,
             "mechanisms": {"hessian_trace": 12.0, "hessian_trace_ci95": 1.0, "sharpness": 0.002}}]
    print("\\n".join(mechanism_table(summarize(runs, ["baseline"]), runs)))
    ```
    """
    lines = [
        "| technique | train accuracy (%) | Hessian trace | sharpness (×10⁻³) | mechanism |",
        "|---|---|---|---|---|",
    ]
    for technique, entry in summary.items():
        train = _fmt(entry.get("train_accuracy"), 100)
        trace = _fmt(entry.get("mechanisms", {}).get("hessian_trace"), 1, 1)
        sharp = _fmt(entry.get("mechanisms", {}).get("sharpness"), 1000, 2)
        lines.append(f"| {technique} | {train} | {trace} | {sharp} | {_mechanism_cell(technique, entry, runs)} |")
    return lines
