"""Every public name has a Google-style docstring with an `Example:` block."""

import inspect
import types

import keras_wtrain


def _public_objects():
    seen = {}
    for name in keras_wtrain.__all__:
        obj = getattr(keras_wtrain, name)
        if isinstance(obj, types.ModuleType):
            for sub in getattr(obj, "__all__", []):
                seen[f"{name}.{sub}"] = getattr(obj, sub)
        else:
            seen[name] = obj
    return seen


def test_every_public_name_is_exported_and_documented():
    objects = _public_objects()
    assert len(objects) >= 5
    missing = []
    for name, obj in objects.items():
        doc = inspect.getdoc(obj) or ""
        if "Example:" not in doc and "Examples:" not in doc:
            missing.append(name)
    assert not missing, f"public names without an Example: block: {missing}"


def test_technique_classes_cite_their_paper():
    for name, obj in _public_objects().items():
        if inspect.isclass(obj) and getattr(obj, "_paper_arxiv", None):
            assert obj._paper_arxiv in inspect.getdoc(obj), name
    assert "1602.07868" in inspect.getdoc(keras_wtrain.layers.WeightNormalization)
