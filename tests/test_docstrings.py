"""Every public name has a Google-style docstring whose `Example:` block is real code, and the tests run it."""

import inspect
import os
import re

import keras
import pytest

import keras_wtrain

# Modules whose `__all__` is public API, besides the top-level names: the technique packages, the namespaces Keras
# users look in, and the shared modules whose functions the technique pages cite.
PUBLIC_MODULES = (
    "keras_wtrain.weight_normalization",
    "keras_wtrain.shadow_weights",
    "keras_wtrain.shadow_weights.transforms",
    "keras_wtrain.randomness",
    "keras_wtrain.averaging",
    "keras_wtrain.averaging.relaxed_mask",
    "keras_wtrain.optimum_shifting",
    "keras_wtrain.diagnostics",
    "keras_wtrain.tuning",
    "keras_wtrain.comparison",
    "keras_wtrain.comparison.cli",
    "keras_wtrain.comparison.distributed",
    "keras_wtrain.comparison.store",
    "keras_wtrain.comparison.job",
    "keras_wtrain.comparison.seeds",
    "keras_wtrain.comparison.settings",
    "keras_wtrain.comparison.datasets",
    "keras_wtrain.comparison.models",
    "keras_wtrain.layers",
    "keras_wtrain.callbacks",
    "keras_wtrain.optimizers",
    "keras_wtrain._core.backends",
    "keras_wtrain._core.batchnorm",
    "keras_wtrain._core.data_adapters",
    "keras_wtrain._core.layer_kinds",
    "keras_wtrain._core.objective",
    "keras_wtrain._core.rng",
    "keras_wtrain._core.validation",
)

_FENCE = re.compile(r"```python\n(.*?)```", flags=re.S)


def _public_objects():
    """`{qualified name: object}` of every public name, and of the public methods defined on public classes."""
    import importlib

    seen = {"keras_wtrain": keras_wtrain}
    for name in keras_wtrain.__all__:
        obj = getattr(keras_wtrain, name)
        seen[f"keras_wtrain.{name}"] = obj
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        seen[module_name] = module
        for sub in getattr(module, "__all__", []):
            seen[f"{module_name}.{sub}"] = getattr(module, sub)
    for name, obj in list(seen.items()):
        if inspect.isclass(obj) and obj.__module__.startswith("keras_wtrain"):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property):
                    member = member.fget
                if inspect.isfunction(member) and member.__doc__:
                    seen[f"{name}.{attr}"] = member
    return seen


def _example_blocks(doc):
    """The ```python blocks that follow an `Example:` / `Examples:` heading."""
    match = re.search(r"^\s*Examples?:\s*$", doc, flags=re.M)
    if match is None:
        return []
    return _FENCE.findall(doc[match.end() :])


def _documented_examples():
    out, done = [], set()
    for name, obj in sorted(_public_objects().items()):
        if id(obj) in done:  # an alias (`SeWA`) or a re-export runs once
            continue
        done.add(id(obj))
        doc = inspect.getdoc(obj) or ""
        for i, block in enumerate(_example_blocks(doc)):
            out.append(pytest.param(name, block, id=f"{name}[{i}]"))
    return out


EXAMPLES = _documented_examples()


def test_every_public_name_is_exported_and_documented():
    objects = {
        n: o
        for n, o in _public_objects().items()
        if (inspect.isclass(o) or inspect.isfunction(o)) and n.count(".") <= 3
    }
    assert len(objects) >= 30
    missing = [name for name, obj in objects.items() if not _example_blocks(inspect.getdoc(obj) or "")]
    # Methods may inherit their documentation; names exported from a module must have their own example.
    missing = [n for n in missing if n.rsplit(".", 1)[0] in PUBLIC_MODULES or n.count(".") == 1]
    assert not missing, f"public names without a runnable ```python Example: block: {missing}"


def test_examples_are_code_not_comments():
    empty = []
    for param in EXAMPLES:
        name, block = param.values
        code = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
        if not code:
            empty.append(name)
    assert not empty, f"Example blocks with no code: {empty}"


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name,block", EXAMPLES)
def test_docstring_example_runs(name, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_WTRAIN_TINY", "1")
    namespace = {"__name__": f"example_{name.replace('.', '_')}"}
    exec(compile(block, f"<Example of {name}>", "exec"), namespace)
    assert keras.mixed_precision.global_policy().name == "float32", "examples must not leave a global policy behind"


def test_the_runner_fails_on_a_broken_example():
    # The check must be able to fail: a broken example raises out of exec.
    with pytest.raises(NameError):
        exec(compile("undefined_name + 1", "<broken example>", "exec"), {})
    assert len(EXAMPLES) >= 50
    assert os.environ.get("KERAS_BACKEND") is not None


def test_technique_classes_cite_their_paper():
    for name, obj in _public_objects().items():
        if inspect.isclass(obj) and getattr(obj, "_paper_arxiv", None):
            assert obj._paper_arxiv in inspect.getdoc(obj), name
    assert "1602.07868" in inspect.getdoc(keras_wtrain.layers.WeightNormalization)
