"""Argument validation: the checks every public constructor makes.

Each check returns the (normalised) value or raises a `TypeError` (wrong type) or `ValueError` (out of range)
naming the argument, the value and what is allowed. Booleans are never accepted as numbers.
"""

import math
import numbers

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_nonnegative",
    "check_number",
    "check_positive",
    "check_probability",
    "check_seed",
    "is_int",
    "is_real",
]


def _prefix(owner):
    return f"{owner}: " if owner else ""


def is_real(value):
    """Whether `value` is a real number (numpy scalars included), not a bool.

    Example:

    ```python
    from keras_wtrain._core.validation import is_real

    assert is_real(0.5) and not is_real(True)
    ```
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value):
    """Whether `value` is an integer (numpy integers included), not a bool.

    Example:

    ```python
    from keras_wtrain._core.validation import is_int

    assert is_int(3) and not is_int(3.0) and not is_int(False)
    ```
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_number(name, value, owner=None):
    """Checks that `value` is a finite real number; returns it as a float.

    Example:

    ```python
    from keras_wtrain._core.validation import check_number

    check_number("scale", 2)  # 2.0
    ```
    """
    if not is_real(value):
        raise TypeError(f"{_prefix(owner)}argument `{name}` must be a number; received {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{_prefix(owner)}argument `{name}` must be a finite number; received {value!r}.")
    return float(value)


def check_nonnegative(name, value, owner=None):
    """Checks that `value` is a finite number >= 0; returns it as a float.

    Example:

    ```python
    from keras_wtrain._core.validation import check_nonnegative

    check_nonnegative("stddev", 0.1)  # 0.1
    ```
    """
    if not is_real(value):
        raise TypeError(f"{_prefix(owner)}argument `{name}` must be a number; received {value!r}.")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{_prefix(owner)}argument `{name}` must be a finite number >= 0; received {value!r}.")
    return float(value)


def check_positive(name, value, owner=None):
    """Checks that `value` is a finite number > 0; returns it as a float.

    Example:

    ```python
    from keras_wtrain._core.validation import check_positive

    check_positive("temperature", 0.5)  # 0.5
    ```
    """
    if not is_real(value):
        raise TypeError(f"{_prefix(owner)}argument `{name}` must be a number; received {value!r}.")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{_prefix(owner)}argument `{name}` must be a finite number > 0; received {value!r}.")
    return float(value)


def check_probability(name, value, high_inclusive=True, owner=None):
    """Checks that `value` is a number in [0, 1] (or [0, 1) with `high_inclusive=False`); returns a float.

    Example:

    ```python
    from keras_wtrain._core.validation import check_probability

    check_probability("rate", 0.25, high_inclusive=False)  # 0.25
    ```
    """
    if not is_real(value):
        raise TypeError(f"{_prefix(owner)}argument `{name}` must be a number; received {value!r}.")
    ok = 0.0 <= value <= 1.0 if high_inclusive else 0.0 <= value < 1.0
    if not ok:
        bounds = "[0, 1]" if high_inclusive else "[0, 1)"
        raise ValueError(f"{_prefix(owner)}argument `{name}` must be in {bounds}; received {value!r}.")
    return float(value)


def check_int(name, value, minimum=None, maximum=None, allow_none=False, owner=None):
    """Checks that `value` is an int within `[minimum, maximum]` (either bound optional); returns an int.

    Raises:
        TypeError: if `value` is not an int (a bool is not an int here).
        ValueError: if `value` is out of range.

    Example:

    ```python
    from keras_wtrain._core.validation import check_int

    check_int("every_n_epochs", 2, minimum=1)  # 2
    check_int("seed", None, allow_none=True)   # None
    ```
    """
    if value is None and allow_none:
        return None
    if minimum is not None and maximum is not None:
        allowed = f"an int in [{minimum}, {maximum}]"
    elif minimum is not None:
        allowed = f"an int >= {minimum}"
    elif maximum is not None:
        allowed = f"an int <= {maximum}"
    else:
        allowed = "an int"
    if allow_none:
        allowed += " or None"
    if not is_int(value):
        raise TypeError(f"{_prefix(owner)}argument `{name}` must be {allowed}; received {value!r}.")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{_prefix(owner)}argument `{name}` must be {allowed}; received {value!r}.")
    return int(value)


def check_seed(value, name="seed", owner=None):
    """Checks an optional int seed (None or any int); returns it.

    Example:

    ```python
    from keras_wtrain._core.validation import check_seed

    check_seed(0)  # 0
    ```
    """
    return check_int(name, value, allow_none=True, owner=owner)


def check_bool(name, value, owner=None):
    """Checks that `value` is a bool; returns it.

    Example:

    ```python
    from keras_wtrain._core.validation import check_bool

    check_bool("at_end", True)  # True
    ```
    """
    if not isinstance(value, bool):
        raise TypeError(f"{_prefix(owner)}argument `{name}` must be True or False; received {value!r}.")
    return value


def check_choice(name, value, choices, owner=None):
    """Checks that `value` is one of `choices`; returns it.

    Example:

    ```python
    from keras_wtrain._core.validation import check_choice

    check_choice("mode", "accuracy", ("accuracy", "desire"))  # 'accuracy'
    ```
    """
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{_prefix(owner)}argument `{name}` must be one of {allowed}; received {value!r}.")
    return value
