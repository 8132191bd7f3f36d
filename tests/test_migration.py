"""The migration page: every keras-wtrain snippet on it is an example that runs, and the page includes them all."""

import pathlib
import re
import runpy

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "migration").glob("*.py"))
PAGE = ROOT / "docs" / "migration.md"


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_migration_example_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_WTRAIN_TINY", "1")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(path), run_name="__main__")
    assert keras.mixed_precision.global_policy().name == "float32", "examples must not leave a global policy behind"


def test_migration_page_includes_every_example_and_only_existing_files():
    assert EXAMPLES, "examples/migration/ holds no example"
    included = re.findall(r'--8<-- "([^"]+)"', PAGE.read_text())
    assert included, "docs/migration.md includes no snippet"
    for name in included:
        assert (ROOT / name).is_file(), f"docs/migration.md includes a missing file {name}"
    expected = {p.relative_to(ROOT).as_posix() for p in EXAMPLES}
    missing = expected - set(included)
    assert not missing, f"docs/migration.md does not include {sorted(missing)}"
