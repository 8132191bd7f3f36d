"""The `keras-wtrain` command line (implemented in the TensorFlow-free `keras_wtrain_cli` launcher)."""

import sys

from keras_wtrain_cli import build_parser
from keras_wtrain_cli import main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
