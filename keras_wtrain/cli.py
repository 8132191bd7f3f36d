"""The `keras-wtrain` command line: `keras-wtrain compare [options]`.

`import keras_wtrain` imports nothing heavy (its names load lazily), so this
module parses and checks the arguments before Keras or TensorFlow is imported:
`keras-wtrain --help` or a bad argument answers with one line and exit code 2
in well under a second, and TensorFlow is only imported for a real run. The
choices come from `keras_wtrain.compare_settings` and `keras_wtrain.data`,
which import only numpy.
"""


import argparse
import os
import pathlib
import sys

from keras_wtrain.compare_settings import DEFAULTS
from keras_wtrain.compare_settings import MODEL_KINDS as MODELS
from keras_wtrain.compare_settings import QUICK
from keras_wtrain.compare_settings import TECHNIQUES
from keras_wtrain.data import EMBEDDED_DATASETS
from keras_wtrain.data import TFDS_DATASETS

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit with code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _techniques(value):
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no technique given")
    if "all" in names:
        return list(TECHNIQUES)
    unknown = [n for n in names if n not in TECHNIQUES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown technique(s) {', '.join(unknown)}; choose from {', '.join(TECHNIQUES)}, all"
        )
    return names


def _dataset(value):
    if value in EMBEDDED_DATASETS or (value.startswith("tfds:") and value[5:] in TFDS_DATASETS):
        return value
    allowed = ", ".join([*EMBEDDED_DATASETS, *(f"tfds:{n}" for n in TFDS_DATASETS)])
    raise argparse.ArgumentTypeError(f"unknown dataset {value!r}; choose from {allowed}")


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


def build_parser():
    """The argument parser of `keras-wtrain` (no Keras import: arguments are checked before a backend starts).

    Returns:
        An `argparse.ArgumentParser` whose errors are one line and exit code 2.

    Example:

    ```python
    from keras_wtrain.cli import build_parser

    args = build_parser().parse_args(["compare", "--quick", "--techniques", "baseline,sewa"])
    assert args.techniques == ["baseline", "sewa"]
    ```
    """
    parser = _Parser(prog="keras-wtrain", description="Weight-space training techniques for Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    compare = commands.add_parser(
        "compare",
        help="train every technique and plain Keras on the same splits and seeds; write tables and plots",
        description="Train each technique with the library's defaults on the same splits and seeds as plain Keras "
        "and report test accuracy, loss, time and memory with confidence intervals.",
    )
    compare.add_argument(
        "--dataset", type=_dataset, default=DEFAULTS["dataset"], help="mnist5k (default), digits, tfds:NAME"
    )
    compare.add_argument("--model", choices=MODELS, default=DEFAULTS["model"], help="model architecture (default cnn)")
    compare.add_argument(
        "--techniques",
        type=_techniques,
        default=list(TECHNIQUES),
        help=f"comma-separated list of {', '.join(TECHNIQUES)}, or all (default all)",
    )
    compare.add_argument(
        "--seeds", type=_positive("--seeds"), default=None, help=f"number of seeds (default {DEFAULTS['seeds']})"
    )
    compare.add_argument(
        "--epochs", type=_positive("--epochs"), default=None, help=f"epochs per run (default {DEFAULTS['epochs']})"
    )
    compare.add_argument(
        "--train-size",
        type=_positive("--train-size"),
        default=None,
        help=f"training examples, stratified subset (default {DEFAULTS['train_size']})",
    )
    compare.add_argument("--batch-size", type=_positive("--batch-size"), default=DEFAULTS["batch_size"])
    compare.add_argument("--quick", action="store_true", help="a ~2-minute smoke run (1 seed, 2 epochs, 300 examples)")
    compare.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
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


def main(argv=None):
    """Entry point of the `keras-wtrain` console script.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).

    Returns:
        The process exit code (0 on success).

    Example:

    ```python
    from keras_wtrain.cli import main

    main(["compare", "--dataset", "digits", "--quick", "--techniques", "baseline,weightnorm", "--out", "/tmp/cmp"])
    ```
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_writable(parser, args.out)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = dict(DEFAULTS)
    if args.quick:
        settings.update(QUICK)
    for key in ("seeds", "epochs", "train_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)

    from keras_wtrain.compare import compare  # imports Keras and TensorFlow
    from keras_wtrain.data import load_dataset

    try:
        data = load_dataset(args.dataset, train_size=settings["train_size"])
    except RuntimeError as error:  # e.g. TFDS data not available offline
        print(f"keras-wtrain: error: {error}", file=sys.stderr)
        return 1
    results = compare(
        dataset=args.dataset,
        model=args.model,
        techniques=args.techniques,
        seeds=settings["seeds"],
        epochs=settings["epochs"],
        batch_size=args.batch_size,
        out=args.out,
        progress=not args.no_progress,
        data=data,
    )
    print()
    print((pathlib.Path(args.out) / "results.md").read_text())
    print(f"Wrote {args.out}/results.json, results.md, accuracy.png, validation_curves.png")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
