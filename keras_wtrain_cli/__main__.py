"""`python -m keras_wtrain_cli`."""

import sys

from keras_wtrain_cli import main

sys.exit(main())
