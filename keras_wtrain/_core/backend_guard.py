"""Imported by every module that needs a Keras backend: refuses an unsupported one at import (see `backends`)."""

from keras_wtrain._core.backends import check_backend

check_backend()
