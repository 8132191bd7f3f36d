"""The settings of `keras-wtrain compare`, in a module that imports nothing heavy.

The command line (`keras_wtrain.cli`) checks its arguments against these names
before Keras or TensorFlow is imported; `keras_wtrain.compare` and
`keras_wtrain.models` use the same objects, so there is one copy of each.

Example:

```python
from keras_wtrain.compare_settings import DEFAULTS, MODEL_KINDS, TECHNIQUES

assert DEFAULTS["model"] in MODEL_KINDS and "baseline" in TECHNIQUES
```
"""

__all__ = ["DEFAULTS", "MODEL_KINDS", "QUICK", "TECHNIQUES"]

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

MODEL_KINDS = ("cnn", "mlp", "resnet-small")

# Defaults of a full run (no flags) and of --quick.
DEFAULTS = {"dataset": "mnist5k", "model": "cnn", "seeds": 5, "epochs": 6, "train_size": 1000, "batch_size": 64}
QUICK = {"seeds": 1, "epochs": 2, "train_size": 300}
