"""`keras-wtrain compare` as a library: does a technique help a model, on real data, with verdicts you can trust.

`compare(build_model, data, techniques=...)` trains plain Keras and each technique (or `+` combination) on the
same splits with the same seeds, checks that the baseline converged, measures each technique's mechanism on the
final models, and writes `results.json`, `results.md` (tables and one verdict per technique) and plots.

Modules, one job each: `inputs` (the model and the data, checked before any training), `techniques` (a technique
name -> model and callbacks), `runner` (one run of the paired-seed protocol), `mechanisms` (flatness and each
technique's own measurements), `report` (statistics, convergence, verdicts, markdown), `plots`, and `harness`
(`compare` itself).

Example:

```python
import tempfile
from keras_wtrain.comparison import compare

results = compare("mlp", "digits", techniques=["weightnorm"], seeds=1, epochs=1, out=tempfile.mkdtemp(),
                  progress=False, measure=False)
print(results["verdicts"]["weightnorm"]["vs_baseline"]["verdict"])  # one seed
```
"""

from keras_wtrain import _backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.compare_settings import DEFAULT_TECHNIQUES
from keras_wtrain.compare_settings import DEFAULTS
from keras_wtrain.compare_settings import QUICK
from keras_wtrain.compare_settings import RECIPE
from keras_wtrain.compare_settings import TECHNIQUES
from keras_wtrain.comparison.harness import NotConvergedWarning
from keras_wtrain.comparison.harness import compare
from keras_wtrain.comparison.harness import environment
from keras_wtrain.comparison.inputs import InputError
from keras_wtrain.comparison.inputs import Inputs
from keras_wtrain.comparison.inputs import as_splits
from keras_wtrain.comparison.inputs import prepare
from keras_wtrain.comparison.plots import write_plots
from keras_wtrain.comparison.report import convergence
from keras_wtrain.comparison.report import markdown_table
from keras_wtrain.comparison.report import mechanism_table
from keras_wtrain.comparison.report import summarize
from keras_wtrain.comparison.report import verdict
from keras_wtrain.comparison.report import verdict_lines
from keras_wtrain.comparison.runner import StepTimer
from keras_wtrain.comparison.runner import default_optimizer
from keras_wtrain.comparison.runner import run_one
from keras_wtrain.comparison.techniques import build_technique

__all__ = [
    "DEFAULTS",
    "DEFAULT_TECHNIQUES",
    "InputError",
    "Inputs",
    "NotConvergedWarning",
    "QUICK",
    "RECIPE",
    "StepTimer",
    "TECHNIQUES",
    "as_splits",
    "build_technique",
    "compare",
    "convergence",
    "default_optimizer",
    "environment",
    "markdown_table",
    "mechanism_table",
    "prepare",
    "run_one",
    "summarize",
    "verdict",
    "verdict_lines",
    "write_plots",
]
