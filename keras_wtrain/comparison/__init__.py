"""`keras-wtrain compare` as a library: does a technique help a model, on real data, with verdicts you can trust.

`compare(build_model, data, techniques=...)` trains plain Keras and each technique on the same splits and seeds and
writes `results.json`, `results.md` and plots. Guide: docs/tutorials/does_it_help.md.
"""

import importlib

# Loaded on first use, so that the command line (`keras_wtrain.comparison.cli`) answers `--help` and bad arguments
# before Keras or any backend is imported.
_LOCATIONS = {
    "NotConvergedWarning": "keras_wtrain.comparison.harness",
    "compare": "keras_wtrain.comparison.harness",
    "environment": "keras_wtrain.comparison.harness",
    "InputError": "keras_wtrain.comparison.inputs",
    "Inputs": "keras_wtrain.comparison.inputs",
    "as_splits": "keras_wtrain.comparison.inputs",
    "prepare": "keras_wtrain.comparison.inputs",
    "write_plots": "keras_wtrain.comparison.plots",
    "convergence": "keras_wtrain.comparison.report",
    "markdown_table": "keras_wtrain.comparison.report",
    "mechanism_table": "keras_wtrain.comparison.report",
    "summarize": "keras_wtrain.comparison.report",
    "verdict": "keras_wtrain.comparison.report",
    "verdict_lines": "keras_wtrain.comparison.report",
    "verdict_record": "keras_wtrain.comparison.report",
    "minimum_detectable_effect": "keras_wtrain.comparison.report",
    "needs_more_seeds": "keras_wtrain.comparison.seeds",
    "interval_half_widths": "keras_wtrain.comparison.seeds",
    "technique_styles": "keras_wtrain.comparison.plots",
    "paired_differences_figure": "keras_wtrain.comparison.plots",
    "StepTimer": "keras_wtrain.comparison.runner",
    "default_optimizer": "keras_wtrain.comparison.runner",
    "run_one": "keras_wtrain.comparison.runner",
    "DEFAULT_TECHNIQUES": "keras_wtrain.comparison.settings",
    "DEFAULTS": "keras_wtrain.comparison.settings",
    "QUICK": "keras_wtrain.comparison.settings",
    "RECIPE": "keras_wtrain.comparison.settings",
    "TECHNIQUES": "keras_wtrain.comparison.settings",
    "build_technique": "keras_wtrain.comparison.techniques",
    "ConfigurationMismatch": "keras_wtrain.comparison.store",
    "RunStore": "keras_wtrain.comparison.store",
}

__all__ = [
    "ConfigurationMismatch",
    "DEFAULTS",
    "DEFAULT_TECHNIQUES",
    "InputError",
    "Inputs",
    "NotConvergedWarning",
    "QUICK",
    "RECIPE",
    "RunStore",
    "StepTimer",
    "TECHNIQUES",
    "as_splits",
    "build_technique",
    "compare",
    "convergence",
    "default_optimizer",
    "environment",
    "interval_half_widths",
    "markdown_table",
    "mechanism_table",
    "minimum_detectable_effect",
    "needs_more_seeds",
    "paired_differences_figure",
    "prepare",
    "run_one",
    "summarize",
    "technique_styles",
    "verdict",
    "verdict_lines",
    "verdict_record",
    "write_plots",
]


_SUBMODULES = (
    "cli",
    "datasets",
    "harness",
    "inputs",
    "job",
    "mechanisms",
    "models",
    "plots",
    "report",
    "runner",
    "seeds",
    "settings",
    "store",
    "techniques",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'keras_wtrain.comparison' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LOCATIONS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
