"""`keras_wtrain.compare`: the compare harness under its short name, callable as a function.

`keras_wtrain.compare(build_model, data, techniques=...)` is
`keras_wtrain.comparison.compare`. This module also keeps the names that
`keras_wtrain.compare` exported before the harness became the
`keras_wtrain.comparison` package (`from keras_wtrain.compare import compare,
summarize, markdown_table, StepTimer` still works). The module object is
callable (its class is a `types.ModuleType` subclass with `__call__`, a module
`__class__` assignment as Python allows since 3.5), so `import keras_wtrain`
then `keras_wtrain.compare(...)` and `import keras_wtrain.compare` give the
same callable object.

Example:

```python
import tempfile
import keras_wtrain

results = keras_wtrain.compare("mlp", "digits", techniques=["baseline"], seeds=1, epochs=1,
                               out=tempfile.mkdtemp(), progress=False, measure=False)
assert "baseline" in results["summary"]
```
"""

import sys
import types

from keras_wtrain.comparison import DEFAULTS  # noqa: F401  (re-exported)
from keras_wtrain.comparison import QUICK  # noqa: F401  (re-exported)
from keras_wtrain.comparison import StepTimer
from keras_wtrain.comparison import compare
from keras_wtrain.comparison import markdown_table
from keras_wtrain.comparison import summarize

__all__ = ["StepTimer", "compare", "markdown_table", "summarize"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
