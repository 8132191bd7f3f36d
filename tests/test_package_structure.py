"""The package layout: every module imports on its own, no import cycles, no compatibility paths, one home for
every use of a non-public Keras name."""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_wtrain"
TECHNIQUES = (
    "weight_normalization",
    "shadow_weights",
    "randomness",
    "averaging",
    "optimum_shifting",
    "diagnostics",
    "tuning",
    "comparison",
)


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(path) for path in PACKAGE.rglob("*.py"))


def _top_level_imports(path):
    """The keras_wtrain modules a module imports when it is executed (not those imported inside functions)."""
    tree = ast.parse(path.read_text())
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("keras_wtrain"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_wtrain"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                imported.add(candidate if candidate in MODULES else node.module)
    return imported


def test_every_module_imports_on_its_own():
    """Each module is imported first in a clean `sys.modules` (Keras stays loaded: it is not ours to test)."""
    code = (
        "import importlib, sys, keras\n"
        "failed = []\n"
        f"for name in {MODULES!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'keras_wtrain' or m.startswith('keras_wtrain.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {type(error).__name__}: {error}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_no_import_cycles_between_modules():
    graph = {name: set() for name in MODULES}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        graph[name] = {m for m in _top_level_imports(path) if m in graph and m != name}
        # Importing a submodule runs its packages' __init__ first; a package importing its own submodules is how
        # Python packages work and is not a cycle, so those edges are left out.
        graph[name] = {m for m in graph[name] if not (path.name == "__init__.py" and m.startswith(name + "."))}
    cycles = []
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_private_keras_names_live_in_one_module():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_keras_private.py":
            continue
        text = path.read_text()
        for needle in ("keras.src", "._flatten_layers", "._inputs_struct", "._outputs_struct", "._track_variable"):
            if needle in text:
                offenders.append(f"{path.relative_to(PACKAGE)}: {needle}")
    assert not offenders, offenders


@pytest.mark.parametrize(
    "old_path",
    [
        "keras_wtrain.training",
        "keras_wtrain.compare_settings",
        "keras_wtrain.layers.weight_normalization",
        "keras_wtrain.layers.shadow_weights",
        "keras_wtrain.callbacks.selection",
        "keras_wtrain.callbacks.weight_averaging",
        "keras_wtrain.data",
        "keras_wtrain.models",
        "keras_wtrain.rng",
    ],
)
def test_pre_release_paths_are_gone(old_path):
    with pytest.raises(ModuleNotFoundError):
        __import__(old_path)


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_each_technique_is_one_package(technique):
    assert (PACKAGE / technique / "__init__.py").is_file()


def test_public_namespaces_only_re_export():
    for namespace in ("layers/__init__.py", "callbacks/__init__.py", "optimizers.py"):
        tree = ast.parse((PACKAGE / namespace).read_text())
        for node in tree.body:
            assert isinstance(node, (ast.Expr, ast.ImportFrom, ast.Assign)), (namespace, ast.dump(node)[:80])
