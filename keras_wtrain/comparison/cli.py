"""The `keras-wtrain` command line: `keras-wtrain compare [options]`.

Arguments are checked before Keras or TensorFlow is imported, so a bad one answers with one line and exit code 2
in well under a second. `--model` / `--data` take `package.module:function`, imported from the working directory.
"""

import argparse
import importlib
import os
import pathlib
import re
import sys
import tempfile

from keras_wtrain.comparison.datasets import EMBEDDED_DATASETS
from keras_wtrain.comparison.datasets import TFDS_DATASETS
from keras_wtrain.comparison.settings import DEFAULTS
from keras_wtrain.comparison.settings import MODEL_KINDS as MODELS
from keras_wtrain.comparison.settings import QUICK
from keras_wtrain.comparison.settings import RECIPE
from keras_wtrain.comparison.settings import REGIMES
from keras_wtrain.comparison.settings import TECHNIQUES
from keras_wtrain.comparison.settings import parse_techniques
from keras_wtrain.comparison.settings import regime_settings

__all__ = ["build_parser", "load_function", "main"]

_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit with code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _techniques(value):
    try:
        return parse_techniques(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _dataset(value):
    if value in EMBEDDED_DATASETS or (value.startswith("tfds:") and value[5:] in TFDS_DATASETS):
        return value
    allowed = ", ".join([*EMBEDDED_DATASETS, *(f"tfds:{n}" for n in TFDS_DATASETS)])
    raise argparse.ArgumentTypeError(f"unknown dataset {value!r}; choose from {allowed}")


def _model(value):
    if value in MODELS or _REFERENCE.match(value):
        return value
    raise argparse.ArgumentTypeError(
        f"unknown model {value!r}; choose from {', '.join(MODELS)}, or give package.module:function"
    )


def _reference(value):
    if _REFERENCE.match(value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is not of the form package.module:function")


def _positive(name):
    def parse(value):
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, received {value!r}") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer (>= 1), received {number}")
        return number

    return parse


def _positive_points(value):
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--target-ci must be a number of accuracy points, received {value!r}"
        ) from None
    if not number > 0 or number != number or number == float("inf"):
        raise argparse.ArgumentTypeError(f"--target-ci must be > 0 accuracy points, received {value}")
    return number


def build_parser():
    """The argument parser of `keras-wtrain` (no Keras import: arguments are checked before a backend starts).

    Returns:
        An `argparse.ArgumentParser` whose errors are one line and exit code 2.

    Example:

    ```python
    from keras_wtrain.comparison.cli import build_parser

    args = build_parser().parse_args(["compare", "--quick", "--techniques", "baseline,sewa+weightnorm"])
    assert args.techniques == ["baseline", "weightnorm+sewa"]
    ```
    """
    parser = _Parser(prog="keras-wtrain", description="Weight-space training techniques for Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    compare = commands.add_parser(
        "compare",
        help="train every technique and plain Keras on the same splits and seeds; write tables, verdicts and plots",
        description="Train each technique with the library's defaults on the same splits and seeds as plain Keras; "
        "report test accuracy, loss, time, memory and each technique's mechanism, with confidence intervals and "
        "one verdict per technique.",
    )
    compare.add_argument(
        "--dataset", type=_dataset, default=DEFAULTS["dataset"], help="mnist5k (default), digits, tfds:NAME"
    )
    compare.add_argument(
        "--data",
        type=_reference,
        default=None,
        help="your data instead: package.module:function returning (x, y) arrays, a tf.data.Dataset or a Splits",
    )
    compare.add_argument(
        "--model",
        type=_model,
        default=DEFAULTS["model"],
        help=f"{', '.join(MODELS)} (default {DEFAULTS['model']}), or package.module:function returning an "
        "uncompiled keras.Model",
    )
    compare.add_argument(
        "--techniques",
        type=_techniques,
        default=None,
        help=f"comma-separated list of {', '.join(TECHNIQUES)}, or combinations joined by + (one model with all "
        f"of them, e.g. weightnorm+sewa+grad-dropout), or all (default: all, and the recipe {RECIPE})",
    )
    compare.add_argument(
        "--regime",
        choices=tuple(REGIMES),
        default=DEFAULTS["regime"],
        help="converged (default: the baseline trains to convergence) or small-data (scarce data, over-fitting)",
    )
    regime = REGIMES[DEFAULTS["regime"]]
    compare.add_argument(
        "--seeds", type=_positive("--seeds"), default=None, help=f"number of seeds (default {regime['seeds']})"
    )
    compare.add_argument(
        "--epochs", type=_positive("--epochs"), default=None, help=f"epochs per run (default {regime['epochs']})"
    )
    compare.add_argument(
        "--train-size",
        type=_positive("--train-size"),
        default=None,
        help=f"training examples, stratified subset (default {regime['train_size']} on the built-in datasets)",
    )
    compare.add_argument("--batch-size", type=_positive("--batch-size"), default=DEFAULTS["batch_size"])
    compare.add_argument(
        "--quick",
        action="store_true",
        help=f"a ~2-minute smoke run ({QUICK['seeds']} seed, {QUICK['epochs']} epochs, {QUICK['train_size']} examples)",
    )
    compare.add_argument(
        "--target-ci",
        type=_positive_points,
        default=None,
        help="add seeds until every paired 95%% interval vs the baseline is narrower than this many accuracy points",
    )
    compare.add_argument(
        "--max-seeds",
        type=_positive("--max-seeds"),
        default=None,
        help="the most seeds --target-ci may reach (default: max(--seeds, 10))",
    )
    compare.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    compare.add_argument(
        "--overwrite",
        action="store_true",
        help="discard the runs of another configuration found in --out (by default they are kept and the job resumes)",
    )
    compare.add_argument("--no-progress", action="store_true", help="do not print progress bars")
    return parser


def _check_writable(parser, out):
    path = pathlib.Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".keras-wtrain-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        parser.error(f"--out {out!r} is not writable ({error.strerror or error})")


def _first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def load_function(reference, option="--model"):
    """Imports `package.module:function` from the working directory and returns the function.

    Args:
        reference: `"package.module:function"`.
        option: the command-line option it came from, for error messages.

    Returns:
        The callable.

    Raises:
        ValueError: with a one-line message when the module cannot be imported, has no such attribute, or
            the attribute is not callable.

    Example:

    ```python
    from keras_wtrain.comparison.cli import load_function

    assert load_function("keras_wtrain.comparison.datasets:load_digits", "--data").__name__ == "load_digits"
    ```
    """
    module_name, _, function_name = reference.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever the module raises while it is imported
        raise ValueError(f"{option} {reference!r}: cannot import {module_name!r} ({_first_line(error)})") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise ValueError(f"{option} {reference!r}: module {module_name!r} has no attribute {function_name!r}")
    if not callable(function):
        kind = type(function).__name__
        raise ValueError(f"{option} {reference!r}: {function_name!r} is not a function (type {kind})")
    return function


def _user_data(reference):
    """Calls the `--data` function; returns what it returned, or raises a one-line ValueError."""
    from keras_wtrain.comparison.datasets import Splits

    function = load_function(reference, "--data")
    try:
        data = function()
    except Exception as error:  # the user's function failed: say so in one line
        raise ValueError(f"--data {reference!r}: {function.__name__}() raised {_first_line(error)}") from None
    arrays = isinstance(data, tuple) and len(data) in (2, 3) and all(hasattr(a, "shape") for a in data[:2])
    if isinstance(data, Splits) or hasattr(data, "element_spec") or arrays:
        if arrays and len(data[0]) != len(data[1]):
            raise ValueError(
                f"--data {reference!r}: {function.__name__}() returned x with {len(data[0])} examples and y with "
                f"{len(data[1])}"
            )
        return data
    raise ValueError(
        f"--data {reference!r}: {function.__name__}() returned a {type(data).__name__}; expected (x, y) arrays, "
        "a tf.data.Dataset of (x, y) batches or a keras_wtrain.comparison.datasets.Splits"
    )


def _import_backend():
    """Imports Keras and starts its backend with TensorFlow's C++ start-up lines held back.

    TensorFlow 2.21 writes its start-up lines (oneDNN notice, "Could not find cuda drivers", a failed cuInit on
    a CPU-only machine) through absl before its log level is read, so `TF_CPP_MIN_LOG_LEVEL` does not reach
    them. They are caught on file descriptor 2 while the backend starts; lines of any other kind are written
    back to stderr, and all of them if the start fails.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    noise = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|I0000 |E0000 .*cuInit|W0000 )")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            import keras

            keras.ops.convert_to_numpy(keras.ops.zeros(()))
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
            kept = lines if failed else [line for line in lines if not noise.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def _tell_chief(out, error):
    """A worker that cannot run tells the chief (which would otherwise wait for its runs), then exits."""
    from keras_wtrain.comparison import distributed

    try:
        distributed.report_worker_error(out, str(error))
    except Exception as report_error:  # the original error stays the message; say why the chief was not told
        print(f"keras-wtrain: could not report to the chief: {_first_line(report_error)}", file=sys.stderr)


def main(argv=None):
    """Entry point of the `keras-wtrain` console script.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).

    Returns:
        The process exit code (0 on success, 1 when data cannot be loaded, 2 for bad arguments).

    Example:

    ```python
    from keras_wtrain.comparison.cli import main

    main(["compare", "--dataset", "digits", "--quick", "--techniques", "baseline,weightnorm", "--out", "/tmp/cmp",
          "--no-progress"])
    ```
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_writable(parser, args.out)
    settings = regime_settings(args.regime)
    if args.quick:
        settings.update(QUICK)
    for key in ("seeds", "epochs", "train_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.max_seeds is not None and args.target_ci is None:
        parser.error("--max-seeds bounds the seeds --target-ci adds; pass --target-ci with it")
    if args.max_seeds is not None and args.max_seeds < settings["seeds"]:
        parser.error(f"--max-seeds must be >= --seeds ({settings['seeds']}), received {args.max_seeds}")
    # The backend starts before the user's modules are imported: a module that imports Keras would otherwise
    # start TensorFlow without the quieting of `_import_backend`.
    _import_backend()
    from keras_wtrain.comparison import distributed

    try:
        model = load_function(args.model, "--model") if ":" in args.model else args.model
        data = _user_data(args.data) if args.data else None
    except ValueError as error:
        if distributed.role() == "worker":  # tell the chief, which would otherwise wait for this worker's runs
            _tell_chief(args.out, error)
        parser.error(str(error))
    import warnings

    from keras_wtrain.comparison import InputError
    from keras_wtrain.comparison import NotConvergedWarning
    from keras_wtrain.comparison import compare
    from keras_wtrain.comparison.datasets import load_dataset
    from keras_wtrain.comparison.distributed import DistributedError
    from keras_wtrain.comparison.distributed import DistributedSetupError
    from keras_wtrain.comparison.store import ConfigurationMismatch

    if data is None:
        try:
            data = load_dataset(args.dataset, train_size=settings["train_size"])
        except RuntimeError as error:  # e.g. TFDS data not available offline
            print(f"keras-wtrain: error: {error}", file=sys.stderr)
            return 1
    user_data = args.data is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)  # its message is in results.md, printed below
        try:
            results = compare(
                model,
                data,
                techniques=args.techniques,
                seeds=settings["seeds"],
                epochs=settings["epochs"],
                # The user's data is used whole unless --train-size (or --quick's size) is given.
                train_size=(args.train_size or (settings["train_size"] if args.quick else None)) if user_data else None,
                batch_size=args.batch_size,
                out=args.out,
                progress=not args.no_progress,
                regime=args.regime,
                overwrite=args.overwrite,
                target_ci=args.target_ci,
                max_seeds=args.max_seeds,
            )
        except (InputError, ConfigurationMismatch, DistributedError, DistributedSetupError) as error:
            if isinstance(error, (InputError, ConfigurationMismatch)) and distributed.role() == "worker":
                _tell_chief(args.out, error)
            parser.error(str(error))
    if results is None:  # a worker of a distributed job: the chief writes the results
        print(f"keras-wtrain: this worker's runs are in {args.out}/runs; the chief writes results.md")
        return 0
    print()
    print((pathlib.Path(args.out) / "results.md").read_text())
    print(f"Wrote {args.out}/results.json, results.md and the plots (*.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
