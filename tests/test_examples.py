"""Every example script (each is a docs tutorial) runs end to end on a tiny budget."""

import os
import pathlib
import runpy

import keras
import pytest

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_on_tiny_budget(path, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_WTRAIN_TINY", "1")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(path), run_name="__main__")
    assert keras.mixed_precision.global_policy().name == "float32", "examples must not leave a global policy behind"


def test_every_tutorial_includes_an_example_by_snippet():
    docs = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tutorials"
    for page in docs.glob("*.md"):
        text = page.read_text()
        assert '--8<-- "examples/' in text, f"{page.name} does not include an examples/ script"
        for included in text.split('--8<-- "')[1:]:
            target = pathlib.Path(__file__).resolve().parents[1] / included.split('"')[0]
            assert target.exists(), f"{page.name} includes a missing file {target}"
    assert os.environ.get("KERAS_WTRAIN_TINY") == "1"
