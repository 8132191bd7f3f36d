"""The settings of `keras-wtrain compare` (techniques, recipe, regimes, convergence); imports nothing heavy.

The command line checks its arguments against these before Keras is imported; the library uses the same objects.
"""

from collections.abc import Iterable

__all__ = [
    "AVERAGING",
    "CONVERGENCE",
    "DEFAULTS",
    "DEFAULT_TECHNIQUES",
    "MODEL_KINDS",
    "QUICK",
    "RECIPE",
    "REGIMES",
    "TECHNIQUES",
    "parse_technique",
    "parse_techniques",
    "regime_settings",
]

TECHNIQUES = (
    "baseline",
    "weightnorm",
    "shadow",
    "loss-noise",
    "grad-dropout",
    "sewa",
    "swa",
    "lawa",
    "ema",
    "optimum-shift",
)

# The averaging callbacks (SWA, LAWA, EMA, SeWA): one model installs one average, so a combination holds at most one.
AVERAGING = ("sewa", "swa", "lawa", "ema")

# The recommended recipe (docs/tutorials/does_it_help.md): run by default, next to the baseline and its parts.
RECIPE = "weightnorm+sewa"

DEFAULT_TECHNIQUES = (*TECHNIQUES, RECIPE)

MODEL_KINDS = ("cnn", "mlp", "resnet-small")

# The two documented regimes of a run on MNIST-5k. "converged": the baseline reaches >= 99 % training accuracy
# and its validation accuracy has stopped moving (see CONVERGENCE); "small-data": a tenth of the examples,
# where the baseline over-fits and regularisers are meant to help.
REGIMES = {
    "converged": {"seeds": 3, "epochs": 15, "train_size": 1000},
    "small-data": {"seeds": 3, "epochs": 40, "train_size": 250},
}

# Defaults of a full run (no flags) and of --quick.
DEFAULTS = {"dataset": "mnist5k", "model": "cnn", "regime": "converged", "batch_size": 64, **REGIMES["converged"]}
QUICK = {"seeds": 1, "epochs": 2, "train_size": 300}

# The baseline "converged" when its training accuracy (evaluated after training, mean over seeds) is at least
# `train_accuracy` and its validation accuracy (mean over seeds) changed by less than `val_change_points`
# percentage points between the first and the last of the last `window` epochs.
CONVERGENCE = {"train_accuracy": 0.99, "val_change_points": 0.3, "window": 3}


def regime_settings(regime):
    """`seeds`, `epochs` and `train_size` of a regime (`"converged"` or `"small-data"`).

    Args:
        regime: a key of `REGIMES`.

    Returns:
        A new dict.

    Raises:
        ValueError: for an unknown regime.

    Example:

    ```python
    from keras_wtrain.comparison.settings import regime_settings

    assert regime_settings("small-data")["train_size"] < regime_settings("converged")["train_size"]
    ```
    """
    if regime not in REGIMES:
        raise ValueError(f"argument `regime` must be one of {', '.join(REGIMES)}; received {regime!r}.")
    return dict(REGIMES[regime])


def parse_technique(name):
    """The parts of a technique name: `"weightnorm+sewa"` -> `("weightnorm", "sewa")`, in `TECHNIQUES` order.

    Args:
        name: a technique of `TECHNIQUES`, or several joined by `+`.

    Returns:
        A tuple of technique names (one for a single technique).

    Raises:
        ValueError: for an unknown part, a repeated part, `baseline` in a combination, or two averaging
            strategies (one model installs one average).

    Example:

    ```python
    from keras_wtrain.comparison.settings import parse_technique

    assert parse_technique("sewa+weightnorm") == ("weightnorm", "sewa")
    ```
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a technique must be a non-empty string; received {name!r}.")
    parts = [part.strip() for part in name.split("+")]
    unknown = [part for part in parts if part not in TECHNIQUES]
    if unknown:
        raise ValueError(
            f"unknown technique(s) {', '.join(repr(p) for p in unknown)} in {name!r}; "
            f"choose from {', '.join(TECHNIQUES)} (join several with +)"
        )
    if len(parts) == 1:
        return tuple(parts)
    if len(set(parts)) != len(parts):
        raise ValueError(f"technique {name!r} names a part twice")
    if "baseline" in parts:
        raise ValueError(f"technique {name!r}: baseline cannot be combined (it is plain Keras, always run)")
    averaging = [part for part in parts if part in AVERAGING]
    if len(averaging) > 1:
        raise ValueError(
            f"technique {name!r} combines {' and '.join(averaging)}: a model installs one weight average, "
            "so a combination holds at most one of sewa, swa, lawa, ema"
        )
    return tuple(sorted(parts, key=TECHNIQUES.index))


def parse_techniques(value):
    """A list of canonical technique names (deduplicated; `"all"` is `DEFAULT_TECHNIQUES`) from a string or list.

    Args:
        value: e.g. `"baseline,weightnorm+sewa"` or `["weightnorm", "sewa+weightnorm"]`.

    Returns:
        A list of names.

    Raises:
        TypeError: if `value` is neither a string nor an iterable of names.
        ValueError: for an empty list or a bad technique (see `parse_technique`).

    Example:

    ```python
    from keras_wtrain.comparison.settings import parse_techniques

    assert parse_techniques(["swa", "grad-dropout+weightnorm"]) == ["swa", "weightnorm+grad-dropout"]
    ```
    """
    if not isinstance(value, (str, Iterable)):
        raise TypeError(
            f"argument `techniques` must be a comma-separated string or a list of technique names; received {value!r}."
        )
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if not isinstance(n, str) or n]
    if not names:
        raise ValueError("no technique given")
    out = []
    for name in names:
        expanded = DEFAULT_TECHNIQUES if name == "all" else ["+".join(parse_technique(name))]
        out.extend(n for n in expanded if n not in out)
    return out
