"""Summary statistics (paired by seed, 95 % Student-t intervals), the convergence check, verdicts and markdown."""

import math

import numpy as np

from keras_wtrain.comparison.mechanisms import finite
from keras_wtrain.comparison.settings import CONVERGENCE
from keras_wtrain.comparison.settings import parse_technique

__all__ = [
    "ALPHA",
    "POWER",
    "convergence",
    "markdown_table",
    "mechanism_table",
    "minimum_detectable_effect",
    "summarize",
    "verdict",
    "verdict_lines",
    "verdict_record",
]

_STATISTICS = ("test_accuracy", "test_loss", "train_accuracy", "wall_time_s", "peak_rss_mib")

ALPHA = 0.05
"""Two-sided significance level of every interval and verdict (95 % intervals)."""

POWER = 0.80
"""Power at which the minimum detectable effect (`mde80`) is stated."""


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


def minimum_detectable_effect(std, n, power=POWER, alpha=ALPHA):
    """The smallest true mean paired difference that a two-sided paired t-test over `n` seeds detects with `power`.

    `MDE = (t(1 − alpha/2, n − 1) + t(power, n − 1)) · std / √n`, with `t(q, df)` the Student-t quantile: the
    standard power approximation of the one-sample (paired) t-test, the t-distribution version of
    `(z(1 − alpha/2) + z(power)) · σ / √n` (Cohen, *Statistical Power Analysis for the Behavioral Sciences*, 1988,
    ch. 2; it ignores the far tail and the non-centrality of the t statistic). `std` is the sample standard
    deviation of the paired differences, so the MDE is an estimate that is itself uncertain with few seeds. Exact
    power at the MDE when `std` is the true deviation (non-central t): 73 % with 2 seeds, 77 % with 3, 78 % with 4,
    79 % with 5, 80 % from about 8 seeds on.

    Args:
        std: sample standard deviation of the paired differences (any unit; the MDE is in the same unit).
        n: number of paired seeds.
        power: probability of detecting a true difference of the returned size.
        alpha: two-sided significance level.

    Returns:
        The MDE, or NaN with fewer than 2 seeds or an undefined `std`.

    Example:

    ```python
    from keras_wtrain.comparison.report import minimum_detectable_effect

    # 3 seeds whose paired differences spread by 0.46 points: (4.303 + 1.061) * 0.46 / sqrt(3)
    print(round(minimum_detectable_effect(0.46, 3), 2))  # 1.42 points
    ```
    """
    if n < 2 or not math.isfinite(std):
        return float("nan")
    from scipy import stats

    df = n - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * std / math.sqrt(n))


def _paired(rows, reference):
    """Paired accuracy differences of `rows` against `reference` ({seed: run}), or None without common seeds.

    The statistic holds `mean`, `std`, `ci95` (half-width), `n` (paired seeds) and `mde80`, all fractions.
    """
    diffs = [r["test_accuracy"] - reference[r["seed"]]["test_accuracy"] for r in rows if r["seed"] in reference]
    if not diffs:
        return None
    stat = _interval(diffs)
    stat["n"] = len(diffs)
    stat["mde80"] = minimum_detectable_effect(stat["std"], len(diffs))
    return stat


def summarize(runs, techniques):
    """Aggregates per-technique statistics; differences are paired by seed against the baseline (and parts).

    Args:
        runs: one dict per run (`technique`, `seed`, `test_accuracy`, `test_loss`, `wall_time_s`,
            `peak_rss_mib`, `step_time_s`; optionally `train_accuracy` and a `mechanisms` dict).
        techniques: the technique names, in table order.

    Returns:
        `{technique: entry}` with `n`, each statistic as `{"mean", "std", "ci95"}`, `step_time_ratio`,
        `accuracy_diff_vs_baseline`, `accuracy_diff_vs_parts` (combinations) and `mechanisms`. The paired
        differences (`accuracy_diff_vs_baseline` and each value of `accuracy_diff_vs_parts`) also hold `n`, the
        number of paired seeds, and `mde80`, the minimum detectable effect at 80 % power and two-sided 5 %
        (`minimum_detectable_effect`; NaN with one seed). All values are fractions, not points.

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


def _power(diff):
    """`(mde_points, n)` of a paired statistic, or `(nan, n)` when it has no MDE (one seed, an older summary)."""
    n = diff.get("n")
    mde = diff.get("mde80", float("nan"))
    return 100 * mde if mde is not None else float("nan"), n


def verdict_record(diff):
    """The verdict of a paired difference as a JSON-ready dict, in percentage points, with its power.

    Args:
        diff: a paired statistic from `summarize` (`{"mean", "std", "ci95", "n", "mde80"}`), or None.

    Returns:
        `{"verdict", "mean_points", "ci95_low_points", "ci95_high_points", "mde80_points", "seeds"}`: the four
        values of `verdict`, the minimum detectable effect at 80 % power in points (NaN with one seed) and the
        number of paired seeds (None when not run).

    Example:

    ```python
    from keras_wtrain.comparison.report import verdict_record

    diff = {"mean": 0.001, "std": 0.005, "ci95": 0.0124, "n": 3, "mde80": 0.0155}
    print(verdict_record(diff))  # 'no significant change', ..., 'mde80_points': 1.55, 'seeds': 3
    ```
    """
    word, mean, low, high = verdict(diff)
    mde, n = _power(diff) if diff is not None else (float("nan"), None)
    return {
        "verdict": word,
        "mean_points": mean,
        "ci95_low_points": low,
        "ci95_high_points": high,
        "mde80_points": round(mde, 10),
        "seeds": n,
    }


def _sentence(name, diff, against="plain Keras"):
    word, mean, low, high = verdict(diff)
    if word == "not run":
        return f"- **{name}**: not compared with {against} (no common seed)."
    if word == "identical":
        return f"- **{name}**: same test accuracy as {against} on every seed."
    if word == "one seed":
        return (
            f"- **{name}**: {mean:+.2f} points vs {against} "
            "(one seed: no confidence interval and no minimum detectable effect)."
        )
    interval = f"95% CI {low:+.2f} to {high:+.2f}"
    mde, n = _power(diff)
    known = n is not None and math.isfinite(mde)
    if word == "no significant change":
        if not known:
            return f"- **{name}**: no significant change vs {against}, {mean:+.2f} points ({interval} includes 0)."
        return (
            f"- **{name}**: no significant change vs {against}: {mean:+.2f} points ({interval} includes 0); "
            f"{n} seeds detect a change of {mde:.2f} points 80 % of the time, smaller ones may go unseen."
        )
    power = f"; MDE {mde:.2f} points at 80 % power with {n} seeds" if known else ""
    return f"- **{name}** {word} vs {against}: {mean:+.2f} points ({interval}{power})."


def verdict_lines(summary):
    """One markdown line per technique vs the baseline, with the CI and MDE; a combination also vs its best part.

    A "no significant change" line gives the interval, then "n seeds detect a change of X points 80 % of the time",
    X being the minimum detectable effect (`minimum_detectable_effect`): a reader tells "no effect" from "too few
    seeds"; "helped" and "hurt" lines give it after the interval. One seed gives neither an interval nor an MDE,
    and says so.

    Args:
        summary: the output of `summarize`.

    Returns:
        A list of markdown lines.

    Example:

    ```python
    from keras_wtrain.comparison import verdict_lines

    summary = {"baseline": {"test_accuracy": {"mean": 0.9}},
               "sewa": {"test_accuracy": {"mean": 0.91},
                        "accuracy_diff_vs_baseline": {"mean": 0.01, "std": 0.002, "ci95": 0.003, "n": 5,
                                                      "mde80": 0.0033}}}
    print(verdict_lines(summary))
    # ['- **sewa** helped vs plain Keras: +1.00 points (95% CI +0.70 to +1.30; MDE 0.33 points at 80 % power
    #   with 5 seeds).']
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


def _mde_cell(diff):
    if not diff:
        return "—"
    mde, n = _power(diff)
    if n is not None and n < 2:
        return "— (1 seed)"
    return f"{mde:.2f}" if math.isfinite(mde) else "—"


def markdown_table(summary):
    """The results table: mean ± std [95% CI half-width] over seeds, and the MDE of the paired difference.

    The MDE column is the minimum detectable effect of the paired accuracy difference vs the baseline at 80 %
    power and two-sided 5 % (`minimum_detectable_effect`), in points; "— (1 seed)" where there is none.

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
        "| technique | seeds | test accuracy (%) | Δ accuracy vs baseline (pts, paired) "
        "| MDE (pts, 80 % power) | test loss | wall time (s) | step-time ratio | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for technique, e in summary.items():
        diff = e.get("accuracy_diff_vs_baseline")
        diff_cell = _fmt(diff, 100) if diff and technique != "baseline" else "—"
        mde_cell = _mde_cell(diff) if technique != "baseline" else "—"
        lines.append(
            f"| {technique} | {e['n']} | {_fmt(e['test_accuracy'], 100)} | {diff_cell} | {mde_cell} "
            f"| {_fmt(e['test_loss'], 1, 3)} "
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
